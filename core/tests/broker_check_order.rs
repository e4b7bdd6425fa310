//! docs/POLICY.md §9 makes the order of the broker's checks normative: for
//! any publish, the first failing check names the refusal. Each case here
//! combines two defects and expects the token of the check that comes first,
//! through the real engine (`Engine::acl_check` and `on_message`, as the
//! plugin calls them).

#[path = "../benches/support/broker.rs"]
mod broker;

use std::collections::BTreeMap;

use mqseal_core::broker::decision::{Access, Client, Decision};
use mqseal_core::broker::engine::Engine;
use mqseal_core::broker::host::MemoryHost;
use mqseal_core::device::store::unix_millis;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::{GroupKey, SigningKey};
use mqseal_core::formats::policy::{DevicePolicy, GroupPolicy, Policy, Role};

fn key(name: &str) -> SigningKey {
    let seed = match name {
        "alice" => [1u8; 32],
        "bob" => [2; 32],
        "carol" => [3; 32],
        _ => [9; 32],
    };
    SigningKey::ed25519_from_seed(&seed)
}

/// alice: pub in g1 (topics a/#); bob: sub in g1; carol: pub in g2 (b/#).
fn policy() -> Policy {
    let devices = ["alice", "bob", "carol"]
        .into_iter()
        .map(|d| (d.to_string(), DevicePolicy { username: d.to_string(), sign: key(d).verifying_key() }))
        .collect();
    let group = |topic: &str, members: &[(&str, Role)]| GroupPolicy {
        topics: vec![topic.to_string()],
        members: members.iter().map(|(d, r)| (d.to_string(), *r)).collect::<BTreeMap<_, _>>(),
        epoch: 1,
        epoch_started_at: 1_700_000_000,
        previous_epoch_grace_secs: 3600,
    };
    let mut groups = BTreeMap::new();
    groups.insert("g1".to_string(), group("a/#", &[("alice", Role::Pub), ("bob", Role::Sub)]));
    groups.insert("g2".to_string(), group("b/#", &[("carol", Role::Pub)]));
    Policy { version: 1, issued_at: 1_700_000_000, devices, groups }
}

struct Envelope<'a> {
    signer: &'a str,
    sender: &'a str,
    group: &'a str,
    epoch: u64,
    seq: u64,
    topic: &'a str,
}

impl Envelope<'_> {
    fn seal(&self) -> Vec<u8> {
        envelope::seal(&SealInput {
            signer: &key(self.signer),
            sender: self.sender,
            group: self.group,
            epoch: self.epoch,
            seq: self.seq,
            timestamp_ms: unix_millis(),
            topic: self.topic,
            aead: AeadAlg::A256Gcm,
            group_key: &GroupKey::from_bytes([0x42; 32]),
            plaintext: b"reading",
        })
        .unwrap()
    }
}

fn env<'a>(signer: &'a str, sender: &'a str, group: &'a str, epoch: u64, seq: u64, topic: &'a str) -> Vec<u8> {
    Envelope { signer, sender, group, epoch, seq, topic }.seal()
}

fn engine(dir: &std::path::Path, unprotected: &str) -> Engine {
    broker::write_broker_files(dir, &policy());
    let mut config = broker::config(dir, &[]);
    config.unprotected = match unprotected {
        "deny" => mqseal_core::broker::config::UnprotectedMode::Deny,
        _ => mqseal_core::broker::config::UnprotectedMode::Allow,
    };
    Engine::start(config, Box::new(MemoryHost::default())).expect("engine starts")
}

fn publish(engine: &mut Engine, client_id: &str, username: Option<&str>, topic: &str, payload: &[u8]) -> String {
    match engine.acl_check(Client { id: client_id, username }, Access::Write, topic, payload) {
        Decision::Deny(reason) => reason.as_str().to_string(),
        Decision::Allow => "allow".into(),
        Decision::Defer => "defer".into(),
        Decision::Offloaded => "offloaded".into(),
    }
}

#[test]
fn the_first_failing_check_names_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "deny");
    let garbage = b"not an envelope";

    // A good publish, so that alice has seq 5 accepted.
    assert_eq!(publish(&mut e, "c-alice", Some("alice"), "a/t", &env("alice", "alice", "g1", 1, 5, "a/t")), "allow");

    let cases: Vec<(&str, String, &str)> = vec![
        // Client id characters come before everything (here: a control topic and garbage).
        ("bad client id, control topic", publish(&mut e, "x+y", Some("alice"), "$mqseal/policy", garbage), "bad-client-id"),
        // 1. Control topics before the envelope: the authority rule first.
        ("control topic by a device, garbage", publish(&mut e, "c-alice", Some("alice"), "$mqseal/policy", garbage), "not-authority"),
        // 2. Unowned topic before the envelope.
        ("unowned topic, garbage", publish(&mut e, "c-alice", Some("alice"), "z/t", garbage), "unprotected-denied"),
        // 3. The envelope parses before the sender is looked at.
        ("garbage from a non-device", publish(&mut e, "c-x", Some("nobody"), "a/t", garbage), "not-sign1"),
        // 4. Sender before group: carol's client sends alice's envelope for g2 on a g1 topic.
        (
            "sender mismatch and wrong group",
            publish(&mut e, "c-carol", Some("carol"), "a/t", &env("alice", "alice", "g2", 1, 6, "a/t")),
            "sender-mismatch",
        ),
        ("no device and wrong group", publish(&mut e, "c-x", Some("nobody"), "a/t", &env("alice", "alice", "g2", 1, 6, "a/t")), "not-a-device"),
        // 5. Group before role: bob (sub only) names g2 on a g1 topic.
        ("wrong group and not a publisher", publish(&mut e, "c-bob", Some("bob"), "a/t", &env("bob", "bob", "g2", 1, 1, "a/t")), "wrong-group"),
        // 6. Role before epoch.
        ("not a publisher and future epoch", publish(&mut e, "c-bob", Some("bob"), "a/t", &env("bob", "bob", "g1", 9, 1, "a/t")), "not-a-publisher"),
        // 7. Epoch before replay.
        ("future epoch and replayed seq", publish(&mut e, "c-alice", Some("alice"), "a/t", &env("alice", "alice", "g1", 9, 5, "a/t")), "epoch-future"),
        // 8. Replay before the signature: seq 5 again, signed by another key.
        ("replayed seq and bad signature", publish(&mut e, "c-alice", Some("alice"), "a/t", &env("mallory", "alice", "g1", 1, 5, "a/t")), "replay"),
        // 10. The signature last.
        ("bad signature alone", publish(&mut e, "c-alice", Some("alice"), "a/t", &env("mallory", "alice", "g1", 1, 6, "a/t")), "bad-signature"),
    ];
    for (name, got, want) in &cases {
        assert_eq!(got, want, "{name}");
    }
    // Nothing refused above moved alice's window: seq 6 is still new.
    assert_eq!(publish(&mut e, "c-alice", Some("alice"), "a/t", &env("alice", "alice", "g1", 1, 6, "a/t")), "allow");
}

#[test]
fn a_bridged_message_from_an_unknown_sender_is_unknown_sender() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "allow");
    // A bridge has no device login: the MESSAGE event judges the envelope's own sender.
    let bridge = Client { id: "bridge-1", username: None };
    let from_stranger = env("mallory", "mallory", "g1", 1, 1, "a/t");
    match e.on_message(bridge, "a/t", &from_stranger, false) {
        Decision::Deny(reason) => assert_eq!(reason.as_str(), "unknown-sender"),
        other => panic!("{other:?}"),
    }
    let from_alice = env("alice", "alice", "g1", 1, 1, "a/t");
    assert_eq!(e.on_message(bridge, "a/t", &from_alice, false), Decision::Allow);
    // A control topic over a bridge is reserved, whatever the payload.
    match e.on_message(bridge, "$mqseal/policy", b"x", false) {
        Decision::Deny(reason) => assert_eq!(reason.as_str(), "reserved-topic"),
        other => panic!("{other:?}"),
    }
}
