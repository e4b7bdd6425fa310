//! How the audit log is written ([`AuditConfig`]), and the origin a new log takes.

use std::path::PathBuf;
use std::time::Duration;

use super::hashing::{sha256, to_hex};

/// How the audit log is written. [`AuditConfig::new`] gives the same defaults as
/// the plugin options; the broker's configuration maps its options onto it
/// (`From<&PluginConfig>` in `broker::config`).
/// What the broker thread does when the audit writer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullMode {
    /// Deny the event that could not be recorded (fail closed, keep the broker responsive).
    Deny,
    /// Wait for the writer (never lose a record, at the cost of stalling the broker).
    Block,
}

/// When audit records reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync after each batch (group commit).
    Fsync,
    /// Leave write-back to the operating system.
    Os,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The current log file; rotated files and checkpoints live beside it.
    pub path: PathBuf,
    /// The log's origin (checkpoint origin line and key name). `None`: take it
    /// from the existing log, or derive one from the broker key for a new log
    /// ([`default_origin`]). A configured origin must match an existing log's.
    pub origin: Option<String>,
    /// Sign a checkpoint once this many records are unsealed.
    pub checkpoint_every: u64,
    /// …and at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// fsync each group-commit window, or leave write-back to the OS.
    pub durability: Durability,
    /// The group-commit window: records are fsynced at most this long after they are written.
    pub batch_window: Duration,
    /// The most records the writer takes from the queue before writing them out.
    pub batch_max_records: usize,
    /// Capacity of the queue between the broker thread and the writer.
    pub queue_capacity: usize,
    /// What [`AuditLog::append`](super::AuditLog::append) does when the queue is full.
    pub queue_full: QueueFullMode,
    /// Continue in a new file once the current one reaches this size (0 = never).
    pub rotate_bytes: u64,
    /// On a log broken before its tail: start a new file (recorded) instead of refusing.
    pub start_new_on_broken_chain: bool,
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            origin: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            durability: Durability::Fsync,
            batch_window: Duration::from_millis(100),
            batch_max_records: 4096,
            queue_capacity: 65536,
            queue_full: QueueFullMode::Deny,
            rotate_bytes: 64 * 1024 * 1024,
            start_new_on_broken_chain: false,
        }
    }

    /// The bound on records a checkpoint may leave unsealed in a log this writer
    /// wrote (written into `log.opened` so that verifiers can detect a replayed
    /// old checkpoint): a checkpoint is signed after the batch in which
    /// `checkpoint_every` unsealed records were reached.
    pub fn max_unsealed(&self) -> u64 {
        self.checkpoint_every.saturating_add(self.batch_max_records as u64)
    }
}

/// The origin of a new log when none is configured: `mqseal/audit-<16 hex>`, the
/// hex being the start of SHA-256 of the broker's public key. It names the
/// signer, not a host or a path, so moving or copying the files keeps it valid.
pub fn default_origin(key: &ed25519_dalek::VerifyingKey) -> String {
    format!("mqseal/audit-{}", &to_hex(&sha256(key.as_bytes()))[..16])
}
