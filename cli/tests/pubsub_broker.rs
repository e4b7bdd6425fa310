//! `mqseal pub` and `mqseal sub` against a real Mosquitto: with the mqseal
//! plugin (login by device key, policy enforced by the broker) and without it
//! (plain Mosquitto, so that the subscriber's own checks meet forged,
//! tampered and replayed envelopes).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use base64::Engine as _;
use test_harness::clients::mosquitto_pub;
use test_harness::{Broker, BrokerConfig, Fleet};

const WAIT: Duration = Duration::from_secs(15);

fn mqseal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mqseal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `mqseal` to completion.
fn mqseal(args: &[&str]) -> Output {
    Command::new(mqseal_bin()).args(args).stdin(Stdio::null()).output().expect("run mqseal")
}

fn dir(fleet: &Fleet, id: &str) -> String {
    fleet.device_dir(id).display().to_string()
}

/// `mqseal pub` as device `id` to the broker, with extra arguments.
fn publish(fleet: &Fleet, broker: &Broker, id: &str, args: &[&str]) -> Output {
    let port = broker.port().to_string();
    let device = dir(fleet, id);
    let mut all = vec!["pub", "--device", device.as_str(), "-H", "127.0.0.1", "-p", port.as_str()];
    all.extend_from_slice(args);
    mqseal(&all)
}

fn publish_ok(fleet: &Fleet, broker: &Broker, id: &str, args: &[&str]) {
    let out = publish(fleet, broker, id, args);
    assert!(out.status.success(), "mqseal pub {args:?} failed: {}\nbroker log:\n{}", text(&out.stderr), broker.log());
}

/// A running `mqseal sub`, its stdout and stderr read line by line.
struct Sub {
    child: Child,
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<Vec<u8>>,
    stderr_seen: Vec<String>,
}

impl Sub {
    fn start(fleet: &Fleet, broker: &Broker, id: &str, args: &[&str]) -> Sub {
        Self::start_dir(&fleet.device_dir(id), broker.port(), args)
    }

    fn start_dir(device: &Path, port: u16, args: &[&str]) -> Sub {
        let mut child = Command::new(mqseal_bin())
            .args(["sub", "--device", device.to_str().unwrap(), "-H", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mqseal sub");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Sub { child, stdout, stderr, stderr_seen: Vec::new() }
    }

    /// Waits for the `subscribed to` line (so later publishes reach it); panics with stderr if none.
    fn subscribed(mut self) -> Sub {
        let line = self.stderr_line(|l| l.starts_with("subscribed to"), WAIT);
        assert!(line.is_some(), "mqseal sub did not subscribe: {}", self.stderr_seen.join("\n"));
        self
    }

    fn stderr_line(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let line = text(&line);
                    self.stderr_seen.push(line.clone());
                    if want(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn line(&mut self) -> String {
        text(&self.stdout_bytes_line())
    }

    fn stdout_bytes_line(&mut self) -> Vec<u8> {
        match self.stdout.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => {
                self.drain_stderr();
                panic!("no output line from mqseal sub; stderr: {}", self.stderr_seen.join("\n"))
            }
        }
    }

    fn json(&mut self) -> serde_json::Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push(text(&line));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.drain_stderr();
                return status;
            }
            assert!(Instant::now() < deadline, "mqseal sub did not exit; stderr: {}", self.stderr_seen.join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_seen.join("\n")
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stream's lines (newline removed), bytes as they are.
fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// mqseal loaded, devices log in with their key.
fn key_auth_broker(fleet: &Fleet, unprotected: &str) -> Broker {
    Broker::start(fleet.broker_config(unprotected).option("auth", "key"))
}

#[test]
fn a_member_publishes_and_a_member_subscriber_opens_it() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "--json", "-C", "3", "-q", "1"]).subscribed();
    publish_ok(
        &fleet,
        &broker,
        "alice",
        &["-t", "sensors/temp", "-m", "21.5", "-q", "1", "--count", "2", "--interval-ms", "50"],
    );
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/hum", "-m", "40%", "-q", "2", "--aead", "chacha20poly1305"]);
    let mut seqs = Vec::new();
    for (topic, payload, aead) in [
        ("sensors/temp", "21.5", "A256GCM"),
        ("sensors/temp", "21.5", "A256GCM"),
        ("sensors/hum", "40%", "ChaCha20/Poly1305"),
    ] {
        let got = sub.json();
        assert_eq!(got["topic"], topic, "{got}");
        assert_eq!(got["sender"], "alice", "{got}");
        assert_eq!(got["group"], "sensors", "{got}");
        assert_eq!(got["epoch"], 1, "{got}");
        assert_eq!(got["aead"], aead, "{got}");
        assert_eq!(got["payload_base64"], b64(payload.as_bytes()), "{got}");
        let timestamp = got["timestamp_ms"].as_u64().expect("timestamp_ms");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(timestamp <= now && now - timestamp < 60_000, "timestamp {timestamp} vs now {now}");
        seqs.push(got["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each message has a fresh, larger sequence number: {seqs:?}");
    assert!(sub.wait_exit(WAIT).success(), "-C 3 reached: exit 0; {}", sub.stderr_text());
    let log = broker.log();
    assert!(log.contains("logged in as device alice"), "{log}");
    assert!(log.contains("logged in as device bob"), "{log}");
}

#[test]
fn raw_and_verbose_output_keep_the_payload_bytes() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    let mut raw = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-C", "2"]).subscribed();
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/x", "-m", "hello world"]);
    assert_eq!(raw.line(), "hello world");
    // --stdin: all of standard input is one message, bytes as they are.
    let mut child = Command::new(mqseal_bin())
        .args(["pub", "--device", &dir(&fleet, "alice"), "-H", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "sensors/s", "--stdin", "-q", "1"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"line one\tand \xff\xfe bytes").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = raw.stdout_bytes_line();
    assert_eq!(got, b"line one\tand \xff\xfe bytes");
    assert!(raw.wait_exit(WAIT).success());

    // -v: "topic payload"; a message from a file; an unprotected message with --plain.
    let file = broker.path("message.txt");
    std::fs::write(&file, b"from a file").unwrap();
    let mut verbose =
        Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-t", "plain/#", "-v", "-C", "2"]).subscribed();
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/f", "-f", file.to_str().unwrap(), "-q", "1"]);
    publish_ok(&fleet, &broker, "alice", &["-t", "plain/p", "-m", "not secret", "--plain", "-q", "1"]);
    assert_eq!(verbose.line(), "sensors/f from a file");
    assert_eq!(verbose.line(), "plain/p not secret");
    assert!(verbose.wait_exit(WAIT).success());
}

#[test]
fn unprotected_messages_are_marked_in_json() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "#", "--json", "-C", "1"]).subscribed();
    publish_ok(&fleet, &broker, "eve", &["-t", "plain/e", "-m", "open text", "--plain", "-q", "1"]);
    let got = sub.json();
    assert_eq!(got, serde_json::json!({"topic": "plain/e", "unprotected": true, "payload_base64": b64(b"open text")}));
    assert!(sub.wait_exit(WAIT).success());
}

#[test]
fn a_non_members_subscription_is_refused() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    // Every filter refused: exit 2.
    let mut sub = Sub::start(&fleet, &broker, "eve", &["-t", "sensors/#"]);
    let status = sub.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "{}", sub.stderr_text());
    assert!(
        sub.stderr_text().contains("the broker refused the subscription to sensors/# (SUBACK failure 0x80)"),
        "{}",
        sub.stderr_text()
    );

    // One of two refused: reported, and the other one works.
    let mut sub = Sub::start(&fleet, &broker, "eve", &["-t", "sensors/temp", "-t", "plain/#", "-v", "-C", "1"]);
    let subscribed = sub.stderr_line(|l| l.starts_with("subscribed to"), WAIT).unwrap_or_default();
    assert!(subscribed.contains("plain/#") && !subscribed.contains("sensors"), "{}", sub.stderr_text());
    assert!(sub.stderr_text().contains("refused the subscription to sensors/temp"), "{}", sub.stderr_text());
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/temp", "-m", "secret", "-q", "1"]);
    publish_ok(&fleet, &broker, "alice", &["-t", "plain/a", "-m", "public", "-q", "1", "--plain"]);
    assert_eq!(sub.line(), "plain/a public", "the protected message never reaches eve");
    assert!(sub.wait_exit(WAIT).success());
}

#[test]
fn pub_refuses_what_it_must_not_send_before_connecting() {
    let fleet = Fleet::sensors();
    // No broker at all: every refusal below happens before any connection.
    let port = test_harness::broker::free_port().to_string();
    let alice = dir(&fleet, "alice");
    let bob = dir(&fleet, "bob");
    let base = |device: &str| {
        vec![
            "pub".to_string(),
            "--device".into(),
            device.into(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.clone(),
        ]
    };
    let run = |device: &str, extra: &[&str]| {
        let mut args = base(device);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mqseal(&args)
    };
    let big = fleet.path("big.bin");
    std::fs::write(&big, vec![b'x'; 70_000]).unwrap();
    let big_arg = big.to_str().unwrap();
    // Roles and group ownership are checked against the policy fetched on connect
    // (a right granted by a pushed policy counts); with --no-key-updates, against
    // the stored one, before connecting. Plaintext on a protected topic is always
    // refused before connecting.
    let cases: [(&str, &[&str], &str); 6] = [
        (&alice, &["-t", "plain/x", "-m", "m", "--no-key-updates"], "belongs to no group"),
        (&alice, &["-t", "sensors/x", "-m", "m", "--plain"], "--plain is refused"),
        (&bob, &["-t", "sensors/x", "-m", "m", "--no-key-updates"], "its role in group \"sensors\" is sub"),
        (&alice, &["-t", "sensors/+", "-m", "m"], "--topic"),
        (&dir(&fleet, "eve"), &["-t", "sensors/x", "-m", "m", "--no-key-updates"], "not a member of group \"sensors\""),
        (&alice, &["-t", "sensors/x", "-f", big_arg], "at most 65536 bytes"),
    ];
    for (device, extra, expected) in cases {
        let out = run(device, extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expected), "{extra:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("connect"), "refused before connecting: {}", text(&out.stderr));
    }
    // Nothing listening: a clear connection error.
    let out = run(&alice, &["-t", "sensors/x", "-m", "m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("cannot connect to 127.0.0.1:{port}")), "{}", text(&out.stderr));
}

#[test]
fn login_with_the_device_key_works_and_a_wrong_key_is_refused() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/k", "-m", "ok", "-q", "1"]);

    // An impostor: a device also called "alice", with its own key, in another realm.
    let other = Fleet::new();
    other.add_device("alice");
    other.add_group("sensors", &["sensors/#"], 3600);
    other.add_member("sensors", "alice", "pub");
    other.join("alice");
    let out = publish(&other, &broker, "alice", &["-t", "sensors/k", "-m", "forged", "-q", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refused the login of client \"alice-pub-"), "{stderr}");
    assert!(stderr.contains("as user \"alice\""), "{stderr}");
    assert!(stderr.contains("CONNACK 5, not authorized") || stderr.contains("CONNACK 4"), "{stderr}");
    assert!(broker.log().contains("login-bad-signature"), "{}", broker.log());

    // No token, or a password instead of a token: refused too.
    let out = publish(&fleet, &broker, "alice", &["-t", "sensors/k", "-m", "x", "--no-auth-token"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refused the login"), "{}", text(&out.stderr));
    let out = publish(&fleet, &broker, "alice", &["-t", "sensors/k", "-m", "x", "-P", "letmein"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refused the login"), "{}", text(&out.stderr));

    // The same for sub.
    let mut sub = Sub::start(&other, &broker, "alice", &["-t", "plain/#"]);
    assert_eq!(sub.wait_exit(WAIT).code(), Some(1));
    assert!(sub.stderr_text().contains("refused the login"), "{}", sub.stderr_text());
}

#[test]
fn a_fixed_password_and_username_reach_a_broker_that_authenticates_otherwise() {
    // Plain Mosquitto with a password file: --username/--password are sent as given.
    let fleet = Fleet::sensors();
    let passwd = tempfile::tempdir().unwrap();
    let file = passwd.path().join("passwd");
    let status = Command::new("mosquitto_passwd").args(["-c", "-b", file.to_str().unwrap(), "bob", "s3cret"]).status();
    let Ok(status) = status else {
        panic!("mosquitto_passwd missing (scripts/setup installs mosquitto)");
    };
    assert!(status.success());
    let mut config =
        BrokerConfig::plain().file("passwd", std::fs::read(&file).unwrap()).line("password_file {dir}/passwd");
    config.allow_anonymous = false;
    let broker = Broker::start(config);
    let out = publish(&fleet, &broker, "alice", &["-t", "sensors/x", "-m", "m", "-u", "bob", "-P", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refused the login"), "{}", text(&out.stderr));
    let pw = passwd.path().join("pw.txt");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let mut sub =
        Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-C", "1", "--password-file", pw.to_str().unwrap()])
            .subscribed();
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/x", "-m", "through", "-u", "bob", "-P", "s3cret", "-q", "1"]);
    assert_eq!(sub.line(), "through");
    assert!(sub.wait_exit(WAIT).success());
}

#[test]
fn mqtt5_makes_a_refused_publish_visible_and_3_1_1_cannot_see_it() {
    let fleet = Fleet::sensors();
    // unprotected deny: the broker refuses alice's plaintext on plain/x.
    let broker = key_auth_broker(&fleet, "deny");
    let out = publish(&fleet, &broker, "alice", &["-t", "plain/x", "-m", "m", "--plain", "-q", "1", "--mqtt5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refused the publish: PUBACK reason 0x87"), "{}", text(&out.stderr));
    let out = publish(&fleet, &broker, "alice", &["-t", "plain/x", "-m", "m", "--plain", "-q", "2", "--mqtt5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refused the publish: PUBREC reason 0x87"), "{}", text(&out.stderr));
    // MQTT 3.1.1: the broker acknowledges the refused publish normally (documented limitation).
    publish_ok(&fleet, &broker, "alice", &["-t", "plain/x", "-m", "m", "--plain", "-q", "1"]);
    // And a good sealed publish over MQTT 5 goes through.
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-C", "1"]).subscribed();
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/v5", "-m", "five", "-q", "1", "--mqtt5"]);
    assert_eq!(sub.line(), "five");
    assert!(sub.wait_exit(WAIT).success());
}

#[test]
fn count_and_wait_stop_sub_as_documented() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    // -W with nothing arriving: exit 27 after about that long.
    let started = Instant::now();
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-W", "1"]).subscribed();
    assert_eq!(sub.wait_exit(WAIT).code(), Some(27), "{}", sub.stderr_text());
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "{took:?}");

    // -W restarts at each message: messages every 800 ms keep a 2 s wait going past
    // 2 s in all; -C ends it.
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-W", "2", "-C", "4"]).subscribed();
    publish_ok(
        &fleet,
        &broker,
        "alice",
        &["-t", "sensors/w", "-m", "tick", "--count", "4", "--interval-ms", "800", "-q", "1"],
    );
    for _ in 0..4 {
        assert_eq!(sub.line(), "tick");
    }
    assert!(sub.wait_exit(WAIT).success(), "{}", sub.stderr_text());
}

#[test]
fn a_retained_message_opens_once_and_its_replay_is_rejected() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/state", "-m", "on", "-q", "1", "-r"]);
    let mut first = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/state", "-C", "1"]).subscribed();
    assert_eq!(first.line(), "on");
    assert!(first.wait_exit(WAIT).success());
    // The same device later gets the same retained envelope: it has seen that sequence number.
    let mut again = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/state", "--json", "-W", "2"]).subscribed();
    let got = again.json();
    assert_eq!(got["topic"], "sensors/state");
    assert_eq!(got["rejected"], "replay", "{got}");
    assert_eq!(again.wait_exit(WAIT).code(), Some(27), "a rejection is no delivery");
}

#[test]
fn sub_reconnects_with_a_fresh_token_after_being_disconnected() {
    let fleet = Fleet::sensors();
    let broker = key_auth_broker(&fleet, "allow");
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-C", "1", "-i", "bob-main", "--reconnect"])
        .subscribed();
    // A second connection of bob's with the same client id takes the session over: the first is
    // disconnected. (Not another `mqseal sub`: bob's receiver state is locked by the running one.
    // Not another device: a client id belongs to its device, docs/POLICY.md §3.5.)
    let token = mqseal(&["token", "--device", &dir(&fleet, "bob"), "-i", "bob-main"]);
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_string();
    let mut second = test_harness::clients::OwnClient::connect(broker.port(), "bob-main", Some(("bob", &token)))
        .expect("bob's second connection");
    let reconnecting = sub.stderr_line(|l| l.contains("reconnecting in"), WAIT);
    assert!(reconnecting.is_some(), "{}", sub.stderr_text());
    // Back (a reused token would be refused: login-reused), subscribed again; the second connection was taken over in turn.
    assert!(
        sub.stderr_line(|l| l.starts_with("subscribed to"), WAIT).is_some(),
        "{}\n{}",
        sub.stderr_text(),
        broker.log()
    );
    second.wait_disconnected(WAIT).expect("the second connection was taken over in turn");
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/r", "-m", "after reconnect", "-q", "1"]);
    assert_eq!(sub.line(), "after reconnect");
    assert!(sub.wait_exit(WAIT).success());
    assert!(!broker.log().contains("login-reused"), "{}", broker.log());
}

/// Plain Mosquitto (no plugin): the broker passes anything, so the subscriber's
/// own checks are what stands between bob and forged or replayed envelopes.
#[test]
fn sub_rejects_forged_tampered_and_replayed_envelopes_and_keeps_going() {
    let fleet = Fleet::sensors();
    let broker = Broker::start(BrokerConfig::plain());
    let port = broker.port();
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "--json", "-C", "2"]).subscribed();
    let send = |topic: &str, payload: &[u8]| {
        let file = broker.path("payload.bin");
        std::fs::write(&file, payload).unwrap();
        let out = mosquitto_pub(port, &["-t", topic, "-q", "1", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "mosquitto_pub: {}", text(&out.stderr));
    };

    let good = fleet.seal("alice", "sensors/a", b"genuine");
    let mut tampered = fleet.seal("alice", "sensors/a", b"tampered");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let moved = fleet.seal("alice", "sensors/a", b"moved");
    // A device "mallory" of another realm, in a group of the same name.
    let other = Fleet::new();
    other.add_device("mallory");
    other.add_group("sensors", &["sensors/#"], 3600);
    other.add_member("sensors", "mallory", "pub");
    other.join("mallory");
    let forged = other.seal("mallory", "sensors/a", b"forged");

    send("sensors/a", b"plain text, not an envelope");
    send("sensors/a", &tampered);
    send("sensors/b", &moved);
    send("sensors/a", &forged);
    send("sensors/a", &good);
    send("sensors/a", &good);
    let later = fleet.seal("alice", "sensors/a", b"later");
    send("sensors/a", &later);

    let expect_rejected = |got: serde_json::Value| -> String {
        assert_eq!(got["topic"].as_str().map(|t| t.starts_with("sensors/")), Some(true), "{got}");
        assert!(got.get("sender").is_none() && got.get("payload_base64").is_none(), "{got}");
        got["rejected"].as_str().unwrap_or_else(|| panic!("not a rejection: {got}")).to_string()
    };
    let plain = expect_rejected(sub.json());
    assert!(!plain.is_empty(), "{plain}");
    let bad_signature = expect_rejected(sub.json());
    assert!(bad_signature.contains("signature"), "tampered: {bad_signature}");
    let wrong_topic = expect_rejected(sub.json());
    assert!(wrong_topic.contains("signature"), "moved to another topic: {wrong_topic}");
    assert_eq!(expect_rejected(sub.json()), "unknown-sender");
    let opened = sub.json();
    assert_eq!(opened["sender"], "alice");
    assert_eq!(opened["payload_base64"], b64(b"genuine"));
    assert_eq!(expect_rejected(sub.json()), "replay");
    let opened = sub.json();
    assert_eq!(opened["payload_base64"], b64(b"later"));
    assert!(sub.wait_exit(WAIT).success(), "rejections do not count toward -C 2: {}", sub.stderr_text());
}

#[test]
fn rejections_go_to_stderr_without_json() {
    let fleet = Fleet::sensors();
    let broker = Broker::start(BrokerConfig::plain());
    let mut sub = Sub::start(&fleet, &broker, "bob", &["-t", "sensors/#", "-C", "1"]).subscribed();
    let out = mosquitto_pub(broker.port(), &["-t", "sensors/z", "-q", "1", "-m", "not sealed"]);
    assert!(out.status.success());
    let rejected = sub.stderr_line(|l| l.starts_with("rejected "), WAIT);
    let rejected = rejected.unwrap_or_else(|| panic!("no rejection line: {}", sub.stderr_text()));
    assert!(rejected.starts_with("rejected sensors/z: "), "{rejected}");
    publish_ok(&fleet, &broker, "alice", &["-t", "sensors/z", "-m", "sealed", "-q", "1", "--no-auth-token"]);
    assert_eq!(sub.line(), "sealed", "the rejected message printed nothing on stdout");
    assert!(sub.wait_exit(WAIT).success());
}
