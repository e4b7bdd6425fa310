//! Writer throughput, measured on demand (meaningless in a debug build):
//!
//! ```text
//! cargo test -p mqseal-core --release --test audit_throughput -- --ignored --nocapture
//! ```

mod audit_support;

use std::time::Instant;

use audit_support::*;
use mqseal_core::formats::audit::config::{Durability, QueueFullMode};
use mqseal_core::formats::audit::AuditLog;

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn writer_throughput() {
    for durability in [Durability::Os, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.durability = durability;
        c.queue_full = QueueFullMode::Block;
        c.batch_window = std::time::Duration::from_millis(100);
        let n = 500_000u64;
        // Build the events first: the broker thread's cost of making them is not the writer's.
        let events: Vec<_> = (0..n).map(publish).collect();
        let (log, _) = AuditLog::open(c, key()).unwrap();
        let start = Instant::now();
        for e in events {
            log.append(e).unwrap();
        }
        let done = log.shutdown();
        let secs = start.elapsed().as_secs_f64();
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().contains("checkpoint"))
            .collect();
        let bytes: u64 = files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        println!(
            "{durability:?}: {n} records in {secs:.2} s = {:.0} records/s ({:.0} MB/s, {} checkpoints)",
            n as f64 / secs,
            bytes as f64 / secs / 1e6,
            done.stats.checkpoints_signed
        );
        // log.opened, log.closed, and a log.rotated per extra file.
        assert_eq!(done.stats.records_written, n + 2 + (files.len() as u64 - 1));
    }
}
