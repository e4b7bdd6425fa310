//! The strict signature rules of docs/ENVELOPE.md §3.2.1 and §3.2.2, one test
//! per rule, through the real code (`keys::VerifyingKey::from_raw` and
//! `verify`, which envelopes, login tokens and signed documents all use).
//! Where a looser verifier would accept the input, the test shows that too,
//! so each rule is seen to matter.

mod envelope_common;

use envelope_common::{arr32, ed_key, p256_key, unhex, ED_SEED};
use mqseal_core::formats::keys::{SignAlg, VerifyingKey};
use sha2::{Digest, Sha512};

const MSG: &[u8] = b"mqseal strict verification";

// ---------------------------------------------------------------------------
// Little-endian big-number helpers (u32 limbs), enough for arithmetic mod L.

fn to_limbs(le: &[u8]) -> Vec<u32> {
    le.chunks(4).map(|c| c.iter().rev().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))).collect()
}

fn to_bytes(limbs: &[u32], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    out.resize(len, 0);
    out
}

fn mul(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = vec![0u64; a.len() + b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        let mut carry = 0u64;
        for (j, y) in b.iter().enumerate() {
            let t = out[i + j] + u64::from(*x) * u64::from(*y) + carry;
            out[i + j] = t & 0xffff_ffff;
            carry = t >> 32;
        }
        out[i + b.len()] += carry;
    }
    out.into_iter().map(|v| v as u32).collect()
}

fn bit(x: &[u32], i: usize) -> bool {
    x.get(i / 32).is_some_and(|l| (l >> (i % 32)) & 1 == 1)
}

fn geq(a: &[u32], b: &[u32]) -> bool {
    for i in (0..a.len().max(b.len())).rev() {
        let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
        if x != y {
            return x > y;
        }
    }
    true
}

fn sub(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0i64;
    for (i, limb) in a.iter_mut().enumerate() {
        let t = i64::from(*limb) - i64::from(b.get(i).copied().unwrap_or(0)) - borrow;
        borrow = i64::from(t < 0);
        *limb = (t + (borrow << 32)) as u32;
    }
}

/// x mod m by shift-and-subtract.
fn modulo(x: &[u32], m: &[u32]) -> Vec<u32> {
    let mut r = vec![0u32; m.len() + 1];
    for i in (0..x.len() * 32).rev() {
        // r = 2r + bit
        let mut carry = u32::from(bit(x, i));
        for limb in r.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if geq(&r, m) {
            sub(&mut r, m);
        }
    }
    r
}

/// The Ed25519 group order L, little-endian.
fn l_le() -> Vec<u8> {
    unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
}

/// The field prime p = 2^255 − 19, little-endian.
fn p_le() -> [u8; 32] {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
}

// ---------------------------------------------------------------------------
// Ed25519

#[test]
fn ed25519_public_keys_must_be_canonical_points_of_large_order() {
    // Small order: the identity (y = 1) and the point of order 2 (y = −1).
    let identity = unhex("0100000000000000000000000000000000000000000000000000000000000000");
    let order2 = unhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    for raw in [&identity, &order2] {
        let e = VerifyingKey::from_raw(SignAlg::Ed25519, raw).unwrap_err();
        assert!(e.to_string().contains("small-order"), "{e}");
    }
    // Not a point: some y has no x on the curve.
    let off_curve = (2u8..=255)
        .map(|y| {
            let mut raw = [0u8; 32];
            raw[0] = y;
            raw
        })
        .find(|raw| ed25519_dalek::VerifyingKey::from_bytes(raw).is_err())
        .expect("some small y is not on the curve");
    assert!(VerifyingKey::from_raw(SignAlg::Ed25519, &off_curve).unwrap_err().to_string().contains("not a curve point"));

    // Non-canonical: y + p for a small y that is on the curve with large order.
    // ed25519-dalek alone accepts this encoding; mqseal refuses it.
    let mut found = 0;
    for k in 2u8..19 {
        for sign in [0u8, 0x80] {
            let mut raw = p_le();
            raw[0] += k;
            raw[31] |= sign;
            let Ok(loose) = ed25519_dalek::VerifyingKey::from_bytes(&raw) else { continue };
            if loose.is_weak() {
                continue;
            }
            found += 1;
            let e = VerifyingKey::from_raw(SignAlg::Ed25519, &raw).unwrap_err();
            assert!(e.to_string().contains("canonical"), "{e}");
            // Its canonical encoding (y = k) is a valid key.
            let mut canonical = [0u8; 32];
            canonical[0] = k;
            canonical[31] = sign;
            VerifyingKey::from_raw(SignAlg::Ed25519, &canonical).unwrap();
        }
    }
    assert!(found > 0, "no non-canonical large-order encoding found to test");
    // A valid key.
    VerifyingKey::from_raw(SignAlg::Ed25519, &ed_key().verifying_key().to_raw()).unwrap();
}

#[test]
fn ed25519_refuses_s_at_or_above_l() {
    let key = ed_key();
    let public = key.verifying_key();
    let sig = key.sign(MSG);
    public.verify(MSG, &sig).unwrap();
    // S + L satisfies the same equation [S]B = R + [k]A.
    let s_plus_l = {
        let s = to_limbs(&sig[32..]);
        let l = to_limbs(&l_le());
        let mut sum = vec![0u32; 9];
        let mut carry = 0u64;
        for (i, slot) in sum.iter_mut().enumerate().take(8) {
            let t = u64::from(s[i]) + u64::from(l[i]) + carry;
            *slot = t as u32;
            carry = t >> 32;
        }
        to_bytes(&sum, 32)
    };
    let forged = [&sig[..32], &s_plus_l[..]].concat();
    assert!(public.verify(MSG, &forged).is_err());
}

#[test]
fn ed25519_refuses_small_order_r_even_when_the_equation_holds() {
    // R = identity and S = k·a mod L: [S]B = [k]A = R + [k]A, so the
    // cofactorless equation holds; only the small-order check refuses it.
    let seed = arr32(ED_SEED);
    let h = Sha512::digest(seed);
    let mut a = h[..32].to_vec();
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    let public_raw = ed_key().verifying_key().to_raw();
    let r = unhex("0100000000000000000000000000000000000000000000000000000000000000");
    let k = Sha512::new().chain_update(&r).chain_update(&public_raw).chain_update(MSG).finalize();
    let l = to_limbs(&l_le());
    let s = modulo(&mul(&modulo(&to_limbs(&k), &l), &to_limbs(&a)), &l);
    let sig = [&r[..], &to_bytes(&s, 32)[..]].concat();

    let loose = ed25519_dalek::VerifyingKey::from_bytes(&public_raw.clone().try_into().unwrap()).unwrap();
    let dalek_sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    assert!(
        ed25519_dalek::Verifier::verify(&loose, MSG, &dalek_sig).is_ok(),
        "the construction must satisfy the plain equation, or this test shows nothing"
    );
    assert!(loose.verify_strict(MSG, &dalek_sig).is_err());
    assert!(VerifyingKey::from_raw(SignAlg::Ed25519, &public_raw).unwrap().verify(MSG, &sig).is_err());
}

#[test]
fn ed25519_refuses_an_r_that_is_not_a_point_and_a_wrong_length() {
    let key = ed_key();
    let public = key.verifying_key();
    let sig = key.sign(MSG);
    let off_curve = (2u8..=255)
        .map(|y| {
            let mut raw = [0u8; 32];
            raw[0] = y;
            raw
        })
        .find(|raw| ed25519_dalek::VerifyingKey::from_bytes(raw).is_err())
        .unwrap();
    assert!(public.verify(MSG, &[&off_curve[..], &sig[32..]].concat()).is_err());
    assert!(public.verify(MSG, &sig[..63]).is_err());
    assert!(public.verify(MSG, &[&sig[..], &[0]].concat()).is_err());
}

// ---------------------------------------------------------------------------
// ECDSA P-256 (ESP256)

/// The P-256 group order n, big-endian.
fn n_be() -> Vec<u8> {
    unhex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
}

fn be_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

#[test]
fn esp256_signers_emit_low_s_and_verifiers_refuse_high_s() {
    envelope_common::for_each_p256_backend(esp256_signers_emit_low_s_and_verifiers_refuse_high_s_on_one_backend);
}

fn esp256_signers_emit_low_s_and_verifiers_refuse_high_s_on_one_backend() {
    let key = p256_key();
    let public = key.verifying_key();
    let sig = key.sign(MSG);
    let s = &sig[32..];
    let half_n = unhex("7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8");
    assert!(s <= &half_n[..], "signer must emit s ≤ n/2");
    public.verify(MSG, &sig).unwrap();
    // n − s is the other valid solution; the p256 crate alone accepts it.
    let high = [&sig[..32], &be_sub(&n_be(), s)[..]].concat();
    let VerifyingKey::P256(raw_key) = &public else { unreachable!() };
    let high_sig = p256::ecdsa::Signature::from_slice(&high).unwrap();
    assert!(p256::ecdsa::signature::Verifier::verify(raw_key.rustcrypto(), MSG, &high_sig).is_ok());
    assert!(public.verify(MSG, &high).is_err());
}

#[test]
fn esp256_refuses_r_or_s_zero_or_at_least_n() {
    envelope_common::for_each_p256_backend(esp256_refuses_r_or_s_zero_or_at_least_n_on_one_backend);
}

fn esp256_refuses_r_or_s_zero_or_at_least_n_on_one_backend() {
    let key = p256_key();
    let public = key.verifying_key();
    let sig = key.sign(MSG);
    let zero = [0u8; 32];
    let (r, s) = (&sig[..32], &sig[32..]);
    for bad in [
        [&zero[..], s].concat(),
        [r, &zero[..]].concat(),
        [&n_be()[..], s].concat(),
        [r, &n_be()[..]].concat(),
        [&[0xff; 32][..], s].concat(),
    ] {
        assert!(public.verify(MSG, &bad).is_err());
    }
}

#[test]
fn esp256_public_keys_must_be_uncompressed_points_on_the_curve() {
    envelope_common::for_each_p256_backend(esp256_public_keys_must_be_uncompressed_points_on_the_curve_on_one_backend);
}

fn esp256_public_keys_must_be_uncompressed_points_on_the_curve_on_one_backend() {
    let good = p256_key().verifying_key().to_raw();
    assert_eq!((good.len(), good[0]), (65, 0x04));
    VerifyingKey::from_raw(SignAlg::P256, &good).unwrap();
    // y + 1: off the curve.
    let mut off = good.clone();
    off[64] ^= 1;
    assert!(VerifyingKey::from_raw(SignAlg::P256, &off).is_err());
    // Compressed form (33 bytes) and the SEC1 identity (0x00) are refused.
    let mut compressed = vec![0x02 | (good[64] & 1)];
    compressed.extend_from_slice(&good[1..33]);
    assert!(VerifyingKey::from_raw(SignAlg::P256, &compressed).is_err());
    assert!(VerifyingKey::from_raw(SignAlg::P256, &[0x00]).is_err());
    // 65 bytes that do not start with 0x04.
    let mut hybrid = good.clone();
    hybrid[0] = 0x06 | (good[64] & 1);
    assert!(VerifyingKey::from_raw(SignAlg::P256, &hybrid).is_err());
    // x ≥ p (x + p does not fit, so use x = p itself: not a canonical field element).
    let p = unhex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    let mut x_is_p = good.clone();
    x_is_p[1..33].copy_from_slice(&p);
    assert!(VerifyingKey::from_raw(SignAlg::P256, &x_is_p).is_err());
}
