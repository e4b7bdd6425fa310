//! Following a log as it grows: the last records, new ones, across rotation,
//! and stopping when the chain breaks under the reader.

mod audit_support;

use std::time::{Duration, Instant};

use audit_support::*;
use mqseal_core::formats::audit::AuditLog;
use mqseal_core::formats::audit::follow::{FollowError, Follower};
use mqseal_core::formats::audit::record::Record;

fn all(_: &Record) -> bool {
    true
}

#[test]
fn shows_the_last_records_then_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 10);
    let (mut follower, last) = Follower::open(&path, 3, &all).unwrap();
    let indices: Vec<u64> = last.iter().map(|r| r.record.index).collect();
    assert_eq!(indices, [9, 10, 11]);
    assert_eq!(last[2].line, 12);
    assert!(follower.poll().unwrap().is_empty());

    let (log, _) = AuditLog::open(config(dir.path()), key()).unwrap();
    log.append(publish(77)).unwrap();
    log.sync().unwrap();
    let new = follower.poll().unwrap();
    assert_eq!(new.iter().map(|r| r.record.kind.as_str()).collect::<Vec<_>>(), ["log.opened", "publish.accepted"]);
    assert_eq!(new[1].record.fact_u64("seq"), Some(77));
    log.shutdown();
}

#[test]
fn filters_choose_the_last_n_matching_records() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 20);
    let (_f, last) = Follower::open(&path, 2, &|r: &Record| r.kind == "publish.denied").unwrap();
    assert_eq!(last.iter().map(|r| r.record.index).collect::<Vec<_>>(), [15, 20]);
    let (_f, none) = Follower::open(&path, 0, &all).unwrap();
    assert!(none.is_empty());
}

#[test]
fn follows_rotation_and_reads_back_into_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.rotate_bytes = 3000;
    let path = c.path.clone();
    write_log(c.clone(), 5);
    let (mut follower, _) = Follower::open(&path, 1, &all).unwrap();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    let mut seen = Vec::new();
    for i in 0..60 {
        log.append(publish(i)).unwrap();
        if i % 7 == 0 {
            log.sync().unwrap();
            seen.extend(follower.poll().unwrap());
        }
    }
    log.shutdown();
    seen.extend(follower.poll().unwrap());
    assert!(dir.path().join("audit.jsonl.3").exists(), "rotated several times");
    // Every record after the starting one, in order, none missing, none twice.
    let indices: Vec<u64> = seen.iter().map(|r| r.record.index).collect();
    let first = indices[0];
    assert_eq!(indices, (first..first + indices.len() as u64).collect::<Vec<_>>());
    assert_eq!(seen.last().unwrap().record.kind, "log.closed");
    assert!(seen.iter().any(|r| r.record.kind == "log.rotated"));

    // Asking for more records than the current file holds reads back into rotated files.
    let (_f, last) = Follower::open(&path, 40, &all).unwrap();
    assert_eq!(last.len(), 40);
    assert!(last.iter().any(|r| r.path != path));
}

#[test]
fn stops_when_the_chain_breaks_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 3);
    let (mut follower, _) = Follower::open(&path, 1, &all).unwrap();
    // Append a line that does not continue the chain.
    let mut l = lines(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(l.remove(1).as_bytes());
    bytes.push(b'\n');
    std::fs::write(&path, bytes).unwrap();
    match follower.poll() {
        Err(FollowError::Broken { line, reason, .. }) => {
            assert_eq!(line, 6);
            assert!(reason.contains("chain broken"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stops_when_the_file_shrinks_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 3);
    let (mut follower, _) = Follower::open(&path, 1, &all).unwrap();
    let l = lines(&path);
    write_lines(&path, &l[..2]);
    assert!(matches!(follower.poll(), Err(FollowError::Broken { reason, .. }) if reason.contains("truncated")));
}

#[test]
fn a_partial_line_waits_until_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 1);
    let (mut follower, _) = Follower::open(&path, 1, &all).unwrap();
    let full = std::fs::read(&path).unwrap();
    let (log, _) = AuditLog::open(config(dir.path()), key()).unwrap();
    log.shutdown();
    let grown = std::fs::read(&path).unwrap();
    let first_new_line_end = full.len() + grown[full.len()..].iter().position(|&b| b == b'\n').unwrap() + 1;
    // Only half of the next line so far.
    std::fs::write(&path, &grown[..first_new_line_end - 10]).unwrap();
    assert!(follower.poll().unwrap().is_empty());
    std::fs::write(&path, &grown).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(follower.poll().unwrap());
    }
    assert_eq!(got.iter().map(|r| r.record.kind.as_str()).collect::<Vec<_>>(), ["log.opened", "log.closed"]);
}
