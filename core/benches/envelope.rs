//! What the broker does with every envelope on a protected topic: parse it
//! (no cryptography, no allocation) and verify its signature, for each signature
//! algorithm a device may use: Ed25519 (COSE -19) and ECDSA P-256 (ESP256, COSE -9).
//!
//! The AEAD (AES-256-GCM or ChaCha20/Poly1305) does not matter here: the broker
//! never decrypts, and the signature covers the ciphertext bytes whatever produced
//! them, so all envelopes are sealed with the default AES-256-GCM.
//!
//! `cargo bench -p mqseal-core --bench envelope`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::{GroupKey, SignAlg, SigningKey};

const TOPIC: &str = "site/42/hall/sensor7";
const MAX_ENVELOPE: usize = 65536;

fn sealed(signer: &SigningKey, plaintext_len: usize) -> Vec<u8> {
    let plaintext = vec![0x5a_u8; plaintext_len];
    envelope::seal(&SealInput {
        signer,
        sender: "d0000042",
        group: "g000042",
        epoch: 1,
        seq: 1,
        timestamp_ms: 1_700_000_000_000,
        topic: TOPIC,
        aead: AeadAlg::A256Gcm,
        group_key: &GroupKey::from_bytes([7; 32]),
        plaintext: &plaintext,
    })
    .expect("seal")
}

fn signers() -> [(SignAlg, &'static str, SigningKey); 2] {
    [
        (SignAlg::Ed25519, "Ed25519 (-19)", SigningKey::ed25519_from_seed(&[1; 32])),
        (SignAlg::P256, "ESP256 (-9)", SigningKey::p256_from_scalar(&[3; 32]).expect("scalar in range")),
    ]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope/parse");
    let key = SigningKey::ed25519_from_seed(&[1; 32]);
    for plaintext in [128usize, 1024] {
        let bytes = sealed(&key, plaintext);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(format!("{plaintext} B plaintext ({} B envelope)", bytes.len())), &bytes, |b, bytes| {
            b.iter(|| envelope::parse(black_box(bytes), MAX_ENVELOPE).expect("parses"))
        });
    }
    group.finish();
}

/// `verify_signature` on a parsed envelope: builds the COSE Sig_structure and checks one signature.
fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope/verify");
    for (alg, name, key) in signers() {
        let public = key.verifying_key();
        assert_eq!(public.alg(), alg);
        for plaintext in [128usize, 1024] {
            let bytes = sealed(&key, plaintext);
            let parsed = envelope::parse(&bytes, MAX_ENVELOPE).expect("parses");
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new(name, format!("{plaintext} B")), |b| {
                b.iter(|| black_box(&parsed).verify_signature(TOPIC, &public).expect("verifies"))
            });
        }
    }
    group.finish();
}

/// Parse and verify together: the broker's whole per-envelope cryptographic cost.
fn parse_and_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope/parse+verify");
    for (_, name, key) in signers() {
        let public = key.verifying_key();
        let bytes = sealed(&key, 128);
        group.bench_function(BenchmarkId::new(name, "128 B"), |b| {
            b.iter(|| {
                let parsed = envelope::parse(black_box(&bytes), MAX_ENVELOPE).expect("parses");
                parsed.verify_signature(TOPIC, &public).expect("verifies")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default so that scripts/bench stays within its time budget; the
    // command line (--warm-up-time, --measurement-time) overrides.
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = parse, verify, parse_and_verify
}
criterion_main!(benches);
