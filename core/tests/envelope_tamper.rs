//! Tampering: every single-bit change of a sealed envelope is rejected, and
//! seeded random mutations never panic and always fail with a known reason.

mod envelope_common;

use envelope_common::*;
use mqseal_core::formats::envelope::{self, AeadAlg, EnvelopeError, SealInput};
use mqseal_core::formats::keys::{GroupKey, SigningKey, VerifyingKey};

fn small_envelope(signer: &SigningKey, aead: AeadAlg, plaintext: &[u8]) -> Vec<u8> {
    envelope::seal(&SealInput {
        signer,
        sender: SENDER,
        group: GROUP,
        epoch: EPOCH,
        seq: SEQ,
        timestamp_ms: TIMESTAMP_MS,
        topic: TOPIC,
        aead,
        group_key: &group_key(),
        plaintext,
    })
    .unwrap()
}

/// parse → verify → decrypt; the plaintext if everything passed.
fn open(bytes: &[u8], key: &VerifyingKey, gk: &GroupKey) -> Result<Vec<u8>, EnvelopeError> {
    envelope::parse(bytes, 4096)?.open(TOPIC, key, gk)
}

#[test]
fn every_single_bit_flip_is_rejected_by_parse_and_verify() {
    envelope_common::for_each_p256_backend(every_single_bit_flip_is_rejected_by_parse_and_verify_on_one_backend);
}

fn every_single_bit_flip_is_rejected_by_parse_and_verify_on_one_backend() {
    for signer in [ed_key(), p256_key()] {
        for aead in [AeadAlg::A256Gcm, AeadAlg::ChaCha20Poly1305] {
            let env = small_envelope(&signer, aead, b"hi");
            let key = signer.verifying_key();
            envelope::parse(&env, 4096).unwrap().verify_signature(TOPIC, &key).unwrap();
            let mut reasons = std::collections::BTreeMap::new();
            for bit in 0..env.len() * 8 {
                let mut m = env.clone();
                m[bit / 8] ^= 1 << (bit % 8);
                // Without decrypting: the broker's check (parse + verify) alone must catch it.
                let result = envelope::parse(&m, 4096).and_then(|p| p.verify_signature(TOPIC, &key));
                let err = result.expect_err(&format!("bit {bit} flipped was accepted ({} {aead:?})", signer.alg()));
                *reasons.entry(err.reason()).or_insert(0) += 1;
            }
            // Most flips land in signed bytes or the signature itself.
            assert!(reasons["bad-signature"] > env.len() * 4, "{reasons:?}");
        }
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(7) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
            3 if !m.is_empty() => {
                let i = rng.below(m.len());
                m.remove(i);
            }
            4 => m.truncate(rng.below(m.len() + 1)),
            5 if !m.is_empty() => {
                // interesting CBOR initial bytes: indefinite, breaks, big lengths, tags
                const SPECIAL: [u8; 12] = [0x1b, 0x3b, 0x5b, 0x5f, 0x7f, 0x9f, 0xbf, 0xff, 0xd0, 0xd2, 0xa0, 0x80];
                let i = rng.below(m.len());
                m[i] = SPECIAL[rng.below(SPECIAL.len())];
            }
            _ if m.len() > 2 => {
                // duplicate a slice (repeats map entries, items)
                let a = rng.below(m.len());
                let b = (a + 1 + rng.below(8)).min(m.len());
                let chunk = m[a..b].to_vec();
                let at = rng.below(m.len());
                m.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    m
}

#[test]
fn seeded_random_mutations_never_panic_and_fail_with_known_reasons() {
    envelope_common::for_each_p256_backend(seeded_random_mutations_never_panic_and_fail_with_known_reasons_on_one_backend);
}

fn seeded_random_mutations_never_panic_and_fail_with_known_reasons_on_one_backend() {
    let gk = group_key();
    let inputs: Vec<(Vec<u8>, VerifyingKey)> = vec![
        (small_envelope(&ed_key(), AeadAlg::A256Gcm, b"{\"temp\":21.5}"), ed_key().verifying_key()),
        (small_envelope(&p256_key(), AeadAlg::ChaCha20Poly1305, b""), p256_key().verifying_key()),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut counts = std::collections::BTreeMap::new();
    for round in 0..20_000 {
        let (base, key) = &inputs[round % inputs.len()];
        let m = mutate(&mut rng, base);
        match open(&m, key, &gk) {
            Ok(_) => assert_eq!(&m, base, "a mutated envelope opened (round {round})"),
            Err(e) => {
                assert!(EnvelopeError::ALL_REASONS.contains(&e.reason()));
                assert!(!e.to_string().is_empty());
                *counts.entry(e.reason()).or_insert(0u32) += 1;
            }
        }
    }
    // The mutations reach deep into the decoder, not just the first byte.
    for r in ["bad-signature", "malformed-cbor", "non-deterministic-cbor", "trailing-bytes"] {
        assert!(counts.get(r).copied().unwrap_or(0) > 10, "{r}: {counts:?}");
    }
}

#[test]
fn random_bytes_and_every_prefix_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len > 2 && rng.below(2) == 0 {
            bytes[0] = 0xd2;
            bytes[1] = 0x84;
        }
        let _ = envelope::parse(&bytes, 4096).map(|p| p.verify_signature(TOPIC, &ed_key().verifying_key()));
    }
    let env = small_envelope(&ed_key(), AeadAlg::A256Gcm, b"x");
    for end in 0..env.len() {
        assert!(envelope::parse(&env[..end], 4096).is_err());
    }
}
