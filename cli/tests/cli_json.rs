//! docs/CLI-JSON.md documents every `--json` output of the CLI field by field.
//! These tests run the real commands and check that each prints exactly the
//! documented fields, with the documented types, and that the values are the
//! ones the inputs imply (the audit proofs against docs/vectors).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use test_harness::clients::mosquitto_pub;
use test_harness::{Broker, BrokerConfig, Fleet};

const WAIT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mqseal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqseal")).args(args).stdin(Stdio::null()).output().expect("run mqseal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The documented fields of each `<!-- cli-json:NAME -->` table: name → (field → type).
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let doc = std::fs::read_to_string(repo().join("docs/CLI-JSON.md")).unwrap();
    let mut tables = BTreeMap::new();
    for part in doc.split("<!-- cli-json:").skip(1) {
        let (name, rest) = part.split_once(" -->").unwrap();
        let body = rest.split("<!-- /cli-json -->").next().unwrap();
        let fields: BTreeMap<String, String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .map(|l| {
                let (field, rest) = l.split_once('`').unwrap();
                let kind = rest.trim_start_matches(" |").split('|').next().unwrap().trim().to_string();
                (field.to_string(), kind)
            })
            .collect();
        assert!(!fields.is_empty(), "table {name} lists no field");
        tables.insert(name.to_string(), fields);
    }
    tables
}

/// Checks one printed line against a documented table: compact, sorted keys,
/// exactly the fields, each of its type.
fn check_line(table: &str, line: &str) -> Value {
    let tables = documented();
    let fields = tables.get(table).unwrap_or_else(|| panic!("docs/CLI-JSON.md has no table {table}"));
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{table}: not JSON ({e}): {line}"));
    assert_eq!(value.to_string(), line, "{table}: not compact with sorted keys as documented");
    let object = value.as_object().unwrap_or_else(|| panic!("{table}: not an object: {line}"));
    let printed: Vec<&String> = object.keys().collect();
    let listed: Vec<&String> = fields.keys().collect();
    assert_eq!(printed, listed, "{table}: printed fields differ from docs/CLI-JSON.md");
    for (field, kind) in fields {
        let v = &object[field];
        let ok = match kind.as_str() {
            "string" => v.is_string(),
            "u64" => v.is_u64(),
            "boolean" => v.is_boolean(),
            "array of strings" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            other => panic!("{table}.{field}: unknown documented type {other:?}"),
        };
        assert!(ok, "{table}.{field}: {v} is not a {kind}");
    }
    value
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sensor_fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_device("alice").add_device("bob");
    fleet.add_group("sensors", &["sensors/#"], 3600);
    fleet.add_member("sensors", "alice", "pub").add_member("sensors", "bob", "sub");
    fleet.join("alice").join("bob");
    fleet
}

#[test]
fn every_documented_table_is_checked_here() {
    let names: Vec<String> = documented().into_keys().collect();
    assert_eq!(names, ["open", "prove-consistency", "prove-inclusion", "sub-rejected", "sub-unprotected"]);
}

#[test]
fn open_json_prints_the_documented_fields() {
    let fleet = sensor_fleet();
    let envelope = fleet.seal("alice", "sensors/temp", b"21.5");
    let file = fleet.path("envelope.bin");
    std::fs::write(&file, &envelope).unwrap();
    let bob = fleet.device_dir("bob");
    let out = mqseal(&["open", "--device", bob.to_str().unwrap(), "--topic", "sensors/temp", "--in", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "{stdout:?}");
    let v = check_line("open", stdout.trim_end());
    assert_eq!((v["sender"].as_str(), v["group"].as_str(), v["topic"].as_str()), (Some("alice"), Some("sensors"), Some("sensors/temp")));
    assert_eq!(v["payload_base64"], b64(b"21.5"));
    assert_eq!(v["aead"], "A256GCM");
    assert_eq!((v["epoch"].as_u64(), v["seq"].as_u64()), (Some(1), Some(1)));

    // Refused: nothing on stdout, the token in brackets at the end of stderr, status 1.
    let again = mqseal(&["open", "--device", bob.to_str().unwrap(), "--topic", "sensors/temp", "--in", file.to_str().unwrap(), "--json"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stdout.is_empty());
    let err = text(&again.stderr);
    assert!(err.starts_with("mqseal: error: cannot open the envelope: ") && err.trim_end().ends_with("[replay]"), "{err}");
}

/// `mqseal sub --json` against a plain Mosquitto (no plugin, so a refused
/// message reaches the subscriber): one line of each shape.
#[test]
fn sub_json_prints_the_documented_fields_for_each_shape() {
    let fleet = sensor_fleet();
    let broker = Broker::start(BrokerConfig::plain());
    let port = broker.port();
    let bob = fleet.device_dir("bob");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqseal"))
        .args(["sub", "--device", bob.to_str().unwrap(), "-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "sensors/#", "-t", "plain/#", "--json", "-C", "2", "-q", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mqseal sub");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let line = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let line = line.unwrap_or_else(|_| panic!("mqseal sub did not subscribe: {seen:?}"));
        if line.starts_with("subscribed to") {
            break;
        }
        seen.push(line);
    }
    let send = |name: &str, topic: &str, payload: &[u8]| {
        let file = broker.path(name);
        std::fs::write(&file, payload).unwrap();
        let out = mosquitto_pub(port, &["-t", topic, "-q", "1", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "mosquitto_pub: {}", text(&out.stderr));
    };
    send("rejected.bin", "sensors/a", b"plain text, not an envelope");
    send("plain.bin", "plain/x", b"hello");
    send("sealed.bin", "sensors/a", &fleet.seal("alice", "sensors/a", b"genuine"));
    let next = || stdout.recv_timeout(WAIT).expect("a line from mqseal sub");
    let rejected = check_line("sub-rejected", &next());
    assert_eq!((rejected["topic"].as_str(), rejected["rejected"].as_str()), (Some("sensors/a"), Some("not-sign1")));
    let plain = check_line("sub-unprotected", &next());
    assert_eq!((plain["unprotected"].as_bool(), plain["payload_base64"].as_str()), (Some(true), Some(b64(b"hello").as_str())));
    let opened = check_line("open", &next());
    assert_eq!((opened["sender"].as_str(), opened["payload_base64"].as_str()), (Some("alice"), Some(b64(b"genuine").as_str())));
    let status = child.wait().unwrap();
    assert!(status.success(), "-C 2 counts the unprotected and the opened message");
}

fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("docs/vectors/audit-vectors.json")).unwrap()).unwrap()
}

#[test]
fn audit_prove_json_prints_the_documented_fields_and_the_vector_proofs() {
    let v = repo().join("docs/vectors");
    let log = v.join("audit.jsonl");
    let checkpoint = v.join("audit.jsonl.checkpoint");
    let key = v.join("audit-broker-key.pub.pem");
    let vectors = vectors();

    let out = mqseal(&[
        "audit", "prove", log.to_str().unwrap(), "--index", "3", "--checkpoint", checkpoint.to_str().unwrap(),
        "--broker-key", key.to_str().unwrap(), "--json",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let p = check_line("prove-inclusion", stdout.trim_end());
    assert_eq!(p["index"], 3);
    assert_eq!(p["tree_size"], vectors["inclusion"]["tree_size"]);
    assert_eq!(p["proof"], vectors["inclusion"]["proof"]);
    assert_eq!(p["record"], vectors["records"][3]["line"]);
    assert_eq!(p["leaf_hash"], vectors["records"][3]["leaf_hash"]);
    let root_hex = vectors["roots"][10].as_str().unwrap();
    let root = (0..root_hex.len()).step_by(2).map(|i| u8::from_str_radix(&root_hex[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
    assert_eq!(p["root"], b64(&root));

    // The size-5 checkpoint of the history file, on its own.
    let history = std::fs::read_to_string(v.join("audit.jsonl.checkpoints")).unwrap();
    let parts: Vec<&str> = history.split("\n\n").collect();
    let five = parts
        .chunks(2)
        .find(|note| note[0].lines().nth(1) == Some("5"))
        .map(|note| format!("{}\n\n{}\n", note[0], note[1].trim_end()))
        .expect("a size-5 checkpoint in audit.jsonl.checkpoints");
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old.checkpoint");
    std::fs::write(&old, five).unwrap();
    let out = mqseal(&[
        "audit", "prove", log.to_str().unwrap(), "--old-checkpoint", old.to_str().unwrap(), "--checkpoint",
        checkpoint.to_str().unwrap(), "--broker-key", key.to_str().unwrap(), "--json",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let c = check_line("prove-consistency", text(&out.stdout).trim_end());
    assert_eq!((c["first_size"].as_u64(), c["second_size"].as_u64()), (Some(5), Some(10)));
    assert_eq!(c["proof"], vectors["consistency"]["proof"]);
    assert_eq!(c["second_root"], p["root"]);
}

#[test]
fn audit_tail_json_prints_the_records_as_stored() {
    let log = repo().join("docs/vectors/audit.jsonl");
    let stored: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect();
    let out = mqseal(&["audit", "tail", log.to_str().unwrap(), "-n", "4", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(printed, stored[stored.len() - 4..]);
    let out = mqseal(&["audit", "tail", log.to_str().unwrap(), "--kind", "publish.denied", "--json"]);
    let printed: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(printed, stored.iter().filter(|l| l.contains("\"kind\":\"publish.denied\"")).cloned().collect::<Vec<_>>());
}
