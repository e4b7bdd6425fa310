//! The plugin's options (`plugin_opt_*` lines in mosquitto.conf), parsed into a
//! typed, validated configuration.
//!
//! Every problem is reported with the option it concerns, so that the broker's
//! log says exactly which line to fix. There are no silent defaults for the
//! options that decide security: `policy` and `audit_log` must be given.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

// The audit writer's own settings; the options below choose them.
pub use crate::formats::audit::config::{Durability, QueueFullMode};
use crate::formats::audit::AuditConfig;

/// The prefix Mosquitto strips from `plugin_opt_NAME` before handing us `NAME`.
pub const OPTION_PREFIX: &str = "plugin_opt_";

/// What happens on a topic that no group protects (and on `$SYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnprotectedMode {
    /// mqseal grants access itself.
    Allow,
    /// mqseal refuses access.
    Deny,
    /// mqseal has no opinion; the next plugin or Mosquitto's own ACL decides.
    Defer,
}

/// How a client's MQTT username is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Another mechanism (password_file, dynamic security, TLS identity) authenticates;
    /// mqseal's login callback only refuses (a client id owned by another identity)
    /// and defers the rest. Mosquitto then refuses a client with a username that no
    /// mechanism accepted.
    Defer,
    /// mqseal authenticates devices itself by a token signed with the device key.
    Key,
    /// Nothing authenticates usernames (an open broker): mqseal registers no login
    /// callback, a username is only a claim, and client ids cannot be protected.
    /// Envelopes on protected topics are still verified against the device keys.
    None,
}

/// The plugin's validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `policy`: the authority-signed policy file.
    pub policy: PathBuf,
    /// `audit_log`: the hash-chained audit log (JSON Lines).
    pub audit_log: PathBuf,
    /// `unprotected`: allow | deny | defer.
    pub unprotected: UnprotectedMode,
    /// `auth`: defer | key | none.
    pub auth: AuthMode,
    /// `authority`: the authority's public key (PEM SPKI, `authority.pub` of the realm);
    /// the policy must be signed by it.
    pub authority: PathBuf,
    /// `broker_key`: PKCS#8 PEM Ed25519 key that signs audit checkpoints.
    pub broker_key: PathBuf,
    /// `state_dir`: where the replay window and pushed policies persist
    /// (default: the audit log's directory).
    pub state_dir: PathBuf,
    /// `max_envelope_bytes`: payloads above this on protected topics are refused unparsed.
    pub max_envelope_bytes: usize,
    /// `flood_limit` refused publishes and subscriptions within `flood_window_secs`
    /// get a client disconnected.
    pub flood_limit: u32,
    pub flood_window: Duration,
    /// `auth_token_max_age_secs`: how old a key-auth token may be.
    pub auth_token_max_age: Duration,
    /// `checkpoint_every`: sign a checkpoint after this many records.
    pub checkpoint_every: u64,
    /// `checkpoint_interval_secs`: and at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// `audit_durability`: fsync | os.
    pub audit_durability: Durability,
    /// `audit_batch_ms`: group-commit window.
    pub audit_batch: Duration,
    /// `audit_queue`: capacity of the queue between the broker thread and the writer.
    pub audit_queue: usize,
    /// `audit_queue_full`: deny | block.
    pub audit_queue_full: QueueFullMode,
    /// `audit_rotate_bytes`: continue in a new file past this size (0 = never).
    pub audit_rotate_bytes: u64,
    /// `audit_on_broken_chain`: refuse | new-file.
    pub audit_start_new_on_broken_chain: bool,
    /// `audit_origin`: the log's name in its checkpoints (default: derived from the broker key).
    pub audit_origin: Option<String>,
    /// `verify_workers`: threads that check QoS 0 signatures off the broker
    /// thread (0 = off; `auto` resolves to the CPUs available less one).
    pub verify_workers: usize,
    /// `verify_offload_above`: eligible publishes per second from which they go
    /// to the workers (0 = always).
    pub verify_offload_above: u32,
}

/// The most `verify_workers` accepts.
pub const MAX_VERIFY_WORKERS: usize = 64;

/// `verify_workers auto`: every CPU this process may run on but the broker's own.
pub fn auto_verify_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).saturating_sub(1).min(MAX_VERIFY_WORKERS)
}

/// A configuration problem, always naming the option it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The option name without the `plugin_opt_` prefix.
    pub option: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{OPTION_PREFIX}{}: {}", self.option, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn problem(option: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { option: option.to_string(), problem: problem.into() }
}

/// Every option mqseal understands, with a one-line description (README and
/// mosquitto.conf document the same list; a test keeps them in step).
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("policy", "path of the authority-signed policy file (required)"),
    ("authority", "the authority's public key, PEM (the realm's authority.pub) (required)"),
    ("audit_log", "path of the hash-chained audit log (required)"),
    ("unprotected", "allow | deny | defer: topics no group protects, and $SYS (default deny)"),
    ("auth", "defer | key | none: who authenticates devices (default defer)"),
    ("broker_key", "PKCS#8 PEM Ed25519 key that signs audit checkpoints (required)"),
    ("state_dir", "directory for the replay window and pushed policies (default: the audit log's directory)"),
    ("max_envelope_bytes", "largest payload accepted on a protected topic (default 65536)"),
    ("flood_limit", "refused publishes and subscriptions per window before a client is disconnected (default 20, 0 = never)"),
    ("flood_window_secs", "the flood window in seconds (default 10)"),
    ("auth_token_max_age_secs", "with auth key: how old a login token may be (default 300)"),
    ("checkpoint_every", "sign a checkpoint after this many records (default 1000)"),
    ("checkpoint_interval_secs", "and at least this often while records arrive (default 60)"),
    ("audit_durability", "fsync | os (default fsync)"),
    ("audit_batch_ms", "group-commit window in milliseconds (default 100)"),
    ("audit_queue", "records the writer queue holds (default 65536)"),
    ("audit_queue_full", "deny | block: what a full queue does to the event (default deny)"),
    ("audit_rotate_bytes", "start a new log file past this size, 0 = never (default 67108864)"),
    ("audit_on_broken_chain", "refuse | new-file: a log broken before its tail (default refuse)"),
    ("audit_origin", "the audit log's name in its checkpoints (default: mqseal/audit-<hash of the broker key>)"),
    ("verify_workers", "off | auto | 1-64: threads that verify QoS 0 protected publishes off the broker thread (default auto: the CPUs less one)"),
    ("verify_offload_above", "protected QoS 0 publishes per second from which they go to the workers, 0 = always (default 10000)"),
];

impl From<&PluginConfig> for AuditConfig {
    fn from(c: &PluginConfig) -> Self {
        AuditConfig {
            path: c.audit_log.clone(),
            origin: c.audit_origin.clone(),
            checkpoint_every: c.checkpoint_every,
            checkpoint_interval: c.checkpoint_interval,
            durability: c.audit_durability,
            batch_window: c.audit_batch,
            queue_capacity: c.audit_queue,
            queue_full: c.audit_queue_full,
            rotate_bytes: c.audit_rotate_bytes,
            start_new_on_broken_chain: c.audit_start_new_on_broken_chain,
            ..AuditConfig::new(&c.audit_log)
        }
    }
}

impl PluginConfig {
    /// Parses the options exactly as Mosquitto hands them over: names without the
    /// `plugin_opt_` prefix, in config order. Unknown and repeated options are errors.
    /// Files are checked here too, so a typo stops the broker at start.
    pub fn from_options<'a, I>(options: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (key, value) in options {
            if !KNOWN_OPTIONS.iter().any(|(known, _)| *known == key) {
                let known: Vec<&str> = KNOWN_OPTIONS.iter().map(|(k, _)| *k).collect();
                return Err(problem(key, format!("unknown option (known: {})", known.join(", "))));
            }
            if seen.iter().any(|(k, _)| *k == key) {
                return Err(problem(key, "given more than once"));
            }
            seen.push((key, value.trim()));
        }
        let get = |name: &str| seen.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);

        let policy = PathBuf::from(required(&get, "policy")?);
        check_readable_file("policy", &policy)?;
        let audit_log = PathBuf::from(required(&get, "audit_log")?);
        check_writable_location("audit_log", &audit_log)?;

        let authority = PathBuf::from(required(&get, "authority")?);
        check_readable_file("authority", &authority)?;
        let broker_key = PathBuf::from(required(&get, "broker_key")?);
        check_readable_file("broker_key", &broker_key)?;
        let state_dir = match get("state_dir") {
            Some(v) => {
                let dir = PathBuf::from(non_empty("state_dir", v)?);
                if !dir.is_dir() {
                    return Err(problem("state_dir", format!("{} is not a directory", dir.display())));
                }
                dir
            }
            None => parent_dir(&audit_log),
        };

        Ok(PluginConfig {
            policy,
            authority,
            audit_log,
            unprotected: choice(&get, "unprotected", UnprotectedMode::Deny, &[
                ("allow", UnprotectedMode::Allow),
                ("deny", UnprotectedMode::Deny),
                ("defer", UnprotectedMode::Defer),
            ])?,
            auth: choice(&get, "auth", AuthMode::Defer, &[
                ("defer", AuthMode::Defer),
                ("key", AuthMode::Key),
                ("none", AuthMode::None),
            ])?,
            broker_key,
            state_dir,
            max_envelope_bytes: number(&get, "max_envelope_bytes", 65536, 64, 16 * 1024 * 1024)? as usize,
            flood_limit: number(&get, "flood_limit", 20, 0, 1_000_000)? as u32,
            flood_window: Duration::from_secs(number(&get, "flood_window_secs", 10, 1, 86_400)?),
            auth_token_max_age: Duration::from_secs(number(&get, "auth_token_max_age_secs", 300, 1, 86_400)?),
            checkpoint_every: number(&get, "checkpoint_every", 1000, 1, 1 << 32)?,
            checkpoint_interval: Duration::from_secs(number(&get, "checkpoint_interval_secs", 60, 1, 86_400)?),
            audit_durability: choice(&get, "audit_durability", Durability::Fsync, &[
                ("fsync", Durability::Fsync),
                ("os", Durability::Os),
            ])?,
            audit_batch: Duration::from_millis(number(&get, "audit_batch_ms", 100, 1, 60_000)?),
            audit_queue: number(&get, "audit_queue", 65536, 16, 1 << 24)? as usize,
            audit_queue_full: choice(&get, "audit_queue_full", QueueFullMode::Deny, &[
                ("deny", QueueFullMode::Deny),
                ("block", QueueFullMode::Block),
            ])?,
            audit_rotate_bytes: number(&get, "audit_rotate_bytes", 64 * 1024 * 1024, 0, u64::MAX)?,
            audit_start_new_on_broken_chain: choice(&get, "audit_on_broken_chain", false, &[
                ("refuse", false),
                ("new-file", true),
            ])?,
            audit_origin: get("audit_origin").map(|v| non_empty("audit_origin", v).map(str::to_string)).transpose()?,
            verify_workers: match get("verify_workers") {
                None | Some("auto") => auto_verify_workers(),
                Some("off") => 0,
                Some(_) => number(&get, "verify_workers", 0, 1, MAX_VERIFY_WORKERS as u64)
                    .map_err(|e| problem("verify_workers", format!("{} (or off | auto)", e.problem)))? as usize,
            },
            verify_offload_above: number(&get, "verify_offload_above", 10000, 0, 10_000_000)? as u32,
        })
    }
}

fn required<'a>(get: &impl Fn(&str) -> Option<&'a str>, name: &str) -> Result<&'a str, ConfigError> {
    match get(name) {
        Some(v) => non_empty(name, v),
        None => Err(problem(name, "is required but missing")),
    }
}

fn non_empty<'a>(name: &str, value: &'a str) -> Result<&'a str, ConfigError> {
    if value.is_empty() {
        Err(problem(name, "is empty"))
    } else {
        Ok(value)
    }
}

fn choice<'a, T: Copy>(
    get: &impl Fn(&str) -> Option<&'a str>,
    name: &str,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(value) = get(name) else { return Ok(default) };
    choices.iter().find(|(word, _)| *word == value).map(|(_, v)| *v).ok_or_else(|| {
        let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
        problem(name, format!("'{value}' is not one of {}", words.join(" | ")))
    })
}

fn number<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(value) = get(name) else { return Ok(default) };
    let n: u64 = value
        .parse()
        .map_err(|_| problem(name, format!("'{value}' is not a whole number")))?;
    if n < min || n > max {
        return Err(problem(name, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

fn check_readable_file(name: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::File::open(path) {
        Ok(file) => match file.metadata() {
            Ok(meta) if meta.is_file() => Ok(()),
            Ok(_) => Err(problem(name, format!("{} is not a regular file", path.display()))),
            Err(e) => Err(problem(name, format!("cannot inspect {}: {e}", path.display()))),
        },
        Err(e) => Err(problem(name, format!("cannot read {}: {e}", path.display()))),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_writable_location(name: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_dir() {
        return Err(problem(name, format!("{} is a directory, not a file", path.display())));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(problem(name, format!("directory {} does not exist", dir.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.json");
        std::fs::write(&policy, "{}").unwrap();
        std::fs::write(dir.path().join("authority.pub"), "pem").unwrap();
        std::fs::write(dir.path().join("broker.pem"), "pem").unwrap();
        let audit = dir.path().join("audit.jsonl");
        (dir, policy.display().to_string(), audit.display().to_string())
    }

    /// The required key options, pointing at the files `with_files` made.
    fn keys(dir: &tempfile::TempDir) -> [(&'static str, String); 2] {
        [
            ("authority", dir.path().join("authority.pub").display().to_string()),
            ("broker_key", dir.path().join("broker.pem").display().to_string()),
        ]
    }

    /// Options with every required one set, plus `extra`.
    fn options<'a>(dir: &'a tempfile::TempDir, keys: &'a [(&'static str, String); 2], policy: &'a str, audit: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let _ = dir;
        let mut v = vec![("policy", policy), ("audit_log", audit)];
        v.extend(keys.iter().map(|(k, p)| (*k, p.as_str())));
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn minimal_config_gets_secure_defaults() {
        let (d, policy, audit) = with_files();
        let k = keys(&d);
        let cfg = PluginConfig::from_options(options(&d, &k, &policy, &audit, &[])).unwrap();
        assert_eq!(cfg.unprotected, UnprotectedMode::Deny);
        assert_eq!(cfg.auth, AuthMode::Defer);
        assert_eq!(cfg.audit_durability, Durability::Fsync);
        assert_eq!(cfg.audit_queue_full, QueueFullMode::Deny);
        assert!(!cfg.audit_start_new_on_broken_chain);
        assert_eq!(cfg.state_dir, d.path());
        assert_eq!(cfg.verify_workers, auto_verify_workers());
        assert_eq!(cfg.verify_offload_above, 10000);
    }

    #[test]
    fn verify_workers_takes_off_auto_or_a_count() {
        let (d, policy, audit) = with_files();
        let k = keys(&d);
        for (value, expect) in [("off", 0), ("auto", auto_verify_workers()), ("3", 3)] {
            let cfg = PluginConfig::from_options(options(&d, &k, &policy, &audit, &[("verify_workers", value)])).unwrap();
            assert_eq!(cfg.verify_workers, expect, "{value}");
        }
        for bad in ["0", "65", "many"] {
            let err = PluginConfig::from_options(options(&d, &k, &policy, &audit, &[("verify_workers", bad)])).unwrap_err();
            assert_eq!(err.option, "verify_workers");
            assert!(err.problem.ends_with("(or off | auto)"), "{err}");
        }
    }

    #[test]
    fn unknown_option_is_named() {
        let (d, policy, audit) = with_files();
        let k = keys(&d);
        let err = PluginConfig::from_options(options(&d, &k, &policy, &audit, &[("unprotectd", "allow")])).unwrap_err();
        assert_eq!(err.option, "unprotectd");
        assert!(err.to_string().starts_with("plugin_opt_unprotectd: unknown option"), "{err}");
    }

    #[test]
    fn missing_required_options_and_files_are_named() {
        let (d, policy, audit) = with_files();
        let k = keys(&d);
        for required in ["policy", "audit_log", "authority", "broker_key"] {
            let opts: Vec<_> = options(&d, &k, &policy, &audit, &[]).into_iter().filter(|(n, _)| *n != required).collect();
            let err = PluginConfig::from_options(opts).unwrap_err();
            assert_eq!(err.to_string(), format!("plugin_opt_{required}: is required but missing"));
        }
        let err = PluginConfig::from_options(options(&d, &k, "/nonexistent/p.json", &audit, &[])).unwrap_err();
        assert_eq!(err.option, "policy");
        assert!(err.problem.contains("/nonexistent/p.json"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let (d, policy, audit) = with_files();
        let k = keys(&d);
        for (opt, val, expect) in [
            ("unprotected", "maybe", "'maybe' is not one of allow | deny | defer"),
            ("flood_limit", "-3", "'-3' is not a whole number"),
            ("audit_queue", "2", "2 is outside 16..=16777216"),
        ] {
            let err = PluginConfig::from_options(options(&d, &k, &policy, &audit, &[(opt, val)])).unwrap_err();
            assert_eq!(err.option, opt);
            assert!(err.problem.contains(expect), "{err}");
        }
        let err = PluginConfig::from_options(options(&d, &k, &policy, &audit, &[("unprotected", "allow"), ("unprotected", "deny")]))
            .unwrap_err();
        assert_eq!(err.problem, "given more than once");
    }

    #[test]
    fn audit_log_directory_must_exist() {
        let (d, policy, _audit) = with_files();
        let k = keys(&d);
        let err = PluginConfig::from_options(options(&d, &k, &policy, "/no/such/dir/audit.jsonl", &[])).unwrap_err();
        assert_eq!(err.option, "audit_log");
    }
}
