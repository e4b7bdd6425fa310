//! Verification on worker threads (crate::broker::offload), through the
//! engine as the plugin drives it: an offloadable publish is answered
//! `Offloaded`, and its verified copy comes back from `take_republish` only
//! after every check has been run again on the broker thread. Each test shows
//! one guarantee of the synchronous path holding on this one.

#[path = "../benches/support/broker.rs"]
mod broker;
#[path = "../benches/support/fleet.rs"]
mod fleet;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqseal_core::broker::decision::{Access, Client, Decision, DenyReason, PublishInfo};
use mqseal_core::broker::engine::{Engine, Kick};
use mqseal_core::broker::offload::Republish;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::SignAlg;
use mqseal_core::formats::policy::Policy;
use serde_json::Value;

const DEVICES: usize = 40;
const GROUPS: usize = 4;
const QOS0_V311: PublishInfo = PublishInfo { retain: false, offloadable: true };

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A device of the fleet publishing on its home group's topic.
struct Device {
    index: usize,
    client_id: String,
    username: String,
    topic: String,
}

impl Device {
    fn new(index: usize) -> Device {
        let home = fleet::home_group(index, GROUPS);
        Device {
            index,
            client_id: format!("c-{}", fleet::username(index)),
            username: fleet::username(index),
            topic: format!("site/{home}/hall/d{index}"),
        }
    }

    fn with_alg(alg: SignAlg) -> Device {
        Device::new(fleet::device_with_alg(alg))
    }

    fn client(&self) -> Client<'_> {
        Client { id: &self.client_id, username: Some(&self.username) }
    }

    fn seal(&self, seq: u64, plaintext: &[u8]) -> Vec<u8> {
        envelope::seal(&SealInput {
            signer: &fleet::device_signing_key(self.index),
            sender: &fleet::device_id(self.index),
            group: &fleet::group_id(fleet::home_group(self.index, GROUPS)),
            epoch: fleet::EPOCH,
            seq,
            timestamp_ms: now_ms(),
            topic: &self.topic,
            aead: AeadAlg::A256Gcm,
            group_key: &fleet::group_key(),
            plaintext,
        })
        .expect("seal")
    }

    fn forged(&self, seq: u64) -> Vec<u8> {
        let mut payload = self.seal(seq, b"forged");
        let last = payload.len() - 1;
        payload[last] ^= 0x01; // the signature's last byte
        payload
    }
}

fn start(dir: &Path, policy: &Policy, workers: &str) -> Engine {
    let mut engine = broker::start_engine(
        dir,
        policy,
        &[("verify_workers", workers), ("verify_offload_above", "0"), ("flood_limit", "5")],
        Box::new(broker::NullHost),
    );
    // The plugin offloads only once the broker ticks (something must deliver the copies).
    engine.tick();
    engine
}

fn fleet_policy() -> Policy {
    fleet::fleet_policy(DEVICES, GROUPS)
}

fn publish(engine: &mut Engine, device: &Device, payload: &[u8], info: PublishInfo) -> Decision {
    engine.acl_check_publish(device.client(), Access::Write, &device.topic, payload, info)
}

/// Takes back verified copies until `n` have come or nothing is in flight.
fn republished(engine: &mut Engine, n: usize) -> Vec<Republish> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(engine.take_republish(true));
        if engine.offloaded_pending() == 0 && out.len() < n {
            break;
        }
    }
    out
}

/// The audit records of `kind`, after shutdown (which flushes the log).
fn records(dir: &Path, kind: &str) -> Vec<Value> {
    let body = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit log");
    body.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("record"))
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[test]
fn accepted_publishes_come_back_verified_in_order_with_their_retain_flag_and_records() {
    for alg in [SignAlg::Ed25519, SignAlg::P256] {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = start(dir.path(), &fleet_policy(), "2");
        let device = Device::with_alg(alg);
        let mut sent = Vec::new();
        for seq in 1..=300u64 {
            let payload = device.seal(seq, format!("reading {seq}").as_bytes());
            let retain = seq % 7 == 0;
            assert_eq!(publish(&mut engine, &device, &payload, PublishInfo { retain, offloadable: true }), Decision::Offloaded, "{alg} seq {seq}");
            sent.push(Republish { topic: device.topic.clone(), payload, retain });
        }
        let back = republished(&mut engine, sent.len());
        assert_eq!(back, sent, "{alg}: every publish back, in the order sent, with its retain flag");
        assert_eq!(engine.stats().publishes_verified_on_workers, 300);
        engine.shutdown();
        let accepted = records(dir.path(), "publish.accepted");
        let seqs: Vec<u64> = accepted.iter().map(|r| r["facts"]["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "{alg}: one publish.accepted each, in order");
    }
}

#[test]
fn a_forgery_is_refused_with_the_synchronous_reason_and_counts_towards_the_flood_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path(), &fleet_policy(), "1");
    let device = Device::new(3);
    // What the synchronous path answers.
    let sync_reason = match engine.acl_check(device.client(), Access::Write, &device.topic, &device.forged(1)) {
        Decision::Deny(reason) => reason,
        other => panic!("a forgery was {other:?}"),
    };
    assert_eq!(sync_reason, DenyReason("bad-signature"));
    for seq in 2..=6 {
        assert_eq!(publish(&mut engine, &device, &device.forged(seq), QOS0_V311), Decision::Offloaded);
    }
    assert!(republished(&mut engine, 1).is_empty(), "no forgery is handed to the broker");
    // 1 synchronous + 5 offloaded forgeries: past flood_limit 5.
    assert_eq!(engine.take_kicks(), vec![Kick::ClientId(device.client_id.clone())]);
    engine.shutdown();
    let denied = records(dir.path(), "publish.denied");
    assert_eq!(denied.len(), 6);
    assert!(denied.iter().all(|r| r["facts"]["reason"] == "bad-signature"), "{denied:?}");
    assert!(records(dir.path(), "publish.accepted").is_empty());
}

#[test]
fn an_envelope_sent_twice_while_both_are_in_flight_is_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path(), &fleet_policy(), "2");
    let device = Device::new(5);
    let payload = device.seal(1, b"once");
    // Both pass admission (the window learns of seq 1 only once it is verified).
    assert_eq!(publish(&mut engine, &device, &payload, QOS0_V311), Decision::Offloaded);
    assert_eq!(publish(&mut engine, &device, &payload, QOS0_V311), Decision::Offloaded);
    assert_eq!(republished(&mut engine, 2).len(), 1, "delivered once");
    // Once settled, a third copy is refused at admission as on the synchronous path.
    assert_eq!(publish(&mut engine, &device, &payload, QOS0_V311), Decision::Deny(DenyReason::REPLAY));
    engine.shutdown();
    let denied = records(dir.path(), "publish.denied");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| r["facts"]["reason"] == "replay"));
}

#[test]
fn a_synchronous_publish_waits_for_the_senders_offloaded_ones_so_none_is_lost_as_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path(), &fleet_policy(), "1");
    let device = Device::new(7);
    for seq in 1..=50 {
        assert_eq!(publish(&mut engine, &device, &device.seal(seq, b"qos0"), QOS0_V311), Decision::Offloaded);
    }
    // A QoS 1 publish (not offloadable) with a higher sequence number, at once.
    let qos1 = PublishInfo { retain: false, offloadable: false };
    assert_eq!(publish(&mut engine, &device, &device.seal(51, b"qos1"), qos1), Decision::Allow);
    assert_eq!(republished(&mut engine, 50).len(), 50, "the 50 earlier ones were settled first, none refused");
    engine.shutdown();
    let seqs: Vec<u64> = records(dir.path(), "publish.accepted").iter().map(|r| r["facts"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    assert!(records(dir.path(), "publish.denied").is_empty());
}

#[test]
fn a_publisher_removed_by_a_reload_before_its_publish_settles_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = fleet_policy();
    let mut engine = start(dir.path(), &policy, "1");
    let device = Device::new(9);
    let mut publishes = 0;
    // Admitted under version 1; settled (taken back) only after version 2 is in force.
    for seq in 1..=200 {
        assert_eq!(publish(&mut engine, &device, &device.seal(seq, b"x"), QOS0_V311), Decision::Offloaded);
        publishes += 1;
    }
    let mut revoked = policy.clone();
    revoked.version = 2;
    let group = fleet::group_id(fleet::home_group(device.index, GROUPS));
    revoked.groups.get_mut(&group).unwrap().members.remove(&fleet::device_id(device.index));
    let signed = revoked.sign(&broker::authority()).unwrap();
    std::fs::write(dir.path().join("policy.json"), signed).unwrap();
    // After the first tick a reload loads in the background; ticks install it.
    engine.reload();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.reload_in_progress() {
        assert!(Instant::now() < deadline);
        // Ticks without taking results: the jobs stay with the engine meanwhile.
        let _ = engine.tick();
    }
    let back = republished(&mut engine, publishes);
    engine.shutdown();
    let accepted = records(dir.path(), "publish.accepted").len();
    let refused: Vec<Value> = records(dir.path(), "publish.denied");
    assert_eq!(accepted, back.len(), "what was handed back is exactly what was recorded as accepted");
    assert_eq!(accepted + refused.len(), publishes);
    assert_eq!(refused.len(), publishes, "every one settled after the reload, none delivered");
    assert!(refused.iter().all(|r| r["facts"]["reason"] == "not-a-publisher"), "{:?}", refused.first());
}

#[test]
fn off_or_before_the_first_tick_or_not_offloadable_means_verified_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::new(11);
    let mut off = start(dir.path(), &fleet_policy(), "off");
    assert_eq!(publish(&mut off, &device, &device.seal(1, b"a"), QOS0_V311), Decision::Allow);
    off.shutdown();

    let dir = tempfile::tempdir().unwrap();
    let mut engine = broker::start_engine(
        dir.path(),
        &fleet_policy(),
        &[("verify_workers", "1"), ("verify_offload_above", "0")],
        Box::new(broker::NullHost),
    );
    assert_eq!(publish(&mut engine, &device, &device.seal(1, b"b"), QOS0_V311), Decision::Allow, "no tick yet");
    engine.tick();
    let not_offloadable = PublishInfo { retain: false, offloadable: false };
    assert_eq!(publish(&mut engine, &device, &device.seal(2, b"c"), not_offloadable), Decision::Allow);
    assert_eq!(publish(&mut engine, &device, &device.seal(3, b"d"), QOS0_V311), Decision::Offloaded);
    assert_eq!(republished(&mut engine, 1).len(), 1);
    engine.shutdown();
}

#[test]
fn below_the_rate_threshold_publishes_are_verified_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = broker::start_engine(
        dir.path(),
        &fleet_policy(),
        &[("verify_workers", "1"), ("verify_offload_above", "1000000")],
        Box::new(broker::NullHost),
    );
    engine.tick();
    let device = Device::new(13);
    for seq in 1..=20 {
        assert_eq!(publish(&mut engine, &device, &device.seal(seq, b"slow"), QOS0_V311), Decision::Allow);
    }
    engine.shutdown();
}
