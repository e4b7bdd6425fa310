//! `mqseal keygen` end to end, including OpenSSL reading the private keys.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn mqseal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqseal")).args(args).output().expect("run mqseal")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn openssl_reads(path: &Path) {
    let Ok(out) = Command::new("openssl").args(["pkey", "-noout", "-in"]).arg(path).output() else {
        eprintln!("openssl not installed: skipping the interoperability check");
        return;
    };
    assert!(out.status.success(), "openssl pkey -in {} failed: {}", path.display(), text(&out.stderr));
}

#[test]
fn keygen_writes_a_device_directory_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    for (alg, sub) in [("ed25519", "a/b"), ("p256", "p")] {
        let dir = tmp.path().join(sub);
        let dir_s = dir.to_str().unwrap();
        let out = mqseal(&["keygen", "1111", "--out", dir_s, "--alg", alg]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        for name in ["1111.pub", "1111.sign.pem", "1111.kx.pem"] {
            let path = dir.join(name);
            assert!(stdout.contains(path.to_str().unwrap()), "{stdout}");
            assert!(path.is_file());
        }
        assert!(stdout.contains("fingerprint: sha256:"), "{stdout}");
        // Never a private key on stdout or stderr.
        assert!(!stdout.contains("PRIVATE KEY") && !text(&out.stderr).contains("PRIVATE KEY"));
        let sign = std::fs::read_to_string(dir.join("1111.sign.pem")).unwrap();
        let b64_line = sign.lines().nth(1).unwrap();
        assert!(!stdout.contains(b64_line));

        for name in ["1111.sign.pem", "1111.kx.pem"] {
            let path = dir.join(name);
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            openssl_reads(&path);
        }
        let public = std::fs::read_to_string(dir.join("1111.pub")).unwrap();
        let expected_alg = if alg == "p256" { "\"ESP256\"" } else { "\"Ed25519\"" };
        assert!(public.contains(expected_alg), "{public}");

        // A second keygen into the same directory changes nothing.
        let before = std::fs::read(dir.join("1111.sign.pem")).unwrap();
        let again = mqseal(&["keygen", "1111", "--out", dir_s, "--alg", alg]);
        assert!(!again.status.success());
        assert!(text(&again.stderr).contains("refusing to overwrite"), "{}", text(&again.stderr));
        assert_eq!(std::fs::read(dir.join("1111.sign.pem")).unwrap(), before);
    }
}

#[test]
fn keygen_refuses_bad_ids_and_algorithms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let out = mqseal(&["keygen", "a/b", "--out", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("device id"), "{}", text(&out.stderr));
    let out = mqseal(&["keygen", "1111", "--out", dir.to_str().unwrap(), "--alg", "rsa"]);
    assert!(!out.status.success());
}
