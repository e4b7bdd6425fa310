//! Broker decisions through the public [`Engine`] API, on a policy of 100,000
//! devices and 10,000 groups (plus one fleet-wide group: see support/fleet.rs),
//! started exactly as the plugin starts it (signed policy file, default options
//! except `unprotected allow`, audit log at its default `fsync` durability):
//!
//! - `engine/publish`: the ACL write check plus the MESSAGE event that follows
//!   it, for a sealed envelope with a rising sequence number (Ed25519 and ESP256
//!   senders), and for a publish on a topic no group owns;
//! - `engine/subscribe`, `engine/delivery`: the ACL checks for SUBSCRIBE and for
//!   each delivery, over random devices, groups and topics;
//! - `policy/*`: the compiled-policy calls alone (what the engine asks the policy).
//!
//! `cargo bench -p mqseal-core --bench engine`

#[path = "support/broker.rs"]
mod broker;
#[path = "support/fleet.rs"]
mod fleet;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use mqseal_core::broker::decision::{Access, Client, Decision};
use mqseal_core::broker::engine::Engine;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::SignAlg;
use mqseal_core::formats::policy::CompiledPolicy;

const DEVICES: usize = 100_000;
const GROUPS: usize = 10_000;
/// Random cases cycled through: enough that their devices, groups and trie nodes
/// (about 0.5 KiB each) do not fit in the L3 cache, so lookups miss it as they do
/// on a busy broker whose messages come from any of 100,000 devices.
const CASES: usize = 1 << 17;
/// Denied subscriptions are audited: measure them in rounds of this many, with a
/// pause between rounds (untimed) in which the audit writer drains its queue, so
/// that no record is refused for a full queue (which would be cheaper than queuing it).
const AUDITED_ROUND: u64 = 16_384;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn client_id(device: usize) -> String {
    format!("c-{}", fleet::username(device))
}

/// A sealed envelope from `device` on `topic` (of `group`) with sequence number `seq`.
fn seal(device: usize, group: &str, topic: &str, seq: u64, plaintext: &[u8]) -> Vec<u8> {
    envelope::seal(&SealInput {
        signer: &fleet::device_signing_key(device),
        sender: &fleet::device_id(device),
        group,
        epoch: fleet::EPOCH,
        seq,
        timestamp_ms: now_ms(),
        topic,
        aead: AeadAlg::A256Gcm,
        group_key: &fleet::group_key(),
        plaintext,
    })
    .expect("seal")
}

fn publish(c: &mut Criterion, engine: &mut Engine) {
    let mut group = c.benchmark_group("engine/publish");
    let plaintext = vec![0x5a_u8; 128];
    for (alg, name) in [(SignAlg::Ed25519, "sealed Ed25519 (-19), 128 B"), (SignAlg::P256, "sealed ESP256 (-9), 128 B")] {
        let device = fleet::device_with_alg(alg);
        let home = fleet::home_group(device, GROUPS);
        let (group_id, topic) = (fleet::group_id(home), format!("site/{home}/hall/sensor7"));
        let (id, user) = (client_id(device), fleet::username(device));
        let client = Client { id: &id, username: Some(&user) };
        let mut seq = 0u64;
        group.bench_function(name, |b| {
            b.iter_batched(
                // Sealing is the device's work: done in setup, not timed.
                || {
                    seq += 1;
                    (seq, seal(device, &group_id, &topic, seq, &plaintext))
                },
                |(seq, payload)| {
                    let write = engine.acl_check(client, Access::Write, &topic, &payload);
                    let message = engine.on_message(client, &topic, &payload, false);
                    assert_eq!((write, message), (Decision::Allow, Decision::Allow), "publish seq {seq} refused");
                },
                BatchSize::SmallInput,
            )
        });
    }
    // What mqseal adds to a publish on a topic no group owns (configuration (b) of the end-to-end bench).
    let (id, user) = (client_id(7), fleet::username(7));
    let client = Client { id: &id, username: Some(&user) };
    let topics: Vec<String> = (0..CASES).map(|i| format!("open/{i}/data")).collect();
    let mut i = 0;
    group.bench_function("unprotected topic, 128 B", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            let write = engine.acl_check(client, Access::Write, &topics[i], &plaintext);
            let message = engine.on_message(client, &topics[i], &plaintext, false);
            black_box((write, message))
        })
    });
    group.finish();
}

struct Case {
    client_id: String,
    username: String,
    text: String,
}

impl Case {
    fn client(&self) -> Client<'_> {
        Client { id: &self.client_id, username: Some(&self.username) }
    }
}

fn subscribe_and_delivery(c: &mut Criterion, engine: &mut Engine) {
    let mut rng = fleet::Rng(7);
    let (mut sub_ok, mut sub_denied, mut read_ok, mut read_denied) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while sub_ok.len() < CASES || sub_denied.len() < CASES {
        let s = fleet::subscribe_case(&mut rng, DEVICES, GROUPS);
        let case = Case { client_id: client_id(s.device), username: fleet::username(s.device), text: s.filter };
        if s.readable { &mut sub_ok } else { &mut sub_denied }.push(case);
    }
    while read_ok.len() < CASES || read_denied.len() < CASES {
        let d = fleet::delivery_case(&mut rng, DEVICES, GROUPS);
        let case = Case { client_id: client_id(d.device), username: fleet::username(d.device), text: d.topic };
        if d.readable { &mut read_ok } else { &mut read_denied }.push(case);
    }
    // Deliveries parse the envelope's header (its epoch is checked); any valid envelope will do.
    let envelope = seal(1, &fleet::group_id(1), "site/1/hall/sensor7", 1, &[0x5a; 128]);

    // Measure what we mean to: every case gets the answer its kind promises (checked
    // once, untimed; the denied subscriptions are checked on a sample, they are audited).
    for (cases, access, allowed) in
        [(&sub_ok, Access::Subscribe, true), (&read_ok, Access::Read, true), (&read_denied, Access::Read, false)]
    {
        for case in cases.iter() {
            let d = engine.acl_check(case.client(), access, &case.text, &envelope);
            assert_eq!(d == Decision::Allow, allowed, "{access:?} {} by {}: {d:?}", case.text, case.username);
        }
    }
    for case in sub_denied.iter().take(1000) {
        let d = engine.acl_check(case.client(), Access::Subscribe, &case.text, b"");
        assert!(matches!(d, Decision::Deny(_)), "subscribe {} by {}: {d:?}", case.text, case.username);
    }

    let mut group = c.benchmark_group("engine/subscribe");
    let mut i = 0;
    group.bench_function("allowed (own groups)", |b| {
        b.iter(|| {
            i = (i + 1) % CASES;
            let case = &sub_ok[i];
            black_box(engine.acl_check(case.client(), Access::Subscribe, &case.text, b""))
        })
    });
    let mut i = 0;
    group.bench_function("denied (foreign group), audited", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let round = left.min(AUDITED_ROUND);
                let start = Instant::now();
                for _ in 0..round {
                    i = (i + 1) % CASES;
                    let case = &sub_denied[i];
                    black_box(engine.acl_check(case.client(), Access::Subscribe, &case.text, b""));
                }
                timed += start.elapsed();
                left -= round;
                std::thread::sleep(Duration::from_millis(40));
            }
            timed
        })
    });
    group.finish();

    let mut group = c.benchmark_group("engine/delivery");
    for (name, cases) in [("allowed (reader)", &read_ok), ("withheld (not a reader)", &read_denied)] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % CASES;
                let case = &cases[i];
                black_box(engine.acl_check(case.client(), Access::Read, &case.text, &envelope))
            })
        });
    }
    group.finish();

    // The same decisions asked of the compiled policy directly.
    let policy: &CompiledPolicy = engine.policy();
    let mut group = c.benchmark_group("policy");
    let mixed: Vec<&Case> = sub_ok.iter().zip(&sub_denied).flat_map(|(a, b)| [a, b]).collect();
    let mut i = 0;
    group.bench_function(BenchmarkId::new("check_subscription", "half allowed"), |b| {
        b.iter(|| {
            i = (i + 1) % mixed.len();
            let case = mixed[i];
            let device = policy.device_by_username(&case.username);
            black_box(policy.check_subscription(device, &case.text).expect("valid filter"))
        })
    });
    let mixed: Vec<&Case> = read_ok.iter().zip(&read_denied).flat_map(|(a, b)| [a, b]).collect();
    let mut i = 0;
    group.bench_function(BenchmarkId::new("delivery lookups", "half allowed"), |b| {
        b.iter(|| {
            i = (i + 1) % mixed.len();
            let case = mixed[i];
            let group = policy.group_of_topic(&case.text).expect("owned topic");
            let device = policy.device_by_username(&case.username).expect("a device");
            let readable = policy.role(group, device).is_some_and(|r| r.can_read());
            black_box(readable && policy.check_epoch(group, fleet::EPOCH, 1_700_000_100).is_accepted())
        })
    });
    group.finish();
}

fn engine_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = fleet::fleet_policy(DEVICES, GROUPS);
    let started = Instant::now();
    let last_words = std::sync::Arc::new(parking_lot::Mutex::new(None));
    let mut engine = broker::start_engine(dir.path(), &policy, &[], Box::new(broker::ShutdownLine(last_words.clone())));
    eprintln!(
        "engine started on a policy of {} devices and {} groups in {:.2} s (sign + write + load)",
        engine.policy().device_count(),
        engine.policy().group_count(),
        started.elapsed().as_secs_f64()
    );
    drop(policy);
    publish(c, &mut engine);
    subscribe_and_delivery(c, &mut engine);
    engine.shutdown();
    // Every accepted publish and denied subscription was recorded (none refused by a full queue)?
    eprintln!("engine {}", last_words.lock().take().unwrap_or_default());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = engine_benches
}
criterion_main!(benches);
