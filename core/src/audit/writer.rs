//! The writer: the broker thread hands events to [`AuditLog::append`], which
//! never waits for the disk; a writer thread turns them into records, writes
//! them in batches, fsyncs per group-commit window and signs checkpoints.
//!
//! Nothing on the writer thread logs to the broker (the broker's log may only be
//! written from the broker thread): problems are queued for
//! [`AuditLog::take_problems`], and counters are in [`AuditLog::stats`].
//!
//! Failure is sticky: after an I/O error the writer writes nothing more (a record
//! written after a gap would be worse than none), every later append is refused
//! with [`AppendError::WriterFailed`], and records that were queued are counted
//! as lost. The plugin restarts the log by restarting.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ed25519_dalek::SigningKey;
use parking_lot::Mutex;

use super::checkpoint::Checkpoint;
use super::event::{AuditEvent, LogEvent, Recordable};
use super::files::{sync_dir, LogPaths};
use super::hashing::{sha256, to_hex, Hash};
use super::merkle::{leaf_hash, CompactRange};
use super::open::{open_log, OpenedLog};
use super::record::encode_record;
use super::timestamp::{TimestampFormatter, UnixMillis};
use crate::config::{Durability, PluginConfig, QueueFullMode};

/// How the audit log is written. [`AuditConfig::new`] gives the same defaults as
/// the plugin options; `From<&PluginConfig>` maps the options.
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
    /// What [`AuditLog::append`] does when the queue is full.
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

/// The origin of a new log when none is configured: `mqseal/audit-<16 hex>`, the
/// hex being the start of SHA-256 of the broker's public key. It names the
/// signer, not a host or a path, so moving or copying the files keeps it valid.
pub fn default_origin(key: &ed25519_dalek::VerifyingKey) -> String {
    format!("mqseal/audit-{}", &to_hex(&sha256(key.as_bytes()))[..16])
}

/// Why the log could not be opened. The plugin refuses to start on any of these.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: cannot {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: io::Error },
    #[error("{location}: audit chain broken: {reason} (refusing to write; plugin_opt_audit_on_broken_chain new-file continues in a new file)")]
    Broken { location: String, reason: String },
    #[error("configured audit origin {configured:?} differs from the existing log's origin {found:?}")]
    OriginMismatch { configured: String, found: String },
    #[error("audit origin {origin:?} {problem}")]
    InvalidOrigin { origin: String, problem: &'static str },
    #[error("audit configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(io::Error),
}

impl AuditError {
    /// A short stable token for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuditError::Io { .. } => "audit-io",
            AuditError::Broken { .. } => "audit-chain-broken",
            AuditError::OriginMismatch { .. } => "audit-origin-mismatch",
            AuditError::InvalidOrigin { .. } => "audit-origin-invalid",
            AuditError::InvalidConfig(_) => "audit-config",
            AuditError::Spawn(_) => "audit-thread",
        }
    }
}

pub(crate) fn io_error(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.into();
    move |source| AuditError::Io { path, action, source }
}

/// Why an event was not accepted. The caller must treat the event as not
/// recorded (the plugin denies it); each refusal is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("audit queue full")]
    QueueFull,
    #[error("audit writer failed")]
    WriterFailed,
}

impl AppendError {
    pub fn reason(self) -> &'static str {
        match self {
            AppendError::QueueFull => "audit-queue-full",
            AppendError::WriterFailed => "audit-writer-failed",
        }
    }
}

/// What opening found and did; the plugin logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub origin: String,
    /// No log existed: a new one was started.
    pub created: bool,
    /// Records in the log before this open.
    pub records_found: u64,
    /// Log files found (rotated and current).
    pub files_found: usize,
    /// A torn last line was cut off (and a `log.recovered` record written).
    pub recovered: Option<Recovery>,
    /// The chain was broken and the log continues in a new file (`log.continued`).
    pub continued: Option<Continuation>,
    /// Things worth a warning that did not stop the log.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub file: PathBuf,
    pub cut_offset: u64,
    pub cut_bytes: u64,
    pub last_good_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// `file:line` of the break, or the checkpoint file that disagreed.
    pub location: String,
    pub reason: String,
    /// Index of the `log.continued` record.
    pub index: u64,
}

/// Counters of the writer, readable at any time from any thread.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Records written to the file (the writer's own records included).
    pub records_written: u64,
    /// Events refused by [`AuditLog::append`] (queue full or writer failed).
    pub records_refused: u64,
    /// Events accepted into the queue but never written because the writer failed.
    pub records_lost: u64,
    /// Index of the last record written.
    pub last_index: Option<u64>,
    /// Tree size of the last signed checkpoint.
    pub last_checkpoint_size: u64,
    pub checkpoints_signed: u64,
    /// Events waiting in the queue.
    pub queued: usize,
    /// The writer failed and accepts nothing more.
    pub failed: bool,
}

/// What [`AuditLog::shutdown`] leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    pub stats: AuditStats,
    /// Problems not yet taken with [`AuditLog::take_problems`].
    pub problems: Vec<String>,
}

const NO_INDEX: u64 = u64::MAX;

/// How long the writer lets records gather after the first one wakes it.
const GATHER_WINDOW: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Shared {
    written: AtomicU64,
    refused: AtomicU64,
    lost: AtomicU64,
    last_index: AtomicU64,
    checkpoint_size: AtomicU64,
    checkpoints: AtomicU64,
    failed: AtomicBool,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    fn problem(&self, text: String) {
        let mut p = self.problems.lock();
        // A failing disk must not grow memory without bound: keep the first ones.
        if p.len() < 1000 {
            p.push(text);
        }
    }
}

enum Command {
    Record(UnixMillis, AuditEvent),
    Sync(Sender<()>),
    Shutdown,
}

/// The audit log as the plugin holds it.
pub struct AuditLog {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    queue_full: QueueFullMode,
    origin: String,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log, checks its tail against the last checkpoint,
    /// recovers a torn last line, writes `log.opened`, signs a checkpoint, and
    /// starts the writer thread.
    pub fn open(config: AuditConfig, key: SigningKey) -> Result<(AuditLog, OpenReport), AuditError> {
        if config.checkpoint_every == 0 {
            return Err(AuditError::InvalidConfig("checkpoint_every must be at least 1"));
        }
        if config.queue_capacity == 0 || config.batch_max_records == 0 {
            return Err(AuditError::InvalidConfig("queue capacity and batch size must be at least 1"));
        }
        if config.checkpoint_interval.is_zero() || config.batch_window.is_zero() {
            return Err(AuditError::InvalidConfig("checkpoint interval and batch window must be positive"));
        }
        let opened = open_log(&config, &key)?;
        let report = opened.report.clone();
        let origin = report.origin.clone();
        let shared = Arc::new(Shared { last_index: AtomicU64::new(NO_INDEX), ..Shared::default() });
        let mut writer = Writer::new(opened, config.clone(), key, shared.clone())?;
        writer.write_opening_records()?;

        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let thread = std::thread::Builder::new()
            .name("mqseal-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::Spawn)?;
        Ok((AuditLog { tx, shared, queue_full: config.queue_full, origin, thread: Some(thread) }, report))
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Queues an event. Never waits in `deny` mode; waits for room in `block`
    /// mode. On `Err` the event is not recorded and was counted as refused.
    pub fn append(&self, event: AuditEvent) -> Result<(), AppendError> {
        let refuse = |e: AppendError| {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if self.shared.failed.load(Ordering::Acquire) {
            return refuse(AppendError::WriterFailed);
        }
        let command = Command::Record(UnixMillis::now(), event);
        match self.queue_full {
            QueueFullMode::Deny => match self.tx.try_send(command) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => refuse(AppendError::QueueFull),
                Err(TrySendError::Disconnected(_)) => refuse(AppendError::WriterFailed),
            },
            QueueFullMode::Block => match self.tx.send(command) {
                Ok(()) => Ok(()),
                Err(_) => refuse(AppendError::WriterFailed),
            },
        }
    }

    /// Waits until every event appended before this call is written and fsynced.
    /// Blocks: for tests and administrative paths, not for the broker's hot path.
    pub fn sync(&self) -> Result<(), AppendError> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.tx.send(Command::Sync(reply_tx)).map_err(|_| AppendError::WriterFailed)?;
        reply_rx.recv().map_err(|_| AppendError::WriterFailed)?;
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(AppendError::WriterFailed);
        }
        Ok(())
    }

    /// Problems the writer thread met since the last call (for the broker's log).
    pub fn take_problems(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.problems.lock())
    }

    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        let last = s.last_index.load(Ordering::Relaxed);
        AuditStats {
            records_written: s.written.load(Ordering::Relaxed),
            records_refused: s.refused.load(Ordering::Relaxed),
            records_lost: s.lost.load(Ordering::Relaxed),
            last_index: (last != NO_INDEX).then_some(last),
            last_checkpoint_size: s.checkpoint_size.load(Ordering::Relaxed),
            checkpoints_signed: s.checkpoints.load(Ordering::Relaxed),
            queued: self.tx.len(),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// Drains the queue, writes `log.closed`, signs the final checkpoint, fsyncs
    /// and stops the writer thread.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop();
        ShutdownReport { stats: self.stats(), problems: self.take_problems() }
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // The writer keeps draining, so this send waits at most for room.
            let _ = self.tx.send(Command::Shutdown);
            if thread.join().is_err() {
                self.shared.failed.store(true, Ordering::Release);
                self.shared.problem("audit writer thread panicked; the log may lack its final checkpoint".into());
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks the log failed if the writer thread unwinds, so appends fail closed.
struct FailOnPanic(Arc<Shared>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::Release);
        }
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    paths: LogPaths,
    file: File,
    file_len: u64,
    file_records: u64,
    rotated_max: u64,
    origin: String,
    key: SigningKey,
    tree: CompactRange,
    next_index: u64,
    last_hash: Hash,
    buf: Vec<u8>,
    buf_records: u64,
    clock: TimestampFormatter,
    since_checkpoint: u64,
    last_checkpoint_at: Instant,
    sync_due: Option<Instant>,
    opening: Vec<LogEvent>,
    needs_empty_checkpoint: bool,
    config: AuditConfig,
    shared: Arc<Shared>,
    failed: bool,
}

/// An I/O failure on the writer thread, with what was being done.
struct WriteFailure(String);

fn failure(what: impl std::fmt::Display, e: io::Error) -> WriteFailure {
    WriteFailure(format!("{what}: {e}"))
}

impl Writer {
    fn new(opened: OpenedLog, config: AuditConfig, key: SigningKey, shared: Arc<Shared>) -> Result<Self, AuditError> {
        let OpenedLog { file, file_len, file_records, rotated_max, origin, tree, next_index, last_hash, opening, needs_empty_checkpoint, .. } =
            opened;
        shared.last_index.store(next_index.checked_sub(1).unwrap_or(NO_INDEX), Ordering::Relaxed);
        Ok(Writer {
            paths: LogPaths::new(&config.path),
            file,
            file_len,
            file_records,
            rotated_max,
            origin,
            key,
            tree,
            next_index,
            last_hash,
            buf: Vec::with_capacity(1 << 20),
            buf_records: 0,
            clock: TimestampFormatter::new(),
            since_checkpoint: 0,
            last_checkpoint_at: Instant::now(),
            sync_due: None,
            opening,
            needs_empty_checkpoint,
            config,
            shared,
            failed: false,
        })
    }

    /// The records opening decided on, then `log.opened`, then a checkpoint: all
    /// before the plugin may append, so that any failure stops the broker.
    fn write_opening_records(&mut self) -> Result<(), AuditError> {
        let path = self.config.path.clone();
        let to_audit_error = |WriteFailure(text): WriteFailure| AuditError::Io {
            path,
            action: "write the opening records",
            source: io::Error::other(text),
        };
        if self.needs_empty_checkpoint {
            // A new log is sealed at size 0 before its first record exists, so a
            // log with records but no checkpoint always means a deleted checkpoint.
            if let Err(e) = self.write_checkpoint() {
                return Err(to_audit_error(e));
            }
        }
        let now = UnixMillis::now();
        let mut events = std::mem::take(&mut self.opening);
        events.push(LogEvent::Opened {
            origin: self.origin.clone(),
            key: base64_key(&self.key),
            checkpoint_every: self.config.checkpoint_every,
            max_unsealed: self.config.max_unsealed(),
            software: concat!("mqseal-core ", env!("CARGO_PKG_VERSION")),
        });
        for event in &events {
            self.encode(now, event);
        }
        self.seal().map_err(to_audit_error)
    }

    fn run(mut self, rx: Receiver<Command>) {
        let _guard = FailOnPanic(self.shared.clone());
        let mut stopping = false;
        while !stopping {
            let first = match self.next_deadline() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => rx.recv_deadline(deadline),
            };
            match first {
                Ok(command) => {
                    let gather = matches!(command, Command::Record(..));
                    stopping = self.handle(command);
                    // Under load, waking for every record costs more than writing it
                    // (measured: a quarter of the broker's CPU on protected topics).
                    // Let records gather briefly; they are written well inside the
                    // group-commit window, and syncs and shutdown are not delayed.
                    if gather && !stopping && rx.len() < self.config.batch_max_records / 2 {
                        std::thread::sleep(GATHER_WINDOW.min(self.config.batch_window));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            // Take what is already queued, up to one batch, before writing.
            let mut taken = 1;
            while !stopping && taken < self.config.batch_max_records {
                match rx.try_recv() {
                    Ok(command) => stopping = self.handle(command),
                    Err(_) => break,
                }
                taken += 1;
            }
            self.after_batch();
        }
        self.close(&rx);
    }

    /// Returns true on shutdown.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Record(time, event) => {
                self.append(time, &event);
                false
            }
            Command::Sync(reply) => {
                if !self.failed {
                    let result = self.flush().and_then(|()| self.sync_data());
                    self.check(result);
                }
                let _ = reply.send(());
                false
            }
            Command::Shutdown => true,
        }
    }

    fn close(&mut self, rx: &Receiver<Command>) {
        while let Ok(command) = rx.try_recv() {
            self.handle(command);
        }
        let closed = LogEvent::Closed {
            refused: self.shared.refused.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
        };
        if !self.failed {
            self.encode(UnixMillis::now(), &closed);
            let result = self.seal();
            self.check(result);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let checkpoint = (self.since_checkpoint > 0 && !self.failed)
            .then(|| self.last_checkpoint_at + self.config.checkpoint_interval);
        match (self.sync_due, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn after_batch(&mut self) {
        if self.failed {
            return;
        }
        let result = self.flush();
        self.check(result);
        let now = Instant::now();
        if self.sync_due.is_some_and(|due| now >= due) {
            let result = self.sync_data();
            self.check(result);
        }
        let checkpoint_due = self.since_checkpoint >= self.config.checkpoint_every
            || (self.since_checkpoint > 0 && now >= self.last_checkpoint_at + self.config.checkpoint_interval);
        if checkpoint_due && !self.failed {
            let result = self.seal();
            self.check(result);
        }
    }

    fn check(&mut self, result: Result<(), WriteFailure>) {
        if let Err(WriteFailure(text)) = result {
            if !self.failed {
                self.failed = true;
                self.shared.failed.store(true, Ordering::Release);
                self.shared.problem(format!("audit log write failed, no more records will be written: {text}"));
            }
            // Whatever was encoded but not written is lost.
            self.shared.lost.fetch_add(self.buf_records, Ordering::Relaxed);
            self.buf.clear();
            self.buf_records = 0;
        }
    }

    fn append(&mut self, time: UnixMillis, event: &AuditEvent) {
        if self.failed {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rotate = self.config.rotate_bytes;
        if rotate > 0 && self.file_records > 0 && self.file_len + self.buf.len() as u64 >= rotate {
            let result = self.rotate(time);
            self.check(result);
            if self.failed {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.encode(time, event);
    }

    fn encode(&mut self, time: UnixMillis, event: &dyn Recordable) {
        let stamp = *self.clock.format(time);
        let hash = encode_record(&mut self.buf, self.next_index, &stamp, event, &self.last_hash);
        self.buf.push(b'\n');
        self.tree.push(leaf_hash(&hash));
        self.last_hash = hash;
        self.next_index += 1;
        self.buf_records += 1;
        self.file_records += 1;
        self.since_checkpoint += 1;
    }

    fn flush(&mut self) -> Result<(), WriteFailure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // Drop a partial write so the file ends on a whole record.
            let _ = self.file.set_len(self.file_len);
            return Err(failure(format!("write {}", self.paths.base().display()), e));
        }
        self.file_len += self.buf.len() as u64;
        self.shared.written.fetch_add(self.buf_records, Ordering::Relaxed);
        self.shared.last_index.store(self.next_index - 1, Ordering::Relaxed);
        self.buf.clear();
        self.buf_records = 0;
        if self.config.durability == Durability::Fsync && self.sync_due.is_none() {
            self.sync_due = Some(Instant::now() + self.config.batch_window);
        }
        Ok(())
    }

    fn sync_data(&mut self) -> Result<(), WriteFailure> {
        self.file.sync_data().map_err(|e| failure(format!("fsync {}", self.paths.base().display()), e))?;
        self.sync_due = None;
        Ok(())
    }

    /// Writes everything, fsyncs (whatever the durability mode: a checkpoint must
    /// never cover records the disk might lose) and signs a checkpoint.
    fn seal(&mut self) -> Result<(), WriteFailure> {
        self.flush()?;
        self.sync_data()?;
        self.write_checkpoint()
    }

    fn write_checkpoint(&mut self) -> Result<(), WriteFailure> {
        let checkpoint = Checkpoint { origin: self.origin.clone(), size: self.next_index, root: self.tree.root() };
        let text = checkpoint.sign(&self.key);
        let latest = self.paths.checkpoint();
        let tmp = self.paths.checkpoint_tmp();
        let dir = self.paths.dir();
        // The latest checkpoint first (atomically), then the history: a crash
        // between the two leaves the history one behind, which opening repairs.
        (|| -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &latest)?;
            sync_dir(&dir)
        })()
        .map_err(|e| failure(format!("write {}", latest.display()), e))?;
        append_history(&self.paths, &text).map_err(|e| failure(format!("append to {}", self.paths.checkpoint_history().display()), e))?;
        self.since_checkpoint = 0;
        self.last_checkpoint_at = Instant::now();
        self.shared.checkpoint_size.store(checkpoint.size, Ordering::Relaxed);
        self.shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the current file and continues in a new one whose first record is
    /// `log.rotated`.
    fn rotate(&mut self, time: UnixMillis) -> Result<(), WriteFailure> {
        self.flush()?;
        self.sync_data()?;
        let seq = self.rotated_max + 1;
        let target = self.paths.rotated(seq);
        let base = self.paths.base().to_path_buf();
        if target.exists() {
            return Err(WriteFailure(format!("cannot rotate: {} already exists", target.display())));
        }
        std::fs::rename(&base, &target).map_err(|e| failure(format!("rename {} to {}", base.display(), target.display()), e))?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&base)
            .map_err(|e| failure(format!("create {}", base.display()), e))?;
        sync_dir(&self.paths.dir()).map_err(|e| failure(format!("fsync directory of {}", base.display()), e))?;
        self.file = file;
        self.file_len = 0;
        self.file_records = 0;
        self.rotated_max = seq;
        let rotated = LogEvent::Rotated {
            previous_file: LogPaths::file_name_of(&target),
            merkle_prefix: self.tree.subtrees().to_vec(),
        };
        self.encode(time, &rotated);
        Ok(())
    }
}

/// Appends one note to the checkpoint history (each note followed by a blank line).
pub(crate) fn append_history(paths: &LogPaths, note: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(paths.checkpoint_history())?;
    let mut entry = Vec::with_capacity(note.len() + 1);
    entry.extend_from_slice(note.as_bytes());
    entry.push(b'\n');
    f.write_all(&entry)?;
    f.sync_data()
}

fn base64_key(key: &SigningKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
}
