//! The test vectors in docs/vectors/audit*: a tiny log with fixed timestamps,
//! its checkpoints, its key, and the intermediate values (docs/AUDIT.md shows
//! some of them). Built here from the encoder itself; the test below checks that
//! the committed files are exactly what the encoder produces, so neither can
//! drift. `MQSEAL_WRITE_VECTORS=1 cargo test -p mqseal-core vectors` rewrites them.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::SigningKey;
use pkcs8::der::pem::LineEnding;
use serde_json::json;

use super::checkpoint::{key_id, Checkpoint};
use super::event::{AuditEvent, LogEvent, Recordable};
use super::hashing::{origin_hash, to_hex, Hash};
use super::merkle::{consistency_proof, inclusion_proof, leaf_hash, CompactRange};
use super::record::encode_record;
use super::timestamp::{TimestampFormatter, UnixMillis};
use crate::broker::decision::DenyReason;
use crate::formats::reasons;

pub(crate) const ORIGIN: &str = "example.org/mqseal-audit";

/// The vector key's seed: bytes 0x00, 0x01, … 0x1f. A published test key: never use it.
pub(crate) fn vector_key() -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    SigningKey::from_bytes(&seed)
}

pub(crate) struct VectorFiles {
    pub files: Vec<(&'static str, String)>,
}

pub(crate) fn build() -> VectorFiles {
    let key = vector_key();
    let public_b64 = STANDARD.encode(key.verifying_key().as_bytes());
    let h = |s: &str| super::hashing::sha256(s.as_bytes());
    let mut settings = BTreeMap::new();
    settings.insert("auth".to_string(), "key".to_string());
    settings.insert("unprotected".to_string(), "deny".to_string());
    let events: Vec<Box<dyn Recordable>> = vec![
        Box::new(LogEvent::Opened {
            origin: ORIGIN.into(),
            key: public_b64.clone(),
            checkpoint_every: 4,
            max_unsealed: 4 + 4096,
            software: "mqseal-core 0.1.0",
        }),
        Box::new(AuditEvent::PluginStart { version: "0.1.0".into(), settings }),
        Box::new(AuditEvent::AuthAccepted { client: "sensor-7".into(), username: Some("dev-7".into()), method: "key".into() }),
        Box::new(AuditEvent::PublishAccepted {
            client: "sensor-7".into(),
            topic: "fleet/dev-7/telemetry".into(),
            sender: "dev-7".into(),
            group: "fleet".into(),
            epoch: 3,
            seq: 41,
            envelope_sha256: h("envelope 41"),
        }),
        Box::new(AuditEvent::PublishDenied {
            client: "sensor-7".into(),
            topic: "fleet/dev-7/telemetry".into(),
            reason: DenyReason::REPLAY.as_str().into(),
            sender: Some("dev-7".into()),
            group: Some("fleet".into()),
            epoch: Some(3),
            seq: Some(41),
            envelope_sha256: Some(h("envelope 41")),
        }),
        Box::new(AuditEvent::SubscribeDenied { client: "intruder".into(), filter: "fleet/#".into(), reason: DenyReason::NOT_A_READER.as_str().into() }),
        Box::new(AuditEvent::ClientKicked { client: "intruder".into(), reason: reasons::FLOOD.into() }),
        Box::new(AuditEvent::EpochFirstSeen { group: "fleet".into(), epoch: 4 }),
        Box::new(AuditEvent::PluginStop { reason: reasons::SHUTDOWN.into() }),
        Box::new(LogEvent::Closed { refused: 0, lost: 0 }),
    ];
    // Sealed as the writer seals with checkpoint_every 4: the empty tree first,
    // then after log.opened, then each time 4 records are unsealed, then at the end.
    let sealed_sizes = [0u64, 1, 5, 9, 10];

    let mut clock = TimestampFormatter::new();
    let mut prev: Hash = origin_hash(ORIGIN);
    let mut tree = CompactRange::new();
    let mut log = String::new();
    let mut records = Vec::new();
    let mut leaves = Vec::new();
    let mut roots = vec![to_hex(&tree.root())];
    let start = UnixMillis(1_714_564_800_000); // 2024-05-01T12:00:00.000Z
    for (i, event) in events.iter().enumerate() {
        let time = UnixMillis(start.0 + 1_250 * i as u64);
        let stamp = *clock.format(time);
        let mut line = Vec::new();
        let hash = encode_record(&mut line, i as u64, &stamp, event.as_ref(), &prev);
        let leaf = leaf_hash(&hash);
        tree.push(leaf);
        leaves.push(leaf);
        roots.push(to_hex(&tree.root()));
        let text = String::from_utf8(line).unwrap_or_default();
        log.push_str(&text);
        log.push('\n');
        records.push(json!({"line": text, "record_hash": to_hex(&hash), "leaf_hash": to_hex(&leaf)}));
        prev = hash;
    }
    let checkpoint_at = |size: u64| {
        let root = super::merkle::root_of(&leaves[..size as usize]);
        Checkpoint { origin: ORIGIN.into(), size, root }
    };
    let mut history = String::new();
    for size in sealed_sizes {
        history.push_str(&checkpoint_at(size).sign(&key));
        history.push('\n');
    }
    let latest = checkpoint_at(10);
    let latest_note = latest.sign(&key);
    let inclusion = inclusion_proof(&leaves, 3, 10).unwrap_or_default();
    let consistency = consistency_proof(&leaves, 5, 10).unwrap_or_default();
    let values = json!({
        "description": "mqseal audit log test vectors: see docs/AUDIT.md. The key is published: never use it.",
        "origin": ORIGIN,
        "origin_hash": to_hex(&origin_hash(ORIGIN)),
        "public_key": public_b64,
        "key_id": to_hex(&key_id(ORIGIN, &key.verifying_key())),
        "records": records,
        "roots": roots,
        "inclusion": {"index": 3, "tree_size": 10, "proof": inclusion.iter().map(|h| to_hex(h)).collect::<Vec<_>>()},
        "consistency": {"first": 5, "second": 10, "proof": consistency.iter().map(|h| to_hex(h)).collect::<Vec<_>>()},
        "checkpoint_body": latest.body(),
        "checkpoint_note": latest_note,
    });
    // PKCS#8 v1 (no embedded public key), as `mqseal keygen` writes keys: the
    // form OpenSSL 3.0 and pyca/cryptography read.
    let private_pem =
        crate::formats::keys::SigningKey::Ed25519(key.clone()).to_pkcs8_pem().map(|p| p.to_string()).unwrap_or_default();
    let public_pem = key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap_or_default();
    let json_text = serde_json::to_string_pretty(&values).unwrap_or_default() + "\n";
    VectorFiles {
        files: vec![
            ("audit.jsonl", log),
            ("audit.jsonl.checkpoint", latest_note),
            ("audit.jsonl.checkpoints", history),
            ("audit-broker-key.pem", private_pem),
            ("audit-broker-key.pub.pem", public_pem),
            ("audit-vectors.json", json_text),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_vectors_are_what_the_encoder_writes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors");
        let write = std::env::var("MQSEAL_WRITE_VECTORS").is_ok_and(|v| v == "1");
        for (name, content) in build().files {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &content).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(committed, content, "{} differs from what the encoder writes", path.display());
        }
    }
}
