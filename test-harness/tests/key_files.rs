//! Key files (issue 13, item 7): a private key readable by group or others is
//! refused, naming the file and the fix; a file that is empty, not PEM, or a key
//! of the wrong kind is refused saying what was found and what was expected.
//! The same for every key file the plugin reads (broker key, authority.pub) and
//! those the CLI reads (device keys, authority.pub, audit verify's broker key).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use test_harness::fleet::mqseal;
use test_harness::{Broker, BrokerConfig, Fleet};

const ED25519_EXPECTED: &str = "expected an Ed25519 private key (PKCS#8, OID 1.3.101.112)";
const X25519_FOUND: &str = "found an X25519 key (OID 1.3.101.110)";
const P256_FOUND: &str = "found an EC key (OID 1.2.840.10045.2.1)";

/// Key material of every kind, made with the real CLI: a P-256 device (its
/// signing key is EC, its key-agreement key X25519) and an Ed25519 one.
struct Keys {
    _dir: tempfile::TempDir,
    p256: PathBuf,
    x25519: PathBuf,
    ed25519_public: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let p256_dir = dir.path().join("p");
    let out = mqseal(&["keygen", "dev-p", "--out", p256_dir.to_str().unwrap(), "--alg", "p256"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let broker_dir = dir.path().join("b");
    let out = mqseal(&["keygen", "brk", "--broker", "--out", broker_dir.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Keys {
        p256: p256_dir.join("dev-p.sign.pem"),
        x25519: p256_dir.join("dev-p.kx.pem"),
        ed25519_public: broker_dir.join("brk.pub.pem"),
        _dir: dir,
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Starts a broker whose `option` file (`name` in its directory) holds `contents`
/// with `mode`, and returns the line that says why it refused to start.
fn refusal(option: &str, name: &str, contents: &[u8], mode: u32) -> String {
    let dir = tempfile::Builder::new().prefix("mqseal-broker-").tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let config: BrokerConfig = BrokerConfig::mqseal("allow").option(option, &format!("{{dir}}/{name}"));
    let failure = Broker::try_start_in(dir, config).err().expect("the broker must refuse to start");
    assert!(!failure.status.expect("it exits").success());
    let prefix = format!("mqseal: refusing to start: plugin_opt_{option}: ");
    let line = failure.log.lines().find(|l| l.contains(&prefix)).unwrap_or_else(|| panic!("no refusal naming {option}:\n{}", failure.log));
    assert!(line.contains(name), "the message names the file: {line}");
    line.to_string()
}

fn assert_has(line: &str, needle: &str) {
    assert!(line.contains(needle), "expected {needle:?} in: {line}");
}

#[test]
fn the_plugin_refuses_a_broker_key_readable_by_others() {
    let fleet = Fleet::new();
    let key = read(&fleet.path("broker/broker.sign.pem"));
    for mode in [0o644, 0o640, 0o604] {
        let line = refusal("broker_key", "broker.sign.key", &key, mode);
        assert_has(&line, "accessible by group or others");
        assert_has(&line, "chmod 600");
    }
}

#[test]
fn the_plugin_says_what_a_wrong_broker_key_file_holds() {
    let keys = keys();
    assert_has(&refusal("broker_key", "broker.key", b"", 0o600), "is empty");
    assert_has(&refusal("broker_key", "broker.key", b"  \n", 0o600), "is empty");
    assert_has(&refusal("broker_key", "broker.key", br#"{"format":"mqseal-identity-v1"}"#, 0o600), "is not PEM (it looks like JSON)");
    assert_has(&refusal("broker_key", "broker.key", b"\x30\x2e\x02\x01\x00binary", 0o600), "is not PEM");
    for (key, found) in [(&keys.x25519, X25519_FOUND), (&keys.p256, P256_FOUND)] {
        let line = refusal("broker_key", "broker.key", &read(key), 0o600);
        assert_has(&line, ED25519_EXPECTED);
        assert_has(&line, found);
    }
    let line = refusal("broker_key", "broker.key", &read(&keys.ed25519_public), 0o600);
    assert_has(&line, ED25519_EXPECTED);
    assert_has(&line, "found a PEM \"PUBLIC KEY\"");
}

#[test]
fn the_plugin_says_what_a_wrong_authority_file_holds() {
    let keys = keys();
    let expected = "expected an Ed25519 public key (PEM \"PUBLIC KEY\", OID 1.3.101.112)";
    assert_has(&refusal("authority", "trusted.pub", b"", 0o644), "is empty");
    assert_has(&refusal("authority", "trusted.pub", b"{\"keys\":[]}\n", 0o644), "is not PEM (it looks like JSON)");
    let line = refusal("authority", "trusted.pub", &read(&keys.x25519), 0o600);
    assert_has(&line, expected);
    assert_has(&line, "found a PEM \"PRIVATE KEY\"");
    // A P-256 public key, in the right PEM form.
    let p256_public = std::process::Command::new("openssl")
        .args(["pkey", "-in", keys.p256.to_str().unwrap(), "-pubout"])
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(p256_public.status.success());
    let line = refusal("authority", "trusted.pub", &p256_public.stdout, 0o644);
    assert_has(&line, expected);
    assert_has(&line, P256_FOUND);
}

fn cli_error(args: &[&str]) -> String {
    let out = mqseal(args, None);
    assert!(!out.status.success(), "mqseal {args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_says_what_a_wrong_key_file_holds() {
    let keys = keys();
    let fleet = Fleet::new();
    fleet.add_device("d1").add_group("g", &["g/#"], 0).add_member("g", "d1", "pub").join("d1");
    let dir = fleet.device_dir("d1");
    let sign = dir.join("d1.sign.pem");
    let good = read(&sign);
    let seal = || cli_error(&["seal", "--device", dir.to_str().unwrap(), "--topic", "g/t", "--in", "/dev/null"]);

    std::fs::set_permissions(&sign, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = seal();
    assert_has(&err, "chmod 600");
    assert_has(&err, "d1.sign.pem");
    std::fs::set_permissions(&sign, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&sign, b"").unwrap();
    assert_has(&seal(), "d1.sign.pem is empty");
    std::fs::write(&sign, read(&keys.x25519)).unwrap();
    let err = seal();
    assert_has(&err, "expected an Ed25519 or P-256 private key (PKCS#8, OID 1.3.101.112 or 1.2.840.10045.2.1)");
    assert_has(&err, X25519_FOUND);
    std::fs::write(&sign, good).unwrap();

    // audit verify's --broker-key, and join's --authority.
    let log = fleet.path("empty.jsonl");
    std::fs::write(&log, b"").unwrap();
    let empty = fleet.path("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    assert_has(&cli_error(&["audit", "verify", log.to_str().unwrap(), "--broker-key", empty.to_str().unwrap()]), "empty.pem is empty");
    let err = cli_error(&["audit", "verify", log.to_str().unwrap(), "--broker-key", keys.x25519.to_str().unwrap()]);
    assert_has(&err, ED25519_EXPECTED);
    assert_has(&err, X25519_FOUND);
    let json = fleet.path("authority.json");
    std::fs::write(&json, b"{\"authority\":true}").unwrap();
    let other = tempfile::tempdir().unwrap();
    let out = mqseal(&["keygen", "d2", "--out", other.path().to_str().unwrap()], None);
    assert!(out.status.success());
    let policy = fleet.path("policy.json");
    let err = cli_error(&[
        "join", "--device", other.path().to_str().unwrap(), "--authority", json.to_str().unwrap(),
        "--bundle", policy.to_str().unwrap(), "--policy", policy.to_str().unwrap(),
    ]);
    assert_has(&err, "authority.json is not PEM (it looks like JSON)");
}
