//! Test vectors: docs/vectors/login-token-v1.json and docs/LOGIN.md.
//!
//! `generate()` builds the vectors from fixed keys through the real code
//! (`login_token::make_token`, `verify_token`); `vectors_file_is_current` checks
//! the committed file equals it (regenerate with
//! `MQSEAL_WRITE_VECTORS=1 cargo test -p mqseal-core --test login_token_vectors`).
//! The other tests read ONLY the JSON file: they rebuild the signed bytes from
//! the rules of docs/LOGIN.md by hand, check the signatures with the signature
//! crates directly, and run every check case through `verify_token`.

mod envelope_common;

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use envelope_common::{arr32, ed_key, ed_key_other, hex, p256_key, unhex, ED_SEED, P256_SCALAR};
use mqseal_core::formats::keys::{SignAlg, SigningKey, VerifyingKey};
use mqseal_core::formats::login_token::{self, LoginError};
use serde_json::{json, Value};

const CLIENT_ID: &str = "sensor-1111";
const USERNAME: &str = "1111";
const TIMESTAMP_MS: u64 = 1_700_000_000_123;
const MAX_AGE_SECS: u64 = 300;

/// The Ed25519 group order L, little-endian (RFC 8032 §5.1).
const ED25519_L_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0x10,
];
/// The P-256 group order n, big-endian (SEC 2).
const P256_N_BE: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17,
    0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// S + L for a little-endian S (the same point equation, a non-canonical scalar).
fn ed25519_s_plus_l(sig: &[u8]) -> Vec<u8> {
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(out[32 + i]) + u16::from(ED25519_L_LE[i]) + carry;
        out[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

/// r || (n − s) for big-endian r, s: the other ECDSA solution, high-S.
fn p256_high_s(sig: &[u8]) -> Vec<u8> {
    let mut out = sig.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N_BE[i]) - i16::from(sig[32 + i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[32 + i] = d as u8;
    }
    out
}

fn token_with_signature(timestamp_ms: u64, signature: &[u8]) -> String {
    format!("mqseal-login-v1.{timestamp_ms}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn signature_of(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.rsplit('.').next().unwrap()).unwrap()
}

fn key_entry(name: &str, key: &SigningKey, secret: (&str, &str)) -> Value {
    json!({
        "name": name,
        "alg": key.alg().identity_name(),
        secret.0: secret.1,
        "private_pem": key.to_pkcs8_pem().unwrap().as_str(),
        "public_hex": hex(&key.verifying_key().to_raw()),
        "public_b64url": URL_SAFE_NO_PAD.encode(key.verifying_key().to_raw()),
    })
}

struct Case {
    name: &'static str,
    note: &'static str,
    password: String,
    key: &'static str,
    client_id: &'static str,
    username: &'static str,
    now_ms: u64,
    last_login_ms: u64,
}

fn generate() -> Value {
    let ed = ed_key();
    let p256 = p256_key();
    let other = ed_key_other();
    let keys = vec![
        key_entry("device-ed25519", &ed, ("seed_hex", ED_SEED)),
        key_entry("device-esp256", &p256, ("scalar_hex", P256_SCALAR)),
        key_entry("other-ed25519", &other, ("seed_hex", envelope_common::ED_SEED_OTHER)),
    ];
    let signed = login_token::signed_bytes(CLIENT_ID, USERNAME, TIMESTAMP_MS);
    let ed_token = login_token::make_token(&ed, CLIENT_ID, USERNAME, TIMESTAMP_MS);
    let p256_token = login_token::make_token(&p256, CLIENT_ID, USERNAME, TIMESTAMP_MS);
    let tokens = vec![
        json!({
            "name": "ed25519",
            "key": "device-ed25519",
            "client_id": CLIENT_ID,
            "username": USERNAME,
            "timestamp_ms": TIMESTAMP_MS,
            "signed_text": String::from_utf8(signed.clone()).unwrap(),
            "signed_hex": hex(&signed),
            "signature_hex": hex(&signature_of(&ed_token)),
            "reproducible": true,
            "token": ed_token,
        }),
        json!({
            "name": "esp256",
            "key": "device-esp256",
            "client_id": CLIENT_ID,
            "username": USERNAME,
            "timestamp_ms": TIMESTAMP_MS,
            "signed_text": String::from_utf8(signed.clone()).unwrap(),
            "signed_hex": hex(&signed),
            "signature_hex": hex(&signature_of(&p256_token)),
            "reproducible": false,
            "token": p256_token,
        }),
    ];

    let t = TIMESTAMP_MS;
    let age = MAX_AGE_SECS * 1000;
    let skew = login_token::MAX_CLOCK_SKEW.as_millis() as u64;
    let case = |name, note, password: &str, key, now_ms, last_login_ms| Case {
        name,
        note,
        password: password.to_string(),
        key,
        client_id: CLIENT_ID,
        username: USERNAME,
        now_ms,
        last_login_ms,
    };
    let ed_t = ed_token.as_str();
    let p_t = p256_token.as_str();
    let ed_sig = signature_of(ed_t);
    let mut bad_trailing_bits = ed_t.to_string();
    let last = bad_trailing_bits.pop().unwrap();
    // The last of 86 characters carries 4 signature bits and 2 zero bits; set one of those.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).unwrap();
    bad_trailing_bits.push(alphabet.as_bytes()[index | 1] as char);
    let ts0 = login_token::make_token(&ed, CLIENT_ID, USERNAME, 0);
    let cases = vec![
        case("ed25519-fresh", "a fresh token", ed_t, "device-ed25519", t + 1_000, 0),
        case("esp256-fresh", "a fresh token", p_t, "device-esp256", t + 1_000, 0),
        case("at-max-age", "now − timestamp = max_age exactly: still accepted", ed_t, "device-ed25519", t + age, 0),
        case("past-max-age", "now − timestamp = max_age + 1 ms", ed_t, "device-ed25519", t + age + 1, 0),
        case("at-max-skew", "timestamp − now = 30 000 ms exactly: still accepted", ed_t, "device-ed25519", t - skew, 0),
        case("past-max-skew", "timestamp − now = 30 001 ms", ed_t, "device-ed25519", t - skew - 1, 0),
        case("reused", "the last accepted login of this device had the same timestamp", ed_t, "device-ed25519", t + 1_000, t),
        case("newer-than-last", "the last accepted login was 1 ms earlier", ed_t, "device-ed25519", t + 1_000, t - 1),
        case(
            "reused-beats-signature",
            "an old timestamp and a wrong key: the freshness checks come before the signature",
            ed_t,
            "other-ed25519",
            t + 1_000,
            t + 500,
        ),
        Case { client_id: "sensor-2222", ..case("other-client-id", "presented with another client id", ed_t, "device-ed25519", t + 1_000, 0) },
        Case { username: "2222", ..case("other-username", "presented with another username", ed_t, "device-ed25519", t + 1_000, 0) },
        case("other-key", "checked against another device's key", ed_t, "other-ed25519", t + 1_000, 0),
        case(
            "ed25519-s-plus-l",
            "S replaced by S + L (the same equation, a non-canonical scalar)",
            &token_with_signature(t, &ed25519_s_plus_l(&ed_sig)),
            "device-ed25519",
            t + 1_000,
            0,
        ),
        case(
            "esp256-high-s",
            "s replaced by n − s (the other valid ECDSA solution, high-S)",
            &token_with_signature(t, &p256_high_s(&signature_of(p_t))),
            "device-esp256",
            t + 1_000,
            0,
        ),
        case("timestamp-zero", "timestamp 0 is well-formed (and long expired)", &ts0, "device-ed25519", t, 0),
        case("empty", "an empty password", "", "device-ed25519", t, 0),
        case("not-a-token", "a plain password", "secret", "device-ed25519", t, 0),
        case("prefix-only", "the prefix alone", "mqseal-login-v1", "device-ed25519", t, 0),
        case("upper-case-prefix", "the prefix in upper case", &ed_t.replace("mqseal-login-v1", "MQSEAL-LOGIN-V1"), "device-ed25519", t, 0),
        case("other-version", "mqseal-login-v2", &ed_t.replace("mqseal-login-v1", "mqseal-login-v2"), "device-ed25519", t, 0),
        case("leading-zero", "the timestamp with a leading zero", &ed_t.replace(".1700", ".01700"), "device-ed25519", t, 0),
        case("plus-sign", "the timestamp with a + sign", &ed_t.replace(".1700", ".+1700"), "device-ed25519", t, 0),
        case("empty-timestamp", "no timestamp", &format!("mqseal-login-v1..{}", URL_SAFE_NO_PAD.encode(&ed_sig)), "device-ed25519", t, 0),
        case(
            "timestamp-21-digits",
            "21 digits",
            &format!("mqseal-login-v1.100000000000000000000.{}", URL_SAFE_NO_PAD.encode(&ed_sig)),
            "device-ed25519",
            t,
            0,
        ),
        case(
            "timestamp-above-u64",
            "2^64, 20 digits but more than a u64",
            &format!("mqseal-login-v1.18446744073709551616.{}", URL_SAFE_NO_PAD.encode(&ed_sig)),
            "device-ed25519",
            t,
            0,
        ),
        case("padded-signature", "base64url with = padding", &format!("{ed_t}=="), "device-ed25519", t, 0),
        case(
            "standard-alphabet",
            "base64 with + and / instead of - and _",
            &format!("mqseal-login-v1.{t}.{}", STANDARD_NO_PAD.encode([0xfb; 64])),
            "device-ed25519",
            t,
            0,
        ),
        case("non-zero-trailing-bits", "the last character's two unused bits set", &bad_trailing_bits, "device-ed25519", t, 0),
        case("short-signature", "a 63-byte signature", &token_with_signature(t, &ed_sig[..63]), "device-ed25519", t, 0),
        case("long-signature", "a 65-byte signature", &token_with_signature(t, &[&ed_sig[..], &[0]].concat()), "device-ed25519", t, 0),
        case("extra-field", "a fourth dot-separated field", &format!("{ed_t}.x"), "device-ed25519", t, 0),
        case("trailing-newline", "a newline after the token", &format!("{ed_t}\n"), "device-ed25519", t, 0),
    ];
    let key_of = |name: &str| match name {
        "device-ed25519" => ed.verifying_key(),
        "device-esp256" => p256.verifying_key(),
        "other-ed25519" => other.verifying_key(),
        other => panic!("{other}"),
    };
    let checks: Vec<Value> = cases
        .into_iter()
        .map(|c| {
            let result = login_token::verify_token(
                c.password.as_bytes(),
                &key_of(c.key),
                c.client_id,
                c.username,
                c.now_ms,
                Duration::from_secs(MAX_AGE_SECS),
                c.last_login_ms,
            );
            json!({
                "name": c.name,
                "note": c.note,
                "password": c.password,
                "key": c.key,
                "client_id": c.client_id,
                "username": c.username,
                "now_ms": c.now_ms,
                "max_age_secs": MAX_AGE_SECS,
                "last_login_ms": c.last_login_ms,
                "result": match result {
                    Ok(_) => "accept",
                    Err(e) => e.reason(),
                },
            })
        })
        .collect();
    json!({
        "format": "mqseal-login-token-vectors-v1",
        "spec": "docs/LOGIN.md",
        "note": "A published test key set: never use these keys. `tokens`: the signed bytes and the token for each algorithm. \
                 `checks`: a broker given `password` for `client_id`/`username` at `now_ms`, with max_age_secs and the last \
                 accepted login's timestamp of that device (0: none), with the device key `key`, answers `result`: accept or a reason token.",
        "keys": keys,
        "tokens": tokens,
        "checks": checks,
    })
}

fn load() -> Value {
    let path = repo_file("docs/vectors/login-token-v1.json");
    if std::env::var_os("MQSEAL_WRITE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&generate()).unwrap();
        text.push('\n');
        let tmp = path.with_extension(format!("json.tmp-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("missing string {k} in {}", v["name"]))
}

fn keys(file: &Value) -> Vec<(String, SigningKey, VerifyingKey)> {
    file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let signer = match s(k, "alg") {
                "Ed25519" => SigningKey::ed25519_from_seed(&arr32(s(k, "seed_hex"))),
                "ESP256" => SigningKey::p256_from_scalar(&arr32(s(k, "scalar_hex"))).unwrap(),
                other => panic!("{other}"),
            };
            let from_pem = SigningKey::from_pkcs8_pem(s(k, "private_pem")).unwrap();
            assert_eq!(from_pem.verifying_key(), signer.verifying_key(), "{}: PEM and seed disagree", k["name"]);
            let alg = SignAlg::from_identity_name(s(k, "alg")).unwrap();
            let public = VerifyingKey::from_raw(alg, &unhex(s(k, "public_hex"))).unwrap();
            assert_eq!(public, signer.verifying_key());
            assert_eq!(URL_SAFE_NO_PAD.decode(s(k, "public_b64url")).unwrap(), unhex(s(k, "public_hex")));
            (s(k, "name").to_string(), signer, public)
        })
        .collect()
}

#[test]
fn vectors_file_is_current() {
    assert_eq!(load(), generate(), "docs/vectors/login-token-v1.json is stale; regenerate with MQSEAL_WRITE_VECTORS=1");
}

#[test]
fn tokens_are_the_documented_bytes_signed_as_documented() {
    envelope_common::for_each_p256_backend(tokens_are_the_documented_bytes_signed_as_documented_on_one_backend);
}

fn tokens_are_the_documented_bytes_signed_as_documented_on_one_backend() {
    let file = load();
    let keys = keys(&file);
    let tokens = file["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "one token per algorithm");
    for v in tokens {
        let name = s(v, "name");
        let (_, signer, public) = keys.iter().find(|(n, _, _)| n == s(v, "key")).unwrap();
        let ts = v["timestamp_ms"].as_u64().unwrap();
        // The signed bytes, rebuilt from the words of docs/LOGIN.md §3.
        let by_hand = format!("mqseal-login-v1\n{}\n{}\n{ts}", s(v, "client_id"), s(v, "username"));
        assert_eq!(s(v, "signed_text"), by_hand, "{name}");
        assert_eq!(unhex(s(v, "signed_hex")), by_hand.as_bytes(), "{name}");
        assert_eq!(login_token::signed_bytes(s(v, "client_id"), s(v, "username"), ts), by_hand.as_bytes());
        // The token text: prefix, decimal timestamp, unpadded base64url of the 64-byte signature.
        let sig = unhex(s(v, "signature_hex"));
        assert_eq!(sig.len(), 64);
        assert_eq!(s(v, "token"), format!("mqseal-login-v1.{ts}.{}", URL_SAFE_NO_PAD.encode(&sig)), "{name}");
        let parsed = login_token::parse_token(s(v, "token").as_bytes()).unwrap();
        assert_eq!((parsed.timestamp_ms, parsed.signature.as_slice()), (ts, sig.as_slice()));
        // The signature, checked with the signature crates directly (not through mqseal).
        match public {
            VerifyingKey::Ed25519(k) => {
                k.verify_strict(by_hand.as_bytes(), &ed25519_dalek::Signature::from_slice(&sig).unwrap()).unwrap();
            }
            VerifyingKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
                assert!(sig.normalize_s().is_none(), "{name}: signers emit low-S");
                p256::ecdsa::signature::Verifier::verify(k.rustcrypto(), by_hand.as_bytes(), &sig).unwrap();
            }
        }
        // Sealing side: Ed25519 is deterministic; ECDSA may be randomized (this
        // implementation uses RFC 6979, so it reproduces the vector too).
        let made = login_token::make_token(signer, s(v, "client_id"), s(v, "username"), ts);
        if v["reproducible"].as_bool().unwrap() {
            assert_eq!(made, s(v, "token"), "{name}");
        }
        login_token::verify_token(made.as_bytes(), public, s(v, "client_id"), s(v, "username"), ts, Duration::from_secs(1), 0).unwrap();
    }
}

#[test]
fn every_check_case_gives_its_result() {
    envelope_common::for_each_p256_backend(every_check_case_gives_its_result_on_one_backend);
}

fn every_check_case_gives_its_result_on_one_backend() {
    let file = load();
    let keys = keys(&file);
    let checks = file["checks"].as_array().unwrap();
    for v in checks {
        let (_, _, public) = keys.iter().find(|(n, _, _)| n == s(v, "key")).unwrap();
        let got = login_token::verify_token(
            s(v, "password").as_bytes(),
            public,
            s(v, "client_id"),
            s(v, "username"),
            v["now_ms"].as_u64().unwrap(),
            Duration::from_secs(v["max_age_secs"].as_u64().unwrap()),
            v["last_login_ms"].as_u64().unwrap(),
        );
        let got = match got {
            Ok(ts) => {
                assert_eq!(ts, login_token::parse_token(s(v, "password").as_bytes()).unwrap().timestamp_ms);
                "accept"
            }
            Err(e) => e.reason(),
        };
        assert_eq!(got, s(v, "result"), "{}: {}", v["name"], v["note"]);
    }
    // Every refusal of a token has a case.
    for e in [LoginError::Malformed, LoginError::Expired, LoginError::FromTheFuture, LoginError::Reused, LoginError::BadSignature] {
        assert!(checks.iter().any(|v| v["result"] == e.reason()), "no case for {}", e.reason());
    }
}

#[test]
fn docs_login_md_quotes_both_tokens() {
    let spec = std::fs::read_to_string(repo_file("docs/LOGIN.md")).unwrap();
    let file = load();
    for v in file["tokens"].as_array().unwrap() {
        for field in ["token", "signed_hex", "signature_hex"] {
            assert!(spec.contains(s(v, field)), "docs/LOGIN.md does not quote {} of {}", field, v["name"]);
        }
    }
    for v in file["checks"].as_array().unwrap() {
        assert!(spec.contains(&format!("`{}`", s(v, "name"))), "docs/LOGIN.md does not list check {}", v["name"]);
    }
}
