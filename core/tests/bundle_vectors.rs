//! docs/vectors/bundle-v1.json: one wrapped group key with every intermediate
//! value, recomputed here from the primitives (X25519, HKDF-SHA256, AES-KW,
//! AES-256-GCM) rather than through mqseal's own wrap code; and a signed bundle.
//! Regenerate (only when the format changes on purpose) with
//! `MQSEAL_REGENERATE_VECTORS=1 cargo test -p mqseal-core --test bundle_vectors`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use mqseal_core::formats::bundle::{
    external_aad, kdf_context, unwrap_group_key, wrap_group_key_with, Bundle, WrapRandomness, WrappedKey, BUNDLE_FORMAT,
};
use mqseal_core::formats::keys::{hex, GroupKey, KxSecret};
use mqseal_core::formats::signed_doc::AuthoritySigningKey;
use serde_json::{json, Value};
use zeroize::Zeroizing;

fn vector_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors/bundle-v1.json")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn arr32(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

const DEVICE: &str = "1111";
const GROUP: &str = "hsu0001";
const EPOCH: u64 = 3;
const DEVICE_KX: [u8; 32] = [0x33; 32];
const EPHEMERAL: [u8; 32] = [0x44; 32];
const CEK: [u8; 32] = [0x55; 32];
const IV: [u8; 12] = [0x66; 12];
const GROUP_KEY: [u8; 32] = [0x77; 32];
const AUTHORITY_SEED: [u8; 32] = [0xA0; 32];

/// Every intermediate value, computed from the primitives.
fn intermediates(device_kx: [u8; 32], ephemeral: [u8; 32], cek: [u8; 32], iv: [u8; 12], group_key: [u8; 32]) -> Value {
    let device_public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(device_kx));
    let ephemeral_secret = x25519_dalek::StaticSecret::from(ephemeral);
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral_secret);
    let shared = ephemeral_secret.diffie_hellman(&device_public);
    let recipient_protected = [0xa1u8, 0x01, 0x38, 0x1e]; // {1: -31}
    let context = kdf_context(&recipient_protected);
    let mut kek = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, shared.as_bytes()).expand(&context, &mut kek).unwrap();
    let wrapped = aes_kw::KekAes256::from(kek).wrap_vec(&cek).unwrap();
    let content_protected = [0xa1u8, 0x01, 0x03]; // {1: 3}
    let aad = external_aad(DEVICE, GROUP, EPOCH);
    // Enc_structure = ["Encrypt", h'A10103', external_aad]
    let enc_structure = {
        let mut e = vec![0x83, 0x67];
        e.extend_from_slice(b"Encrypt");
        e.push(0x43);
        e.extend_from_slice(&content_protected);
        if aad.len() < 24 {
            e.push(0x40 + aad.len() as u8);
        } else {
            e.push(0x58);
            e.push(aad.len() as u8);
        }
        e.extend_from_slice(&aad);
        e
    };
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&cek).unwrap();
    let ciphertext = cipher.encrypt((&iv).into(), Payload { msg: &group_key, aad: &enc_structure }).unwrap();
    json!({
        "device_kx_public_hex": hex(device_public.as_bytes()),
        "ephemeral_public_hex": hex(ephemeral_public.as_bytes()),
        "external_aad_hex": hex(&aad),
        "recipient_protected_hex": hex(&recipient_protected),
        "kdf_context_hex": hex(&context),
        "shared_secret_hex": hex(shared.as_bytes()),
        "kek_hex": hex(&kek),
        "wrapped_cek_hex": hex(&wrapped),
        "content_protected_hex": hex(&content_protected),
        "enc_structure_hex": hex(&enc_structure),
        "ciphertext_hex": hex(&ciphertext),
    })
}

fn wrap(device_kx: [u8; 32], ephemeral: [u8; 32], cek: [u8; 32], iv: [u8; 12], group_key: [u8; 32]) -> Vec<u8> {
    let random = WrapRandomness { ephemeral: KxSecret::from_bytes(ephemeral), cek: Zeroizing::new(cek), iv };
    let recipient = KxSecret::from_bytes(device_kx).public();
    wrap_group_key_with(&GroupKey::from_bytes(group_key), &recipient, DEVICE, GROUP, EPOCH, random).unwrap()
}

fn signed_bundle(cose: Vec<u8>) -> Vec<u8> {
    let bundle = Bundle {
        device: DEVICE.into(),
        kx: KxSecret::from_bytes(DEVICE_KX).public(),
        version: 8,
        issued_at: 1_700_000_200,
        groups: BTreeMap::from([(GROUP.to_string(), vec![WrappedKey { epoch: EPOCH, cose }])]),
    };
    bundle.sign(&AuthoritySigningKey::from_seed(&AUTHORITY_SEED)).unwrap()
}

fn generate() -> Value {
    let mut v = json!({
        "description": "One group key wrapped to a device as COSE_Encrypt with ECDH-ES + A256KW (docs/POLICY.md, \
                        'Key bundles'), with fixed randomness; and the signed bundle carrying it.",
        "device": DEVICE, "group": GROUP, "epoch": EPOCH,
        "device_kx_secret_hex": hex(&DEVICE_KX),
        "ephemeral_secret_hex": hex(&EPHEMERAL),
        "cek_hex": hex(&CEK),
        "iv_hex": hex(&IV),
        "group_key_hex": hex(&GROUP_KEY),
    });
    let cose = wrap(DEVICE_KX, EPHEMERAL, CEK, IV, GROUP_KEY);
    for (k, val) in intermediates(DEVICE_KX, EPHEMERAL, CEK, IV, GROUP_KEY).as_object().unwrap() {
        v[k] = val.clone();
    }
    v["cose_encrypt_hex"] = json!(hex(&cose));
    v["bundle"] = json!({
        "format": BUNDLE_FORMAT,
        "authority_seed_hex": hex(&AUTHORITY_SEED),
        "version": 8,
        "issued_at": 1_700_000_200u64,
        "document": String::from_utf8(signed_bundle(cose)).unwrap(),
    });
    v
}

#[test]
fn bundle_vector_reproduces() {
    let path = vector_path();
    if std::env::var_os("MQSEAL_REGENERATE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&generate()).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/vectors/bundle-v1.json")).unwrap();
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string();
    let (device_kx, ephemeral, cek, group_key) =
        (arr32(&s("device_kx_secret_hex")), arr32(&s("ephemeral_secret_hex")), arr32(&s("cek_hex")), arr32(&s("group_key_hex")));
    let iv: [u8; 12] = unhex(&s("iv_hex")).try_into().unwrap();
    assert_eq!((v["device"].as_str(), v["group"].as_str(), v["epoch"].as_u64()), (Some(DEVICE), Some(GROUP), Some(EPOCH)));

    // Intermediate values from the primitives match the vector.
    let computed = intermediates(device_kx, ephemeral, cek, iv, group_key);
    for (k, val) in computed.as_object().unwrap() {
        assert_eq!(&v[k], val, "{k}");
    }
    // mqseal's wrap produces the vector's COSE_Encrypt, which contains the
    // intermediate values where the format says.
    let cose = wrap(device_kx, ephemeral, cek, iv, group_key);
    assert_eq!(s("cose_encrypt_hex"), hex(&cose));
    let cose_hex = hex(&cose);
    for k in ["wrapped_cek_hex", "ciphertext_hex", "ephemeral_public_hex", "iv_hex"] {
        assert!(cose_hex.contains(&s(k)), "{k} not inside the COSE_Encrypt");
    }
    assert!(cose_hex.starts_with("d8608443a10103a1054c"), "tag 96, [h'A10103', {{5: iv}}, ...]");
    // And unwraps with the device's secret.
    let key = unwrap_group_key(&cose, &KxSecret::from_bytes(device_kx), DEVICE, GROUP, EPOCH).unwrap();
    assert_eq!(key.as_bytes(), &group_key);

    // The signed bundle.
    let b = &v["bundle"];
    let authority = AuthoritySigningKey::from_seed(&arr32(b["authority_seed_hex"].as_str().unwrap()));
    let document = signed_bundle(cose);
    assert_eq!(b["document"].as_str().unwrap().as_bytes(), &document[..]);
    let bundle = Bundle::from_signed(&document, &authority.public(), "vector").unwrap();
    let keys = bundle.unwrap_all(&KxSecret::from_bytes(device_kx), "vector").unwrap();
    assert_eq!(keys[&(GROUP.to_string(), EPOCH)].as_bytes(), &group_key);
}
