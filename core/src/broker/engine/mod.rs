//! The engine: one per plugin instance, owned by the plugin's userdata. It answers
//! every broker question; the plugin crate only translates.
//!
//! Order of checks on a publish to a protected topic, cheapest first: size cap,
//! strict parse, algorithm allow-list (both inside `envelope::parse`), sender =
//! the connection's device, group = the topic's owner, publisher role, key epoch,
//! sequence number, and only then the signature. The sequence number is recorded
//! only after the signature verified, so forgeries cannot burn a sender's numbers.
//!
//! Verify once: Mosquitto runs the ACL write check (with the payload) for client
//! publishes and for wills, then the MESSAGE event for client and bridged
//! publishes (bridges skip ACL checks). The ACL check verifies and remembers
//! what it verified; MESSAGE accepts exactly that message (same client, topic
//! and payload buffer) without verifying again, and verifies anything else.

mod client_ids;
mod control_plane;
mod login_binding;
mod withheld;

pub use login_binding::ConnectionId;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::formats::audit::event::Token;
use crate::formats::audit::hashing::{sha256, Hash};
use crate::formats::audit::{AuditConfig, AuditEvent, AuditLog};
use crate::broker::config::{AuthMode, PluginConfig, UnprotectedMode};
use crate::formats::control::AUTHORITY_USERNAME;
use crate::broker::decision::{Access, Client, Decision, DenyReason};
use crate::formats::envelope::{self, EnvelopeHeader};
use crate::broker::flood::FloodGuard;
use crate::broker::host::{Host, LogLevel};
use crate::formats::login_token;
use crate::formats::policy::compiled::{CompiledPolicy, DeviceIdx, GroupIdx, SubscriptionVerdict};
use crate::formats::policy::Revocation;
use crate::broker::replay::ReplayWindow;
use crate::formats::signed_doc::AuthorityPublicKey;
use client_ids::Owner;

/// Topics under this prefix are mqseal's own control traffic (key exchange,
/// policy pushes; see [`crate::formats::control`]). `$`-topics are not matched by `#`
/// or `+/...` subscriptions.
pub const RESERVED_PREFIX: &str = crate::formats::control::PREFIX;

/// In the state directory: the last policy pushed over MQTT and accepted. At
/// start it wins over `plugin_opt_policy` when its version is higher.
pub const PUSHED_POLICY_FILE: &str = "pushed-policy.json";

/// In the state directory: the highest policy version this broker has loaded, so
/// that an older signed policy (which may hold revoked rights) is never loaded
/// again, not even after a restart (checked against the audit log: crate::broker::state).
pub use crate::broker::state::POLICY_VERSION_FILE;

/// In the state directory while no broker runs: written at clean shutdown,
/// removed at start. Missing at start (with an existing audit log), or present
/// while the log does not end the last run with `log.closed`, means the last run
/// crashed, and the replay window may miss the last accepted publishes (their
/// audit records were still queued in memory).
pub const CLEAN_SHUTDOWN_MARKER: &str = "clean-shutdown";

/// At most this many denial lines per second reach the broker log; the rest are
/// counted and summarised, so a flood cannot flood the log too.
const LOG_LINES_PER_SECOND: u32 = 20;

/// A client the engine wants disconnected. The plugin carries it out (on the
/// next TICK, or where the broker never ticks, at the end of the callback that
/// decided it) and reports back with [`Engine::kick_carried_out`]: the
/// `client.kicked` audit record is written only for a kick that disconnected
/// someone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kick {
    ClientId(String),
    Username(String),
}

/// A problem that stops the plugin from starting (Mosquitto then refuses to run).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("plugin_opt_authority: {0}")]
    Authority(String),
    #[error("plugin_opt_policy: {0}")]
    Policy(String),
    #[error("plugin_opt_broker_key: {0}")]
    BrokerKey(String),
    #[error("plugin_opt_audit_log: {0}")]
    Audit(String),
    #[error("plugin_opt_state_dir: {0}")]
    Replay(String),
}

/// The publish mqseal just verified in an ACL write check. One slot, reused:
/// its strings keep their capacity, so remembering costs no allocation.
#[derive(Default)]
struct JustVerified {
    /// The slot holds a publish not yet seen by the MESSAGE event.
    armed: bool,
    client_id: String,
    topic: String,
    payload_addr: usize,
    payload_len: usize,
}

impl JustVerified {
    /// Disarms the slot; true if it held exactly this publish.
    fn take_if(&mut self, client_id: &str, topic: &str, payload: &[u8]) -> bool {
        std::mem::take(&mut self.armed)
            && self.client_id == client_id
            && self.topic == topic
            && self.payload_addr == payload.as_ptr() as usize
            && self.payload_len == payload.len()
    }
}

/// Where a publish is being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublishPath {
    /// ACL write check: a client publish or a will; the client's device must be the sender.
    AclWrite,
    /// MESSAGE event without a preceding ACL check by us (a bridge, or a plugin
    /// before us granted the ACL check): full verification; a connection with a
    /// device must still be that device.
    MessageEvent,
}

/// Counters, logged at shutdown and summarised when denials were suppressed.
#[derive(Default)]
pub struct Stats {
    pub publishes_accepted: u64,
    pub publishes_denied: HashMap<&'static str, u64>,
    pub subscribes_denied: u64,
    pub deliveries_denied: u64,
    pub logins_refused: u64,
    pub clients_kicked: u64,
    pub log_lines_suppressed: u64,
    /// Events refused because the audit log could not record them.
    pub audit_unavailable: u64,
}

/// Everything one loaded plugin instance knows.
pub struct Engine {
    config: PluginConfig,
    host: Box<dyn Host>,
    authority: AuthorityPublicKey,
    /// Shared with a background reload, which computes who loses rights
    /// against it off the broker thread.
    policy: Arc<CompiledPolicy>,
    audit: Option<AuditLog>,
    replay: ReplayWindow,
    flood: FloodGuard,
    /// Deliveries withheld, recorded once per client and reason, then counted.
    withheld: withheld::WithheldDeliveries,
    just_verified: JustVerified,
    /// Device id → timestamp of its last accepted login token (single use).
    last_login: HashMap<Box<str>, u64>,
    /// Group id → highest key epoch seen in an accepted publish (foldhash: looked
    /// up per message; the ids come from the policy).
    epochs_seen: foldhash::HashMap<Box<str>, u64>,
    /// Device id → version of the last key bundle accepted on its control topic.
    bundle_versions: HashMap<Box<str>, u64>,
    pending_kicks: Vec<Kick>,
    /// For each kick handed out and not yet reported: what to record once it happened.
    kick_notes: HashMap<Kick, KickNote>,
    /// Accepted key logins by connection, for the broker's re-check on reload.
    logins: login_binding::LoginBindings,
    /// Held for the engine's life: one writer per audit log (`<audit_log>.lock`).
    _audit_lock: std::fs::File,
    /// The broker key, to sign the state snapshot at shutdown (crate::broker::state).
    snapshot_key: ed25519_dalek::SigningKey,
    /// After a crash: envelopes sealed before this moment (Unix ms) are refused
    /// from a sender until one of its newer messages has been accepted, because
    /// the replay window may have lost that sender's last accepted numbers.
    crash_floor_ms: Option<u64>,
    /// Senders with a message accepted since the start (only kept after a crash).
    fresh_senders: foldhash::HashSet<Box<str>>,
    stats: Stats,
    log_window: (Instant, u32),
    last_housekeeping: Instant,
    /// The broker calls `tick`: a reload can load in the background and be
    /// installed by a later tick. Without ticks it loads on the broker thread.
    ticks_seen: bool,
    pending_reload: Option<PendingReload>,
    /// Threads dropping replaced policies (large ones take a while to free);
    /// joined before shutdown returns, since the library may be unloaded then.
    retiring: Vec<JoinHandle<()>>,
}

/// A SIGHUP reload in progress: a helper thread reads, verifies and compiles the
/// policy file (7 s for a million devices, which must not stall every client);
/// the next tick installs the result on the broker thread.
struct PendingReload {
    result: mpsc::Receiver<Result<LoadedInBackground, String>>,
    thread: JoinHandle<()>,
    /// Another SIGHUP came while loading: the file may have changed since the
    /// load began, so load again once this one is handled.
    again: bool,
}

/// What the loader thread hands back: the new policy, its file's hash, and who
/// loses rights compared with `base`, the policy in force when the load began
/// (the diff takes 3 s for a million devices; it is redone on the broker thread
/// only if a pushed policy replaced `base` meanwhile).
struct LoadedInBackground {
    policy: CompiledPolicy,
    sha: Hash,
    base: Arc<CompiledPolicy>,
    revoked: Vec<Revocation>,
}

/// Why a kick was decided, recorded when it has happened.
struct KickNote {
    label: String,
    reason: &'static str,
}

/// How often the tick does its housekeeping (flood windows, audit problems).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// While a background reload loads, the tick polls for its result this often
/// (the broker asks for its next tick only this late; see [`Engine::next_tick_in`]).
const RELOAD_POLL_EVERY: Duration = Duration::from_millis(10);

/// Policies with more devices than this are freed on a helper thread after a
/// reload (half a second for a million devices).
const DROP_OFF_THREAD_ABOVE_DEVICES: usize = 10_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A subscription filter on mqseal's control topics; only a shared subscription
/// can hide the reserved prefix behind another.
fn is_control_filter(filter: &str) -> bool {
    filter.starts_with(RESERVED_PREFIX)
        || (filter.starts_with("$share/")
            && crate::formats::topic::parse_subscription(filter).is_ok_and(|s| s.filter.starts_with(RESERVED_PREFIX)))
}

/// `+`, `#` and `/` in a client id or username could widen topic patterns that
/// substitute them (acl_file's %c/%u, other plugins).
fn has_pattern_chars(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'+' | b'#' | b'/'))
}

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
        };
        let settings = engine.settings_for_audit();
        engine.record_decided(AuditEvent::PluginStart { version: env!("CARGO_PKG_VERSION").to_string(), settings });
        engine.record_decided(AuditEvent::PolicyLoaded {
            source: policy_source.into(),
            policy_sha256,
            serial: Some(engine.policy.version()),
        });
        Ok(engine)
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn settings_for_audit(&self) -> std::collections::BTreeMap<String, String> {
        let c = &self.config;
        [
            ("policy", c.policy.display().to_string()),
            ("authority", self.authority.fingerprint()),
            ("unprotected", format!("{:?}", c.unprotected).to_lowercase()),
            ("auth", format!("{:?}", c.auth).to_lowercase()),
            ("max_envelope_bytes", c.max_envelope_bytes.to_string()),
            ("flood_limit", c.flood_limit.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Appends to the audit log. False when the record could not be queued
    /// (queue full, outage, failed writer): the caller must not let what needs
    /// the record happen ([`Self::refuse_unrecorded`]).
    fn record(&mut self, event: AuditEvent) -> bool {
        match &self.audit {
            Some(audit) => audit.append(event).is_ok(),
            None => false,
        }
    }

    /// Records something that has already happened (a kick, a policy put in
    /// force): never refused; held through a full queue or an outage.
    pub(super) fn record_decided(&mut self, event: AuditEvent) {
        if let Some(audit) = &self.audit {
            audit.append_decided(event);
        }
    }

    /// Whether what needs a record may happen now (checked before an effect
    /// that cannot be undone, such as a control document taking effect); a
    /// "no" counts as a refusal in the log's figures.
    pub(super) fn audit_can_record(&self) -> bool {
        self.audit.as_ref().is_some_and(|audit| audit.reserve().is_ok())
    }

    /// The one path for "the audit log cannot take this record": whatever
    /// needed it (a protected publish, a login, a control document) is refused
    /// with `audit-unavailable`. Counted; the refusal itself is not recorded
    /// one by one (the log cannot take it), but `log.outage` counts refusals.
    pub(super) fn refuse_unrecorded(&mut self, what: impl FnOnce() -> String) -> DenyReason {
        self.stats.audit_unavailable += 1;
        self.log_denial(|| format!("refused {}: the audit log cannot record it now ({})", what(), DenyReason::AUDIT_UNAVAILABLE));
        DenyReason::AUDIT_UNAVAILABLE
    }

    /// Logs a denial, at most LOG_LINES_PER_SECOND a second; the text is only
    /// made when it will be logged (a flood of bad packets formats nothing).
    fn log_denial(&mut self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        if now.duration_since(self.log_window.0) >= Duration::from_secs(1) {
            if self.stats.log_lines_suppressed > 0 && self.log_window.1 > LOG_LINES_PER_SECOND {
                self.host.log(
                    LogLevel::Notice,
                    &format!("{} further denials were not logged (counted)", self.log_window.1 - LOG_LINES_PER_SECOND),
                );
            }
            self.log_window = (now, 0);
        }
        self.log_window.1 += 1;
        if self.log_window.1 <= LOG_LINES_PER_SECOND {
            self.host.log(LogLevel::Notice, &message());
        } else {
            self.stats.log_lines_suppressed += 1;
        }
    }

    fn unprotected_decision(&self) -> Decision {
        match self.config.unprotected {
            UnprotectedMode::Allow => Decision::Allow,
            UnprotectedMode::Deny => Decision::Deny(DenyReason::UNPROTECTED_DENIED),
            UnprotectedMode::Defer => Decision::Defer,
        }
    }

    fn device_of(&self, client: Client<'_>) -> Option<DeviceIdx> {
        client.username.and_then(|u| self.policy.device_by_username(u))
    }

    /// Whether `+`, `#` or `/` in this client's id or username must refuse this
    /// access (docs/POLICY.md §3.6): with `unprotected defer` everywhere (a later
    /// ACL mechanism may substitute them into `%c` / `%u` patterns), otherwise on
    /// what mqseal protects — protected and control topics, and subscriptions that
    /// reach a group the client could read. Elsewhere mqseal alone decides, and such
    /// a client is served as plain Mosquitto serves it. Only asked for clients that
    /// have such characters, so ordinary traffic pays nothing for it.
    fn pattern_chars_matter(&self, client: Client<'_>, access: Access, topic: &str) -> bool {
        if self.config.unprotected == UnprotectedMode::Defer {
            return true;
        }
        if access != Access::Subscribe {
            return topic.starts_with(RESERVED_PREFIX) || self.policy.group_of_topic(topic).is_some();
        }
        if is_control_filter(topic) {
            return true;
        }
        // Mixed filters stay open: each protected delivery is refused on its own.
        matches!(
            self.policy.check_subscription(self.device_of(client), topic),
            Ok(SubscriptionVerdict::Readable(_) | SubscriptionVerdict::Forbidden(_))
        )
    }

    fn client_identity_problem(client: Client<'_>) -> Option<DenyReason> {
        if has_pattern_chars(client.id) {
            return Some(DenyReason::BAD_CLIENT_ID);
        }
        if client.username.is_some_and(has_pattern_chars) {
            return Some(DenyReason::BAD_USERNAME);
        }
        None
    }

    // ---------------------------------------------------------------------
    // Authentication

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

    // ---------------------------------------------------------------------
    // ACL checks

    /// Answers an ACL check (publish, will, delivery, subscribe, unsubscribe).
    pub fn acl_check(&mut self, client: Client<'_>, access: Access, topic: &str, payload: &[u8]) -> Decision {
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
            Access::Write => self.check_publish(client, topic, payload, PublishPath::AclWrite),
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
            return self.check_publish(client, topic, payload, PublishPath::MessageEvent);
        }
        if self.policy.group_of_topic(topic).is_none() {
            // Unprotected: the ACL check (which bridges skip by Mosquitto's design) decided.
            return Decision::Allow;
        }
        self.check_publish(client, topic, payload, PublishPath::MessageEvent)
    }

    fn check_publish(&mut self, client: Client<'_>, topic: &str, payload: &[u8], path: PublishPath) -> Decision {
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
        if self.replay.check(header.sender, header.seq).is_err() {
            return self.deny_with_header(client, topic, DenyReason::REPLAY, header, payload);
        }
        if let Some(floor) = self.crash_floor_ms {
            if header.timestamp_ms < floor && !self.fresh_senders.contains(header.sender) {
                return self.deny_with_header(client, topic, DenyReason::SEALED_BEFORE_CRASH, header, payload);
            }
        }
        if let Err(e) = parsed.verify_signature(topic, self.policy.verifying_key(sender)) {
            return self.deny_with_header(client, topic, DenyReason(e.reason()), header, payload);
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
        if path == PublishPath::AclWrite {
            self.remember_verified(client, topic, payload);
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

    fn kick(&mut self, kick: Kick, client_label: &str, why: &str, reason: &'static str) {
        self.host.log(LogLevel::Warning, &format!("disconnecting client '{client_label}': {why}"));
        if self.kick_notes.insert(kick.clone(), KickNote { label: client_label.to_string(), reason }).is_none() {
            self.pending_kicks.push(kick);
        }
    }

    /// Takes the kicks decided so far, for the plugin to carry out now.
    pub fn take_kicks(&mut self) -> Vec<Kick> {
        std::mem::take(&mut self.pending_kicks)
    }

    /// Puts back a kick the plugin could not carry out yet (it targets the
    /// client whose callback was running).
    pub fn requeue_kick(&mut self, kick: Kick) {
        self.pending_kicks.push(kick);
    }

    /// Takes a pending kick of the client `client_id` itself (a flood), which
    /// the plugin carries out by answering the client's own ACL check with a
    /// code that makes the broker disconnect it.
    pub fn take_kick_of(&mut self, client_id: &str) -> Option<Kick> {
        let at = self.pending_kicks.iter().position(|k| matches!(k, Kick::ClientId(id) if id == client_id))?;
        Some(self.pending_kicks.remove(at))
    }

    /// The plugin carried out `kick`: `disconnected` says whether it
    /// disconnected anyone. Only then is it recorded (`client.kicked`).
    pub fn kick_carried_out(&mut self, kick: &Kick, disconnected: bool) {
        let Some(note) = self.kick_notes.remove(kick) else { return };
        if disconnected {
            self.stats.clients_kicked += 1;
            // Every kick that happened is recorded: held if the log cannot take it right now.
            self.record_decided(AuditEvent::ClientKicked { client: note.label, reason: note.reason.into() });
        } else {
            self.host.log(LogLevel::Info, &format!("client '{}' was no longer connected: nobody to disconnect", note.label));
        }
    }

    /// Whether the broker has called [`Engine::tick`] yet (2.0.11 never does
    /// with `per_listener_settings true`).
    pub fn has_ticked(&self) -> bool {
        self.ticks_seen
    }

    fn check_delivery(&mut self, client: Client<'_>, topic: &str, payload: &[u8]) -> Decision {
        if topic.starts_with(RESERVED_PREFIX) {
            return match self.check_control_delivery(client, topic) {
                Ok(()) => Decision::Allow,
                Err(reason) => self.deny_delivery(client, topic, reason),
            };
        }
        let Some(group) = self.policy.group_of_topic(topic) else {
            return match self.unprotected_decision() {
                Decision::Deny(reason) => self.deny_delivery(client, topic, reason),
                other => other,
            };
        };
        let Some(device) = self.device_of(client) else {
            return self.deny_delivery(client, topic, DenyReason::NOT_A_DEVICE);
        };
        if !self.policy.role(group, device).is_some_and(|r| r.can_read()) {
            return self.deny_delivery(client, topic, DenyReason::NOT_A_READER);
        }
        // The signature was verified when the message came in; here only the
        // header matters: is its key epoch still accepted (retained messages age)?
        let parsed = match envelope::parse(payload, self.config.max_envelope_bytes) {
            Ok(parsed) => parsed,
            Err(e) => return self.deny_delivery(client, topic, DenyReason(e.reason())),
        };
        let epoch = self.policy.check_epoch(group, parsed.header.epoch, now_ms() / 1000);
        if !epoch.is_accepted() {
            return self.deny_delivery(client, topic, DenyReason(epoch.reason()));
        }
        Decision::Allow
    }

    /// Deliveries refused are routine (a `#` subscriber meets protected topics):
    /// not logged, and audited once per client and reason, then counted (see
    /// [`withheld`]).
    fn deny_delivery(&mut self, client: Client<'_>, topic: &str, reason: DenyReason) -> Decision {
        self.stats.deliveries_denied += 1;
        if let Some(event) = self.withheld.note(client.id, reason.0, topic) {
            self.record(event);
        }
        Decision::Deny(reason)
    }

    fn check_subscribe(&mut self, client: Client<'_>, filter_text: &str) -> Decision {
        let device = self.device_of(client);
        let decision = if is_control_filter(filter_text) {
            match self.check_control_subscription(client, filter_text) {
                Ok(()) => Decision::Allow,
                Err(reason) => Decision::Deny(reason),
            }
        } else {
            match self.policy.check_subscription(device, filter_text) {
                Err(_) => Decision::Deny(DenyReason::BAD_FILTER),
                Ok(SubscriptionVerdict::Readable(_)) => Decision::Allow,
                // Delivery checks keep the protected part out; the rest is unprotected.
                Ok(SubscriptionVerdict::Mixed) | Ok(SubscriptionVerdict::UnprotectedOnly) => self.unprotected_decision(),
                Ok(SubscriptionVerdict::Forbidden(_)) => Decision::Deny(DenyReason::NOT_A_READER),
            }
        };
        match decision {
            Decision::Deny(reason) => self.deny_subscribe(client, filter_text, reason),
            other => other,
        }
    }

    /// Logs (rate-limited) and records a refused subscription. It counts towards
    /// the flood limit like a refused publish: the client chose to send it, and
    /// otherwise a stream of SUBSCRIBE packets would grow the log without bound.
    fn deny_subscribe(&mut self, client: Client<'_>, filter_text: &str, reason: DenyReason) -> Decision {
        self.stats.subscribes_denied += 1;
        self.log_denial(|| format!("denied SUBSCRIBE from client '{}' to '{filter_text}': {reason}", client.id));
        self.record(AuditEvent::SubscribeDenied {
            client: client.id.to_string(),
            filter: filter_text.to_string(),
            reason: Token::Borrowed(reason.0),
        });
        if reason.blames_client() && self.flood.record_bad(client.id, Instant::now()) {
            let why = format!("more than {} refused publishes and subscriptions within {:?}", self.config.flood_limit, self.config.flood_window);
            self.kick(Kick::ClientId(client.id.to_string()), client.id, &why, crate::formats::reasons::FLOOD);
        }
        Decision::Deny(reason)
    }

    // ---------------------------------------------------------------------
    // Lifecycle

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
    fn poll_reload(&mut self) {
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
    fn install_policy(&mut self, policy: CompiledPolicy, sha: Hash, source: &'static str, revoked: Option<Vec<Revocation>>) {
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

    /// Periodic work on the broker thread; returns clients to disconnect.
    pub fn tick(&mut self) -> Vec<Kick> {
        self.ticks_seen = true;
        // The broker's re-check of logins after a reload has run by now.
        self.logins.close_recheck_window();
        self.poll_reload();
        if let Some(audit) = &self.audit {
            // Wakes a parked audit writer when its checkpoint falls due.
            audit.tick();
        }
        let now = Instant::now();
        if now.duration_since(self.last_housekeeping) >= HOUSEKEEPING_EVERY {
            self.last_housekeeping = now;
            self.flood.expire(now);
            if self.withheld.over_capacity() {
                for event in self.withheld.take_all() {
                    self.record(event);
                }
            }
            if let Some(audit) = &self.audit {
                for problem in audit.take_problems() {
                    self.host.log(LogLevel::Error, &format!("audit log: {problem}"));
                }
            }
        }
        self.take_kicks()
    }

    /// How soon the engine needs its next tick: the nearest of its deadlines
    /// (pending kicks at once, a background reload's result, a parked audit
    /// writer's checkpoint, housekeeping). Mosquitto 2.1 built without
    /// websockets sleeps until its next event unless told (`next_ms`).
    pub fn next_tick_in(&self) -> Duration {
        let now = Instant::now();
        if !self.pending_kicks.is_empty() {
            return Duration::ZERO;
        }
        let mut next = (self.last_housekeeping + HOUSEKEEPING_EVERY).saturating_duration_since(now);
        if self.pending_reload.is_some() {
            next = next.min(RELOAD_POLL_EVERY);
        }
        if let Some(wake) = self.audit.as_ref().and_then(|audit| audit.wake_deadline()) {
            next = next.min(wake.saturating_duration_since(now));
        }
        next
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
                "stopping: {} publishes accepted, {denied} denied, {} subscriptions denied, {} deliveries withheld, {} clients disconnected; audit log {} records, {} refused",
                self.stats.publishes_accepted,
                self.stats.subscribes_denied,
                self.stats.deliveries_denied,
                self.stats.clients_kicked,
                report.stats.records_written,
                report.stats.records_refused
            ),
        );
    }
}

/// Reads, verifies and compiles the policy file; also returns the SHA-256 of its bytes.
fn load_policy(path: &Path, authority: &AuthorityPublicKey) -> Result<(CompiledPolicy, Hash), String> {
    // The same bounded reader the policy module uses: a policy file is never read unbounded.
    let bytes = crate::formats::signed_doc::read_document_file(path).map_err(|e| e.to_string())?;
    let origin = path.display().to_string();
    // Verifies and compiles in one pass (compiling checks every rule once).
    let compiled = crate::formats::policy::compile_signed(&bytes, authority, &origin).map_err(|e| e.to_string())?;
    Ok((compiled, sha256(&bytes)))
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

pub(crate) use crate::broker::state::write_policy_version;

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
