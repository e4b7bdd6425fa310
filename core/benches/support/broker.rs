//! Starts an [`Engine`] the way the plugin does (`Engine::start` with a
//! `PluginConfig` parsed from `plugin_opt_*` options), on files in a temporary
//! directory: a signed policy, the authority's public key, the broker key and a
//! fresh audit log. Shared by the benches and the scale program through `#[path]`.
#![allow(dead_code)]

use std::path::Path;

use mqseal_core::broker::config::PluginConfig;
use mqseal_core::broker::engine::Engine;
use mqseal_core::broker::host::{Host, LogLevel};
use mqseal_core::formats::keys::{Overwrite, SigningKey};
use mqseal_core::formats::policy::Policy;
use mqseal_core::formats::signed_doc::AuthoritySigningKey;

/// The broker log, thrown away: the benches measure decisions, not logging.
pub struct NullHost;

impl Host for NullHost {
    fn log(&self, _level: LogLevel, _message: &str) {}
}

/// Keeps only the engine's last words (`stopping: ... audit log N records, M refused`),
/// so a bench can show that no audit record was refused while it measured.
pub struct ShutdownLine(pub std::sync::Arc<parking_lot::Mutex<Option<String>>>);

impl Host for ShutdownLine {
    fn log(&self, _level: LogLevel, message: &str) {
        if message.starts_with("stopping:") {
            *self.0.lock() = Some(message.to_string());
        }
    }
}

pub fn authority() -> AuthoritySigningKey {
    AuthoritySigningKey::from_seed(&[0xA1; 32])
}

/// Signs `policy` and writes the files the plugin options name into `dir`.
/// `extra` options (name, value) are added after the required ones.
pub fn write_broker_files(dir: &Path, policy: &Policy) {
    let authority = authority();
    let signed = policy.sign(&authority).expect("sign policy");
    std::fs::write(dir.join("policy.json"), signed).expect("write policy");
    authority.public().save(&dir.join("authority.pub"), Overwrite::Allow).expect("write authority.pub");
    SigningKey::ed25519_from_seed(&[0xB2; 32]).save(&dir.join("broker.key"), Overwrite::Allow).expect("write broker key");
}

/// The plugin configuration for the files in `dir`, plus `extra` options.
pub fn config(dir: &Path, extra: &[(&str, &str)]) -> PluginConfig {
    let policy = dir.join("policy.json").display().to_string();
    let authority = dir.join("authority.pub").display().to_string();
    let broker_key = dir.join("broker.key").display().to_string();
    let audit_log = dir.join("audit.jsonl").display().to_string();
    let mut options: Vec<(&str, &str)> = vec![
        ("policy", &policy),
        ("authority", &authority),
        ("broker_key", &broker_key),
        ("audit_log", &audit_log),
        ("unprotected", "allow"),
    ];
    options.extend_from_slice(extra);
    PluginConfig::from_options(options).expect("plugin options")
}

/// Writes the files and starts an engine on them (as the plugin's start-up does).
pub fn start_engine(dir: &Path, policy: &Policy, extra: &[(&str, &str)], host: Box<dyn Host>) -> Engine {
    write_broker_files(dir, policy);
    Engine::start(config(dir, extra), host).unwrap_or_else(|e| panic!("Engine::start: {e}"))
}
