//! docs/vectors/identity-cert-v1.json: the identity certificate the authority
//! publishes on `$mqseal/identity/ID`, byte for byte (docs/POLICY.md §8.2).
//! Regenerate (only when the format changes on purpose) with
//! `MQSEAL_REGENERATE_VECTORS=1 cargo test -p mqseal-core --test identity_cert_vectors`.

use std::path::PathBuf;

use mqseal_core::formats::control::{IdentityCert, IDENTITY_CERT_FORMAT};
use mqseal_core::formats::identity::Identity;
use mqseal_core::formats::keys::{KxSecret, SigningKey};
use mqseal_core::formats::signed_doc::{signing_input, split_document, AuthoritySigningKey};
use serde_json::{json, Value};

const AUTHORITY_SEED: [u8; 32] = [0xA0; 32];
const ED_SEED: [u8; 32] = [0x11; 32];
const KX_SECRET: [u8; 32] = [0x33; 32];

fn vector_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors/identity-cert-v1.json")
}

fn sample() -> IdentityCert {
    let identity = Identity {
        id: "1111".into(),
        sign: SigningKey::ed25519_from_seed(&ED_SEED).verifying_key(),
        kx: KxSecret::from_bytes(KX_SECRET).public(),
    };
    IdentityCert { identity, username: "1111".into(), issued_at: 1_800_000_000 }
}

fn computed() -> Value {
    let authority = AuthoritySigningKey::from_seed(&AUTHORITY_SEED);
    let document = sample().sign(&authority).unwrap();
    let parts = split_document(&document, "vector").unwrap();
    json!({
        "description": "An identity certificate (docs/POLICY.md §8.2): Ed25519 authority from seed 0xA0*32, device 1111 with Ed25519 seed 0x11*32 and X25519 secret 0x33*32",
        "authority_seed_hex": "a0".repeat(32),
        "format": IDENTITY_CERT_FORMAT,
        "body": String::from_utf8(parts.body.to_vec()).unwrap(),
        "signing_input_hex": signing_input(IDENTITY_CERT_FORMAT, parts.body).iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "document": String::from_utf8(document).unwrap(),
    })
}

#[test]
fn the_identity_certificate_vector_matches() {
    let expected = computed();
    if std::env::var_os("MQSEAL_REGENERATE_VECTORS").is_some() {
        std::fs::write(vector_path(), serde_json::to_string_pretty(&expected).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(vector_path()).expect("read the vector")).unwrap();
    assert_eq!(stored, expected, "docs/vectors/identity-cert-v1.json differs from what the code makes");
    // The stored document verifies and parses back to the sample.
    let authority = AuthoritySigningKey::from_seed(&AUTHORITY_SEED).public();
    let document = stored["document"].as_str().unwrap().as_bytes();
    assert_eq!(IdentityCert::from_signed(document, &authority, "vector").unwrap(), sample());
    // The body embeds ID.pub exactly.
    let body = stored["body"].as_str().unwrap();
    let id_pub = String::from_utf8(sample().identity.to_json()).unwrap();
    assert!(body.contains(&id_pub), "{body} does not embed {id_pub}");
}
