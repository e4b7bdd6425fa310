//! Authority-signed JSON documents: the policy file, key bundles, and whatever
//! else the realm's authority vouches for. One format for all of them:
//!
//! ```text
//! {"body":BODY,"format":"mqseal-policy-v1","signature":{"alg":"Ed25519","key":"<b64url>","sig":"<b64url>"}}\n
//! ```
//!
//! - The whole file is canonical JSON (RFC 8785, see [`crate::formats::canonical_json`])
//!   followed by one `\n`. So BODY appears in the file exactly as its canonical
//!   bytes, which is what is signed.
//! - `sig` = Ed25519 (RFC 8032, pure) over the signing input
//!   `"mqseal-signed-doc-v1" 0x00 FORMAT 0x00 canonical(BODY)`: the prefix keeps
//!   a signature made for one kind of document (or for anything else the
//!   authority key might sign) from being accepted as another kind.
//! - `key` is the authority's raw 32-byte public key, base64url without
//!   padding. It is informative only: a document is verified against the key
//!   the caller trusts (the broker's `plugin_opt_authority`, a device's
//!   `authority.pub`), and a document naming another key is refused with a
//!   message that says so, rather than a bare "bad signature".
//!
//! The authority key is always Ed25519. Its public half is stored as a PEM
//! SubjectPublicKeyInfo (`authority.pub`, `openssl pkey -pubin` reads it), its
//! private half as PKCS#8 PEM with mode 0600 (`authority.key`).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use pkcs8::der::pem::LineEnding;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::formats::keys::{hex, write_atomic, KeyError, Overwrite, SigningKey, ED25519_PUBLIC_KEY};

/// The domain-separation prefix of every signing input.
pub const SIGNING_CONTEXT: &[u8] = b"mqseal-signed-doc-v1";

/// The largest signed document read from a file (a policy for a million devices fits).
pub const MAX_DOCUMENT_BYTES: u64 = 1 << 30;

/// Why a signed document was refused. `origin` names the file (or stream).
#[derive(Debug, thiserror::Error)]
pub enum SignedDocError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{origin}: is {size} bytes, more than the {MAX_DOCUMENT_BYTES} a signed document may have")]
    TooLarge { origin: String, size: u64 },
    #[error("{origin}: not a signed mqseal document: {detail}")]
    Malformed { origin: String, detail: String },
    #[error("{origin}: is a {found:?} document, expected {expected:?}")]
    WrongFormat { origin: String, found: String, expected: String },
    #[error("{origin}: signature algorithm {0:?} is not supported (authority signatures are Ed25519)", .alg)]
    UnsupportedAlgorithm { origin: String, alg: String },
    #[error(
        "{origin}: signed by authority key {found}, but the trusted authority key is {trusted}: \
         this document comes from another realm (or the wrong authority.pub is configured)"
    )]
    WrongAuthority { origin: String, found: String, trusted: String },
    #[error("{origin}: the authority signature does not verify: the document was altered after signing")]
    BadSignature { origin: String },
    #[error("{origin}: authority key: {detail}")]
    BadAuthorityKey { origin: String, detail: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot serialize the document body: {0}")]
    Serialize(String),
}

impl SignedDocError {
    /// A stable short token for logs and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            SignedDocError::Io { .. } => "doc-io",
            SignedDocError::TooLarge { .. } => "doc-too-large",
            SignedDocError::Malformed { .. } => "doc-malformed",
            SignedDocError::WrongFormat { .. } => "doc-wrong-format",
            SignedDocError::UnsupportedAlgorithm { .. } => "doc-unsupported-alg",
            SignedDocError::WrongAuthority { .. } => "doc-wrong-authority",
            SignedDocError::BadSignature { .. } => "doc-bad-signature",
            SignedDocError::BadAuthorityKey { .. } => "doc-bad-authority-key",
            SignedDocError::Key(_) => "doc-key",
            SignedDocError::Serialize(_) => "doc-serialize",
        }
    }
}

/// The realm authority's public key (Ed25519).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityPublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for AuthorityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthorityPublicKey({})", self.fingerprint())
    }
}

impl AuthorityPublicKey {
    /// From the raw 32 bytes; refuses points off the curve, non-canonical encodings and weak (small-order) keys.
    pub fn from_raw(bytes: &[u8]) -> Result<Self, String> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| format!("{} bytes, expected 32", bytes.len()))?;
        let key = crate::formats::keys::ed25519_public_from_raw(&raw).map_err(|detail| format!("Ed25519 key: {detail}"))?;
        Ok(AuthorityPublicKey(key))
    }

    pub fn to_raw(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The raw key as base64url without padding (the `key` field of documents).
    pub fn to_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.to_bytes())
    }

    /// `sha256:<hex>` of the raw key.
    /// The same key as a [`crate::formats::keys::VerifyingKey`], to check the authority's login tokens.
    pub fn login_key(&self) -> crate::formats::keys::VerifyingKey {
        crate::formats::keys::VerifyingKey::Ed25519(self.0)
    }

    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.0.to_bytes())))
    }

    /// Parses a PEM SubjectPublicKeyInfo ("PUBLIC KEY", OID 1.3.101.112).
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, SignedDocError> {
        let bad = |detail: String| SignedDocError::BadAuthorityKey { origin: origin.to_string(), detail };
        let der = crate::formats::keys::decode_public_pem(pem, &ED25519_PUBLIC_KEY).map_err(|e| bad(e.to_string()))?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_der(der.as_bytes())
            .map_err(|e| bad(format!("not a valid Ed25519 public key: {e}")))?;
        AuthorityPublicKey::from_raw(&key.to_bytes()).map_err(bad)
    }

    pub fn to_pem(&self) -> Result<String, SignedDocError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SignedDocError::Serialize(format!("authority public key PEM: {e}")))
    }

    /// Loads `authority.pub`; a file that is empty or not PEM is reported as such.
    pub fn load(path: &Path) -> Result<Self, SignedDocError> {
        let bytes = std::fs::read(path).map_err(|source| SignedDocError::Io { path: path.to_owned(), source })?;
        if let Some(problem) = crate::formats::keys::pem_text_problem(&bytes, &ED25519_PUBLIC_KEY) {
            return Err(SignedDocError::Key(problem.in_file(path)));
        }
        // pem_text_problem refused anything that is not UTF-8.
        AuthorityPublicKey::from_pem(&String::from_utf8_lossy(&bytes), &path.display().to_string())
    }

    /// Writes the PEM (mode 0644) atomically.
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<(), SignedDocError> {
        Ok(write_atomic(path, self.to_pem()?.as_bytes(), 0o644, overwrite)?)
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match ed25519_dalek::Signature::from_slice(sig) {
            Ok(sig) => self.0.verify_strict(msg, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// The realm authority's private key (Ed25519, PKCS#8 PEM, mode 0600).
pub struct AuthoritySigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for AuthoritySigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthoritySigningKey(public {})", self.public().fingerprint())
    }
}

impl AuthoritySigningKey {
    pub fn generate() -> Self {
        AuthoritySigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// From an RFC 8032 seed (test vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        AuthoritySigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// Loads `authority.key`; refuses P-256 keys and files readable by others.
    pub fn load(path: &Path) -> Result<Self, SignedDocError> {
        match SigningKey::load(path)? {
            SigningKey::Ed25519(k) => Ok(AuthoritySigningKey(k)),
            other => Err(SignedDocError::BadAuthorityKey {
                origin: path.display().to_string(),
                detail: format!("is a {} key; the authority key must be Ed25519", other.alg()),
            }),
        }
    }

    /// Writes PKCS#8 PEM with mode 0600, atomically.
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<(), SignedDocError> {
        Ok(SigningKey::Ed25519(self.0.clone()).save(path, overwrite)?)
    }

    pub fn public(&self) -> AuthorityPublicKey {
        AuthorityPublicKey(self.0.verifying_key())
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        ed25519_dalek::Signer::sign(&self.0, msg).to_bytes()
    }

    /// The same key as a [`SigningKey`], for the authority's MQTT login token
    /// (`mqseal policy push` and friends). Login tokens start with their own
    /// prefix (`mqseal-login-v1`), so they can never be taken for a document
    /// signature, whose input starts with [`SIGNING_CONTEXT`].
    pub fn login_key(&self) -> SigningKey {
        SigningKey::Ed25519(self.0.clone())
    }
}

/// The bytes the authority signs: `SIGNING_CONTEXT 0x00 format 0x00 canonical_body`.
pub fn signing_input(format: &str, canonical_body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + format.len() + 2 + canonical_body.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.push(0);
    input.extend_from_slice(format.as_bytes());
    input.push(0);
    input.extend_from_slice(canonical_body);
    input
}

fn check_format_name(format: &str) -> bool {
    !format.is_empty() && format.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Signs `body` as a document of `format`; returns the file bytes (canonical JSON + `\n`).
pub fn sign_document<T: Serialize + ?Sized>(
    format: &str,
    body: &T,
    key: &AuthoritySigningKey,
) -> Result<Vec<u8>, SignedDocError> {
    if !check_format_name(format) {
        return Err(SignedDocError::Serialize(format!("format name {format:?} must be [a-z0-9-]+")));
    }
    let canonical_body = crate::formats::canonical_json::to_vec(body).map_err(|e| SignedDocError::Serialize(e.to_string()))?;
    let sig = key.sign(&signing_input(format, &canonical_body));
    let public = key.public();
    // Assemble the canonical document around the already-canonical body: keys
    // in code-point order (body, format, signature; alg, key, sig), and none of
    // the other values needs escaping.
    let mut out = Vec::with_capacity(canonical_body.len() + 256);
    out.extend_from_slice(b"{\"body\":");
    out.extend_from_slice(&canonical_body);
    out.extend_from_slice(b",\"format\":\"");
    out.extend_from_slice(format.as_bytes());
    out.extend_from_slice(b"\",\"signature\":{\"alg\":\"Ed25519\",\"key\":\"");
    out.extend_from_slice(public.to_b64url().as_bytes());
    out.extend_from_slice(b"\",\"sig\":\"");
    out.extend_from_slice(URL_SAFE_NO_PAD.encode(sig).as_bytes());
    out.extend_from_slice(b"\"}}\n");
    Ok(out)
}

/// The parts of a signed document, before any verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentParts<'a> {
    /// The body's canonical JSON bytes, as they appear in the file.
    pub body: &'a [u8],
    pub format: &'a str,
    pub alg: &'a str,
    pub key: &'a str,
    pub sig: &'a str,
}

/// Splits a document into its parts. Because the file must be canonical JSON,
/// everything after the body has a fixed shape whose values contain no `"`,
/// so it is parsed from the end and the body is the exact bytes between.
pub fn split_document<'a>(bytes: &'a [u8], origin: &str) -> Result<DocumentParts<'a>, SignedDocError> {
    let malformed = |detail: &str| SignedDocError::Malformed { origin: origin.to_string(), detail: detail.to_string() };
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let shape_error = || {
        // Explain the common cases: reformatted (pretty-printed) or not JSON at all.
        match serde_json::from_slice::<serde_json::Value>(text) {
            Err(e) => malformed(&format!("not JSON ({e})")),
            Ok(v) if v.get("body").is_some() && v.get("signature").is_some() => malformed(
                "not in canonical form (signed documents are canonical JSON on one line; \
                 use the file exactly as exported, do not reformat or edit it)",
            ),
            Ok(_) => malformed("expected an object with \"body\", \"format\" and \"signature\""),
        }
    };
    let rest = text.strip_prefix(b"{\"body\":").ok_or_else(shape_error)?;
    let tail = rest.strip_suffix(b"\"}}").ok_or_else(shape_error)?;

    // tail = BODY ,"format":"F","signature":{"alg":"A","key":"K","sig":"S
    let (before_sig, sig) = rsplit_once(tail, b"\",\"sig\":\"").ok_or_else(shape_error)?;
    let (before_key, key) = rsplit_once(before_sig, b"\",\"key\":\"").ok_or_else(shape_error)?;
    let (before_alg, alg) = rsplit_once(before_key, b"\",\"signature\":{\"alg\":\"").ok_or_else(shape_error)?;
    let (body, format) = rsplit_once(before_alg, b",\"format\":\"").ok_or_else(shape_error)?;
    let as_token = |b: &'a [u8]| -> Option<&'a str> {
        let s = std::str::from_utf8(b).ok()?;
        s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_')).then_some(s)
    };
    let (Some(format), Some(alg), Some(key), Some(sig)) = (as_token(format), as_token(alg), as_token(key), as_token(sig))
    else {
        return Err(shape_error());
    };
    if body.is_empty() {
        return Err(malformed("empty body"));
    }
    Ok(DocumentParts { body, format, alg, key, sig })
}

fn rsplit_once<'a>(haystack: &'a [u8], needle: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&i| &haystack[i..i + needle.len()] == needle)
        .map(|i| (&haystack[..i], &haystack[i + needle.len()..]))
}

/// Verifies a document of `expected_format` against the trusted `authority`
/// and returns the body's bytes (canonical JSON), ready to deserialize.
pub fn verify_document<'a>(
    bytes: &'a [u8],
    expected_format: &str,
    authority: &AuthorityPublicKey,
    origin: &str,
) -> Result<&'a [u8], SignedDocError> {
    let parts = split_document(bytes, origin)?;
    if parts.format != expected_format {
        return Err(SignedDocError::WrongFormat {
            origin: origin.to_string(),
            found: parts.format.to_string(),
            expected: expected_format.to_string(),
        });
    }
    if parts.alg != "Ed25519" {
        return Err(SignedDocError::UnsupportedAlgorithm { origin: origin.to_string(), alg: parts.alg.to_string() });
    }
    let named = URL_SAFE_NO_PAD.decode(parts.key).ok();
    if named.as_deref() != Some(&authority.to_raw()[..]) {
        let found = match named.as_deref().map(AuthorityPublicKey::from_raw) {
            Some(Ok(k)) => k.fingerprint(),
            _ => format!("{:?} (not a valid key)", parts.key),
        };
        return Err(SignedDocError::WrongAuthority {
            origin: origin.to_string(),
            found,
            trusted: authority.fingerprint(),
        });
    }
    let sig = URL_SAFE_NO_PAD.decode(parts.sig).map_err(|_| SignedDocError::BadSignature { origin: origin.to_string() })?;
    if !authority.verify(&signing_input(parts.format, parts.body), &sig) {
        return Err(SignedDocError::BadSignature { origin: origin.to_string() });
    }
    Ok(parts.body)
}

/// Reads a document file (bounded by [`MAX_DOCUMENT_BYTES`]).
pub fn read_document_file(path: &Path) -> Result<Vec<u8>, SignedDocError> {
    use std::io::Read;
    let io = |source| SignedDocError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(SignedDocError::TooLarge { origin: path.display().to_string(), size });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(SignedDocError::TooLarge { origin: path.display().to_string(), size: bytes.len() as u64 });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(seed: u8) -> AuthoritySigningKey {
        AuthoritySigningKey::from_seed(&[seed; 32])
    }

    #[test]
    fn signed_document_is_canonical_and_verifies() {
        let k = key(1);
        let body = json!({"b": [1, 2], "a": "x\"y", "format": "trick", ",\"format\":\"": 1});
        let doc = sign_document("mqseal-test-v1", &body, &k).unwrap();
        assert!(doc.ends_with(b"\n"));
        assert!(crate::formats::canonical_json::is_canonical(&doc[..doc.len() - 1]));
        let got = verify_document(&doc, "mqseal-test-v1", &k.public(), "t.json").unwrap();
        assert_eq!(got, crate::formats::canonical_json::to_vec(&body).unwrap());
    }

    #[test]
    fn tampering_wrong_key_and_wrong_format_are_refused() {
        let k = key(1);
        let doc = sign_document("mqseal-test-v1", &json!({"v": 1}), &k).unwrap();
        let tampered = String::from_utf8(doc.clone()).unwrap().replace("{\"v\":1}", "{\"v\":2}");
        let err = verify_document(tampered.as_bytes(), "mqseal-test-v1", &k.public(), "t").unwrap_err();
        assert_eq!(err.reason(), "doc-bad-signature");

        let other = key(2);
        let err = verify_document(&doc, "mqseal-test-v1", &other.public(), "t").unwrap_err();
        assert_eq!(err.reason(), "doc-wrong-authority");
        assert!(err.to_string().contains(&other.public().fingerprint()), "{err}");

        // Re-signed by another key but claiming the trusted key: bad signature.
        let forged = sign_document("mqseal-test-v1", &json!({"v": 2}), &other).unwrap();
        let forged = String::from_utf8(forged).unwrap().replace(&other.public().to_b64url(), &k.public().to_b64url());
        let err = verify_document(forged.as_bytes(), "mqseal-test-v1", &k.public(), "t").unwrap_err();
        assert_eq!(err.reason(), "doc-bad-signature");

        let err = verify_document(&doc, "mqseal-other-v1", &k.public(), "t").unwrap_err();
        assert_eq!(err.reason(), "doc-wrong-format");
        // Renaming the format breaks the signature (it is in the signing input).
        let renamed = String::from_utf8(doc).unwrap().replace("mqseal-test-v1", "mqseal-other-v1");
        let err = verify_document(renamed.as_bytes(), "mqseal-other-v1", &k.public(), "t").unwrap_err();
        assert_eq!(err.reason(), "doc-bad-signature");
    }

    #[test]
    fn reformatted_documents_are_explained() {
        let k = key(1);
        let doc = sign_document("mqseal-test-v1", &json!({"v": 1}), &k).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let err = verify_document(&pretty, "mqseal-test-v1", &k.public(), "p.json").unwrap_err();
        assert!(err.to_string().contains("canonical form"), "{err}");
        let err = verify_document(b"hello", "mqseal-test-v1", &k.public(), "p.json").unwrap_err();
        assert!(err.to_string().starts_with("p.json: not a signed mqseal document: not JSON"), "{err}");
        let err = verify_document(b"{\"a\":1}", "mqseal-test-v1", &k.public(), "p.json").unwrap_err();
        assert_eq!(err.reason(), "doc-malformed");
    }

    #[test]
    fn authority_pem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(3);
        let path = dir.path().join("authority.pub");
        k.public().save(&path, Overwrite::Refuse).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{text}");
        assert_eq!(AuthorityPublicKey::load(&path).unwrap(), k.public());
        let err = AuthorityPublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "x.pub")
            .unwrap_err();
        assert!(err.to_string().starts_with("x.pub: authority key:"), "{err}");
        let kpath = dir.path().join("authority.key");
        k.save(&kpath, Overwrite::Refuse).unwrap();
        assert_eq!(AuthoritySigningKey::load(&kpath).unwrap().public(), k.public());
        // A P-256 key is not an authority key.
        let p = SigningKey::generate(crate::formats::keys::SignAlg::P256);
        let ppath = dir.path().join("p256.key");
        p.save(&ppath, Overwrite::Refuse).unwrap();
        assert_eq!(AuthoritySigningKey::load(&ppath).unwrap_err().reason(), "doc-bad-authority-key");
    }
}
