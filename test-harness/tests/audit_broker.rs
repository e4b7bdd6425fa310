//! The audit log as the real broker writes it: under traffic it verifies and
//! holds the right records (and no plaintext); a SIGKILL mid-traffic is
//! recovered from; `audit tail -f` shows new records promptly; and a truncation
//! is caught against a checkpoint kept elsewhere.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use mqseal_core::audit::hashing::{sha256, to_hex};
use serde_json::Value;
use test_harness::clients::{mosquitto_pub, MosquittoSub};
use test_harness::fleet::mqseal;
use test_harness::{artifacts, Broker, Fleet};

const TOPIC: &str = "sensors/temp";

/// alice publishes in group `sensors` (sensors/#), bob reads it, eve is in no group.
fn sensor_fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_device("alice").add_device("bob").add_device("eve");
    fleet.add_group("sensors", &["sensors/#"], 3600);
    fleet.add_member("sensors", "alice", "pub").add_member("sensors", "bob", "sub");
    fleet.join("alice").join("bob").join("eve");
    fleet
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Publishes `payload` (already sealed, or deliberately not) as MQTT user `user`, QoS 1.
fn publish_raw(broker: &Broker, user: &str, client_id: &str, payload: &[u8]) {
    let file = broker.path(&format!("payload-{client_id}.bin"));
    std::fs::write(&file, payload).expect("write payload");
    let out = mosquitto_pub(broker.port(), &["-u", user, "-i", client_id, "-t", TOPIC, "-q", "1", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "mosquitto_pub: {}\nbroker log:\n{}", text(&out.stderr), broker.log());
}

/// `mqseal audit verify LOG --broker-key PUB [--checkpoint FILE]`.
fn verify(fleet: &Fleet, log: &Path, checkpoint: Option<&Path>) -> Output {
    let key = fleet.broker_public_key();
    let mut args = vec!["audit", "verify", log.to_str().unwrap(), "--broker-key", key.to_str().unwrap()];
    if let Some(cp) = checkpoint {
        args.extend_from_slice(&["--checkpoint", cp.to_str().unwrap()]);
    }
    mqseal(&args, None)
}

fn assert_verifies(fleet: &Fleet, broker: &Broker, checkpoint: Option<&Path>) {
    let out = verify(fleet, &broker.path("audit.jsonl"), checkpoint);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify must pass:\nstdout: {stdout}\nstderr: {}\nbroker log:\n{}",
        text(&out.stderr),
        broker.log()
    );
    assert!(stdout.starts_with("OK: "), "{stdout}");
}

/// Every record of the log file, parsed.
fn records(path: &Path) -> Vec<Value> {
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record is not JSON ({e}): {l}")))
        .collect()
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// The tree size a checkpoint file signs (its second line).
fn checkpoint_size(path: &Path) -> u64 {
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    body.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("no tree size in {}:\n{body}", path.display()))
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_log_written_under_traffic_verifies_and_records_every_decision_without_plaintext() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(fleet.broker_config("allow"));

    const SEALED: usize = 5;
    let secret = "plaintext-that-must-never-reach-the-log-7f3a";
    let mut envelope_hashes = Vec::new();
    for n in 0..SEALED {
        let envelope = fleet.seal("alice", TOPIC, format!("{secret} #{n}").as_bytes());
        envelope_hashes.push(to_hex(&sha256(&envelope)));
        publish_raw(&broker, "alice", &format!("alice-{n}"), &envelope);
    }
    // Denied: plaintext on a protected topic, and a subscription by a non-member.
    let denied_secret = "unsealed-secret-on-protected-topic-91c2";
    publish_raw(&broker, "alice", "alice-plain", denied_secret.as_bytes());
    let refused = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "eve", "-i", "eve-sub"]);
    assert!(refused.is_err(), "eve's subscription must be refused");

    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());
    assert_verifies(&fleet, &broker, None);

    let log_path = broker.path("audit.jsonl");
    let raw = std::fs::read_to_string(&log_path).unwrap();
    assert!(!raw.contains(secret), "plaintext of a sealed message is in the audit log");
    assert!(!raw.contains(denied_secret), "plaintext of a denied publish is in the audit log");
    let all = records(&log_path);

    let accepted = of_kind(&all, "publish.accepted");
    assert_eq!(accepted.len(), SEALED, "publish.accepted records: {accepted:#?}");
    let mut seqs = Vec::new();
    for (record, hash) in accepted.iter().zip(&envelope_hashes) {
        let facts = &record["facts"];
        assert_eq!(facts["sender"], "alice", "{record}");
        assert_eq!(facts["group"], "sensors", "{record}");
        assert_eq!(facts["topic"], TOPIC, "{record}");
        assert_eq!(facts["envelope_sha256"], hash.as_str(), "envelope hash of {record}");
        seqs.push(facts["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {record}")));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing: {seqs:?}");

    let denied = of_kind(&all, "publish.denied");
    assert_eq!(denied.len(), 1, "publish.denied records: {denied:#?}");
    assert_eq!(denied[0]["facts"]["client"], "alice-plain", "{}", denied[0]);
    assert_eq!(denied[0]["facts"]["topic"], TOPIC, "{}", denied[0]);
    let reason = denied[0]["facts"]["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "publish.denied without a reason: {}", denied[0]);

    let sub_denied = of_kind(&all, "subscribe.denied");
    assert!(
        sub_denied.iter().any(|r| r["facts"]["client"] == "eve-sub" && r["facts"]["filter"] == "sensors/#"),
        "no subscribe.denied for eve: {sub_denied:#?}"
    );
    assert!(sub_denied.iter().all(|r| r["facts"]["reason"].as_str().is_some_and(|s| !s.is_empty())));

    assert_eq!(of_kind(&all, "plugin.start").len(), 1);
    assert_eq!(of_kind(&all, "plugin.stop").len(), 1);
    assert!(!of_kind(&all, "policy.loaded").is_empty(), "no policy.loaded record");
    // The chain's shape: indices 0.. with no gaps.
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["index"].as_u64(), Some(i as u64), "{r}");
    }
}
