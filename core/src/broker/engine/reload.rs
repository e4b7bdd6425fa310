//! Policy reloads (SIGHUP): loading the policy file, on a helper thread once
//! the broker ticks, and installing it on the broker thread.

use std::path::Path;
use std::sync::{mpsc, Arc};

use crate::broker::host::LogLevel;
use crate::formats::audit::AuditEvent;
use crate::formats::audit::hashing::{sha256, Hash};
use crate::formats::policy::Revocation;
use crate::formats::policy::compiled::CompiledPolicy;
use crate::formats::signed_doc::AuthorityPublicKey;

use super::{Engine, Kick, PendingReload, LoadedInBackground, DROP_OFF_THREAD_ABOVE_DEVICES, write_policy_version};

impl Engine {
    /// SIGHUP: re-read the policy file (paths kept from start). A policy that
    /// does not load leaves the current one in force; one that loads replaces it,
    /// and the clients of devices that lost rights are disconnected.
    ///
    /// Once the broker has ticked, the file is loaded on a helper thread and the
    /// next tick after it finishes installs it (see [`PendingReload`]); before
    /// that (and if no thread can be started) it loads here, at once.
    pub fn reload(&mut self) {
        // The broker re-checks every client's login right after this event.
        self.logins.open_recheck_window();
        if !self.ticks_seen {
            self.host.log(
                LogLevel::Info,
                "the broker has not ticked yet (Mosquitto 2.0.11 never does with per_listener_settings true): \
                 loading the policy on the broker thread",
            );
            self.reload_on_this_thread();
            return;
        }
        if let Some(pending) = &mut self.pending_reload {
            pending.again = true;
            self.host.log(LogLevel::Notice, "policy reload already in progress; the file will be read again when it finishes");
            return;
        }
        self.start_reload();
    }

    /// Whether a background reload is loading.
    pub fn reload_in_progress(&self) -> bool {
        self.pending_reload.is_some()
    }

    fn start_reload(&mut self) {
        let (tx, rx) = mpsc::sync_channel(1);
        let path = self.config.policy.clone();
        let authority = self.authority.clone();
        let base = Arc::clone(&self.policy);
        let spawned = std::thread::Builder::new().name("mqseal-reload".into()).spawn(move || {
            let loaded = load_policy(&path, &authority).map(|(policy, sha)| {
                let revoked = crate::formats::policy::revocations(&base, &policy);
                LoadedInBackground { policy, sha, base, revoked }
            });
            // A send fails only when the engine is gone: nothing to do then.
            let _ = tx.send(loaded);
        });
        match spawned {
            Ok(thread) => {
                self.host.log(LogLevel::Info, &format!("reloading the policy from {} in the background", self.config.policy.display()));
                self.pending_reload = Some(PendingReload { result: rx, thread, again: false });
            }
            Err(e) => {
                self.host.log(LogLevel::Warning, &format!("cannot start a thread to reload the policy ({e}); loading it on the broker thread"));
                self.reload_on_this_thread();
            }
        }
    }

    /// Loads and applies the policy file at once (who loses rights is worked out here).
    fn reload_on_this_thread(&mut self) {
        let loaded = load_policy(&self.config.policy, &self.authority);
        self.finish_reload(loaded.map(|(policy, sha)| (policy, sha, None)));
    }

    /// On the broker's tick: installs a background reload that has finished.
    pub(super) fn poll_reload(&mut self) {
        let Some(pending) = &self.pending_reload else { return };
        let loaded = match pending.result.try_recv() {
            Ok(loaded) => loaded,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err("the policy loader thread stopped without a result".to_string()),
        };
        let Some(pending) = self.pending_reload.take() else { return };
        // It has sent (or died): joining waits at most for it to exit.
        let _ = pending.thread.join();
        let loaded = loaded.map(|l| {
            // The diff holds only against the policy it was computed from.
            let revoked = Arc::ptr_eq(&l.base, &self.policy).then_some(l.revoked);
            (l.policy, l.sha, revoked)
        });
        self.finish_reload(loaded);
        if pending.again {
            self.start_reload();
        }
    }

    /// Applies a loaded policy file (with who loses rights, when already known).
    fn finish_reload(&mut self, loaded: Result<(CompiledPolicy, Hash, Option<Vec<Revocation>>), String>) {
        match loaded {
            Err(problem) => {
                self.host.log(LogLevel::Error, &format!("policy reload rejected, keeping version {}: {problem}", self.policy.version()));
                self.record_decided(AuditEvent::PolicyRejected { source: "reload".into(), reason: problem, policy_sha256: None });
            }
            Ok((policy, sha, _)) if policy.version() < self.policy.version() => {
                let problem = format!(
                    "version {} is older than the current version {} (policy-not-newer)",
                    policy.version(),
                    self.policy.version()
                );
                self.host.log(LogLevel::Error, &format!("policy reload rejected, keeping version {}: {problem}", self.policy.version()));
                self.record_decided(AuditEvent::PolicyRejected { source: "reload".into(), reason: problem, policy_sha256: Some(sha) });
            }
            Ok((policy, sha, revoked)) => {
                if let Err(problem) = write_policy_version(&self.config.state_dir, policy.version()) {
                    self.host.log(LogLevel::Error, &problem);
                }
                self.install_policy(policy, sha, "reload", revoked)
            }
        }
    }

    /// Puts `policy` in force; `revoked` is who loses rights against the policy
    /// in force now, computed here when not given.
    pub(super) fn install_policy(&mut self, policy: CompiledPolicy, sha: Hash, source: &'static str, revoked: Option<Vec<Revocation>>) {
        let revoked = revoked.unwrap_or_else(|| crate::formats::policy::revocations(&self.policy, &policy));
        let old_version = self.policy.version();
        let old = std::mem::replace(&mut self.policy, Arc::new(policy));
        self.retire(old);
        self.just_verified.armed = false;
        self.host.log(
            LogLevel::Notice,
            &format!(
                "policy version {} loaded on {source} (was {old_version}): {} devices, {} groups; {} devices lost rights",
                self.policy.version(),
                self.policy.device_count(),
                self.policy.group_count(),
                revoked.len()
            ),
        );
        self.record_decided(AuditEvent::PolicyLoaded { source: source.into(), policy_sha256: sha, serial: Some(self.policy.version()) });
        for revocation in revoked {
            let why = revocation.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ");
            let label = format!("username {} (device {})", revocation.username, revocation.device_id);
            let reason = revocation.reasons.first().map(|r| r.reason()).unwrap_or(crate::formats::reasons::REVOKED);
            self.kick(Kick::Username(revocation.username.clone()), &label, &why, reason);
        }
    }

    /// Frees a replaced policy; a large one on a helper thread (or here, if
    /// no thread can be started).
    fn retire(&mut self, old: Arc<CompiledPolicy>) {
        self.retiring.retain(|t| !t.is_finished());
        if old.device_count() <= DROP_OFF_THREAD_ABOVE_DEVICES {
            return;
        }
        // On failure the closure, and the policy with it, is dropped here.
        if let Ok(thread) = std::thread::Builder::new().name("mqseal-retire".into()).spawn(move || drop(old)) {
            self.retiring.push(thread);
        }
    }
}

/// Reads, verifies and compiles the policy file; also returns the SHA-256 of its bytes.
pub(super) fn load_policy(path: &Path, authority: &AuthorityPublicKey) -> Result<(CompiledPolicy, Hash), String> {
    // The same bounded reader the policy module uses: a policy file is never read unbounded.
    let bytes = crate::formats::signed_doc::read_document_file(path).map_err(|e| e.to_string())?;
    let origin = path.display().to_string();
    // Verifies and compiles in one pass (compiling checks every rule once).
    let compiled = crate::formats::policy::compile_signed(&bytes, authority, &origin).map_err(|e| e.to_string())?;
    Ok((compiled, sha256(&bytes)))
}
