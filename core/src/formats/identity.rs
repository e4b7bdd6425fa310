//! Public device identities (`ID.pub`) and the device directory that holds a
//! device's keys.
//!
//! `ID.pub` is canonical JSON (RFC 8785):
//! `{"format":"mqseal-identity-v1","id":"1111","kx":{"alg":"X25519","public":"<b64url>"},"sign":{"alg":"Ed25519","public":"<b64url>"}}`
//! with base64url without padding. Parsing is strict: unknown or duplicate
//! fields, wrong algorithm names, wrong key lengths and invalid ids are refused.
//!
//! A device directory holds `ID.pub`, `ID.sign.pem` and `ID.kx.pem` (both 0600)
//! plus `seq` (the sequence counter, see [`crate::device::sequence`]). Other components
//! add their own files (`policy.json`, `keys.json`, `authority.pub`, ...); the
//! device's identity is the one `*.pub` that has a matching `*.sign.pem`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::device::sequence::{SequenceCounter, SequenceError};
use crate::formats::ids::{validate_id, IdError};
use crate::formats::keys::{hex, write_atomic, KeyError, KxPublic, KxSecret, Overwrite, SignAlg, SigningKey, VerifyingKey};

/// The `format` value of identity files.
pub const IDENTITY_FORMAT: &str = "mqseal-identity-v1";

/// The algorithm choice for `keygen`.
pub type SignAlgChoice = SignAlg;

/// File stems a device id may not take because other components put files with
/// those names in the device directory (`authority.pub`, `broker.pub`).
pub const RESERVED_DEVICE_IDS: &[&str] = &["authority", "broker"];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid identity file: {detail}")]
    Json { path: String, detail: String },
    #[error("{path}: field {field}: {detail}")]
    Field { path: String, field: &'static str, detail: String },
    #[error("{path}: {source}")]
    Id { path: String, source: IdError },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("{dir}: no device identity (no *.pub file with a matching *.sign.pem); run `mqseal keygen ID --out {dir}`")]
    NoIdentity { dir: PathBuf },
    #[error("{dir}: several device identities ({names}); a device directory holds exactly one")]
    SeveralIdentities { dir: PathBuf, names: String },
    #[error("{path}: identity file says id {inside:?} but its file name says {outside:?}")]
    IdMismatch { path: PathBuf, inside: String, outside: String },
    #[error("{path}: this private key does not match the public key in {identity}")]
    KeyMismatch { path: PathBuf, identity: PathBuf },
    #[error("{dir}: refusing to overwrite existing {path}")]
    Exists { dir: PathBuf, path: PathBuf },
    #[error("device id {0:?} is reserved (it would collide with a file other components keep in the device directory)")]
    ReservedId(String),
}

impl IdentityError {
    /// A stable short token (docs/REASONS.md); wrapped key and counter errors give theirs.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::Io { .. } => "file-io",
            IdentityError::Json { .. } | IdentityError::Field { .. } | IdentityError::Id { .. } => "identity-malformed",
            IdentityError::Key(e) => e.reason(),
            IdentityError::Sequence(e) => e.reason(),
            IdentityError::NoIdentity { .. } => "no-identity",
            IdentityError::SeveralIdentities { .. } => "several-identities",
            IdentityError::IdMismatch { .. } => "identity-id-mismatch",
            IdentityError::KeyMismatch { .. } => "identity-key-mismatch",
            IdentityError::Exists { .. } => "file-exists",
            IdentityError::ReservedId(_) => "identity-reserved-id",
        }
    }

}

/// A device's public identity: its id, signing key and key-agreement key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub sign: VerifyingKey,
    pub kx: KxPublic,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityJson {
    format: String,
    id: String,
    sign: KeyJson,
    kx: KeyJson,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    alg: String,
    public: String,
}

fn decode_b64url(s: &str) -> Result<Vec<u8>, String> {
    // The engine refuses padding and non-zero trailing bits, so the encoding is unique.
    URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("not unpadded base64url: {e}"))
}

impl Identity {
    /// Parses identity JSON; `origin` names the source (a path) in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Identity, IdentityError> {
        let raw: IdentityJson = serde_json::from_slice(bytes)
            .map_err(|e| IdentityError::Json { path: origin.to_owned(), detail: e.to_string() })?;
        let field = |field: &'static str, detail: String| IdentityError::Field { path: origin.to_owned(), field, detail };
        if raw.format != IDENTITY_FORMAT {
            return Err(field("format", format!("{:?}, expected {IDENTITY_FORMAT:?}", raw.format)));
        }
        validate_id("device", &raw.id).map_err(|source| IdentityError::Id { path: origin.to_owned(), source })?;
        let alg = SignAlg::from_identity_name(&raw.sign.alg)
            .ok_or_else(|| field("sign.alg", format!("{:?}, expected \"Ed25519\" or \"ESP256\"", raw.sign.alg)))?;
        let sign_raw = decode_b64url(&raw.sign.public).map_err(|d| field("sign.public", d))?;
        let sign = VerifyingKey::from_raw(alg, &sign_raw).map_err(|e| field("sign.public", e.to_string()))?;
        if raw.kx.alg != "X25519" {
            return Err(field("kx.alg", format!("{:?}, expected \"X25519\"", raw.kx.alg)));
        }
        let kx_raw = decode_b64url(&raw.kx.public).map_err(|d| field("kx.public", d))?;
        let kx = KxPublic::from_slice(&kx_raw).map_err(|e| field("kx.public", e.to_string()))?;
        Ok(Identity { id: raw.id, sign, kx })
    }

    /// Canonical JSON bytes (what `ID.pub` holds, plus a trailing newline when saved).
    pub fn to_json(&self) -> Vec<u8> {
        let raw = IdentityJson {
            format: IDENTITY_FORMAT.to_owned(),
            id: self.id.clone(),
            sign: KeyJson { alg: self.sign.alg().identity_name().to_owned(), public: URL_SAFE_NO_PAD.encode(self.sign.to_raw()) },
            kx: KeyJson { alg: "X25519".to_owned(), public: URL_SAFE_NO_PAD.encode(self.kx.as_bytes()) },
        };
        // Only strings: canonicalization cannot fail.
        crate::formats::canonical_json::to_vec(&raw).unwrap_or_default()
    }

    /// `sha256:<hex>` over the canonical JSON: names id and both keys at once.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.to_json())))
    }

    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let bytes = fs::read(path).map_err(|source| IdentityError::Io { path: path.to_owned(), source })?;
        Identity::from_json(&bytes, &path.display().to_string())
    }

    /// Writes the identity (mode 0644) atomically.
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<(), IdentityError> {
        let mut bytes = self.to_json();
        bytes.push(b'\n');
        Ok(write_atomic(path, &bytes, 0o644, overwrite)?)
    }
}

/// A device directory (`--device DIR`).
#[derive(Debug, Clone)]
pub struct DeviceDir {
    dir: PathBuf,
    identity: Identity,
}

impl DeviceDir {
    /// Creates `dir` (mode 0700) if needed and writes a fresh identity: `ID.sign.pem`,
    /// `ID.kx.pem` (0600), `seq` (starting at 1) and finally `ID.pub`. Refuses
    /// to overwrite anything or to add a second identity to a directory.
    pub fn keygen(dir: &Path, id: &str, alg: SignAlgChoice) -> Result<DeviceDir, IdentityError> {
        validate_id("device", id).map_err(|source| IdentityError::Id { path: dir.display().to_string(), source })?;
        if RESERVED_DEVICE_IDS.contains(&id) {
            return Err(IdentityError::ReservedId(id.to_owned()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| IdentityError::Io { path: dir.to_owned(), source })?;
        let paths = [
            dir.join(format!("{id}.pub")),
            dir.join(format!("{id}.sign.pem")),
            dir.join(format!("{id}.kx.pem")),
            dir.join(SequenceCounter::FILE_NAME),
        ];
        let existing = identity_stems(dir)?;
        if !existing.is_empty() && existing != [id] {
            return Err(IdentityError::SeveralIdentities { dir: dir.to_owned(), names: format!("{} already, adding {id}", existing.join(", ")) });
        }
        for path in &paths {
            if fs::symlink_metadata(path).is_ok() {
                return Err(IdentityError::Exists { dir: dir.to_owned(), path: path.clone() });
            }
        }
        let sign = SigningKey::generate(alg);
        let kx = KxSecret::generate();
        sign.save(&paths[1], Overwrite::Refuse)?;
        kx.save(&paths[2], Overwrite::Refuse)?;
        SequenceCounter::create(&paths[3])?;
        let identity = Identity { id: id.to_owned(), sign: sign.verifying_key(), kx: kx.public() };
        // Written last: a directory without ID.pub is not an identity yet.
        identity.save(&paths[0], Overwrite::Refuse)?;
        Ok(DeviceDir { dir: dir.to_owned(), identity })
    }

    /// Opens a device directory: finds the single `ID.pub` with a matching
    /// `ID.sign.pem` and parses it. Private keys are loaded on demand.
    pub fn open(dir: &Path) -> Result<DeviceDir, IdentityError> {
        let stems = identity_stems(dir)?;
        let stem = match stems.as_slice() {
            [] => return Err(IdentityError::NoIdentity { dir: dir.to_owned() }),
            [one] => one.clone(),
            several => return Err(IdentityError::SeveralIdentities { dir: dir.to_owned(), names: several.join(", ") }),
        };
        let path = dir.join(format!("{stem}.pub"));
        let identity = Identity::load(&path)?;
        if identity.id != stem {
            return Err(IdentityError::IdMismatch { path, inside: identity.id, outside: stem });
        }
        Ok(DeviceDir { dir: dir.to_owned(), identity })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn id(&self) -> &str {
        &self.identity.id
    }

    /// `DIR/name`, for files other components keep here.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pub", self.identity.id))
    }

    pub fn sign_key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.sign.pem", self.identity.id))
    }

    pub fn kx_key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.kx.pem", self.identity.id))
    }

    pub fn seq_path(&self) -> PathBuf {
        self.dir.join(SequenceCounter::FILE_NAME)
    }

    /// Loads `ID.sign.pem` and checks it matches `ID.pub`.
    pub fn signing_key(&self) -> Result<SigningKey, IdentityError> {
        let path = self.sign_key_path();
        let key = SigningKey::load(&path)?;
        if key.verifying_key() != self.identity.sign {
            return Err(IdentityError::KeyMismatch { path, identity: self.identity_path() });
        }
        Ok(key)
    }

    /// Loads `ID.kx.pem` and checks it matches `ID.pub`.
    pub fn kx_secret(&self) -> Result<KxSecret, IdentityError> {
        let path = self.kx_key_path();
        let key = KxSecret::load(&path)?;
        if key.public() != self.identity.kx {
            return Err(IdentityError::KeyMismatch { path, identity: self.identity_path() });
        }
        Ok(key)
    }

    /// Opens (and locks) the device's sequence counter `DIR/seq`.
    pub fn sequence(&self) -> Result<SequenceCounter, IdentityError> {
        Ok(SequenceCounter::open(&self.seq_path())?)
    }
}

/// Stems `X` for which both `X.pub` and `X.sign.pem` exist in `dir`, sorted.
fn identity_stems(dir: &Path) -> Result<Vec<String>, IdentityError> {
    let entries = fs::read_dir(dir).map_err(|source| IdentityError::Io { path: dir.to_owned(), source })?;
    let mut stems = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| IdentityError::Io { path: dir.to_owned(), source })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".pub") {
            if dir.join(format!("{stem}.sign.pem")).exists() {
                stems.push(stem.to_owned());
            }
        }
    }
    stems.sort();
    Ok(stems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Identity {
        Identity {
            id: "1111".into(),
            sign: SigningKey::ed25519_from_seed(&[7; 32]).verifying_key(),
            kx: KxSecret::from_bytes([9; 32]).public(),
        }
    }

    #[test]
    fn identity_json_round_trips_canonically() {
        let id = sample();
        let json = id.to_json();
        assert!(crate::formats::canonical_json::is_canonical(&json));
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.starts_with(r#"{"format":"mqseal-identity-v1","id":"1111","kx":{"alg":"X25519","public":""#), "{text}");
        assert!(!text.contains('='));
        assert_eq!(Identity::from_json(&json, "x").unwrap(), id);
        let p = Identity { sign: SigningKey::generate(SignAlg::P256).verifying_key(), ..sample() };
        assert!(String::from_utf8(p.to_json()).unwrap().contains(r#""alg":"ESP256""#));
        assert_eq!(Identity::from_json(&p.to_json(), "x").unwrap(), p);
    }

    #[test]
    fn identity_parsing_is_strict() {
        let good: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        let ed = good["sign"]["public"].as_str().unwrap().to_owned();
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            Identity::from_json(v.to_string().as_bytes(), "ID.pub").unwrap_err().to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            (mutate(&|v| v["extra"] = 1.into()), "unknown field"),
            (mutate(&|v| v["sign"]["x"] = 1.into()), "unknown field"),
            (mutate(&|v| v["format"] = "mqseal-identity-v2".into()), "field format"),
            (mutate(&|v| v["id"] = "a/b".into()), "device id"),
            (mutate(&|v| v["sign"]["alg"] = "EdDSA".into()), "field sign.alg"),
            (mutate(&|v| v["kx"]["alg"] = "X448".into()), "field kx.alg"),
            (mutate(&|v| v["sign"]["public"] = ed[..40].into()), "field sign.public"),
            (mutate(&|v| v["sign"]["public"] = format!("{ed}=").into()), "field sign.public"),
            (mutate(&|v| v["sign"]["alg"] = "ESP256".into()), "field sign.public"),
            (mutate(&|v| v["kx"]["public"] = "AAAA".into()), "field kx.public"),
            (mutate(&|v| { v.as_object_mut().unwrap().remove("kx"); }), "missing field"),
        ];
        for (err, needle) in cases {
            assert!(err.contains(needle) && err.contains("ID.pub"), "{err} / {needle}");
        }
        let dup = br#"{"format":"mqseal-identity-v1","id":"a","id":"b","sign":{"alg":"Ed25519","public":""},"kx":{"alg":"X25519","public":""}}"#;
        assert!(Identity::from_json(dup, "x").unwrap_err().to_string().contains("duplicate"));
    }

    #[test]
    fn keygen_then_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dev");
        for (n, alg) in [SignAlg::Ed25519, SignAlg::P256].into_iter().enumerate() {
            let dir = dir.join(n.to_string());
            let made = DeviceDir::keygen(&dir, "1111", alg).unwrap();
            assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
            for p in [made.sign_key_path(), made.kx_key_path()] {
                assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
            }
            // extra files from other components do not confuse open
            fs::write(dir.join("authority.pub"), b"{}").unwrap();
            fs::write(dir.join("policy.json"), b"{}").unwrap();
            let opened = DeviceDir::open(&dir).unwrap();
            assert_eq!(opened.identity(), made.identity());
            assert_eq!(opened.signing_key().unwrap().alg(), alg);
            opened.kx_secret().unwrap();
            assert_eq!(opened.sequence().unwrap().next().unwrap(), 1);
            // no overwrite, no second identity
            let err = DeviceDir::keygen(&dir, "1111", alg).unwrap_err().to_string();
            assert!(err.contains("refusing to overwrite"), "{err}");
            let err = DeviceDir::keygen(&dir, "2222", alg).unwrap_err().to_string();
            assert!(err.contains("several device identities"), "{err}");
        }
        assert!(matches!(DeviceDir::keygen(&dir, "authority", SignAlg::Ed25519), Err(IdentityError::ReservedId(_))));
        assert!(DeviceDir::keygen(&dir, "../x", SignAlg::Ed25519).unwrap_err().to_string().contains("device id"));
    }

    #[test]
    fn open_reports_missing_several_and_mismatched_identities() {
        let tmp = tempfile::tempdir().unwrap();
        let err = DeviceDir::open(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("no device identity"), "{err}");
        let a = tmp.path().join("a");
        DeviceDir::keygen(&a, "1111", SignAlg::Ed25519).unwrap();
        let b = tmp.path().join("b");
        DeviceDir::keygen(&b, "2222", SignAlg::Ed25519).unwrap();
        for f in ["2222.pub", "2222.sign.pem"] {
            fs::copy(b.join(f), a.join(f)).unwrap();
        }
        assert!(DeviceDir::open(&a).unwrap_err().to_string().contains("several device identities (1111, 2222)"));
        // a key that does not match ID.pub
        fs::remove_file(a.join("2222.pub")).unwrap();
        fs::remove_file(a.join("2222.sign.pem")).unwrap();
        fs::remove_file(a.join("1111.sign.pem")).unwrap();
        fs::copy(b.join("2222.sign.pem"), a.join("1111.sign.pem")).unwrap();
        fs::set_permissions(a.join("1111.sign.pem"), fs::Permissions::from_mode(0o600)).unwrap();
        let err = DeviceDir::open(&a).unwrap().signing_key().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        // file name and content disagree
        fs::copy(b.join("2222.pub"), a.join("1111.pub")).unwrap();
        assert!(DeviceDir::open(&a).unwrap_err().to_string().contains("says id \"2222\""));
    }
}
