//! Every refusal has an audit record with its reason (issue 13, item 5), and
//! refusals cannot grow the audit log without bound: publish and subscription
//! refusals count towards the flood limit (the client is disconnected), and
//! deliveries withheld from a subscriber are recorded once per client and
//! reason, then counted (docs/AUDIT.md, `delivery.withheld`).

use std::time::{Duration, Instant};

use test_harness::audit_read::{audit_records, fact, output_text};
use test_harness::clients::{mosquitto_pub, MosquittoSub, OwnClient};
use test_harness::{Broker, Fleet};

const WAIT: Duration = Duration::from_secs(10);

/// Waits until the records of `kind` of `client` satisfy `done`; returns them.
fn wait_records(broker: &Broker, kind: &str, client: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<_> = audit_records(broker, kind).into_iter().filter(|r| fact(r, "client") == client).collect();
        if done(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "{kind} records of {client}: {found:?}; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_publish_refused_on_an_unprotected_topic_is_audited() {
    let fleet = Fleet::sensors();
    let broker = Broker::start(fleet.broker_config("deny"));
    let out = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-d", "-i", "lamp-1", "-t", "open/lamp", "-m", "on", "-q", "1"]);
    assert!(output_text(&out).contains("RC:135)"), "{}", output_text(&out));
    let records = wait_records(&broker, "publish.denied", "lamp-1", |r| !r.is_empty());
    assert_eq!(fact(&records[0], "reason"), "unprotected-denied");
    assert_eq!(fact(&records[0], "topic"), "open/lamp");
}

#[test]
fn deliveries_withheld_are_recorded_once_then_counted() {
    let fleet = Fleet::sensors();
    let broker = Broker::start(fleet.broker_config("allow"));
    // eve, no member, may subscribe to '#' (it also reaches unprotected topics),
    // but every protected message is withheld from her.
    let mut eve = MosquittoSub::start(broker.port(), "#", &["-u", "eve", "-i", "eve-all"]).expect("eve subscribes");
    for i in 0..3 {
        let envelope = fleet.seal("alice", "sensors/t", format!("m{i}").as_bytes());
        let file = broker.path("m.cose");
        std::fs::write(&file, envelope).unwrap();
        let out = mosquitto_pub(broker.port(), &["-u", "alice", "-i", "alice-1", "-t", "sensors/t", "-q", "1", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let marker = mosquitto_pub(broker.port(), &["-i", "marker", "-t", "open/marker", "-m", "done", "-q", "1"]);
    assert!(marker.status.success());
    assert_eq!(eve.next_message(WAIT).expect("eve gets the unprotected marker").topic, "open/marker");
    // The first withholding at once, with its topic.
    let first = wait_records(&broker, "delivery.withheld", "eve-all", |r| !r.is_empty());
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((fact(&first[0], "reason"), fact(&first[0], "count"), fact(&first[0], "topic")), (&"not-a-reader".into(), &1.into(), &"sensors/t".into()));
    // The rest when she leaves.
    drop(eve);
    let all = wait_records(&broker, "delivery.withheld", "eve-all", |r| r.len() == 2);
    assert_eq!(fact(&all[1], "count"), 2, "{all:?}");
    assert_eq!(fact(&all[1], "reason"), "not-a-reader");
}

#[test]
fn a_flood_of_refused_subscriptions_gets_the_client_disconnected() {
    let fleet = Fleet::sensors();
    let broker = Broker::start(fleet.broker_config("allow").option("flood_limit", "5"));
    let mut eve = OwnClient::connect(broker.port(), "eve-flood", Some(("eve", "x"))).expect("eve connects");
    for _ in 0..6 {
        if eve.subscribe("sensors/#", 0) != Ok(false) {
            break;
        }
    }
    eve.wait_disconnected(WAIT).expect("disconnected for the flood");
    let records = wait_records(&broker, "client.kicked", "eve-flood", |r| !r.is_empty());
    assert_eq!(fact(&records[0], "reason"), "flood");
    assert!(audit_records(&broker, "subscribe.denied").iter().filter(|r| fact(r, "client") == "eve-flood").count() <= 6);
}

#[test]
fn a_bridged_message_on_a_control_topic_is_refused_and_audited() {
    // Messages that arrive over a bridge skip Mosquitto's ACL checks: mqseal judges
    // them in the MESSAGE event, and a refusal there is recorded too.
    let remote = Broker::start(test_harness::BrokerConfig::plain());
    let fleet = Fleet::sensors();
    let mut config = fleet.broker_config("allow");
    config.trailing_lines.extend([
        "connection from-remote".to_string(),
        format!("address 127.0.0.1:{}", remote.port()),
        "remote_clientid remote-bridge".to_string(),
        "topic $mqseal/# in 1".to_string(),
        "topic sensors/# in 1".to_string(),
    ]);
    let broker = Broker::start(config);
    assert!(remote.wait_for_log("as remote-bridge", WAIT), "the bridge did not connect:\n{}", remote.log());
    // Wait until the bridge's subscriptions are in place on the remote side.
    assert!(remote.wait_for_log("remote-bridge 1 sensors/#", WAIT), "{}", remote.log());
    for topic in ["$mqseal/policy", "sensors/t"] {
        let out = mosquitto_pub(remote.port(), &["-i", "remote-pub", "-t", topic, "-m", "not an envelope", "-q", "1"]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let denied = audit_records(&broker, "publish.denied");
        let reasons: Vec<(String, String)> = denied
            .iter()
            .map(|r| (fact(r, "topic").as_str().unwrap_or_default().to_string(), fact(r, "reason").as_str().unwrap_or_default().to_string()))
            .collect();
        if reasons.iter().any(|(t, r)| t == "$mqseal/policy" && r == "reserved-topic") && reasons.iter().any(|(t, _)| t == "sensors/t") {
            break;
        }
        assert!(Instant::now() < deadline, "bridged refusals not recorded: {reasons:?}\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
