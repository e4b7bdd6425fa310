//! What the broker asks and what mqseal answers, independent of Mosquitto's C types.

/// The kind of access an ACL check asks about (Mosquitto's MOSQ_ACL_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A message is about to be delivered to this client.
    Read,
    /// This client publishes (also: its will is being sent).
    Write,
    Subscribe,
    Unsubscribe,
}

/// The connected client as the broker reports it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub id: &'a str,
    /// The authenticated MQTT username, if any.
    pub username: Option<&'a str>,
}

/// mqseal's answer to one broker question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with the reason.
    Deny(DenyReason),
    /// No opinion: the next plugin or Mosquitto's own checks decide.
    Defer,
    /// A publish that passed every check but its signature, which a worker
    /// thread now checks (crate::broker::offload). The broker must drop the
    /// original (the plugin answers as for a refusal, which tells a QoS 0
    /// publisher nothing); the verified copy comes back through
    /// `Engine::take_republish`.
    Offloaded,
}

/// What the broker says of a publish besides its topic and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishInfo {
    pub retain: bool,
    /// The broker can carry the publish in a copy of its own without loss:
    /// QoS 0 (no acknowledgement owed) from an MQTT 3.1/3.1.1 client (no
    /// properties, no `no local`). Only such a publish may be offloaded.
    pub offloadable: bool,
}

/// Why something was refused: a short stable token (logs, audit records and
/// tests use it). Envelope, epoch and login failures use the tokens of their
/// own modules (`EnvelopeError::reason`, `EpochCheck::reason`, `LoginError::reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DenyReason(pub &'static str);

impl DenyReason {
    /// `plugin_opt_unprotected deny` and no group owns the topic.
    pub const UNPROTECTED_DENIED: DenyReason = DenyReason("unprotected-denied");
    /// A callback failed internally (a caught panic, a re-entrant call); mqseal fails closed.
    pub const INTERNAL_ERROR: DenyReason = DenyReason("internal-error");
    /// The client's MQTT username maps to no device of the policy.
    pub const NOT_A_DEVICE: DenyReason = DenyReason("not-a-device");
    /// The envelope's sender is not the device this connection is logged in as.
    pub const SENDER_MISMATCH: DenyReason = DenyReason("sender-mismatch");
    /// The envelope's sender is no device of the policy (a bridged message,
    /// which has no device login; the device side uses the same token).
    pub const UNKNOWN_SENDER: DenyReason = DenyReason("unknown-sender");
    /// The envelope names a group other than the one owning the topic.
    pub const WRONG_GROUP: DenyReason = DenyReason("wrong-group");
    /// The sender has no `pub`/`pubsub` role in the group owning the topic.
    pub const NOT_A_PUBLISHER: DenyReason = DenyReason("not-a-publisher");
    /// The client's device has no `sub`/`pubsub` role in the group owning the topic.
    pub const NOT_A_READER: DenyReason = DenyReason("not-a-reader");
    /// The sequence number is not above the last one accepted from that sender.
    pub const REPLAY: DenyReason = DenyReason("replay");
    /// After a crash: sealed before the restart by a sender with no newer message
    /// accepted since (its last accepted numbers may be missing from the window).
    pub const SEALED_BEFORE_CRASH: DenyReason = DenyReason("sealed-before-crash");
    /// The topic is under mqseal's reserved prefix.
    pub const RESERVED_TOPIC: DenyReason = DenyReason("reserved-topic");
    /// A client id containing `+`, `#` or `/`, which could widen another plugin's patterns.
    pub const BAD_CLIENT_ID: DenyReason = DenyReason("bad-client-id");
    /// A username containing `+`, `#` or `/`.
    pub const BAD_USERNAME: DenyReason = DenyReason("bad-username");
    /// A login with a client id that belongs to another device or the authority, or
    /// to no identity while the login is a device's (docs/POLICY.md §3.5).
    pub const CLIENT_ID_NOT_OWNED: DenyReason = DenyReason("client-id-not-owned");
    /// A subscription filter that is not a valid MQTT filter.
    pub const BAD_FILTER: DenyReason = DenyReason("bad-filter");
    /// A publish on a control topic (`$mqseal/...`) by a client that is not the realm's authority.
    pub const NOT_AUTHORITY: DenyReason = DenyReason("not-authority");
    /// A subscription to a control topic this client may not read.
    pub const CONTROL_NOT_READABLE: DenyReason = DenyReason("control-not-readable");
    /// A control document whose device id differs from its topic's.
    pub const CONTROL_WRONG_TOPIC: DenyReason = DenyReason("control-wrong-topic");
    /// An identity certificate or bundle for a device the current policy does not list.
    pub const CONTROL_UNKNOWN_DEVICE: DenyReason = DenyReason("control-unknown-device");
    /// An identity certificate whose keys or username differ from the current policy's.
    pub const IDENTITY_MISMATCH: DenyReason = DenyReason("identity-mismatch");
    /// A bundle with keys of a group the policy does not list the device in.
    pub const BUNDLE_GROUP_NOT_MEMBER: DenyReason = DenyReason("bundle-group-not-member");
    /// A bundle without the current key epoch of one of the device's groups.
    pub const BUNDLE_BEHIND_POLICY: DenyReason = DenyReason("bundle-behind-policy");
    /// A bundle older than one already accepted for the device.
    pub const BUNDLE_NOT_NEWER: DenyReason = DenyReason("bundle-not-newer");
    /// A pushed policy whose version is not higher than the current one.
    pub const POLICY_NOT_NEWER: DenyReason = DenyReason("policy-not-newer");
    /// A pushed policy that could not be persisted (so it would not survive a restart).
    pub const POLICY_NOT_PERSISTED: DenyReason = DenyReason("policy-not-persisted");
    /// An empty payload on the policy topic (the policy cannot be cleared).
    pub const POLICY_EMPTY: DenyReason = DenyReason("policy-empty");
    /// The event could not be recorded in the audit log (queue full, an outage
    /// such as a full disk, writer failed): what needs a record does not happen.
    pub const AUDIT_UNAVAILABLE: DenyReason = DenyReason("audit-unavailable");

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Whether the refusal is the client's own fault (its envelope or document
    /// is bad), so that it counts towards the flood limit. Refusals caused by
    /// mqseal or by circumstance (the audit log cannot record, an internal
    /// error, a crash before the message came in, a policy that could not be
    /// saved) never do: honest clients must not be disconnected for them.
    pub fn blames_client(self) -> bool {
        !matches!(
            self,
            DenyReason::AUDIT_UNAVAILABLE
                | DenyReason::INTERNAL_ERROR
                | DenyReason::SEALED_BEFORE_CRASH
                | DenyReason::POLICY_NOT_PERSISTED
        )
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clients_own_faults_count_towards_the_flood_limit() {
        for own in [DenyReason::REPLAY, DenyReason::SENDER_MISMATCH, DenyReason::NOT_AUTHORITY, DenyReason("bad-signature")] {
            assert!(own.blames_client(), "{own}");
        }
        for ours in [DenyReason::AUDIT_UNAVAILABLE, DenyReason::INTERNAL_ERROR, DenyReason::SEALED_BEFORE_CRASH, DenyReason::POLICY_NOT_PERSISTED] {
            assert!(!ours.blames_client(), "{ours}");
        }
    }
}
