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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the reason is a short stable token (logged and audited).
    Deny(DenyReason),
    /// No opinion: the next plugin or Mosquitto's own checks decide.
    Defer,
}

/// Why something was refused. The `as_str` tokens are stable: logs, audit
/// records and tests use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `plugin_opt_unprotected deny` and the topic has no owning group.
    UnprotectedDenied,
    /// A callback panicked; mqseal fails closed.
    InternalError,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnprotectedDenied => "unprotected-denied",
            DenyReason::InternalError => "internal-error",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
