//! Every key in docs/vectors must be readable by the tools an independent
//! implementer reaches for: OpenSSL 3.0 (`openssl pkey`) and, where installed,
//! pyca/cryptography. PKCS#8 v2 private keys (with the public key embedded),
//! which both refuse, must not appear: keys are PKCS#8 v1, as `mqseal keygen`
//! writes them.
//!
//! Checked: every `*.pem` file, and every PEM held in a string of a JSON vector file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors")
}

/// (where it came from, PEM text) for every key in docs/vectors.
fn vector_keys() -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(vectors_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".pem") {
            keys.push((name, std::fs::read_to_string(&path).unwrap()));
        } else if name.ends_with(".json") {
            let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            collect_pems(&value, &name, &mut keys);
        }
    }
    keys
}

fn collect_pems(value: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::String(s) if s.contains("-----BEGIN ") && s.contains(" KEY-----") => {
            out.push((at.to_string(), s.clone()))
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_pems(item, &format!("{at}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect_pems(v, &format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn is_public(pem: &str) -> bool {
    pem.trim_start().starts_with("-----BEGIN PUBLIC KEY-----")
}

#[test]
fn openssl_reads_every_key_in_the_vectors() {
    let version = Command::new("openssl").arg("version").output();
    let version = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => panic!("openssl is not installed (scripts/setup installs it): this check must run"),
    };
    let keys = vector_keys();
    assert!(keys.len() >= 4, "expected the audit key pair and the login-token keys, found {}", keys.len());
    let tmp = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for (i, (origin, pem)) in keys.iter().enumerate() {
        let file = tmp.path().join(format!("key{i}.pem"));
        std::fs::write(&file, pem).unwrap();
        let mut cmd = Command::new("openssl");
        cmd.arg("pkey");
        if is_public(pem) {
            cmd.arg("-pubin");
        }
        let out = cmd.arg("-in").arg(&file).arg("-noout").output().unwrap();
        if !out.status.success() {
            refused.push(format!("{origin}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    assert!(refused.is_empty(), "{version} refuses these vector keys:\n{}", refused.join("\n"));
}

#[test]
fn pyca_cryptography_reads_every_key_in_the_vectors_when_installed() {
    let probe = Command::new("python3").args(["-c", "import cryptography"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("python3 with pyca/cryptography not installed: skipping");
        return;
    }
    let script = r#"
import sys
from cryptography.hazmat.primitives import serialization as s
data = sys.stdin.buffer.read()
if b"PUBLIC KEY" in data.split(b"\n")[0]:
    s.load_pem_public_key(data)
else:
    s.load_pem_private_key(data, password=None)
"#;
    for (origin, pem) in vector_keys() {
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "pyca/cryptography refuses {origin}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
