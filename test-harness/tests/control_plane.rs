//! Key exchange through the broker (issue 6), against a real Mosquitto with
//! mqseal: pushed policies (accepted, refused and audited, persisted across a
//! restart), who may read identities, policies and bundles, and the paper's
//! experiment (`examples/paper-scenario/run`) with every outcome checked.

use std::process::Command;
use std::time::Duration;

use test_harness::audit_read::{audit_records, fact, output_text};
use test_harness::artifacts::{artifacts, workspace_root};
use test_harness::clients::{mosquitto_pub, MosquittoSub};
use test_harness::fleet::{mqseal, mqseal_ok};
use test_harness::{Broker, Fleet};

const WAIT: Duration = Duration::from_secs(10);

/// Waits until the audit log holds a record of `kind` for which `pred` holds.
fn wait_audit(broker: &Broker, kind: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = audit_records(broker, kind).into_iter().find(&pred) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "no matching {kind} record; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_args(broker: &Broker) -> [String; 4] {
    ["-H".into(), "127.0.0.1".into(), "-p".into(), broker.port().to_string()]
}

fn push_policy(fleet: &Fleet, broker: &Broker) -> std::process::Output {
    let realm = fleet.realm();
    let p = port_args(broker);
    mqseal(&["policy", "push", "--realm", realm.to_str().unwrap(), &p[0], &p[1], &p[2], &p[3]], None)
}

/// alice publishes on `g/#`, bob reads.
fn small_fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_device("alice").add_device("bob");
    fleet.add_group("g", &["g/#"], 0);
    fleet.add_member("g", "alice", "pub").add_member("g", "bob", "sub");
    fleet
}

#[test]
fn a_pushed_policy_is_applied_and_audited_and_bad_or_old_ones_are_refused() {
    let fleet = small_fleet();
    let broker = Broker::start(fleet.broker_config("deny").option("state_dir", "{dir}"));
    let start_version = fleet.serial();

    // Accepted: a newer version, signed by the trusted authority.
    let out = push_policy(&fleet, &broker);
    assert!(out.status.success(), "{}", output_text(&out));
    let pushed_version = start_version + 1;
    let pushed = wait_audit(&broker, "policy.pushed", |r| fact(r, "serial") == pushed_version);
    assert!(fact(&pushed, "client").as_str().unwrap().starts_with("authority-push-"));
    wait_audit(&broker, "policy.loaded", |r| fact(r, "source") == "push" && fact(r, "serial") == pushed_version);
    assert!(broker.wait_for_log(&format!("policy version {pushed_version} loaded on push"), WAIT), "{}", broker.log());
    let first_push = std::fs::read(broker.path("pushed-policy.json")).expect("the pushed policy is persisted");

    // Refused: a policy signed by another authority (the CLI sees PUBACK 0x87).
    let stranger = small_fleet();
    let out = push_policy(&stranger, &broker);
    assert!(!out.status.success(), "a foreign authority's policy was accepted: {}", output_text(&out));
    assert!(output_text(&out).contains("refused"), "{}", output_text(&out));
    let rejected = wait_audit(&broker, "policy.rejected", |r| fact(r, "reason").as_str().unwrap_or("").contains("doc-wrong-authority"));
    assert_eq!(fact(&rejected, "source"), "push");

    // Refused: our own authority's policy with one byte of the body changed.
    let mut tampered = first_push.clone();
    let at = tampered.windows(7).position(|w| w == b"\"alice\"").expect("alice in the policy") + 1;
    tampered[at] = b'A';
    let file = broker.path("tampered.json");
    std::fs::write(&file, &tampered).unwrap();
    let out = mosquitto_pub(
        broker.port(),
        &["-u", "authority", "-i", "forger", "-t", "$mqseal/policy", "-q", "1", "-V", "mqttv5", "-d", "-f", file.to_str().unwrap()],
    );
    assert!(output_text(&out).contains("RC:135"), "a tampered policy was not refused: {}", output_text(&out));
    wait_audit(&broker, "policy.rejected", |r| fact(r, "reason").as_str().unwrap_or("").contains("doc-bad-signature"));

    // Refused: the first pushed policy again, after a newer one (a rollback).
    assert!(push_policy(&fleet, &broker).status.success());
    let file = broker.path("old.json");
    std::fs::write(&file, &first_push).unwrap();
    let out = mosquitto_pub(
        broker.port(),
        &["-u", "authority", "-i", "rollback", "-t", "$mqseal/policy", "-q", "1", "-V", "mqttv5", "-d", "-f", file.to_str().unwrap()],
    );
    assert!(output_text(&out).contains("RC:135"), "an old policy was not refused: {}", output_text(&out));
    wait_audit(&broker, "policy.rejected", |r| fact(r, "reason").as_str().unwrap_or("").starts_with("policy-not-newer"));

    // Refused: a valid, newer policy published by anyone but the authority.
    let newest = fleet.export_policy();
    let out = mosquitto_pub(
        broker.port(),
        &["-u", "alice", "-i", "alice-1", "-t", "$mqseal/policy", "-q", "1", "-V", "mqttv5", "-d", "-f", newest.to_str().unwrap()],
    );
    assert!(output_text(&out).contains("RC:135"), "a device could push a policy: {}", output_text(&out));
    let denied = wait_audit(&broker, "publish.denied", |r| fact(r, "client") == "alice-1");
    assert_eq!(fact(&denied, "reason"), "not-authority");
}

#[test]
fn a_pushed_policy_survives_a_restart_unless_the_file_is_newer() {
    let fleet = small_fleet();
    let mut broker = Broker::start(fleet.broker_config("deny").option("state_dir", "{dir}"));
    let file_version = fleet.serial();
    // The policy file keeps the start version; carol is added by a push only.
    fleet.add_device("carol");
    fleet.add_member("g", "carol", "sub");
    assert!(push_policy(&fleet, &broker).status.success());
    let pushed_version = file_version + 1;
    wait_audit(&broker, "policy.pushed", |r| fact(r, "serial") == pushed_version);

    broker.restart().expect("restart");
    assert!(
        broker.wait_for_log(&format!("starting with policy version {pushed_version} pushed over MQTT"), WAIT),
        "{}",
        broker.log()
    );
    wait_audit(&broker, "policy.loaded", |r| fact(r, "source") == "start-pushed" && fact(r, "serial") == pushed_version);
    // carol, known only from the pushed policy, may subscribe to the group's topics.
    let sub = MosquittoSub::start(broker.port(), "g/#", &["-u", "carol", "-i", "carol-1"]);
    assert!(sub.is_ok(), "carol was refused after the restart: {:?}", sub.err());

    // A SIGHUP with the older file keeps the pushed policy.
    broker.sighup();
    assert!(broker.wait_for_log("policy reload rejected", WAIT), "{}", broker.log());

    // A newer policy file wins over the persisted push.
    fleet.install_policy(broker.dir());
    broker.restart().expect("restart");
    assert!(broker.wait_for_log("is not older than the pushed policy", WAIT), "{}", broker.log());
    wait_audit(&broker, "policy.loaded", |r| fact(r, "source") == "start" && fact(r, "serial").as_u64() > Some(pushed_version));
}

#[test]
fn identities_are_public_bundles_private_and_control_topics_closed() {
    let fleet = small_fleet();
    let broker = Broker::start(fleet.broker_config("allow").option("state_dir", "{dir}"));
    assert!(push_policy(&fleet, &broker).status.success());
    let (realm, p) = (fleet.realm(), port_args(&broker));
    mqseal_ok(&["bundle", "push", "--all", "--realm", realm.to_str().unwrap(), &p[0], &p[1], &p[2], &p[3]], None);

    // Any client, even one that is no device, reads the signed identities, and
    // can verify them itself against the authority key.
    let mut any = MosquittoSub::start(broker.port(), "$mqseal/identity/+", &["-i", "visitor-1"]).expect("identities are public");
    let cert = any.next_message(WAIT).expect("a retained identity");
    assert!(cert.retained && cert.topic.starts_with("$mqseal/identity/"));
    let doc = String::from_utf8(cert.payload).unwrap();
    assert!(doc.contains("\"format\":\"mqseal-identity-cert-v1\""), "{doc}");

    // Bundles: only their own device.
    let mut bobs = MosquittoSub::start(broker.port(), "$mqseal/bundle/bob", &["-u", "bob", "-i", "bob-1"]).expect("bob reads his bundle");
    assert!(bobs.next_message(WAIT).is_some_and(|m| m.retained), "bob got no bundle");
    for (user, filter) in [("alice", "$mqseal/bundle/bob"), ("alice", "$mqseal/bundle/+"), ("alice", "$mqseal/#"), ("visitor", "$mqseal/policy")] {
        let refused = MosquittoSub::start(broker.port(), filter, &["-u", user, "-i", &format!("{user}-x")]);
        assert!(refused.is_err(), "{user} could subscribe to {filter}");
    }
    // Nobody but the authority writes there, not even a device about itself.
    let out = mosquitto_pub(broker.port(), &["-u", "bob", "-i", "bob-2", "-t", "$mqseal/identity/bob", "-m", "x", "-q", "1", "-V", "mqttv5", "-d"]);
    assert!(output_text(&out).contains("RC:135"), "{}", output_text(&out));
    // A bundle for a group the policy does not list the device in is refused.
    fleet.add_device("carol");
    fleet.add_member("g", "carol", "sub");
    let out = mqseal(&["bundle", "push", "carol", "--realm", realm.to_str().unwrap(), &p[0], &p[1], &p[2], &p[3]], None);
    assert!(!out.status.success(), "a bundle ahead of the policy was accepted: {}", output_text(&out));
    wait_audit(&broker, "publish.denied", |r| {
        fact(r, "topic") == "$mqseal/bundle/carol" && fact(r, "reason") == "control-unknown-device"
    });
}

/// The paper's experiment, as README's main command shows it, with every outcome asserted.
#[test]
fn the_paper_scenario_runs_end_to_end() {
    let fleet = Fleet::new();
    let broker = Broker::start(fleet.broker_config("allow").option("auth", "key").option("state_dir", "{dir}"));
    let work = tempfile::tempdir().expect("tempdir");
    let script = workspace_root().join("examples/paper-scenario/run");
    let out = Command::new(&script)
        .args(["--realm", fleet.realm().to_str().unwrap()])
        .args(["--host", "127.0.0.1", "--port", &broker.port().to_string()])
        .args(["--audit-log", broker.path("audit.jsonl").to_str().unwrap()])
        .args(["--broker-pub", fleet.broker_public_key().to_str().unwrap()])
        .args(["--work", work.path().join("demo").to_str().unwrap()])
        .args(["--mqseal", artifacts().cli.to_str().unwrap()])
        .output()
        .expect("run the scenario");
    let printed = output_text(&out);
    assert!(out.status.success(), "the scenario failed:\n{printed}\nbroker log:\n{}", broker.log());
    assert!(!printed.contains("CHECK FAILED"), "{printed}");
    for expected in [
        "the broker verified and recorded the pushed policy, 4 identities and the key bundles",
        "1114 was refused the subscription to hsu0001/#",
        "1112 read scutest01",
        "1113 read scutest01",
        "1111 was refused the subscription to hsu0002/#",
        "1112 was refused the subscription to hsu0002/#",
        "1113 read scutest02",
        "1112, even subscribed to '#', received nothing of hsu0002",
        "the broker refused the impostor's login: reason=login-bad-signature",
        "the broker refused the forged envelope: reason=sender-mismatch",
        "the broker refused the tampered envelope: reason=bad-signature",
        "the broker refused the replay: reason=replay",
        "1113 read scutest01b exactly once",
        "the broker disconnected 1112's subscriber",
        "1113's running subscriber picked up the new key without a restart",
        "1113 read scutest03 (key epoch 2)",
        "1112 is refused a new subscription to hsu0001/#",
        "1112 cannot open a message sealed after its removal",
        "the audit log's hash chain and signed checkpoints verify",
    ] {
        assert!(printed.contains(&format!("CHECK ok: {expected}")), "missing outcome {expected:?}:\n{printed}");
    }
    // Independently of the script: the broker kicked 1112, and the log verifies.
    assert!(broker.log().contains("disconnecting client 'username 1112 (device 1112)'"), "{}", broker.log());
    let verify = mqseal(
        &["audit", "verify", broker.path("audit.jsonl").to_str().unwrap(), "--broker-key", fleet.broker_public_key().to_str().unwrap()],
        None,
    );
    assert!(verify.status.success() && output_text(&verify).starts_with("OK"), "{}", output_text(&verify));
    let bundles = audit_records(&broker, "bundle.published");
    assert!(bundles.iter().any(|r| fact(r, "group") == "hsu0001" && fact(r, "epoch") == 2 && fact(r, "device") == "1113"));
    assert!(!bundles.iter().any(|r| fact(r, "epoch") == 2 && fact(r, "device") == "1112"), "1112 got the new key");
}

/// A device joins over MQTT, is granted a role later by a pushed policy, and
/// publishes with the key it fetches on connect: no files, no re-join.
#[test]
fn a_right_granted_by_a_push_is_used_without_rejoining() {
    let fleet = small_fleet();
    fleet.add_device("carol");
    let broker = Broker::start(fleet.broker_config("deny").option("state_dir", "{dir}"));
    let (realm, p) = (fleet.realm(), port_args(&broker));
    let realm = realm.to_str().unwrap();
    let net = [p[0].as_str(), p[1].as_str(), p[2].as_str(), p[3].as_str()];
    assert!(push_policy(&fleet, &broker).status.success());
    mqseal_ok(&[&["bundle", "push", "--all", "--realm", realm][..], &net].concat(), None);
    let carol = fleet.device_dir("carol");
    let authority = fleet.realm().join("authority.pub");
    let joined = mqseal_ok(
        &[&["join", "--device", carol.to_str().unwrap(), "--authority", authority.to_str().unwrap()][..], &net].concat(),
        None,
    );
    assert!(String::from_utf8_lossy(&joined).contains("member of no group"), "{}", String::from_utf8_lossy(&joined));
    fleet.join("bob");

    fleet.add_member("g", "carol", "pub");
    assert!(push_policy(&fleet, &broker).status.success());
    mqseal_ok(&[&["bundle", "push", "carol", "bob", "--realm", realm][..], &net].concat(), None);
    let bob = fleet.device_dir("bob");
    let sub = Command::new(&artifacts().cli)
        .args(["sub", "--device", bob.to_str().unwrap(), "-t", "g/#", "-C", "1", "-W", "20"])
        .args(net)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mqseal sub");
    // bob's subscription is in place once the broker logged it (it adds the
    // subscription before it logs the line).
    assert!(broker.wait_for_log(" 0 g/#", WAIT), "{}", broker.log());
    let out = mqseal(&[&["pub", "--device", carol.to_str().unwrap(), "-t", "g/x", "-m", "granted", "-q", "1"][..], &net].concat(), None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("keys updated over MQTT"), "{}", output_text(&out));
    let got = sub.wait_with_output().expect("sub output");
    assert_eq!(String::from_utf8_lossy(&got.stdout), "granted\n", "{}", String::from_utf8_lossy(&got.stderr));
}
