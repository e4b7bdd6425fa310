//! Start-up state against the audit log (crate::broker::state): a signed snapshot saves
//! reading the files before it; without one, or with an edited one, the whole
//! log is read; an older genuine snapshot put back is harmless; a log whose
//! earlier files are gone cannot prove everything; an edit in an old file that
//! a rebuild reads stops the start.

mod audit_support;

use std::path::Path;
use std::time::{Duration, Instant};

use audit_support::*;
use mqseal_core::broker::replay::ReplayWindow;
use mqseal_core::broker::state::{self, reason};
use mqseal_core::formats::audit::{AuditConfig, AuditLog};

/// Writes `n` publish.accepted records (senders dev-0..2, seq = i) through a
/// writer that rotates every `rotate_bytes`; returns the log's origin and last index.
fn write_publishes(config: AuditConfig, from: u64, n: u64) -> (String, (u64, mqseal_core::formats::audit::Hash)) {
    let (log, _) = AuditLog::open(config, key()).expect("open");
    let origin = log.origin().to_string();
    for i in from..from + n {
        log.append(publish(i)).expect("append");
    }
    let report = log.shutdown();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    (origin, (report.stats.last_index.unwrap(), report.stats.head.unwrap()))
}

fn rotating(dir: &Path, rotate_bytes: u64) -> AuditConfig {
    let mut c = config(dir);
    c.rotate_bytes = rotate_bytes;
    c
}

/// The log's files (rotated ones and the current one).
fn log_files(dir: &Path) -> usize {
    mqseal_core::formats::audit::files::LogPaths::new(dir.join("audit.jsonl")).discover().unwrap().len()
}

fn highest(window: &ReplayWindow, sender: &str) -> Option<u64> {
    window.iter().find(|(s, _)| *s == sender).map(|(_, seq)| seq)
}

/// The window as the engine would hold it after accepting seqs 0..n.
fn window_of(n: u64) -> ReplayWindow {
    let mut w = ReplayWindow::default();
    for i in 0..n {
        w.accept(&format!("dev-{}", i % 3), i);
    }
    w
}

#[test]
fn a_signed_snapshot_spares_the_earlier_files_and_its_absence_reads_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path();
    let (origin, last) = write_publishes(rotating(dir.path(), 4096), 0, 300);
    state::save_snapshot(state_dir, &window_of(300), last, &origin, 4, &key()).unwrap();
    // Later traffic, after the snapshot (as after a crash of the next run).
    write_publishes(rotating(dir.path(), 4096), 300, 30);
    let files = log_files(dir.path());
    assert!(files > 20, "{files} files");
    let log = dir.path().join("audit.jsonl");

    let restored = state::restore(state_dir, &log, &key().verifying_key(), &origin).unwrap();
    assert!(restored.from_snapshot && restored.complete && restored.distrusted.is_empty());
    assert_eq!(highest(&restored.replay, "dev-2"), Some(329));
    assert_eq!(restored.policy_floor, 4);
    assert!(restored.files_read <= 5, "{} of {files} files read with a snapshot", restored.files_read);
    assert!(restored.records_read < 100, "{} records read with a snapshot", restored.records_read);

    std::fs::remove_file(state_dir.join(state::SNAPSHOT_FILE)).unwrap();
    let rebuilt = state::restore(state_dir, &log, &key().verifying_key(), &origin).unwrap();
    assert!(!rebuilt.from_snapshot && rebuilt.complete);
    assert_eq!(rebuilt.distrusted[0].reason, reason::SNAPSHOT_MISSING);
    assert_eq!(rebuilt.files_read, files);
    assert!(rebuilt.records_read > 330);
    for sender in ["dev-0", "dev-1", "dev-2"] {
        assert_eq!(highest(&rebuilt.replay, sender), highest(&restored.replay, sender), "{sender}");
    }
}

#[test]
fn an_older_genuine_snapshot_put_back_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, first_last) = write_publishes(rotating(dir.path(), 4096), 0, 50);
    state::save_snapshot(dir.path(), &window_of(50), first_last, &origin, 1, &key()).unwrap();
    let old = std::fs::read(dir.path().join(state::SNAPSHOT_FILE)).unwrap();
    let (_, last) = write_publishes(rotating(dir.path(), 4096), 50, 200);
    state::save_snapshot(dir.path(), &window_of(250), last, &origin, 1, &key()).unwrap();
    std::fs::write(dir.path().join(state::SNAPSHOT_FILE), old).unwrap();
    let restored = state::restore(dir.path(), &dir.path().join("audit.jsonl"), &key().verifying_key(), &origin).unwrap();
    assert!(restored.from_snapshot && restored.distrusted.is_empty());
    assert_eq!(highest(&restored.replay, "dev-0"), Some(249));
}

#[test]
fn a_lowered_policy_version_file_is_noticed_and_the_log_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(config(dir.path()), key()).unwrap();
    let origin = log.origin().to_string();
    let loaded = |serial| mqseal_core::formats::audit::AuditEvent::PolicyLoaded { source: "reload".into(), policy_sha256: [1; 32], serial: Some(serial) };
    log.append(loaded(3)).unwrap();
    log.append(loaded(9)).unwrap();
    log.shutdown();
    std::fs::write(dir.path().join(state::POLICY_VERSION_FILE), "4\n").unwrap();
    let restored = state::restore(dir.path(), &dir.path().join("audit.jsonl"), &key().verifying_key(), &origin).unwrap();
    assert_eq!(restored.policy_floor, 9);
    assert!(restored.distrusted.iter().any(|d| d.reason == reason::POLICY_VERSION_BELOW_LOG), "{:?}", restored.distrusted);
    // A higher file is a floor too (a version written just before a crash).
    std::fs::write(dir.path().join(state::POLICY_VERSION_FILE), "12\n").unwrap();
    let restored = state::restore(dir.path(), &dir.path().join("audit.jsonl"), &key().verifying_key(), &origin).unwrap();
    assert_eq!(restored.policy_floor, 12);
}

#[test]
fn a_log_whose_first_files_are_gone_cannot_prove_everything_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = write_publishes(rotating(dir.path(), 4096), 0, 300);
    std::fs::remove_file(dir.path().join("audit.jsonl.1")).unwrap();
    let restored = state::restore(dir.path(), &dir.path().join("audit.jsonl"), &key().verifying_key(), &origin).unwrap();
    assert!(!restored.complete, "a rebuild from a partial log must not claim to be complete");
}

#[test]
fn a_rewritten_old_file_stops_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = write_publishes(config(dir.path()), 0, 30);
    let log = dir.path().join("audit.jsonl");
    // Lower dev-2's last seq and re-chain the file, as someone who can write it
    // (but cannot sign checkpoints) would; a rebuild must not believe it.
    let mut l = lines(&log);
    let at = l.iter().rposition(|line| line.contains("\"sender\":\"dev-2\"")).unwrap();
    l[at] = l[at].replace("\"seq\":29", "\"seq\":2");
    write_lines(&log, &l);
    rechain(&log, &origin);
    let problem = state::restore(dir.path(), &log, &key().verifying_key(), &origin).err().expect("must not rebuild from it");
    assert!(problem.contains("does not verify") && problem.contains("checkpoint"), "{problem}");
}

/// Start-up cost on a big log. `MQSEAL_STATE_RECORDS=1000000 cargo test -p mqseal-core --release --test state_restore -- --ignored --nocapture`
#[test]
#[ignore]
fn start_up_cost_on_a_big_log() {
    let n: u64 = std::env::var("MQSEAL_STATE_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let mut c = rotating(dir.path(), 64 * 1024 * 1024);
    c.durability = mqseal_core::formats::audit::config::Durability::Os;
    c.queue_full = mqseal_core::formats::audit::config::QueueFullMode::Block;
    c.batch_window = Duration::from_millis(100);
    let (origin, last) = write_publishes(c, 0, n);
    let bytes: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let files = log_files(dir.path());
    let log = dir.path().join("audit.jsonl");
    state::save_snapshot(dir.path(), &window_of(n), last, &origin, 1, &key()).unwrap();
    let t = Instant::now();
    let with = state::restore(dir.path(), &log, &key().verifying_key(), &origin).unwrap();
    let with_time = t.elapsed();
    std::fs::remove_file(dir.path().join(state::SNAPSHOT_FILE)).unwrap();
    let t = Instant::now();
    let without = state::restore(dir.path(), &log, &key().verifying_key(), &origin).unwrap();
    let without_time = t.elapsed();
    eprintln!(
        "{n} records, {} MB in {files} files: with a signed snapshot {with_time:?} ({} records, {} files read); rebuild {without_time:?} ({} records, {:.0} records/s)",
        bytes / 1_000_000,
        with.records_read,
        with.files_read,
        without.records_read,
        without.records_read as f64 / without_time.as_secs_f64()
    );
}

#[test]
fn a_log_continued_after_a_break_is_read_around_the_break() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = write_publishes(config(dir.path()), 0, 30);
    let log = dir.path().join("audit.jsonl");
    let mut l = lines(&log);
    l[10] = l[10].replace("\"client\":\"client-", "\"client\":\"edited-");
    write_lines(&log, &l);
    let mut c = config(dir.path());
    c.start_new_on_broken_chain = true;
    write_publishes(c, 30, 5);
    let restored = state::restore(dir.path(), &log, &key().verifying_key(), &origin).unwrap();
    assert!(!restored.complete, "records after the break in the broken file are not believed");
    assert_eq!(highest(&restored.replay, "dev-1"), Some(34), "the records after the continuation count");
}

#[test]
fn a_snapshot_of_another_chain_keeps_its_values_and_the_whole_log_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, last) = write_publishes(config(dir.path()), 0, 30);
    state::save_snapshot(dir.path(), &window_of(30), last, &origin, 2, &key()).unwrap();
    // The log is deleted and a new one started with the same key (same origin).
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap().to_string_lossy().starts_with("audit.jsonl") {
            std::fs::remove_file(f).unwrap();
        }
    }
    write_publishes(config(dir.path()), 100, 40);
    let restored = state::restore(dir.path(), &dir.path().join("audit.jsonl"), &key().verifying_key(), &origin).unwrap();
    assert!(!restored.from_snapshot);
    assert_eq!(restored.distrusted[0].reason, reason::SNAPSHOT_OTHER_LOG, "{:?}", restored.distrusted);
    assert_eq!(highest(&restored.replay, "dev-0"), Some(138), "the new log's records");
    assert_eq!(restored.policy_floor, 2, "the signed snapshot's floor is kept");
}
