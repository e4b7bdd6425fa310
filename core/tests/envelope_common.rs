//! Shared fixtures for the envelope tests: fixed keys and an independent,
//! deliberately permissive envelope builder that can produce malformed
//! envelopes (non-shortest integers, wrong order, extra headers...), signed
//! properly so that each one carries exactly one defect.
//!
//! Included by the other `envelope_*` test files with `mod envelope_common;`.
#![allow(dead_code)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use mqseal_core::formats::envelope::{self, AeadAlg};
use mqseal_core::formats::keys::{GroupKey, SigningKey};

/// RFC 8032 §7.1 TEST 1 secret key.
pub const ED_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// RFC 8032 §7.1 TEST 2 secret key (an impostor).
pub const ED_SEED_OTHER: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
/// RFC 6979 §A.2.5 P-256 private key.
pub const P256_SCALAR: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
pub const GROUP_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The group key of another epoch.
pub const GROUP_KEY_OTHER: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
pub const SENDER: &str = "1111";
pub const GROUP: &str = "sensors";
pub const EPOCH: u64 = 3;
pub const SEQ: u64 = 42;
pub const TIMESTAMP_MS: u64 = 1_700_000_000_000;
pub const TOPIC: &str = "fleet/sensors/1111/temp";
pub const PLAINTEXT: &str = "{\"temp\":21.5}";

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

pub fn hex(b: &[u8]) -> String {
    mqseal_core::formats::keys::hex(b)
}

pub fn arr32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

pub fn ed_key() -> SigningKey {
    SigningKey::ed25519_from_seed(&arr32(ED_SEED))
}

pub fn ed_key_other() -> SigningKey {
    SigningKey::ed25519_from_seed(&arr32(ED_SEED_OTHER))
}

pub fn p256_key() -> SigningKey {
    SigningKey::p256_from_scalar(&arr32(P256_SCALAR)).expect("valid scalar")
}

pub fn group_key() -> GroupKey {
    GroupKey::from_bytes(arr32(GROUP_KEY))
}

pub fn group_key_other() -> GroupKey {
    GroupKey::from_bytes(arr32(GROUP_KEY_OTHER))
}

// ---------------------------------------------------------------------------
// A permissive CBOR writer, independent of the crate's.

/// A CBOR item; `Raw` is inserted verbatim (for malformed encodings).
#[derive(Clone, Debug)]
pub enum V {
    U(u64),
    N(i64),
    B(Vec<u8>),
    T(String),
    A(Vec<V>),
    M(Vec<(V, V)>),
    Tag(u64, Box<V>),
    Raw(Vec<u8>),
}

fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend([m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((arg as u16).to_be_bytes())
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((arg as u32).to_be_bytes())
        }
        _ => {
            out.push(m | 27);
            out.extend(arg.to_be_bytes())
        }
    }
}

impl V {
    pub fn enc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            V::U(u) => head(out, 0, *u),
            V::N(n) if *n >= 0 => head(out, 0, *n as u64),
            V::N(n) => head(out, 1, (-1 - *n) as u64),
            V::B(b) => {
                head(out, 2, b.len() as u64);
                out.extend(b)
            }
            V::T(t) => {
                head(out, 3, t.len() as u64);
                out.extend(t.as_bytes())
            }
            V::A(items) => {
                head(out, 4, items.len() as u64);
                items.iter().for_each(|i| i.write(out))
            }
            V::M(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.write(out);
                    v.write(out);
                }
            }
            V::Tag(t, inner) => {
                head(out, 6, *t);
                inner.write(out)
            }
            V::Raw(r) => out.extend(r),
        }
    }
}

/// Edits a list of header entries (for building defective headers).
pub type EditEntries<'a> = &'a dyn Fn(&mut Vec<(V, V)>);

pub fn bstr_of(v: &V) -> V {
    V::B(v.enc())
}

/// The Sign1 protected header entries in the order the spec requires.
pub fn sign1_entries(cose_alg: i64, sender: &str) -> Vec<(V, V)> {
    vec![
        (V::N(1), V::N(cose_alg)),
        (V::N(2), V::A(vec![V::N(-65537), V::N(-65538), V::N(-65539), V::N(-65540)])),
        (V::N(4), V::B(sender.as_bytes().to_vec())),
        (V::N(-65537), V::T(GROUP.into())),
        (V::N(-65538), V::U(EPOCH)),
        (V::N(-65539), V::U(SEQ)),
        (V::N(-65540), V::U(TIMESTAMP_MS)),
    ]
}

/// Every part of an envelope, each replaceable. `build` encrypts and signs.
#[derive(Clone)]
pub struct Builder {
    pub sign1_protected: V,
    pub sign1_unprotected: V,
    pub encrypt0_protected: V,
    pub encrypt0_unprotected: V,
    /// Replaces the whole inner COSE_Encrypt0 (then nothing is encrypted).
    pub encrypt0_override: Option<V>,
    /// Applied to the ciphertext after encryption (before signing).
    pub tamper_ciphertext: Option<fn(&mut Vec<u8>)>,
    pub aead: AeadAlg,
    pub sender: String,
    pub topic: String,
    pub plaintext: Vec<u8>,
    /// `None` = tagged with 18.
    pub outer_prefix: Option<Vec<u8>>,
    pub indefinite_outer_array: bool,
}

impl Builder {
    pub fn new(cose_alg: i64, aead: AeadAlg) -> Builder {
        Builder {
            sign1_protected: V::M(sign1_entries(cose_alg, SENDER)),
            sign1_unprotected: V::M(vec![]),
            encrypt0_protected: V::M(vec![(V::N(1), V::N(aead.cose_alg()))]),
            encrypt0_unprotected: V::M(vec![]),
            encrypt0_override: None,
            tamper_ciphertext: None,
            aead,
            sender: SENDER.into(),
            topic: TOPIC.into(),
            plaintext: PLAINTEXT.as_bytes().to_vec(),
            outer_prefix: None,
            indefinite_outer_array: false,
        }
    }

    pub fn ciphertext(&self, group_key: &GroupKey) -> Vec<u8> {
        let key = envelope::derive_content_key(group_key, GROUP, EPOCH, &self.sender, self.aead);
        let aad = envelope::enc_structure(&self.encrypt0_protected.enc(), self.topic.as_bytes());
        let nonce = envelope::nonce(SEQ);
        let payload = Payload { msg: &self.plaintext, aad: &aad };
        match self.aead {
            AeadAlg::A256Gcm => aes_gcm::Aes256Gcm::new(key.as_bytes().into()).encrypt(&nonce.into(), payload).unwrap(),
            AeadAlg::ChaCha20Poly1305 => {
                chacha20poly1305::ChaCha20Poly1305::new(key.as_bytes().into()).encrypt(&nonce.into(), payload).unwrap()
            }
        }
    }

    pub fn encrypt0(&self, group_key: &GroupKey) -> Vec<u8> {
        if let Some(v) = &self.encrypt0_override {
            return v.enc();
        }
        let mut ct = self.ciphertext(group_key);
        if let Some(t) = self.tamper_ciphertext {
            t(&mut ct);
        }
        V::A(vec![bstr_of(&self.encrypt0_protected), self.encrypt0_unprotected.clone(), V::B(ct)]).enc()
    }

    pub fn build(&self, signer: &SigningKey, group_key: &GroupKey) -> Vec<u8> {
        let protected = self.sign1_protected.enc();
        let payload = self.encrypt0(group_key);
        let sig = signer.sign(&envelope::sig_structure(&protected, self.topic.as_bytes(), &payload));
        let items = vec![V::B(protected), self.sign1_unprotected.clone(), V::B(payload), V::B(sig.to_vec())];
        let mut out = self.outer_prefix.clone().unwrap_or_else(|| vec![0xd2]);
        if self.indefinite_outer_array {
            out.push(0x9f);
            items.iter().for_each(|i| out.extend(i.enc()));
            out.push(0xff);
        } else {
            out.extend(V::A(items).enc());
        }
        out
    }
}

/// A small deterministic PRNG (xorshift64*) for reproducible mutation tests.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs `check` once with each P-256 verification backend forced on this thread
/// (docs/ENVELOPE.md §3.2.3), so the vectors and strict rules are proven for
/// every backend the run-time choice may pick, not only the one this CPU gets.
pub fn for_each_p256_backend(check: impl Fn()) {
    use mqseal_core::formats::verify_backend::{with_p256_backend, P256Backend};
    for backend in P256Backend::ALL {
        eprintln!("P-256 verification backend: {backend:?}");
        with_p256_backend(backend, &check);
    }
}
