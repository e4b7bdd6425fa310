//! Which library checks an ESP256 (ECDSA P-256) signature, and the run-time
//! choice between them (docs/ENVELOPE.md §3.2.3, docs/PERFORMANCE.md).
//!
//! Two backends, the same rules: the strict checks of §3.2.2 (r and s each in
//! 1..n−1, low-S, the public key an uncompressed point on the curve) are made
//! by [`super::keys`] before any backend sees a signature, so a backend only
//! computes the ECDSA equation.
//!
//! - [`P256Backend::RustCrypto`]: the `p256` crate, pure Rust.
//! - [`P256Backend::OpenSsl`]: the system OpenSSL (libcrypto), given the signature
//!   as the DER `ECDSA-Sig-Value` it expects; about four times faster on x86_64
//!   where OpenSSL has its assembler P-256.
//!
//! The choice is made once per process by timing both on this CPU
//! ([`p256_backend`]); no build flag or option. Ed25519 has one backend,
//! ed25519-dalek's `verify_strict` (curve25519-dalek picks its AVX2 code by
//! CPU detection at run time): OpenSSL 3.0's Ed25519 was measured slower.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A library that computes the ECDSA P-256 verification equation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P256Backend {
    /// The `p256` crate (RustCrypto).
    RustCrypto,
    /// The system OpenSSL's libcrypto, through the `openssl` crate.
    OpenSsl,
}

impl P256Backend {
    /// Every backend, for tests that run the same vectors through each.
    pub const ALL: [P256Backend; 2] = [P256Backend::RustCrypto, P256Backend::OpenSsl];

    /// A name for logs and the benchmark ("OpenSSL 3.0.19 27 Jan 2026").
    pub fn name(self) -> String {
        match self {
            P256Backend::RustCrypto => "rustcrypto p256".to_owned(),
            P256Backend::OpenSsl => openssl::version::version().to_owned(),
        }
    }
}

thread_local! {
    /// A backend forced on this thread (tests); `None` uses the measured choice.
    static FORCED: Cell<Option<P256Backend>> = const { Cell::new(None) };
}

/// Runs `f` with every P-256 verification on this thread done by `backend`, so
/// a test can prove the strict rules hold for each backend. Other threads are
/// unaffected.
pub fn with_p256_backend<R>(backend: P256Backend, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<P256Backend>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|forced| forced.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|forced| forced.replace(Some(backend))));
    f()
}

/// The backend P-256 verifications use: the one forced on this thread, or the
/// faster on this CPU, timed once per process on first use (a few ms;
/// `VerifyingKey::from_raw` triggers it, so it happens at policy load, not on a
/// message). Must not be called while making the timing's own key.
pub fn p256_backend() -> P256Backend {
    if let Some(forced) = FORCED.with(Cell::get) {
        return forced;
    }
    static CHOSEN: OnceLock<P256Backend> = OnceLock::new();
    *CHOSEN.get_or_init(measure_fastest)
}

/// Times each backend on one fixed valid signature (interleaved rounds, the
/// best round each, so a burst of load elsewhere does not decide) and returns
/// the faster. A backend that does not accept the good signature and refuse it
/// for another message is never chosen.
fn measure_fastest() -> P256Backend {
    use super::keys::SigningKey;
    const ROUNDS: usize = 3;
    const PER_ROUND: u32 = 8;
    let Ok(signer) = SigningKey::p256_from_scalar(&[7; 32]) else { return P256Backend::RustCrypto };
    let msg = b"mqseal backend choice";
    let sig = signer.sign(msg);
    let key = signer.verifying_key();
    let works = |backend| key.verify_p256_with(backend, msg, &sig).is_ok() && key.verify_p256_with(backend, b"other", &sig).is_err();
    if !works(P256Backend::OpenSsl) {
        return P256Backend::RustCrypto;
    }
    if !works(P256Backend::RustCrypto) {
        return P256Backend::OpenSsl;
    }
    let mut best = [Duration::MAX; 2];
    for _ in 0..ROUNDS {
        for (slot, backend) in P256Backend::ALL.into_iter().enumerate() {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                let _ = key.verify_p256_with(backend, msg, &sig);
            }
            best[slot] = best[slot].min(start.elapsed());
        }
    }
    if best[1] < best[0] {
        P256Backend::OpenSsl
    } else {
        P256Backend::RustCrypto
    }
}

/// What verifies each algorithm in this process, for logs and the benchmark:
/// "Ed25519: ed25519-dalek verify_strict (curve25519-dalek simd avx2); ESP256: OpenSSL 3.0.19 ...".
pub fn describe() -> String {
    format!("Ed25519: ed25519-dalek verify_strict (curve25519-dalek {}); ESP256: {}", dalek_backend(), p256_backend().name())
}

/// The curve25519-dalek backend this CPU gets: its `simd` build picks AVX2 by
/// CPU detection; the AVX-512 IFMA code needs a nightly compiler in 4.x.
fn dalek_backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return "simd avx2";
        }
    }
    "serial"
}

/// The DER `ECDSA-Sig-Value` (SEQUENCE of two INTEGERs) for a 64-byte `r || s`,
/// the form OpenSSL verifies. Minimal encodings: leading zero bytes dropped, a
/// 0x00 added where the top bit is set (r and s are already checked non-zero).
pub(crate) fn ecdsa_der(sig: &[u8; 64]) -> ([u8; 72], usize) {
    fn integer(out: &mut [u8; 72], at: &mut usize, be: &[u8]) {
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        let digits = &be[first..];
        let pad = usize::from(digits[0] & 0x80 != 0);
        out[*at] = 0x02;
        out[*at + 1] = (digits.len() + pad) as u8;
        *at += 2;
        if pad == 1 {
            out[*at] = 0;
            *at += 1;
        }
        out[*at..*at + digits.len()].copy_from_slice(digits);
        *at += digits.len();
    }
    let mut out = [0u8; 72];
    let mut at = 2;
    integer(&mut out, &mut at, &sig[..32]);
    integer(&mut out, &mut at, &sig[32..]);
    out[0] = 0x30;
    out[1] = (at - 2) as u8;
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_is_minimal_and_padded_where_the_top_bit_is_set() {
        let mut sig = [0u8; 64];
        sig[31] = 1; // r = 1
        sig[32] = 0x80; // s has its top bit set
        let (der, len) = ecdsa_der(&sig);
        let mut want = vec![0x30, 3 + 35, 0x02, 1, 1, 0x02, 33, 0];
        want.push(0x80);
        want.extend_from_slice(&[0u8; 31]);
        assert_eq!(&der[..len], &want[..]);
        let parsed = openssl::ecdsa::EcdsaSig::from_der(&der[..len]).unwrap();
        assert_eq!(parsed.to_der().unwrap(), want);
    }

    #[test]
    fn forcing_a_backend_is_per_thread_and_undone() {
        let chosen = p256_backend();
        with_p256_backend(P256Backend::RustCrypto, || {
            assert_eq!(p256_backend(), P256Backend::RustCrypto);
            with_p256_backend(P256Backend::OpenSsl, || assert_eq!(p256_backend(), P256Backend::OpenSsl));
            assert_eq!(p256_backend(), P256Backend::RustCrypto);
            std::thread::spawn(move || assert_eq!(p256_backend(), chosen)).join().unwrap();
        });
        assert_eq!(p256_backend(), chosen);
        assert!(describe().contains("ESP256: "));
    }
}
