//! A writer killed with SIGKILL at arbitrary points (mid-write, mid-rotation,
//! mid-checkpoint) leaves a log that the next open recovers and that verifies.
//! The writer runs in a child process: this test binary re-run with an
//! environment variable naming the log directory.

mod audit_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audit_support::*;
use mqseal_core::formats::audit::AuditLog;

const CHILD_ENV: &str = "MQSEAL_AUDIT_CRASH_CHILD_DIR";

fn crash_config(dir: &std::path::Path) -> mqseal_core::formats::audit::AuditConfig {
    let mut c = config(dir);
    c.rotate_bytes = 100_000;
    c.checkpoint_every = 50;
    c.batch_max_records = 16;
    c
}

/// The child: append forever (until killed).
#[test]
#[ignore = "run by kill_9_mid_traffic_recovers as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (log, _) = AuditLog::open(crash_config(std::path::Path::new(&dir)), key()).expect("child open");
    println!("ready");
    let mut i = 0u64;
    loop {
        let _ = log.append(if i % 5 == 4 { denied(i) } else { publish(i) });
        i += 1;
        // About 4000 records a second: enough to crash mid-batch, little enough to verify quickly.
        if i & 3 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn kill_9_mid_traffic_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut recoveries = 0;
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it write for a while, a different while each round.
        let until = Instant::now() + Duration::from_millis(150 + 70 * round);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (log, report) = AuditLog::open(crash_config(dir.path()), key())
            .unwrap_or_else(|e| panic!("round {round}: the log did not reopen after SIGKILL: {e}"));
        recoveries += report.recovered.is_some() as u32;
        log.shutdown();
        verify_with_key(&path).unwrap_or_else(|f| panic!("round {round}: {f}"));
    }
    let report = verify_with_key(&path).unwrap();
    assert!(report.records > 500, "the children wrote too little to test anything: {report:?}");
    assert!(report.files.len() >= 2, "no rotation happened: {report:?}");
    println!("{} records, {} files, {recoveries} torn lines recovered", report.records, report.files.len());
}
