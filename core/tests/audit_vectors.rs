//! The committed vectors (docs/vectors/audit*) verify, every value in
//! audit-vectors.json is recomputed from the log itself, and the values shown in
//! docs/AUDIT.md are those values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mqseal_core::formats::audit::checkpoint::{key_id, SignedCheckpoint};
use mqseal_core::formats::audit::event::{EVENT_KINDS, LOG_KINDS};
use mqseal_core::formats::audit::hashing::{hash_from_hex, origin_hash, record_hash, to_hex, Hash};
use mqseal_core::formats::audit::keyfile::{load_signing_key, load_verifying_key};
use mqseal_core::formats::audit::merkle::{consistency_proof, inclusion_proof, leaf_hash, root_of, verify_consistency, verify_inclusion};
use mqseal_core::formats::audit::verify::{verify_path, VerifyOptions};
use serde_json::Value;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(docs().join("vectors/audit-vectors.json")).unwrap()).unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(|h| hash_from_hex(h.as_str().unwrap()).unwrap()).collect()
}

/// The vectors' private key, in a copy only its owner can read: mqseal refuses a
/// private key file others can read, and a checkout leaves it 0644.
fn private_vector_key() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit-broker-key.pem");
    std::fs::copy(docs().join("vectors/audit-broker-key.pem"), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

#[test]
fn the_vector_log_verifies_with_its_key() {
    let log = docs().join("vectors/audit.jsonl");
    let (_dir, private_path) = private_vector_key();
    for key_path in [docs().join("vectors/audit-broker-key.pub.pem"), private_path.clone()] {
        let key = load_verifying_key(&key_path).unwrap();
        let report = verify_path(&log, &VerifyOptions { keys: vec![key], ..Default::default() }).unwrap();
        assert_eq!((report.records, report.sealed, report.checkpoints_checked), (10, 10, 6));
        assert_eq!(report.origin, "example.org/mqseal-audit");
    }
    let private = load_signing_key(&private_path).unwrap();
    let mut seed = [0u8; 32];
    seed.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    assert_eq!(private.to_bytes(), seed);
}

#[test]
fn every_vector_value_is_recomputed_from_the_log() {
    let v = vectors();
    let origin = v["origin"].as_str().unwrap();
    assert_eq!(v["origin_hash"], to_hex(&origin_hash(origin)));
    let text = std::fs::read_to_string(docs().join("vectors/audit.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let records = v["records"].as_array().unwrap();
    assert_eq!(lines.len(), records.len());
    let mut prev = origin_hash(origin);
    let mut leaves = Vec::new();
    for (i, (line, r)) in lines.iter().zip(records).enumerate() {
        assert_eq!(r["line"], *line);
        let parsed: Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["index"], i as u64);
        assert_eq!(parsed["prev"], to_hex(&prev));
        let hash = record_hash(line.as_bytes());
        assert_eq!(r["record_hash"], to_hex(&hash));
        let leaf = leaf_hash(&hash);
        assert_eq!(r["leaf_hash"], to_hex(&leaf));
        leaves.push(leaf);
        prev = hash;
    }
    let roots = hashes(&v["roots"]);
    for (n, root) in roots.iter().enumerate() {
        assert_eq!(root_of(&leaves[..n]), *root, "root of size {n}");
    }

    let inc = &v["inclusion"];
    let (index, size) = (inc["index"].as_u64().unwrap(), inc["tree_size"].as_u64().unwrap());
    let proof = hashes(&inc["proof"]);
    assert_eq!(inclusion_proof(&leaves, index, size).unwrap(), proof);
    verify_inclusion(&leaves[index as usize], index, size, &proof, &roots[size as usize]).unwrap();
    let con = &v["consistency"];
    let (first, second) = (con["first"].as_u64().unwrap(), con["second"].as_u64().unwrap());
    let proof = hashes(&con["proof"]);
    assert_eq!(consistency_proof(&leaves, first, second).unwrap(), proof);
    verify_consistency(first, second, &roots[first as usize], &roots[second as usize], &proof).unwrap();

    let key = load_verifying_key(&docs().join("vectors/audit-broker-key.pub.pem")).unwrap();
    assert_eq!(v["public_key"], STANDARD.encode(key.as_bytes()));
    assert_eq!(v["key_id"], to_hex(&key_id(origin, &key)));
    let note_text = std::fs::read_to_string(docs().join("vectors/audit.jsonl.checkpoint")).unwrap();
    assert_eq!(v["checkpoint_note"], note_text.as_str());
    let note = SignedCheckpoint::parse(&note_text).unwrap();
    assert_eq!(v["checkpoint_body"], note.body.as_str());
    assert_eq!(note.body, format!("{origin}\n10\n{}\n", STANDARD.encode(roots[10])));
    note.verify(&[key]).unwrap();
    assert_eq!(note.signatures[0].key_id.to_vec(), hex_bytes(v["key_id"].as_str().unwrap()));
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The `name = value` block after the marker in docs/AUDIT.md.
fn documented_values() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(docs().join("AUDIT.md")).unwrap();
    let after = doc.split("<!-- audit-vector-values").nth(1).expect("marker in AUDIT.md");
    let block = after.split("```text\n").nth(1).unwrap().split("```").next().unwrap();
    block
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

#[test]
fn the_values_in_audit_md_are_the_vectors() {
    let v = vectors();
    let roots = hashes(&v["roots"]);
    let expected: BTreeMap<String, String> = [
        ("origin", v["origin"].as_str().unwrap().to_string()),
        ("origin_hash", v["origin_hash"].as_str().unwrap().to_string()),
        ("record_0_hash", v["records"][0]["record_hash"].as_str().unwrap().to_string()),
        ("leaf_0_hash", v["records"][0]["leaf_hash"].as_str().unwrap().to_string()),
        ("root_0", to_hex(&roots[0])),
        ("root_10", to_hex(&roots[10])),
        ("root_10_base64", STANDARD.encode(roots[10])),
        ("public_key", v["public_key"].as_str().unwrap().to_string()),
        ("key_id", v["key_id"].as_str().unwrap().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(documented_values(), expected);
}

#[test]
fn every_kind_is_documented() {
    let doc = std::fs::read_to_string(docs().join("AUDIT.md")).unwrap();
    for kind in EVENT_KINDS.iter().chain(LOG_KINDS) {
        assert!(doc.contains(&format!("| `{kind}` |")), "{kind} is not in the kinds tables of docs/AUDIT.md");
    }
}
