//! `mqseal audit verify | tail | prove`, run as the binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mqseal_core::formats::audit::keyfile::SigningKey;
use mqseal_core::formats::audit::{AuditConfig, AuditEvent, AuditLog};

fn mqseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mqseal"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = mqseal().args(args).output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn config(dir: &Path) -> AuditConfig {
    let mut c = AuditConfig::new(dir.join("audit.jsonl"));
    c.batch_window = Duration::from_millis(5);
    c
}

fn event(i: u64) -> AuditEvent {
    if i % 4 == 3 {
        AuditEvent::PublishDenied {
            client: format!("c{}", i % 2),
            topic: format!("fleet/{i}/cmd"),
            reason: "not-a-publisher".into(),
            sender: None,
            group: None,
            epoch: None,
            seq: None,
            envelope_sha256: None,
        }
    } else {
        AuditEvent::PublishAccepted {
            client: format!("c{}", i % 2),
            topic: format!("fleet/{i}/telemetry"),
            sender: "dev-1".into(),
            group: "fleet".into(),
            epoch: 2,
            seq: i,
            envelope_sha256: [7; 32],
        }
    }
}

/// A log of `n` events, plus the broker key as PKCS#8 PEM beside it.
fn setup(n: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let log_path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    for i in 0..n {
        log.append(event(i)).unwrap();
    }
    log.shutdown();
    let key_path = broker_key_file(dir.path());
    (dir, log_path, key_path)
}

/// The broker key as PKCS#8 PEM in `dir`, saved 0600: a private key file others can read is refused.
fn broker_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("broker.pem");
    let key = mqseal_core::formats::keys::SigningKey::ed25519_from_seed(&[42; 32]);
    key.save(&path, mqseal_core::formats::keys::Overwrite::Refuse).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn verify_prints_one_line_and_exits_by_soundness() {
    let (dir, log, key) = setup(8);
    let (code, out, _) = run(&["audit", "verify", s(&log), "--broker-key", s(&key)]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("OK: 10 records in 1 file, 10 sealed by checkpoint, 0 not yet sealed, head "), "{out}");
    assert!(out.contains("signed by mqseal/audit-"), "{out}");

    // Without a key: sound as far as checked, but not a 0.
    let (code, out, _) = run(&["audit", "verify", s(&log)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("signatures NOT checked"), "{out}");

    // A changed field: the first bad line and why.
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("fleet/2/telemetry", "fleet/9/telemetry", 1)).unwrap();
    let (code, out, _) = run(&["audit", "verify", s(&log), "--broker-key", s(&key)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(&format!("FAIL: {}:4: ", log.display())), "{out}");
    std::fs::write(&log, text).unwrap();

    // A missing key file is an error, not a verdict.
    let (code, _, err) = run(&["audit", "verify", s(&log), "--broker-key", s(&dir.path().join("nope.pem"))]);
    assert_eq!(code, 1);
    assert!(err.contains("nope.pem"), "{err}");
}

#[test]
fn verify_against_a_checkpoint_kept_elsewhere() {
    let (dir, log, key) = setup(4);
    let kept = dir.path().join("kept.checkpoint");
    std::fs::copy(dir.path().join("audit.jsonl.checkpoint"), &kept).unwrap();
    let (l, _) = AuditLog::open(config(dir.path()), self::key()).unwrap();
    l.append(event(5)).unwrap();
    l.shutdown();
    let (code, out, _) = run(&["audit", "verify", s(&log), "--broker-key", s(&key), "--checkpoint", s(&kept)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent with 1 external checkpoint"), "{out}");
    // Truncated back before the kept checkpoint.
    let text = std::fs::read_to_string(&log).unwrap();
    let first3: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, first3).unwrap();
    let (code, out, _) = run(&["audit", "verify", s(&log), "--broker-key", s(&key), "--checkpoint", s(&kept)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("FAIL: ") && out.contains("truncated"), "{out}");
}

#[test]
fn verify_follows_rotated_files_given_or_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.rotate_bytes = 2000;
    let log_path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    for i in 0..30 {
        log.append(event(i)).unwrap();
    }
    log.shutdown();
    let key_path = broker_key_file(dir.path());
    let (code, out, _) = run(&["audit", "verify", s(&log_path), "--broker-key", s(&key_path)]);
    assert_eq!(code, 0, "{out}");
    let files: Vec<PathBuf> = (1..).map(|n| dir.path().join(format!("audit.jsonl.{n}"))).take_while(|p| p.exists()).collect();
    assert!(out.contains(&format!("in {} files", files.len() + 1)), "{out}");
    let mut args: Vec<String> = vec!["audit".into(), "verify".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    args.push(log_path.display().to_string());
    args.extend(["--broker-key".into(), key_path.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, _) = run(&args);
    assert_eq!(code, 0, "{out}");
    // Files given out of order break the chain.
    let mut swapped = args.clone();
    swapped.swap(2, 3);
    let (code, out, _) = run(&swapped);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn tail_shows_the_last_records_filtered() {
    let (_dir, log, _) = setup(8);
    let (code, out, _) = run(&["audit", "tail", s(&log), "-n", "3"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[2].contains(" #9 log.closed lost=0 refused=0"), "{out}");
    assert!(lines[0].contains(" #7 publish.accepted client=c0 envelope_sha256=0707070707070707… epoch=2 group=fleet"), "{out}");

    let (_, out, _) = run(&["audit", "tail", s(&log), "-n", "2", "--json"]);
    let stored: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), stored[stored.len() - 2..].iter().map(String::as_str).collect::<Vec<_>>());

    let (_, out, _) = run(&["audit", "tail", s(&log), "--kind", "publish.denied"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = run(&["audit", "tail", s(&log), "--kind", "publish", "--client", "c1"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().all(|l| l.contains("client=c1")), "{out}");
    let (_, out, _) = run(&["audit", "tail", s(&log), "--topic", "fleet/+/cmd"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, _, err) = run(&["audit", "tail", s(&log), "--topic", "fleet/#/x"]);
    assert_eq!(code, 1);
    assert!(err.contains("--topic"), "{err}");
}

/// Reads the child's stdout lines on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tail_follow_shows_new_records_within_a_second_and_follows_rotation() {
    let (dir, log, _) = setup(2);
    let mut child = mqseal()
        .args(["audit", "tail", s(&log), "-f", "-n", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let mut child = KillOnDrop(child);
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("the last record");
    assert!(first.contains("\"kind\":\"log.closed\""), "{first}");

    let mut c = config(dir.path());
    c.rotate_bytes = 3000;
    let (writer, _) = AuditLog::open(c, key()).unwrap();
    writer.append(AuditEvent::ClientKicked { client: "intruder".into(), reason: "flood".into() }).unwrap();
    writer.sync().unwrap();
    let written = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("intruder")) {
        let left = Duration::from_secs(1).saturating_sub(written.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no new record within a second of being written; got {seen:?}"),
        }
    }

    // Rotation: every record arrives, in order, across several files.
    for i in 0..60 {
        writer.append(event(i)).unwrap();
    }
    writer.shutdown();
    assert!(dir.path().join("audit.jsonl.2").exists(), "rotated");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.last().is_some_and(|l| l.contains("log.closed")) {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("records after rotation");
        seen.push(line);
    }
    let indices: Vec<u64> = seen.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, (indices[0]..indices[0] + indices.len() as u64).collect::<Vec<_>>());
    assert!(seen.iter().any(|l| l.contains("log.rotated")));
    assert!(child.0.try_wait().unwrap().is_none(), "still following");
}

#[test]
fn tail_follow_stops_when_the_chain_breaks() {
    let (_dir, log, _) = setup(2);
    let mut child = mqseal().args(["audit", "tail", s(&log), "-f", "-n", "1"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let rx = lines_of(&mut child);
    rx.recv_timeout(Duration::from_secs(10)).expect("the last record");
    let text = std::fs::read_to_string(&log).unwrap();
    let replay = text.lines().nth(1).unwrap().to_string();
    std::fs::write(&log, format!("{text}{replay}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tail did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("FAIL") && err.contains("audit.jsonl:5") && err.contains("chain broken"), "{err}");
}

#[test]
fn prove_inclusion_and_consistency() {
    let (dir, log, key) = setup(8);
    let checkpoint = dir.path().join("audit.jsonl.checkpoint");
    let (code, out, _) = run(&["audit", "prove", s(&log), "--index", "4", "--checkpoint", s(&checkpoint), "--broker-key", s(&key)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("record #4 (") && out.contains("signed by mqseal/audit-"), "{out}");
    assert!(out.trim_end().ends_with("OK: record 4 is in the tree of 10 records"), "{out}");

    let (code, out, _) = run(&["audit", "prove", s(&log), "--index", "4", "--checkpoint", s(&checkpoint), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["tree_size"], 10);
    assert_eq!(v["proof"].as_array().unwrap().len(), 4);

    let (code, out, _) = run(&["audit", "prove", s(&log), "--index", "10", "--checkpoint", s(&checkpoint)]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL: record 10 is not in a tree of 10 records"), "{out}");

    // Consistency between the first checkpoint of the history (size 0 is trivial;
    // take the one after log.opened) and the latest.
    let history = std::fs::read_to_string(dir.path().join("audit.jsonl.checkpoints")).unwrap();
    let notes = mqseal_core::formats::audit::checkpoint::parse_checkpoints(&history).unwrap();
    let old = dir.path().join("old.checkpoint");
    std::fs::write(&old, notes[1].note.to_text()).unwrap();
    let (code, out, _) = run(&["audit", "prove", s(&log), "--old-checkpoint", s(&old), "--checkpoint", s(&checkpoint), "--broker-key", s(&key)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: the tree of 10 records extends the tree of 1"), "{out}");

    // A rewritten log cannot prove anything against the signed checkpoint.
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("fleet/2/telemetry", "fleet/9/telemetry", 1)).unwrap();
    let (code, out, _) = run(&["audit", "prove", s(&log), "--index", "1", "--checkpoint", s(&checkpoint)]);
    assert_eq!(code, 1);
    assert!(out.contains("do not produce the checkpoint's root"), "{out}");
}
