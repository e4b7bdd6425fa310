//! Administrator commands: help, clear errors with non-zero exit, no secrets printed.

use std::path::Path;
use std::process::{Command, Output};

fn mqseal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqseal")).args(args).output().expect("run mqseal")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = mqseal(args);
    assert!(out.status.success(), "mqseal {args:?} failed: {}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("PRIVATE KEY") && !text(&out.stderr).contains("PRIVATE KEY"));
    text(&out.stdout)
}

fn fails(args: &[&str]) -> String {
    let out = mqseal(args);
    assert_eq!(out.status.code(), Some(1), "mqseal {args:?} should fail: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.starts_with("mqseal: error: "), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_admin_subcommand_has_help() {
    for args in [
        &["realm", "init", "--help"][..],
        &["realm", "show", "--help"],
        &["device", "add", "--help"],
        &["device", "remove", "--help"],
        &["group", "create", "--help"],
        &["group", "add", "--help"],
        &["group", "remove", "--help"],
        &["group", "rotate", "--help"],
        &["policy", "export", "--help"],
        &["bundle", "export", "--help"],
    ] {
        let out = ok(args);
        assert!(out.contains("Usage: mqseal"), "{args:?}: {out}");
    }
}

#[test]
fn admin_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let realm = tmp.path().join("realm");
    let realm = s(&realm);
    let err = fails(&["policy", "export", "--realm", realm, "--out", s(&tmp.path().join("p.json"))]);
    assert!(err.contains("is not a realm") && err.contains("mqseal realm init --realm"), "{err}");

    let out = ok(&["realm", "init", "--realm", realm]);
    assert!(out.contains("authority.pub") && out.contains("sha256:"), "{out}");
    let err = fails(&["realm", "init", "--realm", realm]);
    assert!(err.contains("already holds a realm"), "{err}");

    let dev = tmp.path().join("devs");
    ok(&["keygen", "d1", "--out", s(&dev.join("d1"))]);
    ok(&["keygen", "d2", "--out", s(&dev.join("d2"))]);
    let d1_pub = dev.join("d1/d1.pub");
    let err = fails(&["device", "add", "other", "--realm", realm, "--public", s(&d1_pub)]);
    assert!(err.contains("is the identity of device \"d1\", not \"other\""), "{err}");
    let err = fails(&["device", "add", "d1", "--realm", realm, "--public", "/nonexistent/d1.pub"]);
    assert!(err.contains("/nonexistent/d1.pub"), "{err}");
    ok(&["device", "add", "d1", "--realm", realm, "--public", s(&d1_pub)]);
    let err = fails(&["device", "add", "d2", "--realm", realm, "--public", s(&dev.join("d2/d2.pub")), "--username", "x/#"]);
    assert!(err.contains("must not contain"), "{err}");
    let err = fails(&["device", "add", "d2", "--realm", realm, "--public", s(&dev.join("d2/d2.pub")), "--username", "d1"]);
    assert!(err.contains("already used by device \"d1\""), "{err}");

    let err = fails(&["group", "create", "g1", "--realm", realm, "--topic", "a/#/b"]);
    assert!(err.contains("--topic 'a/#/b'") && err.contains("'#' must be the last level"), "{err}");
    ok(&["group", "create", "g1", "--realm", realm, "--topic", "site/+/tele", "--grace", "60"]);
    let err = fails(&["group", "create", "g2", "--realm", realm, "--topic", "site/x/#"]);
    assert!(err.contains("overlaps 'site/+/tele' of group 'g1'") && err.contains("at most one group"), "{err}");
    let err = fails(&["group", "add", "g1", "ghost", "--realm", realm, "--role", "pub"]);
    assert!(err.contains("no device \"ghost\""), "{err}");
    let out = mqseal(&["group", "add", "g1", "d1", "--realm", realm, "--role", "owner"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("invalid value 'owner'"), "{}", text(&out.stderr));
    let err = fails(&["group", "remove", "g1", "d1", "--realm", realm]);
    assert!(err.contains("not a member"), "{err}");
    let err = fails(&["bundle", "export", "ghost", "--realm", realm, "--out", s(&tmp.path().join("b"))]);
    assert!(err.contains("no device \"ghost\""), "{err}");
    let err = fails(&["group", "rotate", "nogroup", "--realm", realm]);
    assert!(err.contains("no group \"nogroup\""), "{err}");

    // Show lists public data only.
    ok(&["group", "add", "g1", "d1", "--realm", realm, "--role", "pubsub"]);
    let shown = ok(&["realm", "show", "--realm", realm]);
    assert!(shown.contains("d1  username=d1") && shown.contains("g1  epoch=1 grace=60s") && shown.contains("d1:pubsub"), "{shown}");
    let keys = std::fs::read_to_string(Path::new(realm).join("group-keys.json")).unwrap();
    let key = keys.split("\"key\": \"").nth(1).unwrap().split('"').next().unwrap();
    assert!(!shown.contains(key));
}
