//! Authentication: the login checks of `plugin_opt_auth key` and `defer`, and
//! who owns a client id (docs/POLICY.md §3.5, docs/LOGIN.md).

use crate::broker::config::AuthMode;
use crate::broker::decision::{Client, Decision, DenyReason};
use crate::broker::host::LogLevel;
use crate::formats::audit::AuditEvent;
use crate::formats::control::AUTHORITY_USERNAME;
use crate::formats::login_token;
use crate::formats::policy::compiled::DeviceIdx;

use super::client_ids::{self, Owner};
use super::{has_pattern_chars, now_ms, Engine};

impl Engine {
    /// Checks a login. With `plugin_opt_auth key` the username must name a device
    /// of the policy (or be the authority) and the password must be a fresh login
    /// token signed by its key; with `defer` another mechanism authenticates and
    /// mqseal only refuses what it must (see [`Engine::check_claimed_login`]). In
    /// both, the client id must belong to whoever logs in (docs/POLICY.md §3.5):
    /// Mosquitto would otherwise close the owner's connection or discard its session.
    pub fn authenticate(&mut self, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Decision {
        if self.config.auth != AuthMode::Key {
            return match self.check_claimed_login(client_id, username) {
                Ok(()) => Decision::Defer,
                Err(reason) => self.refuse_login(client_id, username, reason),
            };
        }
        let outcome = self.check_login(client_id, username, password);
        match outcome {
            Ok(who) => {
                let recorded = self.record(AuditEvent::AuthAccepted {
                    client: client_id.to_string(),
                    username: username.map(str::to_string),
                    method: "key".into(),
                });
                if !recorded {
                    self.stats.logins_refused += 1;
                    return Decision::Deny(self.refuse_unrecorded(|| format!("login of client '{client_id}' as {who}")));
                }
                self.host.log(LogLevel::Info, &format!("client '{client_id}' logged in as {who}"));
                Decision::Allow
            }
            Err(reason) => self.refuse_login(client_id, username, reason),
        }
    }

    fn refuse_login(&mut self, client_id: &str, username: Option<&str>, reason: DenyReason) -> Decision {
        self.stats.logins_refused += 1;
        self.record(AuditEvent::AuthRefused {
            client: client_id.to_string(),
            username: username.map(str::to_string),
            reason: reason.0.into(),
        });
        self.log_denial(|| format!("refused login of client '{client_id}' (username {username:?}): {reason}"));
        Decision::Deny(reason)
    }

    /// Checks a login token; returns who logged in ("device ID" or "the authority").
    fn check_login(&mut self, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Result<String, DenyReason> {
        let client = Client { id: client_id, username };
        if let Some(problem) = Self::client_identity_problem(client) {
            return Err(problem);
        }
        // The realm's authority logs in with its own key to publish control documents.
        let (who, key_owner, key, claimant) = if username == Some(AUTHORITY_USERNAME) {
            ("the authority".to_string(), AUTHORITY_USERNAME.to_string(), self.authority.login_key(), Owner::Authority)
        } else {
            let device = self.device_of(client).ok_or(DenyReason::NOT_A_DEVICE)?;
            let id = self.policy.device_id(device).to_string();
            (format!("device {id}"), id, self.policy.verifying_key(device).clone(), Owner::Device(device))
        };
        self.check_client_id_owner(client_id, claimant)?;
        let password = password.ok_or(DenyReason(login_token::LoginError::Malformed.reason()))?;
        let last = self.last_login.get(key_owner.as_str()).copied().unwrap_or(0);
        let ts = login_token::verify_token(
            password,
            &key,
            client_id,
            username.unwrap_or_default(),
            now_ms(),
            self.config.auth_token_max_age,
            last,
        )
        .map_err(|e| DenyReason(e.reason()))?;
        self.last_login.insert(key_owner.into(), ts);
        Ok(who)
    }

    /// `plugin_opt_auth defer`: another mechanism authenticates the username, and
    /// mqseal learns the device from it. Refused here: a client id that the
    /// username's identity (a device, the authority, or — for any other username
    /// and for none — nobody) does not own, and pattern characters in the client
    /// id of a device or of the authority. Everything else is left to the others.
    fn check_claimed_login(&self, client_id: &str, username: Option<&str>) -> Result<(), DenyReason> {
        let claimant = match username {
            Some(AUTHORITY_USERNAME) => Owner::Authority,
            Some(name) => self.policy.device_by_username(name).map_or(Owner::Nobody, Owner::Device),
            None => Owner::Nobody,
        };
        if claimant != Owner::Nobody && has_pattern_chars(client_id) {
            return Err(DenyReason::BAD_CLIENT_ID);
        }
        self.check_client_id_owner(client_id, claimant)
    }

    /// The client id must be owned by `claimant` (docs/POLICY.md §3.5).
    fn check_client_id_owner(&self, client_id: &str, claimant: Owner<DeviceIdx>) -> Result<(), DenyReason> {
        let owner = client_ids::owner(client_id, AUTHORITY_USERNAME, |id| self.policy.device_by_id(id));
        if owner == claimant {
            Ok(())
        } else {
            Err(DenyReason::CLIENT_ID_NOT_OWNED)
        }
    }
}
