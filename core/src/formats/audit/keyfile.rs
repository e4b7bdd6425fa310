//! Loading the broker's checkpoint key: the private key the plugin signs with,
//! and the public key an auditor verifies with.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::formats::keys::{KeyError, ED25519_PRIVATE_KEY, ED25519_PUBLIC_KEY};

/// A key file that could not be used. Never includes key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {problem}")]
    Bad { path: String, problem: String },
    /// What the file holds instead of the key (empty, not PEM, another algorithm),
    /// or a private key file others can read: the same checks as for device keys.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn bad(path: &Path, problem: impl Into<String>) -> KeyFileError {
    KeyFileError::Bad { path: path.display().to_string(), problem: problem.into() }
}

/// Loads an Ed25519 private key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`),
/// as `mqseal keygen --broker` writes it. Refused, like every private key file
/// mqseal reads, unless only its owner can read it ([`crate::formats::keys::read_private_key`]).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let (doc, _) = crate::formats::keys::read_private_key(path, &ED25519_PRIVATE_KEY)?;
    SigningKey::from_pkcs8_der(doc.as_bytes()).map_err(|e| bad(path, format!("not a valid Ed25519 private key ({e})")))
}

/// What `load_verifying_key` accepts, in its error messages.
const VERIFYING_KEY_FILE: &str =
    "expected an Ed25519 key: a PEM \"PRIVATE KEY\" or \"PUBLIC KEY\" (OID 1.3.101.112), or an mqseal identity JSON file";

/// Loads the public key that verifies checkpoints. Accepts a PKCS#8 PEM private
/// key (its public half is used; the file must be 0600 like any private key), a
/// PEM SubjectPublicKeyInfo public key (`-----BEGIN PUBLIC KEY-----`), or an
/// mqseal identity JSON file whose `sign` key is Ed25519.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyFileError> {
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|source| KeyFileError::Io { path: path.display().to_string(), source })?,
    );
    let text = std::str::from_utf8(&bytes).unwrap_or_default().trim_start();
    if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        return load_signing_key(path).map(|k| k.verifying_key());
    }
    if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        let der = crate::formats::keys::decode_public_pem(text, &ED25519_PUBLIC_KEY).map_err(|e| e.in_file(path))?;
        return VerifyingKey::from_public_key_der(der.as_bytes())
            .map_err(|e| bad(path, format!("not a valid Ed25519 public key ({e})")));
    }
    if text.starts_with('{') {
        return identity_sign_key(text).map_err(|problem| bad(path, problem));
    }
    let found = match crate::formats::keys::pem_text_problem(&bytes, &ED25519_PUBLIC_KEY) {
        // Empty, binary, or no PEM block at all.
        Some(problem) => return Err(problem.in_file(path).into()),
        // A PEM block of another kind (or text before the block).
        None => text.lines().next().unwrap_or_default().trim().to_string(),
    };
    Err(bad(path, format!("{VERIFYING_KEY_FILE}, found {found:?}")))
}

fn identity_sign_key(text: &str) -> Result<VerifyingKey, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("format").and_then(|v| v.as_str()) != Some("mqseal-identity-v1") {
        return Err("field format: expected \"mqseal-identity-v1\"".into());
    }
    let sign = value.get("sign").ok_or("field sign is missing")?;
    if sign.get("alg").and_then(|v| v.as_str()) != Some("Ed25519") {
        return Err("field sign.alg: checkpoints are signed with Ed25519 keys only".into());
    }
    let public = sign.get("public").and_then(|v| v.as_str()).ok_or("field sign.public is missing")?;
    let bytes = URL_SAFE_NO_PAD.decode(public).map_err(|_| "field sign.public: not unpadded base64url")?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "field sign.public: not 32 bytes")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "field sign.public: not a valid Ed25519 public key".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use pkcs8::der::pem::LineEnding;

    #[test]
    fn loads_all_three_public_forms() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let private = dir.path().join("broker.pem");
        std::fs::write(&private, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&private).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "a private key others can read is refused: {err}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = dir.path().join("broker.pub.pem");
        std::fs::write(&public, key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
        let identity = dir.path().join("broker.pub");
        std::fs::write(
            &identity,
            format!(
                "{{\"format\":\"mqseal-identity-v1\",\"id\":\"broker\",\"sign\":{{\"alg\":\"Ed25519\",\"public\":\"{}\"}}}}",
                URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
            ),
        )
        .unwrap();
        assert_eq!(load_signing_key(&private).unwrap().to_bytes(), key.to_bytes());
        for p in [&private, &public, &identity] {
            assert_eq!(load_verifying_key(p).unwrap(), key.verifying_key(), "{}", p.display());
        }
        let err = load_signing_key(&public).unwrap_err().to_string();
        assert!(err.contains("broker.pub.pem") && err.contains("PKCS#8"), "{err}");
        std::fs::write(&identity, "{\"format\":\"mqseal-identity-v1\",\"sign\":{\"alg\":\"ESP256\",\"public\":\"AA\"}}").unwrap();
        assert!(load_verifying_key(&identity).unwrap_err().to_string().contains("sign.alg"));
        let err = load_verifying_key(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
