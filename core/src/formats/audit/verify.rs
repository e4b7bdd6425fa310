//! Offline verification of a whole log: every record, the chain across files,
//! every checkpoint beside the log (root and, with keys, signature), and
//! checkpoints kept elsewhere (truncation and rewrite detection).
//!
//! What counts as an old checkpoint put back ("replayed"):
//! - the latest checkpoint covers fewer records than one in the history;
//! - the history goes backwards;
//! - the latest covers fewer records than an external checkpoint;
//! - more records are unsealed than the writer ever leaves unsealed (the bound
//!   each `log.opened` record states);
//! - the log ends with `log.closed` (a clean shutdown, always followed by a final
//!   checkpoint) that no checkpoint covers.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::chain::{ChainState, Line, LineReader};
use super::checkpoint::{read_checkpoint_file, CheckpointAt, CheckpointFileError};
use super::event::{KIND_CLOSED, KIND_CONTINUED, KIND_OPENED, KIND_ROTATED};
use super::files::{LogFile, LogPaths};
use super::hashing::Hash;
use super::open::prefix_of;
use super::record::{parse_record, Record};

/// What to check besides the log itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Keys whose signature a checkpoint must carry. Empty: signatures unchecked.
    pub keys: Vec<VerifyingKey>,
    /// Checkpoint files kept elsewhere (each one or more notes).
    pub external: Vec<PathBuf>,
    /// Accept a log whose earliest files are gone (its first file starts with a
    /// `merkle_prefix`); checkpoints older than the first record present are skipped.
    pub allow_partial: bool,
}

/// A sound log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub origin: String,
    pub files: Vec<PathBuf>,
    /// Index of the first record present (0 unless partial).
    pub first_index: u64,
    /// Records in the log (the index of the next record).
    pub records: u64,
    /// Records covered by the latest checkpoint.
    pub sealed: u64,
    /// Hash of the last record.
    pub head: Option<Hash>,
    /// Checkpoints whose root was checked against the log.
    pub checkpoints_checked: usize,
    /// Checkpoints older than the first record present (partial logs only).
    pub checkpoints_skipped: usize,
    /// Key names whose signatures verified; empty when no keys were given.
    pub signers: Vec<String>,
    pub external_checked: usize,
}

impl VerifyReport {
    pub fn unsealed(&self) -> u64 {
        self.records - self.sealed
    }
}

/// The first thing wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    pub file: Option<PathBuf>,
    pub line: Option<u64>,
    pub reason: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {}", file.display(), self.reason),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

fn fail_at(file: &Path, line: u64, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure { file: Some(file.to_path_buf()), line: Some(line), reason: reason.into() }
}

/// Verifies the log whose current file is `log` (rotated files beside it are found).
pub fn verify_path(log: &Path, options: &VerifyOptions) -> Result<VerifyReport, VerifyFailure> {
    let paths = LogPaths::new(log);
    // A live log may gain a checkpoint while it is read; then read it again.
    let mut attempt = 0;
    loop {
        let before = std::fs::read(paths.checkpoint()).ok();
        let files = paths.discover().map_err(|e| VerifyFailure {
            file: Some(paths.dir()),
            line: None,
            reason: format!("cannot list the directory: {e}"),
        })?;
        if files.is_empty() {
            return Err(VerifyFailure { file: Some(log.to_path_buf()), line: None, reason: "no such log (no file and no rotated files)".into() });
        }
        let result = verify_files(&files, &paths, options);
        let after = std::fs::read(paths.checkpoint()).ok();
        attempt += 1;
        if result.is_ok() || before == after || attempt == 3 {
            return result;
        }
    }
}

/// Verifies the given files, in order, as one log, with the checkpoints beside `paths`.
pub fn verify_files(files: &[LogFile], paths: &LogPaths, options: &VerifyOptions) -> Result<VerifyReport, VerifyFailure> {
    let checkpoints = load_checkpoints(paths, options)?;
    let mut walk = Walk::new(&checkpoints, options.allow_partial);
    walk.run(files)?;
    walk.finish(files, &checkpoints)
}

/// Every checkpoint to check, by where it came from.
struct Checkpoints {
    origin: String,
    latest: Located,
    /// Every checkpoint (latest, history, external) by tree size.
    by_size: BTreeMap<u64, Vec<Located>>,
    /// The largest checkpoint given with --checkpoint.
    newest_external: Option<Located>,
    signers: Vec<String>,
    external: usize,
}

#[derive(Debug, Clone)]
struct Located {
    path: PathBuf,
    line: u64,
    size: u64,
    root: Hash,
}

fn read_notes(path: &Path, required: &str) -> Result<Vec<CheckpointAt>, VerifyFailure> {
    match read_checkpoint_file(path) {
        Ok(Some(notes)) if !notes.is_empty() => Ok(notes),
        Ok(_) => Err(VerifyFailure { file: Some(path.to_path_buf()), line: None, reason: format!("missing or empty ({required})") }),
        Err(CheckpointFileError::Io { source, .. }) => {
            Err(VerifyFailure { file: Some(path.to_path_buf()), line: None, reason: format!("cannot read: {source}") })
        }
        Err(CheckpointFileError::Bad { line, error, .. }) => Err(fail_at(path, line, error.to_string())),
    }
}

fn load_checkpoints(paths: &LogPaths, options: &VerifyOptions) -> Result<Checkpoints, VerifyFailure> {
    let latest_path = paths.checkpoint();
    let history_path = paths.checkpoint_history();
    let latest_notes = read_notes(&latest_path, "the writer keeps the latest signed checkpoint here")?;
    if latest_notes.len() != 1 {
        return Err(fail_at(&latest_path, 1, format!("holds {} checkpoints; expected one", latest_notes.len())));
    }
    let history = read_notes(&history_path, "the writer keeps every checkpoint it signed here")?;
    let mut external = Vec::new();
    for path in &options.external {
        external.push((path.clone(), read_notes(path, "given with --checkpoint")?));
    }

    let origin = latest_notes[0].note.checkpoint.origin.clone();
    let mut signers: Vec<String> = Vec::new();
    let mut by_size: BTreeMap<u64, Vec<Located>> = BTreeMap::new();
    let mut check = |path: &Path, n: &CheckpointAt| -> Result<Located, VerifyFailure> {
        let cp = &n.note.checkpoint;
        if cp.origin != origin {
            return Err(fail_at(path, n.line, format!("checkpoint of origin {:?}, but the log's origin is {origin:?}", cp.origin)));
        }
        if !options.keys.is_empty() {
            let signer = n.note.verify(&options.keys).map_err(|e| fail_at(path, n.line, e.to_string()))?;
            if !signers.contains(&signer) {
                signers.push(signer);
            }
        }
        let located = Located { path: path.to_path_buf(), line: n.line, size: cp.size, root: cp.root };
        let same_size = by_size.entry(cp.size).or_default();
        if let Some(other) = same_size.first() {
            if other.root != cp.root {
                return Err(fail_at(
                    path,
                    n.line,
                    format!(
                        "two different trees of size {} were signed (this one and {}:{}): the log was forked or rewritten",
                        cp.size,
                        other.path.display(),
                        other.line
                    ),
                ));
            }
        }
        same_size.push(located.clone());
        Ok(located)
    };

    let latest = check(&latest_path, &latest_notes[0])?;
    let mut history_max: Option<Located> = None;
    for n in &history {
        let located = check(&history_path, n)?;
        if let Some(prev) = &history_max {
            if located.size < prev.size {
                return Err(fail_at(
                    &history_path,
                    n.line,
                    format!("checkpoint history goes back from {} to {} records", prev.size, located.size),
                ));
            }
        }
        history_max = Some(located);
    }
    if let Some(h) = &history_max {
        if h.size > latest.size {
            return Err(fail_at(
                &latest_path,
                latest.line,
                format!(
                    "old checkpoint replayed: it covers {} records, but {}:{} already covered {}",
                    latest.size,
                    history_path.display(),
                    h.line,
                    h.size
                ),
            ));
        }
    }
    let mut newest_external: Option<Located> = None;
    for (path, notes) in &external {
        for n in notes {
            let located = check(path, n)?;
            let newer = match &newest_external {
                Some(e) => located.size > e.size,
                None => true,
            };
            if newer {
                newest_external = Some(located);
            }
        }
    }
    Ok(Checkpoints { origin, latest, by_size, newest_external, signers, external: external.iter().map(|(_, n)| n.len()).sum() })
}

/// The walk over the records.
struct Walk<'a> {
    checkpoints: &'a Checkpoints,
    allow_partial: bool,
    chain: ChainState,
    first_index: u64,
    checked: usize,
    /// The last tree size whose root matched a checkpoint, and where the record
    /// after it is (the first one a later mismatch can blame).
    verified_up_to: u64,
    first_unverified: Option<(PathBuf, u64)>,
    /// `max_unsealed` of every `log.opened`, by index.
    seal_bounds: Vec<(u64, u64)>,
    /// Where each record index was read, for the records a failure must name.
    last_record: Option<(PathBuf, u64, Record)>,
    first_unsealed_at: Option<(PathBuf, u64)>,
    /// The first `log.continued` seen: the writer found the log broken.
    continued_at: Option<(PathBuf, u64, String)>,
    /// End of the log: the last file and its line count.
    end: Option<(PathBuf, u64)>,
}

impl<'a> Walk<'a> {
    fn new(checkpoints: &'a Checkpoints, allow_partial: bool) -> Self {
        Walk {
            checkpoints,
            allow_partial,
            chain: ChainState::genesis(&checkpoints.origin),
            first_index: 0,
            checked: 0,
            verified_up_to: 0,
            first_unverified: None,
            seal_bounds: Vec::new(),
            last_record: None,
            first_unsealed_at: None,
            continued_at: None,
            end: None,
        }
    }

    fn run(&mut self, files: &[LogFile]) -> Result<(), VerifyFailure> {
        let last = files.len() - 1;
        // The empty tree, checked against any checkpoint of size 0.
        self.check_roots()?;
        let mut i = 0;
        let mut pending_break: Option<VerifyFailure> = None;
        while i < files.len() {
            let file = &files[i];
            let path = &file.path;
            let reader = File::open(path).map_err(|e| VerifyFailure { file: Some(path.clone()), line: None, reason: format!("cannot open: {e}") })?;
            let mut reader = LineReader::new(reader);
            let mut records_in_file = 0u64;
            let mut jumped = false;
            loop {
                let line = reader.next_line().map_err(|e| VerifyFailure { file: Some(path.clone()), line: None, reason: format!("cannot read: {e}") })?;
                let result = match line {
                    Line::Complete { bytes, number, .. } => {
                        let parsed = parse_record(bytes).map_err(|e| fail_at(path, number, e.to_string()));
                        parsed.and_then(|record| self.accept(path, number, i, records_in_file, record))
                    }
                    Line::TooLong { number, len, .. } => Err(fail_at(path, number, format!("line of {len} bytes is longer than any record"))),
                    Line::Torn { number, .. } => Err(fail_at(
                        path,
                        number,
                        if i == last {
                            "last line is incomplete: the writer crashed while writing it (restarting the broker cuts it off \
                             and records the recovery) or is writing it right now"
                        } else {
                            "unterminated line before the end of the log"
                        },
                    )),
                    Line::End => {
                        if records_in_file == 0 && i != last {
                            Err(fail_at(path, 1, "empty file in the middle of the log"))
                        } else {
                            self.end = Some((path.clone(), reader.lines_read()));
                            break;
                        }
                    }
                };
                match result {
                    Ok(()) => records_in_file += 1,
                    Err(failure) => {
                        // A break the writer found and recorded: a later file starts
                        // with log.continued linked to the last record that verified.
                        match self.find_continuation(files, i) {
                            Some(j) if pending_break.is_none() => {
                                pending_break = Some(failure);
                                i = j;
                                jumped = true;
                                break;
                            }
                            _ => return Err(pending_break.unwrap_or(failure)),
                        }
                    }
                }
            }
            if !jumped {
                i += 1;
            }
        }
        if let Some(failure) = pending_break {
            let note = self
                .continued_at
                .as_ref()
                .map(|(p, l, _)| format!(" (the writer recorded this break and continued at {}:{l}; the log after it verifies)", p.display()))
                .unwrap_or_default();
            return Err(VerifyFailure { reason: format!("{}{note}", failure.reason), ..failure });
        }
        Ok(())
    }

    /// The index of a later file that starts with the continuation of the chain as it stands.
    fn find_continuation(&self, files: &[LogFile], after: usize) -> Option<usize> {
        let prev = self.chain.prev?;
        for (j, f) in files.iter().enumerate().skip(after + 1) {
            let file = File::open(&f.path).ok()?;
            let mut reader = LineReader::new(file);
            if let Ok(Line::Complete { bytes, .. }) = reader.next_line() {
                if let Ok(r) = parse_record(bytes) {
                    if r.kind == KIND_CONTINUED && r.index == self.chain.next_index && r.prev == prev {
                        return Some(j);
                    }
                }
            }
        }
        None
    }

    fn accept(&mut self, path: &Path, line: u64, file_no: usize, records_in_file: u64, record: Record) -> Result<(), VerifyFailure> {
        let first_of_log = self.last_record.is_none();
        if first_of_log && record.index != 0 {
            let tree = prefix_of(&record);
            if !self.allow_partial || tree.is_none() {
                return Err(fail_at(
                    path,
                    line,
                    format!(
                        "the log starts at index {}, not 0: its earlier files are missing{}",
                        record.index,
                        if tree.is_some() { " (verify what remains with --partial)" } else { "" }
                    ),
                ));
            }
            self.chain = ChainState { next_index: record.index, prev: None, tree };
            self.first_index = record.index;
            self.verified_up_to = record.index;
            self.check_roots()?;
        }
        if records_in_file == 0 && file_no > 0 && !first_of_log && record.kind != KIND_ROTATED && record.kind != KIND_CONTINUED {
            return Err(fail_at(
                path,
                line,
                format!("a file after the first must start with {KIND_ROTATED} or {KIND_CONTINUED}, not {}", record.kind),
            ));
        }
        if let Err(e) = self.chain.check(&record, Some(&self.checkpoints.origin)) {
            return Err(match (&e, &self.last_record) {
                // A changed record shows in the next one's prev: name the changed line.
                (super::chain::LinkError::Prev, Some((p, l, _))) => fail_at(p, *l, super::chain::altered_record(path, line)),
                (super::chain::LinkError::IndexBack { found, .. }, Some((p, l, r))) if r.index == *found => fail_at(
                    path,
                    line,
                    format!(
                        "{e}; {}:{l} has index {found} too: one of the two lines was inserted or duplicated",
                        p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                    ),
                ),
                _ => fail_at(path, line, e.to_string()),
            });
        }
        if prefix_of(&record).is_some() {
            if let Some(tree) = &self.chain.tree {
                if record.fact_hashes("merkle_prefix").as_deref() != Some(tree.subtrees()) {
                    return Err(fail_at(path, line, "merkle_prefix does not match the records before it"));
                }
            }
        }
        match record.kind.as_str() {
            KIND_OPENED => {
                if record.fact_str("origin") != Some(self.checkpoints.origin.as_str()) {
                    return Err(fail_at(path, line, format!("log.opened names another origin than the log's {:?}", self.checkpoints.origin)));
                }
                if let Some(bound) = record.fact_u64("max_unsealed") {
                    self.seal_bounds.push((record.index, bound));
                }
            }
            KIND_CONTINUED if self.continued_at.is_none() => {
                let reason = record.fact_str("reason").unwrap_or("no reason given").to_string();
                self.continued_at = Some((path.to_path_buf(), line, reason));
            }
            _ => {}
        }
        if self.first_unverified.is_none() {
            self.first_unverified = Some((path.to_path_buf(), line));
        }
        if record.index == self.checkpoints.latest.size {
            self.first_unsealed_at = Some((path.to_path_buf(), line));
        }
        self.chain.advance(&record);
        self.last_record = Some((path.to_path_buf(), line, record));
        self.check_roots()
    }

    /// Compares the root with every checkpoint of the current size.
    fn check_roots(&mut self) -> Result<(), VerifyFailure> {
        let size = self.chain.next_index;
        let Some(expected) = self.checkpoints.by_size.get(&size) else { return Ok(()) };
        let Some(tree) = &self.chain.tree else { return Ok(()) };
        let root = tree.root();
        for cp in expected {
            if cp.root != root {
                let (file, line) = self.first_unverified.clone().unwrap_or_else(|| (cp.path.clone(), cp.line));
                let note = format!("{}:{}", cp.path.display(), cp.line);
                let reason = super::chain::rewritten_records(self.verified_up_to, size, &note, self.verified_up_to > self.first_index);
                return Err(fail_at(&file, line, reason));
            }
            self.checked += 1;
        }
        self.verified_up_to = size;
        self.first_unverified = None;
        Ok(())
    }

    fn finish(self, files: &[LogFile], checkpoints: &Checkpoints) -> Result<VerifyReport, VerifyFailure> {
        let records = self.chain.next_index;
        let (end_path, end_lines) = self.end.clone().unwrap_or_else(|| (files[files.len() - 1].path.clone(), 0));
        let mut skipped = 0;
        for (size, list) in &checkpoints.by_size {
            if *size < self.first_index || (*size == self.first_index && self.first_index > 0 && self.last_record.is_none()) {
                skipped += list.len();
                continue;
            }
            if *size > records {
                let cp = &list[0];
                return Err(fail_at(
                    &end_path,
                    end_lines + 1,
                    format!(
                        "the log ends here with {records} records, but the checkpoint at {}:{} covers {size}: records were removed (truncated)",
                        cp.path.display(),
                        cp.line
                    ),
                ));
            }
        }
        if let Some(e) = &checkpoints.newest_external {
            if e.size > checkpoints.latest.size {
                return Err(fail_at(
                    &checkpoints.latest.path,
                    checkpoints.latest.line,
                    format!(
                        "old checkpoint replayed: it covers {} records, but {}:{} already covered {}",
                        checkpoints.latest.size,
                        e.path.display(),
                        e.line,
                        e.size
                    ),
                ));
            }
        }
        if records == 0 && checkpoints.latest.size == 0 && checkpoints.latest.root != super::merkle::empty_root() {
            return Err(fail_at(&checkpoints.latest.path, checkpoints.latest.line, "size 0 with a root other than the empty tree's"));
        }
        let sealed = checkpoints.latest.size;
        let unsealed = records - sealed;
        if unsealed > 0 {
            let bound = self
                .seal_bounds
                .iter()
                .rev()
                .find(|(i, _)| *i < sealed)
                .into_iter()
                .chain(self.seal_bounds.iter().filter(|(i, _)| *i >= sealed))
                .map(|(_, b)| *b)
                .max();
            let (file, line) = self.first_unsealed_at.clone().unwrap_or((end_path.clone(), end_lines));
            if let Some(bound) = bound {
                if unsealed > bound {
                    return Err(fail_at(
                        &file,
                        line,
                        format!(
                            "{unsealed} records from here on are not sealed, but the writer never leaves more than {bound} \
                             unsealed: the checkpoint beside the log ({} records) is older than it should be (an old checkpoint put back?)",
                            sealed
                        ),
                    ));
                }
            }
            if let Some((p, l, r)) = &self.last_record {
                if r.kind == KIND_CLOSED {
                    return Err(fail_at(
                        p,
                        *l,
                        format!(
                            "the log ends with a clean shutdown ({KIND_CLOSED}) that no checkpoint covers (the latest covers {sealed} \
                             records of {records}): the final checkpoint was replaced by an older one"
                        ),
                    ));
                }
            }
        }
        if let Some((p, l, reason)) = &self.continued_at {
            return Err(fail_at(p, *l, format!("the writer found this log broken and continued in a new file here: {reason}")));
        }
        Ok(VerifyReport {
            origin: checkpoints.origin.clone(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            first_index: self.first_index,
            records,
            sealed,
            head: self.chain.prev,
            checkpoints_checked: self.checked,
            checkpoints_skipped: skipped,
            signers: checkpoints.signers.clone(),
            external_checked: checkpoints.external,
        })
    }
}
