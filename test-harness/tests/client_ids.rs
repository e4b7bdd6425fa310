//! Each device owns its client ids (issue 13, item 1): a device that logs in with
//! another device's client id would make Mosquitto close that device's live
//! connection ("already connected, closing old connection") or throw away its
//! persistent session with the QoS 1 messages queued for it. mqseal refuses
//! such a login (`client-id-not-owned`, recorded as `auth.refused`) before
//! Mosquitto looks the client id up.
//!
//! Every attack here is a valid login in every other respect: eve is a
//! registered device with her own key (or her own password), and signs her
//! token for the victim's client id.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use test_harness::audit_read::{audit_records, fact, output_text};
use test_harness::clients::{mosquitto_pub, OwnClient};
use test_harness::fleet::mqseal;
use test_harness::{Broker, BrokerConfig, Fleet};

const WAIT: Duration = Duration::from_secs(10);

fn key_broker(fleet: &Fleet) -> Broker {
    Broker::start(fleet.broker_config("allow").option("auth", "key"))
}

/// A fresh login token of `device` for `client_id` (each one works once).
fn token(fleet: &Fleet, device: &str, client_id: &str) -> String {
    // Tokens of one device must be strictly newer than the last one accepted.
    std::thread::sleep(Duration::from_millis(2));
    let dir = fleet.device_dir(device);
    let out = mqseal(&["token", "--device", dir.to_str().unwrap(), "-i", client_id], None);
    assert!(out.status.success(), "mqseal token: {}", output_text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits for the `auth.refused` record of `client` logging in as `username`, and returns its reason.
fn refusal_reason(broker: &Broker, client: &str, username: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = audit_records(broker, "auth.refused")
            .into_iter()
            .find(|r| fact(r, "client") == client && fact(r, "username") == username);
        if let Some(record) = found {
            return fact(&record, "reason").as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "no auth.refused record for {client} as {username}; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The attack: `attacker` logs in with `client_id` (MQTT `version`, clean start) and
/// publishes one message; the login must be refused.
fn attack(broker: &Broker, client_id: &str, username: &str, password: &str, version: &str) {
    let out = mosquitto_pub(
        broker.port(),
        &["-V", version, "-i", client_id, "-u", username, "-P", password, "-t", "plain/attack", "-m", "x"],
    );
    assert!(!out.status.success(), "{username} logged in with client id {client_id}: {}", output_text(&out));
    assert!(output_text(&out).to_lowercase().contains("not authori"), "refused for another reason: {}", output_text(&out));
}

/// alice publishes `payload` on `topic` at QoS 1 (unprotected topic, plain payload).
fn alice_publishes(fleet: &Fleet, broker: &Broker, topic: &str, payload: &str) {
    let id = "alice-pub";
    let out = mosquitto_pub(broker.port(), &["-i", id, "-u", "alice", "-P", &token(fleet, "alice", id), "-t", topic, "-m", payload, "-q", "1"]);
    assert!(out.status.success(), "alice's publish: {}", output_text(&out));
}

fn assert_no_takeover(broker: &Broker) {
    assert!(!broker.log().contains("already connected, closing old connection"), "{}", broker.log());
}

#[test]
fn a_device_cannot_take_over_the_live_connection_of_another_device() {
    let fleet = Fleet::sensors();
    let broker = key_broker(&fleet);
    let mut bob = OwnClient::connect(broker.port(), "bob-sub", Some(("bob", &token(&fleet, "bob", "bob-sub")))).expect("bob logs in");
    assert!(bob.subscribe("plain/#", 1).expect("suback"), "bob's subscription");

    // eve signs a perfectly valid token of her own, for bob's client id.
    attack(&broker, "bob-sub", "eve", &token(&fleet, "eve", "bob-sub"), "mqttv311");
    assert_eq!(refusal_reason(&broker, "bob-sub", "eve"), "client-id-not-owned");
    // ... and for a client id of no device at all, or of a device whose id only starts like hers.
    attack(&broker, "bobby", "eve", &token(&fleet, "eve", "bobby"), "mqttv5");
    assert_eq!(refusal_reason(&broker, "bobby", "eve"), "client-id-not-owned");

    // bob's connection is still the one Mosquitto knows: it still receives.
    alice_publishes(&fleet, &broker, "plain/after", "still here");
    let got = bob.recv(WAIT).unwrap_or_else(|| panic!("bob was disconnected by the attack:\n{}", broker.log()));
    assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("plain/after", &b"still here"[..]));
    assert_no_takeover(&broker);
    assert!(broker.log().contains("client-id-not-owned"), "the refusal is logged:\n{}", broker.log());
}

/// bob's persistent session: subscribe at QoS 1 and leave (`-c`, session kept),
/// with `extra` arguments for the protocol version and session expiry.
fn bob_leaves_a_persistent_session(fleet: &Fleet, broker: &Broker, client_id: &str, extra: &[&str]) {
    let password = token(fleet, "bob", client_id);
    let mut args = vec!["-c", "-E", "-q", "1", "-i", client_id, "-u", "bob", "-P", &password, "-t", "plain/queued"];
    args.extend_from_slice(extra);
    let out = run_sub(broker, &args);
    assert!(out.status.success(), "bob's first session: {}", output_text(&out));
    // 2.0 logs "Client ID disconnected.", 2.1 "Client ID [ADDRESS] disconnected.".
    let client = format!("Client {client_id} ");
    let deadline = Instant::now() + WAIT;
    while !broker.log().lines().any(|l| l.contains(&client) && l.ends_with(" disconnected.")) {
        assert!(Instant::now() < deadline, "bob's first session did not end:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// bob comes back to his session and collects what was queued (at most `count`).
fn bob_collects(fleet: &Fleet, broker: &Broker, client_id: &str, count: usize, extra: &[&str]) -> Vec<String> {
    let password = token(fleet, "bob", client_id);
    let count_text = count.to_string();
    let mut args = vec!["-c", "-q", "1", "-i", client_id, "-u", "bob", "-P", &password, "-t", "plain/queued", "-C", &count_text, "-W", "5"];
    args.extend_from_slice(extra);
    let out = run_sub(broker, &args);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn run_sub(broker: &Broker, args: &[&str]) -> Output {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(args)
        .output()
        .expect("run mosquitto_sub")
}

fn queued_messages_survive_an_attack(version_args: &[&str], attack_version: &str) {
    let fleet = Fleet::sensors();
    let broker = key_broker(&fleet);
    bob_leaves_a_persistent_session(&fleet, &broker, "bob-keep", version_args);
    alice_publishes(&fleet, &broker, "plain/queued", "one");
    alice_publishes(&fleet, &broker, "plain/queued", "two");

    // eve logs in with bob's client id and a clean start: on success Mosquitto
    // would discard bob's session and the two messages queued in it.
    attack(&broker, "bob-keep", "eve", &token(&fleet, "eve", "bob-keep"), attack_version);
    assert_eq!(refusal_reason(&broker, "bob-keep", "eve"), "client-id-not-owned");

    assert_eq!(bob_collects(&fleet, &broker, "bob-keep", 2, version_args), ["one", "two"], "{}", broker.log());
}

#[test]
fn an_offline_persistent_session_keeps_its_queued_messages_mqtt_3_1_1() {
    queued_messages_survive_an_attack(&[], "mqttv311");
}

#[test]
fn an_offline_persistent_session_keeps_its_queued_messages_mqtt_5() {
    queued_messages_survive_an_attack(&["-V", "mqttv5", "-x", "300"], "mqttv5");
}

#[test]
fn the_authority_cannot_take_a_device_client_id_but_keeps_its_own() {
    let fleet = Fleet::sensors();
    let broker = key_broker(&fleet);
    let mut bob = OwnClient::connect(broker.port(), "bob-sub", Some(("bob", &token(&fleet, "bob", "bob-sub")))).expect("bob logs in");
    assert!(bob.subscribe("plain/#", 1).expect("suback"));
    let realm = fleet.realm();
    let port = broker.port().to_string();
    let push = |id: &str| mqseal(&["policy", "push", "--realm", realm.to_str().unwrap(), "-H", "127.0.0.1", "-p", &port, "--id", id, "--timeout", "5"], None);

    let out = push("bob-sub");
    assert!(!out.status.success(), "the authority logged in as bob-sub: {}", output_text(&out));
    assert_eq!(refusal_reason(&broker, "bob-sub", "authority"), "client-id-not-owned");
    alice_publishes(&fleet, &broker, "plain/after", "still here");
    assert!(bob.recv(WAIT).is_some(), "bob was disconnected:\n{}", broker.log());
    assert_no_takeover(&broker);

    // Its own client ids ("authority", "authority-..."), as `mqseal` makes them, still work.
    let out = push("authority-admin");
    assert!(out.status.success(), "{}", output_text(&out));
}

/// A password file (made with `mosquitto_passwd`) for `users`, password = user name + "-pw".
fn password_file(users: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    for (i, user) in users.iter().enumerate() {
        let mut command = Command::new("mosquitto_passwd");
        if i == 0 {
            command.arg("-c");
        }
        let status = command.args(["-b", file.to_str().unwrap(), user, &format!("{user}-pw")]).status().expect("mosquitto_passwd");
        assert!(status.success());
    }
    std::fs::read(file).unwrap()
}

#[test]
fn with_auth_defer_the_username_decides_whose_client_ids_a_login_may_use() {
    // A password file authenticates; mqseal maps the username to the device.
    let fleet = Fleet::sensors();
    let mut config: BrokerConfig = fleet
        .broker_config("allow")
        .option("auth", "defer")
        .file("passwd", password_file(&["alice", "bob", "eve", "guest"]))
        .line("password_file {dir}/passwd");
    config.allow_anonymous = false;
    let broker = Broker::start(config);
    let mut bob = OwnClient::connect(broker.port(), "bob-sub", Some(("bob", "bob-pw"))).expect("bob logs in");
    assert!(bob.subscribe("plain/#", 1).expect("suback"));

    // eve, with her own good password, and a user that is no device at all.
    attack(&broker, "bob-sub", "eve", "eve-pw", "mqttv311");
    assert_eq!(refusal_reason(&broker, "bob-sub", "eve"), "client-id-not-owned");
    attack(&broker, "bob", "guest", "guest-pw", "mqttv5");
    assert_eq!(refusal_reason(&broker, "bob", "guest"), "client-id-not-owned");

    let out = mosquitto_pub(broker.port(), &["-i", "alice-pub", "-u", "alice", "-P", "alice-pw", "-t", "plain/after", "-m", "still here", "-q", "1"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(bob.recv(WAIT).is_some(), "bob was disconnected:\n{}", broker.log());
    assert_no_takeover(&broker);

    // What mqseal does not object to, the password file still decides.
    let out = mosquitto_pub(broker.port(), &["-i", "guest-1", "-u", "guest", "-P", "guest-pw", "-t", "plain/x", "-m", "m"]);
    assert!(out.status.success(), "a non-device with a client id of no device: {}", output_text(&out));
    let out = mosquitto_pub(broker.port(), &["-i", "eve-1", "-u", "eve", "-P", "wrong", "-t", "plain/x", "-m", "m"]);
    assert!(!out.status.success(), "a wrong password must still be refused: {}", output_text(&out));
}
