//! Helpers shared by the audit integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use mqseal_core::formats::audit::verify::{verify_path, VerifyFailure, VerifyOptions, VerifyReport};
use mqseal_core::formats::audit::{AuditConfig, AuditEvent, AuditLog};

pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

pub fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[43; 32])
}

pub fn config(dir: &Path) -> AuditConfig {
    let mut c = AuditConfig::new(dir.join("audit.jsonl"));
    c.batch_window = Duration::from_millis(5);
    c
}

pub fn publish(i: u64) -> AuditEvent {
    AuditEvent::PublishAccepted {
        client: format!("client-{}", i % 3),
        topic: format!("fleet/dev-{}/telemetry", i % 3),
        sender: format!("dev-{}", i % 3),
        group: "fleet".into(),
        epoch: 1,
        seq: i,
        envelope_sha256: mqseal_core::formats::audit::hashing::sha256(&i.to_be_bytes()),
    }
}

pub fn denied(i: u64) -> AuditEvent {
    AuditEvent::PublishDenied {
        client: format!("client-{}", i % 3),
        topic: "fleet/x".into(),
        reason: "bad-signature".into(),
        sender: None,
        group: Some("fleet".into()),
        epoch: None,
        seq: None,
        envelope_sha256: None,
    }
}

/// Writes a log of `n` plugin events through the writer and shuts it down.
pub fn write_log(config: AuditConfig, n: u64) {
    let (log, _report) = AuditLog::open(config, key()).expect("open");
    for i in 0..n {
        log.append(if i % 5 == 4 { denied(i) } else { publish(i) }).expect("append");
    }
    let report = log.shutdown();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

pub fn verify_with_key(log: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify_path(log, &VerifyOptions { keys: vec![key().verifying_key()], ..Default::default() })
}

pub fn verify_against(log: &Path, external: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify_path(log, &VerifyOptions { keys: vec![key().verifying_key()], external: vec![external.to_path_buf()], ..Default::default() })
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

pub fn kinds(path: &Path) -> Vec<String> {
    lines(path).iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string()).collect()
}

/// Asserts a failure at `file_name:line` whose reason contains `needle`.
pub fn assert_fails_at(result: Result<VerifyReport, VerifyFailure>, file_name: &str, line: Option<u64>, needle: &str) -> VerifyFailure {
    let failure = match result {
        Ok(report) => panic!("expected a failure at {file_name}:{line:?} ({needle}), got OK: {report:?}"),
        Err(f) => f,
    };
    let file = failure.file.as_ref().and_then(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned());
    assert_eq!(file.as_deref(), Some(file_name), "{failure}");
    if line.is_some() {
        assert_eq!(failure.line, line, "{failure}");
    }
    assert!(failure.reason.contains(needle), "expected {needle:?} in: {failure}");
    failure
}

/// Re-hashes a single-file log after edits, as an attacker who can write the
/// file (but not sign checkpoints) would: every prev is recomputed.
pub fn rechain(path: &Path, origin: &str) {
    use mqseal_core::formats::audit::hashing::{origin_hash, record_hash, to_hex};
    let mut prev = origin_hash(origin);
    let mut out = Vec::new();
    for (i, line) in lines(path).iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["index"] = serde_json::json!(i);
        v["prev"] = serde_json::json!(to_hex(&prev));
        let bytes = mqseal_core::formats::canonical_json::value_to_vec(&v).unwrap();
        prev = record_hash(&bytes);
        out.push(String::from_utf8(bytes).unwrap());
    }
    write_lines(path, &out);
}

pub fn checkpoint_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".checkpoint");
    PathBuf::from(p)
}

pub fn history_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".checkpoints");
    PathBuf::from(p)
}

/// Polls `condition` every 5 ms for up to 10 s; panics naming `what` if it never holds.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
