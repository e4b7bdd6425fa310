//! SIGHUP with key logins (`plugin_opt_auth key`), on whichever broker
//! `$MQSEAL_MOSQUITTO` names (2.0.11, 2.0.21, 2.1.x).
//!
//! On reload Mosquitto re-runs the basic-auth check of every connected client
//! with the password it connected with: a single-use login token. mqseal binds
//! an accepted token to its live connection, so that re-check passes while the
//! device keeps its rights, and the token still opens no new connection
//! (docs/POLICY.md, "Login"). Before that, every SIGHUP dropped every device
//! (and on 2.1 the RELOAD answer terminated the broker).

use std::time::{Duration, Instant};

use test_harness::clients::OwnClient;
use test_harness::mqtt_wire::{connack_code_with, connect_persistent};
use test_harness::{Broker, Fleet};

const WAIT: Duration = Duration::from_secs(10);
/// The bound for disconnecting a device that lost its rights.
const KICK_WITHIN: Duration = Duration::from_secs(1);

const DEVICES: usize = 50;

fn device(i: usize) -> String {
    format!("dev{i:02}")
}

/// A realm of `n` devices, all `pubsub` members of group `fleet` (topic `fleet/#`).
fn fleet_of(n: usize) -> Fleet {
    let fleet = Fleet::new();
    fleet.add_group("fleet", &["fleet/#"], 60);
    for i in 0..n {
        fleet.add_device(&device(i)).add_member("fleet", &device(i), "pubsub");
    }
    fleet
}

/// A connected device, with the token it logged in with.
struct Connected {
    id: String,
    token: String,
    client: OwnClient,
}

fn connect_all(fleet: &Fleet, broker: &Broker, n: usize) -> Vec<Connected> {
    (0..n)
        .map(|i| {
            let id = device(i);
            let token = fleet.login_token(&id, &id);
            let mut client = OwnClient::connect(broker.port(), &id, Some((&id, &token)))
                .unwrap_or_else(|e| panic!("{id} connects with its token: {e}\n{}", broker.log()));
            // Each device hears the broadcast; device 0 also hears everyone's hello.
            assert!(client.subscribe("alive/broadcast", 1).unwrap(), "{id} subscribes");
            if i == 0 {
                assert!(client.subscribe("alive/from/#", 1).unwrap(), "the watcher subscribes");
            }
            Connected { id, token, client }
        })
        .collect()
}

/// Every connection in `alive` still delivers both ways: device 0's broadcast
/// reaches every one, and a hello from every one reaches device 0.
fn assert_all_deliver(alive: &mut [Connected], round: &str, broker: &Broker) {
    let payload = format!("broadcast {round}");
    alive[0].client.publish("alive/broadcast", 1, false, payload.as_bytes()).expect("broadcast");
    for c in alive.iter_mut() {
        let got = c.client.recv(WAIT).unwrap_or_else(|| panic!("{round}: {} got no broadcast\n{}", c.id, broker.log()));
        assert_eq!(got.payload, payload.as_bytes(), "{round}: {}", c.id);
    }
    for c in alive[1..].iter_mut() {
        let hello = format!("hello {round} from {}", c.id);
        c.client.publish(&format!("alive/from/{}", c.id), 1, false, hello.as_bytes()).unwrap_or_else(|e| {
            panic!("{round}: {} cannot publish: {e}\n{}", c.id, broker.log())
        });
    }
    let mut heard = std::collections::BTreeSet::new();
    while heard.len() < alive.len() - 1 {
        let got = alive[0].client.recv(WAIT).unwrap_or_else(|| panic!("{round}: heard only {heard:?}\n{}", broker.log()));
        heard.insert(String::from_utf8_lossy(&got.payload).into_owned());
    }
}

/// SIGHUP, then waits for the reload's outcome in the broker log (the `n`-th `needle`).
fn sighup_and_wait(broker: &Broker, needle: &str, n: usize) -> Instant {
    let at = Instant::now();
    broker.sighup();
    let deadline = at + WAIT;
    while broker.log().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "no '{needle}' #{n} after SIGHUP\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    at
}

fn key_login_broker(fleet: &Fleet) -> Broker {
    Broker::start(fleet.broker_config("allow").option("auth", "key").option("state_dir", "{dir}"))
}

#[test]
fn sighup_keeps_every_device_that_keeps_its_rights_and_drops_only_the_removed_one() {
    let fleet = fleet_of(DEVICES);
    let broker = key_login_broker(&fleet);
    let mut alive = connect_all(&fleet, &broker, DEVICES);
    assert_all_deliver(&mut alive, "before", &broker);

    // 1. The same policy again: nobody is dropped.
    sighup_and_wait(&broker, "loaded on reload", 1);
    assert_all_deliver(&mut alive, "unchanged policy", &broker);

    // 2. A tampered policy file is rejected; the old one stays, nobody is dropped.
    let good = std::fs::read(broker.path("policy.json")).unwrap();
    let mut tampered = good.clone();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(broker.path("policy.json"), &tampered).unwrap();
    sighup_and_wait(&broker, "policy reload rejected", 1);
    assert_all_deliver(&mut alive, "tampered policy", &broker);

    // 3. A policy that removes one device: only it is disconnected, within 1 s.
    let gone = device(DEVICES - 1);
    fleet.remove_device(&gone);
    fleet.install_policy(broker.dir());
    let sent = sighup_and_wait(&broker, "loaded on reload", 2);
    let mut removed = alive.pop().expect("the last device");
    assert_eq!(removed.id, gone);
    removed.client.wait_disconnected(WAIT).unwrap_or_else(|e| panic!("{gone} stays connected: {e}\n{}", broker.log()));
    let took = sent.elapsed();
    eprintln!("removed device disconnected {took:?} after SIGHUP");
    assert!(took <= KICK_WITHIN, "{gone} was disconnected only {took:?} after SIGHUP\n{}", broker.log());
    assert_all_deliver(&mut alive, "device removed", &broker);

    // 4. An older policy (the first one, properly signed) is rejected too.
    std::fs::write(broker.path("policy.json"), &good).unwrap();
    sighup_and_wait(&broker, "policy reload rejected", 2);
    assert_all_deliver(&mut alive, "older policy", &broker);

    // The broker log shows no other disconnection than the removed device's.
    let log = broker.log();
    let dropped: Vec<&str> = log.lines().filter(|l| l.contains(": Client dev") && l.contains("disconnected")).collect();
    assert!(dropped.iter().all(|l| l.contains(&gone)), "other devices were dropped: {dropped:?}");
}

#[test]
fn a_token_still_opens_no_new_connection_after_a_sighup() {
    let fleet = fleet_of(2);
    let broker = key_login_broker(&fleet);
    let mut alive = connect_all(&fleet, &broker, 2);
    sighup_and_wait(&broker, "loaded on reload", 1);
    assert_all_deliver(&mut alive, "after SIGHUP", &broker);

    // The token device 1 connected with, replayed on a new connection, with the
    // same client id (a take-over) and right after another SIGHUP: refused.
    let (id, token) = (alive[1].id.clone(), alive[1].token.clone());
    let code = connack_code_with(broker.port(), &id, &id, token.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!(code, 5, "a replayed token must be refused (not authorised)\n{}", broker.log());
    broker.sighup();
    let code = connack_code_with(broker.port(), &id, &id, token.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!(code, 5, "a replayed token must be refused after a SIGHUP too\n{}", broker.log());
    assert!(broker.wait_for_log(&format!("refused login of client '{id}' (username Some(\"{id}\")): login-reused"), WAIT), "{}", broker.log());
    // The device's own connection survived both attempts and both reloads.
    assert_all_deliver(&mut alive, "after the replays", &broker);
}

#[test]
fn an_offline_persistent_session_is_not_rechecked_as_a_live_connection_and_resumes_with_a_new_login() {
    let fleet = fleet_of(2);
    let broker = key_login_broker(&fleet);
    let mut alive = connect_all(&fleet, &broker, 1);
    let id = device(1);
    let token = fleet.login_token(&id, &id);
    let (mut stream, present, code) = connect_persistent(broker.port(), &id, &id, token.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!((present, code), (false, 0), "a new persistent session\n{}", broker.log());
    // A clean DISCONNECT: the session stays in the broker without a connection
    // (2.0 reports DISCONNECT, 2.1 CLIENT_OFFLINE: either ends the login binding).
    use std::io::Write;
    stream.write_all(&[0xe0, 0x00]).expect("DISCONNECT");
    drop(stream);
    assert!(broker.wait_for_log(&format!("Received DISCONNECT from {id}"), WAIT), "{}", broker.log());

    // The broker re-checks the offline session with its stored token: a new login's rules apply.
    sighup_and_wait(&broker, "loaded on reload", 1);
    let refused = format!("refused login of client '{id}' (username Some(\"{id}\")): login-reused");
    assert!(broker.wait_for_log(&refused, WAIT), "the offline session's token was accepted again\n{}", broker.log());
    assert_all_deliver(&mut alive, "after the re-check", &broker);

    // Its device logs in anew and gets its session back.
    let fresh = fleet.login_token(&id, &id);
    let (_stream, present, code) = connect_persistent(broker.port(), &id, &id, fresh.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!(code, 0, "the device logs in again\n{}", broker.log());
    assert!(present, "the persistent session survived the reload\n{}", broker.log());
}
