//! docs/vectors/policy-v1.json: the signed policy format, byte for byte.
//! Regenerate (only when the format changes on purpose) with
//! `MQSEAL_REGENERATE_VECTORS=1 cargo test -p mqseal-core --test policy_vectors`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mqseal_core::formats::keys::{hex, SigningKey};
use mqseal_core::formats::policy::{DevicePolicy, GroupPolicy, Policy, Role, POLICY_FORMAT};
use mqseal_core::formats::signed_doc::{signing_input, verify_document, AuthorityPublicKey, AuthoritySigningKey};
use serde_json::{json, Value};

fn vector_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors/policy-v1.json")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const AUTHORITY_SEED: [u8; 32] = [0xA0; 32];
const ED_SEED: [u8; 32] = [0x11; 32];
const P256_SCALAR: [u8; 32] = [0x22; 32];

fn sample_policy() -> Policy {
    let mut devices = BTreeMap::new();
    devices.insert(
        "1111".to_string(),
        DevicePolicy { username: "1111".into(), sign: SigningKey::ed25519_from_seed(&ED_SEED).verifying_key() },
    );
    devices.insert(
        "2222".to_string(),
        DevicePolicy {
            username: "display-2222".into(),
            sign: SigningKey::p256_from_scalar(&P256_SCALAR).unwrap().verifying_key(),
        },
    );
    let mut groups = BTreeMap::new();
    groups.insert(
        "hsu0001".to_string(),
        GroupPolicy {
            topics: vec!["hsu/0001/#".into(), "site/+/hsu0001".into()],
            members: [("1111".to_string(), Role::Pub), ("2222".to_string(), Role::PubSub)].into(),
            epoch: 3,
            epoch_started_at: 1_700_000_000,
            previous_epoch_grace_secs: 3600,
        },
    );
    Policy { version: 7, issued_at: 1_700_000_100, devices, groups }
}

fn generate() -> Value {
    let authority = AuthoritySigningKey::from_seed(&AUTHORITY_SEED);
    let policy = sample_policy();
    let body = policy.body_bytes().unwrap();
    let document = policy.sign(&authority).unwrap();
    let parts = mqseal_core::formats::signed_doc::split_document(&document, "v").unwrap();
    json!({
        "description": "A signed mqseal policy (docs/POLICY.md). Ed25519 device from seed, P-256 device from scalar; \
                        the authority key from its RFC 8032 seed. Ed25519 is deterministic, so document is exact.",
        "format": POLICY_FORMAT,
        "authority_seed_hex": hex(&AUTHORITY_SEED),
        "authority_public_b64url": authority.public().to_b64url(),
        "authority_pub_pem": authority.public().to_pem().unwrap(),
        "devices": [
            {"id": "1111", "alg": "Ed25519", "seed_hex": hex(&ED_SEED)},
            {"id": "2222", "alg": "ESP256", "scalar_hex": hex(&P256_SCALAR)}
        ],
        "canonical_body": String::from_utf8(body.clone()).unwrap(),
        "signing_input_hex": hex(&signing_input(POLICY_FORMAT, &body)),
        "signature_b64url": parts.sig,
        "document": String::from_utf8(document).unwrap(),
    })
}

#[test]
fn policy_vector_reproduces() {
    let path = vector_path();
    if std::env::var_os("MQSEAL_REGENERATE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&generate()).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/vectors/policy-v1.json")).unwrap();
    let authority = AuthoritySigningKey::from_seed(&unhex(v["authority_seed_hex"].as_str().unwrap()).try_into().unwrap());
    assert_eq!(v["authority_public_b64url"], authority.public().to_b64url());
    assert_eq!(v["authority_pub_pem"], authority.public().to_pem().unwrap());
    let pem_key = AuthorityPublicKey::from_pem(v["authority_pub_pem"].as_str().unwrap(), "vector").unwrap();
    assert_eq!(pem_key, authority.public());

    // The body in the vector is the canonical body of the sample policy.
    let policy = sample_policy();
    let body = policy.body_bytes().unwrap();
    assert_eq!(v["canonical_body"].as_str().unwrap().as_bytes(), &body[..]);
    assert_eq!(Policy::from_body(&body, "vector").unwrap(), policy);
    assert!(mqseal_core::formats::canonical_json::is_canonical(&body));

    // Signing input, signature and the whole file.
    let input = signing_input(POLICY_FORMAT, &body);
    assert_eq!(v["signing_input_hex"], hex(&input));
    assert!(input.starts_with(b"mqseal-signed-doc-v1\0mqseal-policy-v1\0{"));
    let document = policy.sign(&authority).unwrap();
    assert_eq!(v["document"].as_str().unwrap().as_bytes(), &document[..]);
    let parts = mqseal_core::formats::signed_doc::split_document(&document, "v").unwrap();
    assert_eq!(v["signature_b64url"], parts.sig);

    // The vector document verifies against the authority and parses to the policy.
    let verified = verify_document(v["document"].as_str().unwrap().as_bytes(), POLICY_FORMAT, &authority.public(), "v").unwrap();
    assert_eq!(verified, &body[..]);
    // Device keys: the vector's seeds give the keys in the body.
    for d in v["devices"].as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        let key = match d["alg"].as_str().unwrap() {
            "Ed25519" => SigningKey::ed25519_from_seed(&unhex(d["seed_hex"].as_str().unwrap()).try_into().unwrap()),
            _ => SigningKey::p256_from_scalar(&unhex(d["scalar_hex"].as_str().unwrap()).try_into().unwrap()).unwrap(),
        };
        assert_eq!(policy.devices[id].sign, key.verifying_key());
    }
}
