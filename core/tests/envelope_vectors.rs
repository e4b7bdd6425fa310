//! Test vectors: docs/vectors/envelope-v1.json and docs/ENVELOPE.md.
//!
//! `generate()` builds the vectors from fixed keys; `vectors_file_is_current`
//! checks the committed file equals it (regenerate with
//! `MQSEAL_WRITE_VECTORS=1 cargo test -p mqseal-core --test envelope_vectors`).
//! The other tests read ONLY the JSON file and check the implementation
//! against it, and check that the spec quotes every vector byte string.

mod envelope_common;

use std::path::PathBuf;

use envelope_common::*;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::{GroupKey, SignAlg, SigningKey, VerifyingKey};
use serde_json::{json, Value};

const DEFAULT_MAX_LEN: usize = 65536;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn seal_base(signer: &SigningKey, aead: AeadAlg, group_key: &GroupKey) -> Vec<u8> {
    envelope::seal(&SealInput {
        signer,
        sender: SENDER,
        group: GROUP,
        epoch: EPOCH,
        seq: SEQ,
        timestamp_ms: TIMESTAMP_MS,
        topic: TOPIC,
        aead,
        group_key,
        plaintext: PLAINTEXT.as_bytes(),
    })
    .unwrap()
}

fn positive(name: &str, signer: &SigningKey, key_field: (&str, &str), aead: AeadAlg, env: &[u8], reproducible: bool, note: &str) -> Value {
    let parsed = envelope::parse(env, DEFAULT_MAX_LEN).unwrap();
    let h = parsed.header;
    let gk = group_key();
    json!({
        "name": name,
        "note": note,
        "reproducible": reproducible,
        "sign_alg": signer.alg().identity_name(),
        "sign_cose_alg": h.sign_cose_alg,
        key_field.0: key_field.1,
        "sign_public": hex(&signer.verifying_key().to_raw()),
        "group_key": GROUP_KEY,
        "sender": SENDER,
        "group": GROUP,
        "epoch": EPOCH,
        "seq": SEQ,
        "timestamp_ms": TIMESTAMP_MS,
        "topic": TOPIC,
        "topic_hex": hex(TOPIC.as_bytes()),
        "aead": aead.name(),
        "aead_cose_alg": aead.cose_alg(),
        "plaintext": hex(PLAINTEXT.as_bytes()),
        "hkdf_salt": hex(envelope::HKDF_SALT),
        "hkdf_info": hex(&envelope::hkdf_info(GROUP, EPOCH, SENDER, aead)),
        "content_key": hex(envelope::derive_content_key(&gk, GROUP, EPOCH, SENDER, aead).as_bytes()),
        "nonce": hex(&envelope::nonce(SEQ)),
        "encrypt0_protected": hex(parsed.encrypt0_protected()),
        "enc_structure": hex(&envelope::enc_structure(parsed.encrypt0_protected(), TOPIC.as_bytes())),
        "ciphertext": hex(parsed.ciphertext()),
        "encrypt0": hex(parsed.payload()),
        "sign1_protected": hex(parsed.sign1_protected()),
        "sig_structure": hex(&envelope::sig_structure(parsed.sign1_protected(), TOPIC.as_bytes(), parsed.payload())),
        "signature": hex(parsed.signature()),
        "envelope": hex(env),
    })
}

struct Neg {
    name: &'static str,
    description: &'static str,
    envelope: Vec<u8>,
    topic: &'static str,
    max_len: usize,
    verify_key: VerifyingKey,
    group_key: &'static str,
    stage: &'static str,
    reason: &'static str,
    /// For vectors with several defects: each defect with the token it alone
    /// would give; `reason` is the one the order of checks (docs/ENVELOPE.md §6.2) reports.
    defects: Vec<&'static str>,
}

impl Neg {
    fn with_defects(self, defects: &[&'static str]) -> Neg {
        Neg { defects: defects.to_vec(), ..self }
    }
}

fn negatives() -> Vec<Neg> {
    let ed = ed_key();
    let gk = group_key();
    let base = seal_base(&ed, AeadAlg::A256Gcm, &gk);
    let b = || Builder::new(-19, AeadAlg::A256Gcm);
    let built = |f: &dyn Fn(&mut Builder)| {
        let mut builder = b();
        f(&mut builder);
        builder.build(&ed, &gk)
    };
    let with_entries = |f: EditEntries| {
        built(&|bl: &mut Builder| {
            let mut entries = sign1_entries(-19, SENDER);
            f(&mut entries);
            bl.sign1_protected = V::M(entries);
        })
    };
    let neg = |name, description, envelope: Vec<u8>, stage, reason| Neg {
        name,
        description,
        envelope,
        topic: TOPIC,
        max_len: DEFAULT_MAX_LEN,
        verify_key: ed.verifying_key(),
        group_key: GROUP_KEY,
        stage,
        reason,
        defects: vec![],
    };
    assert_eq!(b().build(&ed, &gk), base, "the test builder reproduces seal()");

    let mut v = vec![
        Neg { max_len: base.len() - 1, ..neg("too-large", "the base envelope with max_len one byte smaller than it", base.clone(), "parse", "too-large") },
        neg("truncated", "the base envelope without its last byte", base[..base.len() - 1].to_vec(), "parse", "malformed-cbor"),
        neg(
            "non-shortest-integer",
            "epoch 3 encoded as 0x18 0x03 instead of 0x03 (re-signed)",
            with_entries(&|e| e[4].1 = V::Raw(vec![0x18, 0x03])),
            "parse",
            "non-deterministic-cbor",
        ),
        neg(
            "unsorted-map-keys",
            "the seq (-65539) entry before the epoch (-65538) entry (re-signed)",
            with_entries(&|e| e.swap(4, 5)),
            "parse",
            "non-deterministic-cbor",
        ),
        neg(
            "indefinite-length-array",
            "the outer array encoded as 0x9f ... 0xff",
            built(&|bl| bl.indefinite_outer_array = true),
            "parse",
            "indefinite-length",
        ),
        neg("trailing-byte", "the base envelope followed by 0x00", [&base[..], &[0x00]].concat(), "parse", "trailing-bytes"),
        neg(
            "trailing-byte-in-protected",
            "the Sign1 protected header bstr holds the map followed by 0x00 (re-signed)",
            built(&|bl| bl.sign1_protected = V::Raw([V::M(sign1_entries(-19, SENDER)).enc(), vec![0x00]].concat())),
            "parse",
            "trailing-bytes",
        ),
        neg("untagged", "the base envelope without tag 18 (0xd2)", base[1..].to_vec(), "parse", "not-sign1"),
        neg(
            "wrong-tag",
            "tag 98 (COSE_Sign) instead of 18",
            built(&|bl| bl.outer_prefix = Some(vec![0xd8, 0x62])),
            "parse",
            "not-sign1",
        ),
        neg(
            "tagged-encrypt0",
            "the inner COSE_Encrypt0 carries tag 16 (re-signed)",
            built(&|bl| {
                let inner = V::A(vec![
                    bstr_of(&bl.encrypt0_protected),
                    V::M(vec![]),
                    V::B(bl.ciphertext(&group_key())),
                ]);
                bl.encrypt0_override = Some(V::Tag(16, Box::new(inner)));
            }),
            "parse",
            "not-encrypt0",
        ),
        neg(
            "sign1-unprotected-kid",
            "the Sign1 unprotected header is {4: h'31313131'}",
            built(&|bl| bl.sign1_unprotected = V::M(vec![(V::N(4), V::B(b"1111".to_vec()))])),
            "parse",
            "unprotected-not-empty",
        ),
        neg(
            "encrypt0-unprotected-iv",
            "the Encrypt0 unprotected header is {5: 12 zero bytes} (re-signed)",
            built(&|bl| bl.encrypt0_unprotected = V::M(vec![(V::N(5), V::B(vec![0; 12]))])),
            "parse",
            "unprotected-not-empty",
        ),
        neg(
            "sign-alg-es384",
            "Sign1 alg -35 (ES384), signed with the Ed25519 key",
            with_entries(&|e| e[0].1 = V::N(-35)),
            "parse",
            "unsupported-alg",
        ),
        neg(
            "aead-alg-a128gcm",
            "Encrypt0 alg 1 (A128GCM) (re-signed; ciphertext unchanged)",
            built(&|bl| bl.encrypt0_protected = V::M(vec![(V::N(1), V::N(1))])),
            "parse",
            "unsupported-alg",
        ),
        neg(
            "unknown-critical-header",
            "crit also lists -65541, and -65541: 0 is present (re-signed)",
            with_entries(&|e| {
                e[1].1 = V::A(vec![V::N(-65537), V::N(-65538), V::N(-65539), V::N(-65540), V::N(-65541)]);
                e.push((V::N(-65541), V::U(0)));
            }),
            "parse",
            "unknown-critical-header",
        )
        .with_defects(&[
            "crit lists -65541, a label this implementation does not understand (unknown-critical-header)",
            "crit is not exactly [-65537, -65538, -65539, -65540] (bad-header)",
            "the map holds label -65541, not defined for COSE_Sign1 (unknown-header)",
        ]),
        neg(
            "unknown-header",
            "an extra header -65541: 0 not listed in crit (re-signed)",
            with_entries(&|e| e.push((V::N(-65541), V::U(0)))),
            "parse",
            "unknown-header",
        ),
        neg(
            "duplicate-header",
            "the epoch entry twice (map of 8) (re-signed)",
            with_entries(&|e| e.insert(5, (V::N(-65538), V::U(EPOCH)))),
            "parse",
            "duplicate-header",
        ),
        neg(
            "missing-timestamp",
            "no -65540 timestamp entry (map of 6) (re-signed)",
            with_entries(&|e| {
                e.pop();
            }),
            "parse",
            "missing-header",
        ),
        neg(
            "seq-zero",
            "sequence number 0 (re-signed)",
            with_entries(&|e| e[5].1 = V::U(0)),
            "parse",
            "bad-header",
        ),
        neg(
            "kid-as-text",
            "kid as a text string instead of a byte string (re-signed)",
            with_entries(&|e| e[2].1 = V::T(SENDER.into())),
            "parse",
            "bad-header",
        ),
        neg(
            "float-epoch",
            "epoch 3 as the half-precision float 3.0, f9 4200 (re-signed)",
            with_entries(&|e| e[4].1 = V::Raw(vec![0xf9, 0x42, 0x00])),
            "parse",
            "unexpected-float",
        ),
        neg(
            "null-timestamp",
            "the timestamp is null, f6 (re-signed)",
            with_entries(&|e| e[6].1 = V::Raw(vec![0xf6])),
            "parse",
            "unexpected-simple-value",
        ),
        neg(
            "tagged-epoch",
            "epoch 3 as the bignum 2(h'03'), c2 4103 (re-signed)",
            with_entries(&|e| e[4].1 = V::Raw(vec![0xc2, 0x41, 0x03])),
            "parse",
            "unexpected-tag",
        ),
        neg(
            "invalid-utf8-group",
            "the group text string holds 73 65 6e ff 6f 72 73, not UTF-8 (re-signed)",
            with_entries(&|e| e[3].1 = V::Raw(vec![0x67, 0x73, 0x65, 0x6e, 0xff, 0x6f, 0x72, 0x73])),
            "parse",
            "invalid-utf8",
        )
        .with_defects(&["the group is not UTF-8 (invalid-utf8)", "the group is not a valid group id (bad-header)"]),
        // Several defects: the order of checks decides (docs/ENVELOPE.md §6.2).
        Neg {
            max_len: 100,
            ..neg("order-size-first", "the base envelope without its last byte", base[..base.len() - 1].to_vec(), "parse", "too-large")
                .with_defects(&["longer than max_len (too-large)", "truncated (malformed-cbor)"])
        },
        neg(
            "order-outer-before-headers",
            "seq 0 (re-signed), then a byte 0x00 after the envelope",
            [&with_entries(&|e| e[5].1 = V::U(0))[..], &[0x00]].concat(),
            "parse",
            "trailing-bytes",
        )
        .with_defects(&["a byte after the envelope (trailing-bytes)", "seq 0 (bad-header)"]),
        neg(
            "order-reader-before-position",
            "the Sign1 unprotected header is the float 0.0, f9 0000, instead of a map",
            built(&|bl| bl.sign1_unprotected = V::Raw(vec![0xf9, 0x00, 0x00])),
            "parse",
            "unexpected-float",
        )
        .with_defects(&["a float (unexpected-float)", "the unprotected header is not a map (not-sign1)"]),
        neg(
            "order-sign1-header-before-encrypt0",
            "seq 0 and Encrypt0 alg 1 (A128GCM) (re-signed)",
            built(&|bl| {
                let mut entries = sign1_entries(-19, SENDER);
                entries[5].1 = V::U(0);
                bl.sign1_protected = V::M(entries);
                bl.encrypt0_protected = V::M(vec![(V::N(1), V::N(1))]);
            }),
            "parse",
            "bad-header",
        )
        .with_defects(&["seq 0 (bad-header)", "Encrypt0 alg 1 (unsupported-alg)"]),
        neg(
            "order-encrypt0-structure-before-its-header",
            "the Encrypt0 unprotected header is {5: 12 zero bytes} and its alg is 1 (A128GCM) (re-signed)",
            built(&|bl| {
                bl.encrypt0_unprotected = V::M(vec![(V::N(5), V::B(vec![0; 12]))]);
                bl.encrypt0_protected = V::M(vec![(V::N(1), V::N(1))]);
            }),
            "parse",
            "unprotected-not-empty",
        )
        .with_defects(&["Encrypt0 unprotected header not empty (unprotected-not-empty)", "Encrypt0 alg 1 (unsupported-alg)"]),
        neg(
            "order-entries-in-map-order",
            "an extra header 3: 0 (between crit and kid) and seq 0 (re-signed)",
            with_entries(&|e| {
                e[5].1 = V::U(0);
                e.insert(2, (V::N(3), V::U(0)));
            }),
            "parse",
            "unknown-header",
        )
        .with_defects(&["label 3 is not defined for COSE_Sign1 (unknown-header)", "seq 0 (bad-header)"]),
        neg(
            "order-unsorted-before-unknown",
            "an extra header 3: 0 placed after kid (4) (re-signed)",
            with_entries(&|e| e.insert(3, (V::N(3), V::U(0)))),
            "parse",
            "non-deterministic-cbor",
        )
        .with_defects(&["keys out of order (non-deterministic-cbor)", "label 3 is not defined for COSE_Sign1 (unknown-header)"]),
        neg(
            "order-duplicate-before-unsorted",
            "the epoch entry again after seq (map of 8) (re-signed)",
            with_entries(&|e| e.insert(6, (V::N(-65538), V::U(EPOCH)))),
            "parse",
            "duplicate-header",
        )
        .with_defects(&["epoch twice (duplicate-header)", "keys out of order (non-deterministic-cbor)"]),
        neg(
            "order-type-before-content",
            "kid as a text string holding 31 31 ff 31, not UTF-8 (re-signed)",
            with_entries(&|e| e[2].1 = V::Raw(vec![0x64, 0x31, 0x31, 0xff, 0x31])),
            "parse",
            "bad-header",
        )
        .with_defects(&["kid is not a byte string (bad-header)", "a text string that is not UTF-8 (invalid-utf8)"]),
        neg(
            "order-parse-before-verify",
            "seq 0, not re-signed: the signature does not verify either",
            {
                let mut env = with_entries(&|e| e[5].1 = V::U(0));
                let last = env.len() - 1;
                env[last] ^= 0x01;
                env
            },
            "parse",
            "bad-header",
        )
        .with_defects(&["seq 0 (bad-header)", "the signature does not verify (bad-signature)"]),
    ];
    let mut flipped = base.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    v.push(neg("flipped-signature-bit", "the base envelope with the last signature bit flipped", flipped, "verify", "bad-signature"));
    v.push(Neg {
        topic: "fleet/sensors/1111/humidity",
        ..neg("other-topic", "the base envelope received on fleet/sensors/1111/humidity", base.clone(), "verify", "bad-signature")
    });
    let impostor = seal_base(&ed_key_other(), AeadAlg::A256Gcm, &gk);
    v.push(neg(
        "impersonation",
        "sealed by another Ed25519 key (RFC 8032 TEST 2) claiming sender 1111; verified with 1111's key",
        impostor,
        "verify",
        "bad-signature",
    ));
    v.push(
        neg(
            "key-alg-mismatch",
            "the ESP256 vector envelope verified with 1111's Ed25519 key",
            seal_base(&p256_key(), AeadAlg::A256Gcm, &gk),
            "verify",
            "key-alg-mismatch",
        )
        .with_defects(&["alg ESP256 but an Ed25519 key (key-alg-mismatch)", "the signature is not the key's (bad-signature)"]),
    );
    v.push(Neg {
        group_key: GROUP_KEY_OTHER,
        ..neg("wrong-epoch-key", "the base envelope decrypted with another epoch's group key", base.clone(), "decrypt", "decrypt-failed")
    });
    v.push(neg(
        "tampered-ciphertext",
        "first ciphertext bit flipped, then validly re-signed by the sender",
        built(&|bl| bl.tamper_ciphertext = Some(|ct| ct[0] ^= 0x80)),
        "decrypt",
        "decrypt-failed",
    ));
    v
}

fn generate() -> Value {
    let ed = ed_key();
    let p = p256_key();
    let gk = group_key();
    let mut pos = vec![
        positive(
            "ed25519-a256gcm",
            &ed,
            ("sign_seed", ED_SEED),
            AeadAlg::A256Gcm,
            &seal_base(&ed, AeadAlg::A256Gcm, &gk),
            true,
            "the base envelope; sealing MUST reproduce it",
        ),
        positive(
            "ed25519-chacha20poly1305",
            &ed,
            ("sign_seed", ED_SEED),
            AeadAlg::ChaCha20Poly1305,
            &seal_base(&ed, AeadAlg::ChaCha20Poly1305, &gk),
            true,
            "sealing MUST reproduce it",
        ),
        positive(
            "esp256-a256gcm",
            &p,
            ("sign_p256_scalar", P256_SCALAR),
            AeadAlg::A256Gcm,
            &seal_base(&p, AeadAlg::A256Gcm, &gk),
            false,
            "ECDSA signatures may be randomized: verify and decrypt this one; everything but the signature is reproducible",
        ),
    ];
    pos.push(positive(
        "ed25519-legacy-alg-eddsa",
        &ed,
        ("sign_seed", ED_SEED),
        AeadAlg::A256Gcm,
        &Builder::new(-8, AeadAlg::A256Gcm).build(&ed, &gk),
        false,
        "alg -8 (EdDSA): accepted on verify as Ed25519, never produced by seal",
    ));
    pos.push(positive(
        "esp256-legacy-alg-es256",
        &p,
        ("sign_p256_scalar", P256_SCALAR),
        AeadAlg::A256Gcm,
        &Builder::new(-7, AeadAlg::A256Gcm).build(&p, &gk),
        false,
        "alg -7 (ES256): accepted on verify as ESP256, never produced by seal",
    ));
    let neg: Vec<Value> = negatives()
        .into_iter()
        .map(|n| {
            let mut v = json!({
                "name": n.name,
                "description": n.description,
                "envelope": hex(&n.envelope),
                "topic": n.topic,
                "max_len": n.max_len,
                "sign_alg": n.verify_key.alg().identity_name(),
                "sign_public": hex(&n.verify_key.to_raw()),
                "group_key": n.group_key,
                "stage": n.stage,
                "reason": n.reason,
            });
            if !n.defects.is_empty() {
                v["defects"] = json!(n.defects);
            }
            v
        })
        .collect();
    json!({
        "format": "mqseal-envelope-vectors-v1",
        "spec": "docs/ENVELOPE.md",
        "note": "All byte strings are lowercase hex. Negative vectors: parse with max_len, then verify with sign_public on topic, then decrypt with group_key; the first failing stage must be `stage` with reason `reason`. A vector with `defects` has several; the order of checks of docs/ENVELOPE.md §6.2 makes `reason` the one reported.",
        "positive": pos,
        "negative": neg,
    })
}

fn load() -> Value {
    let path = repo_file("docs/vectors/envelope-v1.json");
    if std::env::var_os("MQSEAL_WRITE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&generate()).unwrap();
        text.push('\n');
        // Several tests load at once: write a temp file and rename so no reader sees half a file.
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

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("missing uint {k} in {}", v["name"]))
}

#[test]
fn vectors_file_is_current() {
    assert_eq!(load(), generate(), "docs/vectors/envelope-v1.json is stale; regenerate with MQSEAL_WRITE_VECTORS=1");
}

#[test]
fn positive_vectors_seal_and_open() {
    envelope_common::for_each_p256_backend(positive_vectors_seal_and_open_on_one_backend);
}

fn positive_vectors_seal_and_open_on_one_backend() {
    let file = load();
    let positives = file["positive"].as_array().unwrap();
    assert!(positives.len() >= 3);
    for v in positives {
        let name = s(v, "name");
        let signer = match s(v, "sign_alg") {
            "Ed25519" => SigningKey::ed25519_from_seed(&arr32(s(v, "sign_seed"))),
            "ESP256" => SigningKey::p256_from_scalar(&arr32(s(v, "sign_p256_scalar"))).unwrap(),
            other => panic!("{other}"),
        };
        let alg = SignAlg::from_identity_name(s(v, "sign_alg")).unwrap();
        let public = VerifyingKey::from_raw(alg, &unhex(s(v, "sign_public"))).unwrap();
        assert_eq!(signer.verifying_key(), public, "{name}");
        let gk = GroupKey::from_bytes(arr32(s(v, "group_key")));
        let aead = AeadAlg::from_cose(v["aead_cose_alg"].as_i64().unwrap()).unwrap();
        assert_eq!(aead.name(), s(v, "aead"));
        let (sender, group, topic) = (s(v, "sender"), s(v, "group"), s(v, "topic"));
        let (epoch, seq, ts) = (u(v, "epoch"), u(v, "seq"), u(v, "timestamp_ms"));
        let plaintext = unhex(s(v, "plaintext"));
        let env = unhex(s(v, "envelope"));

        assert_eq!(hex(envelope::HKDF_SALT), s(v, "hkdf_salt"));
        assert_eq!(hex(&envelope::hkdf_info(group, epoch, sender, aead)), s(v, "hkdf_info"), "{name}");
        assert_eq!(hex(envelope::derive_content_key(&gk, group, epoch, sender, aead).as_bytes()), s(v, "content_key"), "{name}");
        assert_eq!(hex(&envelope::nonce(seq)), s(v, "nonce"));
        assert_eq!(hex(topic.as_bytes()), s(v, "topic_hex"));

        let parsed = envelope::parse(&env, env.len()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = parsed.header;
        assert_eq!((h.sign_alg, h.sign_cose_alg), (alg, v["sign_cose_alg"].as_i64().unwrap()), "{name}");
        assert_eq!((h.sender, h.group, h.epoch, h.seq, h.timestamp_ms, h.aead), (sender, group, epoch, seq, ts, aead));
        assert_eq!(hex(parsed.sign1_protected()), s(v, "sign1_protected"));
        assert_eq!(hex(parsed.encrypt0_protected()), s(v, "encrypt0_protected"));
        assert_eq!(hex(parsed.payload()), s(v, "encrypt0"));
        assert_eq!(hex(parsed.ciphertext()), s(v, "ciphertext"));
        assert_eq!(hex(parsed.signature()), s(v, "signature"));
        assert_eq!(hex(&envelope::sig_structure(parsed.sign1_protected(), topic.as_bytes(), parsed.payload())), s(v, "sig_structure"));
        assert_eq!(hex(&envelope::enc_structure(parsed.encrypt0_protected(), topic.as_bytes())), s(v, "enc_structure"));
        parsed.verify_signature(topic, &public).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.decrypt(topic, &gk).unwrap(), plaintext, "{name}");
        assert_eq!(parsed.open(topic, &public, &gk).unwrap(), plaintext);

        let sealed = envelope::seal(&SealInput {
            signer: &signer,
            sender,
            group,
            epoch,
            seq,
            timestamp_ms: ts,
            topic,
            aead,
            group_key: &gk,
            plaintext: &plaintext,
        })
        .unwrap();
        if v["reproducible"].as_bool().unwrap() {
            assert_eq!(hex(&sealed), s(v, "envelope"), "{name}: seal must reproduce the vector");
        } else if h.sign_cose_alg == alg.cose_alg() {
            // Everything except the signature is reproducible.
            let ours = envelope::parse(&sealed, sealed.len()).unwrap();
            assert_eq!(ours.sign1_protected(), parsed.sign1_protected());
            assert_eq!(ours.payload(), parsed.payload());
        }
    }
}

#[test]
fn negative_vectors_fail_with_their_reason() {
    envelope_common::for_each_p256_backend(negative_vectors_fail_with_their_reason_on_one_backend);
}

fn negative_vectors_fail_with_their_reason_on_one_backend() {
    let file = load();
    let negatives = file["negative"].as_array().unwrap();
    for v in negatives {
        let name = s(v, "name");
        let env = unhex(s(v, "envelope"));
        let topic = s(v, "topic");
        let alg = SignAlg::from_identity_name(s(v, "sign_alg")).unwrap();
        let key = VerifyingKey::from_raw(alg, &unhex(s(v, "sign_public"))).unwrap();
        let gk = GroupKey::from_bytes(arr32(s(v, "group_key")));
        let (stage, err) = match envelope::parse(&env, u(v, "max_len") as usize) {
            Err(e) => ("parse", e),
            Ok(p) => match p.verify_signature(topic, &key) {
                Err(e) => ("verify", e),
                Ok(()) => match p.decrypt(topic, &gk) {
                    Err(e) => ("decrypt", e),
                    Ok(_) => panic!("{name}: opened successfully"),
                },
            },
        };
        assert_eq!((stage, err.reason()), (s(v, "stage"), s(v, "reason")), "{name}: {err}");
    }
    // Every reason a received envelope can fail with has a vector.
    for reason in envelope::EnvelopeError::ALL_REASONS {
        if reason != "bad-seal-input" {
            assert!(negatives.iter().any(|v| v["reason"] == reason), "no negative vector for {reason}");
        }
    }
}

fn collect_hex(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() >= 8 && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            out.push(s.clone())
        }
        Value::Array(a) => a.iter().for_each(|x| collect_hex(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_hex(x, out)),
        _ => {}
    }
}

#[test]
fn the_spec_quotes_every_vector_and_reason() {
    let spec = std::fs::read_to_string(repo_file("docs/ENVELOPE.md")).unwrap();
    let mut hexes = Vec::new();
    collect_hex(&load(), &mut hexes);
    assert!(hexes.len() > 50);
    let missing: Vec<&String> = hexes.iter().filter(|h| !spec.contains(h.as_str())).collect();
    assert!(missing.is_empty(), "docs/ENVELOPE.md lacks {} vector strings, first: {:?}", missing.len(), missing.first());
    for reason in envelope::EnvelopeError::ALL_REASONS {
        assert!(spec.contains(&format!("`{reason}`")), "docs/ENVELOPE.md does not define reason {reason}");
    }
}
