//! Device key material: signing keys (Ed25519 or ECDSA P-256), X25519 key
//! agreement keys, symmetric group keys, and the file handling for secrets.
//!
//! Private keys are stored as unencrypted PKCS#8 PEM ("PRIVATE KEY"), which
//! `openssl pkey -in FILE -noout` reads; the algorithm is detected from the
//! PKCS#8 AlgorithmIdentifier. Secret files are written atomically with mode
//! 0600 and a secret file readable by group or others is refused on load.
//!
//! Ed25519 verification uses ed25519-dalek's `verify_strict`: it rejects
//! non-canonical `s` and signatures or public keys with small-order components,
//! so one signature cannot be valid for several keys or messages (no key
//! substitution tricks) and every valid envelope has exactly one signature for a
//! given key. Weak (small-order) Ed25519 public keys are refused when loaded.
//! ECDSA P-256 signatures are the fixed 64-byte `r || s` form COSE requires;
//! signers emit low-S and verifiers refuse high-S, for the same non-malleability.
//! Those checks are made here for every backend; `verify_backend` says which
//! library then computes the ECDSA equation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use pkcs8::der::pem::LineEnding;
use pkcs8::{ObjectIdentifier, PrivateKeyInfo, SecretDocument};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::formats::verify_backend::P256Backend;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// What a key file must hold: its PEM label and the algorithms accepted, with the
/// words that say so in errors. Every key file mqseal reads is checked against
/// one of these, so a wrong file is reported as what it is.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    label: &'static str,
    oids: &'static [ObjectIdentifier],
    expected: &'static str,
}

/// The broker's checkpoint key (`plugin_opt_broker_key`).
pub const ED25519_PRIVATE_KEY: KeySpec =
    KeySpec { label: "PRIVATE KEY", oids: &[OID_ED25519], expected: "an Ed25519 private key (PKCS#8, OID 1.3.101.112)" };
/// A device's signing key (`ID.sign.pem`) and the authority key.
pub const SIGNING_PRIVATE_KEY: KeySpec = KeySpec {
    label: "PRIVATE KEY",
    oids: &[OID_ED25519, OID_EC_PUBLIC_KEY],
    expected: "an Ed25519 or P-256 private key (PKCS#8, OID 1.3.101.112 or 1.2.840.10045.2.1)",
};
/// A device's key-agreement key (`ID.kx.pem`).
pub const X25519_PRIVATE_KEY: KeySpec =
    KeySpec { label: "PRIVATE KEY", oids: &[OID_X25519], expected: "an X25519 private key (PKCS#8, OID 1.3.101.110)" };
/// The authority's public key (`authority.pub`) and a broker public key.
pub const ED25519_PUBLIC_KEY: KeySpec = KeySpec {
    label: "PUBLIC KEY",
    oids: &[OID_ED25519],
    expected: "an Ed25519 public key (PEM \"PUBLIC KEY\", OID 1.3.101.112)",
};

impl KeySpec {
    /// The words for what this file must hold ("an Ed25519 private key (...)").
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

/// What an algorithm OID names, for messages: "an X25519 key (OID 1.3.101.110)".
fn describe_oid(oid: ObjectIdentifier) -> String {
    let name = match oid {
        OID_ED25519 => "an Ed25519 key",
        OID_X25519 => "an X25519 key",
        OID_EC_PUBLIC_KEY => "an EC key",
        OID_ED448 => "an Ed448 key",
        OID_X448 => "an X448 key",
        OID_RSA => "an RSA key",
        _ => "a key of another algorithm",
    };
    format!("{name} (OID {oid})")
}

/// Why `bytes` cannot be a PEM key file at all (empty, binary, JSON, no PEM
/// block), or `None`; with `spec`'s words for what was expected.
pub fn pem_text_problem(bytes: &[u8], spec: &KeySpec) -> Option<KeyError> {
    let expected = spec.expected;
    let problem = match std::str::from_utf8(bytes) {
        Err(_) => format!("is not PEM (binary data; if it is DER, convert it with `openssl pkey -inform DER`); expected {expected}"),
        Ok(text) if text.trim().is_empty() => format!("is empty; expected {expected}"),
        Ok(text) if text.trim_start().starts_with(['{', '[']) => format!("is not PEM (it looks like JSON); expected {expected}"),
        Ok(text) if !text.contains("-----BEGIN ") => format!("is not PEM (no \"-----BEGIN\" line); expected {expected}"),
        Ok(_) => return None,
    };
    Some(KeyError::Contents(problem))
}

/// Decodes one PEM private key that `spec` accepts: its DER and algorithm OID.
fn decode_private_pem(pem: &str, spec: &KeySpec) -> Result<(SecretDocument, ObjectIdentifier), KeyError> {
    if let Some(problem) = pem_text_problem(pem.as_bytes(), spec) {
        return Err(problem);
    }
    let (label, doc) = SecretDocument::from_pem(pem.trim_start())
        .map_err(|e| KeyError::Contents(format!("is not valid PEM ({e}); expected {}", spec.expected)))?;
    if label != spec.label {
        return Err(KeyError::WrongKey { expected: spec.expected, found: format!("a PEM \"{label}\" block") });
    }
    let info = PrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| KeyError::Contents(format!("holds no valid PKCS#8 key ({e}); expected {}", spec.expected)))?;
    let oid = info.algorithm.oid;
    if !spec.oids.contains(&oid) {
        return Err(KeyError::WrongKey { expected: spec.expected, found: describe_oid(oid) });
    }
    Ok((doc, oid))
}

/// Decodes one PEM public key (SubjectPublicKeyInfo) that `spec` accepts: its DER.
pub fn decode_public_pem(pem: &str, spec: &KeySpec) -> Result<pkcs8::Document, KeyError> {
    if let Some(problem) = pem_text_problem(pem.as_bytes(), spec) {
        return Err(problem);
    }
    let (label, doc) = pkcs8::Document::from_pem(pem.trim_start())
        .map_err(|e| KeyError::Contents(format!("is not valid PEM ({e}); expected {}", spec.expected)))?;
    if label != spec.label {
        return Err(KeyError::WrongKey { expected: spec.expected, found: format!("a PEM \"{label}\" block") });
    }
    let info = pkcs8::spki::SubjectPublicKeyInfoRef::try_from(doc.as_bytes())
        .map_err(|e| KeyError::Contents(format!("holds no valid public key ({e}); expected {}", spec.expected)))?;
    if !spec.oids.contains(&info.algorithm.oid) {
        return Err(KeyError::WrongKey { expected: spec.expected, found: describe_oid(info.algorithm.oid) });
    }
    Ok(doc)
}


/// Signature algorithm of a device signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignAlg {
    /// Ed25519 (RFC 8032); COSE alg -19 (RFC 9864), identity name "Ed25519".
    Ed25519,
    /// ECDSA over P-256 with SHA-256; COSE alg -9 (ESP256, RFC 9864), identity name "ESP256".
    P256,
}

impl SignAlg {
    /// The COSE algorithm value written when sealing.
    pub fn cose_alg(self) -> i64 {
        match self {
            SignAlg::Ed25519 => -19,
            SignAlg::P256 => -9,
        }
    }

    /// The name used in `ID.pub` files.
    pub fn identity_name(self) -> &'static str {
        match self {
            SignAlg::Ed25519 => "Ed25519",
            SignAlg::P256 => "ESP256",
        }
    }

    /// Parses the `ID.pub` name.
    pub fn from_identity_name(name: &str) -> Option<SignAlg> {
        match name {
            "Ed25519" => Some(SignAlg::Ed25519),
            "ESP256" => Some(SignAlg::P256),
            _ => None,
        }
    }

    /// Length of a signature in bytes (both are 64).
    pub fn signature_len(self) -> usize {
        64
    }

    /// Length of the raw public key encoding.
    pub fn public_key_len(self) -> usize {
        match self {
            SignAlg::Ed25519 => 32,
            SignAlg::P256 => 65,
        }
    }
}

impl std::fmt::Display for SignAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.identity_name())
    }
}

/// Everything that can go wrong with keys and key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("refusing to overwrite existing key file {path}")]
    Exists { path: PathBuf },
    #[error("{path} is accessible by group or others (mode {mode:04o}); private keys must be 0600: run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("not a PKCS#8 PEM private key: {0}")]
    Pem(String),
    /// The text cannot be the key expected (empty, not PEM, ...): "is empty; expected ...".
    #[error("the key {0}")]
    Contents(String),
    /// As `Contents`, in a file: "FILE is empty; expected ...".
    #[error("{path} {problem}")]
    FileContents { path: PathBuf, problem: String },
    #[error("expected {expected}, found {found}")]
    WrongKey { expected: &'static str, found: String },
    #[error("invalid {alg} public key: {detail}")]
    BadPublicKey { alg: &'static str, detail: String },
    #[error("signature verification failed")]
    BadSignature,
    #[error("X25519 key agreement produced the all-zero secret (low-order public key)")]
    NonContributory,
    // Not `source`: the problem is part of this message already, and an error
    // chain printer would repeat it.
    #[error("{path}: {problem}")]
    InFile { path: PathBuf, problem: Box<KeyError> },
}

impl KeyError {
    /// A stable short token (docs/REASONS.md); `InFile` gives its cause's.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Io { .. } => "file-io",
            KeyError::Exists { .. } => "file-exists",
            KeyError::Permissions { .. } => "key-permissions",
            KeyError::NotAFile { .. } => "key-not-a-file",
            KeyError::Pem(_) => "key-malformed",
            KeyError::Contents(_) | KeyError::FileContents { .. } => "key-malformed",
            KeyError::WrongKey { .. } => "key-wrong-kind",
            KeyError::BadPublicKey { .. } => "key-bad-public",
            KeyError::BadSignature => "bad-signature",
            KeyError::NonContributory => "key-non-contributory",
            KeyError::InFile { problem, .. } => problem.reason(),
        }
    }

    /// The same problem, naming the file it is in.
    pub fn in_file(self, path: &Path) -> KeyError {
        match self {
            KeyError::Contents(problem) => KeyError::FileContents { path: path.to_owned(), problem },
            // Already names its path.
            e @ (KeyError::Io { .. }
            | KeyError::Exists { .. }
            | KeyError::Permissions { .. }
            | KeyError::NotAFile { .. }
            | KeyError::FileContents { .. }
            | KeyError::InFile { .. }) => e,
            e => KeyError::InFile { path: path.to_owned(), problem: Box::new(e) },
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

// ---------------------------------------------------------------------------
// Files

/// Whether a write may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`KeyError::Exists`] if the target exists (checked atomically).
    Refuse,
    /// Atomically replace the target.
    Allow,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory
/// is created with `mode`, written, fsynced, then renamed (or, with
/// [`Overwrite::Refuse`], hard-linked so an existing file is never clobbered even
/// by a concurrent writer), and the directory is fsynced. A crash leaves either
/// the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: Overwrite) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| KeyError::NotAFile { path: path.to_owned() })?;
    if overwrite == Overwrite::Refuse && fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists { path: path.to_owned() });
    }
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), hex(&suffix)));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io_err(&tmp))?;
        // The umask may have narrowed `mode`; make it exact.
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        match overwrite {
            Overwrite::Allow => fs::rename(&tmp, path).map_err(io_err(path))?,
            Overwrite::Refuse => {
                fs::hard_link(&tmp, path).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        KeyError::Exists { path: path.to_owned() }
                    } else {
                        KeyError::Io { path: path.to_owned(), source: e }
                    }
                })?;
                fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            }
        }
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err(&dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a private key file, refusing it unless it is a regular file that
/// neither group nor others can access.
pub fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let (bytes, mode) = read_key_file(path)?;
    owner_only(path, mode)?;
    Ok(bytes)
}

/// Reads a regular file of at most 64 KiB; returns it with its permission bits.
fn read_key_file(path: &Path) -> Result<(Zeroizing<Vec<u8>>, u32), KeyError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: path.to_owned() });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len().min(1 << 16) as usize));
    io::Read::read_to_end(&mut io::Read::take(&mut file, 1 << 16), &mut bytes).map_err(io_err(path))?;
    Ok((bytes, meta.permissions().mode() & 0o7777))
}

/// A private key file must be readable by its owner only.
fn owner_only(path: &Path, mode: u32) -> Result<(), KeyError> {
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Reads a private key file that `spec` accepts and checks what it holds, then
/// that only its owner can read it: a file that is no such key at all is
/// reported as what it is (`chmod 600` would be wrong advice for a public key).
pub fn read_private_key(path: &Path, spec: &KeySpec) -> Result<(SecretDocument, ObjectIdentifier), KeyError> {
    let (bytes, mode) = read_key_file(path)?;
    if let Some(problem) = pem_text_problem(&bytes, spec) {
        return Err(problem.in_file(path));
    }
    // pem_text_problem refused anything that is not UTF-8.
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Contents("is not text".into()).in_file(path))?;
    let decoded = decode_private_pem(text, spec).map_err(|e| e.in_file(path))?;
    owner_only(path, mode)?;
    Ok(decoded)
}

// ---------------------------------------------------------------------------
// Signing keys

/// A device's private signing key. Debug output never shows key bytes.
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, public {})", self.alg(), self.verifying_key().fingerprint())
    }
}

impl SigningKey {
    /// A fresh random key from the OS RNG.
    pub fn generate(alg: SignAlg) -> SigningKey {
        match alg {
            SignAlg::Ed25519 => SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            SignAlg::P256 => SigningKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    /// Ed25519 key from its 32-byte RFC 8032 seed (test vectors, deterministic tests).
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> SigningKey {
        SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// P-256 key from its 32-byte big-endian scalar (test vectors).
    pub fn p256_from_scalar(scalar: &[u8; 32]) -> Result<SigningKey, KeyError> {
        p256::ecdsa::SigningKey::from_slice(scalar)
            .map(SigningKey::P256)
            .map_err(|_| KeyError::Pem("P-256 scalar out of range".into()))
    }

    pub fn alg(&self) -> SignAlg {
        match self {
            SigningKey::Ed25519(_) => SignAlg::Ed25519,
            SigningKey::P256(_) => SignAlg::P256,
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
            SigningKey::P256(k) => VerifyingKey::P256(P256Key::new(*k.verifying_key())),
        }
    }

    /// Signs `msg`: Ed25519 (pure, RFC 8032) or ECDSA P-256/SHA-256 (RFC 6979
    /// deterministic, low-S), both as 64 bytes.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        match self {
            SigningKey::Ed25519(k) => ed25519_dalek::Signer::sign(k, msg).to_bytes(),
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(k, msg);
                let sig = sig.normalize_s().unwrap_or(sig);
                let mut out = [0u8; 64];
                out.copy_from_slice(&sig.to_bytes());
                out
            }
        }
    }

    /// Parses an unencrypted PKCS#8 PEM; the algorithm comes from the key itself.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let (doc, oid) = decode_private_pem(pem, &SIGNING_PRIVATE_KEY)?;
        SigningKey::from_pkcs8_doc(&doc, oid)
    }

    /// From a document [`decode_private_pem`] accepted for [`SIGNING_PRIVATE_KEY`].
    fn from_pkcs8_doc(doc: &SecretDocument, oid: ObjectIdentifier) -> Result<SigningKey, KeyError> {
        if oid == OID_ED25519 {
            ed25519_dalek::SigningKey::from_pkcs8_der(doc.as_bytes())
                .map(SigningKey::Ed25519)
                .map_err(|e| KeyError::Pem(format!("Ed25519: {e}")))
        } else {
            <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(doc.as_bytes())
                .map(SigningKey::P256)
                .map_err(|e| KeyError::Pem(format!("EC key is not a valid P-256 key: {e}")))
        }
    }

    /// PKCS#8 v1 PEM (no embedded public key, the form every OpenSSL reads).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let pem = match self {
            SigningKey::Ed25519(k) => {
                let bytes = ed25519_dalek::pkcs8::KeypairBytes { secret_key: k.to_bytes(), public_key: None };
                bytes.to_pkcs8_pem(LineEnding::LF)
            }
            SigningKey::P256(k) => p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(k, LineEnding::LF),
        };
        pem.map_err(|e| KeyError::Pem(e.to_string()))
    }

    /// Loads a private key file (must be 0600 or stricter).
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let (doc, oid) = read_private_key(path, &SIGNING_PRIVATE_KEY)?;
        SigningKey::from_pkcs8_doc(&doc, oid).map_err(|e| e.in_file(path))
    }

    /// Saves as PKCS#8 PEM with mode 0600, atomically.
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<(), KeyError> {
        let pem = self.to_pkcs8_pem()?;
        write_atomic(path, pem.as_bytes(), 0o600, overwrite)
    }
}

/// Decodes an Ed25519 public key strictly (docs/ENVELOPE.md §3.2.1): the 32
/// bytes must decode to a curve point, be that point's canonical encoding
/// (y < p; ed25519-dalek alone would accept y ≥ p and reduce it) and the point
/// must not be of small order.
pub(crate) fn ed25519_public_from_raw(raw: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, &'static str> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|_| "not a curve point")?;
    if key.to_edwards().compress().as_bytes() != raw {
        return Err("not the canonical encoding of its curve point");
    }
    if key.is_weak() {
        return Err("small-order (weak) key");
    }
    Ok(key)
}

/// A P-256 public key, validated once (an uncompressed point on the curve) and
/// prepared once for OpenSSL (`verify_backend`) when it first verifies there,
/// so a message costs only the verification.
#[derive(Clone)]
pub struct P256Key {
    rustcrypto: p256::ecdsa::VerifyingKey,
    /// The same point as OpenSSL's key object, built at the key's first
    /// verification through OpenSSL (about 45 µs and 2 KB of OpenSSL's heap a
    /// key: a policy of a million devices must not pay that for keys that never
    /// sign); `None` if OpenSSL could not build it, and then the RustCrypto
    /// backend verifies.
    openssl: std::sync::OnceLock<Option<openssl::pkey::PKey<openssl::pkey::Public>>>,
}

impl P256Key {
    fn new(rustcrypto: p256::ecdsa::VerifyingKey) -> P256Key {
        P256Key { rustcrypto, openssl: std::sync::OnceLock::new() }
    }

    fn openssl(&self) -> Option<&openssl::pkey::PKey<openssl::pkey::Public>> {
        self.openssl.get_or_init(|| openssl_p256_key(self.rustcrypto.to_encoded_point(false).as_bytes())).as_ref()
    }

    /// The key as the `p256` crate's type (tests compare against the crate directly).
    pub fn rustcrypto(&self) -> &p256::ecdsa::VerifyingKey {
        &self.rustcrypto
    }
}

impl PartialEq for P256Key {
    fn eq(&self, other: &P256Key) -> bool {
        self.rustcrypto == other.rustcrypto
    }
}
impl Eq for P256Key {}

/// OpenSSL's key object for an uncompressed P-256 point the `p256` crate has
/// already accepted; OpenSSL checks it again (`EC_KEY_check_key`).
fn openssl_p256_key(sec1: &[u8]) -> Option<openssl::pkey::PKey<openssl::pkey::Public>> {
    use openssl::ec::{EcGroup, EcKey, EcPoint};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).ok()?;
    let mut ctx = openssl::bn::BigNumContext::new().ok()?;
    let point = EcPoint::from_bytes(&group, sec1, &mut ctx).ok()?;
    let key = EcKey::from_public_key(&group, &point).ok()?;
    key.check_key().ok()?;
    openssl::pkey::PKey::from_ec_key(key).ok()
}

/// A public signing key.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(P256Key),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({}, {})", self.alg(), self.fingerprint())
    }
}

impl VerifyingKey {
    pub fn alg(&self) -> SignAlg {
        match self {
            VerifyingKey::Ed25519(_) => SignAlg::Ed25519,
            VerifyingKey::P256(_) => SignAlg::P256,
        }
    }

    /// Parses the raw encoding: Ed25519 32 bytes (RFC 8032), P-256 65 bytes SEC1
    /// uncompressed (`04 || x || y`). Weak Ed25519 keys and points not on the curve are refused.
    pub fn from_raw(alg: SignAlg, bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
        let bad = |detail: String| KeyError::BadPublicKey { alg: alg.identity_name(), detail };
        if bytes.len() != alg.public_key_len() {
            return Err(bad(format!("{} bytes, expected {}", bytes.len(), alg.public_key_len())));
        }
        match alg {
            SignAlg::Ed25519 => {
                let mut raw = [0u8; 32];
                raw.copy_from_slice(bytes);
                ed25519_public_from_raw(&raw).map(VerifyingKey::Ed25519).map_err(|detail| bad(detail.into()))
            }
            SignAlg::P256 => {
                if bytes[0] != 0x04 {
                    return Err(bad("not SEC1 uncompressed (must start with 0x04)".into()));
                }
                // The backend is chosen now, when a device key is loaded (policy
                // load), so its one-off timing never delays a message. Not in
                // P256Key::new: the timing itself makes a key that way.
                let _ = crate::formats::verify_backend::p256_backend();
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map(|k| VerifyingKey::P256(P256Key::new(k)))
                    .map_err(|_| bad("not a point on P-256".into()))
            }
        }
    }

    /// The raw encoding (see [`VerifyingKey::from_raw`]).
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            VerifyingKey::Ed25519(k) => k.to_bytes().to_vec(),
            VerifyingKey::P256(k) => k.rustcrypto.to_encoded_point(false).as_bytes().to_vec(),
        }
    }

    /// `sha256:<hex>` of the raw public key.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.to_raw())))
    }

    /// Verifies a 64-byte signature: Ed25519 with `verify_strict`; P-256 as
    /// `r || s` over SHA-256(msg), r and s in 1..n−1 and high-S refused here,
    /// then the equation by the backend `verify_backend::p256_backend` chose.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        match self {
            VerifyingKey::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| KeyError::BadSignature)?;
                k.verify_strict(msg, &sig).map_err(|_| KeyError::BadSignature)
            }
            VerifyingKey::P256(_) => self.verify_p256_with(crate::formats::verify_backend::p256_backend(), msg, sig),
        }
    }

    /// As [`VerifyingKey::verify`] for a P-256 key, with the given backend. The
    /// strict checks (§3.2.2) come first and are the same for every backend.
    pub(crate) fn verify_p256_with(&self, backend: P256Backend, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        let VerifyingKey::P256(key) = self else { return Err(KeyError::BadSignature) };
        let raw: &[u8; 64] = sig.try_into().map_err(|_| KeyError::BadSignature)?;
        // Refuses r or s of 0 or ≥ n.
        let parsed = p256::ecdsa::Signature::from_slice(raw).map_err(|_| KeyError::BadSignature)?;
        if parsed.normalize_s().is_some() {
            return Err(KeyError::BadSignature); // high-S: malleated
        }
        match (backend, key.openssl()) {
            (P256Backend::OpenSsl, Some(pkey)) => {
                let (der, len) = crate::formats::verify_backend::ecdsa_der(raw);
                let verified = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), pkey)
                    .and_then(|mut verifier| verifier.verify_oneshot(&der[..len], msg));
                match verified {
                    Ok(true) => Ok(()),
                    // Ok(false) is a wrong signature; Err an OpenSSL failure: fail closed either way.
                    _ => Err(KeyError::BadSignature),
                }
            }
            _ => p256::ecdsa::signature::Verifier::verify(&key.rustcrypto, msg, &parsed).map_err(|_| KeyError::BadSignature),
        }
    }
}

// ---------------------------------------------------------------------------
// Key agreement

/// A device's X25519 private key (PKCS#8, OID 1.3.101.110). Zeroized on drop by x25519-dalek.
pub struct KxSecret(x25519_dalek::StaticSecret);

impl std::fmt::Debug for KxSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KxSecret(public {})", self.public().fingerprint())
    }
}

/// An X25519 public key (32 bytes, RFC 7748).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KxPublic(x25519_dalek::PublicKey);

impl std::fmt::Debug for KxPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KxPublic({})", self.fingerprint())
    }
}

impl KxSecret {
    pub fn generate() -> KxSecret {
        KxSecret(x25519_dalek::StaticSecret::random_from_rng(OsRng))
    }

    /// From 32 raw bytes (test vectors).
    pub fn from_bytes(bytes: [u8; 32]) -> KxSecret {
        KxSecret(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn public(&self) -> KxPublic {
        KxPublic(x25519_dalek::PublicKey::from(&self.0))
    }

    /// X25519; refuses the all-zero result a low-order peer key would give.
    pub fn diffie_hellman(&self, peer: &KxPublic) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let shared = self.0.diffie_hellman(&peer.0);
        if !shared.was_contributory() {
            return Err(KeyError::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }

    /// PKCS#8 v1 PEM per RFC 8410: privateKey = OCTET STRING wrapping the 32 bytes.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let mut inner = Zeroizing::new([0u8; 34]);
        inner[0] = 0x04;
        inner[1] = 0x20;
        inner[2..].copy_from_slice(self.0.as_bytes());
        let info = PrivateKeyInfo::new(pkcs8::AlgorithmIdentifierRef { oid: OID_X25519, parameters: None }, &inner[..]);
        let doc = SecretDocument::try_from(info).map_err(|e| KeyError::Pem(e.to_string()))?;
        doc.to_pem("PRIVATE KEY", LineEnding::LF).map_err(|e| KeyError::Pem(e.to_string()))
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<KxSecret, KeyError> {
        let (doc, _) = decode_private_pem(pem, &X25519_PRIVATE_KEY)?;
        KxSecret::from_pkcs8_doc(&doc)
    }

    /// From a document [`decode_private_pem`] accepted for [`X25519_PRIVATE_KEY`].
    fn from_pkcs8_doc(doc: &SecretDocument) -> Result<KxSecret, KeyError> {
        let info = PrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| KeyError::Pem(e.to_string()))?;
        if info.algorithm.parameters.is_some() {
            return Err(KeyError::Pem("X25519 AlgorithmIdentifier must have no parameters".into()));
        }
        let inner = info.private_key;
        if inner.len() != 34 || inner[0] != 0x04 || inner[1] != 0x20 {
            return Err(KeyError::Pem("X25519 private key must be an OCTET STRING of 32 bytes".into()));
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(&inner[2..]);
        let secret = KxSecret(x25519_dalek::StaticSecret::from(*raw));
        if let Some(public) = info.public_key {
            if public != secret.public().as_bytes() {
                return Err(KeyError::Pem("embedded X25519 public key does not match the private key".into()));
            }
        }
        Ok(secret)
    }

    pub fn load(path: &Path) -> Result<KxSecret, KeyError> {
        let (doc, _) = read_private_key(path, &X25519_PRIVATE_KEY)?;
        KxSecret::from_pkcs8_doc(&doc).map_err(|e| e.in_file(path))
    }

    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<(), KeyError> {
        let pem = self.to_pkcs8_pem()?;
        write_atomic(path, pem.as_bytes(), 0o600, overwrite)
    }
}

impl KxPublic {
    pub fn from_bytes(bytes: [u8; 32]) -> KxPublic {
        KxPublic(x25519_dalek::PublicKey::from(bytes))
    }

    /// From a slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<KxPublic, KeyError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadPublicKey {
            alg: "X25519",
            detail: format!("{} bytes, expected 32", bytes.len()),
        })?;
        Ok(KxPublic::from_bytes(raw))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// `sha256:<hex>` of the 32 bytes.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.as_bytes())))
    }
}

// ---------------------------------------------------------------------------
// Group keys

/// A 32-byte symmetric group key for one (group, epoch). Zeroized on drop;
/// Debug never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GroupKey([u8; 32]);

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupKey(<secret>)")
    }
}

impl GroupKey {
    /// 32 fresh random bytes from the OS RNG.
    pub fn generate() -> GroupKey {
        let mut key = GroupKey([0u8; 32]);
        OsRng.fill_bytes(&mut key.0);
        key
    }

    pub fn from_bytes(bytes: [u8; 32]) -> GroupKey {
        GroupKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Lowercase hex (for fingerprints, file names, test vectors).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl_available() -> bool {
        Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false)
    }

    fn openssl_reads(path: &Path) {
        if !openssl_available() {
            eprintln!("openssl not found; skipping interop check");
            return;
        }
        let out = Command::new("openssl").args(["pkey", "-noout", "-in"]).arg(path).output().unwrap();
        assert!(out.status.success(), "openssl pkey failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn signing_keys_round_trip_through_pem_files_openssl_reads() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [SignAlg::Ed25519, SignAlg::P256] {
            let key = SigningKey::generate(alg);
            let path = dir.path().join(format!("{alg}.pem"));
            key.save(&path, Overwrite::Refuse).unwrap();
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            openssl_reads(&path);
            let loaded = SigningKey::load(&path).unwrap();
            assert_eq!(loaded.alg(), alg);
            assert_eq!(loaded.verifying_key(), key.verifying_key());
            let sig = loaded.sign(b"hello");
            key.verifying_key().verify(b"hello", &sig).unwrap();
            assert!(matches!(key.verifying_key().verify(b"hellO", &sig), Err(KeyError::BadSignature)));
            // never overwritten unless asked
            let other = SigningKey::generate(alg);
            assert!(matches!(other.save(&path, Overwrite::Refuse), Err(KeyError::Exists { .. })));
            assert_eq!(SigningKey::load(&path).unwrap().verifying_key(), key.verifying_key());
            other.save(&path, Overwrite::Allow).unwrap();
            assert_eq!(SigningKey::load(&path).unwrap().verifying_key(), other.verifying_key());
            // Debug shows no secret
            let dbg = format!("{key:?}");
            assert!(dbg.contains("sha256:"), "{dbg}");
        }
    }

    #[test]
    fn openssl_generated_keys_load_with_detected_algorithm() {
        if !openssl_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[&str], Option<SignAlg>); 3] = [
            (&["-algorithm", "ED25519"], Some(SignAlg::Ed25519)),
            (&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], Some(SignAlg::P256)),
            (&["-algorithm", "X25519"], None),
        ];
        for (i, (args, alg)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("k{i}.pem"));
            let st = Command::new("openssl").arg("genpkey").args(*args).arg("-out").arg(&path).status().unwrap();
            assert!(st.success());
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            match alg {
                Some(alg) => assert_eq!(SigningKey::load(&path).unwrap().alg(), *alg),
                None => {
                    KxSecret::load(&path).unwrap();
                    let err = SigningKey::load(&path).unwrap_err().to_string();
                    assert!(err.contains("expected an Ed25519 or P-256 private key"), "{err}");
                }
            }
        }
    }

    #[test]
    fn kx_keys_round_trip_and_agree() {
        let dir = tempfile::tempdir().unwrap();
        let a = KxSecret::generate();
        let b = KxSecret::generate();
        let path = dir.path().join("a.kx.pem");
        a.save(&path, Overwrite::Refuse).unwrap();
        openssl_reads(&path);
        let a2 = KxSecret::load(&path).unwrap();
        assert_eq!(a2.public(), a.public());
        assert_eq!(*a2.diffie_hellman(&b.public()).unwrap(), *b.diffie_hellman(&a.public()).unwrap());
        assert!(matches!(a.diffie_hellman(&KxPublic::from_bytes([0u8; 32])), Err(KeyError::NonContributory)));
        let err = SigningKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("expected an Ed25519 or P-256 private key") && err.contains("found an X25519 key (OID 1.3.101.110)"), "{err}");
        let sign_path = dir.path().join("s.pem");
        SigningKey::generate(SignAlg::Ed25519).save(&sign_path, Overwrite::Refuse).unwrap();
        let err = KxSecret::load(&sign_path).unwrap_err().to_string();
        assert!(err.contains("expected an X25519 private key (PKCS#8, OID 1.3.101.110), found an Ed25519 key (OID 1.3.101.112)"), "{err}");
    }

    #[test]
    fn key_files_that_hold_something_else_say_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let public_pem = {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key().to_public_key_pem(LineEnding::LF).unwrap()
        };
        let cases: [(&[u8], &str); 6] = [
            (b"", "k.pem is empty; expected an Ed25519 or P-256 private key"),
            (b" \n\n", "k.pem is empty"),
            (b"{\"format\":\"mqseal-identity-v1\"}", "k.pem is not PEM (it looks like JSON)"),
            (b"\xff\xfe\x00", "k.pem is not PEM (binary data"),
            (b"secret", "k.pem is not PEM (no \"-----BEGIN\" line)"),
            (public_pem.as_bytes(), "k.pem: expected an Ed25519 or P-256 private key (PKCS#8, OID 1.3.101.112 or 1.2.840.10045.2.1), found a PEM \"PUBLIC KEY\" block"),
        ];
        for (bytes, needle) in cases {
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = SigningKey::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{bytes:?}: {err}");
        }
        // Public keys: the right label and algorithm, or what was found.
        let x25519_public = {
            let info = pkcs8::spki::SubjectPublicKeyInfoRef {
                algorithm: pkcs8::AlgorithmIdentifierRef { oid: OID_X25519, parameters: None },
                subject_public_key: pkcs8::der::asn1::BitStringRef::from_bytes(&[9; 32]).unwrap(),
            };
            pkcs8::Document::try_from(info).unwrap().to_pem("PUBLIC KEY", LineEnding::LF).unwrap()
        };
        let err = decode_public_pem(&x25519_public, &ED25519_PUBLIC_KEY).unwrap_err().to_string();
        assert_eq!(err, "expected an Ed25519 public key (PEM \"PUBLIC KEY\", OID 1.3.101.112), found an X25519 key (OID 1.3.101.110)");
        assert!(decode_public_pem(&public_pem, &ED25519_PUBLIC_KEY).is_ok());
        let err = decode_public_pem("", &ED25519_PUBLIC_KEY).unwrap_err().to_string();
        assert_eq!(err, "the key is empty; expected an Ed25519 public key (PEM \"PUBLIC KEY\", OID 1.3.101.112)");
    }

    #[test]
    fn readable_private_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        SigningKey::generate(SignAlg::Ed25519).save(&path, Overwrite::Refuse).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = SigningKey::load(&path).unwrap_err();
            assert!(matches!(err, KeyError::Permissions { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        SigningKey::load(&path).unwrap();
    }

    #[test]
    fn raw_public_keys_are_strict() {
        let ed = SigningKey::generate(SignAlg::Ed25519).verifying_key();
        assert_eq!(VerifyingKey::from_raw(SignAlg::Ed25519, &ed.to_raw()).unwrap(), ed);
        assert!(VerifyingKey::from_raw(SignAlg::Ed25519, &ed.to_raw()[..31]).is_err());
        // the identity point is small-order
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert!(VerifyingKey::from_raw(SignAlg::Ed25519, &ident).unwrap_err().to_string().contains("weak"));
        let p = SigningKey::generate(SignAlg::P256).verifying_key();
        let raw = p.to_raw();
        assert_eq!(raw.len(), 65);
        assert_eq!(VerifyingKey::from_raw(SignAlg::P256, &raw).unwrap(), p);
        let mut bad = raw.clone();
        bad[64] ^= 1;
        assert!(VerifyingKey::from_raw(SignAlg::P256, &bad).is_err());
        let mut compressed = raw.clone();
        compressed[0] = 0x02;
        assert!(VerifyingKey::from_raw(SignAlg::P256, &compressed[..33]).is_err());
    }

    #[test]
    fn p256_high_s_signatures_are_refused() {
        let key = SigningKey::generate(SignAlg::P256);
        let sig = key.sign(b"m");
        let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        assert!(parsed.normalize_s().is_none(), "signer must emit low-S");
        // s' = n - s is the malleated twin, valid under plain ECDSA
        let high = p256::ecdsa::Signature::from_scalars(parsed.r(), -*parsed.s()).unwrap();
        assert!(matches!(key.verifying_key().verify(b"m", &high.to_bytes()), Err(KeyError::BadSignature)));
        key.verifying_key().verify(b"m", &sig).unwrap();
    }

    #[test]
    fn p256_keys_are_prepared_for_openssl_and_every_backend_agrees() {
        let key = SigningKey::generate(SignAlg::P256);
        let public = VerifyingKey::from_raw(SignAlg::P256, &key.verifying_key().to_raw()).unwrap();
        let VerifyingKey::P256(prepared) = &public else { unreachable!() };
        assert!(prepared.openssl().is_some(), "OpenSSL must accept every point the p256 crate accepts");
        let sig = key.sign(b"m");
        for backend in P256Backend::ALL {
            public.verify_p256_with(backend, b"m", &sig).unwrap();
            assert!(matches!(public.verify_p256_with(backend, b"n", &sig), Err(KeyError::BadSignature)), "{backend:?}");
        }
    }

    #[test]
    fn group_key_debug_hides_bytes() {
        let k = GroupKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{k:?}"), "GroupKey(<secret>)");
        assert_ne!(GroupKey::generate().as_bytes(), GroupKey::generate().as_bytes());
    }
}
