//! A login bound to the live connection that made it, so that the broker's
//! re-authentication on reload (SIGHUP) does not drop every device.
//!
//! On reload, Mosquitto 2.0 and 2.1 run the basic-auth check again for every
//! client session they hold (`mosquitto_security_apply[_default]`, right after
//! the RELOAD event, in the same loop pass and before the next TICK), with the
//! username and password the client connected with and the same `mosquitto *`
//! handle. A login token is single use, so checked as a new login it is
//! refused (`login-reused`) and the broker disconnects the client.
//!
//! The rule (docs/POLICY.md, "Login"): a basic-auth check passes as a
//! *re-check* only when all of these hold, otherwise it is judged as a new
//! login (where a used token is refused):
//! - a reload opened the re-check window and no tick has closed it yet;
//! - this connection handle made an accepted key login on this instance and has
//!   not disconnected since (the binding is removed at DISCONNECT and
//!   CLIENT_OFFLINE, so it never outlives the connection);
//! - client id, username and password are exactly those of that login;
//! - the username still names a device of the policy in force (or the
//!   authority) whose key is the one the token was verified with.
//!
//! A replayed token on another connection has another handle (or, for a handle
//! reused after its connection ended, no binding), so it is refused as before.

use std::collections::HashMap;

use crate::formats::audit::hashing::{sha256, Hash};
use crate::formats::keys::VerifyingKey;

use super::Engine;

/// The broker's handle of one client connection (Mosquitto's `struct mosquitto *`,
/// as a number): only compared, never dereferenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub usize);

/// What an accepted key login was made with.
pub(super) struct LoginBinding {
    client_id: Box<str>,
    username: Box<str>,
    password_sha256: Hash,
    /// The key the token verified with at login.
    key: VerifyingKey,
}

/// Every live connection's accepted login, and whether a reload's re-check is on.
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

    pub(super) fn len(&self) -> usize {
        self.by_connection.len()
    }
}

impl Engine {
    /// A basic-auth check from the broker for `connection`: a re-check of a
    /// bound login during a reload passes (see the module notes); anything else
    /// is a new login ([`Engine::authenticate`]), bound to `connection` when
    /// accepted.
    pub fn login(
        &mut self,
        connection: ConnectionId,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> crate::broker::decision::Decision {
        use crate::broker::decision::Decision;
        if self.passes_recheck(connection, client_id, username, password) {
            return Decision::Allow;
        }
        let decision = self.authenticate(client_id, username, password);
        // A refusal leaves a binding alone: the broker ends a connection whose
        // re-check fails, and its DISCONNECT removes the binding.
        if let (Decision::Allow, Some(username), Some(password)) = (decision, username, password) {
            if let Some(key) = self.login_key_of(username) {
                let binding =
                    LoginBinding { client_id: client_id.into(), username: username.into(), password_sha256: sha256(password), key };
                self.logins.by_connection.insert(connection, binding);
            }
        }
        decision
    }

    /// The connection ended (DISCONNECT, or CLIENT_OFFLINE on 2.1): its login
    /// can no longer be re-checked.
    pub fn connection_closed(&mut self, connection: ConnectionId) {
        self.logins.by_connection.remove(&connection);
    }

    /// Live connections with a bound login (for tests and stats).
    pub fn bound_logins(&self) -> usize {
        self.logins.len()
    }

    fn passes_recheck(&self, connection: ConnectionId, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> bool {
        if !self.logins.recheck_open {
            return false;
        }
        let (Some(username), Some(password)) = (username, password) else { return false };
        let Some(bound) = self.logins.by_connection.get(&connection) else { return false };
        let same_login =
            *bound.client_id == *client_id && *bound.username == *username && bound.password_sha256 == sha256(password);
        same_login && self.login_key_of(username).is_some_and(|key| key == bound.key)
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
