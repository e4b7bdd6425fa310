//! The sealed envelope (normative spec: docs/ENVELOPE.md).
//!
//! An MQTT payload on a protected topic is a tagged COSE_Sign1 whose payload is
//! an untagged COSE_Encrypt0:
//!
//! ```text
//! 18([ bstr .cbor {1: alg, 2: crit, 4: kid=sender, -65537: group, -65538: epoch,
//!                  -65539: seq, -65540: timestamp_ms},
//!      {},
//!      bstr .cbor [ bstr .cbor {1: aead}, {}, ciphertext ],
//!      signature ])
//! ```
//!
//! Both layers use the MQTT topic name as external_aad. The content key is
//! HKDF-derived per (group, epoch, sender, aead) from the group key; the nonce
//! is the sender's sequence number.
//!
//! Cost model for the broker thread: [`parse`] does no cryptography and no
//! allocation (it borrows from the input and is linear in its length);
//! [`ParsedEnvelope::verify_signature`] builds the Sig_structure (one
//! allocation of about the payload size) and checks one signature;
//! [`ParsedEnvelope::decrypt`] runs HKDF and the AEAD.

pub mod cbor;
mod crypto;
mod header;

pub use crypto::{derive_content_key, enc_structure, hkdf_info, nonce, sig_structure, ContentKey, HKDF_INFO_LABEL, HKDF_SALT};
pub use header::{
    encode_encrypt0_protected, encode_sign1_protected, sign_alg_from_cose, CRITICAL_LABELS, LABEL_ALG, LABEL_CRIT, LABEL_EPOCH,
    LABEL_GROUP, LABEL_KID, LABEL_SEQ, LABEL_TIMESTAMP,
};

use crate::formats::ids::is_valid_id;
use crate::formats::keys::{GroupKey, SignAlg, SigningKey, VerifyingKey};
use cbor::Reader;

/// CBOR tag of COSE_Sign1.
pub const COSE_SIGN1_TAG: u64 = 18;

/// AEAD algorithm of the inner COSE_Encrypt0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AeadAlg {
    /// AES-256-GCM, COSE alg 3 (the default).
    #[default]
    A256Gcm,
    /// ChaCha20/Poly1305, COSE alg 24.
    ChaCha20Poly1305,
}

impl AeadAlg {
    pub fn cose_alg(self) -> i64 {
        match self {
            AeadAlg::A256Gcm => 3,
            AeadAlg::ChaCha20Poly1305 => 24,
        }
    }

    pub fn from_cose(value: i64) -> Option<AeadAlg> {
        match value {
            3 => Some(AeadAlg::A256Gcm),
            24 => Some(AeadAlg::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The COSE name ("A256GCM", "ChaCha20/Poly1305").
    pub fn name(self) -> &'static str {
        match self {
            AeadAlg::A256Gcm => "A256GCM",
            AeadAlg::ChaCha20Poly1305 => "ChaCha20/Poly1305",
        }
    }

    /// Parses the COSE name or a CLI spelling ("a256gcm", "chacha20poly1305").
    pub fn from_name(name: &str) -> Option<AeadAlg> {
        match name.to_ascii_lowercase().as_str() {
            "a256gcm" | "aes-256-gcm" => Some(AeadAlg::A256Gcm),
            "chacha20/poly1305" | "chacha20poly1305" | "chacha20-poly1305" => Some(AeadAlg::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// Which COSE layer an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Sign1,
    Encrypt0,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::Sign1 => "COSE_Sign1",
            Layer::Encrypt0 => "COSE_Encrypt0",
        })
    }
}

/// Why an envelope was refused. [`EnvelopeError::reason`] gives a stable token
/// for logs and audit records; `Display` adds where (byte offsets are into the
/// whole envelope). No variant allocates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed CBOR at byte {at}: {what}")]
    MalformedCbor { at: usize, what: &'static str },
    #[error("non-deterministic CBOR at byte {at}: {what}")]
    NonDeterministicCbor { at: usize, what: &'static str },
    #[error("indefinite-length CBOR item at byte {at}")]
    IndefiniteLength { at: usize },
    #[error("a floating-point number at byte {at} (an envelope holds none)")]
    UnexpectedFloat { at: usize },
    #[error("a CBOR simple value (false, true, null, undefined, ...) at byte {at} (an envelope holds none)")]
    UnexpectedSimpleValue { at: usize },
    #[error("a CBOR tag at byte {at} (the envelope's own tag 18 is the only one)")]
    UnexpectedTag { at: usize },
    #[error("a text string at byte {at} is not valid UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("trailing bytes at byte {at} after the {layer}")]
    TrailingBytes { at: usize, layer: &'static str },
    #[error("not a tagged COSE_Sign1: {0}")]
    NotSign1(&'static str),
    #[error("payload is not an untagged COSE_Encrypt0: {0}")]
    NotEncrypt0(&'static str),
    #[error("{layer} unprotected header is not empty")]
    UnprotectedNotEmpty { layer: Layer },
    #[error("{layer}: unsupported algorithm {}", fmt_label(.alg))]
    UnsupportedAlg { layer: Layer, alg: Option<i64> },
    #[error("crit lists a header this implementation does not understand: {}", fmt_label(.label))]
    UnknownCriticalHeader { label: Option<i64> },
    #[error("{layer}: unknown protected header label {}", fmt_label(.label))]
    UnknownHeader { layer: Layer, label: Option<i64> },
    #[error("{layer}: protected header label {label} appears twice")]
    DuplicateHeader { layer: Layer, label: i64 },
    #[error("{layer}: protected header {name} is missing")]
    MissingHeader { layer: Layer, name: &'static str },
    #[error("bad protected header at byte {at}: {what}")]
    BadHeader { at: usize, what: &'static str },
    #[error("envelope is signed with {header} but the sender's key is {key}")]
    KeyAlgMismatch { header: SignAlg, key: SignAlg },
    #[error("signature verification failed")]
    BadSignature,
    #[error("decryption failed (wrong group key or epoch, wrong topic, or tampered ciphertext)")]
    DecryptFailed,
    #[error("cannot seal: {0}")]
    BadSealInput(&'static str),
}

fn fmt_label(label: &Option<i64>) -> String {
    match label {
        Some(l) => l.to_string(),
        None => "(text or out-of-range label)".to_owned(),
    }
}

impl EnvelopeError {
    /// A stable short token naming the reason (see docs/ENVELOPE.md §Errors).
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::TooLarge { .. } => "too-large",
            EnvelopeError::MalformedCbor { .. } => "malformed-cbor",
            EnvelopeError::NonDeterministicCbor { .. } => "non-deterministic-cbor",
            EnvelopeError::IndefiniteLength { .. } => "indefinite-length",
            EnvelopeError::UnexpectedFloat { .. } => "unexpected-float",
            EnvelopeError::UnexpectedSimpleValue { .. } => "unexpected-simple-value",
            EnvelopeError::UnexpectedTag { .. } => "unexpected-tag",
            EnvelopeError::InvalidUtf8 { .. } => "invalid-utf8",
            EnvelopeError::TrailingBytes { .. } => "trailing-bytes",
            EnvelopeError::NotSign1(_) => "not-sign1",
            EnvelopeError::NotEncrypt0(_) => "not-encrypt0",
            EnvelopeError::UnprotectedNotEmpty { .. } => "unprotected-not-empty",
            EnvelopeError::UnsupportedAlg { .. } => "unsupported-alg",
            EnvelopeError::UnknownCriticalHeader { .. } => "unknown-critical-header",
            EnvelopeError::UnknownHeader { .. } => "unknown-header",
            EnvelopeError::DuplicateHeader { .. } => "duplicate-header",
            EnvelopeError::MissingHeader { .. } => "missing-header",
            EnvelopeError::BadHeader { .. } => "bad-header",
            EnvelopeError::KeyAlgMismatch { .. } => "key-alg-mismatch",
            EnvelopeError::BadSignature => "bad-signature",
            EnvelopeError::DecryptFailed => "decrypt-failed",
            EnvelopeError::BadSealInput(_) => "bad-seal-input",
        }
    }

    /// Every reason token, for documentation and tests.
    pub const ALL_REASONS: [&'static str; 22] = [
        "too-large",
        "malformed-cbor",
        "non-deterministic-cbor",
        "indefinite-length",
        "unexpected-float",
        "unexpected-simple-value",
        "unexpected-tag",
        "invalid-utf8",
        "trailing-bytes",
        "not-sign1",
        "not-encrypt0",
        "unprotected-not-empty",
        "unsupported-alg",
        "unknown-critical-header",
        "unknown-header",
        "duplicate-header",
        "missing-header",
        "bad-header",
        "key-alg-mismatch",
        "bad-signature",
        "decrypt-failed",
        "bad-seal-input",
    ];
}

/// The authenticated-once-verified facts an envelope claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader<'a> {
    /// Signature algorithm (from the Sign1 alg header).
    pub sign_alg: SignAlg,
    /// The COSE alg value as sent (-19, -8, -9 or -7).
    pub sign_cose_alg: i64,
    /// Sender device id (kid).
    pub sender: &'a str,
    pub group: &'a str,
    pub epoch: u64,
    /// Sender sequence number, >= 1.
    pub seq: u64,
    /// Sender's clock, Unix milliseconds.
    pub timestamp_ms: u64,
    /// AEAD algorithm (from the Encrypt0 alg header).
    pub aead: AeadAlg,
}

/// A structurally valid envelope, borrowing from the input. NOTHING in it is
/// authenticated until [`ParsedEnvelope::verify_signature`] succeeds with the
/// key of `header.sender`.
#[derive(Debug, Clone, Copy)]
pub struct ParsedEnvelope<'a> {
    pub header: EnvelopeHeader<'a>,
    sign1_protected: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8],
    encrypt0_protected: &'a [u8],
    ciphertext: &'a [u8],
}

/// Reads a byte string head + content, mapping a wrong type to `wrong`.
fn read_bstr<'a>(r: &mut Reader<'a>, wrong: EnvelopeError) -> Result<(&'a [u8], usize), EnvelopeError> {
    let (major, len) = r.head()?;
    if major != cbor::BSTR {
        return Err(wrong);
    }
    let at = r.offset();
    Ok((r.content(len)?, at))
}

/// Parses an envelope without any cryptography. Refuses anything larger than
/// `max_len` bytes before looking at it.
pub fn parse(bytes: &[u8], max_len: usize) -> Result<ParsedEnvelope<'_>, EnvelopeError> {
    if bytes.len() > max_len {
        return Err(EnvelopeError::TooLarge { len: bytes.len(), max: max_len });
    }
    let mut r = Reader::new(bytes, 0);
    match r.head_or_tag()? {
        (cbor::TAG, COSE_SIGN1_TAG) => {}
        (cbor::TAG, _) => return Err(EnvelopeError::NotSign1("wrong CBOR tag (COSE_Sign1 is tag 18)")),
        _ => return Err(EnvelopeError::NotSign1("missing CBOR tag 18")),
    }
    if r.head()? != (cbor::ARRAY, 4) {
        return Err(EnvelopeError::NotSign1("not an array of 4 items"));
    }
    let (sign1_protected, sign1_protected_at) = read_bstr(&mut r, EnvelopeError::NotSign1("protected header is not a byte string"))?;
    match r.head()? {
        (cbor::MAP, 0) => {}
        (cbor::MAP, _) => return Err(EnvelopeError::UnprotectedNotEmpty { layer: Layer::Sign1 }),
        _ => return Err(EnvelopeError::NotSign1("unprotected header is not a map")),
    }
    let (payload, payload_at) = read_bstr(&mut r, EnvelopeError::NotSign1("payload is not a byte string"))?;
    let (signature, _) = read_bstr(&mut r, EnvelopeError::NotSign1("signature is not a byte string"))?;
    if !r.at_end() {
        return Err(EnvelopeError::TrailingBytes { at: r.offset(), layer: "COSE_Sign1" });
    }

    let (sign_alg, sign_cose_alg, parts) = header::parse_sign1_protected(sign1_protected, sign1_protected_at)?;

    let mut e = Reader::new(payload, payload_at);
    match e.head_or_tag()? {
        (cbor::ARRAY, 3) => {}
        (cbor::TAG, _) => return Err(EnvelopeError::NotEncrypt0("tagged (the inner COSE_Encrypt0 must be untagged)")),
        _ => return Err(EnvelopeError::NotEncrypt0("not an array of 3 items")),
    }
    let (encrypt0_protected, encrypt0_protected_at) = read_bstr(&mut e, EnvelopeError::NotEncrypt0("protected header is not a byte string"))?;
    match e.head()? {
        (cbor::MAP, 0) => {}
        (cbor::MAP, _) => return Err(EnvelopeError::UnprotectedNotEmpty { layer: Layer::Encrypt0 }),
        _ => return Err(EnvelopeError::NotEncrypt0("unprotected header is not a map")),
    }
    let (ciphertext, _) = read_bstr(&mut e, EnvelopeError::NotEncrypt0("ciphertext is not a byte string"))?;
    if !e.at_end() {
        return Err(EnvelopeError::TrailingBytes { at: e.offset(), layer: "COSE_Encrypt0" });
    }
    let aead = header::parse_encrypt0_protected(encrypt0_protected, encrypt0_protected_at)?;

    Ok(ParsedEnvelope {
        header: parts.complete(sign_alg, sign_cose_alg, aead)?,
        sign1_protected,
        payload,
        signature,
        encrypt0_protected,
        ciphertext,
    })
}

impl<'a> ParsedEnvelope<'a> {
    /// Verifies the Sign1 signature over `["Signature1", protected, topic, payload]`
    /// with the sender's key. The key's algorithm must match the header's.
    pub fn verify_signature(&self, topic: &str, key: &VerifyingKey) -> Result<(), EnvelopeError> {
        if key.alg() != self.header.sign_alg {
            return Err(EnvelopeError::KeyAlgMismatch { header: self.header.sign_alg, key: key.alg() });
        }
        if self.signature.len() != 64 {
            return Err(EnvelopeError::BadSignature);
        }
        let tbs = sig_structure(self.sign1_protected, topic.as_bytes(), self.payload);
        key.verify(&tbs, self.signature).map_err(|_| EnvelopeError::BadSignature)
    }

    /// Decrypts with the group key of `header.group` / `header.epoch`. Call
    /// only after [`ParsedEnvelope::verify_signature`] succeeded.
    pub fn decrypt(&self, topic: &str, group_key: &GroupKey) -> Result<Vec<u8>, EnvelopeError> {
        let h = &self.header;
        let key = derive_content_key(group_key, h.group, h.epoch, h.sender, h.aead);
        let aad = enc_structure(self.encrypt0_protected, topic.as_bytes());
        crypto::aead_decrypt(h.aead, &key, h.seq, &aad, self.ciphertext)
    }

    /// Verifies, then decrypts.
    pub fn open(&self, topic: &str, sender_key: &VerifyingKey, group_key: &GroupKey) -> Result<Vec<u8>, EnvelopeError> {
        self.verify_signature(topic, sender_key)?;
        self.decrypt(topic, group_key)
    }

    /// The Sign1 protected header bytes (the content of its bstr).
    pub fn sign1_protected(&self) -> &'a [u8] {
        self.sign1_protected
    }

    /// The Sign1 payload: the untagged COSE_Encrypt0 bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    pub fn signature(&self) -> &'a [u8] {
        self.signature
    }

    pub fn encrypt0_protected(&self) -> &'a [u8] {
        self.encrypt0_protected
    }

    /// AEAD ciphertext including the 16-byte tag.
    pub fn ciphertext(&self) -> &'a [u8] {
        self.ciphertext
    }
}

/// Everything needed to seal one message.
pub struct SealInput<'a> {
    pub signer: &'a SigningKey,
    pub sender: &'a str,
    pub group: &'a str,
    pub epoch: u64,
    /// From the sender's [`crate::device::sequence::SequenceCounter`]; never reuse one.
    pub seq: u64,
    pub timestamp_ms: u64,
    pub topic: &'a str,
    pub aead: AeadAlg,
    pub group_key: &'a GroupKey,
    pub plaintext: &'a [u8],
}

/// Builds an envelope. Deterministic for Ed25519 (and, in this implementation,
/// for P-256, which uses RFC 6979 nonces).
pub fn seal(input: &SealInput<'_>) -> Result<Vec<u8>, EnvelopeError> {
    if !is_valid_id(input.sender) {
        return Err(EnvelopeError::BadSealInput("sender is not a valid device id"));
    }
    if !is_valid_id(input.group) {
        return Err(EnvelopeError::BadSealInput("group is not a valid group id"));
    }
    if input.seq == 0 {
        return Err(EnvelopeError::BadSealInput("seq must be >= 1"));
    }
    let topic = input.topic.as_bytes();

    let encrypt0_protected = encode_encrypt0_protected(input.aead);
    let key = derive_content_key(input.group_key, input.group, input.epoch, input.sender, input.aead);
    let aad = enc_structure(&encrypt0_protected, topic);
    let ciphertext = crypto::aead_encrypt(input.aead, &key, input.seq, &aad, input.plaintext)?;
    let mut payload = Vec::with_capacity(ciphertext.len() + 16);
    cbor::write_head(&mut payload, cbor::ARRAY, 3);
    cbor::write_bstr(&mut payload, &encrypt0_protected);
    cbor::write_head(&mut payload, cbor::MAP, 0);
    cbor::write_bstr(&mut payload, &ciphertext);

    let sign1_protected =
        encode_sign1_protected(input.signer.alg(), input.sender, input.group, input.epoch, input.seq, input.timestamp_ms);
    let signature = input.signer.sign(&sig_structure(&sign1_protected, topic, &payload));

    let mut out = Vec::with_capacity(payload.len() + sign1_protected.len() + 80);
    cbor::write_head(&mut out, cbor::TAG, COSE_SIGN1_TAG);
    cbor::write_head(&mut out, cbor::ARRAY, 4);
    cbor::write_bstr(&mut out, &sign1_protected);
    cbor::write_head(&mut out, cbor::MAP, 0);
    cbor::write_bstr(&mut out, &payload);
    cbor::write_bstr(&mut out, &signature);
    Ok(out)
}
