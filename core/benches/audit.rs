//! The audit log's cost, on both sides of its queue:
//!
//! - `audit/writer/<settings>`: records per second through the writer thread
//!   (encode the canonical JSON line, chain hash, Merkle leaf, batched writes,
//!   fsync per group-commit window, a signed checkpoint every `checkpoint_every`
//!   records). Events are made before the clock starts; the broker side appends
//!   with `audit_queue_full block`, so the queue is the writer's backlog and the
//!   time is the writer's, up to `sync()` returning with everything on disk.
//! - `audit/broker_thread`: what one accepted publish costs the broker thread
//!   for its record: build the event as the engine does (strings, SHA-256 of a
//!   300-byte envelope) and hand it to the queue (never waits: the queue is
//!   drained between rounds, untimed).
//!
//! `cargo bench -p mqseal-core --bench audit`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use mqseal_core::formats::audit::config::{Durability, QueueFullMode};
use mqseal_core::formats::audit::hashing::sha256;
use mqseal_core::formats::audit::{AuditConfig, AuditEvent, AuditLog};

/// A `publish.accepted` event shaped like the engine's, for device `i`.
fn event(i: u64, envelope: &[u8]) -> AuditEvent {
    let device = i % 100_000;
    AuditEvent::PublishAccepted {
        client: format!("c-u{device:07}"),
        topic: format!("site/{}/hall/sensor7", device % 10_000),
        sender: format!("d{device:07}"),
        group: format!("g{:06}", device % 10_000),
        epoch: 1,
        seq: i + 1,
        envelope_sha256: sha256(envelope),
    }
}

fn broker_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0xB2; 32])
}

/// (name, durability, checkpoint_every): the default, and the fastest the options allow.
const SETTINGS: [(&str, Durability, u64); 3] = [
    ("default: fsync, checkpoint every 1000", Durability::Fsync, 1000),
    ("os, checkpoint every 1000", Durability::Os, 1000),
    ("os, checkpoint every 100000", Durability::Os, 100_000),
];

fn writer(c: &mut Criterion) {
    let envelope = vec![0x5a_u8; 300];
    let mut group = c.benchmark_group("audit/writer");
    group.throughput(Throughput::Elements(1)).sampling_mode(SamplingMode::Flat).sample_size(20);
    for (name, durability, checkpoint_every) in SETTINGS {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = AuditConfig::new(dir.path().join("audit.jsonl"));
        config.durability = durability;
        config.checkpoint_every = checkpoint_every;
        config.queue_full = QueueFullMode::Block;
        let (log, _) = AuditLog::open(config, broker_key()).expect("open audit log");
        let mut next = 0u64;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let events: Vec<AuditEvent> = (next..next + iters).map(|i| event(i, &envelope)).collect();
                next += iters;
                let start = Instant::now();
                for e in events {
                    log.append(e).expect("append");
                }
                log.sync().expect("sync");
                start.elapsed()
            })
        });
        let report = log.shutdown();
        assert!(report.problems.is_empty() && report.stats.records_refused == 0, "{:?}", report);
    }
    group.finish();
}

fn broker_thread(c: &mut Criterion) {
    let envelope = vec![0x5a_u8; 300];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = AuditConfig::new(dir.path().join("audit.jsonl"));
    config.durability = Durability::Os;
    let capacity = config.queue_capacity as u64;
    let (log, _) = AuditLog::open(config, broker_key()).expect("open audit log");
    let mut group = c.benchmark_group("audit/broker_thread");
    group.throughput(Throughput::Elements(1));
    let mut next = 0u64;
    group.bench_function("publish.accepted: build event + append", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Half the queue per round, then let the writer drain it (untimed):
                // the broker thread never waits in `deny` mode.
                let round = left.min(capacity / 2);
                let start = Instant::now();
                for i in next..next + round {
                    log.append(black_box(event(i, &envelope))).expect("append");
                }
                timed += start.elapsed();
                next += round;
                left -= round;
                log.sync().expect("sync");
            }
            timed
        })
    });
    group.finish();
    let report = log.shutdown();
    assert!(report.problems.is_empty() && report.stats.records_refused == 0, "{:?}", report);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = writer, broker_thread
}
criterion_main!(benches);
