//! Opening an existing log before the writer appends to it.
//!
//! 1. Read the latest checkpoint and the history beside the log. The latest must
//!    not be older than any checkpoint in the history (an old one put back), and
//!    a log with records must have one (a deleted checkpoint).
//! 2. Find where to start reading: the newest file that begins at index 0 or with
//!    a `merkle_prefix` (`log.rotated`, `log.continued`) at or before the latest
//!    checkpoint's size, so that the checkpoint can be checked without reading
//!    files already sealed by it.
//! 3. Read from there to the end, checking every record and the chain, and the
//!    root at the checkpoint's size against the checkpoint.
//! 4. A torn last line (bytes after the last newline of the last file) is cut off
//!    and recorded with `log.recovered`. Anything else wrong is a broken chain:
//!    refuse, or (when configured) continue in a new file with `log.continued`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::chain::{altered_record, rewritten_records, ChainState, Line, LineReader, LinkError};
use super::checkpoint::{read_checkpoint_file, validate_origin, Checkpoint, CheckpointAt, CheckpointError};
use super::config::{default_origin, AuditConfig};
use super::event::{LogEvent, KIND_CONTINUED, KIND_ROTATED};
use super::files::{append_history, sync_dir, LogFile, LogPaths};
use super::hashing::{origin_hash, Hash};
use super::merkle::{empty_root, CompactRange};
use super::record::{parse_record, Record};
use super::timestamp::UnixMillis;

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

/// What the writer starts from.
pub(crate) struct OpenedLog {
    pub file: File,
    pub file_len: u64,
    pub file_records: u64,
    pub rotated_max: u64,
    pub origin: String,
    pub tree: CompactRange,
    pub next_index: u64,
    pub last_hash: Hash,
    /// Records to write before `log.opened`.
    pub opening: Vec<LogEvent>,
    pub needs_empty_checkpoint: bool,
    pub report: OpenReport,
}

/// A broken log: where and why.
struct Break {
    location: String,
    file: Option<String>,
    line: Option<u64>,
    reason: String,
}

/// The state after reading the log.
struct ReadOutcome {
    chain: ChainState,
    /// Set when the log is broken; `chain` is then the state before the break.
    broken: Option<Break>,
    torn: Option<(PathBuf, u64, u64)>,
    /// Records in the current file (after cutting a torn line).
    base_records: u64,
}

pub(crate) fn open_log(config: &AuditConfig, key: &SigningKey) -> Result<OpenedLog, AuditError> {
    let paths = LogPaths::new(&config.path);
    let files = paths.discover().map_err(io_error(paths.dir(), "list the log directory"))?;
    let rotated_max = files.iter().filter_map(|f| f.seq).max().unwrap_or(0);
    let mut warnings = Vec::new();

    let latest_path = paths.checkpoint();
    let history_path = paths.checkpoint_history();
    let latest = read_notes(&latest_path)?;
    let history = read_notes(&history_path)?;
    let latest = match latest {
        None => None,
        Some(notes) if notes.len() == 1 => notes.into_iter().next(),
        Some(notes) => {
            return Err(broken_at(&latest_path, 1, format!("holds {} checkpoints; the latest-checkpoint file holds one", notes.len())))
        }
    };

    if let Some(l) = &latest {
        match l.note.verify(&[key.verifying_key()]) {
            Ok(_) => {}
            Err(CheckpointError::NoKnownSignature(names)) => warnings.push(format!(
                "{}: not signed by the configured broker key (signed by {names}); was the key changed?",
                latest_path.display()
            )),
            Err(e) => return Err(broken_at(&latest_path, l.line, e.to_string())),
        }
    }
    let history_max = history.as_ref().and_then(|h| h.iter().max_by_key(|n| n.note.checkpoint.size));
    match (&latest, history_max) {
        (Some(l), Some(h)) if h.note.checkpoint.size > l.note.checkpoint.size => {
            return Err(broken_at(
                &latest_path,
                l.line,
                format!(
                    "an old checkpoint was put back: it covers {} records but {}:{} already covered {}",
                    l.note.checkpoint.size,
                    history_path.display(),
                    h.line,
                    h.note.checkpoint.size
                ),
            ));
        }
        (None, Some(h)) => {
            return Err(broken_at(
                &latest_path,
                1,
                format!("missing, but {} has checkpoints up to {} records", history_path.display(), h.note.checkpoint.size),
            ))
        }
        _ => {}
    }
    let reference: Option<Checkpoint> = latest.as_ref().map(|l| l.note.checkpoint.clone());

    let origin = match (&reference, &config.origin) {
        (Some(r), Some(c)) if &r.origin != c => {
            return Err(AuditError::OriginMismatch { configured: c.clone(), found: r.origin.clone() })
        }
        (Some(r), _) => r.origin.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => default_origin(&key.verifying_key()),
    };
    validate_origin(&origin).map_err(|problem| AuditError::InvalidOrigin { origin: origin.clone(), problem })?;

    let has_content = files.iter().any(|f| std::fs::metadata(&f.path).map(|m| m.len() > 0).unwrap_or(true));
    let mut report = OpenReport {
        origin: origin.clone(),
        created: false,
        records_found: 0,
        files_found: files.len(),
        recovered: None,
        continued: None,
        warnings,
    };

    let Some(reference) = reference else {
        if has_content || rotated_max > 0 {
            let broken = Break {
                location: latest_path.display().to_string(),
                file: None,
                line: None,
                reason: "the log has files but no checkpoint beside it (deleted?)".into(),
            };
            return continue_in_new_file(config, &paths, &origin, rotated_max, ChainState::genesis(&origin), broken, report);
        }
        // A new log (or one whose creation stopped before its first record).
        report.created = true;
        let (file, file_len) = open_for_append(paths.base())?;
        return Ok(OpenedLog {
            file,
            file_len,
            file_records: 0,
            rotated_max,
            origin: origin.clone(),
            tree: CompactRange::new(),
            next_index: 0,
            last_hash: origin_hash(&origin),
            opening: Vec::new(),
            needs_empty_checkpoint: true,
            report,
        });
    };

    let sealed_roots = SealedRoots::new(&latest_path, latest.as_ref(), &history_path, history.as_deref());
    let outcome = read_tail(&files, &origin, &reference, &latest_path, &sealed_roots)?;
    report.records_found = outcome.chain.next_index;
    if let Some(broken) = outcome.broken {
        let mut chain = outcome.chain;
        if chain.prev.is_none() || chain.tree.is_none() {
            // Broken at the very first record read: nothing before it is known.
            chain = ChainState::genesis(&origin);
        }
        return continue_in_new_file(config, &paths, &origin, rotated_max, chain, broken, report);
    }

    // The history lags the latest checkpoint after a crash between the two writes.
    let history_last = history.as_ref().and_then(|h| h.last()).map(|n| n.note.checkpoint.size);
    if let Some(l) = &latest {
        let behind = match history_last {
            Some(s) => s < l.note.checkpoint.size,
            None => true,
        };
        if behind {
            append_history(&paths, &l.note.to_text())
                .map_err(io_error(&history_path, "append the latest checkpoint to"))?;
        }
    }

    let mut opening = Vec::new();
    let chain = outcome.chain;
    let next_index = chain.next_index;
    let tree = chain.tree.unwrap_or_default();
    let last_hash = chain.prev.unwrap_or_else(|| origin_hash(&origin));
    let base_exists = files.last().is_some_and(|f| f.seq.is_none());
    let (file, file_len) = open_for_append(paths.base())?;
    if !base_exists {
        sync_dir(&paths.dir()).map_err(io_error(paths.dir(), "fsync"))?;
    }
    let mut base_records = if base_exists { outcome.base_records } else { 0 };
    if let Some((path, offset, len)) = outcome.torn {
        file.set_len(offset).map_err(io_error(&path, "cut the torn last line of"))?;
        file.sync_all().map_err(io_error(&path, "fsync"))?;
        let recovery = Recovery { file: path.clone(), cut_offset: offset, cut_bytes: len, last_good_index: next_index.checked_sub(1) };
        report.recovered = Some(recovery);
        opening.push(LogEvent::Recovered {
            file: LogPaths::file_name_of(&path),
            cut_offset: offset,
            cut_bytes: len,
            last_good_index: next_index.checked_sub(1),
        });
    }
    let file_len = if report.recovered.is_some() { file.metadata().map(|m| m.len()).unwrap_or(file_len) } else { file_len };
    if file_len == 0 && next_index > 0 {
        // A current file without records after earlier files (a crash during
        // rotation, or a torn first line): it starts like any rotated-into file.
        base_records = 0;
        let previous = files.iter().rev().find(|f| f.seq.is_some()).map(|f| LogPaths::file_name_of(&f.path)).unwrap_or_default();
        opening.insert(0, LogEvent::Rotated { previous_file: previous, merkle_prefix: tree.subtrees().to_vec() });
    }
    Ok(OpenedLog {
        file,
        file_len,
        file_records: base_records,
        rotated_max,
        origin,
        tree,
        next_index,
        last_hash,
        opening,
        needs_empty_checkpoint: false,
        report,
    })
}

fn read_notes(path: &Path) -> Result<Option<Vec<CheckpointAt>>, AuditError> {
    use super::checkpoint::CheckpointFileError;
    match read_checkpoint_file(path) {
        Ok(notes) => Ok(notes),
        Err(CheckpointFileError::Io { source, .. }) => Err(AuditError::Io { path: path.to_path_buf(), action: "read", source }),
        Err(CheckpointFileError::Bad { line, error, .. }) => Err(broken_at(path, line, error.to_string())),
    }
}

fn broken_at(path: &Path, line: u64, reason: String) -> AuditError {
    AuditError::Broken { location: format!("{}:{line}", path.display()), reason }
}

fn open_for_append(path: &Path) -> Result<(File, u64), AuditError> {
    let file = OpenOptions::new().create(true).append(true).open(path).map_err(io_error(path, "open for appending"))?;
    let len = file.metadata().map_err(io_error(path, "inspect"))?.len();
    Ok((file, len))
}

/// The first complete record of a file, if it has one.
fn first_record(path: &Path) -> Result<Option<Result<Record, String>>, AuditError> {
    let file = File::open(path).map_err(io_error(path, "open"))?;
    let mut reader = LineReader::new(file);
    Ok(match reader.next_line().map_err(io_error(path, "read"))? {
        Line::Complete { bytes, .. } => Some(parse_record(bytes).map_err(|e| e.to_string())),
        Line::TooLong { .. } => Some(Err("line too long".into())),
        Line::Torn { .. } | Line::End => None,
    })
}

/// Whether a record starts a file with a usable Merkle prefix.
pub(crate) fn prefix_of(record: &Record) -> Option<CompactRange> {
    if record.kind != KIND_ROTATED && record.kind != KIND_CONTINUED {
        return None;
    }
    CompactRange::from_parts(record.index, record.fact_hashes("merkle_prefix")?)
}

/// The roots every checkpoint beside the log signed, by tree size, with where
/// each note is: while reading, a rewrite is located as `verify` locates it (at
/// the first line after the last checkpoint that still matches).
struct SealedRoots {
    by_size: std::collections::BTreeMap<u64, (Hash, String)>,
}

impl SealedRoots {
    fn new(latest_path: &Path, latest: Option<&CheckpointAt>, history_path: &Path, history: Option<&[CheckpointAt]>) -> Self {
        let mut by_size = std::collections::BTreeMap::new();
        let notes = history.unwrap_or_default().iter().map(|n| (history_path, n)).chain(latest.map(|n| (latest_path, n)));
        for (path, n) in notes {
            by_size.entry(n.note.checkpoint.size).or_insert((n.note.checkpoint.root, format!("{}:{}", path.display(), n.line)));
        }
        SealedRoots { by_size }
    }
}

fn read_tail(
    files: &[LogFile],
    origin: &str,
    reference: &Checkpoint,
    latest_path: &Path,
    sealed_roots: &SealedRoots,
) -> Result<ReadOutcome, AuditError> {
    // Where to start: the newest file we can start at that the checkpoint covers.
    let mut start = None;
    for (i, f) in files.iter().enumerate().rev() {
        match first_record(&f.path)? {
            None => continue,
            Some(Err(why)) => {
                let broken = Break {
                    location: format!("{}:1", f.path.display()),
                    file: Some(LogPaths::file_name_of(&f.path)),
                    line: Some(1),
                    reason: why,
                };
                return Ok(ReadOutcome { chain: ChainState { next_index: 0, prev: None, tree: None }, broken: Some(broken), torn: None, base_records: 0 });
            }
            Some(Ok(record)) => {
                if record.index == 0 {
                    start = Some((i, ChainState::genesis(origin)));
                    break;
                }
                if record.index <= reference.size {
                    if let Some(tree) = prefix_of(&record) {
                        start = Some((i, ChainState { next_index: record.index, prev: None, tree: Some(tree) }));
                        break;
                    }
                }
            }
        }
    }
    let Some((start, mut chain)) = start else {
        let all_empty = files.iter().all(|f| std::fs::metadata(&f.path).map(|m| m.len() == 0).unwrap_or(false));
        if reference.size == 0 && all_empty {
            // Sealed at size 0 and nothing written since: an empty new log.
            return Ok(ReadOutcome { chain: ChainState::genesis(origin), broken: None, torn: None, base_records: 0 });
        }
        let reason = if all_empty {
            format!("the checkpoint covers {} records but the log files are missing or empty", reference.size)
        } else {
            "no file starts at record 0 or with a merkle_prefix at or before the latest checkpoint".to_string()
        };
        let location = files.first().map(|f| format!("{}:1", f.path.display())).unwrap_or_else(|| latest_path.display().to_string());
        let broken = Break { location, file: None, line: None, reason };
        return Ok(ReadOutcome { chain: ChainState { next_index: 0, prev: None, tree: None }, broken: Some(broken), torn: None, base_records: 0 });
    };

    let mut root_at_reference = (chain.next_index == reference.size).then(|| chain.tree.as_ref().map(|t| t.root()));
    let mut torn = None;
    let mut base_records = 0;
    let last = files.len() - 1;
    // Where the last record read is (a changed record is named by its own line,
    // as `verify` names it), and the first line no checkpoint has vouched for yet.
    let mut previous_line: Option<(PathBuf, String, u64)> = None;
    let mut first_unverified: Option<(PathBuf, String, u64)> = None;
    let start_index = chain.next_index;
    let mut verified_up_to = start_index;
    for (i, f) in files.iter().enumerate().skip(start) {
        let file = File::open(&f.path).map_err(io_error(&f.path, "open"))?;
        let mut reader = LineReader::new(file);
        let name = LogPaths::file_name_of(&f.path);
        let mut records_in_file = 0u64;
        let fail_in = |path: &Path, name: &str, line: u64, reason: String, chain: ChainState| ReadOutcome {
            chain,
            broken: Some(Break { location: format!("{}:{line}", path.display()), file: Some(name.to_string()), line: Some(line), reason }),
            torn: None,
            base_records: 0,
        };
        let fail = |line: u64, reason: String, chain: ChainState| fail_in(&f.path, &name, line, reason, chain);
        loop {
            match reader.next_line().map_err(io_error(&f.path, "read"))? {
                Line::Complete { bytes, number, .. } => {
                    let record = match parse_record(bytes) {
                        Ok(r) => r,
                        Err(e) => return Ok(fail(number, e.to_string(), chain)),
                    };
                    if records_in_file == 0 && i > start && record.kind != KIND_ROTATED && record.kind != KIND_CONTINUED {
                        return Ok(fail(number, format!("a file after the first must start with {KIND_ROTATED} or {KIND_CONTINUED}, not {}", record.kind), chain));
                    }
                    if let Err(e) = chain.check(&record, Some(origin)) {
                        return Ok(match (&e, &previous_line) {
                            (LinkError::Prev, Some((path, name, line))) => {
                                fail_in(path, name, *line, altered_record(&f.path, number), chain)
                            }
                            _ => fail(number, e.to_string(), chain),
                        });
                    }
                    if let (Some(tree), Some(_)) = (&chain.tree, prefix_of(&record)) {
                        if record.fact_hashes("merkle_prefix").as_deref() != Some(tree.subtrees()) {
                            return Ok(fail(number, "merkle_prefix does not match the records before it".into(), chain));
                        }
                    }
                    if first_unverified.is_none() {
                        first_unverified = Some((f.path.clone(), name.clone(), number));
                    }
                    chain.advance(&record);
                    records_in_file += 1;
                    previous_line = Some((f.path.clone(), name.clone(), number));
                    if chain.next_index == reference.size {
                        root_at_reference = Some(chain.tree.as_ref().map(|t| t.root()));
                    }
                    if let (Some((root, note)), Some(tree)) = (sealed_roots.by_size.get(&chain.next_index), &chain.tree) {
                        if tree.root() != *root {
                            let (path, name, line) = first_unverified.clone().unwrap_or((f.path.clone(), name.clone(), number));
                            let reason = rewritten_records(verified_up_to, chain.next_index, note, verified_up_to > start_index);
                            return Ok(fail_in(&path, &name, line, reason, chain));
                        }
                        verified_up_to = chain.next_index;
                        first_unverified = None;
                    }
                }
                Line::TooLong { number, .. } => return Ok(fail(number, "line longer than any record".into(), chain)),
                Line::Torn { number, offset, len } => {
                    if i == last && f.seq.is_none() {
                        torn = Some((f.path.clone(), offset, len));
                        break;
                    }
                    return Ok(fail(number, "unterminated line before the end of the log".into(), chain));
                }
                Line::End => {
                    if records_in_file == 0 && i != last {
                        return Ok(fail(1, "empty file in the middle of the log".into(), chain));
                    }
                    break;
                }
            }
        }
        if f.seq.is_none() {
            base_records = records_in_file;
        }
    }

    let location = latest_path.display().to_string();
    let broken = if reference.size > chain.next_index {
        Some(format!("the checkpoint covers {} records but the log holds only {}: records were removed", reference.size, chain.next_index))
    } else {
        match root_at_reference {
            Some(Some(root)) if root == reference.root => None,
            Some(Some(_)) => Some(format!(
                "the records up to {} do not match the checkpoint's root hash: they were rewritten",
                reference.size
            )),
            _ if reference.size == 0 && reference.root == empty_root() => None,
            _ => Some("cannot compute the root at the checkpoint's size".to_string()),
        }
    };
    Ok(ReadOutcome {
        chain,
        broken: broken.map(|reason| Break { location, file: None, line: None, reason }),
        torn,
        base_records,
    })
}

/// Starts a new current file after a broken log: the broken files stay as
/// evidence (the current one renamed like a rotated file), the checkpoints
/// signed for the old tree are set aside, and the first record of the new file
/// (`log.continued`) links to the last record that verified.
fn continue_in_new_file(
    config: &AuditConfig,
    paths: &LogPaths,
    origin: &str,
    rotated_max: u64,
    chain: ChainState,
    broken: Break,
    mut report: OpenReport,
) -> Result<OpenedLog, AuditError> {
    if !config.start_new_on_broken_chain {
        return Err(AuditError::Broken { location: broken.location, reason: broken.reason });
    }
    let stamp = UnixMillis::now().0;
    for path in [paths.checkpoint(), paths.checkpoint_history()] {
        if path.exists() {
            let mut aside = path.clone().into_os_string();
            aside.push(format!(".superseded-{stamp}"));
            std::fs::rename(&path, &aside).map_err(io_error(&path, "set aside"))?;
        }
    }
    let base = paths.base();
    let mut rotated_max = rotated_max;
    if std::fs::metadata(base).map(|m| m.len() > 0).unwrap_or(false) {
        rotated_max += 1;
        let target = paths.rotated(rotated_max);
        if target.exists() {
            return Err(AuditError::Io {
                path: target,
                action: "rotate to",
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
            });
        }
        std::fs::rename(base, &target).map_err(io_error(base, "move aside"))?;
    }
    let (file, file_len) = open_for_append(base)?;
    sync_dir(&paths.dir()).map_err(io_error(paths.dir(), "fsync"))?;
    let tree = chain.tree.clone().unwrap_or_default();
    let next_index = chain.next_index;
    let last_hash = chain.prev.unwrap_or_else(|| origin_hash(origin));
    report.continued = Some(Continuation { location: broken.location.clone(), reason: broken.reason.clone(), index: next_index });
    report.warnings.push(format!("{}: audit chain broken ({}); continuing in a new file at index {next_index}", broken.location, broken.reason));
    let continued = LogEvent::Continued {
        file: broken.file,
        line: broken.line,
        reason: format!("{}: {}", broken.location, broken.reason),
        merkle_prefix: tree.subtrees().to_vec(),
    };
    Ok(OpenedLog {
        file,
        file_len,
        file_records: 0,
        rotated_max,
        origin: origin.to_string(),
        tree,
        next_index,
        last_hash,
        opening: vec![continued],
        needs_empty_checkpoint: false,
        report,
    })
}
