//! The broker's replay window: for every sender, the highest sequence number it
//! has accepted. A sealed message is new only if its sequence number is above
//! that mark, so a replayed envelope is refused on any topic, at any time.
//!
//! Surviving a restart: the audit log is the ledger of accepted publishes (every
//! `publish.accepted` record names its sender and sequence number), so the window
//! is rebuilt from it. To keep start-up short, a clean shutdown writes a snapshot
//! (`replay.json` in the state directory) saying "every record up to index I is
//! reflected here"; start-up loads it and rolls forward over the records after I.
//! After a crash the snapshot is older, and more records are rolled forward.
//!
//! What a crash can lose: the audit records of the last accepted publishes that
//! were still queued in memory or not yet fsynced. The engine covers that gap:
//! after a start without the clean-shutdown marker, it refuses envelopes sealed
//! before the restart from each sender until that sender has a newer message
//! accepted (`sealed-before-crash`; see engine::CLEAN_SHUTDOWN_MARKER). This needs
//! device clocks that are roughly right (NTP); a device whose clock lags is
//! refused until its clock passes the restart time.

// Seeded foldhash: looked up twice per protected message; the engine inserts
// only senders it has matched to a device of the policy.
use foldhash::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::files::LogPaths;
use crate::audit::record::parse_record;

/// The snapshot's file name in the state directory.
pub const SNAPSHOT_FILE: &str = "replay.json";
const SNAPSHOT_FORMAT: &str = "mqseal-replay-v1";

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The highest sequence number already accepted from that sender.
    pub last_accepted: u64,
}

#[derive(Default)]
pub struct ReplayWindow {
    high_water: HashMap<Box<str>, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    format: String,
    /// Every audit record with an index up to this one is reflected.
    audit_index: Option<u64>,
    high_water: std::collections::BTreeMap<String, u64>,
}

/// How the window was rebuilt at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub from_snapshot: bool,
    pub senders: usize,
    pub records_rolled_forward: u64,
}

impl ReplayWindow {
    /// Is `seq` new for `sender`? Does not record it: call [`Self::accept`] only
    /// once every other check (the signature above all) has passed, so that a
    /// forged envelope cannot burn a sender's sequence numbers.
    pub fn check(&self, sender: &str, seq: u64) -> Result<(), Replayed> {
        match self.high_water.get(sender) {
            Some(&last) if seq <= last => Err(Replayed { last_accepted: last }),
            _ => Ok(()),
        }
    }

    /// Records `seq` as accepted from `sender`.
    pub fn accept(&mut self, sender: &str, seq: u64) {
        match self.high_water.get_mut(sender) {
            Some(last) => *last = (*last).max(seq),
            None => {
                self.high_water.insert(sender.into(), seq);
            }
        }
    }

    pub fn senders(&self) -> usize {
        self.high_water.len()
    }

    fn snapshot_path(state_dir: &Path) -> PathBuf {
        state_dir.join(SNAPSHOT_FILE)
    }

    /// Rebuilds the window: the snapshot (if any), then every `publish.accepted`
    /// record after it in the audit log at `audit_log`.
    pub fn restore(state_dir: &Path, audit_log: &Path) -> Result<(ReplayWindow, RestoreReport), String> {
        let mut window = ReplayWindow::default();
        let mut report = RestoreReport::default();
        let snapshot_path = Self::snapshot_path(state_dir);
        let mut after_index: Option<u64> = None;
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snapshot: Snapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a replay snapshot: {e}", snapshot_path.display()))?;
                if snapshot.format != SNAPSHOT_FORMAT {
                    return Err(format!("{}: unknown format {:?}", snapshot_path.display(), snapshot.format));
                }
                for (sender, seq) in snapshot.high_water {
                    window.accept(&sender, seq);
                }
                after_index = snapshot.audit_index;
                report.from_snapshot = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", snapshot_path.display())),
        }
        let files = LogPaths::new(audit_log)
            .discover()
            .map_err(|e| format!("cannot list the audit log files of {}: {e}", audit_log.display()))?;
        for file in files {
            let text = match std::fs::read(&file.path) {
                Ok(text) => text,
                Err(e) => return Err(format!("cannot read {}: {e}", file.path.display())),
            };
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                // The audit writer verifies and repairs the log before we get here;
                // a line that still does not parse is a torn tail: stop there.
                let Ok(record) = parse_record(line) else { break };
                if after_index.is_some_and(|i| record.index <= i) || record.kind != "publish.accepted" {
                    continue;
                }
                if let (Some(sender), Some(seq)) = (record.fact_str("sender"), record.fact_u64("seq")) {
                    window.accept(sender, seq);
                    report.records_rolled_forward += 1;
                }
            }
        }
        report.senders = window.senders();
        Ok((window, report))
    }

    /// Writes the snapshot atomically (temp file, fsync, rename), stating that
    /// audit records up to `audit_index` are reflected.
    pub fn save(&self, state_dir: &Path, audit_index: Option<u64>) -> Result<(), String> {
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT.to_string(),
            audit_index,
            high_water: self.high_water.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| e.to_string())?;
        crate::keys::write_atomic(&Self::snapshot_path(state_dir), &bytes, 0o600, crate::keys::Overwrite::Allow)
            .map_err(|e| format!("cannot write the replay snapshot: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strictly_higher_sequence_numbers_are_new() {
        let mut w = ReplayWindow::default();
        assert!(w.check("a", 1).is_ok());
        w.accept("a", 5);
        assert_eq!(w.check("a", 5), Err(Replayed { last_accepted: 5 }));
        assert_eq!(w.check("a", 4), Err(Replayed { last_accepted: 5 }));
        assert!(w.check("a", 6).is_ok());
        assert!(w.check("b", 1).is_ok(), "senders are independent");
        w.accept("a", 3);
        assert_eq!(w.check("a", 5), Err(Replayed { last_accepted: 5 }), "never goes back");
    }

    #[test]
    fn snapshot_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReplayWindow::default();
        w.accept("a", 7);
        w.accept("b", 2);
        w.save(dir.path(), Some(41)).unwrap();
        let (back, report) = ReplayWindow::restore(dir.path(), &dir.path().join("audit.jsonl")).unwrap();
        assert!(report.from_snapshot);
        assert_eq!(back.check("a", 7), Err(Replayed { last_accepted: 7 }));
        assert_eq!(back.check("b", 2), Err(Replayed { last_accepted: 2 }));
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_not_an_empty_window() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"{not json").unwrap();
        let err = ReplayWindow::restore(dir.path(), &dir.path().join("audit.jsonl")).err().unwrap();
        assert!(err.contains("replay.json"), "{err}");
    }
}
