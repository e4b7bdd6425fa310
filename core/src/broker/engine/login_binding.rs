//! A login bound to the broker handle that made it, so that the broker's
//! re-authentication on reload (SIGHUP) neither drops every device nor
//! corrupts the broker's memory.
//!
//! On reload, Mosquitto 2.0 and 2.1 run the basic-auth check again for every
//! client session they hold (`mosquitto_security_apply[_default]`, right after
//! the RELOAD event, in the same loop pass and before the next TICK), with the
//! username and password the client connected with and the same `mosquitto *`
//! handle: live connections and offline persistent sessions alike. A login
//! token is single use, so checked as a new login it is refused
//! (`login-reused`) and the broker disconnects the client.
//!
//! The rule (docs/POLICY.md §10): a basic-auth check is a *re-check* only when
//! a reload opened the re-check window, no tick has closed it yet, and client
//! id, username and password are exactly those of the last login this plugin
//! instance did not refuse on that handle. Then:
//! - a live connection's key login passes while the username still names a
//!   device of the policy in force (or the authority) whose key is the one the
//!   token was verified with; otherwise it is judged as a new login;
//! - an offline session (its connection ended, the broker may keep the
//!   session) is never refused: a key login passes, a login another mechanism
//!   authenticates (`auth defer`) gets no opinion. A refusal would not end the
//!   session (the broker only marks it disconnected again), and Mosquitto 2.0
//!   then puts it on its session-expiry list a second time, which is a use
//!   after free once the session expires or is resumed (seen with valgrind on
//!   2.0.11 and 2.0.21).
//!
//! A session the broker restored from its persistence file, which no client has
//! connected to since the start, has no binding (and no password: Mosquitto
//! does not save passwords); its re-check is answered as an offline session's
//! ([`Engine::recheck_restored_session`]).
//!
//! Anything else is a new login. A replayed token on another connection has
//! another handle, or, on a handle reused after its session ended, a binding
//! that was removed or that its first new login replaces.
//!
//! The broker says nothing when it frees an offline session (expiry), so such a
//! binding stays until the handle is used again; only a new connection that
//! the broker gives that very handle, that presents the ended session's exact
//! client id, username and (already used) password, and whose CONNECT the
//! broker handles inside a reload's window, could pass as its re-check.

use std::collections::HashMap;

use crate::broker::config::AuthMode;
use crate::broker::decision::Decision;
use crate::formats::audit::hashing::{sha256, Hash};
use crate::formats::keys::VerifyingKey;

use super::Engine;

/// The broker's handle of one client connection (Mosquitto's `struct mosquitto *`,
/// as a number): only compared, never dereferenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub usize);

/// What the broker keeps when a connection ends, as its event tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterClose {
    /// The session ended with it (2.1's DISCONNECT; 2.0's DISCONNECT of an
    /// MQTT 3.1/3.1.1 clean session).
    SessionEnded,
    /// The session may live on without a connection (2.1's CLIENT_OFFLINE;
    /// 2.0's DISCONNECT otherwise, which does not tell).
    SessionMayPersist,
}

/// What a login that mqseal did not refuse was made with.
pub(super) struct LoginBinding {
    client_id: Box<str>,
    username: Option<Box<str>>,
    password_sha256: Option<Hash>,
    /// The key the token verified with, for a key login; None for a login
    /// that another mechanism authenticates (`auth defer`).
    key: Option<VerifyingKey>,
    /// Its connection ended and the broker may keep the session.
    offline: bool,
}

impl LoginBinding {
    fn made_with(&self, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> bool {
        *self.client_id == *client_id
            && self.username.as_deref() == username
            && self.password_sha256 == password.map(sha256)
    }
}

/// The login of every handle the broker may re-check, and whether a reload's re-check is on.
#[derive(Default)]
pub(super) struct LoginBindings {
    by_connection: HashMap<ConnectionId, LoginBinding>,
    recheck_open: bool,
}

impl LoginBindings {
    pub(super) fn open_recheck_window(&mut self) {
        self.recheck_open = true;
    }

    pub(super) fn close_recheck_window(&mut self) {
        self.recheck_open = false;
    }
}

impl Engine {
    /// A basic-auth check from the broker for `connection`: a re-check during a
    /// reload is answered by the rule of the module notes; anything else is a
    /// new login ([`Engine::authenticate`]), bound to `connection` unless refused.
    pub fn login(&mut self, connection: ConnectionId, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Decision {
        if let Some(answer) = self.recheck(connection, client_id, username, password) {
            return answer;
        }
        let decision = self.authenticate(client_id, username, password);
        // A refusal leaves the handle's binding alone: the broker ends a live
        // connection whose re-check fails, and that connection's session may
        // live on offline, to be re-checked at the next reload.
        if matches!(decision, Decision::Allow | Decision::Defer) {
            let key = match decision {
                Decision::Allow => username.and_then(|u| self.login_key_of(u)),
                _ => None,
            };
            let binding = LoginBinding {
                client_id: client_id.into(),
                username: username.map(Into::into),
                password_sha256: password.map(sha256),
                key,
                offline: false,
            };
            self.logins.by_connection.insert(connection, binding);
        }
        decision
    }

    /// The connection ended (DISCONNECT, or CLIENT_OFFLINE on 2.1): its login
    /// is no live connection's any more. A session that may persist keeps it
    /// as an offline session's; the second end of a handle (its offline
    /// session taken over or ended, or a new connection on a reused handle
    /// refused) removes it.
    pub fn connection_closed(&mut self, connection: ConnectionId, after: AfterClose) {
        match self.logins.by_connection.get_mut(&connection) {
            Some(binding) if !binding.offline && after == AfterClose::SessionMayPersist => binding.offline = true,
            Some(_) => {
                self.logins.by_connection.remove(&connection);
            }
            None => {}
        }
    }

    /// Live connections with a bound key login (for tests and stats).
    pub fn bound_logins(&self) -> usize {
        self.logins.by_connection.values().filter(|b| !b.offline && b.key.is_some()).count()
    }

    /// Offline sessions whose re-check mqseal will not refuse (for tests and stats).
    pub fn offline_sessions(&self) -> usize {
        self.logins.by_connection.values().filter(|b| b.offline).count()
    }

    /// The answer to a re-check (see the module notes), or None: a new login.
    fn recheck(&self, connection: ConnectionId, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Option<Decision> {
        if !self.logins.recheck_open {
            return None;
        }
        let bound = self.logins.by_connection.get(&connection)?;
        if !bound.made_with(client_id, username, password) {
            return None;
        }
        match (&bound.key, bound.offline) {
            (_, true) => Some(self.offline_session_answer()),
            (Some(key), false) => username.and_then(|u| self.login_key_of(u)).is_some_and(|now| now == *key).then_some(Decision::Allow),
            (None, false) => None,
        }
    }

    /// The broker's basic-auth check of a session it restored from its
    /// persistence file and that no client has connected to since. The plugin
    /// tells those by their protocol version, 0: a CONNECT sets it before any
    /// check, so only the re-check on reload asks about them. Answered as an
    /// offline session's, for the same reasons (the module notes).
    pub fn recheck_restored_session(&self) -> Decision {
        self.offline_session_answer()
    }

    /// Never a refusal: a key login passes (mqseal authenticates); otherwise no
    /// opinion, and the mechanism that authenticates decides.
    fn offline_session_answer(&self) -> Decision {
        match self.config.auth {
            AuthMode::Key => Decision::Allow,
            AuthMode::Defer | AuthMode::None => Decision::Defer,
        }
    }

    /// The key a login token of `username` must be signed with under the policy in force.
    fn login_key_of(&self, username: &str) -> Option<VerifyingKey> {
        if username == crate::formats::control::AUTHORITY_USERNAME {
            return Some(self.authority.login_key());
        }
        let device = self.policy.device_by_username(username)?;
        Some(self.policy.verifying_key(device).clone())
    }
}
