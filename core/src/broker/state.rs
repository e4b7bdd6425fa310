//! The broker's state files, checked against the audit log at start.
//!
//! Two facts must survive a restart: the replay window (per sender, the highest
//! sequence number accepted) and the highest policy version loaded (an older
//! policy may hold revoked rights). The signed audit log is the ledger of both:
//! every `publish.accepted` names its sender and sequence number, every
//! `policy.loaded` / `policy.pushed` its version (`serial`). The files in the
//! state directory only save reading the whole log, and are never trusted
//! beyond what the broker key vouches for:
//!
//! - `replay.json` (written at clean shutdown) is **signed with the broker key**
//!   and names the log (origin) and the record index up to which it reflects the
//!   log. Start-up loads it and reads only the records after that index (from
//!   the file holding them on: rotated files before it are not opened). A
//!   snapshot that is missing, unreadable, unsigned, signed by another key, or
//!   for another log is not used: the window is rebuilt from the whole log, and
//!   a `state.rebuilt` record says so. An older genuine snapshot put back is
//!   harmless: reading forward from its index finds every later acceptance.
//! - `policy-version` is a floor: the start uses the highest of it, the
//!   snapshot's and every version the log records; a file below what the log
//!   proves is rewritten, and recorded (`state.rebuilt`).
//!
//! The records read are checked as they are read (index, `prev`, and the root
//! at the latest checkpoint's size against that checkpoint), so an edit of an
//! older log file that opening did not read cannot weaken the rebuilt state.
//! A log whose first files are gone (its first file starts at a
//! `merkle_prefix`) cannot prove everything: [`Restored::complete`] is then
//! false, and the engine refuses envelopes sealed before the start from each
//! sender until it has a newer one accepted (as after a crash).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::broker::replay::ReplayWindow;
use crate::formats::audit::chain::{ChainState, Line, LineReader};
use crate::formats::audit::checkpoint::read_checkpoint_file;
use crate::formats::audit::event::KIND_CLOSED;
use crate::formats::audit::files::{LogFile, LogPaths};
use crate::formats::audit::open::prefix_of;
use crate::formats::audit::record::parse_record;

/// The snapshot's file name in the state directory.
pub const SNAPSHOT_FILE: &str = "replay.json";

/// In the state directory: the highest policy version this broker has loaded.
pub const POLICY_VERSION_FILE: &str = "policy-version";

/// The snapshot format; also the signature's domain (signed text =
/// `"mqseal-replay-v2\n"` followed by the canonical JSON of the snapshot
/// without `signature`).
const SNAPSHOT_FORMAT: &str = "mqseal-replay-v2";

/// Why a state file was not used as found: the `reason` of `state.rebuilt`
/// (docs/AUDIT.md §7). One place for these tokens.
pub mod reason {
    /// No `replay.json` beside a log that has records.
    pub const SNAPSHOT_MISSING: &str = "snapshot-missing";
    /// Not JSON, not the current format (an unsigned older one), or a bad field.
    pub const SNAPSHOT_INVALID: &str = "snapshot-invalid";
    /// The signature is not the broker key's over these bytes (edited, or another key).
    pub const SNAPSHOT_BAD_SIGNATURE: &str = "snapshot-bad-signature";
    /// Signed, but for a log with another origin, or an index the log does not reach.
    pub const SNAPSHOT_OTHER_LOG: &str = "snapshot-other-log";
    /// `policy-version` holds a lower version than the log records as loaded.
    pub const POLICY_VERSION_BELOW_LOG: &str = "policy-version-below-log";
    /// `policy-version` is not a number.
    pub const POLICY_VERSION_INVALID: &str = "policy-version-invalid";
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    /// The hash of the record at `audit_index` (64 lowercase hex): binds the
    /// snapshot to this chain, not just to an index.
    audit_head: String,
    /// Every audit record with an index up to this one is reflected.
    audit_index: u64,
    format: String,
    high_water: BTreeMap<String, u64>,
    /// The audit log's origin: a snapshot belongs to one log.
    origin: String,
    /// The policy version in force at shutdown.
    policy_version: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedSnapshot {
    #[serde(flatten)]
    body: SnapshotBody,
    /// Ed25519 by the broker key, standard base64.
    signature: String,
}

/// A snapshot whose signature verified.
struct Snapshot {
    body: SnapshotBody,
    head: crate::formats::audit::Hash,
}

fn signed_text(body: &SnapshotBody) -> Result<Vec<u8>, String> {
    let mut text = format!("{SNAPSHOT_FORMAT}\n").into_bytes();
    text.extend(crate::formats::canonical_json::to_vec(body).map_err(|e| e.to_string())?);
    Ok(text)
}

/// A state file that was not used as found, and why: the engine records each
/// as `state.rebuilt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distrusted {
    pub file: &'static str,
    pub reason: &'static str,
    pub detail: String,
}

/// What start-up rebuilt.
pub struct Restored {
    pub replay: ReplayWindow,
    /// The highest policy version the snapshot, the log and `policy-version` show.
    pub policy_floor: u64,
    /// A signed snapshot was used.
    pub from_snapshot: bool,
    /// The log was read from record 0 (or from a trusted snapshot), so the window
    /// holds every acceptance it records. False when its first files are gone
    /// and no snapshot could be used.
    pub complete: bool,
    /// The last run ended with `log.closed` and lost nothing (a clean shutdown,
    /// as the log tells it).
    pub closed_cleanly: bool,
    /// State files not used as found (each becomes a `state.rebuilt` record).
    pub distrusted: Vec<Distrusted>,
    pub records_read: u64,
    pub files_read: usize,
    pub elapsed: Duration,
}

/// Reads the state files and the audit log (already opened, and so repaired, by
/// the audit writer) and rebuilds the replay window and the policy floor.
/// `key` is the broker's public key and `origin` the log's. Errors (an unreadable
/// file, a log that does not verify) stop the start.
pub fn restore(state_dir: &Path, audit_log: &Path, key: &VerifyingKey, origin: &str) -> Result<Restored, String> {
    let started = Instant::now();
    let mut distrusted = Vec::new();
    let paths = LogPaths::new(audit_log);
    let files = paths.discover().map_err(|e| format!("cannot list the audit log files of {}: {e}", audit_log.display()))?;
    let starts = file_starts(&files)?;
    let log_has_records = starts.iter().any(|s| s.is_some());
    let reference = latest_checkpoint(&paths)?;

    let snapshot = match load_snapshot(&state_dir.join(SNAPSHOT_FILE), key, origin) {
        Ok(Some(snapshot)) => Some(snapshot),
        Ok(None) => {
            if log_has_records {
                distrusted.push(Distrusted {
                    file: SNAPSHOT_FILE,
                    reason: reason::SNAPSHOT_MISSING,
                    detail: format!("no {SNAPSHOT_FILE} in {}", state_dir.display()),
                });
            }
            None
        }
        Err(problem) => {
            distrusted.push(problem);
            None
        }
    };

    // With a snapshot: read on from the record it names, if that record is the
    // one it was written after (same index, same hash). Otherwise (the log was
    // replaced, or continued after a break and numbered anew) keep its values
    // (signed, so real acceptances: they can only raise the window) and read
    // the whole log.
    let mut outcome = None;
    if let Some(snapshot) = &snapshot {
        match scan_log(&files, &starts, reference, Scan::seeded(Some(snapshot), true)) {
            Ok(o) if o.scan.head_matched => outcome = Some(o),
            Ok(_) | Err(ScanError::NotThisChain) => distrusted.push(Distrusted {
                file: SNAPSHOT_FILE,
                reason: reason::SNAPSHOT_OTHER_LOG,
                detail: format!(
                    "{}: record {} of this log is not the one it was written after (the log was replaced, or continued \
                     after a break); the whole log is read",
                    state_dir.join(SNAPSHOT_FILE).display(),
                    snapshot.body.audit_index
                ),
            }),
            Err(ScanError::Broken(problem)) => return Err(problem),
        }
    }
    let from_snapshot = outcome.is_some();
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => match scan_log(&files, &starts, reference, Scan::seeded(snapshot.as_ref(), false)) {
            Ok(outcome) => outcome,
            Err(ScanError::Broken(problem)) => return Err(problem),
            Err(ScanError::NotThisChain) => unreachable!("only a scan from a snapshot's record compares it"),
        },
    };
    let ScanOutcome { scan, complete, files_read } = outcome;
    let Scan { replay, mut policy_floor, records_read, last_kinds, .. } = scan;

    let version_path = state_dir.join(POLICY_VERSION_FILE);
    match read_policy_version(&version_path) {
        Ok(Some(found)) if found < policy_floor => distrusted.push(Distrusted {
            file: POLICY_VERSION_FILE,
            reason: reason::POLICY_VERSION_BELOW_LOG,
            detail: format!("{} says {found}, but the audit log records version {policy_floor} as loaded", version_path.display()),
        }),
        Ok(Some(found)) => policy_floor = found,
        Ok(None) => {}
        Err(detail) => distrusted.push(Distrusted { file: POLICY_VERSION_FILE, reason: reason::POLICY_VERSION_INVALID, detail }),
    }

    Ok(Restored {
        replay,
        policy_floor,
        from_snapshot,
        complete,
        closed_cleanly: last_kinds.closed_cleanly(),
        distrusted,
        records_read,
        files_read,
        elapsed: started.elapsed(),
    })
}

/// What reading the log gave.
struct ScanOutcome {
    scan: Scan,
    /// Every record since the starting point was read (from record 0, or from
    /// the snapshot's record): none is missing and no break was skipped.
    complete: bool,
    files_read: usize,
}

enum ScanError {
    /// A record that does not verify (and no `log.continued` after it).
    Broken(String),
    /// The snapshot's record is not in this chain.
    NotThisChain,
}

/// Reads the log from the newest file that starts at or before the snapshot's
/// record (when `scan` is to compare it), otherwise from record 0. A log
/// without such a file (its earliest files are gone) is read from its first
/// file that can be started at, and is not complete. A break that the log
/// records (`log.continued`, the writer continued in a new file) is skipped:
/// the records after it in the broken file are not believed, and the result
/// is not complete.
fn scan_log(
    files: &[LogFile],
    starts: &[Option<FileStart>],
    reference: Option<(u64, crate::formats::audit::Hash)>,
    mut scan: Scan,
) -> Result<ScanOutcome, ScanError> {
    let wanted = scan.snapshot_record.map_or(0, |(index, _)| index);
    let usable = |s: &Option<FileStart>| s.as_ref().is_some_and(|s| s.chain.is_some());
    let start = starts
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| usable(s) && s.as_ref().is_some_and(|s| s.index <= wanted))
        .or_else(|| starts.iter().enumerate().find(|(_, s)| usable(s)))
        .map(|(i, _)| i);
    let Some(first) = start else {
        // Records, but no file to start at: the earliest files are gone and
        // none of the rest carries a usable prefix.
        let complete = !starts.iter().any(|s| s.is_some());
        return Ok(ScanOutcome { scan, complete, files_read: 0 });
    };
    let begin = starts[first].as_ref().expect("usable");
    let mut complete = begin.index <= wanted;
    let mut from = first;
    let mut chain = begin.chain.clone().expect("usable");
    while let Err((failed, error)) = scan.read(&files[from..], chain, reference) {
        let problem = match error {
            ScanError::NotThisChain => return Err(ScanError::NotThisChain),
            ScanError::Broken(problem) => problem,
        };
        let continued = starts
            .iter()
            .enumerate()
            .skip(from + failed + 1)
            .find(|(_, s)| s.as_ref().is_some_and(|s| s.continued && s.chain.is_some()));
        let Some((next, s)) = continued else { return Err(ScanError::Broken(problem)) };
        complete = false;
        from = next;
        chain = s.as_ref().and_then(|s| s.chain.clone()).expect("usable");
    }
    Ok(ScanOutcome { scan, complete, files_read: files.len() - first })
}

/// Writes the snapshot atomically (temp file, fsync, rename), signed with the
/// broker key, stating that audit records up to `audit_index` (whose record
/// hash is `audit_head`) are reflected.
pub fn save_snapshot(
    state_dir: &Path,
    replay: &ReplayWindow,
    (audit_index, audit_head): (u64, crate::formats::audit::Hash),
    origin: &str,
    policy_version: u64,
    key: &SigningKey,
) -> Result<(), String> {
    let body = SnapshotBody {
        audit_head: crate::formats::audit::hashing::to_hex(&audit_head),
        audit_index,
        format: SNAPSHOT_FORMAT.to_string(),
        high_water: replay.iter().map(|(k, v)| (k.to_string(), v)).collect(),
        origin: origin.to_string(),
        policy_version,
    };
    let signature = key.sign(&signed_text(&body)?);
    let signed = SignedSnapshot { body, signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()) };
    let bytes = crate::formats::canonical_json::to_vec(&signed).map_err(|e| e.to_string())?;
    crate::formats::keys::write_atomic(&state_dir.join(SNAPSHOT_FILE), &bytes, 0o600, crate::formats::keys::Overwrite::Allow)
        .map_err(|e| format!("cannot write the replay snapshot: {e}"))
}

/// The highest policy version loaded, from `policy-version` (`None`: no file).
pub fn read_policy_version(path: &Path) -> Result<Option<u64>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| format!("{}: not a policy version number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn write_policy_version(state_dir: &Path, version: u64) -> Result<(), String> {
    let path = state_dir.join(POLICY_VERSION_FILE);
    crate::formats::keys::write_atomic(&path, format!("{version}\n").as_bytes(), 0o644, crate::formats::keys::Overwrite::Allow)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `Ok(None)`: no snapshot. `Err`: one that must not be used, and why.
fn load_snapshot(path: &Path, key: &VerifyingKey, origin: &str) -> Result<Option<Snapshot>, Distrusted> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Distrusted { file: SNAPSHOT_FILE, reason: reason::SNAPSHOT_INVALID, detail: format!("cannot read {}: {e}", path.display()) })
        }
    };
    let invalid = |detail: String| Distrusted { file: SNAPSHOT_FILE, reason: reason::SNAPSHOT_INVALID, detail };
    let signed: SignedSnapshot =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{}: not a signed {SNAPSHOT_FORMAT} snapshot: {e}", path.display())))?;
    if signed.body.format != SNAPSHOT_FORMAT {
        return Err(invalid(format!("{}: format {:?}, expected {SNAPSHOT_FORMAT:?}", path.display(), signed.body.format)));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&signed.signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| invalid(format!("{}: signature is not 64 bytes of base64", path.display())))?;
    let text = signed_text(&signed.body).map_err(invalid)?;
    if key.verify_strict(&text, &signature).is_err() {
        return Err(Distrusted {
            file: SNAPSHOT_FILE,
            reason: reason::SNAPSHOT_BAD_SIGNATURE,
            detail: format!("{}: not signed by the broker key (edited, or written with another key)", path.display()),
        });
    }
    if signed.body.origin != origin {
        return Err(Distrusted {
            file: SNAPSHOT_FILE,
            reason: reason::SNAPSHOT_OTHER_LOG,
            detail: format!("{}: for the log {:?}, not {origin:?}", path.display(), signed.body.origin),
        });
    }
    let head = crate::formats::audit::hashing::hash_from_hex(&signed.body.audit_head)
        .ok_or_else(|| invalid(format!("{}: audit_head is not 64 hex digits", path.display())))?;
    Ok(Some(Snapshot { body: signed.body, head }))
}

/// How a file of the log begins: its first record's index, and the chain state
/// to read it from (`None` when it cannot be started at: no index 0, no prefix).
struct FileStart {
    index: u64,
    chain: Option<ChainState>,
    /// It begins with `log.continued`: the log was broken before it.
    continued: bool,
}

fn file_starts(files: &[LogFile]) -> Result<Vec<Option<FileStart>>, String> {
    let mut starts = Vec::with_capacity(files.len());
    for f in files {
        let file = std::fs::File::open(&f.path).map_err(|e| format!("cannot open {}: {e}", f.path.display()))?;
        let mut reader = LineReader::new(file);
        let start = match reader.next_line().map_err(|e| format!("cannot read {}: {e}", f.path.display()))? {
            Line::Complete { bytes, .. } => {
                let record = parse_record(bytes).map_err(|e| format!("{}:1: {e}", f.path.display()))?;
                let chain = if record.index == 0 {
                    // The origin is checked by the writer on open; here only continuity matters.
                    Some(ChainState { next_index: 0, prev: None, tree: Some(Default::default()) })
                } else {
                    prefix_of(&record).map(|tree| ChainState { next_index: record.index, prev: None, tree: Some(tree) })
                };
                Some(FileStart { index: record.index, chain, continued: record.kind == crate::formats::audit::event::KIND_CONTINUED })
            }
            _ => None,
        };
        starts.push(start);
    }
    Ok(starts)
}

/// The latest checkpoint beside the log: (size, root).
fn latest_checkpoint(paths: &LogPaths) -> Result<Option<(u64, crate::formats::audit::Hash)>, String> {
    let path = paths.checkpoint();
    match read_checkpoint_file(&path) {
        Ok(Some(notes)) => Ok(notes.last().map(|n| (n.note.checkpoint.size, n.note.checkpoint.root))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The kinds of the last records read, to tell how the previous run ended.
#[derive(Default)]
struct LastKinds {
    /// The previous run's last record was `log.closed` with nothing lost.
    closed_before_open: bool,
    last_closed_clean: bool,
}

impl LastKinds {
    fn note(&mut self, kind: &str, lost: Option<u64>) {
        if kind == crate::formats::audit::event::KIND_OPENED {
            self.closed_before_open = self.last_closed_clean;
        }
        self.last_closed_clean = kind == KIND_CLOSED && lost == Some(0);
    }

    fn closed_cleanly(&self) -> bool {
        self.closed_before_open
    }
}

struct Scan {
    /// The snapshot's record (index, hash): records up to it are reflected in
    /// the snapshot, if the record read at that index has that hash.
    snapshot_record: Option<(u64, crate::formats::audit::Hash)>,
    head_matched: bool,
    replay: ReplayWindow,
    policy_floor: u64,
    records_read: u64,
    last_kinds: LastKinds,
}

impl Scan {
    /// Starts from a snapshot's values (if any); `from_its_record`: skip the
    /// records it reflects (after checking its record is in this chain).
    fn seeded(snapshot: Option<&Snapshot>, from_its_record: bool) -> Scan {
        let mut replay = ReplayWindow::default();
        let mut policy_floor = 0;
        let mut snapshot_record = None;
        if let Some(snapshot) = snapshot {
            for (sender, seq) in &snapshot.body.high_water {
                replay.accept(sender, *seq);
            }
            policy_floor = snapshot.body.policy_version;
            if from_its_record {
                snapshot_record = Some((snapshot.body.audit_index, snapshot.head));
            }
        }
        Scan { snapshot_record, head_matched: false, replay, policy_floor, records_read: 0, last_kinds: LastKinds::default() }
    }

    /// Reads `files` from the start of the first, checking the chain and the
    /// root at the checkpoint's size, and applies the records after the
    /// snapshot's. On an error: which of `files` it is in.
    fn read(&mut self, files: &[LogFile], mut chain: ChainState, reference: Option<(u64, crate::formats::audit::Hash)>) -> Result<(), (usize, ScanError)> {
        for (i, f) in files.iter().enumerate() {
            self.read_file(f, &mut chain, reference).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    fn read_file(&mut self, f: &LogFile, chain: &mut ChainState, reference: Option<(u64, crate::formats::audit::Hash)>) -> Result<(), ScanError> {
        let broken = |line: u64, why: String| {
            ScanError::Broken(format!(
                "{}:{line}: the audit log does not verify while rebuilding the broker's state: {why}",
                f.path.display()
            ))
        };
        let file = std::fs::File::open(&f.path).map_err(|e| ScanError::Broken(format!("cannot open {}: {e}", f.path.display())))?;
        let mut reader = LineReader::new(file);
        loop {
            let next = reader.next_line().map_err(|e| ScanError::Broken(format!("cannot read {}: {e}", f.path.display())))?;
            let (bytes, number) = match next {
                Line::Complete { bytes, number, .. } => (bytes, number),
                // The writer cut a torn tail on open; anything still unterminated is being written.
                Line::Torn { .. } | Line::End => return Ok(()),
                Line::TooLong { number, .. } => return Err(broken(number, "line longer than any record".into())),
            };
            let record = parse_record(bytes).map_err(|e| broken(number, e.to_string()))?;
            chain.check(&record, None).map_err(|e| broken(number, e.to_string()))?;
            chain.advance(&record);
            self.records_read += 1;
            if let (Some((size, root)), Some(tree)) = (reference, &chain.tree) {
                if chain.next_index == size && tree.root() != root {
                    return Err(broken(number, format!("the records up to {size} do not match the latest checkpoint's root")));
                }
            }
            self.last_kinds.note(&record.kind, record.fact_u64("lost"));
            if let Some((index, head)) = self.snapshot_record {
                if record.index == index {
                    if record.hash != head {
                        return Err(ScanError::NotThisChain);
                    }
                    self.head_matched = true;
                }
                if record.index <= index {
                    continue;
                }
            }
            match record.kind.as_str() {
                "publish.accepted" => {
                    if let (Some(sender), Some(seq)) = (record.fact_str("sender"), record.fact_u64("seq")) {
                        self.replay.accept(sender, seq);
                    }
                }
                "policy.loaded" | "policy.pushed" => {
                    if let Some(serial) = record.fact_u64("serial") {
                        self.policy_floor = self.policy_floor.max(serial);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    #[test]
    fn a_signed_snapshot_round_trips_and_any_edit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReplayWindow::default();
        w.accept("a", 7);
        w.accept("b", 2);
        save_snapshot(dir.path(), &w, (41, [5; 32]), "o", 3, &key()).unwrap();
        let body = load_snapshot(&dir.path().join(SNAPSHOT_FILE), &key().verifying_key(), "o").unwrap().unwrap().body;
        assert_eq!((body.audit_index, body.policy_version, body.high_water.len()), (41, 3, 2));

        let text = std::fs::read_to_string(dir.path().join(SNAPSHOT_FILE)).unwrap();
        for (edited, reason) in [
            (text.replace("\"a\":7", "\"a\":6"), reason::SNAPSHOT_BAD_SIGNATURE),
            (text.replace("\"a\":7,", ""), reason::SNAPSHOT_BAD_SIGNATURE),
            (text.replace("\"policy_version\":3", "\"policy_version\":2"), reason::SNAPSHOT_BAD_SIGNATURE),
            (text.replace("\"audit_index\":41", "\"audit_index\":40"), reason::SNAPSHOT_BAD_SIGNATURE),
            ("{not json".to_string(), reason::SNAPSHOT_INVALID),
            (r#"{"audit_index":41,"format":"mqseal-replay-v1","high_water":{}}"#.to_string(), reason::SNAPSHOT_INVALID),
        ] {
            std::fs::write(dir.path().join(SNAPSHOT_FILE), &edited).unwrap();
            let problem = load_snapshot(&dir.path().join(SNAPSHOT_FILE), &key().verifying_key(), "o").err().expect(&edited);
            assert_eq!(problem.reason, reason, "{edited}: {problem:?}");
        }
        std::fs::write(dir.path().join(SNAPSHOT_FILE), &text).unwrap();
        let other = load_snapshot(&dir.path().join(SNAPSHOT_FILE), &key().verifying_key(), "other").err().unwrap();
        assert_eq!(other.reason, reason::SNAPSHOT_OTHER_LOG);
        let wrong_key = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let foreign = load_snapshot(&dir.path().join(SNAPSHOT_FILE), &wrong_key, "o").err().unwrap();
        assert_eq!(foreign.reason, reason::SNAPSHOT_BAD_SIGNATURE);
    }
}
