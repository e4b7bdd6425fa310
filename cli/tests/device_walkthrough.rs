//! The README walk-through, end to end with the real binary: keygen, realm,
//! groups, policy and bundles, join, seal, open; then removal and rotation,
//! after which the removed device cannot open new messages.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqseal"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mqseal");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // The command may exit before reading (an early error): ignore a broken pipe.
            let _ = input.write_all(bytes);
        }
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Walk {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    secrets: Vec<String>,
}

impl Walk {
    fn p(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }

    fn check_no_secrets(&self, out: &Output) {
        for stream in [&out.stdout, &out.stderr] {
            let t = text(stream);
            assert!(!t.contains("PRIVATE KEY"), "{t}");
            for secret in &self.secrets {
                assert!(!t.contains(secret.as_str()), "a group key was printed: {t}");
            }
        }
    }

    fn ok(&self, args: &[&str]) -> Output {
        self.ok_in(args, None)
    }

    fn ok_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let out = run(args, stdin);
        assert!(out.status.success(), "mqseal {args:?} failed: {}", text(&out.stderr));
        self.check_no_secrets(&out);
        out
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(1), "mqseal {args:?} should fail; stdout: {}", text(&out.stdout));
        self.check_no_secrets(&out);
        let err = text(&out.stderr);
        assert!(err.starts_with("mqseal: error: "), "{err}");
        err
    }

    fn refresh_secrets(&mut self) {
        let keys = std::fs::read_to_string(self.root.join("realm/group-keys.json")).unwrap();
        self.secrets = keys.split("\"key\": \"").skip(1).map(|k| k.split('"').next().unwrap().to_string()).collect();
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn walkthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Walk { root: tmp.path().to_path_buf(), _tmp: tmp, secrets: Vec::new() };
    let realm = w.p("realm");
    let realm = realm.as_str();

    // Devices create their identities.
    w.ok(&["keygen", "sensor1", "--out", &w.p("sensor1")]);
    w.ok(&["keygen", "display1", "--out", &w.p("display1"), "--alg", "p256"]);
    w.ok(&["keygen", "intruder", "--out", &w.p("intruder")]);

    // The administrator builds the realm.
    w.ok(&["realm", "init", "--realm", realm]);
    w.ok(&["device", "add", "sensor1", "--realm", realm, "--public", &w.p("sensor1/sensor1.pub")]);
    w.ok(&["device", "add", "display1", "--realm", realm, "--public", &w.p("display1/display1.pub"), "--username", "disp-1"]);
    w.ok(&["device", "add", "intruder", "--realm", realm, "--public", &w.p("intruder/intruder.pub")]);
    w.ok(&["group", "create", "hall1", "--realm", realm, "--topic", "plant/hall1/#", "--grace", "600"]);
    w.ok(&["group", "create", "lobby", "--realm", realm, "--topic", "lobby/+/screen"]);
    w.ok(&["group", "add", "hall1", "sensor1", "--realm", realm, "--role", "pub"]);
    w.ok(&["group", "add", "hall1", "display1", "--realm", realm, "--role", "sub"]);
    w.ok(&["group", "add", "lobby", "intruder", "--realm", realm, "--role", "pubsub"]);
    w.refresh_secrets();
    let out = w.ok(&["policy", "export", "--realm", realm, "--out", &w.p("policy.json")]);
    assert!(text(&out.stdout).contains("policy version 1"), "{}", text(&out.stdout));
    for id in ["sensor1", "display1", "intruder"] {
        w.ok(&["bundle", "export", id, "--realm", realm, "--out", &w.p(&format!("{id}.bundle"))]);
    }
    let policy_text = std::fs::read_to_string(w.root.join("policy.json")).unwrap();
    for secret in &w.secrets {
        assert!(!policy_text.contains(secret.as_str()), "group key in the policy");
    }

    // Devices join.
    for id in ["sensor1", "display1", "intruder"] {
        let out = w.ok(&[
            "join", "--device", &w.p(id), "--authority", &w.p("realm/authority.pub"),
            "--bundle", &w.p(&format!("{id}.bundle")), "--policy", &w.p("policy.json"),
        ]);
        assert!(text(&out.stdout).contains(&format!("device {id} joined")), "{}", text(&out.stdout));
    }

    // Seal on the sensor, open on the display.
    let topic = "plant/hall1/temperature";
    w.ok_in(&["seal", "--device", &w.p("sensor1"), "--topic", topic, "--out", &w.p("m1.cose")], Some(b"21.5 C"));
    let out = w.ok(&["open", "--device", &w.p("display1"), "--topic", topic, "--in", &w.p("m1.cose")]);
    assert_eq!(out.stdout, b"21.5 C");
    // Through pipes, with ChaCha20-Poly1305, and --json.
    let sealed = w.ok_in(&["seal", "--device", &w.p("sensor1"), "--topic", topic, "--aead", "chacha20poly1305"], Some(b"22.0 C"));
    let envelope = sealed.stdout.clone();
    let out = w.ok_in(&["open", "--device", &w.p("display1"), "--topic", topic, "--json"], Some(&envelope));
    let v = json(&out);
    assert_eq!(v["sender"], "sensor1");
    assert_eq!(v["group"], "hall1");
    assert_eq!(v["epoch"], 1);
    assert!(v["seq"].as_u64().unwrap() > 1, "sequence numbers grow");
    assert_eq!(v["aead"], "ChaCha20/Poly1305");
    assert_eq!(v["payload_base64"], "MjIuMCBD");
    assert!(v["timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
    std::fs::write(w.root.join("m2.cose"), &envelope).unwrap();

    // Replays, other topics, non-members, and wrong roles fail with their reason.
    let err = w.fails(&["open", "--device", &w.p("display1"), "--topic", topic, "--in", &w.p("m2.cose")]);
    assert!(err.contains("[replay]"), "{err}");
    let err = w.fails(&["open", "--device", &w.p("intruder"), "--topic", topic, "--in", &w.p("m1.cose")]);
    assert!(err.contains("[no-key]"), "{err}");
    let err = w.fails(&["seal", "--device", &w.p("display1"), "--topic", topic, "--in", &w.p("policy.json")]);
    assert!(err.contains("may not publish in group \"hall1\"") && err.contains("its role is sub"), "{err}");
    let err = w.fails(&["seal", "--device", &w.p("intruder"), "--topic", topic, "--in", &w.p("policy.json")]);
    assert!(err.contains("it is not a member"), "{err}");
    let err = w.fails(&["open", "--device", &w.p("display1"), "--topic", "plant/hall2/x", "--in", &w.p("m1.cose")]);
    assert!(err.contains("belongs to no group"), "{err}");

    std::fs::copy(w.root.join("policy.json"), w.root.join("policy-v1.json")).unwrap();

    // The display is removed from the group: rotation, new policy, new bundles.
    let out = w.ok(&["group", "remove", "hall1", "display1", "--realm", realm]);
    assert!(text(&out.stdout).contains("group hall1 rotated to epoch 2"), "{}", text(&out.stdout));
    w.ok(&["group", "rotate", "hall1", "--realm", realm]);
    w.refresh_secrets();
    w.ok(&["policy", "export", "--realm", realm, "--out", &w.p("policy.json")]);
    w.ok(&["bundle", "export", "sensor1", "--realm", realm, "--out", &w.p("sensor1.bundle")]);
    w.ok(&["bundle", "export", "display1", "--realm", realm, "--out", &w.p("display1.bundle")]);
    let out = w.ok(&[
        "join", "--device", &w.p("sensor1"), "--authority", &w.p("realm/authority.pub"),
        "--bundle", &w.p("sensor1.bundle"), "--policy", &w.p("policy.json"),
    ]);
    assert!(text(&out.stdout).contains("group hall1: keys for epoch 3, 2"), "{}", text(&out.stdout));
    w.ok_in(&["seal", "--device", &w.p("sensor1"), "--topic", topic, "--out", &w.p("m3.cose")], Some(b"secret after removal"));

    // The removed display cannot open it: first with its old policy ...
    let err = w.fails(&["open", "--device", &w.p("display1"), "--topic", topic, "--in", &w.p("m3.cose")]);
    assert!(err.contains("[epoch-future]"), "{err}");
    // ... nor after joining with the new policy and its new (empty) bundle.
    let out = w.ok(&[
        "join", "--device", &w.p("display1"), "--authority", &w.p("realm/authority.pub"),
        "--bundle", &w.p("display1.bundle"), "--policy", &w.p("policy.json"),
    ]);
    assert!(text(&out.stdout).contains("member of no group"), "{}", text(&out.stdout));
    let err = w.fails(&["open", "--device", &w.p("display1"), "--topic", topic, "--in", &w.p("m3.cose")]);
    assert!(err.contains("[no-key]"), "{err}");

    // Going back to the old policy (which still lists the display) is refused.
    let err = w.fails(&[
        "join", "--device", &w.p("sensor1"), "--authority", &w.p("realm/authority.pub"),
        "--bundle", &w.p("sensor1.bundle"), "--policy", &w.p("policy-v1.json"),
    ]);
    assert!(err.contains("is not newer than the version"), "{err}");
    // A policy signed by another realm is refused.
    w.ok(&["realm", "init", "--realm", &w.p("rogue")]);
    w.ok(&["device", "add", "sensor1", "--realm", &w.p("rogue"), "--public", &w.p("sensor1/sensor1.pub")]);
    w.ok(&["policy", "export", "--realm", &w.p("rogue"), "--out", &w.p("rogue-policy.json")]);
    let err = w.fails(&[
        "join", "--device", &w.p("sensor1"), "--authority", &w.p("realm/authority.pub"),
        "--bundle", &w.p("sensor1.bundle"), "--policy", &w.p("rogue-policy.json"),
    ]);
    assert!(err.contains("signed by authority key") && err.contains("another realm"), "{err}");
}

#[test]
fn device_subcommands_have_help_and_refuse_unjoined_dirs() {
    for sub in ["join", "seal", "open"] {
        let out = run(&[sub, "--help"], None);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Usage: mqseal"), "{}", text(&out.stdout));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    assert!(run(&["keygen", "d", "--out", dir.to_str().unwrap()], None).status.success());
    let out = run(&["seal", "--device", dir.to_str().unwrap(), "--topic", "a/b"], Some(b"x"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("has not joined a realm yet"), "{}", text(&out.stderr));
}
