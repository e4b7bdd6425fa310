//! Two listeners, each with its own mqseal instance (own realm, policy and
//! audit log): 2.0's `per_listener_settings true`, 2.1's `plugin_load NAME PATH`
//! with `plugin_use NAME`. Each instance's kicks (a flood, a revoked device)
//! really happen within 1 s, also on 2.0.11, whose TICK never runs with
//! `per_listener_settings true`, and the audit log records exactly the kicks
//! that happened.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_harness::artifacts;
use test_harness::broker::{free_port, mosquitto_version};
use test_harness::clients::OwnClient;
use test_harness::{Broker, BrokerConfig, Fleet};

const WAIT: Duration = Duration::from_secs(10);
const KICK_WITHIN: Duration = Duration::from_secs(1);
const FLOOD_LIMIT: usize = 3;

/// One listener's realm: device `dev` and a never-connected device `ghost`,
/// both members of group `sensors` (topic `sensors/#`).
struct Side {
    name: &'static str,
    fleet: Fleet,
    dev: String,
    ghost: String,
}

impl Side {
    fn new(name: &'static str) -> Side {
        let fleet = Fleet::new();
        let (dev, ghost) = (format!("dev-{name}"), format!("ghost-{name}"));
        fleet.add_group("sensors", &["sensors/#"], 60);
        fleet.add_device(&dev).add_member("sensors", &dev, "pubsub");
        fleet.add_device(&ghost).add_member("sensors", &ghost, "pubsub");
        Side { name, fleet, dev, ghost }
    }

    /// The instance's files, under `<broker dir>/<name>/`.
    fn files(&self, config: BrokerConfig) -> BrokerConfig {
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        config
            .file(&format!("{}/policy.json", self.name), read(&self.fleet.export_policy()))
            .file(&format!("{}/authority.pub", self.name), read(&self.fleet.realm().join("authority.pub")))
            .file(&format!("{}/broker.sign.pem", self.name), read(&self.fleet.path("broker/broker.sign.pem")))
    }

    fn options(&self) -> Vec<String> {
        let n = self.name;
        [
            format!("policy {{dir}}/{n}/policy.json"),
            format!("authority {{dir}}/{n}/authority.pub"),
            format!("broker_key {{dir}}/{n}/broker.sign.pem"),
            format!("audit_log {{dir}}/{n}/audit.jsonl"),
            format!("state_dir {{dir}}/{n}"),
            "unprotected allow".to_string(),
            // The flooder is no device and logs in with a bare username: nothing
            // authenticates usernames here.
            "auth none".to_string(),
            format!("flood_limit {FLOOD_LIMIT}"),
        ]
        .into_iter()
        .map(|o| format!("plugin_opt_{o}"))
        .collect()
    }

    fn kicked(&self, broker: &Broker) -> Vec<String> {
        let log = broker.path(&format!("{}/audit.jsonl", self.name));
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["kind"] == "client.kicked")
            .map(|r| format!("{} ({})", r["facts"]["client"].as_str().unwrap_or(""), r["facts"]["reason"].as_str().unwrap_or("")))
            .collect()
    }
}

/// A broker with listener 1 (the harness's) served by instance `a`, and
/// listener 2 (returned port) by instance `b`, the way this broker version does it.
fn two_listener_broker(a: &Side, b: &Side) -> (Broker, u16) {
    let port_b = free_port();
    let plugin = artifacts().plugin.display().to_string();
    let mut config = b.files(a.files(BrokerConfig { with_plugin: false, ..BrokerConfig::default() }));
    let second_listener = [format!("listener {port_b} 127.0.0.1"), "allow_anonymous true".to_string()];
    if mosquitto_version() >= (2, 1, 0) {
        // 2.1: load each instance once by name, use it in its listener.
        config.extra_lines.push(format!("plugin_load mq-a {plugin}"));
        config.extra_lines.extend(a.options());
        config.extra_lines.push(format!("plugin_load mq-b {plugin}"));
        config.extra_lines.extend(b.options());
        config.extra_lines.push("plugin_use mq-a".into());
        config.trailing_lines.extend(second_listener);
        config.trailing_lines.push("plugin_use mq-b".into());
    } else {
        // 2.0: one plugin per listener, with per_listener_settings.
        config.leading_lines.push("per_listener_settings true".into());
        config.extra_lines.push(format!("plugin {plugin}"));
        config.extra_lines.extend(a.options());
        config.trailing_lines.extend(second_listener);
        config.trailing_lines.push(format!("plugin {plugin}"));
        config.trailing_lines.extend(b.options());
    }
    let broker = Broker::start(config);
    (broker, port_b)
}

/// Floods `port` with bad envelopes until the broker closes the connection;
/// returns how long that took from the first one.
fn flood_until_kicked(port: u16, client_id: &str, broker: &Broker) -> Duration {
    let mut flooder = OwnClient::connect(port, client_id, Some(("eve", ""))).expect("the flooder connects");
    let started = Instant::now();
    for i in 0..FLOOD_LIMIT * 3 {
        if flooder.publish("sensors/t", 1, false, format!("garbage {i}").as_bytes()).is_err() {
            break;
        }
    }
    flooder.wait_disconnected(WAIT).unwrap_or_else(|e| panic!("{client_id} was never disconnected: {e}\n{}", broker.log()));
    started.elapsed()
}

#[test]
fn each_listener_instance_carries_out_its_own_kicks_within_a_second() {
    let (a, b) = (Side::new("a"), Side::new("b"));
    let (broker, port_b) = two_listener_broker(&a, &b);
    let log = broker.log();
    assert_eq!(log.matches("mqseal: plugin 0.1.0 loaded").count(), 2, "two instances expected:\n{log}");

    // Floods: each instance disconnects its own flooder at once.
    for (side, port) in [(&a, broker.port()), (&b, port_b)] {
        let took = flood_until_kicked(port, &format!("flooder-{}", side.name), &broker);
        eprintln!("listener {}: flooder disconnected {took:?} after its first bad envelope", side.name);
        assert!(took <= KICK_WITHIN, "listener {}: the flood kick took {took:?}\n{}", side.name, broker.log());
    }

    // Revocations: each instance's new policy removes its device (and its ghost,
    // which is not connected: no kick may be recorded for it).
    let mut devices = Vec::new();
    for (side, port) in [(&a, broker.port()), (&b, port_b)] {
        let client = OwnClient::connect(port, &format!("{}-conn", side.dev), Some((&side.dev, "")))
            .unwrap_or_else(|e| panic!("{} connects: {e}", side.dev));
        devices.push(client);
        side.fleet.remove_device(&side.dev).remove_device(&side.ghost);
        let target = broker.path(&format!("{}/policy.json", side.name));
        std::fs::write(&target, std::fs::read(side.fleet.export_policy()).unwrap()).unwrap();
    }
    let sent = Instant::now();
    broker.sighup();
    for (side, client) in [&a, &b].into_iter().zip(devices.iter_mut()) {
        client.wait_disconnected(WAIT).unwrap_or_else(|e| panic!("{} stays connected: {e}\n{}", side.dev, broker.log()));
        let took = sent.elapsed();
        eprintln!("listener {}: revoked device disconnected {took:?} after SIGHUP", side.name);
        assert!(took <= KICK_WITHIN, "listener {}: the revocation kick took {took:?}\n{}", side.name, broker.log());
    }

    // Each audit log has exactly the kicks that happened on its listener.
    for side in [&a, &b] {
        let want_dev = format!("username {} (device {})", side.dev, side.dev);
        let deadline = Instant::now() + WAIT;
        let kicked = loop {
            let kicked = side.kicked(&broker);
            if kicked.len() >= 2 || Instant::now() > deadline {
                break kicked;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            kicked,
            vec![format!("flooder-{} (flood)", side.name), format!("{want_dev} (device-removed)")],
            "listener {}\n{}",
            side.name,
            broker.log()
        );
        assert!(!kicked.iter().any(|k| k.contains(&side.ghost)), "a kick of the unconnected {} was recorded", side.ghost);
    }
}
