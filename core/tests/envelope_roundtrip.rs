//! Envelope behaviour: round trips, key separation, topic binding, sender
//! binding, COSE conformance (checked with the independent `coset` crate) and
//! strict-decoding corner cases.

mod envelope_common;

use envelope_common::*;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::{GroupKey, SignAlg, SigningKey};

fn seal_with(signer: &SigningKey, sender: &str, epoch: u64, aead: AeadAlg, gk: &GroupKey, topic: &str, plaintext: &[u8]) -> Vec<u8> {
    envelope::seal(&SealInput {
        signer,
        sender,
        group: GROUP,
        epoch,
        seq: SEQ,
        timestamp_ms: TIMESTAMP_MS,
        topic,
        aead,
        group_key: gk,
        plaintext,
    })
    .unwrap()
}

fn reason(r: Result<impl Sized, envelope::EnvelopeError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

#[test]
fn round_trip_for_every_algorithm_pair_and_size() {
    envelope_common::for_each_p256_backend(round_trip_for_every_algorithm_pair_and_size_on_one_backend);
}

fn round_trip_for_every_algorithm_pair_and_size_on_one_backend() {
    let gk = GroupKey::generate();
    for sign in [SignAlg::Ed25519, SignAlg::P256] {
        let signer = SigningKey::generate(sign);
        for aead in [AeadAlg::A256Gcm, AeadAlg::ChaCha20Poly1305] {
            // sizes crossing every CBOR length encoding (1, 2, 3, 5 byte heads)
            for size in [0usize, 1, 23, 24, 255, 256, 65535, 65536, 100_000] {
                let plaintext: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
                let env = seal_with(&signer, SENDER, EPOCH, aead, &gk, TOPIC, &plaintext);
                let parsed = envelope::parse(&env, env.len()).unwrap();
                assert_eq!(parsed.header.sign_alg, sign);
                assert_eq!(parsed.header.sign_cose_alg, sign.cose_alg());
                assert_eq!(parsed.header.aead, aead);
                assert_eq!((parsed.header.sender, parsed.header.group), (SENDER, GROUP));
                assert_eq!((parsed.header.epoch, parsed.header.seq, parsed.header.timestamp_ms), (EPOCH, SEQ, TIMESTAMP_MS));
                assert_eq!(parsed.ciphertext().len(), size + 16);
                assert_eq!(parsed.open(TOPIC, &signer.verifying_key(), &gk).unwrap(), plaintext, "{sign} {aead:?} {size}");
            }
        }
    }
}

#[test]
fn the_size_limit_is_checked_first_and_inclusive() {
    let env = seal_with(&ed_key(), SENDER, EPOCH, AeadAlg::A256Gcm, &group_key(), TOPIC, b"x");
    assert!(envelope::parse(&env, env.len()).is_ok());
    assert_eq!(reason(envelope::parse(&env, env.len() - 1)), "too-large");
    assert_eq!(reason(envelope::parse(&[0xff; 100], 10)), "too-large");
}

#[test]
fn another_group_key_or_epoch_cannot_decrypt() {
    let ed = ed_key();
    let gk = group_key();
    let env = seal_with(&ed, SENDER, EPOCH, AeadAlg::A256Gcm, &gk, TOPIC, b"secret");
    let parsed = envelope::parse(&env, 4096).unwrap();
    parsed.verify_signature(TOPIC, &ed.verifying_key()).unwrap();
    assert_eq!(reason(parsed.decrypt(TOPIC, &group_key_other())), "decrypt-failed");
    assert_eq!(reason(parsed.decrypt(TOPIC, &GroupKey::generate())), "decrypt-failed");
    // Content keys are separated by every input: same group key, any other
    // group, epoch, sender or AEAD gives another key.
    let base = envelope::derive_content_key(&gk, GROUP, EPOCH, SENDER, AeadAlg::A256Gcm);
    let others = [
        envelope::derive_content_key(&gk, "sensors2", EPOCH, SENDER, AeadAlg::A256Gcm),
        envelope::derive_content_key(&gk, GROUP, EPOCH + 1, SENDER, AeadAlg::A256Gcm),
        envelope::derive_content_key(&gk, GROUP, EPOCH, "1112", AeadAlg::A256Gcm),
        envelope::derive_content_key(&gk, GROUP, EPOCH, SENDER, AeadAlg::ChaCha20Poly1305),
        envelope::derive_content_key(&group_key_other(), GROUP, EPOCH, SENDER, AeadAlg::A256Gcm),
    ];
    for other in &others {
        assert_ne!(other.as_bytes(), base.as_bytes());
    }
    // An envelope claiming epoch 4 under epoch 3's key: a receiver holding the
    // real epoch-4 key cannot decrypt it.
    let env4 = seal_with(&ed, SENDER, EPOCH + 1, AeadAlg::A256Gcm, &gk, TOPIC, b"secret");
    let parsed4 = envelope::parse(&env4, 4096).unwrap();
    assert_eq!(reason(parsed4.decrypt(TOPIC, &group_key_other())), "decrypt-failed");
}

#[test]
fn the_topic_is_bound_by_both_layers() {
    envelope_common::for_each_p256_backend(the_topic_is_bound_by_both_layers_on_one_backend);
}

fn the_topic_is_bound_by_both_layers_on_one_backend() {
    let ed = ed_key();
    let gk = group_key();
    let env = seal_with(&ed, SENDER, EPOCH, AeadAlg::ChaCha20Poly1305, &gk, TOPIC, b"secret");
    let parsed = envelope::parse(&env, 4096).unwrap();
    for other in ["fleet/sensors/1111/temp/", "fleet/sensors/1111/Temp", "", "fleet/sensors/2222/temp"] {
        assert_eq!(reason(parsed.verify_signature(other, &ed.verifying_key())), "bad-signature", "{other:?}");
        assert_eq!(reason(parsed.decrypt(other, &gk)), "decrypt-failed", "{other:?}");
    }
}

#[test]
fn a_sender_cannot_be_impersonated() {
    envelope_common::for_each_p256_backend(a_sender_cannot_be_impersonated_on_one_backend);
}

fn a_sender_cannot_be_impersonated_on_one_backend() {
    let gk = group_key();
    let real = ed_key();
    let impostor = ed_key_other();
    // The impostor seals in 1111's name with its own key: fails under 1111's key.
    let forged = seal_with(&impostor, SENDER, EPOCH, AeadAlg::A256Gcm, &gk, TOPIC, b"open the valve");
    let parsed = envelope::parse(&forged, 4096).unwrap();
    assert_eq!(parsed.header.sender, SENDER);
    assert_eq!(reason(parsed.verify_signature(TOPIC, &real.verifying_key())), "bad-signature");
    // Relabelling a genuine envelope of another sender (same-length id, no re-signing).
    let genuine = seal_with(&impostor, "2222", EPOCH, AeadAlg::A256Gcm, &gk, TOPIC, b"hello");
    let at = genuine.windows(4).position(|w| w == b"2222").unwrap();
    let mut relabelled = genuine.clone();
    relabelled[at..at + 4].copy_from_slice(b"1111");
    let parsed = envelope::parse(&relabelled, 4096).unwrap();
    assert_eq!(parsed.header.sender, "1111");
    assert_eq!(reason(parsed.verify_signature(TOPIC, &real.verifying_key())), "bad-signature");
    assert_eq!(reason(parsed.verify_signature(TOPIC, &impostor.verifying_key())), "bad-signature");
    // And the content key is per sender, so it would not decrypt either.
    assert_eq!(reason(parsed.decrypt(TOPIC, &gk)), "decrypt-failed");
    // A P-256 key presented for an Ed25519 envelope is refused before any math.
    let parsed = envelope::parse(&genuine, 4096).unwrap();
    assert_eq!(reason(parsed.verify_signature(TOPIC, &p256_key().verifying_key())), "key-alg-mismatch");
}

#[test]
fn seal_refuses_bad_input() {
    let ed = ed_key();
    let gk = group_key();
    let input = |sender: &'static str, group: &'static str, seq: u64| SealInput {
        signer: &ed,
        sender,
        group,
        epoch: 1,
        seq,
        timestamp_ms: 0,
        topic: TOPIC,
        aead: AeadAlg::A256Gcm,
        group_key: &gk,
        plaintext: b"",
    };
    assert_eq!(reason(envelope::seal(&input("a/b", GROUP, 1))), "bad-seal-input");
    assert_eq!(reason(envelope::seal(&input(SENDER, "g+", 1))), "bad-seal-input");
    assert_eq!(reason(envelope::seal(&input(SENDER, GROUP, 0))), "bad-seal-input");
    assert!(envelope::seal(&input(SENDER, GROUP, u64::MAX)).is_ok());
}

/// Conformance with an independent COSE implementation (coset 0.3).
///
/// coset refuses our real envelopes, which is the intended fail-closed
/// behaviour of `crit` (it only accepts registered labels there) and also
/// because it predates RFC 9864's algs -19/-9. So the structural check uses a
/// variant without crit and with the legacy algs -8/-7: coset must compute the
/// same Sig_structure / Enc_structure bytes as ours, verify our signature and
/// decrypt our ciphertext through its own COSE plumbing.
#[test]
fn coset_agrees_on_structure_and_to_be_signed_bytes() {
    use coset::{CborSerializable, CoseEncrypt0, CoseSign1, TaggedCborSerializable};
    let sealed = seal_with(&ed_key(), SENDER, EPOCH, AeadAlg::A256Gcm, &group_key(), TOPIC, PLAINTEXT.as_bytes());
    assert!(CoseSign1::from_tagged_slice(&sealed).is_err(), "a generic COSE library must refuse our critical headers");
    for (signer, legacy_alg) in [(ed_key(), -8), (p256_key(), -7)] {
        for aead in [AeadAlg::A256Gcm, AeadAlg::ChaCha20Poly1305] {
            let mut builder = Builder::new(legacy_alg, aead);
            let mut entries = sign1_entries(legacy_alg, SENDER);
            entries.remove(1); // crit
            builder.sign1_protected = V::M(entries);
            let protected = builder.sign1_protected.enc();
            let env = builder.build(&signer, &group_key());
            let payload = builder.encrypt0(&group_key());

            let sign1 = CoseSign1::from_tagged_slice(&env).unwrap();
            let expected_alg = if legacy_alg == -8 { coset::iana::Algorithm::EdDSA } else { coset::iana::Algorithm::ES256 };
            assert_eq!(sign1.protected.header.alg, Some(coset::Algorithm::Assigned(expected_alg)));
            assert_eq!(sign1.protected.header.key_id, SENDER.as_bytes());
            assert_eq!(sign1.protected.header.rest.len(), 4, "four private-use labels");
            assert!(sign1.unprotected.is_empty());
            assert_eq!(sign1.tbs_data(TOPIC.as_bytes()), envelope::sig_structure(&protected, TOPIC.as_bytes(), &payload));
            let key = signer.verifying_key();
            sign1.verify_signature(TOPIC.as_bytes(), |sig, data| key.verify(data, sig)).unwrap();
            assert!(sign1.verify_signature(b"other/topic", |sig, data| key.verify(data, sig)).is_err());
            // coset re-encodes it byte for byte: our encoding is what a COSE encoder produces.
            assert_eq!(sign1.clone().to_tagged_vec().unwrap(), env);

            let enc = CoseEncrypt0::from_slice(sign1.payload.as_deref().unwrap()).unwrap();
            assert!(enc.unprotected.is_empty());
            let expected = match aead {
                AeadAlg::A256Gcm => coset::iana::Algorithm::A256GCM,
                AeadAlg::ChaCha20Poly1305 => coset::iana::Algorithm::ChaCha20Poly1305,
            };
            assert_eq!(enc.protected.header.alg, Some(coset::Algorithm::Assigned(expected)));
            assert_eq!(
                coset::enc_structure_data(coset::EncryptionContext::CoseEncrypt0, enc.protected.clone(), TOPIC.as_bytes()),
                envelope::enc_structure(&enc.protected.original_data.clone().unwrap(), TOPIC.as_bytes())
            );
            let content_key = envelope::derive_content_key(&group_key(), GROUP, EPOCH, SENDER, aead);
            let plaintext = enc
                .decrypt(TOPIC.as_bytes(), |ct, aad| {
                    use aes_gcm::aead::{Aead, KeyInit, Payload};
                    let nonce = envelope::nonce(SEQ);
                    let p = Payload { msg: ct, aad };
                    match aead {
                        AeadAlg::A256Gcm => aes_gcm::Aes256Gcm::new(content_key.as_bytes().into()).decrypt(&nonce.into(), p),
                        AeadAlg::ChaCha20Poly1305 => {
                            chacha20poly1305::ChaCha20Poly1305::new(content_key.as_bytes().into()).decrypt(&nonce.into(), p)
                        }
                    }
                })
                .unwrap();
            assert_eq!(plaintext, PLAINTEXT.as_bytes());
        }
    }
}

/// Corner cases of the strict decoder beyond the vectors.
#[test]
fn strict_decoding_corner_cases() {
    envelope_common::for_each_p256_backend(strict_decoding_corner_cases_on_one_backend);
}

fn strict_decoding_corner_cases_on_one_backend() {
    let ed = ed_key();
    let gk = group_key();
    let with_entries = |f: EditEntries| {
        let mut b = Builder::new(-19, AeadAlg::A256Gcm);
        let mut e = sign1_entries(-19, SENDER);
        f(&mut e);
        b.sign1_protected = V::M(e);
        b.build(&ed, &gk)
    };
    let enc_header = |v: V| {
        let mut b = Builder::new(-19, AeadAlg::A256Gcm);
        b.encrypt0_protected = v;
        b.build(&ed, &gk)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("text label", with_entries(&|e| e.push((V::T("x".into()), V::U(0)))), "unknown-header"),
        ("huge negative label", with_entries(&|e| e.push((V::Raw(vec![0x3b, 0xff, 0, 0, 0, 0, 0, 0, 0]), V::U(0)))), "unknown-header"),
        ("crit with text label", with_entries(&|e| e[1].1 = V::A(vec![V::T("x".into())])), "unknown-critical-header"),
        ("crit missing one", with_entries(&|e| e[1].1 = V::A(vec![V::N(-65537), V::N(-65538), V::N(-65539)])), "bad-header"),
        (
            "crit out of order",
            with_entries(&|e| e[1].1 = V::A(vec![V::N(-65538), V::N(-65537), V::N(-65539), V::N(-65540)])),
            "bad-header",
        ),
        ("crit empty", with_entries(&|e| e[1].1 = V::A(vec![])), "bad-header"),
        ("crit lists alg", with_entries(&|e| e[1].1 = V::A(vec![V::N(1)])), "bad-header"),
        ("no crit", with_entries(&|e| { e.remove(1); }), "missing-header"),
        ("no kid", with_entries(&|e| { e.remove(2); }), "missing-header"),
        ("no alg", with_entries(&|e| { e.remove(0); }), "missing-header"),
        ("alg as text", with_entries(&|e| e[0].1 = V::T("EdDSA".into())), "unsupported-alg"),
        ("alg as bytes", with_entries(&|e| e[0].1 = V::B(vec![1])), "bad-header"),
        ("kid not an id", with_entries(&|e| e[2].1 = V::B(b"a/b".to_vec())), "bad-header"),
        ("kid not utf-8", with_entries(&|e| e[2].1 = V::B(vec![0xff, 0xfe])), "bad-header"),
        ("group with wildcard", with_entries(&|e| e[3].1 = V::T("#".into())), "bad-header"),
        ("negative epoch", with_entries(&|e| e[4].1 = V::N(-1)), "bad-header"),
        ("timestamp as text", with_entries(&|e| e[6].1 = V::T("now".into())), "bad-header"),
        ("duplicate label, not adjacent", with_entries(&|e| e.push((V::N(1), V::N(-19)))), "duplicate-header"),
        ("protected is an array", {
            let mut b = Builder::new(-19, AeadAlg::A256Gcm);
            b.sign1_protected = V::A(vec![]);
            b.build(&ed, &gk)
        }, "bad-header"),
        ("protected is empty", {
            let mut b = Builder::new(-19, AeadAlg::A256Gcm);
            b.sign1_protected = V::Raw(vec![]);
            b.build(&ed, &gk)
        }, "missing-header"),
        ("encrypt0 header empty map", enc_header(V::M(vec![])), "missing-header"),
        ("encrypt0 alg twice", enc_header(V::M(vec![(V::N(1), V::N(3)), (V::N(1), V::N(3))])), "duplicate-header"),
        ("encrypt0 extra label", enc_header(V::M(vec![(V::N(1), V::N(3)), (V::N(5), V::B(vec![0; 12]))])), "unknown-header"),
        ("encrypt0 alg non-shortest", enc_header(V::M(vec![(V::N(1), V::Raw(vec![0x18, 0x03]))])), "non-deterministic-cbor"),
        ("label not utf-8", with_entries(&|e| e.push((V::Raw(vec![0x61, 0xff]), V::U(0)))), "invalid-utf8"),
        ("alg text not utf-8", with_entries(&|e| e[0].1 = V::Raw(vec![0x62, 0xc3, 0x28])), "invalid-utf8"),
        ("crit text not utf-8", with_entries(&|e| e[1].1 = V::A(vec![V::Raw(vec![0x61, 0x80])])), "invalid-utf8"),
        ("kid bytes not utf-8 stay bad-header", with_entries(&|e| e[2].1 = V::B(vec![0xc3, 0x28])), "bad-header"),
        ("group is true", with_entries(&|e| e[3].1 = V::Raw(vec![0xf5])), "unexpected-simple-value"),
        ("seq is a double", with_entries(&|e| e[5].1 = V::Raw(vec![0xfb, 0x40, 0x45, 0, 0, 0, 0, 0, 0])), "unexpected-float"),
        ("timestamp is tagged (epoch time)", with_entries(&|e| e[6].1 = V::Tag(1, Box::new(V::U(TIMESTAMP_MS)))), "unexpected-tag"),
        ("label is tagged", with_entries(&|e| e.push((V::Tag(1, Box::new(V::N(5))), V::U(0)))), "unexpected-tag"),
        ("encrypt0 alg is null", enc_header(V::M(vec![(V::N(1), V::Raw(vec![0xf6]))])), "unexpected-simple-value"),
        ("encrypt0 ciphertext tagged", {
            let mut b = Builder::new(-19, AeadAlg::A256Gcm);
            b.encrypt0_override = Some(V::A(vec![V::B(vec![0xa1, 0x01, 0x03]), V::M(vec![]), V::Tag(2, Box::new(V::B(vec![0; 16])))]));
            b.build(&ed, &gk)
        }, "unexpected-tag"),
        ("encrypt0 as 4-array", {
            let mut b = Builder::new(-19, AeadAlg::A256Gcm);
            b.encrypt0_override = Some(V::A(vec![V::B(vec![0xa1, 0x01, 0x03]), V::M(vec![]), V::B(vec![0; 16]), V::B(vec![])]));
            b.build(&ed, &gk)
        }, "not-encrypt0"),
    ];
    for (name, env, want) in cases {
        let got = reason(envelope::parse(&env, 4096));
        assert_eq!(got, want, "{name}");
    }
    // Hostile lengths and counts fail fast, without allocation or panics.
    let hostile: [(&[u8], &str); 10] = [
        (&[0xd2, 0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "malformed-cbor"),
        (&[0xd2, 0x84, 0x41, 0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa0, 0x40, 0x40], "malformed-cbor"),
        (&[0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40], "missing-header"),
        // Tag 18 twice: the only tag allowed is the first item's.
        (&[0xd2, 0xd2, 0x84], "unexpected-tag"),
        // Major type 7 is refused wherever it stands, the first item included.
        (&[0xf6], "unexpected-simple-value"),
        (&[0xfb, 0, 0], "unexpected-float"),
        (&[0xd2, 0xf5], "unexpected-simple-value"),
        (&[0xd2, 0x84, 0xc0], "unexpected-tag"),
        (&[], "malformed-cbor"),
        (&[0xd2, 0x85], "not-sign1"),
    ];
    for (bytes, want) in hostile {
        assert_eq!(reason(envelope::parse(bytes, 4096)), want, "{bytes:x?}");
    }
}
