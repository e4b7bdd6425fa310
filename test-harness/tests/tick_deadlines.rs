//! mqseal's deadlines hold on a quiet broker: a checkpoint falls due, a
//! reload loaded in the background is installed and its kicks happen.
//!
//! Mosquitto 2.1 built without websockets (as `scripts/brokers` builds it)
//! sleeps in epoll until its next scheduled event, hours on a quiet broker,
//! unless a plugin's tick asks for its next one (`next_ms`). 2.0 wakes every
//! 100 ms by itself. The tests run on every broker; on 2.1 they fail without
//! mqseal's `next_ms` (the checkpoint waited for the next client event).

use std::path::Path;
use std::time::{Duration, Instant};

use test_harness::wait::wait_until;
use test_harness::broker::mosquitto_version;
use test_harness::clients::OwnClient;
use test_harness::{Broker, Fleet};

const WAIT: Duration = Duration::from_secs(10);

/// The tree size a checkpoint file signs (its second line), 0 if there is none yet.
fn checkpoint_size(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|body| body.lines().nth(1).and_then(|l| l.parse().ok())).unwrap_or(0)
}

fn records(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap_or_default().lines().count() as u64
}

fn one_device_fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_group("sensors", &["sensors/#"], 60);
    fleet.add_device("alice").add_member("sensors", "alice", "pubsub");
    fleet
}

#[test]
fn a_checkpoint_falls_due_on_time_on_a_quiet_broker() {
    let fleet = one_device_fleet();
    let interval = Duration::from_secs(2);
    let broker = Broker::start(
        fleet
            .broker_config("allow")
            .option("checkpoint_interval_secs", &interval.as_secs().to_string())
            .option("checkpoint_every", "1000000"),
    );
    let log = broker.path("audit.jsonl");
    assert!(wait_until(WAIT, || records(&log) >= 2), "the start records never reached the log");
    // One more record (a login), then nothing at all happens on the broker.
    let client = OwnClient::connect(broker.port(), "alice-1", Some(("alice", ""))).expect("connect");
    client.disconnect();
    let quiet_from = Instant::now();
    let covered = records(&log);
    let signed = wait_until(interval + WAIT, || checkpoint_size(&broker.path("audit.jsonl.checkpoint")) >= covered);
    let took = quiet_from.elapsed();
    eprintln!("checkpoint covering {covered} records signed {took:?} after the broker went quiet (interval {interval:?})");
    assert!(signed, "no checkpoint within {:?}\n{}", interval + WAIT, broker.log());
    assert!(took <= interval + Duration::from_secs(1), "the checkpoint came {took:?} after the last record (interval {interval:?})");
}

#[test]
fn a_background_reload_is_installed_and_its_kick_done_within_a_second_on_a_quiet_broker() {
    let fleet = one_device_fleet();
    let broker = Broker::start(fleet.broker_config("allow"));
    let mut alice = OwnClient::connect(broker.port(), "alice-1", Some(("alice", ""))).expect("connect");
    // Let the broker settle into its quiet loop, so the reload is the only event.
    std::thread::sleep(Duration::from_millis(300));
    fleet.remove_device("alice");
    fleet.install_policy(broker.dir());
    let sent = Instant::now();
    broker.sighup();
    alice.wait_disconnected(WAIT).unwrap_or_else(|e| panic!("alice stays connected: {e}\n{}", broker.log()));
    let took = sent.elapsed();
    eprintln!("removed device disconnected {took:?} after SIGHUP");
    assert!(took <= Duration::from_secs(1), "the kick took {took:?}\n{}", broker.log());
    assert!(broker.log().contains("loaded on reload"), "{}", broker.log());
}

#[test]
fn mosquitto_2_1_names_the_plugin_in_its_own_log() {
    if mosquitto_version() < (2, 1, 0) {
        eprintln!("Mosquitto {:?} has no mosquitto_plugin_set_info: nothing to check", mosquitto_version());
        return;
    }
    let broker = Broker::start(one_device_fleet().broker_config("allow"));
    assert!(broker.wait_for_log("Plugin mqseal has registered to receive 'tick' events", WAIT), "{}", broker.log());
    // 2.1.2's get_event_name calls CLIENT_OFFLINE 'connect' (src/plugin_callbacks.c).
    assert!(broker.log().contains("Plugin mqseal has registered to receive 'connect' events"), "CLIENT_OFFLINE:\n{}", broker.log());
}
