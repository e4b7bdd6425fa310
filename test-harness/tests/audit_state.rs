//! The broker's state files are checked against the audit log at start: an
//! edited replay snapshot (a lowered high water, a sender deleted, high_water
//! emptied) or a lowered policy-version with an old policy file put back never
//! weakens what the broker enforces. Each is rebuilt from the log, refused and
//! recorded, and the log verifies. Also: for the same edited log line, the
//! plugin's start-up refusal and `mqseal audit verify` name the same line.

use std::time::Duration;

use mqseal_core::formats::audit::hashing::{sha256, to_hex};
use serde_json::Value;
use test_harness::clients::publish_raw;
use test_harness::audit_read::{log_records, of_kind};
use test_harness::clients::MosquittoSub;
use test_harness::fleet::mqseal;
use test_harness::{Broker, Fleet};

const TOPIC: &str = "sensors/temp";
const WAIT: Duration = Duration::from_secs(15);

/// alice and carol publish in group `sensors`, bob and dave read it.
fn sensor_fleet() -> Fleet {
    let fleet = Fleet::new();
    for device in ["alice", "bob", "carol", "dave"] {
        fleet.add_device(device);
    }
    fleet.add_group("sensors", &["sensors/#"], 3600);
    fleet.add_member("sensors", "alice", "pub").add_member("sensors", "carol", "pub");
    fleet.add_member("sensors", "bob", "sub").add_member("sensors", "dave", "sub");
    for device in ["alice", "bob", "carol", "dave"] {
        fleet.join(device);
    }
    fleet
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `mqseal audit verify` on the broker's log: its exit code and output.
fn verify(fleet: &Fleet, broker: &Broker) -> (Option<i32>, String) {
    let key = fleet.broker_public_key();
    let log = broker.path("audit.jsonl");
    let out = mqseal(&["audit", "verify", log.to_str().unwrap(), "--broker-key", key.to_str().unwrap()], None);
    (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

fn assert_verifies(fleet: &Fleet, broker: &Broker) {
    let (code, out) = verify(fleet, broker);
    assert_eq!(code, Some(0), "audit verify must pass: {out}");
}

/// Edits the `high_water` object of the replay snapshot in the state directory.
fn edit_high_water(broker: &Broker, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = broker.path("replay.json");
    let mut snapshot: Value = serde_json::from_slice(&std::fs::read(&path).expect("a snapshot after a clean stop")).unwrap();
    edit(snapshot["high_water"].as_object_mut().expect("high_water"));
    std::fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
}

/// alice and carol publish twice each; the broker stops cleanly (writing the
/// snapshot), `edit` changes the state directory, the broker starts again, and
/// alice's and carol's last envelopes are sent again. They must be refused as
/// replays, recorded, and the start must say it rebuilt the window.
fn replay_after_editing(edit: impl FnOnce(&Broker)) {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(fleet.broker_config("allow").option("state_dir", "{dir}"));
    let mut last = Vec::new();
    for device in ["alice", "carol"] {
        for n in 0..2 {
            let envelope = fleet.seal(device, TOPIC, format!("{device} {n}").as_bytes());
            publish_raw(&broker, TOPIC, device, &format!("{device}-{n}"), &envelope);
            if n == 1 {
                last.push((device, envelope));
            }
        }
    }
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());
    edit(&broker);

    broker.restart().unwrap_or_else(|failure| panic!("restart: {failure}"));
    let mut bob = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "bob", "-i", "bob-sub"]).expect("bob subscribes");
    for (device, envelope) in &last {
        publish_raw(&broker, TOPIC, device, &format!("{device}-replay"), envelope);
    }
    // A fresh message still goes through, and nothing before it reached bob.
    let fresh = fleet.seal("alice", TOPIC, b"fresh");
    publish_raw(&broker, TOPIC, "alice", "alice-fresh", &fresh);
    let first = bob.next_message(WAIT).unwrap_or_else(|| panic!("nothing delivered\n{}", broker.log()));
    assert_eq!(first.payload, fresh, "a replayed envelope was delivered\n{}", broker.log());
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    assert_verifies(&fleet, &broker);
    let all = log_records(&broker.path("audit.jsonl"));
    for (device, envelope) in &last {
        let hash = to_hex(&sha256(envelope));
        let accepted = of_kind(&all, "publish.accepted").into_iter().filter(|r| r["facts"]["envelope_sha256"] == hash.as_str()).count();
        assert_eq!(accepted, 1, "{device}'s envelope was accepted {accepted} times: replayed after the edit");
        let denied = of_kind(&all, "publish.denied")
            .into_iter()
            .any(|r| r["facts"]["envelope_sha256"] == hash.as_str() && r["facts"]["reason"] == "replay");
        assert!(denied, "{device}'s replay is not recorded as publish.denied (replay)");
    }
    let rebuilt = of_kind(&all, "state.rebuilt");
    assert!(
        rebuilt.iter().any(|r| r["facts"]["file"] == "replay.json" && r["facts"]["reason"] == "snapshot-bad-signature"),
        "no state.rebuilt record for the edited snapshot: {rebuilt:#?}"
    );
    assert!(broker.log().contains("replay.json not used as found (snapshot-bad-signature)"), "{}", broker.log());
}

#[test]
fn a_lowered_high_water_in_the_snapshot_lets_no_replay_through() {
    replay_after_editing(|broker| {
        edit_high_water(broker, |hw| {
            // One bit: 2 -> 0 is two, 3 -> 2 is one; whatever alice's mark is, clear its lowest set bit.
            let seq = hw["alice"].as_u64().unwrap();
            hw.insert("alice".into(), Value::from(seq & (seq - 1)));
        })
    });
}

#[test]
fn a_sender_deleted_from_the_snapshot_lets_no_replay_through() {
    replay_after_editing(|broker| {
        edit_high_water(broker, |hw| {
            hw.remove("alice").expect("alice in the snapshot");
        })
    });
}

#[test]
fn an_emptied_high_water_lets_no_replay_through() {
    replay_after_editing(|broker| edit_high_water(broker, |hw| hw.clear()));
}

/// The version a broker log line `policy version N loaded on ...` names last.
fn loaded_version(log: &str) -> u64 {
    let tail = log.rsplit("policy version ").next().unwrap();
    tail.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("no version in: {tail}"))
}

/// dave is removed from the group by a reload; the broker stops cleanly; the old
/// policy file is put back and `policy-version` lowered (`also` may do more).
/// The broker must refuse to start with the old policy, and record why.
fn old_policy_put_back(also: impl FnOnce(&Broker)) {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(fleet.broker_config("allow").option("state_dir", "{dir}"));
    let old_policy = std::fs::read(broker.path("policy.json")).unwrap();
    assert!(broker.wait_for_log("policy version", WAIT));
    let old_version = loaded_version(&broker.log());
    MosquittoSub::start(broker.port(), "sensors/#", &["-u", "dave", "-i", "dave-sub"]).expect("dave may read before");
    fleet.remove_member("sensors", "dave");
    fleet.install_policy(broker.dir());
    broker.sighup();
    assert!(broker.wait_for_log("loaded on reload", WAIT), "{}", broker.log());
    let new_version = loaded_version(&broker.log());
    assert!(new_version > old_version);
    assert!(MosquittoSub::start(broker.port(), "sensors/#", &["-u", "dave", "-i", "dave-sub2"]).is_err(), "dave was removed");
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    std::fs::write(broker.path("policy.json"), &old_policy).unwrap();
    std::fs::write(broker.path("policy-version"), format!("{old_version}\n")).unwrap();
    also(&broker);
    let records_before = log_records(&broker.path("audit.jsonl")).len();
    match broker.restart() {
        Ok(()) => {
            let dave = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "dave", "-i", "dave-sub3"]);
            panic!(
                "the broker started with the old policy version {old_version} (dave may read again: {})\n{}",
                dave.is_ok(),
                broker.log()
            );
        }
        Err(failure) => {
            assert!(failure.log.contains(&format!("older than version {new_version}")), "{failure}");
        }
    }
    assert_verifies(&fleet, &broker);
    let all = log_records(&broker.path("audit.jsonl"));
    let this_start = &all[records_before..];
    let rebuilt = of_kind(this_start, "state.rebuilt");
    assert!(
        rebuilt.iter().any(|r| r["facts"]["file"] == "policy-version" && r["facts"]["reason"] == "policy-version-below-log"),
        "no state.rebuilt record for the lowered policy-version: {rebuilt:#?}"
    );
    let rejected = of_kind(this_start, "policy.rejected");
    assert_eq!(rejected.len(), 1, "{this_start:#?}");
    assert!(rejected[0]["facts"]["reason"].as_str().unwrap().starts_with("policy-not-newer"), "{}", rejected[0]);
    assert!(of_kind(this_start, "policy.loaded").is_empty(), "the old policy was recorded as loaded");
}

#[test]
fn a_lowered_policy_version_with_the_old_policy_back_is_refused() {
    old_policy_put_back(|_| {});
}

#[test]
fn a_lowered_policy_version_and_a_deleted_snapshot_are_caught_from_the_log() {
    // Without the snapshot, the floor comes from the policy.loaded records alone.
    old_policy_put_back(|broker| std::fs::remove_file(broker.path("replay.json")).unwrap());
}

#[test]
fn the_plugin_and_audit_verify_name_the_same_line_of_an_edited_log() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(fleet.broker_config("allow"));
    for n in 0..3 {
        publish_raw(&broker, TOPIC, "alice", &format!("alice-{n}"), &fleet.seal("alice", TOPIC, b"reading"));
    }
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    // Change the client id of the second publish.accepted record, keeping it valid JSON.
    let log = broker.path("audit.jsonl");
    let body = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    let edited = lines.iter().enumerate().filter(|(_, l)| l.contains("\"kind\":\"publish.accepted\"")).nth(1).unwrap().0;
    lines[edited] = lines[edited].replace("\"client\":\"alice-1\"", "\"client\":\"alice-9\"");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let expected = format!("audit.jsonl:{}:", edited + 1);

    let failure = broker.restart().expect_err("the plugin must refuse the edited log");
    let refusal = failure.log.lines().find(|l| l.contains("audit chain broken")).unwrap_or_else(|| panic!("{failure}")).to_string();
    let (code, out) = verify(&fleet, &broker);
    assert_eq!(code, Some(1), "{out}");
    assert!(refusal.contains(&expected), "the plugin's refusal does not name line {}: {refusal}", edited + 1);
    assert!(out.contains(&expected), "audit verify does not name line {}: {out}", edited + 1);
}
