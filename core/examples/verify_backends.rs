//! Measures one signature verification per library on this machine (docs/PERFORMANCE.md,
//! "Verification backends"): `cargo run --release -p mqseal-core --example verify_backends`.
use std::time::Instant;

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey};
use openssl::sign::Verifier;

fn median_us(mut f: impl FnMut()) -> f64 {
    for _ in 0..200 {
        f();
    }
    let mut samples = Vec::new();
    for _ in 0..15 {
        let n = 400;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn main() {
    let msg = vec![0x5au8; 200];
    // P-256
    let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let vk = *sk.verifying_key();
    let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&sk, &msg);
    let sig = sig.normalize_s().unwrap_or(sig);
    let rust = median_us(|| p256::ecdsa::signature::Verifier::verify(&vk, &msg, &sig).unwrap());
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let point = EcPoint::from_bytes(&group, vk.to_encoded_point(false).as_bytes(), &mut ctx).unwrap();
    let ec = EcKey::from_public_key(&group, &point).unwrap();
    let pkey = PKey::from_ec_key(ec.clone()).unwrap();
    let raw = sig.to_bytes();
    let evp = median_us(|| {
        let s = EcdsaSig::from_private_components(BigNum::from_slice(&raw[..32]).unwrap(), BigNum::from_slice(&raw[32..]).unwrap()).unwrap();
        let der = s.to_der().unwrap();
        let mut v = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        assert!(v.verify_oneshot(&der, &msg).unwrap());
    });
    let low = median_us(|| {
        let s = EcdsaSig::from_private_components(BigNum::from_slice(&raw[..32]).unwrap(), BigNum::from_slice(&raw[32..]).unwrap()).unwrap();
        let digest = openssl::sha::sha256(&msg);
        assert!(s.verify(&digest, &ec).unwrap());
    });
    println!("ESP256 verify: p256 {rust:.1} us, OpenSSL {} EVP {evp:.1} us, OpenSSL ECDSA_do_verify {low:.1} us", openssl::version::version());
    // Ed25519
    let ek = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let evk = ek.verifying_key();
    let esig = ed25519_dalek::Signer::sign(&ek, &msg);
    let dalek = median_us(|| evk.verify_strict(&msg, &esig).unwrap());
    let opk = PKey::public_key_from_raw_bytes(evk.as_bytes(), Id::ED25519).unwrap();
    let sb = esig.to_bytes();
    let oed = median_us(|| {
        let mut v = Verifier::new_without_digest(&opk).unwrap();
        assert!(v.verify_oneshot(&sb, &msg).unwrap());
    });
    println!("Ed25519 verify: ed25519-dalek verify_strict {dalek:.1} us, OpenSSL {oed:.1} us");
    // Through mqseal (strict checks, then the backend chosen at key load).
    use mqseal_core::formats::keys::{SignAlg, SigningKey, VerifyingKey};
    let signer = SigningKey::p256_from_scalar(&[7u8; 32]).unwrap();
    let key = VerifyingKey::from_raw(SignAlg::P256, &signer.verifying_key().to_raw()).unwrap();
    let sig = signer.sign(&msg);
    let ours = median_us(|| key.verify(&msg, &sig).unwrap());
    println!("mqseal VerifyingKey::verify ESP256 {ours:.1} us; {}", mqseal_core::formats::verify_backend::describe());
}
