//! Key bundles: how group keys reach a device.
//!
//! A bundle is an authority-signed document (format `mqseal-bundle-v1`, see
//! [`crate::formats::signed_doc`]) for ONE device. For every group the device belongs
//! to it carries the group keys the device may hold, the current epoch's and,
//! while its grace period lasts, the previous epoch's, each wrapped to the
//! device's X25519 key as a standard COSE_Encrypt (RFC 9052 §5.1, tag 96):
//!
//! ```text
//! 96([ h'A10103',                       / protected {1: 3 (A256GCM)} /
//!      {5: iv(12 bytes)},               / unprotected /
//!      ciphertext,                      / A256GCM(CEK, iv, group key (32 bytes)) /
//!      [ [ h'A101381E',                 / recipient protected {1: -31 (ECDH-ES + A256KW)} /
//!          {-1: {1: 1, -1: 4, -2: x}},  / ephemeral key: COSE_Key OKP X25519 /
//!          wrapped_cek ] ] ])           / AES-KW(KEK, CEK), 40 bytes /
//! ```
//!
//! - ECDH-ES + A256KW (COSE alg -31, RFC 9053 §6.4): a fresh ephemeral X25519
//!   key per wrapped key; the KEK = HKDF-SHA256(salt: none, IKM: X25519 shared
//!   secret, info: COSE_KDF_Context, L = 32), where
//!   `COSE_KDF_Context = [-5, [nil, nil, nil], [nil, nil, nil], [256, h'A101381E']]`
//!   (AlgorithmID = A256KW, PartyU/PartyV nil, keyDataLength 256, protected =
//!   the recipient's serialized protected header), RFC 9053 §5.2.
//! - Content: A256GCM under a random 32-byte CEK with the Enc_structure
//!   `["Encrypt", h'A10103', external_aad]` as AAD, where external_aad binds
//!   the key to its place: CBOR `["mqseal-bundle-key-v1", device id, group id, epoch]`.
//!   A wrapped key moved to another device, group or epoch fails to decrypt.
//!
//! The body:
//! `{"device":"1111","groups":{"g1":[{"epoch":3,"key":"<b64url COSE_Encrypt>"}]},"issued_at":..,"kx":"<b64url X25519 public>","version":..}`
//! where `version` comes from the realm's export counter (shared with the
//! policy) so a device can refuse to go back to an older bundle.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use coset::cbor::value::Value;
use coset::iana::{self, EnumI64};
use coset::{
    CborSerializable, CoseEncrypt, CoseEncryptBuilder, CoseKdfContextBuilder, CoseKey, CoseKeyBuilder,
    CoseRecipientBuilder, HeaderBuilder, Label, ProtectedHeader, SuppPubInfo,
    TaggedCborSerializable,
};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::formats::ids::validate_id;
use crate::formats::keys::{GroupKey, KxPublic, KxSecret};
use crate::formats::signed_doc::{self, AuthorityPublicKey, AuthoritySigningKey, SignedDocError};

/// The `format` of signed bundle documents.
pub const BUNDLE_FORMAT: &str = "mqseal-bundle-v1";

/// First element of the external_aad array.
pub const EXTERNAL_AAD_LABEL: &str = "mqseal-bundle-key-v1";

/// Why a bundle or a wrapped key was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Document(#[from] SignedDocError),
    #[error("{origin}: bundle body: {detail}")]
    Syntax { origin: String, detail: String },
    #[error("{origin}: {field}: {problem}")]
    Invalid { origin: String, field: String, problem: String },
    #[error("{origin}: this bundle is for device {found:?}, not for {expected:?}")]
    WrongDevice { origin: String, found: String, expected: String },
    #[error(
        "{origin}: the keys are wrapped to X25519 key {bundle_kx}, but this device's key is {device_kx}: \
         the realm registered another public identity for this device"
    )]
    WrongKxKey { origin: String, bundle_kx: String, device_kx: String },
    #[error("wrapped key for group {group} epoch {epoch}: {detail}")]
    Malformed { group: String, epoch: u64, detail: String },
    #[error("wrapped key for group {group} epoch {epoch}: cannot unwrap (not wrapped to this device's key, or altered)")]
    Unwrap { group: String, epoch: u64 },
    #[error("cannot wrap a key: {0}")]
    Wrap(String),
}

impl BundleError {
    /// A stable short token.
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Document(e) => e.reason(),
            BundleError::Syntax { .. } => "bundle-syntax",
            BundleError::Invalid { .. } => "bundle-invalid",
            BundleError::WrongDevice { .. } => "bundle-wrong-device",
            BundleError::WrongKxKey { .. } => "bundle-wrong-kx-key",
            BundleError::Malformed { .. } => "bundle-key-malformed",
            BundleError::Unwrap { .. } => "bundle-key-unwrap",
            BundleError::Wrap(_) => "bundle-wrap",
        }
    }
}

/// The external_aad of a wrapped key: CBOR `[label, device, group, epoch]`.
pub fn external_aad(device: &str, group: &str, epoch: u64) -> Vec<u8> {
    let value = Value::Array(vec![
        Value::Text(EXTERNAL_AAD_LABEL.into()),
        Value::Text(device.into()),
        Value::Text(group.into()),
        Value::Integer(epoch.into()),
    ]);
    let mut out = Vec::new();
    // Writing a small in-memory value into a Vec cannot fail.
    let _ = coset::cbor::ser::into_writer(&value, &mut out);
    out
}

/// The recipient's protected header bytes: `{1: -31}`.
fn recipient_protected() -> ProtectedHeader {
    ProtectedHeader {
        original_data: None,
        header: HeaderBuilder::new().algorithm(iana::Algorithm::ECDH_ES_A256KW).build(),
    }
}

/// The serialized COSE_KDF_Context for ECDH-ES + A256KW with the given
/// serialized recipient protected header.
pub fn kdf_context(recipient_protected_bytes: &[u8]) -> Vec<u8> {
    let protected = ProtectedHeader {
        original_data: Some(recipient_protected_bytes.to_vec()),
        header: HeaderBuilder::new().algorithm(iana::Algorithm::ECDH_ES_A256KW).build(),
    };
    let context = CoseKdfContextBuilder::new()
        .algorithm(iana::Algorithm::A256KW)
        .supp_pub_info(SuppPubInfo { key_data_length: 256, protected, other: None })
        .build();
    context.to_vec().unwrap_or_default()
}

fn derive_kek(shared: &[u8; 32], recipient_protected_bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut kek = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, shared)
        .expand(&kdf_context(recipient_protected_bytes), &mut kek[..])
        .map_err(|e| e.to_string())?;
    Ok(kek)
}

/// The random values of one wrap (fresh from the OS RNG, or fixed for test vectors).
pub struct WrapRandomness {
    pub ephemeral: KxSecret,
    pub cek: Zeroizing<[u8; 32]>,
    pub iv: [u8; 12],
}

impl WrapRandomness {
    pub fn fresh() -> Self {
        let mut cek = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut cek[..]);
        let mut iv = [0u8; 12];
        OsRng.fill_bytes(&mut iv);
        WrapRandomness { ephemeral: KxSecret::generate(), cek, iv }
    }
}

/// Wraps `key` to `recipient` as a tagged COSE_Encrypt bound to (device, group, epoch).
pub fn wrap_group_key(
    key: &GroupKey,
    recipient: &KxPublic,
    device: &str,
    group: &str,
    epoch: u64,
) -> Result<Vec<u8>, BundleError> {
    wrap_group_key_with(key, recipient, device, group, epoch, WrapRandomness::fresh())
}

/// [`wrap_group_key`] with given randomness (test vectors only; never reuse randomness).
pub fn wrap_group_key_with(
    key: &GroupKey,
    recipient: &KxPublic,
    device: &str,
    group: &str,
    epoch: u64,
    random: WrapRandomness,
) -> Result<Vec<u8>, BundleError> {
    let wrap_err = |e: String| BundleError::Wrap(e);
    let shared = random.ephemeral.diffie_hellman(recipient).map_err(|e| wrap_err(e.to_string()))?;
    let protected = recipient_protected();
    let protected_bytes = protected.clone().header.to_vec().map_err(|e| wrap_err(e.to_string()))?;
    let kek = derive_kek(&shared, &protected_bytes).map_err(wrap_err)?;
    let wrapped_cek = aes_kw::KekAes256::from(*kek).wrap_vec(&random.cek[..]).map_err(|e| wrap_err(e.to_string()))?;

    let ephemeral_public = random.ephemeral.public();
    let cose_key = CoseKeyBuilder::new_okp_key()
        .param(iana::OkpKeyParameter::Crv.to_i64(), Value::from(iana::EllipticCurve::X25519.to_i64()))
        .param(iana::OkpKeyParameter::X.to_i64(), Value::Bytes(ephemeral_public.as_bytes().to_vec()))
        .build();
    let cose_key_value = coset::AsCborValue::to_cbor_value(cose_key).map_err(|e| wrap_err(e.to_string()))?;
    let recipient_unprotected = HeaderBuilder::new()
        .value(iana::HeaderAlgorithmParameter::EphemeralKey.to_i64(), cose_key_value)
        .build();
    let recipient = CoseRecipientBuilder::new()
        .protected(protected.header)
        .unprotected(recipient_unprotected)
        .ciphertext(wrapped_cek)
        .build();

    let aad = external_aad(device, group, epoch);
    let cipher = Aes256Gcm::new_from_slice(&random.cek[..]).map_err(|e| wrap_err(e.to_string()))?;
    let mut failure = None;
    let encrypt = CoseEncryptBuilder::new()
        .protected(HeaderBuilder::new().algorithm(iana::Algorithm::A256GCM).build())
        .unprotected(HeaderBuilder::new().iv(random.iv.to_vec()).build())
        .create_ciphertext(key.as_bytes(), &aad, |plaintext, enc_structure| {
            match cipher.encrypt((&random.iv).into(), Payload { msg: plaintext, aad: enc_structure }) {
                Ok(ct) => ct,
                Err(e) => {
                    failure = Some(e.to_string());
                    Vec::new()
                }
            }
        })
        .add_recipient(recipient)
        .build();
    if let Some(e) = failure {
        return Err(wrap_err(e));
    }
    encrypt.to_tagged_vec().map_err(|e| wrap_err(e.to_string()))
}

/// Unwraps a key wrapped by [`wrap_group_key`] for (device, group, epoch).
/// Checks the exact structure: A256GCM content, one ECDH-ES + A256KW
/// recipient with an X25519 ephemeral key, nothing else in the headers.
pub fn unwrap_group_key(
    bytes: &[u8],
    secret: &KxSecret,
    device: &str,
    group: &str,
    epoch: u64,
) -> Result<GroupKey, BundleError> {
    let malformed = |detail: &str| BundleError::Malformed { group: group.into(), epoch, detail: detail.into() };
    let failed = || BundleError::Unwrap { group: group.into(), epoch };
    let encrypt = CoseEncrypt::from_tagged_slice(bytes).map_err(|e| malformed(&format!("not a tagged COSE_Encrypt: {e}")))?;

    let expected_content_protected = HeaderBuilder::new().algorithm(iana::Algorithm::A256GCM).build();
    if encrypt.protected.header != expected_content_protected {
        return Err(malformed("content protected header must be exactly {1: 3 (A256GCM)}"));
    }
    let iv: [u8; 12] = encrypt.unprotected.iv.as_slice().try_into().map_err(|_| malformed("iv must be 12 bytes"))?;
    let expected_unprotected = HeaderBuilder::new().iv(iv.to_vec()).build();
    if encrypt.unprotected != expected_unprotected {
        return Err(malformed("content unprotected header must hold only the iv (5)"));
    }
    // (coset's decrypt would panic without a ciphertext.)
    if encrypt.ciphertext.is_none() {
        return Err(malformed("no ciphertext"));
    }
    let [recipient] = encrypt.recipients.as_slice() else {
        return Err(malformed("expected exactly one recipient"));
    };
    if recipient.protected.header != recipient_protected().header || !recipient.recipients.is_empty() {
        return Err(malformed("recipient protected header must be exactly {1: -31 (ECDH-ES + A256KW)}"));
    }
    let protected_bytes = match &recipient.protected.original_data {
        Some(b) => b.clone(),
        None => return Err(malformed("recipient protected header missing")),
    };
    let unprotected = &recipient.unprotected;
    let ephemeral_label = Label::Int(iana::HeaderAlgorithmParameter::EphemeralKey.to_i64());
    let only_ephemeral = unprotected.rest.len() == 1
        && unprotected.rest[0].0 == ephemeral_label
        && unprotected.alg.is_none()
        && unprotected.key_id.is_empty()
        && unprotected.iv.is_empty()
        && unprotected.partial_iv.is_empty()
        && unprotected.crit.is_empty()
        && unprotected.content_type.is_none()
        && unprotected.counter_signatures.is_empty();
    if !only_ephemeral {
        return Err(malformed("recipient unprotected header must hold only the ephemeral key (-1)"));
    }
    let key = <CoseKey as coset::AsCborValue>::from_cbor_value(unprotected.rest[0].1.clone())
        .map_err(|e| malformed(&format!("ephemeral key: {e}")))?;
    let ephemeral = okp_x25519_public(&key).ok_or_else(|| malformed("ephemeral key must be an OKP X25519 public key"))?;
    let Some(wrapped_cek) = recipient.ciphertext.as_ref() else {
        return Err(malformed("recipient has no wrapped key"));
    };

    let shared = secret.diffie_hellman(&ephemeral).map_err(|_| failed())?;
    let kek = derive_kek(&shared, &protected_bytes).map_err(|_| failed())?;
    let mut cek = Zeroizing::new([0u8; 32]);
    if wrapped_cek.len() != 40 {
        return Err(malformed("wrapped CEK must be 40 bytes"));
    }
    aes_kw::KekAes256::from(*kek).unwrap(wrapped_cek, &mut cek[..]).map_err(|_| failed())?;
    let cipher = Aes256Gcm::new_from_slice(&cek[..]).map_err(|_| failed())?;
    let aad = external_aad(device, group, epoch);
    let plaintext = Zeroizing::new(
        encrypt
            .decrypt(&aad, |ct, enc_structure| cipher.decrypt((&iv).into(), Payload { msg: ct, aad: enc_structure }))
            .map_err(|_| failed())?,
    );
    let raw: [u8; 32] = plaintext.as_slice().try_into().map_err(|_| malformed("group key must be 32 bytes"))?;
    Ok(GroupKey::from_bytes(raw))
}

fn okp_x25519_public(key: &CoseKey) -> Option<KxPublic> {
    if key.kty != coset::KeyType::Assigned(iana::KeyType::OKP)
        || !key.key_id.is_empty()
        || key.alg.is_some()
        || !key.key_ops.is_empty()
        || !key.base_iv.is_empty()
        || key.params.len() != 2
    {
        return None;
    }
    let crv = Label::Int(iana::OkpKeyParameter::Crv.to_i64());
    let x = Label::Int(iana::OkpKeyParameter::X.to_i64());
    let mut curve_ok = false;
    let mut public = None;
    for (label, value) in &key.params {
        if *label == crv {
            curve_ok = *value == Value::from(iana::EllipticCurve::X25519.to_i64());
        } else if *label == x {
            if let Value::Bytes(b) = value {
                public = KxPublic::from_slice(b).ok();
            }
        } else {
            return None;
        }
    }
    if curve_ok {
        public
    } else {
        None
    }
}

/// One wrapped key in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub epoch: u64,
    /// A tagged COSE_Encrypt (see the module docs).
    pub cose: Vec<u8>,
}

/// A device's key bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub device: String,
    /// The device's X25519 public key the keys are wrapped to.
    pub kx: KxPublic,
    /// From the realm's export counter; a device never goes back.
    pub version: u64,
    pub issued_at: u64,
    /// Group id → wrapped keys (current epoch first).
    pub groups: BTreeMap<String, Vec<WrappedKey>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleJson {
    device: String,
    kx: String,
    version: u64,
    issued_at: u64,
    groups: BTreeMap<String, Vec<WrappedKeyJson>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedKeyJson {
    epoch: u64,
    key: String,
}

impl Bundle {
    /// Signs the bundle: returns the bundle file's bytes.
    pub fn sign(&self, key: &AuthoritySigningKey) -> Result<Vec<u8>, BundleError> {
        let body = BundleJson {
            device: self.device.clone(),
            kx: URL_SAFE_NO_PAD.encode(self.kx.as_bytes()),
            version: self.version,
            issued_at: self.issued_at,
            groups: self
                .groups
                .iter()
                .map(|(g, keys)| {
                    let keys = keys.iter().map(|k| WrappedKeyJson { epoch: k.epoch, key: URL_SAFE_NO_PAD.encode(&k.cose) });
                    (g.clone(), keys.collect())
                })
                .collect(),
        };
        Ok(signed_doc::sign_document(BUNDLE_FORMAT, &body, key)?)
    }

    /// Verifies a bundle file against the trusted authority and parses it.
    pub fn from_signed(bytes: &[u8], authority: &AuthorityPublicKey, origin: &str) -> Result<Bundle, BundleError> {
        let body = signed_doc::verify_document(bytes, BUNDLE_FORMAT, authority, origin)?;
        let raw: BundleJson = serde_json::from_slice(body)
            .map_err(|e| BundleError::Syntax { origin: origin.into(), detail: e.to_string() })?;
        let invalid = |field: String, problem: String| BundleError::Invalid { origin: origin.into(), field, problem };
        validate_id("device", &raw.device).map_err(|e| invalid("device".into(), e.to_string()))?;
        let kx_raw = URL_SAFE_NO_PAD.decode(&raw.kx).map_err(|e| invalid("kx".into(), format!("not base64url: {e}")))?;
        let kx = KxPublic::from_slice(&kx_raw).map_err(|e| invalid("kx".into(), e.to_string()))?;
        let mut groups = BTreeMap::new();
        for (group, keys) in raw.groups {
            validate_id("group", &group).map_err(|e| invalid(format!("groups.{group}"), e.to_string()))?;
            let mut wrapped = Vec::with_capacity(keys.len());
            for (i, k) in keys.into_iter().enumerate() {
                let cose = URL_SAFE_NO_PAD
                    .decode(&k.key)
                    .map_err(|e| invalid(format!("groups.{group}[{i}].key"), format!("not base64url: {e}")))?;
                if wrapped.iter().any(|w: &WrappedKey| w.epoch == k.epoch) {
                    return Err(invalid(format!("groups.{group}[{i}].epoch"), format!("epoch {} appears twice", k.epoch)));
                }
                wrapped.push(WrappedKey { epoch: k.epoch, cose });
            }
            groups.insert(group, wrapped);
        }
        Ok(Bundle { device: raw.device, kx, version: raw.version, issued_at: raw.issued_at, groups })
    }

    /// Unwraps every key with the device's X25519 secret: (group, epoch) → key.
    pub fn unwrap_all(&self, secret: &KxSecret, origin: &str) -> Result<BTreeMap<(String, u64), GroupKey>, BundleError> {
        if secret.public() != self.kx {
            return Err(BundleError::WrongKxKey {
                origin: origin.into(),
                bundle_kx: self.kx.fingerprint(),
                device_kx: secret.public().fingerprint(),
            });
        }
        let mut keys = BTreeMap::new();
        for (group, wrapped) in &self.groups {
            for w in wrapped {
                let key = unwrap_group_key(&w.cose, secret, &self.device, group, w.epoch)?;
                keys.insert((group.clone(), w.epoch), key);
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_context_bytes() {
        let protected = recipient_protected().header.to_vec().unwrap();
        assert_eq!(protected, [0xa1, 0x01, 0x38, 0x1e]);
        assert_eq!(
            kdf_context(&protected),
            [0x84, 0x24, 0x83, 0xf6, 0xf6, 0xf6, 0x83, 0xf6, 0xf6, 0xf6, 0x82, 0x19, 0x01, 0x00, 0x44, 0xa1, 0x01, 0x38, 0x1e]
        );
    }

    #[test]
    fn wrap_unwrap_and_binding() {
        let device = KxSecret::generate();
        let key = GroupKey::generate();
        let cose = wrap_group_key(&key, &device.public(), "d1", "g1", 3).unwrap();
        assert_eq!(cose[0..2], [0xd8, 0x60], "tag 96");
        let back = unwrap_group_key(&cose, &device, "d1", "g1", 3).unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
        // Bound to device, group and epoch.
        for (d, g, e) in [("d2", "g1", 3), ("d1", "g2", 3), ("d1", "g1", 4)] {
            assert_eq!(unwrap_group_key(&cose, &device, d, g, e).unwrap_err().reason(), "bundle-key-unwrap");
        }
        // Another device's secret cannot unwrap it.
        let other = KxSecret::generate();
        assert_eq!(unwrap_group_key(&cose, &other, "d1", "g1", 3).unwrap_err().reason(), "bundle-key-unwrap");
        // Any flipped bit is refused (malformed or unwrap failure, never a wrong key).
        for i in 0..cose.len() {
            let mut bad = cose.clone();
            bad[i] ^= 0x01;
            match unwrap_group_key(&bad, &device, "d1", "g1", 3) {
                Err(_) => {}
                Ok(k) => panic!("bit flip at {i} accepted (key equal: {})", k.as_bytes() == key.as_bytes()),
            }
        }
    }
}
