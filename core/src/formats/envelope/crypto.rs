//! Content keys, nonces, the COSE Sig_structure / Enc_structure, and AEAD.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::cbor;
use super::{AeadAlg, EnvelopeError};
use crate::formats::keys::GroupKey;

/// HKDF salt: fixed, names the protocol version.
pub const HKDF_SALT: &[u8] = b"mqseal-envelope-v1";
/// First element of the HKDF info array.
pub const HKDF_INFO_LABEL: &str = "mqseal content key";

/// A per-(group, epoch, sender, AEAD) content key. Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContentKey([u8; 32]);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(<secret>)")
    }
}

impl ContentKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The HKDF info: deterministic CBOR `["mqseal content key", group, epoch, sender, aead]`.
pub fn hkdf_info(group: &str, epoch: u64, sender: &str, aead: AeadAlg) -> Vec<u8> {
    let mut info = Vec::with_capacity(40 + group.len() + sender.len());
    cbor::write_head(&mut info, cbor::ARRAY, 5);
    cbor::write_tstr(&mut info, HKDF_INFO_LABEL);
    cbor::write_tstr(&mut info, group);
    cbor::write_head(&mut info, cbor::UINT, epoch);
    cbor::write_tstr(&mut info, sender);
    cbor::write_int(&mut info, aead.cose_alg());
    info
}

/// HKDF-SHA256(salt = "mqseal-envelope-v1", IKM = group key, info) → 32 bytes.
pub fn derive_content_key(group_key: &GroupKey, group: &str, epoch: u64, sender: &str, aead: AeadAlg) -> ContentKey {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), group_key.as_bytes());
    let mut key = ContentKey([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: cannot fail.
    let _ = hk.expand(&hkdf_info(group, epoch, sender, aead), &mut key.0);
    key
}

/// Nonce = 4 zero bytes || seq as u64 big-endian.
pub fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// COSE Sig_structure for COSE_Sign1 (RFC 9052 §4.4):
/// `["Signature1", body_protected, external_aad = topic, payload]`.
pub fn sig_structure(protected: &[u8], topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + protected.len() + topic.len() + payload.len());
    cbor::write_head(&mut out, cbor::ARRAY, 4);
    cbor::write_tstr(&mut out, "Signature1");
    cbor::write_bstr(&mut out, protected);
    cbor::write_bstr(&mut out, topic);
    cbor::write_bstr(&mut out, payload);
    out
}

/// COSE Enc_structure for COSE_Encrypt0 (RFC 9052 §5.3):
/// `["Encrypt0", protected, external_aad = topic]`.
pub fn enc_structure(protected: &[u8], topic: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + protected.len() + topic.len());
    cbor::write_head(&mut out, cbor::ARRAY, 3);
    cbor::write_tstr(&mut out, "Encrypt0");
    cbor::write_bstr(&mut out, protected);
    cbor::write_bstr(&mut out, topic);
    out
}

pub(crate) fn aead_encrypt(alg: AeadAlg, key: &ContentKey, seq: u64, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let nonce = nonce(seq);
    let payload = Payload { msg: plaintext, aad };
    let result = match alg {
        AeadAlg::A256Gcm => aes_gcm::Aes256Gcm::new(key.0.as_ref().into()).encrypt(nonce.as_ref().into(), payload),
        AeadAlg::ChaCha20Poly1305 => {
            chacha20poly1305::ChaCha20Poly1305::new(key.0.as_ref().into()).encrypt(nonce.as_ref().into(), payload)
        }
    };
    result.map_err(|_| EnvelopeError::BadSealInput("plaintext too long for the AEAD"))
}

pub(crate) fn aead_decrypt(alg: AeadAlg, key: &ContentKey, seq: u64, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let nonce = nonce(seq);
    let payload = Payload { msg: ciphertext, aad };
    let result = match alg {
        AeadAlg::A256Gcm => aes_gcm::Aes256Gcm::new(key.0.as_ref().into()).decrypt(nonce.as_ref().into(), payload),
        AeadAlg::ChaCha20Poly1305 => {
            chacha20poly1305::ChaCha20Poly1305::new(key.0.as_ref().into()).decrypt(nonce.as_ref().into(), payload)
        }
    };
    result.map_err(|_| EnvelopeError::DecryptFailed)
}
