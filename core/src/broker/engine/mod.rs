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
//!
//! On worker threads: an eligible QoS 0 publish (crate::broker::offload) runs
//! every check above but the signature at its ACL check, which answers
//! [`Decision::Offloaded`]; once a worker has checked the signature, every
//! check runs again on the broker thread (`offloaded`), and an accepted copy
//! is handed back for the plugin to publish.
//!
//! The `impl Engine` blocks are split by event: `lifecycle` (start, shutdown,
//! a client's disconnect), `login` (authentication, client-id ownership;
//! `login_binding` ties a login to its connection, `client_ids` says who owns
//! an id), `publish` (ACL checks, publishes, refusals, the flood limit),
//! `subscribe` (subscriptions and deliveries), `control_plane` (mqseal's
//! control topics), `reload` (SIGHUP), `tick` (housekeeping and kicks) and
//! `offloaded` (publishes whose signature a worker thread checks).
//! This file holds the engine's state, the types they share and the helpers
//! every event uses.

mod client_ids;
mod control_plane;
mod lifecycle;
mod login;
mod login_binding;
mod offloaded;
mod publish;
mod reload;
mod subscribe;
mod tick;
mod withheld;

pub use login_binding::{AfterClose, ConnectionId};

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::broker::config::{PluginConfig, UnprotectedMode};
use crate::broker::decision::{Access, Client, Decision, DenyReason};
use crate::broker::flood::FloodGuard;
use crate::broker::host::{Host, LogLevel};
use crate::broker::replay::ReplayWindow;
use crate::formats::audit::hashing::Hash;
use crate::formats::audit::{AuditEvent, AuditLog};
use crate::formats::policy::Revocation;
use crate::formats::policy::compiled::{CompiledPolicy, DeviceIdx, SubscriptionVerdict};
use crate::formats::signed_doc::AuthorityPublicKey;

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

/// How a publish's signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    /// On the broker thread, now.
    Here,
    /// On a worker, if the publish is offloadable and the load calls for it
    /// (crate::broker::offload); otherwise here.
    MayOffload(crate::broker::decision::PublishInfo),
    /// Back from a worker, every other check run again: the worker's answer,
    /// or `None` when the policy changed since (the key may have too): here.
    Settled(Option<Result<(), DenyReason>>),
}

/// Counters, logged at shutdown and summarised when denials were suppressed.
#[derive(Default)]
pub struct Stats {
    pub publishes_accepted: u64,
    /// Of those, verified on a worker thread.
    pub publishes_verified_on_workers: u64,
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
    /// The login of each handle the broker may re-check on reload (live or offline).
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
    /// Verification on worker threads, and the verified copies for the broker to publish.
    offload: crate::broker::offload::Offload,
    republish: Vec<crate::broker::offload::Republish>,
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
            ("verify_workers", c.verify_workers.to_string()),
            ("verify_offload_above", c.verify_offload_above.to_string()),
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
}

pub(crate) use crate::broker::state::write_policy_version;
