//! Log rotation under traffic (issue 12, item 5): Debian's real `logrotate` runs the
//! rule the repository ships (`examples/logrotate/mqseal-mosquitto`, adapted only to
//! the test's paths) against a broker that logs to a file, while devices publish at
//! QoS 1. Afterwards: no device was dropped, every publish the broker acknowledged
//! reached the subscriber, the old log file was renamed and the broker writes to a
//! new one, and the audit log verifies. Run against every supported Mosquitto
//! version by `scripts/test` (`$MQSEAL_MOSQUITTO`).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqseal_core::device::store::DeviceStore;
use mqseal_core::formats::envelope::AeadAlg;
use test_harness::wait::wait_until;
use test_harness::artifacts::workspace_root;
use test_harness::clients::OwnClient;
use test_harness::fleet::{mqseal, mqseal_ok};
use test_harness::{Broker, BrokerConfig, Fleet};

const PUBLISHERS: usize = 8;
/// Publishes each device has acknowledged before the rotation starts.
const BEFORE: usize = 10;
/// And after the broker has reopened its log and mqseal has reloaded its policy.
const AFTER: usize = 10;
/// The pace of each device's publishes (not a synchronisation: it only spreads
/// traffic over the rotation).
const PACE: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(30);

/// The rule shipped for operators, and the paths in it the test replaces.
const EXAMPLE: &str = "examples/logrotate/mqseal-mosquitto";
const EXAMPLE_LOG: &str = "/var/log/mosquitto/mosquitto.log";
const EXAMPLE_PID: &str = "/run/mosquitto/mosquitto.pid";

/// How devices authenticate to the broker.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Login {
    /// `plugin_opt_auth key`: a single-use login token signed by the device key.
    Key,
    /// `plugin_opt_auth defer` with Mosquitto's `password_file`.
    PasswordFile,
}

fn publisher_id(n: usize) -> String {
    format!("meter{n:02}")
}

const MONITOR: &str = "monitor";

fn fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_group("plant", &["plant/#"], 3600);
    for n in 0..PUBLISHERS {
        fleet.add_device(&publisher_id(n)).add_member("plant", &publisher_id(n), "pub");
    }
    fleet.add_device(MONITOR).add_member("plant", MONITOR, "sub");
    for n in 0..PUBLISHERS {
        fleet.join(&publisher_id(n));
    }
    fleet.join(MONITOR);
    fleet
}

fn password(device: &str) -> String {
    format!("{device}-secret")
}

/// A Mosquitto password file for every device (made by Debian's `mosquitto_passwd`).
fn password_file(fleet: &Fleet) -> Vec<u8> {
    let file = fleet.path("passwd");
    let devices: Vec<String> = (0..PUBLISHERS).map(publisher_id).chain([MONITOR.to_string()]).collect();
    for (i, device) in devices.iter().enumerate() {
        let mut command = Command::new("mosquitto_passwd");
        if i == 0 {
            command.arg("-c");
        }
        let status = command.args(["-b", file.to_str().unwrap(), device, &password(device)]).status().expect("run mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd failed");
    }
    std::fs::read(file).expect("read password file")
}

fn broker_config(fleet: &Fleet, login: Login) -> BrokerConfig {
    let mut config = fleet
        .broker_config("deny")
        .line("log_dest file {dir}/broker.log")
        .line("pid_file {dir}/mosquitto.pid");
    config.allow_anonymous = false;
    match login {
        Login::Key => config.option("auth", "key"),
        Login::PasswordFile => config.file("passwd", password_file(fleet)).line("password_file {dir}/passwd"),
    }
}

/// Connects device `id` as client `client_id`, logging in as `login` says.
fn connect(fleet: &Fleet, broker: &Broker, login: Login, id: &str, client_id: &str) -> OwnClient {
    let secret = match login {
        Login::Key => {
            let device = fleet.device_dir(id);
            let out = mqseal_ok(&["token", "--device", device.to_str().unwrap(), "-i", client_id], None);
            String::from_utf8(out).expect("token is text").trim().to_string()
        }
        Login::PasswordFile => password(id),
    };
    OwnClient::connect(broker.port(), client_id, Some((id, &secret)))
        .unwrap_or_else(|e| panic!("{id} could not connect: {e}\nbroker log:\n{}", broker.log()))
}

/// What one publishing device saw.
#[derive(Default)]
struct Progress {
    /// Envelopes the broker acknowledged (PUBACK), in order.
    acked: Vec<Vec<u8>>,
    /// Why the device lost its connection, if it did.
    dropped: Option<String>,
}

struct Publisher {
    id: String,
    progress: Arc<Mutex<Progress>>,
    thread: std::thread::JoinHandle<()>,
}

impl Publisher {
    fn acked(&self) -> usize {
        self.progress.lock().unwrap().acked.len()
    }

    fn dropped(&self) -> bool {
        self.progress.lock().unwrap().dropped.is_some()
    }
}

/// Starts device `id` publishing sealed messages at QoS 1 until `stop`.
fn start_publisher(fleet: &Fleet, mut client: OwnClient, id: String, stop: Arc<AtomicBool>) -> Publisher {
    let store = DeviceStore::open(&fleet.device_dir(&id)).expect("open device store");
    let mut sealer = store.sealer().expect("device sealer");
    let progress = Arc::new(Mutex::new(Progress::default()));
    let shared = Arc::clone(&progress);
    let topic = format!("plant/{id}");
    let name = id.clone();
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let sealed = sealer.seal(&topic, format!("{name} reading {n}").as_bytes(), AeadAlg::default()).expect("seal");
            match client.publish(&topic, 1, false, &sealed.envelope) {
                Ok(()) => shared.lock().unwrap().acked.push(sealed.envelope),
                Err(e) => {
                    shared.lock().unwrap().dropped = Some(format!("publish {n} failed: {e}"));
                    return;
                }
            }
            n += 1;
            std::thread::sleep(PACE);
        }
        if let Ok(e) = client.wait_disconnected(Duration::ZERO) {
            shared.lock().unwrap().dropped = Some(format!("connection lost: {e}"));
        }
        client.disconnect();
    });
    Publisher { id, progress, thread }
}

/// Whether the broker has logged its own end (it then serves nobody: stop waiting).
fn terminated(broker: &Broker) -> bool {
    broker.log().lines().any(|l| l.contains("mosquitto version") && l.ends_with("terminating"))
}

/// The shipped rule with its log and pid file paths pointed at the broker's.
fn adapted_rule(broker: &Broker) -> String {
    let rule = std::fs::read_to_string(workspace_root().join(EXAMPLE)).expect("read the shipped logrotate rule");
    for path in [EXAMPLE_LOG, EXAMPLE_PID] {
        assert!(rule.contains(path), "{EXAMPLE} no longer names {path}: update this test with it");
    }
    rule.replace(EXAMPLE_LOG, broker.path("broker.log").to_str().unwrap())
        .replace(EXAMPLE_PID, broker.path("mosquitto.pid").to_str().unwrap())
}

/// The broker log's lines that tell what happened to connections and the reload.
fn telling_lines(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["mqseal", "Reloading", "Error", "disconnect", "terminating", "Client "].iter().any(|w| l.contains(w))
                && !l.contains("PUBLISH")
                && !l.contains("PUBACK")
        })
        .collect();
    let skip = lines.len().saturating_sub(60);
    lines[skip..].join("\n")
}

fn rotate_under_traffic(login: Login) {
    let fleet = fleet();
    let mut broker = Broker::start(broker_config(&fleet, login));
    let mut problems: Vec<String> = Vec::new();

    // The reader: every acknowledged publish must reach it.
    let mut monitor = connect(&fleet, &broker, login, MONITOR, "monitor-1");
    assert_eq!(monitor.subscribe("plant/#", 1), Ok(true), "the monitor may read plant/#");

    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<Publisher> = (0..PUBLISHERS)
        .map(publisher_id)
        .map(|id| {
            let client = connect(&fleet, &broker, login, &id, &format!("{id}-1"));
            start_publisher(&fleet, client, id, Arc::clone(&stop))
        })
        .collect();
    let all_reached = |target: &dyn Fn(usize) -> usize| {
        publishers.iter().enumerate().all(|(i, p)| p.dropped() || p.acked() >= target(i))
    };
    assert!(
        wait_until(WAIT, || all_reached(&|_| BEFORE)),
        "devices did not get {BEFORE} publishes each acknowledged before the rotation\nbroker log:\n{}",
        telling_lines(&broker.log())
    );

    // logrotate -f: rename broker.log to broker.log.1, then SIGHUP through the pid file.
    let stderr_before = broker.log().len();
    let conf = broker.path("logrotate.conf");
    std::fs::write(&conf, adapted_rule(&broker)).expect("write logrotate conf");
    let out = Command::new("logrotate")
        .args(["-f", "-s"])
        .arg(broker.path("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("run logrotate (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "logrotate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = broker.path("broker.log.1");
    let current = broker.path("broker.log");
    let rotated_text = std::fs::read_to_string(&rotated).unwrap_or_default();
    if !rotated_text.contains("starting") {
        problems.push(format!("{} does not hold the log from the broker's start", rotated.display()));
    }

    // The broker reopens its log and mqseal reloads (the same policy: nobody loses rights).
    // Either line is written only after the reopen: a publish logged, or mqseal's
    // "loaded on reload", which its first tick after the SIGHUP logs.
    let reopened = wait_until(WAIT, || {
        terminated(&broker)
            || std::fs::read_to_string(&current).is_ok_and(|t| t.contains("Received PUBLISH from") || t.contains("loaded on reload"))
    });
    if !reopened {
        problems.push(format!("the broker did not write to a new {} after SIGHUP", current.display()));
    }
    let reloaded = wait_until(WAIT, || terminated(&broker) || broker.log().get(stderr_before..).is_some_and(|after| after.contains("loaded on reload")));
    if terminated(&broker) {
        problems.push("the broker terminated after the SIGHUP".into());
    }
    if !reloaded {
        problems.push("mqseal did not report 'policy version N loaded on reload' after the SIGHUP".into());
    }
    if std::fs::read_to_string(&current).is_ok_and(|t| t.contains("starting")) {
        problems.push(format!("the new {} holds the broker's start: it was not rotated", current.display()));
    }

    // Traffic goes on through and after the reload.
    let at_reload: Vec<usize> = publishers.iter().map(Publisher::acked).collect();
    let went_on = wait_until(WAIT, || terminated(&broker) || all_reached(&|i| at_reload[i] + AFTER));
    stop.store(true, Ordering::SeqCst);
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for publisher in publishers {
        publisher.thread.join().expect("publisher thread");
        let progress = publisher.progress.lock().unwrap();
        if let Some(why) = &progress.dropped {
            problems.push(format!("device {} was dropped after {} acknowledged publishes: {why}", publisher.id, progress.acked.len()));
        }
        expected.extend(progress.acked.iter().map(|e| (publisher.id.clone(), e.clone())));
    }
    if !went_on && problems.is_empty() {
        problems.push(format!("devices did not get {AFTER} more publishes acknowledged after the reload"));
    }

    // Every acknowledged publish reaches the monitor (QoS 1: duplicates allowed).
    let mut missing: std::collections::HashSet<Vec<u8>> = expected.iter().map(|(_, e)| e.clone()).collect();
    let total = missing.len();
    let deadline = Instant::now() + WAIT;
    while !missing.is_empty() && Instant::now() < deadline {
        match monitor.recv(Duration::from_millis(500)) {
            Some(message) => {
                missing.remove(&message.payload);
            }
            None => {
                if let Ok(e) = monitor.wait_disconnected(Duration::ZERO) {
                    problems.push(format!("the monitor was dropped: {e}"));
                    break;
                }
            }
        }
    }
    if !missing.is_empty() {
        let lost_from: std::collections::BTreeSet<&str> =
            expected.iter().filter(|(_, e)| missing.contains(e)).map(|(id, _)| id.as_str()).collect();
        problems.push(format!(
            "{} of {total} acknowledged publishes never reached the subscriber (from {lost_from:?})",
            missing.len()
        ));
    }
    if let Ok(e) = monitor.wait_disconnected(Duration::ZERO) {
        if !problems.iter().any(|p| p.starts_with("the monitor")) {
            problems.push(format!("the monitor was dropped: {e}"));
        }
    }
    monitor.disconnect();

    // A clean stop, then the whole audit log verifies.
    let log_now = broker.log();
    broker.stop();
    let key = fleet.broker_public_key();
    let audit = broker.path("audit.jsonl");
    let verify = mqseal(&["audit", "verify", audit.to_str().unwrap(), "--broker-key", key.to_str().unwrap()], None);
    if !verify.status.success() {
        problems.push(format!(
            "mqseal audit verify failed: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        ));
    }

    assert!(
        problems.is_empty(),
        "log rotation under traffic ({login:?} login, {}):\n- {}\nbroker log (connections, reload):\n{}",
        test_harness::broker::mosquitto_binary().display(),
        problems.join("\n- "),
        telling_lines(&log_now)
    );
    assert!(total >= PUBLISHERS * (BEFORE + AFTER), "only {total} publishes were acknowledged");
}

#[test]
fn logrotate_under_traffic_with_key_login_drops_no_device_and_loses_no_message() {
    rotate_under_traffic(Login::Key);
}

#[test]
fn logrotate_under_traffic_with_a_password_file_drops_no_device_and_loses_no_message() {
    rotate_under_traffic(Login::PasswordFile);
}

#[test]
fn the_shipped_rule_names_the_log_and_pid_file_of_debians_mosquitto_conf() {
    // Debian's /etc/mosquitto/mosquitto.conf: log_dest file /var/log/mosquitto/mosquitto.log,
    // pid_file /run/mosquitto/mosquitto.pid. The rule must match them to rotate anything.
    let rule = std::fs::read_to_string(workspace_root().join(EXAMPLE)).expect("read rule");
    assert!(rule.contains(&format!("{EXAMPLE_LOG} {{")), "{rule}");
    assert!(rule.contains(EXAMPLE_PID), "{rule}");
    if Path::new("/etc/mosquitto/mosquitto.conf").exists() {
        let conf = std::fs::read_to_string("/etc/mosquitto/mosquitto.conf").unwrap_or_default();
        if conf.contains("log_dest file") {
            assert!(conf.contains(&format!("log_dest file {EXAMPLE_LOG}")), "{conf}");
        }
        if conf.contains("pid_file") {
            assert!(conf.contains(&format!("pid_file {EXAMPLE_PID}")), "{conf}");
        }
    }
}
