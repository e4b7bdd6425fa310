//! Verification on worker threads (`plugin_opt_verify_workers`), against a real
//! Mosquitto: QoS 0 protected publishes from MQTT 3.1.1 clients are verified off
//! the broker thread and their copies delivered by the broker
//! (`mosquitto_broker_publish`). Every guarantee of the synchronous path must
//! hold on this one; each test below shows one, with `verify_offload_above 0`
//! so that every eligible publish takes the path. The stopping line of the
//! broker log counts the publishes verified on workers: each test checks the
//! path it means was the one taken.
//!
//! docs/WORKERS.md §4 lists what changes for
//! subscribers; the tests named after a difference show it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mqseal_core::device::store::DeviceStore;
use mqseal_core::formats::envelope::AeadAlg;
use test_harness::audit_read::{audit_records, fact, output_text};
use test_harness::broker::BrokerConfig;
use test_harness::clients::{mosquitto_pub, MosquittoSub, OwnClient, Received};
use test_harness::fleet::mqseal;
use test_harness::mqtt_wire::{self, Will};
use test_harness::{Broker, Fleet};

const WAIT: Duration = Duration::from_secs(10);

/// `sensors/#`: alice and dave publish, bob reads, carol does both, eve has no role.
fn sensor_fleet() -> Fleet {
    let fleet = Fleet::new();
    for id in ["alice", "bob", "carol", "dave", "eve"] {
        fleet.add_device(id);
    }
    fleet.add_group("sensors", &["sensors/#"], 3600);
    fleet.add_member("sensors", "alice", "pub").add_member("sensors", "dave", "pub");
    fleet.add_member("sensors", "bob", "sub").add_member("sensors", "carol", "pubsub");
    for id in ["alice", "bob", "carol", "dave", "eve"] {
        fleet.join(id);
    }
    fleet
}

fn offloading(fleet: &Fleet, workers: &str) -> BrokerConfig {
    fleet.broker_config("allow").option("verify_workers", workers).option("verify_offload_above", "0").option("flood_limit", "5")
}

/// A device's sealer, in process (the CLI per message would be slow).
fn sealer(fleet: &Fleet, id: &str) -> mqseal_core::device::store::Sealer {
    DeviceStore::open(&fleet.device_dir(id)).expect("device store").sealer().expect("sealer")
}

fn seal_many(fleet: &Fleet, id: &str, topic: &str, n: usize) -> Vec<Vec<u8>> {
    let mut sealer = sealer(fleet, id);
    (0..n).map(|i| sealer.seal(topic, format!("{id} {i}").as_bytes(), AeadAlg::default()).expect("seal").envelope).collect()
}

fn connect(broker: &Broker, id: &str, client_id: &str) -> OwnClient {
    OwnClient::connect(broker.port(), client_id, Some((id, ""))).unwrap_or_else(|e| panic!("{client_id} connects: {e}"))
}

fn subscriber(broker: &Broker, id: &str, client_id: &str, filter: &str) -> OwnClient {
    let mut client = connect(broker, id, client_id);
    assert!(client.subscribe(filter, 0).expect("subscribe"), "{client_id}'s subscription to {filter} granted");
    client
}

/// Publishes each envelope on `topic` at QoS 0, in order.
fn publish_each<'a>(client: &mut OwnClient, topic: &str, envelopes: impl IntoIterator<Item = &'a Vec<u8>>) {
    for envelope in envelopes {
        client.publish(topic, 0, false, envelope).expect("publish");
    }
}

/// Receives until `n` messages came or nothing more comes for `quiet`.
fn receive(client: &mut OwnClient, n: usize, quiet: Duration) -> Vec<Received> {
    let mut got = Vec::new();
    while got.len() < n {
        match client.recv(quiet) {
            Some(message) => got.push(message),
            None => break,
        }
    }
    got
}

/// How many publishes the broker's stopping line says were verified on worker threads.
fn verified_on_workers(broker: &mut Broker) -> u64 {
    broker.stop();
    let log = broker.log();
    let line = log.lines().find(|l| l.contains("mqseal") && l.contains("stopping:")).unwrap_or_else(|| panic!("no stopping line:\n{log}"));
    let tail = line.split(" publishes accepted (").nth(1).unwrap_or_else(|| panic!("{line}"));
    tail.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"))
}

fn assert_log_verifies(fleet: &Fleet, broker: &Broker) {
    let out = mqseal(
        &["audit", "verify", broker.path("audit.jsonl").to_str().unwrap(), "--broker-key", fleet.broker_public_key().to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "audit verify: {}", output_text(&out));
}

#[test]
fn offloaded_publishes_arrive_once_each_in_each_publishers_order_and_are_audited() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "2"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    // An independent client reads too.
    let mut independent = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "carol", "-i", "carol-sub"]).expect("mosquitto_sub");
    const EACH: usize = 400;
    let mut sent: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let publishers: Vec<_> = ["alice", "dave"]
        .into_iter()
        .map(|id| {
            let topic = format!("sensors/{id}/t");
            let envelopes = seal_many(&fleet, id, &topic, EACH);
            sent.insert(topic.clone(), envelopes.clone());
            let mut client = connect(&broker, id, &format!("{id}-pub"));
            std::thread::spawn(move || {
                publish_each(&mut client, &topic, &envelopes);
                client
            })
        })
        .collect();
    let _clients: Vec<OwnClient> = publishers.into_iter().map(|t| t.join().unwrap()).collect();
    let got = receive(&mut bob, 2 * EACH, Duration::from_secs(5));
    let mut per_topic: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for message in &got {
        assert_eq!(message.qos, 0);
        assert!(!message.retain);
        per_topic.entry(message.topic.clone()).or_default().push(message.payload.clone());
    }
    for (topic, envelopes) in &sent {
        let received = per_topic.get(topic).map(Vec::as_slice).unwrap_or(&[]);
        let order: Vec<Option<usize>> = received.iter().map(|p| envelopes.iter().position(|e| e == p)).collect();
        assert!(
            order.iter().copied().eq((0..EACH).map(Some)),
            "{topic}: every message once, in the order sent; got {} messages: {order:?}",
            received.len()
        );
    }
    for _ in 0..2 * EACH {
        independent.next_message(WAIT).expect("mosquitto_sub receives every message too");
    }
    let on_workers = verified_on_workers(&mut broker);
    assert_eq!(on_workers, 2 * EACH as u64, "every publish was verified on a worker");
    let accepted = audit_records(&broker, "publish.accepted");
    assert_eq!(accepted.len(), 2 * EACH, "one publish.accepted each");
    for (topic, envelopes) in &sent {
        let seqs: Vec<u64> = accepted.iter().filter(|r| fact(r, "topic") == topic.as_str()).map(|r| fact(r, "seq").as_u64().unwrap()).collect();
        assert_eq!(seqs.len(), envelopes.len());
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic}: recorded in order");
    }
    assert_log_verifies(&fleet, &broker);
}

#[test]
fn a_retained_offloaded_publish_is_retained_for_later_subscribers() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1"));
    let mut live = subscriber(&broker, "bob", "bob-live", "sensors/#");
    let envelope = seal_many(&fleet, "alice", "sensors/state", 1).remove(0);
    let mut alice = connect(&broker, "alice", "alice-pub");
    alice.publish("sensors/state", 0, true, &envelope).expect("publish");
    let now = live.recv(WAIT).expect("the live subscriber gets it");
    assert_eq!((now.payload.as_slice(), now.retain), (envelope.as_slice(), false), "a live delivery is not flagged retained");
    let mut later = subscriber(&broker, "carol", "carol-later", "sensors/state");
    let stored = later.recv(WAIT).expect("a later subscriber gets the retained copy");
    assert_eq!((stored.payload.as_slice(), stored.retain), (envelope.as_slice(), true));
    assert_eq!(verified_on_workers(&mut broker), 1);
}

#[test]
fn forgeries_on_the_worker_path_are_refused_audited_and_end_in_a_flood_kick() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    let good = seal_many(&fleet, "alice", "sensors/t", 7);
    // The first forgery, then a good message: bob's next message is the good one.
    let mut forged = good[0].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    alice.publish("sensors/t", 0, false, &forged).expect("publish");
    alice.publish("sensors/t", 0, false, &good[1]).expect("publish");
    assert!(bob.recv(WAIT).expect("the good message").payload == good[1], "the forgery was not delivered");
    // Five more forgeries (fresh sequence numbers): past flood_limit 5.
    for envelope in &good[2..7] {
        let mut forged = envelope.clone();
        forged[last.min(envelope.len() - 1)] ^= 1;
        let _ = alice.publish("sensors/t", 0, false, &forged);
    }
    alice.wait_disconnected(WAIT).expect("alice is disconnected for flooding");
    assert!(bob.recv(Duration::from_millis(500)).is_none(), "no forgery delivered");
    // Stopping flushes the audit log.
    assert_eq!(verified_on_workers(&mut broker), 1);
    let denied = audit_records(&broker, "publish.denied");
    assert_eq!(denied.len(), 6, "{denied:?}");
    assert!(denied.iter().all(|r| fact(r, "reason") == "bad-signature"), "the synchronous path's reason: {denied:?}");
    let kicked = audit_records(&broker, "client.kicked");
    assert!(kicked.iter().any(|r| fact(r, "client") == "alice-pub" && fact(r, "reason") == "flood"), "{kicked:?}");
    assert_log_verifies(&fleet, &broker);
}

#[test]
fn an_envelope_replayed_back_to_back_is_delivered_once() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "2"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    let envelopes = seal_many(&fleet, "alice", "sensors/t", 2);
    // The copies are in flight together: both pass the admission checks.
    for _ in 0..3 {
        alice.publish("sensors/t", 0, false, &envelopes[0]).expect("publish");
    }
    alice.publish("sensors/t", 0, false, &envelopes[1]).expect("sentinel");
    let got = receive(&mut bob, 3, Duration::from_secs(2));
    let order: Vec<Option<usize>> = got.iter().map(|m| envelopes.iter().position(|e| *e == m.payload)).collect();
    assert_eq!(order, vec![Some(0), Some(1)], "the replays were dropped");
    // Stopping flushes the audit log.
    assert_eq!(verified_on_workers(&mut broker), 2);
    let denied = audit_records(&broker, "publish.denied");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| fact(r, "reason") == "replay"), "{denied:?}");
}

#[test]
fn the_copies_pass_each_subscribers_delivery_check() {
    // eve has no role: her `#` subscription is granted (it mixes topics), and the
    // broker's READ check withholds every protected delivery, copies included.
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1"));
    let mut eve = subscriber(&broker, "eve", "eve-all", "#");
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    publish_each(&mut alice, "sensors/t", &seal_many(&fleet, "alice", "sensors/t", 20));
    assert_eq!(receive(&mut bob, 20, WAIT).len(), 20);
    // The sentinel: an unprotected message eve may read comes, and nothing before it.
    mosquitto_pub(broker.port(), &["-u", "alice", "-i", "alice-plain", "-t", "lobby/hello", "-m", "hi"]);
    let next = eve.recv(WAIT).expect("eve gets the unprotected sentinel");
    assert_eq!(next.topic, "lobby/hello", "eve received a protected copy: {next:?}");
    // Stopping flushes the audit log.
    assert_eq!(verified_on_workers(&mut broker), 20);
    let withheld = audit_records(&broker, "delivery.withheld");
    assert!(withheld.iter().any(|r| fact(r, "client") == "eve-all" && fact(r, "reason") == "not-a-reader"), "{withheld:?}");
}

#[test]
fn a_qos0_will_is_verified_on_a_worker_and_delivered() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let envelope = seal_many(&fleet, "alice", "sensors/will", 1).remove(0);
    let will = Will { topic: "sensors/will", payload: &envelope, qos: 0, retain: false };
    let socket = mqtt_wire::connect_with_will(broker.port(), "alice-will", Some("alice"), &will, WAIT).expect("alice connects");
    drop(socket);
    assert_eq!(bob.recv(WAIT).expect("the will").payload, envelope);
    assert_eq!(verified_on_workers(&mut broker), 1);
}

// --- What changes for subscribers, and what does not (docs/WORKERS.md §4) ---

#[test]
fn difference_none_for_mqtt5_publishers_they_stay_on_the_broker_thread() {
    // MQTT 5 publishes may carry properties and meet `no local` subscriptions,
    // which the broker's own copy could not honour: they are verified at once.
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "2"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let envelope = seal_many(&fleet, "carol", "sensors/c", 1).remove(0);
    let file = broker.path("carol.bin");
    std::fs::write(&file, &envelope).unwrap();
    let out = mosquitto_pub(
        broker.port(),
        &["-V", "mqttv5", "-u", "carol", "-i", "carol-v5", "-t", "sensors/c", "-q", "0", "-f", file.to_str().unwrap(), "-D", "publish", "user-property", "k", "v"],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(bob.recv(WAIT).expect("delivered").payload, envelope);
    assert_eq!(verified_on_workers(&mut broker), 0, "not offloaded");
}

#[test]
fn difference_none_for_qos1_publishes_they_keep_their_synchronous_answer() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "2"));
    let mut bob = connect(&broker, "bob", "bob-sub");
    // At QoS 1, so that each message arrives at the QoS it was sent with.
    assert!(bob.subscribe("sensors/#", 1).expect("subscribe"));
    let mut alice = connect(&broker, "alice", "alice-pub");
    let envelopes = seal_many(&fleet, "alice", "sensors/t", 61);
    // QoS 0 publishes in flight, then a QoS 1 one with the next sequence number:
    // the QoS 0 ones are settled first, so none is lost as a replay.
    publish_each(&mut alice, "sensors/t", &envelopes[..60]);
    alice.publish("sensors/t", 1, false, &envelopes[60]).expect("PUBACK");
    let got = receive(&mut bob, 61, Duration::from_secs(3));
    // Which envelope each message is, by its index in `envelopes`.
    let index = |m: &Received| envelopes.iter().position(|e| *e == m.payload).expect("a message alice sent");
    let qos0: Vec<usize> = got.iter().filter(|m| m.qos == 0).map(index).collect();
    let qos1: Vec<usize> = got.iter().filter(|m| m.qos == 1).map(index).collect();
    assert_eq!(qos0, (0..60).collect::<Vec<_>>(), "the QoS 0 ones, each once, in the order sent (MQTT orders per topic and QoS)");
    assert_eq!(qos1, vec![60], "and the QoS 1 one");
    assert_eq!(verified_on_workers(&mut broker), 60);
    assert!(audit_records(&broker, "publish.denied").is_empty());
}

#[test]
fn difference_latency_only_copies_come_a_loop_pass_later_even_on_an_idle_broker() {
    // On an idle broker 2.0 sleeps up to 100 ms between loop passes and 2.1
    // (without websockets) until it is asked: a lone publish must still come promptly.
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    let mut slowest = Duration::ZERO;
    for envelope in seal_many(&fleet, "alice", "sensors/t", 10) {
        std::thread::sleep(Duration::from_millis(150)); // idle between publishes
        let sent = Instant::now();
        alice.publish("sensors/t", 0, false, &envelope).expect("publish");
        assert_eq!(bob.recv(WAIT).expect("delivered").payload, envelope);
        slowest = slowest.max(sent.elapsed());
    }
    eprintln!("slowest of 10 lone offloaded publishes: {slowest:?}");
    assert_eq!(verified_on_workers(&mut broker), 10);
}

#[test]
fn off_means_every_publish_is_verified_on_the_broker_thread() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "off"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    publish_each(&mut alice, "sensors/t", &seal_many(&fleet, "alice", "sensors/t", 30));
    assert_eq!(receive(&mut bob, 30, WAIT).len(), 30);
    assert_eq!(verified_on_workers(&mut broker), 0);
}

#[test]
fn a_bad_verify_workers_value_stops_the_broker_with_the_option_named() {
    let fleet = sensor_fleet();
    let failure = Broker::try_start(fleet.broker_config("allow").option("verify_workers", "lots")).err().expect("must not start");
    let text = format!("{failure:?}");
    assert!(text.contains("plugin_opt_verify_workers"), "{text}");
}

#[test]
fn max_queued_messages_0_does_not_get_offloaded_publishers_disconnected() {
    // Mosquitto 2.0 with its fix for CVE-2023-28366 (2.0.16+, Debian's 2.0.11) disconnects the
    // publisher of any refused publish when `max_queued_messages` is 0, and the
    // worker path drops each original with a refusal.
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1").line("max_queued_messages 0"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    let envelopes = seal_many(&fleet, "alice", "sensors/t", 20);
    publish_each(&mut alice, "sensors/t", &envelopes);
    assert_eq!(receive(&mut bob, 20, WAIT).len(), 20, "every publish delivered");
    assert!(alice.wait_disconnected(Duration::from_millis(300)).is_err(), "alice was disconnected:\n{}", broker.log());
    let on_workers = verified_on_workers(&mut broker);
    let turned_off = broker.log().contains("plugin_opt_verify_workers: off, because max_queued_messages is 0");
    if test_harness::broker::mosquitto_version() < (2, 1, 0) {
        // One 2.0 cannot be told from another: the path stays off on every 2.0.
        assert!(turned_off && on_workers == 0, "on 2.0 the worker path must be off here ({on_workers} on workers)");
    } else {
        assert!(!turned_off && on_workers == 20, "2.1 keeps the worker path ({on_workers} on workers)");
    }
}

#[test]
fn max_queued_messages_as_a_number_keeps_the_worker_path_on_2_0_too() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1").line("max_queued_messages 5000"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    publish_each(&mut alice, "sensors/t", &seal_many(&fleet, "alice", "sensors/t", 5));
    assert_eq!(receive(&mut bob, 5, WAIT).len(), 5);
    assert_eq!(verified_on_workers(&mut broker), 5);
}

#[test]
fn after_a_sighup_that_revokes_the_publisher_its_publishes_are_refused_with_the_worker_path_on() {
    let fleet = sensor_fleet();
    let mut broker = Broker::start(offloading(&fleet, "1"));
    let mut bob = subscriber(&broker, "bob", "bob-sub", "sensors/#");
    let mut alice = connect(&broker, "alice", "alice-pub");
    let before = seal_many(&fleet, "alice", "sensors/t", 5);
    publish_each(&mut alice, "sensors/t", &before);
    assert_eq!(receive(&mut bob, 5, WAIT).len(), 5, "delivered before the reload");
    // alice keeps her device (and her login) but loses her role.
    fleet.remove_member("sensors", "alice");
    fleet.install_policy(broker.dir());
    broker.sighup();
    assert!(broker.wait_for_log("loaded on reload", WAIT), "{}", broker.log());
    let after = seal_many(&fleet, "alice", "sensors/t", 3);
    // Losing rights closes her connection (a kick by username); then she comes back.
    alice.wait_disconnected(WAIT).expect("alice is disconnected for losing her role");
    let mut again = connect(&broker, "alice", "alice-again");
    publish_each(&mut again, "sensors/t", &after);
    // Every one refused (QoS 0: the broker tells alice nothing)...
    let refusals = || broker.log().matches("denied PUBLISH from client 'alice-again' on 'sensors/t': not-a-publisher").count();
    assert!(test_harness::wait::wait_until(WAIT, || refusals() == 3), "{} refused:\n{}", refusals(), broker.log());
    // ... and none delivered: carol's publish comes next, and nothing of alice's before it.
    let sentinel = seal_many(&fleet, "carol", "sensors/c", 1).remove(0);
    connect(&broker, "carol", "carol-pub").publish("sensors/c", 0, false, &sentinel).expect("publish");
    let next = bob.recv(WAIT).expect("the sentinel");
    assert!(next.payload == sentinel, "a publish of the revoked alice was delivered on {}", next.topic);
    // Stopping flushes the audit log.
    assert_eq!(verified_on_workers(&mut broker), 6, "alice's 5 and carol's sentinel");
    let refused: Vec<_> =
        audit_records(&broker, "publish.denied").into_iter().filter(|r| fact(r, "client") == "alice-again").collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|r| fact(r, "reason") == "not-a-publisher"), "{refused:?}");
}
