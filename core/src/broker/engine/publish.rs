//! ACL checks and publishes: [`Engine::acl_check`] answers every ACL check and
//! judges publishes and wills itself; [`Engine::on_message`] judges the MESSAGE
//! event; refused publishes are recorded and count towards the flood limit.

use std::time::Instant;

use crate::broker::config::UnprotectedMode;
use crate::broker::decision::{Access, Client, Decision, DenyReason, PublishInfo};
use crate::broker::host::LogLevel;
use crate::formats::audit::AuditEvent;
use crate::formats::audit::event::Token;
use crate::formats::audit::hashing::sha256;
use crate::formats::envelope::{self, EnvelopeHeader};
use crate::formats::policy::compiled::GroupIdx;

use super::{Engine, Kick, PublishPath, Verification, now_ms, RESERVED_PREFIX};

impl Engine {
    /// Answers an ACL check (publish, will, delivery, subscribe, unsubscribe);
    /// a publish is verified on the broker thread.
    pub fn acl_check(&mut self, client: Client<'_>, access: Access, topic: &str, payload: &[u8]) -> Decision {
        self.acl_check_publish(client, access, topic, payload, PublishInfo::default())
    }

    /// As [`Self::acl_check`], told what the broker knows of a publish: an
    /// offloadable one may be answered [`Decision::Offloaded`].
    pub fn acl_check_publish(&mut self, client: Client<'_>, access: Access, topic: &str, payload: &[u8], info: PublishInfo) -> Decision {
        if access == Access::Unsubscribe {
            // Leaving a subscription never widens anyone's access.
            return match self.config.unprotected {
                UnprotectedMode::Defer => Decision::Defer,
                _ => Decision::Allow,
            };
        }
        if let Some(problem) = Self::client_identity_problem(client) {
            if self.pattern_chars_matter(client, access, topic) {
                return match access {
                    Access::Write => {
                        self.deny_publish(client, topic, problem, None, payload);
                        Decision::Deny(problem)
                    }
                    Access::Read => self.deny_delivery(client, topic, problem),
                    Access::Subscribe | Access::Unsubscribe => self.deny_subscribe(client, topic, problem),
                };
            }
        }
        match access {
            Access::Write => self.check_publish(client, topic, payload, PublishPath::AclWrite, Verification::MayOffload(info)),
            Access::Read => self.check_delivery(client, topic, payload),
            Access::Subscribe => self.check_subscribe(client, topic),
            Access::Unsubscribe => unreachable!("handled above"),
        }
    }

    /// Sees every client publish once, after the ACL write check, before it is stored.
    pub fn on_message(&mut self, client: Client<'_>, topic: &str, payload: &[u8], _retain: bool) -> Decision {
        if self.just_verified.take_if(client.id, topic, payload) {
            return Decision::Allow;
        }
        if topic.starts_with(RESERVED_PREFIX) {
            // Refused (and recorded) there: only our own ACL check admits control documents.
            return self.check_publish(client, topic, payload, PublishPath::MessageEvent, Verification::Here);
        }
        if self.policy.group_of_topic(topic).is_none() {
            // Unprotected: the ACL check (which bridges skip by Mosquitto's design) decided.
            return Decision::Allow;
        }
        self.check_publish(client, topic, payload, PublishPath::MessageEvent, Verification::Here)
    }

    pub(super) fn check_publish(
        &mut self,
        client: Client<'_>,
        topic: &str,
        payload: &[u8],
        path: PublishPath,
        verification: Verification,
    ) -> Decision {
        if topic.starts_with(RESERVED_PREFIX) {
            let decision = match path {
                PublishPath::AclWrite => self.check_control_publish(client, topic, payload),
                // Control documents come only from the authority's own connection,
                // never over a bridge (which has no login and skips ACL checks).
                PublishPath::MessageEvent => Err(DenyReason::RESERVED_TOPIC),
            };
            return match decision {
                Ok(()) => {
                    self.remember_verified(client, topic, payload);
                    Decision::Allow
                }
                Err(reason) => {
                    self.deny_publish(client, topic, reason, None, payload);
                    Decision::Deny(reason)
                }
            };
        }
        let Some(group) = self.policy.group_of_topic(topic) else {
            let decision = self.unprotected_decision();
            if let Decision::Deny(reason) = decision {
                self.deny_publish(client, topic, reason, None, payload);
            }
            return decision;
        };
        let parsed = match envelope::parse(payload, self.config.max_envelope_bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                let reason = DenyReason(e.reason());
                self.deny_publish(client, topic, reason, None, payload);
                return Decision::Deny(reason);
            }
        };
        let header = &parsed.header;
        let device = self.device_of(client);
        let sender = match (device, path) {
            (Some(device), _) => {
                if self.policy.device_id(device) != header.sender {
                    return self.deny_with_header(client, topic, DenyReason::SENDER_MISMATCH, header, payload);
                }
                device
            }
            (None, PublishPath::AclWrite) => {
                return self.deny_with_header(client, topic, DenyReason::NOT_A_DEVICE, header, payload);
            }
            // A bridge has no device login: the envelope's own sender must be a device.
            (None, PublishPath::MessageEvent) => match self.policy.device_by_id(header.sender) {
                Some(sender) => sender,
                None => return self.deny_with_header(client, topic, DenyReason::UNKNOWN_SENDER, header, payload),
            },
        };
        if self.policy.group(group).id != header.group {
            return self.deny_with_header(client, topic, DenyReason::WRONG_GROUP, header, payload);
        }
        if !self.policy.role(group, sender).is_some_and(|r| r.can_publish()) {
            return self.deny_with_header(client, topic, DenyReason::NOT_A_PUBLISHER, header, payload);
        }
        let epoch = self.policy.check_epoch(group, header.epoch, now_ms() / 1000);
        if !epoch.is_accepted() {
            return self.deny_with_header(client, topic, DenyReason(epoch.reason()), header, payload);
        }
        let offload = match verification {
            Verification::MayOffload(info) => self.offload_wanted(header.sender, info),
            _ => false,
        };
        if !offload && !matches!(verification, Verification::Settled(_)) {
            // Verified here while earlier publishes of this sender wait for a
            // worker: those come first (their sequence numbers are lower).
            self.settle_sender(header.sender);
        }
        if self.replay.check(header.sender, header.seq).is_err() {
            return self.deny_with_header(client, topic, DenyReason::REPLAY, header, payload);
        }
        if let Some(floor) = self.crash_floor_ms {
            if header.timestamp_ms < floor && !self.fresh_senders.contains(header.sender) {
                return self.deny_with_header(client, topic, DenyReason::SEALED_BEFORE_CRASH, header, payload);
            }
        }
        if offload {
            if let Verification::MayOffload(info) = verification {
                self.offload_signature(client, sender, header.sender, topic, payload, info);
            }
            return Decision::Offloaded;
        }
        let signature = match verification {
            Verification::Settled(Some(result)) => result,
            _ => parsed.verify_signature(topic, self.policy.verifying_key(sender)).map_err(|e| DenyReason(e.reason())),
        };
        if let Err(reason) = signature {
            return self.deny_with_header(client, topic, reason, header, payload);
        }
        // Accepted: record it first; a publish that cannot be recorded is not accepted
        // (plugin_opt_audit_queue_full deny) — with `block`, append waits instead.
        let recorded = self.record(AuditEvent::PublishAccepted {
            client: client.id.to_string(),
            topic: topic.to_string(),
            sender: header.sender.to_string(),
            group: header.group.to_string(),
            epoch: header.epoch,
            seq: header.seq,
            envelope_sha256: sha256(payload),
        });
        if !recorded {
            let reason = self.refuse_unrecorded(|| format!("PUBLISH from client '{}' on '{topic}'", client.id));
            *self.stats.publishes_denied.entry(reason.0).or_default() += 1;
            return Decision::Deny(reason);
        }
        self.replay.accept(header.sender, header.seq);
        if self.crash_floor_ms.is_some() && !self.fresh_senders.contains(header.sender) {
            self.fresh_senders.insert(header.sender.into());
        }
        self.note_epoch(group, header.epoch);
        self.stats.publishes_accepted += 1;
        match (path, verification) {
            // Its original was dropped: no MESSAGE event comes for it.
            (_, Verification::Settled(_)) => self.stats.publishes_verified_on_workers += 1,
            (PublishPath::AclWrite, _) => self.remember_verified(client, topic, payload),
            (PublishPath::MessageEvent, _) => {}
        }
        Decision::Allow
    }

    /// After an ACL write check accepted a publish: MESSAGE lets exactly this
    /// message through without checking it again.
    fn remember_verified(&mut self, client: Client<'_>, topic: &str, payload: &[u8]) {
        let slot = &mut self.just_verified;
        slot.client_id.clear();
        slot.client_id.push_str(client.id);
        slot.topic.clear();
        slot.topic.push_str(topic);
        slot.payload_addr = payload.as_ptr() as usize;
        slot.payload_len = payload.len();
        slot.armed = true;
    }

    fn note_epoch(&mut self, group: GroupIdx, epoch: u64) {
        let id = self.policy.group(group).id;
        let first = match self.epochs_seen.get_mut(id) {
            Some(seen) if *seen >= epoch => false,
            Some(seen) => {
                *seen = epoch;
                true
            }
            None => {
                self.epochs_seen.insert(id.into(), epoch);
                true
            }
        };
        if first {
            let group = id.to_string();
            self.host.log(LogLevel::Info, &format!("group {group}: first message under key epoch {epoch}"));
            self.record_decided(AuditEvent::EpochFirstSeen { group, epoch });
        }
    }

    fn deny_with_header(
        &mut self,
        client: Client<'_>,
        topic: &str,
        reason: DenyReason,
        header: &EnvelopeHeader<'_>,
        payload: &[u8],
    ) -> Decision {
        self.deny_publish(client, topic, reason, Some(header), payload);
        Decision::Deny(reason)
    }

    fn deny_publish(&mut self, client: Client<'_>, topic: &str, reason: DenyReason, header: Option<&EnvelopeHeader<'_>>, payload: &[u8]) {
        *self.stats.publishes_denied.entry(reason.0).or_default() += 1;
        if reason == DenyReason::AUDIT_UNAVAILABLE {
            // Logged and counted by refuse_unrecorded; the log cannot take a record of it.
            return;
        }
        self.log_denial(|| {
            let about = header
                .map(|h| format!(" (sender {}, group {}, epoch {}, seq {})", h.sender, h.group, h.epoch, h.seq))
                .unwrap_or_default();
            format!("denied PUBLISH from client '{}' on '{topic}': {reason}{about}", client.id)
        });
        self.record(AuditEvent::PublishDenied {
            client: client.id.to_string(),
            topic: topic.to_string(),
            reason: Token::Borrowed(reason.0),
            sender: header.map(|h| h.sender.to_string()),
            group: header.map(|h| h.group.to_string()),
            epoch: header.map(|h| h.epoch),
            seq: header.map(|h| h.seq),
            envelope_sha256: (!payload.is_empty()).then(|| sha256(payload)),
        });
        // Only faults of the client's own envelopes count towards the flood limit.
        if reason.blames_client() && self.flood.record_bad(client.id, Instant::now()) {
            let why = format!("more than {} bad publishes within {:?}", self.config.flood_limit, self.config.flood_window);
            self.kick(Kick::ClientId(client.id.to_string()), client.id, &why, crate::formats::reasons::FLOOD);
        }
    }
}
