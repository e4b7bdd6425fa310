//! `+`, `#` and `/` in client ids and usernames (issue 13, item 6). Client ids
//! with `/` are legal MQTT and common; plain Mosquitto accepts them. mqseal
//! refuses such clients only where the characters could do harm: on protected
//! and control topics, in the logins of devices, and everywhere with
//! `plugin_opt_unprotected defer`, where a later ACL mechanism may substitute
//! them into its `%c` / `%u` patterns. On unprotected topics with `allow`, such a
//! client is served exactly as plain Mosquitto serves it.

use std::time::Duration;

use test_harness::audit_read::{audit_records, fact, output_text};
use test_harness::clients::{mosquitto_pub, MosquittoSub};
use test_harness::fleet::mqseal;
use test_harness::{Broker, BrokerConfig, Fleet};

const WAIT: Duration = Duration::from_secs(10);

fn fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_device("alice").add_device("bob");
    fleet.add_group("sensors", &["sensors/#"], 3600);
    fleet.add_member("sensors", "alice", "pub").add_member("sensors", "bob", "sub");
    fleet.join("alice").join("bob");
    fleet
}

/// Waits for a `kind` record of `client` and returns its reason.
fn audited_reason(broker: &Broker, kind: &str, client: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = audit_records(broker, kind).into_iter().find(|r| fact(r, "client") == client) {
            return fact(&r, "reason").as_str().unwrap_or_default().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no {kind} record of {client}; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What clients with `/`, `+` in their client id, and `/` in their username, get on
/// an unprotected topic: (subscribed?, messages received, puback of an MQTT 5 publish).
fn unprotected_round_trip(broker: &Broker) -> Vec<String> {
    let mut seen = Vec::new();
    for (client_id, username) in [("plant/line-1", None), ("meter+2", None), ("display-3", Some("team/a"))] {
        let mut sub_args = vec!["-i", client_id, "-q", "1"];
        if let Some(u) = username {
            sub_args.extend_from_slice(&["-u", u]);
        }
        let mut sub = match MosquittoSub::start(broker.port(), "open/#", &sub_args) {
            Ok(sub) => sub,
            Err(out) => {
                seen.push(format!("{client_id}: subscription refused: {}", out.lines().last().unwrap_or_default()));
                continue;
            }
        };
        let publisher = format!("{client_id}/pub");
        let mut pub_args = vec!["-V", "mqttv5", "-d", "-i", &publisher, "-t", "open/x", "-m", client_id, "-q", "1"];
        if let Some(u) = username {
            pub_args.extend_from_slice(&["-u", u]);
        }
        let out = mosquitto_pub(broker.port(), &pub_args);
        let puback = output_text(&out).lines().find(|l| l.contains("received PUBACK")).unwrap_or("no PUBACK").to_string();
        let accepted = puback.contains("RC:0)") || puback.contains("RC:16)");
        seen.push(format!("{client_id}: subscribed, publish accepted: {accepted}"));
        let got = sub.next_message(WAIT).map(|m| String::from_utf8_lossy(&m.payload).into_owned());
        seen.push(format!("{client_id}: received {got:?}"));
    }
    seen
}

#[test]
fn with_unprotected_allow_clients_with_pattern_characters_are_served_as_plain_mosquitto_serves_them() {
    let plain = unprotected_round_trip(&Broker::start(BrokerConfig::plain()));
    assert!(plain.iter().all(|l| !l.contains("refused") && !l.contains("false") && !l.contains("None")), "{plain:#?}");
    let fleet = fleet();
    let broker = Broker::start(fleet.broker_config("allow"));
    assert_eq!(unprotected_round_trip(&broker), plain, "{}", broker.log());
}

#[test]
fn pattern_characters_are_still_refused_on_protected_topics_and_with_unprotected_defer() {
    let fleet = fleet();
    let broker = Broker::start(fleet.broker_config("allow"));
    // A protected topic: the publish, and a subscription that reaches a group bob may read.
    let envelope = fleet.seal("alice", "sensors/t", b"from a tricky client id");
    let file = broker.path("envelope.bin");
    std::fs::write(&file, &envelope).unwrap();
    let out = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-d", "-u", "alice", "-i", "alice/1", "-t", "sensors/t", "-q", "1", "-f", file.to_str().unwrap()]);
    assert!(output_text(&out).contains("RC:135)"), "expected PUBACK 0x87: {}", output_text(&out));
    assert_eq!(audited_reason(&broker, "publish.denied", "alice/1"), "bad-client-id");
    let refused = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "bob", "-i", "bob/sub"]).err().expect("refused");
    assert!(refused.contains("denied"), "{refused}");
    assert_eq!(audited_reason(&broker, "subscribe.denied", "bob/sub"), "bad-client-id");
    let refused = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "bob/x", "-i", "bob-x"]).err().expect("refused");
    assert!(refused.contains("denied"), "{refused}");
    assert_eq!(audited_reason(&broker, "subscribe.denied", "bob-x"), "bad-username");
    // The control topics are mqseal's too.
    let refused = MosquittoSub::start(broker.port(), "$mqseal/identity/+", &["-i", "viewer/1"]).err().expect("refused");
    assert!(refused.contains("denied"), "{refused}");
    assert_eq!(audited_reason(&broker, "subscribe.denied", "viewer/1"), "bad-client-id");

    // unprotected defer: an acl_file after mqseal may expand %c, so even unprotected topics are refused.
    let acl = "pattern readwrite open/%c/#\n";
    let broker = Broker::start(fleet.broker_config("defer").file("acl", acl).line("acl_file {dir}/acl"));
    let out = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-d", "-i", "a/+", "-t", "open/a/b/x", "-m", "m", "-q", "1"]);
    assert!(output_text(&out).contains("RC:135)"), "expected PUBACK 0x87: {}", output_text(&out));
    assert_eq!(audited_reason(&broker, "publish.denied", "a/+"), "bad-client-id");
    // ... while an ordinary id gets what the acl_file grants.
    let out = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-d", "-i", "a1", "-t", "open/a1/x", "-m", "m", "-q", "1"]);
    assert!(output_text(&out).contains("RC:0)") || output_text(&out).contains("RC:16)"), "{}", output_text(&out));
}

#[test]
fn a_device_login_with_pattern_characters_is_refused() {
    let fleet = fleet();
    let broker = Broker::start(fleet.broker_config("allow").option("auth", "key"));
    let token = mqseal(&["token", "--device", fleet.device_dir("alice").to_str().unwrap(), "-i", "alice-a/b"], None);
    let token = String::from_utf8(token.stdout).unwrap();
    let out = mosquitto_pub(broker.port(), &["-i", "alice-a/b", "-u", "alice", "-P", token.trim(), "-t", "open/x", "-m", "m"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert_eq!(audited_reason(&broker, "auth.refused", "alice-a/b"), "bad-client-id");
}
