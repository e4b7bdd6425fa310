//! The plugin loads into a real Mosquitto, passes unprotected traffic untouched
//! according to `plugin_opt_unprotected`, and refuses to start on bad options.

use std::time::Duration;

use test_harness::clients::{mosquitto_pub, MosquittoSub, OwnClient};
use test_harness::{Broker, BrokerConfig};

const WAIT: Duration = Duration::from_secs(5);

/// Every byte value, plus bytes that trip text handling (NUL, CR/LF, invalid UTF-8).
fn tricky_payload() -> Vec<u8> {
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice(b"\r\n\0\xff\xfe end");
    payload
}

#[test]
fn plugin_loads_and_logs_its_start() {
    let broker = Broker::start(BrokerConfig::mqseal("allow"));
    let log = broker.log();
    assert!(log.contains("Loading plugin:"), "{log}");
    assert!(log.contains("mqseal: plugin 0.1.0 loaded"), "{log}");
}

#[test]
fn unprotected_allow_passes_every_qos_byte_for_byte_with_mosquitto_clients() {
    let broker = Broker::start(BrokerConfig::mqseal("allow"));
    let payload = tricky_payload();
    let payload_file = broker.path("payload.bin");
    std::fs::write(&payload_file, &payload).unwrap();
    for qos in ["0", "1", "2"] {
        let topic = format!("plain/qos{qos}");
        let mut sub = MosquittoSub::start(broker.port(), &topic, &["-q", qos]).expect("subscribe");
        let out = mosquitto_pub(broker.port(), &["-t", &topic, "-q", qos, "-f", payload_file.to_str().unwrap()]);
        assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
        let got = sub.next_message(WAIT).unwrap_or_else(|| panic!("no message at QoS {qos}: {}", sub.output()));
        assert_eq!(got.topic, topic);
        assert_eq!(got.payload, payload, "payload changed at QoS {qos}");
    }
}

#[test]
fn unprotected_allow_passes_every_qos_byte_for_byte_with_our_client() {
    let broker = Broker::start(BrokerConfig::mqseal("allow"));
    let payload = tricky_payload();
    let mut subscriber = OwnClient::connect(broker.port(), "own-sub", None).unwrap();
    assert!(subscriber.subscribe("plain/#", 2).unwrap(), "subscription refused");
    let mut publisher = OwnClient::connect(broker.port(), "own-pub", None).unwrap();
    for qos in 0..=2u8 {
        let topic = format!("plain/own/{qos}");
        publisher.publish(&topic, qos, false, &payload).unwrap();
        let got = subscriber.recv(WAIT).unwrap_or_else(|| panic!("nothing received at QoS {qos}"));
        assert_eq!(got.topic, topic);
        assert_eq!(got.qos, qos);
        assert_eq!(got.payload, payload, "payload changed at QoS {qos}");
    }
}

#[test]
fn retained_messages_reach_later_subscribers_unchanged() {
    let broker = Broker::start(BrokerConfig::mqseal("allow"));
    let payload = tricky_payload();
    let mut publisher = OwnClient::connect(broker.port(), "retainer", None).unwrap();
    publisher.publish("plain/retained", 1, true, &payload).unwrap();
    // A subscriber that arrives afterwards gets it from the retained store (ACL READ on subscribe).
    let mut sub = MosquittoSub::start(broker.port(), "plain/retained", &[]).expect("subscribe");
    let got = sub.next_message(WAIT).unwrap_or_else(|| panic!("no retained message: {}", sub.output()));
    assert!(got.retained, "message not flagged retained");
    assert_eq!(got.payload, payload);
    let mut own = OwnClient::connect(broker.port(), "late-own", None).unwrap();
    assert!(own.subscribe("plain/retained", 1).unwrap());
    let got = own.recv(WAIT).expect("own client: no retained message");
    assert!(got.retain);
    assert_eq!(got.payload, payload);
}

#[test]
fn unprotected_deny_refuses_subscribe_and_publish() {
    let broker = Broker::start(BrokerConfig::mqseal("deny"));
    let refused = MosquittoSub::start(broker.port(), "plain/x", &[]).err().expect("subscription must be refused");
    assert!(refused.contains("denied"), "{refused}");
    let mut own = OwnClient::connect(broker.port(), "deny-own", None).unwrap();
    assert!(!own.subscribe("plain/x", 1).unwrap(), "our client's subscription must be refused");
    // MQTT 5: the publish is answered "not authorised" (reason 0x87).
    let out = mosquitto_pub(broker.port(), &["-V", "mqttv5", "-t", "plain/x", "-q", "1", "-m", "hello", "-d"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("rc135") || text.to_lowercase().contains("not authori"), "{text}");
    assert!(broker.wait_for_log("Denied PUBLISH", WAIT), "{}", broker.log());
}

#[test]
fn unprotected_defer_leaves_the_decision_to_mosquitto() {
    // mqseal defers; with no other plugin or acl_file... every ACL callback deferring means
    // Mosquitto denies (see shared facts), so a deferring mqseal alone is closed.
    let broker = Broker::start(BrokerConfig::mqseal("defer"));
    let refused = MosquittoSub::start(broker.port(), "plain/x", &[]).err().expect("subscription must be refused");
    assert!(refused.contains("denied"), "{refused}");
}

fn expect_refusal(config: BrokerConfig, option: &str, detail: &str) {
    let failure = Broker::try_start(config).err().expect("the broker must refuse to start");
    let status = failure.status.expect("the broker must exit, not hang");
    assert!(!status.success(), "exit status {status:?} must be non-zero");
    let expected = format!("mqseal: refusing to start: plugin_opt_{option}: ");
    let line = failure.log.lines().find(|l| l.contains(&expected)).unwrap_or_else(|| panic!("no line naming {option}:\n{}", failure.log));
    assert!(line.contains(detail), "{line}");
}

#[test]
fn unknown_option_stops_the_broker_and_is_named() {
    expect_refusal(BrokerConfig::mqseal("allow").option("unprotectd", "allow"), "unprotectd", "unknown option");
}

#[test]
fn missing_policy_file_stops_the_broker_and_is_named() {
    let config = BrokerConfig::mqseal("allow").option("policy", "{dir}/no-such-policy.json");
    expect_refusal(config, "policy", "no-such-policy.json");
}

#[test]
fn missing_required_option_and_bad_value_stop_the_broker() {
    expect_refusal(BrokerConfig::mqseal("allow").without_option("policy"), "policy", "required");
    expect_refusal(BrokerConfig::mqseal("sometimes"), "unprotected", "'sometimes' is not one of allow | deny | defer");
}

/// Turns on `per_listener_settings` and adds a second loopback listener that loads
/// the plugin again with the first one's options, except `overrides`.
fn with_second_listener(mut config: BrokerConfig, overrides: &[(&str, &str)]) -> (BrokerConfig, u16) {
    let port2 = test_harness::broker::free_port();
    config.leading_lines.push("per_listener_settings true".into());
    let plugin = test_harness::artifacts().plugin.display().to_string();
    let mut second = vec![format!("listener {port2} 127.0.0.1"), "allow_anonymous true".into(), format!("plugin {plugin}")];
    for (name, value) in &config.plugin_options {
        let value = overrides.iter().find(|(n, _)| n == name).map_or(value.as_str(), |(_, v)| *v);
        second.push(format!("plugin_opt_{name} {value}"));
    }
    config.trailing_lines.extend(second);
    (config, port2)
}

#[test]
fn two_listeners_with_per_listener_settings_each_get_their_own_instance() {
    // Instance 1 (the harness's listener) allows unprotected topics; instance 2, on a
    // second listener with its own audit log and state, denies them.
    let (config, port2) = with_second_listener(
        BrokerConfig::mqseal("allow").file("l2/.keep", ""),
        &[("audit_log", "{dir}/l2/audit.jsonl"), ("unprotected", "deny")],
    );
    let broker = Broker::start(config);
    assert_eq!(broker.log().matches("mqseal: plugin 0.1.0 loaded").count(), 2, "{}", broker.log());
    assert!(broker.log().contains("unprotected Allow") && broker.log().contains("unprotected Deny"), "{}", broker.log());

    let mut sub = MosquittoSub::start(broker.port(), "plain/a", &[]).expect("instance 1 allows");
    let out = mosquitto_pub(broker.port(), &["-t", "plain/a", "-m", "one"]);
    assert!(out.status.success());
    assert_eq!(sub.next_message(WAIT).expect("delivered on listener 1").payload, b"one");

    let refused = MosquittoSub::start(port2, "plain/a", &[]).err().expect("instance 2 denies");
    assert!(refused.contains("denied"), "{refused}");
    assert!(broker.path("l2/audit.jsonl").exists(), "instance 2 writes its own audit log");
}

#[test]
fn two_instances_on_one_audit_log_refuse_to_start() {
    // A second listener's instance pointed at the same audit log would fork its chain.
    let (config, _port2) = with_second_listener(BrokerConfig::mqseal("allow"), &[]);
    let failure = Broker::try_start(config).err().expect("the broker must refuse to start");
    assert!(!failure.status.expect("exits").success());
    assert!(failure.log.contains("refusing to start: plugin_opt_audit_log:") && failure.log.contains("lock"), "{}", failure.log);
}

#[test]
fn the_audit_origin_option_names_the_log_in_its_checkpoints() {
    let mut broker = Broker::start(BrokerConfig::mqseal("allow").option("audit_origin", "example.org/plant-7/audit"));
    broker.stop();
    let checkpoint = std::fs::read_to_string(broker.path("audit.jsonl.checkpoint")).unwrap();
    assert_eq!(checkpoint.lines().next(), Some("example.org/plant-7/audit"), "{checkpoint}");
}
