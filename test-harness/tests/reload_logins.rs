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
use test_harness::{Broker, BrokerConfig, Fleet};

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

fn key_login_config(fleet: &Fleet) -> BrokerConfig {
    fleet.broker_config("allow").option("auth", "key").option("state_dir", "{dir}")
}

fn key_login_broker(fleet: &Fleet) -> Broker {
    Broker::start(key_login_config(fleet))
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
fn an_offline_persistent_session_passes_the_recheck_and_resumes_only_with_a_new_login() {
    let fleet = fleet_of(2);
    let broker = key_login_broker(&fleet);
    let mut alive = connect_all(&fleet, &broker, 1);
    let id = device(1);
    let token = fleet.login_token(&id, &id);
    let (mut stream, present, code) = connect_persistent(broker.port(), &id, &id, token.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!((present, code), (false, 0), "a new persistent session\n{}", broker.log());
    // A clean DISCONNECT: the session stays in the broker without a connection
    // (2.0 reports DISCONNECT, 2.1 CLIENT_OFFLINE).
    use std::io::Write;
    stream.write_all(&[0xe0, 0x00]).expect("DISCONNECT");
    drop(stream);
    assert!(broker.wait_for_log(&format!("Received DISCONNECT from {id}"), WAIT), "{}", broker.log());

    // The broker re-checks the offline session with its stored token: mqseal
    // does not refuse it (a refusal would not end it, and 2.0 would then hold
    // it twice on its expiry list: the test below).
    sighup_and_wait(&broker, "loaded on reload", 1);
    assert_all_deliver(&mut alive, "after the re-check", &broker);
    let refused = format!("refused login of client '{id}'");
    assert!(!broker.log().contains(&refused), "the offline session's re-check was refused\n{}", broker.log());

    // Its token still opens no connection, even right after a reload.
    broker.sighup();
    let code = connack_code_with(broker.port(), &id, &id, token.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!(code, 5, "a replayed token must be refused\n{}", broker.log());
    assert!(broker.wait_for_log(&format!("{refused} (username Some(\"{id}\")): login-reused"), WAIT), "{}", broker.log());

    // Its device logs in anew and gets its session back.
    let fresh = fleet.login_token(&id, &id);
    let (_stream, present, code) = connect_persistent(broker.port(), &id, &id, fresh.as_bytes(), WAIT).expect("CONNACK");
    assert_eq!(code, 0, "the device logs in again\n{}", broker.log());
    assert!(present, "the persistent session survived the reloads\n{}", broker.log());
}

/// `mosquitto_sub` as an MQTT 5 client with a session that expires `expiry_s`
/// after it disconnects: it subscribes, then disconnects at once (`-E`).
fn leave_an_expiring_session(broker: &Broker, fleet: &Fleet, id: &str, expiry_s: u32) {
    let token = fleet.login_token(id, id);
    let port = broker.port().to_string();
    let expiry = expiry_s.to_string();
    let out = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-c", "-x", &expiry, "-i", id, "-u", id, "-P", &token])
        .args(["-t", "alive/broadcast", "-q", "1", "-E", "-W", "30"])
        .output()
        .expect("mosquitto_sub (scripts/setup installs mosquitto-clients)");
    assert!(out.status.success(), "{id} subscribes: {}\n{}", String::from_utf8_lossy(&out.stderr), broker.log());
}

/// Stops a broker run under memcheck: a clean exit, and no memory errors.
fn assert_stops_without_memory_errors(mut broker: Broker) {
    let status = broker.stop().expect("the broker was running");
    assert!(status.success(), "{status:?}\n{}", broker.log());
    let (errors, report) = broker.memcheck_errors();
    assert_eq!(errors, 0, "memcheck found errors in the broker:\n{report}");
}

#[test]
fn offline_sessions_rechecked_on_sighup_expire_and_resume_without_the_broker_touching_freed_memory() {
    // Before mqseal passed offline sessions' re-checks, Mosquitto 2.0 put a
    // refused offline session on its expiry list a second time; valgrind then
    // reported some 30 invalid reads and writes of freed memory at its expiry.
    let fleet = fleet_of(3);
    let broker = Broker::start(key_login_config(&fleet).under_memcheck());
    let mut alive = connect_all(&fleet, &broker, 1);
    let (expiring, resuming) = (device(1), device(2));
    leave_an_expiring_session(&broker, &fleet, &expiring, 2);
    leave_an_expiring_session(&broker, &fleet, &resuming, 2);
    for n in 1..=2 {
        sighup_and_wait(&broker, "loaded on reload", n);
    }
    for id in [&expiring, &resuming] {
        let refused = format!("refused login of client '{id}'");
        assert!(!broker.log().contains(&refused), "{id}'s offline session's re-check was refused\n{}", broker.log());
    }
    // One device takes its offline session back (with a fresh token), and leaves it again.
    leave_an_expiring_session(&broker, &fleet, &resuming, 2);
    for id in [&expiring, &resuming] {
        let expired = format!("Expiring client {id} due to timeout.");
        assert!(broker.wait_for_log(&expired, Duration::from_secs(30)), "{id}'s session never expired\n{}", broker.log());
    }
    assert_all_deliver(&mut alive, "after the expiries", &broker);
    drop(alive);
    assert_stops_without_memory_errors(broker);
}

#[test]
fn sessions_restored_from_persistence_pass_reload_rechecks_without_the_broker_touching_freed_memory() {
    // After a restart with `persistence true` (Debian's default), the broker
    // holds the saved sessions without their passwords and re-checks them on
    // every SIGHUP; refused, 2.0 put them on its expiry list once more each time.
    let fleet = fleet_of(2);
    let config = key_login_config(&fleet).line("persistence true").line("persistence_location {dir}/").under_memcheck();
    let mut broker = Broker::start(config);
    let id = device(1);
    leave_an_expiring_session(&broker, &fleet, &id, 600);
    broker.stop().expect("the broker was running");
    assert!(broker.path("mosquitto.db").exists(), "no persistence file\n{}", broker.log());
    broker.restart().unwrap_or_else(|f| panic!("{f}"));
    let mut alive = connect_all(&fleet, &broker, 1);
    for n in 1..=2 {
        sighup_and_wait(&broker, "loaded on reload", n);
    }
    let refused = format!("refused login of client '{id}'");
    assert!(!broker.log().contains(&refused), "the restored session's re-check was refused\n{}", broker.log());
    // Its device takes the restored session back with a fresh token, and leaves
    // it to expire: the broker walks its expiry list.
    leave_an_expiring_session(&broker, &fleet, &id, 2);
    let expired = format!("Expiring client {id} due to timeout.");
    assert!(broker.wait_for_log(&expired, Duration::from_secs(30)), "the session never expired\n{}", broker.log());
    assert_all_deliver(&mut alive, "after the expiry", &broker);
    drop(alive);
    assert_stops_without_memory_errors(broker);
}
