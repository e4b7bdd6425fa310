//! The engine: one per plugin instance, owned by the plugin's userdata. It answers
//! every broker question; the plugin crate only translates.

use crate::config::{PluginConfig, UnprotectedMode};
use crate::decision::{Access, Client, Decision, DenyReason};
use crate::host::{Host, LogLevel};

/// Everything one loaded plugin instance knows.
pub struct Engine {
    config: PluginConfig,
    host: Box<dyn Host>,
}

/// A client the engine wants disconnected; the plugin does it on the next TICK,
/// outside any other callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub client_id: String,
    pub reason: String,
}

/// A problem that stops the plugin from starting (Mosquitto then refuses to run).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Engine {
    pub fn start(config: PluginConfig, host: Box<dyn Host>) -> Result<Self, StartError> {
        Ok(Engine { config, host })
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// Answers an ACL check (publish, will, delivery, subscribe, unsubscribe).
    pub fn acl_check(&mut self, _client: Client<'_>, access: Access, _topic: &str, _payload: &[u8]) -> Decision {
        if access == Access::Unsubscribe {
            // Leaving a subscription never widens anyone's access.
            return match self.config.unprotected {
                UnprotectedMode::Defer => Decision::Defer,
                _ => Decision::Allow,
            };
        }
        self.unprotected_decision()
    }

    /// Sees every client publish once, after the ACL write check, before it is stored.
    pub fn on_message(&mut self, _client: Client<'_>, _topic: &str, _payload: &[u8], _retain: bool) -> Decision {
        Decision::Allow
    }

    /// SIGHUP: re-read the policy file (paths kept from start).
    pub fn reload(&mut self) {
        self.host.log(LogLevel::Info, "reload requested");
    }

    /// Periodic work on the broker thread; returns clients to disconnect.
    pub fn tick(&mut self) -> Vec<Kick> {
        Vec::new()
    }

    pub fn on_disconnect(&mut self, _client: Client<'_>) {}

    /// Flushes state at plugin cleanup.
    pub fn shutdown(self) {}

    fn unprotected_decision(&self) -> Decision {
        match self.config.unprotected {
            UnprotectedMode::Allow => Decision::Allow,
            UnprotectedMode::Deny => Decision::Deny(DenyReason::UnprotectedDenied),
            UnprotectedMode::Defer => Decision::Defer,
        }
    }
}
