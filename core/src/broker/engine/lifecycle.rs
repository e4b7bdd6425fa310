//! Starting and stopping: [`Engine::start`] loads everything the engine needs,
//! [`Engine::shutdown`] flushes the audit log and saves the replay snapshot;
//! [`Engine::on_disconnect`] forgets what the engine kept for one client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::config::PluginConfig;
use crate::broker::decision::{Client, DenyReason};
use crate::broker::flood::FloodGuard;
use crate::broker::host::{Host, LogLevel};
use crate::formats::audit::hashing::Hash;
use crate::formats::audit::{AuditConfig, AuditEvent, AuditLog};
use crate::formats::policy::compiled::CompiledPolicy;
use crate::formats::signed_doc::AuthorityPublicKey;

use super::reload::load_policy;
use super::{Engine, StartError, JustVerified, Stats, now_ms, PUSHED_POLICY_FILE, CLEAN_SHUTDOWN_MARKER};

impl Engine {
    /// Loads the authority key, the policy, the broker key and the audit log, and
    /// rebuilds the replay window. Any failure names the option to fix.
    pub fn start(config: PluginConfig, host: Box<dyn Host>) -> Result<Self, StartError> {
        let authority = AuthorityPublicKey::load(&config.authority).map_err(|e| StartError::Authority(e.to_string()))?;
        let (file_policy, file_sha256) = load_policy(&config.policy, &authority).map_err(StartError::Policy)?;
        let (policy, policy_sha256, policy_source, pushed_note) =
            match choose_pushed_policy(&config.state_dir, &authority, file_policy.version()) {
                PushedChoice::Use(policy, sha, note) => (policy, sha, "start-pushed", Some((LogLevel::Notice, note))),
                PushedChoice::Ignore(note) => (file_policy, file_sha256, "start", note),
            };
        if let Some((level, note)) = &pushed_note {
            host.log(*level, note);
        }
        let audit_lock = lock_audit_log(&config.audit_log).map_err(StartError::Audit)?;
        let broker_key = crate::formats::audit::keyfile::load_signing_key(&config.broker_key)
            .map_err(|e| StartError::BrokerKey(e.to_string()))?;
        // Kept to sign the state snapshot at shutdown.
        let snapshot_key = broker_key.clone();
        let (audit, report) =
            AuditLog::open(AuditConfig::from(&config), broker_key).map_err(|e| StartError::Audit(e.to_string()))?;
        if let Some(recovery) = &report.recovered {
            host.log(
                LogLevel::Warning,
                &format!(
                    "audit log recovered after a crash: cut {} torn bytes from {} at offset {}",
                    recovery.cut_bytes,
                    recovery.file.display(),
                    recovery.cut_offset
                ),
            );
        }
        if let Some(continued) = &report.continued {
            host.log(
                LogLevel::Warning,
                &format!("audit log chain broken at {} ({}); continuing in a new file", continued.location, continued.reason),
            );
        }
        for warning in &report.warnings {
            host.log(LogLevel::Warning, &format!("audit log: {warning}"));
        }
        // After the audit log is open: opening repairs a torn tail first. The
        // state files are checked against the log (crate::broker::state).
        let restored = crate::broker::state::restore(&config.state_dir, &config.audit_log, &snapshot_key.verifying_key(), audit.origin())
            .map_err(StartError::Replay)?;
        for distrusted in &restored.distrusted {
            host.log(
                LogLevel::Warning,
                &format!("{} not used as found ({}): {}; rebuilt from the audit log", distrusted.file, distrusted.reason, distrusted.detail),
            );
            // A record of what start-up did, whatever else happens: held if the log cannot take it now.
            audit.append_decided(AuditEvent::StateRebuilt {
                file: distrusted.file.into(),
                reason: distrusted.reason.into(),
                detail: distrusted.detail.clone(),
                records_read: restored.records_read,
            });
        }
        if policy.version() < restored.policy_floor {
            let problem = format!(
                "{} has version {}, older than version {} which this broker already loaded (the audit log and state \
                 directory record it; an old policy may hold revoked rights); export a current policy",
                config.policy.display(),
                policy.version(),
                restored.policy_floor
            );
            audit.append_decided(AuditEvent::PolicyRejected {
                source: policy_source.into(),
                reason: format!("{}: {problem}", DenyReason::POLICY_NOT_NEWER),
                policy_sha256: Some(policy_sha256),
            });
            audit.append_decided(AuditEvent::PluginStop { reason: crate::formats::reasons::REFUSED_TO_START.into() });
            // The floor the log proves, so that the file no longer says less.
            if let Err(problem) = crate::broker::state::write_policy_version(&config.state_dir, restored.policy_floor) {
                host.log(LogLevel::Error, &problem);
            }
            for problem in audit.shutdown().problems {
                host.log(LogLevel::Error, &format!("audit log: {problem}"));
            }
            return Err(StartError::Policy(problem));
        }
        crate::broker::state::write_policy_version(&config.state_dir, policy.version()).map_err(StartError::Replay)?;
        let marker = config.state_dir.join(CLEAN_SHUTDOWN_MARKER);
        let marker_found = marker.exists();
        if marker_found {
            std::fs::remove_file(&marker).map_err(|e| StartError::Replay(format!("cannot remove {}: {e}", marker.display())))?;
        }
        // Clean only if the log agrees: a marker written by hand after a crash changes nothing.
        let clean_before = marker_found && restored.closed_cleanly;
        let crash_floor_ms = ((!clean_before && !report.created) || !restored.complete).then(now_ms);
        if !restored.complete {
            host.log(
                LogLevel::Warning,
                "the audit log cannot prove every acceptance (its first files are gone, or it was continued after a break, \
                 and no signed replay snapshot covers that): envelopes sealed before now are refused from each sender until \
                 it has a newer message accepted",
            );
        } else if crash_floor_ms.is_some() {
            host.log(
                LogLevel::Warning,
                "the last run did not shut down cleanly: envelopes sealed before now are refused from each sender \
                 until it has a newer message accepted (replay protection across the crash)",
            );
        }
        let replay = restored.replay;
        host.log(
            LogLevel::Info,
            &format!(
                "replay window: {} senders ({} audit records in {} files read in {} ms{})",
                replay.senders(),
                restored.records_read,
                restored.files_read,
                restored.elapsed.as_millis(),
                if restored.from_snapshot { " after the signed snapshot" } else { ", no usable snapshot" }
            ),
        );
        host.log(
            LogLevel::Notice,
            &format!(
                "policy version {} loaded: {} devices, {} groups (sha256 {})",
                policy.version(),
                policy.device_count(),
                policy.group_count(),
                crate::formats::audit::hashing::to_hex(&policy_sha256)
            ),
        );
        let offload = crate::broker::offload::Offload::new(config.verify_workers, config.verify_offload_above);
        let mut engine = Engine {
            flood: FloodGuard::new(config.flood_limit, config.flood_window),
            withheld: Default::default(),
            config,
            host,
            authority,
            policy: Arc::new(policy),
            audit: Some(audit),
            replay,
            just_verified: JustVerified::default(),
            last_login: HashMap::new(),
            epochs_seen: Default::default(),
            bundle_versions: HashMap::new(),
            pending_kicks: Vec::new(),
            kick_notes: HashMap::new(),
            logins: Default::default(),
            _audit_lock: audit_lock,
            snapshot_key,
            crash_floor_ms,
            fresh_senders: Default::default(),
            stats: Stats::default(),
            log_window: (Instant::now(), 0),
            last_housekeeping: Instant::now(),
            ticks_seen: false,
            pending_reload: None,
            retiring: Vec::new(),
            offload,
            republish: Vec::new(),
        };
        if engine.offload.workers() > 0 {
            engine.host.log(
                LogLevel::Info,
                &format!(
                    "up to {} verification worker threads for QoS 0 protected publishes, started when they come at {} a second or more",
                    engine.offload.workers(),
                    engine.config.verify_offload_above
                ),
            );
        }
        let settings = engine.settings_for_audit();
        engine.record_decided(AuditEvent::PluginStart { version: env!("CARGO_PKG_VERSION").to_string(), settings });
        engine.record_decided(AuditEvent::PolicyLoaded {
            source: policy_source.into(),
            policy_sha256,
            serial: Some(engine.policy.version()),
        });
        Ok(engine)
    }

    pub fn on_disconnect(&mut self, client: Client<'_>) {
        self.flood.forget(client.id);
        for event in self.withheld.take_client(client.id) {
            self.record(event);
        }
    }

    /// Flushes state at plugin cleanup: the last audit records and checkpoint,
    /// then the replay snapshot that covers them.
    pub fn shutdown(mut self) {
        // No thread of ours may outlive this call: the broker may unload the library next.
        self.stop_offload();
        if let Some(pending) = self.pending_reload.take() {
            let _ = pending.thread.join();
            self.host.log(LogLevel::Notice, "shutdown: a policy reload in progress was abandoned");
        }
        for thread in self.retiring.drain(..) {
            let _ = thread.join();
        }
        for event in self.withheld.take_all() {
            self.record_decided(event);
        }
        self.record_decided(AuditEvent::PluginStop { reason: crate::formats::reasons::SHUTDOWN.into() });
        let Some(audit) = self.audit.take() else { return };
        let origin = audit.origin().to_string();
        let report = audit.shutdown();
        for problem in &report.problems {
            self.host.log(LogLevel::Error, &format!("audit log: {problem}"));
        }
        let saved = match (report.stats.last_index, report.stats.head) {
            (Some(index), Some(head)) => crate::broker::state::save_snapshot(
                &self.config.state_dir,
                &self.replay,
                (index, head),
                &origin,
                self.policy.version(),
                &self.snapshot_key,
            ),
            _ => Err("the audit log holds no record: no replay snapshot written".to_string()),
        };
        match saved {
            // Only a complete snapshot makes the next start a clean one.
            Ok(()) if report.stats.records_lost == 0 && !report.stats.failed => {
                let marker = self.config.state_dir.join(CLEAN_SHUTDOWN_MARKER);
                if let Err(e) = crate::formats::keys::write_atomic(&marker, b"", 0o644, crate::formats::keys::Overwrite::Allow) {
                    self.host.log(LogLevel::Error, &format!("cannot write {}: {e}", marker.display()));
                }
            }
            Ok(()) => {}
            Err(problem) => self.host.log(LogLevel::Error, &problem),
        }
        let denied: u64 = self.stats.publishes_denied.values().sum();
        self.host.log(
            LogLevel::Notice,
            &format!(
                "stopping: {} publishes accepted ({} verified on worker threads), {denied} denied, {} subscriptions denied, {} deliveries withheld, {} clients disconnected; audit log {} records, {} refused",
                self.stats.publishes_accepted,
                self.stats.publishes_verified_on_workers,
                self.stats.subscribes_denied,
                self.stats.deliveries_denied,
                self.stats.clients_kicked,
                report.stats.records_written,
                report.stats.records_refused
            ),
        );
    }
}

/// What to do with a policy pushed over MQTT and persisted in the state directory.
enum PushedChoice {
    /// It is newer than the policy file: start with it.
    Use(CompiledPolicy, Hash, String),
    /// Use the file (with a note to log, if there was a pushed policy at all).
    Ignore(Option<(LogLevel, String)>),
}

fn choose_pushed_policy(state_dir: &Path, authority: &AuthorityPublicKey, file_version: u64) -> PushedChoice {
    let path = state_dir.join(PUSHED_POLICY_FILE);
    if !path.exists() {
        return PushedChoice::Ignore(None);
    }
    match load_policy(&path, authority) {
        Ok((policy, sha)) if policy.version() > file_version => {
            let note = format!(
                "starting with policy version {} pushed over MQTT ({}), newer than plugin_opt_policy's version {file_version}",
                policy.version(),
                path.display()
            );
            PushedChoice::Use(policy, sha, note)
        }
        Ok((policy, _)) => PushedChoice::Ignore(Some((
            LogLevel::Info,
            format!(
                "plugin_opt_policy's version {file_version} is not older than the pushed policy version {} in {}: using the file",
                policy.version(),
                path.display()
            ),
        ))),
        // The version floor below still refuses an older file, so ignoring a
        // damaged pushed policy can never bring back revoked rights.
        Err(problem) => PushedChoice::Ignore(Some((LogLevel::Warning, format!("ignoring the pushed policy: {problem}")))),
    }
}

/// Takes an exclusive advisory lock beside the audit log, so that two brokers (or
/// two listener instances) never append to one log and fork its chain.
fn lock_audit_log(audit_log: &Path) -> Result<std::fs::File, String> {
    let mut name = audit_log.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.try_lock().map_err(|_| {
        format!("{} is in use by another broker or listener (lock {} held)", audit_log.display(), path.display())
    })?;
    Ok(file)
}
