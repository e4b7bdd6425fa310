//! The audit writer thread exists only while there is work: a broker whose
//! plugin has nothing to record stays single-threaded (docs/PERFORMANCE.md:
//! one idle thread costs plain Mosquitto 8 % of its throughput). One test in
//! its own binary, so that no other test's writer thread is counted.

mod audit_support;


use audit_support::*;
use mqseal_core::formats::audit::AuditLog;

/// Threads of this process (a new thread may not have named itself yet, so
/// count them all: this binary runs one test, its other threads are libtest's).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn the_writer_thread_exists_only_while_there_is_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 3;
    let before = threads();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    assert_eq!(threads(), before + 1, "the writer starts with the log");
    eventually("the idle writer's thread is gone", || log.is_parked() && threads() == before);
    for i in 0..3 {
        log.append(publish(i)).unwrap();
    }
    assert_eq!(threads(), before + 1, "an append starts it again");
    eventually("it is gone again once the records are sealed", || log.is_parked() && threads() == before);
    let done = log.shutdown();
    assert_eq!(done.stats.records_written, 5, "log.opened, three records, log.closed");
    assert_eq!(threads(), before);
}
