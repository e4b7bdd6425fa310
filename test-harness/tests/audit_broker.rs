//! The audit log as the real broker writes it: under traffic it verifies and
//! holds the right records (and no plaintext); a SIGKILL mid-traffic is
//! recovered from; `audit tail -f` shows new records promptly; and a truncation
//! is caught against a checkpoint kept elsewhere.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use mqseal_core::formats::audit::hashing::{sha256, to_hex};
use serde_json::Value;
use test_harness::clients::publish_raw;
use test_harness::wait::wait_until;
use test_harness::audit_read::{log_records, of_kind};
use test_harness::clients::{mosquitto_pub, MosquittoSub};
use test_harness::fleet::mqseal;
use test_harness::{artifacts, Broker, Fleet};

const TOPIC: &str = "sensors/temp";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `mqseal audit verify LOG --broker-key PUB [--checkpoint FILE]`.
fn verify(fleet: &Fleet, log: &Path, checkpoint: Option<&Path>) -> Output {
    let key = fleet.broker_public_key();
    let mut args = vec!["audit", "verify", log.to_str().unwrap(), "--broker-key", key.to_str().unwrap()];
    if let Some(cp) = checkpoint {
        args.extend_from_slice(&["--checkpoint", cp.to_str().unwrap()]);
    }
    mqseal(&args, None)
}

fn assert_verifies(fleet: &Fleet, broker: &Broker, checkpoint: Option<&Path>) {
    let out = verify(fleet, &broker.path("audit.jsonl"), checkpoint);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify must pass:\nstdout: {stdout}\nstderr: {}\nbroker log:\n{}",
        text(&out.stderr),
        broker.log()
    );
    assert!(stdout.starts_with("OK: "), "{stdout}");
}

/// The tree size a checkpoint file signs (its second line).
fn checkpoint_size(path: &Path) -> u64 {
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    body.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("no tree size in {}:\n{body}", path.display()))
}

#[test]
fn a_log_written_under_traffic_verifies_and_records_every_decision_without_plaintext() {
    let fleet = Fleet::sensors();
    let mut broker = Broker::start(fleet.broker_config("allow"));

    const SEALED: usize = 5;
    let secret = "plaintext-that-must-never-reach-the-log-7f3a";
    let mut envelope_hashes = Vec::new();
    for n in 0..SEALED {
        let envelope = fleet.seal("alice", TOPIC, format!("{secret} #{n}").as_bytes());
        envelope_hashes.push(to_hex(&sha256(&envelope)));
        publish_raw(&broker, TOPIC, "alice", &format!("alice-{n}"), &envelope);
    }
    // Denied: plaintext on a protected topic, and a subscription by a non-member.
    let denied_secret = "unsealed-secret-on-protected-topic-91c2";
    publish_raw(&broker, TOPIC, "alice", "alice-plain", denied_secret.as_bytes());
    let refused = MosquittoSub::start(broker.port(), "sensors/#", &["-u", "eve", "-i", "eve-sub"]);
    assert!(refused.is_err(), "eve's subscription must be refused");

    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());
    assert_verifies(&fleet, &broker, None);

    let log_path = broker.path("audit.jsonl");
    let raw = std::fs::read_to_string(&log_path).unwrap();
    assert!(!raw.contains(secret), "plaintext of a sealed message is in the audit log");
    assert!(!raw.contains(denied_secret), "plaintext of a denied publish is in the audit log");
    let all = log_records(&log_path);

    let accepted = of_kind(&all, "publish.accepted");
    assert_eq!(accepted.len(), SEALED, "publish.accepted records: {accepted:#?}");
    let mut seqs = Vec::new();
    for (record, hash) in accepted.iter().zip(&envelope_hashes) {
        let facts = &record["facts"];
        assert_eq!(facts["sender"], "alice", "{record}");
        assert_eq!(facts["group"], "sensors", "{record}");
        assert_eq!(facts["topic"], TOPIC, "{record}");
        assert_eq!(facts["envelope_sha256"], hash.as_str(), "envelope hash of {record}");
        seqs.push(facts["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {record}")));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing: {seqs:?}");

    let denied = of_kind(&all, "publish.denied");
    assert_eq!(denied.len(), 1, "publish.denied records: {denied:#?}");
    assert_eq!(denied[0]["facts"]["client"], "alice-plain", "{}", denied[0]);
    assert_eq!(denied[0]["facts"]["topic"], TOPIC, "{}", denied[0]);
    let reason = denied[0]["facts"]["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "publish.denied without a reason: {}", denied[0]);

    let sub_denied = of_kind(&all, "subscribe.denied");
    assert!(
        sub_denied.iter().any(|r| r["facts"]["client"] == "eve-sub" && r["facts"]["filter"] == "sensors/#"),
        "no subscribe.denied for eve: {sub_denied:#?}"
    );
    assert!(sub_denied.iter().all(|r| r["facts"]["reason"].as_str().is_some_and(|s| !s.is_empty())));

    assert_eq!(of_kind(&all, "plugin.start").len(), 1);
    assert_eq!(of_kind(&all, "plugin.stop").len(), 1);
    assert!(!of_kind(&all, "policy.loaded").is_empty(), "no policy.loaded record");
    // The chain's shape: indices 0.. with no gaps.
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["index"].as_u64(), Some(i as u64), "{r}");
    }
}

/// The lines a child writes to `stream`, one by one.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `mqseal pub` as `device` to the broker, `count` sealed messages.
fn mqseal_pub(fleet: &Fleet, port: u16, device: &str, count: u64, interval_ms: u64) -> Command {
    let mut command = Command::new(&artifacts().cli);
    command
        .args(["pub", "--device", fleet.device_dir(device).to_str().unwrap(), "-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", TOPIC, "-m", "reading", "-q", "1", "--count", &count.to_string(), "--interval-ms", &interval_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn count_in_log(broker: &Broker, kind: &str) -> usize {
    let needle = format!("\"kind\":\"{kind}\"");
    std::fs::read_to_string(broker.path("audit.jsonl")).unwrap_or_default().matches(&needle).count()
}

#[test]
fn sigkill_mid_traffic_then_restart_leaves_a_log_that_verifies() {
    let fleet = Fleet::sensors();
    let config = fleet
        .broker_config("allow")
        .option("checkpoint_every", "7")
        .option("checkpoint_interval_secs", "1")
        .option("audit_batch_ms", "5");
    let mut broker = Broker::start(config);

    let mut publisher = mqseal_pub(&fleet, broker.port(), "alice", 5000, 2).spawn().expect("run mqseal pub");
    let flowing = wait_until(Duration::from_secs(15), || count_in_log(&broker, "publish.accepted") >= 30);
    assert!(flowing, "traffic never reached the log\nbroker log:\n{}", broker.log());
    assert!(publisher.try_wait().expect("wait").is_none(), "the publisher finished before the kill: not mid-traffic");
    broker.kill9();
    // The publisher loses its connection; it must not outlive the test.
    let _ = publisher.kill();
    let _ = publisher.wait();
    let accepted_before = count_in_log(&broker, "publish.accepted");

    broker.restart().unwrap_or_else(|failure| panic!("restart after SIGKILL: {failure}"));
    let out = mqseal_pub(&fleet, broker.port(), "alice", 5, 0).output().expect("run mqseal pub");
    assert!(out.status.success(), "publish after restart: {}\nbroker log:\n{}", text(&out.stderr), broker.log());
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    assert_verifies(&fleet, &broker, None);
    let all = log_records(&broker.path("audit.jsonl"));
    assert_eq!(of_kind(&all, "plugin.start").len(), 2, "the restart must show as a second plugin.start");
    // Only the second run stopped cleanly.
    assert_eq!(of_kind(&all, "plugin.stop").len(), 1);
    let accepted = of_kind(&all, "publish.accepted").len();
    assert!(accepted >= accepted_before + 5, "{accepted} accepted, {accepted_before} before the kill");
    let recovered = of_kind(&all, "log.recovered");
    eprintln!("{} records, {accepted} accepted, {} log.recovered", all.len(), recovered.len());
}

#[test]
fn audit_tail_follow_shows_a_new_publish_within_a_second() {
    let fleet = Fleet::sensors();
    let broker = Broker::start(fleet.broker_config("allow"));
    // One record to show first: once it is printed, tail is following.
    publish_raw(&broker, TOPIC, "alice", "alice-first", &fleet.seal("alice", TOPIC, b"first"));
    assert!(
        wait_until(Duration::from_secs(5), || count_in_log(&broker, "publish.accepted") == 1),
        "first publish not logged\n{}",
        broker.log()
    );
    let log = broker.path("audit.jsonl");
    let mut tail = Command::new(&artifacts().cli)
        .args(["audit", "tail", log.to_str().unwrap(), "-f", "--json", "--kind", "publish.accepted", "-n", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mqseal audit tail");
    let lines = lines_of(tail.stdout.take().unwrap());
    let stderr = lines_of(tail.stderr.take().unwrap());
    let fail = |what: &str| -> ! {
        let err: Vec<String> = stderr.try_iter().collect();
        panic!("{what}; tail stderr: {}", err.join("\n"))
    };
    let first = lines.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| fail("tail printed nothing"));
    let first: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(first["kind"], "publish.accepted", "{first}");

    for n in 0..3 {
        let envelope = fleet.seal("alice", TOPIC, format!("live {n}").as_bytes());
        let started = Instant::now();
        publish_raw(&broker, TOPIC, "alice", &format!("alice-live-{n}"), &envelope);
        let line = lines
            .recv_timeout(Duration::from_secs(1).saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| fail(&format!("no record for publish {n} within a second")));
        let waited = started.elapsed();
        let record: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(record["kind"], "publish.accepted", "{record}");
        assert_eq!(record["facts"]["envelope_sha256"], to_hex(&sha256(&envelope)).as_str(), "{record}");
        assert_eq!(record["facts"]["client"], format!("alice-live-{n}").as_str(), "{record}");
        eprintln!("publish {n}: shown by tail after {waited:?}");
    }
    assert!(tail.try_wait().expect("wait").is_none(), "tail exited early");
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn truncation_is_caught_against_a_checkpoint_kept_elsewhere() {
    let fleet = Fleet::sensors();
    let config = fleet.broker_config("allow").option("checkpoint_every", "5").option("checkpoint_interval_secs", "1");
    let mut broker = Broker::start(config);
    let checkpoint = broker.path("audit.jsonl.checkpoint");
    // What the attacker keeps: the checkpoint signed at start, before any traffic.
    assert!(wait_until(Duration::from_secs(5), || checkpoint.exists()), "no checkpoint at start");
    let early = fleet.path("attacker-early.checkpoint");
    std::fs::copy(&checkpoint, &early).unwrap();
    let early_size = checkpoint_size(&early);

    for n in 0..6 {
        publish_raw(&broker, TOPIC, "alice", &format!("alice-a{n}"), &fleet.seal("alice", TOPIC, b"before"));
    }
    // The auditor's copy, taken once the traffic above is sealed.
    assert!(
        wait_until(Duration::from_secs(5), || checkpoint_size(&checkpoint) >= early_size + 6),
        "checkpoint did not advance past the traffic"
    );
    let kept = fleet.path("kept.checkpoint");
    std::fs::copy(&checkpoint, &kept).unwrap();
    let kept_size = checkpoint_size(&kept);

    for n in 0..6 {
        publish_raw(&broker, TOPIC, "alice", &format!("alice-b{n}"), &fleet.seal("alice", TOPIC, b"after"));
    }
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());
    // Control: the untouched log is consistent with the kept checkpoint.
    assert_verifies(&fleet, &broker, Some(&kept));

    // The attacker cuts the log back below the kept checkpoint and puts back the
    // only checkpoint that still matches (the early one), hiding the later ones.
    let log = broker.path("audit.jsonl");
    let body = std::fs::read_to_string(&log).unwrap();
    let keep_lines = (kept_size - 2) as usize;
    assert!(keep_lines as u64 >= early_size, "kept {kept_size}, early {early_size}");
    let cut: String = body.split_inclusive('\n').take(keep_lines).collect();
    std::fs::write(&log, cut).unwrap();
    std::fs::copy(&early, &checkpoint).unwrap();
    std::fs::copy(&early, broker.path("audit.jsonl.checkpoints")).unwrap();

    // Without the kept checkpoint the cut log looks sound...
    let alone = verify(&fleet, &log, None);
    assert_eq!(alone.status.code(), Some(0), "the doctored log alone should look sound: {}", text(&alone.stdout));
    // ...the kept checkpoint exposes it.
    let out = verify(&fleet, &log, Some(&kept));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "truncation must be caught:\nstdout: {stdout}\nstderr: {}", text(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap_or_else(|| panic!("no FAIL line: {stdout}"));
    eprintln!("{line}");
}

#[test]
fn a_torn_last_line_left_by_sigkill_is_cut_and_recorded_at_restart() {
    let fleet = Fleet::sensors();
    let mut broker = Broker::start(fleet.broker_config("allow").option("checkpoint_every", "7"));
    let mut publisher = mqseal_pub(&fleet, broker.port(), "alice", 5000, 2).spawn().expect("run mqseal pub");
    let flowing = wait_until(Duration::from_secs(15), || count_in_log(&broker, "publish.accepted") >= 10);
    assert!(flowing, "traffic never reached the log\nbroker log:\n{}", broker.log());
    broker.kill9();
    let _ = publisher.kill();
    let _ = publisher.wait();

    // A write the kill interrupted: half a record, no newline. (Whether a real
    // kill tears a line is luck; this makes the torn tail certain.)
    let log = broker.path("audit.jsonl");
    let mut damaged = std::fs::read(&log).unwrap();
    // If the kill itself tore a line, the cut starts there.
    let intact_len = damaged.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let intact = damaged[..intact_len].to_vec();
    damaged.extend_from_slice(br#"{"facts":{"client":"alice-torn","envelope_sha256":"00"#);
    let torn_len = damaged.len() - intact_len;
    std::fs::write(&log, &damaged).unwrap();

    broker.restart().unwrap_or_else(|failure| panic!("restart with a torn tail: {failure}"));
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());

    assert_verifies(&fleet, &broker, None);
    let after = std::fs::read(&log).unwrap();
    assert!(after.starts_with(&intact), "the intact records before the torn line changed");
    assert!(!text(&after).contains("alice-torn"), "the torn bytes are still in the log");
    let all = log_records(&log);
    let recovered = of_kind(&all, "log.recovered");
    assert_eq!(recovered.len(), 1, "no log.recovered record: {recovered:#?}");
    let facts = &recovered[0]["facts"];
    assert_eq!(facts["cut_offset"].as_u64(), Some(intact.len() as u64), "{}", recovered[0]);
    assert_eq!(facts["cut_bytes"].as_u64(), Some(torn_len as u64), "{}", recovered[0]);
    assert_eq!(of_kind(&all, "plugin.start").len(), 2);
}

/// Threads of the broker process, from /proc.
fn broker_threads(broker: &Broker) -> usize {
    let pid = broker.pid().expect("broker running");
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|tasks| tasks.count()).unwrap_or(0)
}

#[test]
fn an_idle_broker_stays_single_threaded_and_a_crash_while_the_writer_is_parked_loses_nothing() {
    let fleet = Fleet::sensors();
    // No checkpoint falls due during the test: the records stay unsealed while parked.
    let config = fleet.broker_config("allow").option("checkpoint_every", "1000").option("checkpoint_interval_secs", "3600");
    let mut broker = Broker::start(config);
    let single = wait_until(Duration::from_secs(10), || broker_threads(&broker) == 1);
    assert!(single, "the idle broker keeps {} threads\nbroker log:\n{}", broker_threads(&broker), broker.log());

    // Unprotected traffic has nothing to record: no thread is started for it.
    let out = mosquitto_pub(broker.port(), &["-u", "eve", "-i", "eve-open", "-t", "open/lamp", "-m", "on", "-q", "1"]);
    assert!(out.status.success(), "mosquitto_pub: {}", text(&out.stderr));
    assert_eq!(broker_threads(&broker), 1, "an unprotected publish started a thread");

    // Protected publishes are recorded; then the writer parks again.
    for n in 0..3 {
        let envelope = fleet.seal("alice", TOPIC, format!("reading {n}").as_bytes());
        publish_raw(&broker, TOPIC, "alice", &format!("alice-{n}"), &envelope);
    }
    assert!(wait_until(Duration::from_secs(10), || count_in_log(&broker, "publish.accepted") == 3), "{}", broker.log());
    assert!(wait_until(Duration::from_secs(10), || broker_threads(&broker) == 1), "the writer never parked");

    // A crash now, with the records written but not yet under a checkpoint.
    broker.kill9();
    broker.restart().unwrap_or_else(|failure| panic!("restart after SIGKILL: {failure}"));
    let status = broker.stop().expect("broker was running");
    assert!(status.success(), "broker exit {status:?}\n{}", broker.log());
    assert_verifies(&fleet, &broker, None);
    assert_eq!(count_in_log(&broker, "publish.accepted"), 3);
}
