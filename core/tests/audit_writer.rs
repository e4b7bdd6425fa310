//! The writer: what it writes, how it reopens, recovers, rotates, refuses, fails
//! and counts.

mod audit_support;

use std::time::{Duration, Instant};

use audit_support::*;
use mqseal_core::formats::audit::config::{Durability, QueueFullMode};
use mqseal_core::formats::audit::checkpoint::parse_checkpoints;
use mqseal_core::formats::audit::config::default_origin;
use mqseal_core::formats::audit::{AppendError, AuditConfig, AuditError, AuditEvent, AuditLog};

fn record(path: &std::path::Path, line: usize) -> serde_json::Value {
    serde_json::from_str(&lines(path)[line]).unwrap()
}

#[test]
fn a_new_log_is_created_sealed_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    let (log, report) = AuditLog::open(c, key()).unwrap();
    assert!(report.created);
    assert_eq!(report.origin, default_origin(&key().verifying_key()));
    assert!(report.origin.starts_with("mqseal/audit-"));
    assert_eq!(log.stats().last_checkpoint_size, 1, "sealed right after log.opened");
    for i in 0..100 {
        log.append(publish(i)).unwrap();
    }
    let done = log.shutdown();
    assert!(done.problems.is_empty());
    assert_eq!(done.stats.records_written, 102);
    assert_eq!(done.stats.last_index, Some(101));
    assert_eq!(done.stats.last_checkpoint_size, 102);
    assert_eq!(done.stats.records_refused, 0);

    let r0 = record(&path, 0);
    assert_eq!(r0["kind"], "log.opened");
    assert_eq!(r0["facts"]["origin"], report.origin.as_str());
    assert_eq!(r0["facts"]["checkpoint_every"], 1000);
    assert_eq!(r0["facts"]["max_unsealed"], 1000 + 4096);
    assert_eq!(
        r0["prev"].as_str().unwrap(),
        mqseal_core::formats::audit::hashing::to_hex(&mqseal_core::formats::audit::hashing::origin_hash(&report.origin))
    );
    let r1 = record(&path, 1);
    assert_eq!(r1["kind"], "publish.accepted");
    assert_eq!(r1["facts"]["seq"], 0);
    assert_eq!(r1["index"], 1);
    let report = verify_with_key(&path).unwrap();
    assert_eq!((report.records, report.sealed), (102, 102));
    // The history starts with the empty tree, sealed before the first record.
    let history = std::fs::read_to_string(history_path(&path)).unwrap();
    let notes = parse_checkpoints(&history).unwrap();
    assert_eq!(notes.first().unwrap().note.checkpoint.size, 0);
    assert_eq!(notes.last().unwrap().note.checkpoint.size, 102);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 3);
    let (log, report) = AuditLog::open(config(dir.path()), key()).unwrap();
    assert!(!report.created && report.recovered.is_none() && report.continued.is_none());
    assert_eq!(report.records_found, 5);
    log.append(publish(9)).unwrap();
    log.shutdown();
    assert_eq!(
        kinds(&path),
        ["log.opened", "publish.accepted", "publish.accepted", "publish.accepted", "log.closed", "log.opened", "publish.accepted", "log.closed"]
    );
    verify_with_key(&path).unwrap();
}

#[test]
fn the_origin_is_kept_and_a_different_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.origin = Some("broker.example.org/mqseal-audit".into());
    write_log(c.clone(), 1);
    // Not configured: taken from the log.
    let (log, report) = AuditLog::open(config(dir.path()), key()).unwrap();
    assert_eq!(report.origin, "broker.example.org/mqseal-audit");
    drop(log);
    c.origin = Some("other.example.org/log".into());
    match AuditLog::open(c.clone(), key()) {
        Err(e @ AuditError::OriginMismatch { .. }) => assert_eq!(e.reason(), "audit-origin-mismatch"),
        other => panic!("{other:?}"),
    }
    let fresh = tempfile::tempdir().unwrap();
    let mut c = config(fresh.path());
    c.origin = Some("has space".into());
    assert!(matches!(AuditLog::open(c, key()), Err(AuditError::InvalidOrigin { .. })));
}

#[test]
fn a_torn_last_line_is_cut_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 3);
    let good_len = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"facts\":{\"client\":\"cl");
    std::fs::write(&path, &bytes).unwrap();

    let (log, report) = AuditLog::open(config(dir.path()), key()).unwrap();
    let rec = report.recovered.clone().expect("recovered");
    assert_eq!((rec.cut_offset, rec.cut_bytes, rec.last_good_index), (good_len, 22, Some(4)));
    log.shutdown();
    let r = record(&path, 5);
    assert_eq!(r["kind"], "log.recovered");
    assert_eq!(r["facts"]["cut_bytes"], 22);
    assert_eq!(r["facts"]["cut_offset"], good_len);
    assert_eq!(r["facts"]["last_good_index"], 4);
    assert_eq!(r["facts"]["file"], "audit.jsonl");
    assert_eq!(record(&path, 6)["kind"], "log.opened");
    verify_with_key(&path).unwrap();
}

#[test]
fn zeros_left_by_a_power_cut_are_cut_like_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) = AuditLog::open(config(dir.path()), key()).unwrap();
    assert_eq!(report.recovered.unwrap().cut_bytes, 4096);
    log.shutdown();
    verify_with_key(&path).unwrap();
}

#[test]
fn a_chain_broken_before_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 5);
    let before = std::fs::read(&path).unwrap();
    let mut l = lines(&path);
    l[2] = l[2].replace("\"seq\":1", "\"seq\":7");
    write_lines(&path, &l);
    let err = AuditLog::open(config(dir.path()), key()).unwrap_err();
    assert_eq!(err.reason(), "audit-chain-broken");
    let text = err.to_string();
    assert!(text.contains("audit.jsonl:3: audit chain broken") && text.contains("prev"), "{text}");
    // Nothing was written.
    assert_eq!(std::fs::read(&path).unwrap().len(), before.len());
}

#[test]
fn a_rewritten_log_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 5);
    let origin = verify_with_key(&path).unwrap().origin;
    let mut l = lines(&path);
    l[2] = l[2].replace("\"seq\":1", "\"seq\":7");
    write_lines(&path, &l);
    rechain(&path, &origin);
    let text = AuditLog::open(config(dir.path()), key()).unwrap_err().to_string();
    assert!(text.contains("audit.jsonl.checkpoint") && text.contains("rewritten"), "{text}");
}

#[test]
fn a_truncated_log_or_a_deleted_checkpoint_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 5);
    let l = lines(&path);
    write_lines(&path, &l[..4]);
    let text = AuditLog::open(config(dir.path()), key()).unwrap_err().to_string();
    assert!(text.contains("removed"), "{text}");
    write_lines(&path, &l);
    AuditLog::open(config(dir.path()), key()).unwrap().0.shutdown();
    std::fs::remove_file(checkpoint_path(&path)).unwrap();
    let text = AuditLog::open(config(dir.path()), key()).unwrap_err().to_string();
    assert!(text.contains("missing"), "{text}");
    std::fs::remove_file(history_path(&path)).unwrap();
    let text = AuditLog::open(config(dir.path()), key()).unwrap_err().to_string();
    assert!(text.contains("no checkpoint"), "{text}");
}

#[test]
fn an_old_checkpoint_put_back_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 2);
    let old = std::fs::read(checkpoint_path(&path)).unwrap();
    write_log(config(dir.path()), 2);
    std::fs::write(checkpoint_path(&path), old).unwrap();
    let text = AuditLog::open(config(dir.path()), key()).unwrap_err().to_string();
    assert!(text.contains("old checkpoint was put back"), "{text}");
}

#[test]
fn the_new_file_option_continues_after_a_break_and_verify_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 5);
    let mut l = lines(&path);
    l[2] = l[2].replace("\"seq\":1", "\"seq\":7");
    write_lines(&path, &l);
    let mut c = config(dir.path());
    c.start_new_on_broken_chain = true;
    let (log, report) = AuditLog::open(c, key()).unwrap();
    let cont = report.continued.clone().expect("continued");
    // Named as verify names it: the altered line 3 (line 4's prev no longer
    // matches it). Lines 1..=3 chain up to there, so the new file continues at index 3.
    assert!(cont.location.ends_with("audit.jsonl:3"), "{cont:?}");
    assert_eq!(cont.index, 3);
    log.append(publish(50)).unwrap();
    log.shutdown();
    // The broken file is kept as evidence; the new one starts with log.continued.
    assert!(dir.path().join("audit.jsonl.1").exists());
    let first = record(&path, 0);
    assert_eq!(first["kind"], "log.continued");
    assert_eq!(first["index"], 3);
    assert_eq!(first["facts"]["file"], "audit.jsonl");
    assert_eq!(first["facts"]["line"], 3);
    // The writer reopens the continued log without complaint...
    let (log, report) = AuditLog::open(config(dir.path()), key()).unwrap();
    assert!(report.continued.is_none());
    log.shutdown();
    // ...but verification never calls a once-broken log sound.
    // (verify names the altered line 3; the writer named line 4, where it showed)
    let f = assert_fails_at(verify_with_key(&path), "audit.jsonl.1", Some(3), "altered");
    assert!(f.reason.contains("recorded this break"), "{f}");
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.rotate_bytes = 4000;
    let path = c.path.clone();
    write_log(c.clone(), 100);
    let files: Vec<_> = (1..).map(|n| dir.path().join(format!("audit.jsonl.{n}"))).take_while(|p| p.exists()).collect();
    assert!(files.len() >= 5, "{}", files.len());
    for f in files.iter().skip(1).chain([&path]) {
        let first = serde_json::from_str::<serde_json::Value>(&lines(f)[0]).unwrap();
        assert_eq!(first["kind"], "log.rotated", "{}", f.display());
    }
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!((4000..5000).contains(&len), "{} is {len} bytes", f.display());
    }
    let report = verify_with_key(&path).unwrap();
    assert_eq!(report.files.len(), files.len() + 1);
    assert_eq!(report.records, report.sealed);

    // Reopening reads only from the file the latest checkpoint needs: damage to an
    // old, sealed file does not stop the broker (verify still finds it).
    let mut l = lines(&files[0]);
    l[3] = l[3].replace("\"seq\":2", "\"seq\":3");
    write_lines(&files[0], &l);
    let (log, _) = AuditLog::open(c, key()).unwrap();
    log.append(publish(1000)).unwrap();
    log.shutdown();
    assert_fails_at(verify_with_key(&path), "audit.jsonl.1", Some(4), "altered");
}

#[test]
fn a_crash_between_rotation_rename_and_new_file_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 3);
    // As if the writer died right after renaming the current file.
    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
    let (log, _) = AuditLog::open(config(dir.path()), key()).unwrap();
    log.shutdown();
    assert_eq!(kinds(&path)[..2], ["log.rotated".to_string(), "log.opened".to_string()]);
    verify_with_key(&path).unwrap();
}

fn checkpoint_sizes(dir: &std::path::Path) -> Vec<u64> {
    parse_checkpoints(&std::fs::read_to_string(history_path(&dir.join("audit.jsonl"))).unwrap())
        .unwrap()
        .iter()
        .map(|n| n.note.checkpoint.size)
        .collect()
}

#[test]
fn a_checkpoint_every_n_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 10;
    // No interval checkpoint can interleave, however slow the machine.
    c.checkpoint_interval = Duration::from_secs(3600);
    let (log, _) = AuditLog::open(c, key()).unwrap();
    for i in 0..35 {
        log.append(publish(i)).unwrap();
        log.sync().unwrap();
    }
    assert_eq!(log.stats().last_checkpoint_size, 31, "{:?}", log.stats());
    assert_eq!(checkpoint_sizes(dir.path()), [0, 1, 11, 21, 31]);
    log.shutdown();
}

#[test]
fn a_checkpoint_at_least_every_interval_while_records_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 1_000_000;
    c.checkpoint_interval = Duration::from_millis(200);
    let (log, _) = AuditLog::open(c, key()).unwrap();
    log.append(publish(0)).unwrap();
    log.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.stats().last_checkpoint_size < 2 {
        assert!(Instant::now() < deadline, "no interval checkpoint: {:?}", log.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(checkpoint_sizes(dir.path()), [0, 1, 2]);
    log.shutdown();
}

#[test]
fn an_idle_writer_parks_after_sealing_and_the_next_append_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 5;
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    // Opened and sealed: nothing to do, so it parks.
    eventually("the fresh log's writer parks", || log.is_parked());
    assert_eq!(log.parks(), 1);
    for round in 0..3u64 {
        for i in 0..5 {
            log.append(publish(round * 10 + i)).unwrap();
        }
        assert!(!log.is_parked(), "an append wakes the writer");
        // Five records reach checkpoint_every: sealed, so it may park without ticks.
        eventually("the writer parks again", || log.is_parked());
        assert_eq!(log.stats().last_checkpoint_size, 1 + 5 * (round + 1), "{:?}", log.stats());
    }
    assert_eq!(log.parks(), 4);
    let done = log.shutdown();
    assert_eq!((done.stats.records_written, done.stats.records_refused, done.stats.records_lost), (17, 0, 0));
    assert!(done.problems.is_empty(), "{:?}", done.problems);
    let report = verify_with_key(&path).unwrap();
    assert_eq!((report.records, report.sealed), (17, 17));
}

#[test]
fn without_ticks_unsealed_records_keep_the_writer_until_the_interval_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_interval = Duration::from_millis(300);
    let (log, _) = AuditLog::open(c, key()).unwrap();
    eventually("the fresh log's writer parks", || log.is_parked());
    log.append(publish(1)).unwrap();
    log.sync().unwrap();
    // Nobody would wake a parked writer for the checkpoint: it must seal first.
    eventually("the writer parks again", || log.is_parked());
    assert_eq!(log.stats().last_checkpoint_size, 2, "parked with the record sealed: {:?}", log.stats());
    log.shutdown();
}

#[test]
fn with_ticks_a_parked_writer_is_woken_for_the_interval_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_interval = Duration::from_millis(400);
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    log.tick();
    eventually("the fresh log's writer parks", || log.is_parked());
    log.append(publish(1)).unwrap();
    // Parks with the record written and fsynced but not yet sealed…
    eventually("the writer parks with a checkpoint pending", || log.is_parked());
    assert_eq!(log.stats().last_checkpoint_size, 1, "{:?}", log.stats());
    assert_eq!(log.stats().records_written, 2);
    assert_eq!(lines(&path).len(), 2, "written before parking");
    // …and the broker's ticks wake it when the checkpoint falls due.
    eventually("a tick wakes the writer to seal", || {
        log.tick();
        log.stats().last_checkpoint_size == 2
    });
    eventually("the writer parks after sealing", || log.is_parked());
    let done = log.shutdown();
    assert!(done.problems.is_empty(), "{:?}", done.problems);
    let report = verify_with_key(&path).unwrap();
    assert_eq!((report.records, report.sealed), (3, 3));
}

#[test]
fn appends_racing_with_parking_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 7;
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    log.tick();
    let idle = mqseal_core::formats::audit::writer::IDLE_BEFORE_PARK;
    let mut appended = 0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    // Pauses scattered around the parking moment, so appends meet the writer
    // about to park, parking, parked and restarting.
    for burst in 0..40u64 {
        for i in 0..(burst % 5 + 1) {
            log.append(publish(burst * 100 + i)).unwrap();
            appended += 1;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let jitter = Duration::from_micros(seed % 40_000);
        std::thread::sleep(idle - Duration::from_millis(20) + jitter);
    }
    assert!(log.parks() > 1, "the writer never parked: {}", log.parks());
    let done = log.shutdown();
    assert_eq!(done.stats.records_written, appended + 2, "{:?}", done.stats);
    assert_eq!((done.stats.records_refused, done.stats.records_lost), (0, 0));
    let k = kinds(&path);
    assert_eq!(k.iter().filter(|k| *k == "publish.accepted").count() as u64, appended);
    verify_with_key(&path).unwrap();
}

#[test]
fn sync_makes_appended_records_visible() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.durability = Durability::Os;
    c.batch_window = Duration::from_secs(30);
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    log.append(AuditEvent::ClientKicked { client: "c9".into(), reason: "flood".into() }).unwrap();
    log.sync().unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"client\":\"c9\""));
    log.shutdown();
}

#[test]
fn refused_appends_are_counted_never_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.queue_capacity = 1;
    c.queue_full = QueueFullMode::Deny;
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    let mut accepted = 0u64;
    let mut refused = 0u64;
    for i in 0..20_000 {
        match log.append(publish(i)) {
            Ok(()) => accepted += 1,
            Err(AppendError::QueueFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let done = log.shutdown();
    assert_eq!(done.stats.records_refused, refused);
    // Every accepted event is in the log; every refused one is counted, also in log.closed.
    let k = kinds(&path);
    assert_eq!(k.iter().filter(|k| *k == "publish.accepted").count() as u64, accepted);
    let closed = record(&path, k.len() - 1);
    assert_eq!(closed["kind"], "log.closed");
    assert_eq!(closed["facts"]["refused"], refused);
    assert_eq!(closed["facts"]["lost"], 0);
    assert_eq!(AppendError::QueueFull.reason(), "audit-queue-full");
    verify_with_key(&path).unwrap();
}

#[test]
fn block_mode_waits_instead_of_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.queue_capacity = 1;
    c.queue_full = QueueFullMode::Block;
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    for i in 0..2000 {
        log.append(publish(i)).unwrap();
    }
    assert_eq!(log.shutdown().stats.records_refused, 0);
    assert_eq!(kinds(&path).len(), 2002);
}

#[test]
fn a_write_failure_is_sticky_reported_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.rotate_bytes = 1500;
    let (log, _) = AuditLog::open(c, key()).unwrap();
    // Rotation will find its target taken and fail.
    std::fs::create_dir(dir.path().join("audit.jsonl.1")).unwrap();
    let mut failed_at = None;
    for i in 0..200 {
        if let Err(e) = log.append(publish(i)) {
            assert_eq!(e, AppendError::WriterFailed);
            failed_at = Some(i);
            break;
        }
        let _ = log.sync();
    }
    assert!(failed_at.is_some(), "{:?}", log.stats());
    let stats = log.stats();
    assert!(stats.failed && stats.records_refused == 1, "{stats:?}");
    let problems = log.take_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("audit.jsonl.1") && problems[0].contains("no more records"), "{problems:?}");
    assert!(log.take_problems().is_empty());
    assert_eq!(log.sync(), Err(AppendError::WriterFailed));
    let done = log.shutdown();
    assert!(done.stats.records_lost >= 1, "{:?}", done.stats);
}

#[test]
fn config_from_plugin_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "x").unwrap();
        p.display().to_string()
    };
    let (p, a, k) = (file("policy.json"), file("authority.pub"), file("broker.pem"));
    let log = dir.path().join("a.jsonl");
    let l = log.display().to_string();
    let plugin = mqseal_core::broker::config::PluginConfig::from_options([
        ("policy", p.as_str()),
        ("authority", a.as_str()),
        ("broker_key", k.as_str()),
        ("audit_log", l.as_str()),
        ("checkpoint_every", "7"),
        ("audit_queue_full", "block"),
        ("audit_on_broken_chain", "new-file"),
        ("audit_durability", "os"),
    ])
    .unwrap();
    let c = AuditConfig::from(&plugin);
    assert_eq!(c.path, log);
    assert_eq!(c.checkpoint_every, 7);
    assert_eq!(c.queue_full, QueueFullMode::Block);
    assert_eq!(c.durability, Durability::Os);
    assert!(c.start_new_on_broken_chain);
    assert_eq!(c.batch_window, Duration::from_millis(100));
    assert_eq!(c.rotate_bytes, 64 * 1024 * 1024);
}
