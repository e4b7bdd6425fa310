//! The device developers' examples against a real Mosquitto with mqseal
//! (login by device key, key exchange over MQTT): `examples/c-device` (C,
//! libmosquitto, libmqseal_device; run under valgrind) and, when
//! `MQSEAL_PYTHON` names a Python with the `mqseal` package and paho-mqtt
//! installed (scripts/test makes one), `examples/python-device`.
//!
//! Each example and the `mqseal` CLI exchange messages both ways; a message
//! sealed by each is accepted by the broker (MQTT 5 PUBACK) and opened by all
//! the others; a key rotation pushed while they run is followed live, and
//! what each seals afterwards is under the new epoch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use test_harness::artifacts::{device_library_dir, workspace_root};
use test_harness::fleet::{mqseal, mqseal_ok};
use test_harness::line_process::LineProcess;
use test_harness::{Broker, Fleet};

/// Generous: the C example runs under valgrind, and seven engineers share two cores.
const WAIT: Duration = Duration::from_secs(60);
const GROUP: &str = "plant";

/// An example device program, speaking the examples' line protocol.
struct Example {
    id: &'static str,
    topic: String,
    process: LineProcess,
}

/// Builds the C example into `out` against the freshly built library.
fn build_c_example(out: &Path) -> PathBuf {
    let lib = device_library_dir();
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(workspace_root().join("examples/c-device"))
        .arg(format!("OUT={}", out.display()))
        .arg(format!("LIBDIR={}", lib.display()))
        .status()
        .expect("run make (scripts/setup installs make and a C compiler)");
    assert!(status.success(), "building examples/c-device failed");
    out.join("mqseal-c-device")
}

fn example_args(fleet: &Fleet, broker: &Broker, id: &str, topic: &str) -> Vec<String> {
    let dir = fleet.device_dir(id).display().to_string();
    let port = broker.port().to_string();
    ["--device", &dir, "--host", "127.0.0.1", "--port", &port, "--publish", topic, "--subscribe", "plant/#"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn start_c(fleet: &Fleet, broker: &Broker, binary: &Path) -> Example {
    let topic = "plant/cdev/temp".to_string();
    let mut command = Command::new("valgrind");
    command
        .args(["--quiet", "--error-exitcode=97", "--leak-check=full", "--errors-for-leak-kinds=definite"])
        .args(["--show-leak-kinds=definite", "--track-origins=yes"])
        .arg(binary)
        .args(example_args(fleet, broker, "cdev", &topic));
    Example { id: "cdev", topic, process: LineProcess::spawn("c-device (valgrind)", command) }
}

fn start_python(fleet: &Fleet, broker: &Broker, python: &str) -> Example {
    let topic = "plant/pydev/temp".to_string();
    let mut command = Command::new(python);
    command.arg(workspace_root().join("examples/python-device/device.py")).args(example_args(fleet, broker, "pydev", &topic));
    command.env("PYTHONUNBUFFERED", "1");
    Example { id: "pydev", topic, process: LineProcess::spawn("python-device", command) }
}

/// `mqseal sub --json` as alice.
fn start_cli_sub(fleet: &Fleet, broker: &Broker) -> LineProcess {
    let mut command = Command::new(&test_harness::artifacts().cli);
    let dir = fleet.device_dir("alice");
    command.args(["sub", "--device", dir.to_str().unwrap(), "-H", "127.0.0.1", "-p", &broker.port().to_string()]);
    command.args(["-t", "plant/#", "--json", "-q", "1"]);
    LineProcess::spawn("mqseal sub (alice)", command)
}

fn net(broker: &Broker) -> Vec<String> {
    vec!["-H".into(), "127.0.0.1".into(), "-p".into(), broker.port().to_string()]
}

fn push(fleet: &Fleet, broker: &Broker, what: &[&str]) {
    let realm = fleet.realm().display().to_string();
    let mut args: Vec<String> = what.iter().map(|s| s.to_string()).collect();
    args.extend(["--realm".to_string(), realm]);
    args.extend(net(broker));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mqseal_ok(&args, None);
}

fn cli_publish(fleet: &Fleet, broker: &Broker, message: &str) {
    let dir = fleet.device_dir("alice").display().to_string();
    let port = broker.port().to_string();
    let out = mqseal(
        &["pub", "--device", &dir, "-H", "127.0.0.1", "-p", &port, "-t", "plant/alice/temp", "-m", message, "-q", "1", "--mqtt5"],
        None,
    );
    assert!(out.status.success(), "mqseal pub: {}\n{}", String::from_utf8_lossy(&out.stderr), broker.log());
}

/// The message line an example prints for an opened message: (sender, epoch).
fn expect_opened(example: &mut Example, topic: &str, sender: &str, text: &str) -> u64 {
    let prefix = format!("message {topic} {sender} {GROUP} ");
    let line = example.process.expect_line(&format!("opening {text:?} from {sender}"), WAIT, |l| {
        l.starts_with(&prefix) && l.ends_with(&format!(" {text}"))
    });
    line[prefix.len()..].split(' ').next().unwrap().parse().expect("epoch")
}

/// The JSON line `mqseal sub` prints for `text`: returns (sender, epoch).
fn expect_cli_opened(sub: &mut LineProcess, text: &str) -> (String, u64) {
    let want = base64_of(text.as_bytes());
    let line = sub.expect_line(&format!("opening {text:?}"), WAIT, |l| l.contains(&want));
    let json: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    (json["sender"].as_str().unwrap().to_string(), json["epoch"].as_u64().unwrap())
}

fn base64_of(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends one reading from `from`, checks the broker accepted it, and that the
/// CLI and every other example opened it under `epoch`.
fn exchange(examples: &mut [Example], from: usize, cli: &mut LineProcess, text: &str, epoch: u64) {
    let (id, topic) = (examples[from].id, examples[from].topic.clone());
    examples[from].process.send_line(text);
    examples[from].process.expect_line("accepted by the broker", WAIT, |l| {
        assert!(!l.starts_with("publish-refused") && !l.starts_with("seal-failed"), "{id}: {l}");
        l == format!("published {topic}")
    });
    assert_eq!(expect_cli_opened(cli, text), (id.to_string(), epoch), "mqseal sub opened {id}'s message");
    for (i, other) in examples.iter_mut().enumerate() {
        if i != from {
            assert_eq!(expect_opened(other, &topic, id, text), epoch, "{} opened {id}'s message", other.id);
        }
    }
}

fn epoch_of(fleet: &Fleet) -> u64 {
    let out = mqseal_ok(&["realm", "show", "--realm", fleet.realm().to_str().unwrap()], None);
    let text = String::from_utf8_lossy(&out).into_owned();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{GROUP}  epoch=")))
        .unwrap_or_else(|| panic!("realm show: {text}"));
    let after = line.split("epoch=").nth(1).unwrap();
    after.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().expect("epoch")
}

#[test]
fn the_c_and_python_examples_and_the_cli_talk_both_ways_and_follow_a_key_rotation() {
    let fleet = Fleet::new();
    for id in ["alice", "carol", "cdev", "pydev"] {
        fleet.add_device(id);
    }
    fleet.add_group(GROUP, &["plant/#"], 600);
    for (id, role) in [("alice", "pubsub"), ("carol", "sub"), ("cdev", "pubsub"), ("pydev", "pubsub")] {
        fleet.add_member(GROUP, id, role);
    }
    for id in ["alice", "cdev", "pydev"] {
        fleet.join(id);
    }
    let broker = Broker::start(fleet.broker_config("deny").option("auth", "key").option("state_dir", "{dir}"));
    push(&fleet, &broker, &["policy", "push"]);
    push(&fleet, &broker, &["bundle", "push", "--all"]);
    let first_epoch = epoch_of(&fleet);

    let build = tempfile::tempdir().expect("temp dir");
    let c_binary = build_c_example(build.path());
    let python = std::env::var("MQSEAL_PYTHON").ok();
    if python.is_none() {
        eprintln!("MQSEAL_PYTHON is not set: running the C example only (scripts/test runs both)");
    }

    let mut cli = start_cli_sub(&fleet, &broker);
    let mut examples = vec![start_c(&fleet, &broker, &c_binary)];
    if let Some(python) = &python {
        examples.push(start_python(&fleet, &broker, python));
    }
    cli.expect_stderr("subscribed to plant/#", WAIT);
    for example in &mut examples {
        example.process.expect_line("ready", WAIT, |l| l == "ready");
    }

    // Both ways, before the rotation.
    for from in 0..examples.len() {
        let text = format!("reading 1 from {}", examples[from].id);
        exchange(&mut examples, from, &mut cli, &text, first_epoch);
    }
    cli_publish(&fleet, &broker, "hello from the CLI");
    for example in &mut examples {
        assert_eq!(expect_opened(example, "plant/alice/temp", "alice", "hello from the CLI"), first_epoch);
    }

    // A rotation, live: carol leaves, the new policy and bundles are pushed.
    fleet.remove_member(GROUP, "carol");
    let second_epoch = epoch_of(&fleet);
    assert_eq!(second_epoch, first_epoch + 1);
    push(&fleet, &broker, &["policy", "push"]);
    push(&fleet, &broker, &["bundle", "push", "--group", GROUP]);
    for example in &mut examples {
        example.process.expect_line("the key update", WAIT, |l| l.starts_with("keys-updated "));
    }
    for from in 0..examples.len() {
        let text = format!("reading 2 from {}", examples[from].id);
        exchange(&mut examples, from, &mut cli, &text, second_epoch);
    }
    cli_publish(&fleet, &broker, "after the rotation, from the CLI");
    for example in &mut examples {
        assert_eq!(expect_opened(example, "plant/alice/temp", "alice", "after the rotation, from the CLI"), second_epoch);
    }

    // Each ends cleanly at the end of its input (valgrind: exit 97 on any memory error or leak).
    for example in &mut examples {
        let status = example.process.finish(WAIT);
        assert!(status.success(), "{} exited with {status}; {}", example.id, example.process.transcript());
        for line in example.process.seen() {
            assert!(!line.starts_with("rejected") && !line.starts_with("control-refused"), "{}: {line}", example.id);
        }
    }
}
