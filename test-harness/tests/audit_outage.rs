//! A full disk under the audit log (a real tmpfs, filled and freed): nothing
//! decided is lost, what cannot be recorded is refused through one path and
//! counted, the log carries a record of the outage and verifies, and the writer
//! carries on without a restart. First with the writer alone, then with the
//! real broker, where honest publishers refused for the outage are not kicked
//! as flooders, while a real flooder is, with a record.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use mqseal_core::formats::audit::verify::{verify_path, VerifyOptions};
use mqseal_core::formats::audit::writer::AppendError;
use mqseal_core::formats::audit::{AuditConfig, AuditEvent, AuditLog};
use serde_json::Value;
use test_harness::audit_read::{log_records};
use test_harness::tmpfs::Tmpfs;

/// A tmpfs, or None (with the reason printed) where mounting is impossible.
fn small_disk(bytes: u64) -> Option<Tmpfs> {
    match Tmpfs::mount(bytes) {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs to fill ({why}); run as root to test a full disk");
            None
        }
    }
}

fn publish(seq: u64) -> AuditEvent {
    AuditEvent::PublishAccepted {
        client: "c".into(),
        topic: "fleet/t".into(),
        sender: "dev".into(),
        group: "fleet".into(),
        epoch: 1,
        seq,
        envelope_sha256: mqseal_core::formats::audit::hashing::sha256(&seq.to_be_bytes()),
    }
}

fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Appends numbered publishes and remembers which the writer took and refused.
#[derive(Default)]
struct Traffic {
    seq: u64,
    accepted: BTreeSet<u64>,
    refused: BTreeSet<u64>,
}

impl Traffic {
    fn append(&mut self, log: &AuditLog) {
        self.seq += 1;
        match log.append(publish(self.seq)) {
            Ok(()) => assert!(self.accepted.insert(self.seq)),
            Err(AppendError::Unavailable) => assert!(self.refused.insert(self.seq)),
            Err(other) => panic!("append {}: {other} (only an outage may refuse here)", self.seq),
        }
    }
}

#[test]
fn the_writer_holds_records_through_a_full_disk_and_records_the_outage() {
    let Some(disk) = small_disk(256 * 1024) else { return };
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut config = AuditConfig::new(disk.path().join("audit.jsonl"));
    config.batch_window = Duration::from_millis(5);
    config.checkpoint_every = 50;
    let (log, _) = AuditLog::open(config, key.clone()).unwrap();

    let mut traffic = Traffic::default();
    for _ in 0..20 {
        traffic.append(&log);
    }
    log.sync().unwrap();

    // Traffic while the disk fills up, until the writer says it cannot write.
    let filler = disk.fill();
    let started = Instant::now();
    while !log.stats().unavailable {
        traffic.append(&log);
        std::thread::sleep(Duration::from_millis(1));
        assert!(started.elapsed() < Duration::from_secs(20), "the writer never noticed the full disk: {:?}", log.stats());
    }
    for _ in 0..50 {
        traffic.append(&log);
    }
    assert!(traffic.refused.len() >= 50, "{} refused", traffic.refused.len());
    assert!(log.take_problems().iter().any(|p| p.contains("cannot be written")), "no problem reported");

    // Space returns: the writer notices by itself and carries on.
    disk.free(&filler);
    eventually("the outage ends", Duration::from_secs(10), || log.stats().outages == 1);
    for _ in 0..20 {
        traffic.append(&log);
    }
    log.sync().expect("the log is writable again");
    let report = log.shutdown();
    assert_eq!(report.stats.records_lost, 0, "{report:?}");

    let path = disk.path().join("audit.jsonl");
    let verified = verify_path(&path, &VerifyOptions { keys: vec![key.verifying_key()], ..Default::default() });
    assert!(verified.is_ok(), "the log must verify: {verified:?}");
    let all = log_records(&path);
    let written: Vec<u64> = all.iter().filter(|r| r["kind"] == "publish.accepted").map(|r| r["facts"]["seq"].as_u64().unwrap()).collect();
    let written_set: BTreeSet<u64> = written.iter().copied().collect();
    assert_eq!(written.len(), written_set.len(), "a record was written twice");
    assert_eq!(written_set, traffic.accepted, "every accepted append must be in the log, and nothing refused");
    let outages: Vec<&Value> = all.iter().filter(|r| r["kind"] == "log.outage").collect();
    assert_eq!(outages.len(), 1, "{outages:#?}");
    let facts = &outages[0]["facts"];
    assert_eq!(facts["refused"].as_u64(), Some(traffic.refused.len() as u64), "{}", outages[0]);
    assert!(facts["error"].as_str().unwrap().contains("No space left"), "{}", outages[0]);
    assert!(facts["start"].as_str().unwrap() < facts["end"].as_str().unwrap(), "{}", outages[0]);
    let closed = all.iter().rev().find(|r| r["kind"] == "log.closed").expect("log.closed");
    assert_eq!(closed["facts"]["lost"], 0);
    eprintln!(
        "{} accepted, {} refused, {} held through the outage, {} records",
        traffic.accepted.len(),
        traffic.refused.len(),
        facts["held"],
        all.len()
    );
}

const TOPIC: &str = "sensors/temp";
const WAIT: Duration = Duration::from_secs(15);

/// `mqseal policy push` of the realm's current policy, as the authority.
fn push_policy(fleet: &test_harness::Fleet, broker: &test_harness::Broker) -> std::process::Output {
    let realm = fleet.realm();
    let port = broker.port().to_string();
    test_harness::fleet::mqseal(&["policy", "push", "--realm", realm.to_str().unwrap(), "-H", "127.0.0.1", "-p", &port], None)
}

fn hex_sha256(bytes: &[u8]) -> String {
    mqseal_core::formats::audit::hashing::to_hex(&mqseal_core::formats::audit::hashing::sha256(bytes))
}

#[test]
fn a_full_disk_under_the_broker_loses_no_record_and_kicks_only_the_flooder() {
    use test_harness::clients::{MosquittoSub, OwnClient};
    let Some(disk) = small_disk(1024 * 1024) else { return };
    let fleet = test_harness::Fleet::sensors();
    let log_path = disk.path().join("audit.jsonl");
    let config = fleet
        .broker_config("allow")
        .option("audit_log", log_path.to_str().unwrap())
        .option("state_dir", "{dir}")
        .option("flood_limit", "3")
        .option("flood_window_secs", "600")
        .option("audit_batch_ms", "5")
        .option("checkpoint_interval_secs", "1");
    let mut broker = test_harness::Broker::start(config);
    let mut bob = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "bob", "-i", "bob-sub"]).expect("bob subscribes");
    let mut alice = OwnClient::connect(broker.port(), "alice-1", Some(("alice", ""))).expect("alice connects");
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut delivered: Vec<Vec<u8>> = Vec::new();
    let publish = |alice: &mut OwnClient, n: usize, sent: &mut Vec<Vec<u8>>| {
        for i in 0..n {
            let envelope = fleet.seal("alice", TOPIC, format!("reading {} {i}", sent.len()).as_bytes());
            alice.publish(TOPIC, 1, false, &envelope).unwrap_or_else(|e| panic!("alice's publish {}: {e}", sent.len()));
            sent.push(envelope);
        }
    };
    let collect = |bob: &mut MosquittoSub, delivered: &mut Vec<Vec<u8>>, timeout: Duration| {
        while let Some(m) = bob.next_message(timeout) {
            delivered.push(m.payload);
        }
    };

    publish(&mut alice, 3, &mut sent);
    collect(&mut bob, &mut delivered, Duration::from_secs(2));
    assert_eq!(delivered.len(), 3, "before the disk fills, every publish is delivered");

    // The disk fills up under traffic.
    let filler = disk.fill();
    let started = Instant::now();
    while !broker.log().contains("audit-unavailable") {
        publish(&mut alice, 1, &mut sent);
        assert!(started.elapsed() < WAIT, "the broker never noticed the full disk\n{}", broker.log());
    }
    // Clearly within the outage: many more refusals than the flood limit.
    publish(&mut alice, 10, &mut sent);
    collect(&mut bob, &mut delivered, Duration::from_secs(1));
    let refused_alice = sent.len() - delivered.len();
    assert!(refused_alice >= 10, "{refused_alice} of alice's publishes refused");

    // A flooder: bad envelopes are its own fault and get it disconnected.
    let mut eve = OwnClient::connect(broker.port(), "eve-flood", Some(("eve", ""))).expect("eve connects");
    for i in 0..3 {
        eve.publish(TOPIC, 1, false, format!("garbage {i}").as_bytes()).expect("eve's garbage is acknowledged (MQTT 3.1.1)");
    }
    // The fourth crosses the flood limit: the broker closes the connection on it
    // (the answer to that publish), so it gets no acknowledgement.
    let _ = eve.publish(TOPIC, 1, false, b"garbage 3");
    assert!(broker.wait_for_log("disconnecting client 'eve-flood'", WAIT), "{}", broker.log());
    eve.wait_disconnected(WAIT).expect("the flooder is disconnected");
    // A control document cannot take effect without its record either.
    let push = push_policy(&fleet, &broker);
    assert!(!push.status.success(), "a policy push during the outage must be refused: {}", String::from_utf8_lossy(&push.stdout));
    assert!(broker.wait_for_log("refused control document on $mqseal/policy", WAIT), "{}", broker.log());
    // alice was refused for mqseal's own reason, not hers: still connected.
    assert!(alice.wait_disconnected(Duration::from_secs(2)).is_err(), "alice was kicked\n{}", broker.log());
    assert!(!broker.log().contains("disconnecting client 'alice-1'"), "{}", broker.log());

    // Space returns: the broker writes what it held and carries on, no restart.
    disk.free(&filler);
    assert!(broker.wait_for_log("audit log writable again", WAIT), "{}", broker.log());
    publish(&mut alice, 3, &mut sent);
    collect(&mut bob, &mut delivered, Duration::from_secs(2));
    assert_eq!(sent.len() - delivered.len(), refused_alice, "after the outage every publish is delivered again");
    let push = push_policy(&fleet, &broker);
    assert!(push.status.success(), "a policy push after the outage: {}{}", String::from_utf8_lossy(&push.stdout), String::from_utf8_lossy(&push.stderr));
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    let key = fleet.broker_public_key();
    let out = test_harness::fleet::mqseal(&["audit", "verify", log_path.to_str().unwrap(), "--broker-key", key.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let all = log_records(&log_path);
    let accepted: Vec<String> = all
        .iter()
        .filter(|r| r["kind"] == "publish.accepted")
        .map(|r| r["facts"]["envelope_sha256"].as_str().unwrap().to_string())
        .collect();
    let mut delivered_hashes: Vec<String> = delivered.iter().map(|d| hex_sha256(d)).collect();
    let mut accepted_sorted = accepted.clone();
    accepted_sorted.sort();
    delivered_hashes.sort();
    assert_eq!(accepted_sorted, delivered_hashes, "every delivered publish has its one record, and nothing else is recorded accepted");
    let outages: Vec<&Value> = all.iter().filter(|r| r["kind"] == "log.outage").collect();
    assert_eq!(outages.len(), 1, "{outages:#?}");
    let facts = &outages[0]["facts"];
    // Refused during the outage: alice's publishes, the flooder's denials (not
    // recordable then) and the policy push.
    assert_eq!(facts["refused"].as_u64(), Some(refused_alice as u64 + 4 + 1), "{}", outages[0]);
    assert_eq!(all.iter().filter(|r| r["kind"] == "policy.pushed").count(), 1, "only the push after the outage took effect");
    assert!(facts["held"].as_u64().unwrap() >= 1, "the kick was decided during the outage and held: {}", outages[0]);
    let kicked: Vec<&Value> = all.iter().filter(|r| r["kind"] == "client.kicked").collect();
    assert_eq!(kicked.len(), 1, "only the flooder is kicked: {kicked:#?}");
    assert_eq!(kicked[0]["facts"]["client"], "eve-flood");
    assert_eq!(kicked[0]["facts"]["reason"], "flood");
    eprintln!(
        "{} sent by alice, {} delivered, {refused_alice} refused during the outage; log.outage: {}",
        sent.len(),
        delivered.len(),
        outages[0]["facts"]
    );
    drop(broker);
}

/// A fresh login token of `device` for `client_id` (`mqseal token`).
fn token(fleet: &test_harness::Fleet, device: &str, client_id: &str) -> String {
    let dir = fleet.device_dir(device);
    let out = test_harness::fleet::mqseal_ok(&["token", "--device", dir.to_str().unwrap(), "-i", client_id], None);
    String::from_utf8(out).unwrap().trim().to_string()
}

/// Logs in as `device` with a fresh token and publishes on an unprotected
/// topic: true if the broker let the client in.
fn logs_in(fleet: &test_harness::Fleet, broker: &test_harness::Broker, device: &str, client_id: &str) -> bool {
    let password = token(fleet, device, client_id);
    let out = test_harness::clients::mosquitto_pub(broker.port(), &["-u", device, "-P", &password, "-i", client_id, "-t", "open/x", "-m", "hi"]);
    out.status.success()
}

#[test]
fn logins_are_refused_while_the_log_cannot_record_them_and_accepted_after() {
    let Some(disk) = small_disk(1024 * 1024) else { return };
    let fleet = test_harness::Fleet::sensors();
    let log_path = disk.path().join("audit.jsonl");
    let config = fleet
        .broker_config("allow")
        .option("auth", "key")
        .option("audit_log", log_path.to_str().unwrap())
        .option("state_dir", "{dir}")
        .option("audit_batch_ms", "5");
    let mut broker = test_harness::Broker::start(config);
    assert!(logs_in(&fleet, &broker, "bob", "bob-1"), "bob logs in\n{}", broker.log());

    let filler = disk.fill();
    // Logins are the traffic here: each needs an auth.accepted record.
    let started = Instant::now();
    let mut n = 2;
    while logs_in(&fleet, &broker, "bob", &format!("bob-{n}")) {
        n += 1;
        assert!(started.elapsed() < WAIT, "logins were still accepted long after the disk filled\n{}", broker.log());
    }
    let refused_at = n;
    assert!(broker.log().contains(&format!("refused login of client 'bob-{refused_at}' as device bob")), "{}", broker.log());
    assert!(!logs_in(&fleet, &broker, "alice", "alice-1"), "a login during the outage must be refused");

    disk.free(&filler);
    assert!(broker.wait_for_log("audit log writable again", WAIT), "{}", broker.log());
    assert!(logs_in(&fleet, &broker, "alice", "alice-2"), "logins work again after the outage\n{}", broker.log());
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    let all = log_records(&log_path);
    let accepted: Vec<&str> = all.iter().filter(|r| r["kind"] == "auth.accepted").map(|r| r["facts"]["client"].as_str().unwrap()).collect();
    for client in ["bob-1", "alice-2"] {
        assert!(accepted.contains(&client), "no auth.accepted for {client}: {accepted:?}");
    }
    for client in [format!("bob-{refused_at}"), "alice-1".to_string()] {
        assert!(!accepted.contains(&client.as_str()), "a refused login has an auth.accepted record: {client}");
    }
    // Every login the broker let in during the fill (bob-2 .. before refused_at) has its record.
    for k in 2..refused_at {
        let client = format!("bob-{k}");
        assert!(accepted.contains(&client.as_str()), "{client} was let in without a record: {accepted:?}");
    }
    let outage = all.iter().find(|r| r["kind"] == "log.outage").expect("log.outage");
    assert_eq!(outage["facts"]["refused"].as_u64(), Some(2), "the two refused logins: {outage}");
}
