//! The writer: the broker thread hands events to [`AuditLog::append`], which
//! never waits for the disk; a writer thread turns them into records, writes
//! them in batches, fsyncs per group-commit window and signs checkpoints.
//!
//! Nothing on the writer thread logs to the broker (the broker's log may only be
//! written from the broker thread): problems are queued for
//! [`AuditLog::take_problems`], and counters are in [`AuditLog::stats`].
//!
//! The writer thread exists only while there is work. After
//! [`IDLE_BEFORE_PARK`] with nothing queued it fsyncs what it wrote and exits
//! ("parks"), handing its state back; the next append (or the broker's tick,
//! when a checkpoint falls due) starts a new thread with that state. Measured
//! why: one idle extra thread makes every syscall and every malloc of the
//! broker pay the multi-threaded price (file reference counting in the kernel,
//! glibc's cancellation points and arena locks): 8 % of plain Mosquitto's
//! throughput on this machine, all of what loading mqseal cost unprotected
//! traffic (docs/PERFORMANCE.md).
//!
//! A log that cannot be written (a full disk, a quota: a failed `write` of the
//! log or of a checkpoint) is an **outage**, not an end: the records not yet
//! written stay in memory (in order, chained), every later [`AuditLog::append`]
//! is refused with [`AppendError::Unavailable`] (the plugin refuses whatever
//! needs a record), and the writer retries every [`OUTAGE_RETRY`]. Once a write
//! succeeds it writes the held records, then `log.outage` (start, end, held,
//! refused), seals, and appends are accepted again; no restart needed. Events
//! that have already taken effect (a kick, a policy installed) are never
//! refused: [`AuditLog::append_decided`] holds them through an outage or a full
//! queue.
//!
//! A failed `fsync`, a failed rotation or a writer thread that cannot start is
//! fatal: after it the writer writes nothing more (Linux may have dropped the
//! pages an fsync failed on, so retrying could not tell what reached the disk),
//! every later append is refused with [`AppendError::WriterFailed`], and records
//! that were queued are counted as lost. The plugin restarts the log by restarting.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ed25519_dalek::SigningKey;
use parking_lot::Mutex;

use super::checkpoint::Checkpoint;
use super::config::AuditConfig;
use super::event::{AuditEvent, LogEvent, Recordable};
use super::files::{append_history, sync_dir, LogPaths};
use super::hashing::Hash;
use super::merkle::{leaf_hash, CompactRange};
use super::open::{open_log, AuditError, OpenReport, OpenedLog};
use super::record::encode_record;
use super::timestamp::{format_timestamp, TimestampFormatter, UnixMillis};
use super::config::{Durability, QueueFullMode};

/// Why an event was not accepted. The caller must treat the event as not
/// recorded (the plugin denies it); each refusal is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("audit queue full")]
    QueueFull,
    /// The log cannot be written for now (an outage: a full disk); the writer retries.
    #[error("audit log cannot be written for now (outage)")]
    Unavailable,
    #[error("audit writer failed")]
    WriterFailed,
}

impl AppendError {
    pub fn reason(self) -> &'static str {
        match self {
            AppendError::QueueFull => "audit-queue-full",
            AppendError::Unavailable => "audit-outage",
            AppendError::WriterFailed => "audit-writer-failed",
        }
    }
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
    /// Hash of the last record written (the head of the chain on disk).
    pub head: Option<Hash>,
    /// Tree size of the last signed checkpoint.
    pub last_checkpoint_size: u64,
    pub checkpoints_signed: u64,
    /// Events waiting in the queue.
    pub queued: usize,
    /// The writer failed and accepts nothing more.
    pub failed: bool,
    /// The log cannot be written for now (an outage); records are held.
    pub unavailable: bool,
    /// Outages that ended (each one `log.outage` record).
    pub outages: u64,
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

/// How long the writer thread waits with nothing queued before it parks. Long
/// enough that a steady stream of records never pays a thread start per batch
/// (a start costs tens of µs on the broker thread), short enough that a broker
/// carrying only unprotected traffic is single-threaded almost all the time.
pub const IDLE_BEFORE_PARK: Duration = Duration::from_millis(100);

/// `Shared::wake_at_ms` when a parked writer has no deadline.
const NO_DEADLINE: u64 = u64::MAX;

/// How often the writer tries to write again during an outage.
pub const OUTAGE_RETRY: Duration = Duration::from_millis(250);

/// The most events [`AuditLog::append_decided`] holds beside a full queue; more
/// are counted as lost (an unbounded hold would let a long outage exhaust memory).
const DECIDED_OVERFLOW_MAX: usize = 65536;

struct Shared {
    written: AtomicU64,
    refused: AtomicU64,
    lost: AtomicU64,
    last_index: AtomicU64,
    /// The hash of the record at `last_index`.
    head: Mutex<Option<Hash>>,
    checkpoint_size: AtomicU64,
    checkpoints: AtomicU64,
    failed: AtomicBool,
    problems: Mutex<Vec<String>>,
    /// The writer thread has exited and handed its state back (see [`Parking`]).
    parked: AtomicBool,
    /// When a parked writer must run again (a checkpoint falls due), in ms since `epoch`.
    wake_at_ms: AtomicU64,
    /// The broker calls [`AuditLog::tick`]: a parked writer with a checkpoint
    /// due can rely on being woken. Without ticks it parks only when sealed.
    ticks_seen: AtomicBool,
    epoch: Instant,
    /// Times the writer parked, for tests and stats.
    parks: AtomicU64,
    /// An outage: the log cannot be written for now (see the module notes).
    unavailable: AtomicBool,
    /// Appenders between reading `unavailable` and counting their refusal.
    refusing: AtomicU64,
    outages: AtomicU64,
    /// Decided events that found the queue full, oldest first; the writer takes them.
    overflow: Mutex<Vec<(UnixMillis, AuditEvent)>>,
    has_overflow: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            written: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            last_index: AtomicU64::new(0),
            head: Mutex::new(None),
            checkpoint_size: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
            parked: AtomicBool::new(false),
            wake_at_ms: AtomicU64::new(NO_DEADLINE),
            ticks_seen: AtomicBool::new(false),
            epoch: Instant::now(),
            parks: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            refusing: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            overflow: Mutex::new(Vec::new()),
            has_overflow: AtomicBool::new(false),
        }
    }
}

impl Shared {
    fn millis_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

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
    thread: Mutex<WriterThread>,
}

/// What a writer thread returns: its state when it parked, nothing when it stopped.
type Parking = Option<(Writer, Receiver<Command>)>;

/// Where the writer's state is.
enum WriterThread {
    Running(JoinHandle<Parking>),
    /// Parked and joined, but a new thread could not be started (the log has
    /// failed closed); kept so that shutdown can still seal the log.
    Stranded(Box<Writer>, Receiver<Command>),
    Stopped,
}

/// Starts a writer thread with the given state; on failure hands the state back.
fn spawn_writer(writer: Writer, rx: Receiver<Command>) -> Result<JoinHandle<Parking>, (io::Error, Parking)> {
    // The closure owns the state only once the thread runs: if the thread cannot
    // be started, the state is still in the slot.
    let slot = Arc::new(Mutex::new(Some((writer, rx))));
    let theirs = slot.clone();
    std::thread::Builder::new()
        .name("mqseal-audit".into())
        .spawn(move || {
            let state = theirs.lock().take();
            state.and_then(|(writer, rx)| writer.run(rx))
        })
        .map_err(|e| (e, slot.lock().take()))
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
        let thread = spawn_writer(writer, rx).map_err(|(e, _)| AuditError::Spawn(e))?;
        let thread = Mutex::new(WriterThread::Running(thread));
        Ok((AuditLog { tx, shared, queue_full: config.queue_full, origin, thread }, report))
    }

    /// Starts the writer thread again if it parked. Called after each send: the
    /// send and the writer's last look at the queue are ordered by SeqCst fences,
    /// so either the writer sees the command or this sees `parked`.
    fn wake_if_parked(&self) -> Result<(), AppendError> {
        fence(Ordering::SeqCst);
        if !self.shared.parked.load(Ordering::SeqCst) || !self.shared.parked.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let mut thread = self.thread.lock();
        let parking = match std::mem::replace(&mut *thread, WriterThread::Stopped) {
            // The writer set `parked` and returns right after: join waits for that.
            WriterThread::Running(handle) => handle.join().unwrap_or(None),
            WriterThread::Stranded(writer, rx) => Some((*writer, rx)),
            WriterThread::Stopped => None,
        };
        let Some((writer, rx)) = parking else {
            self.shared.failed.store(true, Ordering::Release);
            self.shared.problem("audit writer thread stopped unexpectedly; no more records will be written".into());
            return Err(AppendError::WriterFailed);
        };
        match spawn_writer(writer, rx) {
            Ok(handle) => {
                *thread = WriterThread::Running(handle);
                Ok(())
            }
            Err((e, state)) => {
                if let Some((writer, rx)) = state {
                    *thread = WriterThread::Stranded(Box::new(writer), rx);
                }
                self.shared.failed.store(true, Ordering::Release);
                self.shared.problem(format!("cannot restart the audit writer thread, no more records will be written: {e}"));
                Err(AppendError::WriterFailed)
            }
        }
    }

    /// Queues a command, waiting for room if the queue is full (a parked writer
    /// cannot make room: it is woken first). The caller wakes it after the send.
    fn send_waiting(&self, command: Command) -> Result<(), AppendError> {
        if self.tx.is_full() {
            self.wake_if_parked()?;
        }
        self.tx.send(command).map_err(|_| AppendError::WriterFailed)
    }

    /// The broker's periodic tick: wakes a parked writer whose checkpoint is due.
    /// Cheap (two atomic loads) when nothing is due: Mosquitto ticks every loop.
    pub fn tick(&self) {
        if !self.shared.ticks_seen.load(Ordering::Relaxed) {
            self.shared.ticks_seen.store(true, Ordering::Relaxed);
        }
        let wake_at = self.shared.wake_at_ms.load(Ordering::Acquire);
        if wake_at != NO_DEADLINE
            && self.shared.parked.load(Ordering::Acquire)
            && self.shared.millis_since_epoch(Instant::now()) >= wake_at
        {
            // A failure is sticky and reported through take_problems.
            let _ = self.wake_if_parked();
        }
    }

    /// When a parked writer must be woken by [`AuditLog::tick`] (a checkpoint
    /// falls due); `None` while the writer runs (it keeps its own deadlines) or
    /// has nothing due.
    pub fn wake_deadline(&self) -> Option<Instant> {
        if !self.shared.parked.load(Ordering::Acquire) {
            return None;
        }
        match self.shared.wake_at_ms.load(Ordering::Acquire) {
            NO_DEADLINE => None,
            ms => Some(self.shared.epoch + Duration::from_millis(ms)),
        }
    }

    /// Whether the writer thread is parked (no thread exists right now).
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::Acquire)
    }

    /// How many times the writer thread has parked since the log was opened.
    pub fn parks(&self) -> u64 {
        self.shared.parks.load(Ordering::Relaxed)
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
        if self.shared.unavailable.load(Ordering::Acquire) && self.refused_for_outage() {
            return Err(AppendError::Unavailable);
        }
        let command = Command::Record(UnixMillis::now(), event);
        let sent = match self.queue_full {
            QueueFullMode::Deny => match self.tx.try_send(command) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(AppendError::QueueFull),
                Err(TrySendError::Disconnected(_)) => Err(AppendError::WriterFailed),
            },
            QueueFullMode::Block => self.send_waiting(command),
        };
        match sent.and_then(|()| self.wake_if_parked()) {
            Ok(()) => Ok(()),
            Err(e) => refuse(e),
        }
    }

    /// During an outage: counts a refusal so that the outage's end cannot miss
    /// it (see [`Writer::end_outage`]). False if the outage ended meanwhile.
    fn refused_for_outage(&self) -> bool {
        let s = &self.shared;
        s.refusing.fetch_add(1, Ordering::SeqCst);
        let unavailable = s.unavailable.load(Ordering::SeqCst);
        if unavailable {
            s.refused.fetch_add(1, Ordering::SeqCst);
        }
        s.refusing.fetch_sub(1, Ordering::SeqCst);
        unavailable
    }

    /// Queues an event that has already taken effect (a client kicked, a policy
    /// installed, what start-up did): never refused. When the queue is full it
    /// is held beside it, and through an outage it is held with the rest, until
    /// it can be written. Lost (and counted) only after a fatal failure or
    /// beyond a bounded hold.
    pub fn append_decided(&self, event: AuditEvent) {
        if self.shared.failed.load(Ordering::Acquire) {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let time = UnixMillis::now();
        let command = Command::Record(time, event);
        let sent = match self.queue_full {
            QueueFullMode::Block => self.send_waiting(command),
            QueueFullMode::Deny => match self.tx.try_send(command) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(Command::Record(time, event))) => {
                    let mut overflow = self.shared.overflow.lock();
                    if overflow.len() < DECIDED_OVERFLOW_MAX {
                        overflow.push((time, event));
                        self.shared.has_overflow.store(true, Ordering::Release);
                    } else {
                        self.shared.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
                Err(_) => Err(AppendError::WriterFailed),
            },
        };
        if sent.and_then(|()| self.wake_if_parked()).is_err() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Checks, before something that needs a record takes effect, that its
    /// record can be appended now (no outage, no failure, and room in the queue
    /// unless appends wait for room); if not, counts it as refused, as
    /// [`AuditLog::append`] would. The broker thread is the only appender, so
    /// room seen here is still there for its next append.
    pub fn reserve(&self) -> Result<(), AppendError> {
        if self.shared.failed.load(Ordering::Acquire) {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::WriterFailed);
        }
        if self.shared.unavailable.load(Ordering::Acquire) && self.refused_for_outage() {
            return Err(AppendError::Unavailable);
        }
        if self.queue_full == QueueFullMode::Deny && self.tx.is_full() {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::QueueFull);
        }
        Ok(())
    }

    /// Waits until every event appended before this call is written and fsynced.
    /// Blocks: for tests and administrative paths, not for the broker's hot path.
    pub fn sync(&self) -> Result<(), AppendError> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.send_waiting(Command::Sync(reply_tx))?;
        self.wake_if_parked()?;
        reply_rx.recv().map_err(|_| AppendError::WriterFailed)?;
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(AppendError::WriterFailed);
        }
        if self.shared.unavailable.load(Ordering::Acquire) {
            return Err(AppendError::Unavailable);
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
            head: *s.head.lock(),
            last_checkpoint_size: s.checkpoint_size.load(Ordering::Relaxed),
            checkpoints_signed: s.checkpoints.load(Ordering::Relaxed),
            queued: self.tx.len(),
            failed: s.failed.load(Ordering::Relaxed),
            unavailable: s.unavailable.load(Ordering::Relaxed),
            outages: s.outages.load(Ordering::Relaxed),
        }
    }

    /// Drains the queue, writes `log.closed`, signs the final checkpoint, fsyncs
    /// and stops the writer thread.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop();
        ShutdownReport { stats: self.stats(), problems: self.take_problems() }
    }

    fn stop(&mut self) {
        // Shutdown goes through the queue like any command, so it comes after
        // every record appended before it.
        if matches!(*self.thread.lock(), WriterThread::Stopped) {
            return;
        }
        let _ = self.send_waiting(Command::Shutdown);
        let _ = self.wake_if_parked();
        match std::mem::replace(&mut *self.thread.lock(), WriterThread::Stopped) {
            WriterThread::Running(handle) => match handle.join() {
                Ok(None) => {}
                // It parked although Shutdown was queued: cannot happen (it parks
                // only with an empty queue, and the wake-up above joined it);
                // close here rather than lose the final checkpoint.
                Ok(Some((mut writer, rx))) => writer.close(&rx),
                Err(_) => {
                    self.shared.failed.store(true, Ordering::Release);
                    self.shared.problem("audit writer thread panicked; the log may lack its final checkpoint".into());
                }
            },
            // The thread could not be restarted: close on this thread.
            WriterThread::Stranded(mut writer, rx) => writer.close(&rx),
            WriterThread::Stopped => {}
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
    /// The log cannot be written for now; `buf` holds the records not written.
    outage: Option<Outage>,
}

/// An outage in progress (see the module notes).
struct Outage {
    start: UnixMillis,
    /// `Shared::refused` when it began: the refusals since are its own.
    refused_before: u64,
    /// The first failure, for `log.outage` and the broker's log.
    error: String,
    retry_at: Instant,
    /// Records kept in memory during it: those not written when it began, and
    /// every one encoded since.
    held: u64,
}

/// The earlier of two optional moments.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An I/O failure on the writer thread, with what was being done, and whether
/// trying again later can succeed (a write: the disk may get space again) or
/// not (an fsync: the kernel may have dropped what it could not write).
struct WriteFailure {
    text: String,
    retry: bool,
}

fn failure(what: impl std::fmt::Display, e: io::Error) -> WriteFailure {
    WriteFailure { text: format!("{what}: {e}"), retry: false }
}

fn retryable(what: impl std::fmt::Display, e: io::Error) -> WriteFailure {
    WriteFailure { text: format!("{what}: {e}"), retry: true }
}

impl Writer {
    fn new(opened: OpenedLog, config: AuditConfig, key: SigningKey, shared: Arc<Shared>) -> Result<Self, AuditError> {
        let OpenedLog { file, file_len, file_records, rotated_max, origin, tree, next_index, last_hash, opening, needs_empty_checkpoint, .. } =
            opened;
        shared.last_index.store(next_index.checked_sub(1).unwrap_or(NO_INDEX), Ordering::Relaxed);
        *shared.head.lock() = next_index.checked_sub(1).map(|_| last_hash);
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
            outage: None,
        })
    }

    /// The records opening decided on, then `log.opened`, then a checkpoint: all
    /// before the plugin may append, so that any failure stops the broker.
    fn write_opening_records(&mut self) -> Result<(), AuditError> {
        let path = self.config.path.clone();
        let to_audit_error = |WriteFailure { text, .. }: WriteFailure| AuditError::Io {
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

    /// The writer thread's loop. Returns its state when it parks (see
    /// [`IDLE_BEFORE_PARK`]), nothing when it stops.
    fn run(mut self, rx: Receiver<Command>) -> Parking {
        let _guard = FailOnPanic(self.shared.clone());
        let mut stopping = false;
        let mut idle_since = Instant::now();
        while !stopping {
            let park_at = self.may_park().then(|| idle_since + IDLE_BEFORE_PARK);
            let wait_until = earliest(self.next_deadline(), park_at);
            let first = match wait_until {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => rx.recv_deadline(deadline),
            };
            let had_work = first.is_ok();
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
                Err(RecvTimeoutError::Timeout) => {
                    if park_at.is_some_and(|at| Instant::now() >= at) && self.park(&rx) {
                        return Some((self, rx));
                    }
                }
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
            self.take_overflow();
            self.after_batch();
            if had_work || !rx.is_empty() {
                idle_since = Instant::now();
            }
        }
        self.close(&rx);
        None
    }

    /// Whether the thread may exit when idle: never after a failure (appends
    /// are refused anyway and nothing must be retried), and with records not
    /// yet sealed only if the broker's ticks will wake it for the checkpoint.
    fn may_park(&self) -> bool {
        // During an outage the thread stays to retry on its own clock (no tick needed).
        !self.failed
            && self.outage.is_none()
            && !self.shared.has_overflow.load(Ordering::Acquire)
            && (self.since_checkpoint == 0 || self.shared.ticks_seen.load(Ordering::Relaxed))
    }

    /// Appends the decided events that found the queue full.
    fn take_overflow(&mut self) {
        if !self.shared.has_overflow.load(Ordering::Acquire) {
            return;
        }
        let held = {
            let mut overflow = self.shared.overflow.lock();
            self.shared.has_overflow.store(false, Ordering::Release);
            std::mem::take(&mut *overflow)
        };
        for (time, event) in held {
            self.append(time, &event);
        }
    }

    /// Tries to park: makes what was written durable, publishes when to be
    /// woken, then takes a last look at the queue. True: the thread must exit
    /// and hand its state back (an appender will start a new one).
    fn park(&mut self, rx: &Receiver<Command>) -> bool {
        if self.sync_due.is_some() {
            // Due within the group-commit window anyway; nobody would run it while parked.
            let result = self.sync_data();
            self.check(result);
        }
        if !self.may_park() {
            return false;
        }
        let wake_at = (self.since_checkpoint > 0)
            .then(|| self.shared.millis_since_epoch(self.last_checkpoint_at + self.config.checkpoint_interval))
            .unwrap_or(NO_DEADLINE);
        self.shared.wake_at_ms.store(wake_at, Ordering::Release);
        self.shared.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !rx.is_empty() && self.shared.parked.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            // A command arrived meanwhile and nobody claimed the wake-up: go on.
            return false;
        }
        self.shared.parks.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Returns true on shutdown.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Record(time, event) => {
                self.append(time, &event);
                false
            }
            Command::Sync(reply) => {
                // During an outage the caller learns it from `sync`'s result.
                if !self.failed && self.outage.is_none() {
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
        self.take_overflow();
        if self.outage.is_some() {
            // A last try; if the disk is still full, the held records die with the process.
            self.end_outage();
            if self.outage.is_some() {
                self.shared.lost.fetch_add(self.buf_records, Ordering::Relaxed);
                self.shared.problem(format!(
                    "shutdown during an audit log outage: {} records held in memory could not be written and are lost",
                    self.buf_records
                ));
                self.buf.clear();
                self.buf_records = 0;
                return;
            }
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
        // A failed writer does nothing more on its own: a sync left due by the
        // failure would otherwise wake it at once, again and again.
        if self.failed {
            return None;
        }
        if let Some(outage) = &self.outage {
            return Some(outage.retry_at);
        }
        let checkpoint = (self.since_checkpoint > 0)
            .then(|| self.last_checkpoint_at + self.config.checkpoint_interval);
        earliest(self.sync_due, checkpoint)
    }

    fn after_batch(&mut self) {
        if self.failed {
            return;
        }
        if let Some(outage) = &self.outage {
            if Instant::now() >= outage.retry_at {
                self.end_outage();
            }
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

    /// During an outage: tries to write and seal the held records (a checkpoint
    /// needs space too: a log file with room left in its last page is not yet
    /// a disk with space); on success writes `log.outage`, seals again, and
    /// accepts appends again.
    fn end_outage(&mut self) {
        let result = self.seal();
        if result.is_err() {
            self.check(result);
            return;
        }
        let Some(outage) = self.outage.take() else { return };
        // Accept appends again first, then wait out any appender still counting
        // a refusal, so that `refused` misses none (they queue behind this record).
        self.shared.unavailable.store(false, Ordering::SeqCst);
        while self.shared.refusing.load(Ordering::SeqCst) > 0 {
            std::hint::spin_loop();
        }
        let end = UnixMillis::now();
        let refused = self.shared.refused.load(Ordering::SeqCst).saturating_sub(outage.refused_before);
        let record = LogEvent::Outage {
            start: format_timestamp(outage.start),
            end: format_timestamp(end),
            error: outage.error,
            held: outage.held,
            refused,
        };
        self.encode(end, &record);
        let result = self.seal();
        self.check(result);
        if self.outage.is_none() && !self.failed {
            self.shared.outages.fetch_add(1, Ordering::Relaxed);
            self.shared.problem(format!(
                "audit log writable again after {} ms: {} records held in memory are written, {refused} events were refused meanwhile (log.outage)",
                end.0.saturating_sub(outage.start.0),
                outage.held
            ));
        }
    }

    fn check(&mut self, result: Result<(), WriteFailure>) {
        let Err(WriteFailure { text, retry }) = result else { return };
        if retry && !self.failed {
            // Keep what is not written (in `buf`); refuse appends until a retry succeeds.
            let retry_at = Instant::now() + OUTAGE_RETRY;
            match &mut self.outage {
                Some(outage) => outage.retry_at = retry_at,
                None => {
                    // Counted before refusing starts: every refusal after this is the outage's.
                    let refused_before = self.shared.refused.load(Ordering::SeqCst);
                    self.shared.unavailable.store(true, Ordering::SeqCst);
                    self.shared.problem(format!(
                        "audit log cannot be written ({text}): holding its records in memory, refusing what needs a record, \
                         retrying every {} ms",
                        OUTAGE_RETRY.as_millis()
                    ));
                    self.outage = Some(Outage { start: UnixMillis::now(), refused_before, error: text, retry_at, held: self.buf_records });
                }
            }
            return;
        }
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

    fn append(&mut self, time: UnixMillis, event: &AuditEvent) {
        if self.failed {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rotate = self.config.rotate_bytes;
        // Not during an outage: rotation writes first; it happens after the outage.
        if rotate > 0 && self.outage.is_none() && self.file_records > 0 && self.file_len + self.buf.len() as u64 >= rotate {
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
        if let Some(outage) = &mut self.outage {
            outage.held += 1;
        }
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
            return Err(retryable(format!("write {}", self.paths.base().display()), e));
        }
        self.file_len += self.buf.len() as u64;
        self.shared.written.fetch_add(self.buf_records, Ordering::Relaxed);
        self.shared.last_index.store(self.next_index - 1, Ordering::Relaxed);
        *self.shared.head.lock() = Some(self.last_hash);
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
        .map_err(|e| retryable(format!("write {}", latest.display()), e))?;
        append_history(&self.paths, &text)
            .map_err(|e| retryable(format!("append to {}", self.paths.checkpoint_history().display()), e))?;
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
            return Err(WriteFailure { text: format!("cannot rotate: {} already exists", target.display()), retry: false });
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

fn base64_key(key: &SigningKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
}
