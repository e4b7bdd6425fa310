//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes,
//! signed with the broker's Ed25519 key.
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n
//! \n
//! — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\n
//! ```
//! The signature covers the body (the three lines, final newline included). The
//! key ID is `SHA-256(key name || 0x0A || 0x01 || public key)[..4]` and the key
//! name is the origin, as tlog-checkpoint recommends.
//!
//! A checkpoint file holds one or more notes; in a file of several (the history
//! beside the log) each note is followed by one blank line.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::hashing::Hash;

/// The signature type byte C2SP signed-note assigns to Ed25519.
const ED25519_SIGNATURE_TYPE: u8 = 0x01;

/// The em dash that starts a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Notes with more signatures than this are refused (C2SP asks for at least 16).
const MAX_SIGNATURES: usize = 64;

/// The three facts a checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text that is signed.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }

    /// The complete signed note, signed by `key` under the key name `origin`.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let signature = key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_id(&self.origin, &key.verifying_key()));
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.origin, STANDARD.encode(blob))
    }
}

/// The C2SP key ID of an Ed25519 key under a key name.
pub fn key_id(key_name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update([0x0a, ED25519_SIGNATURE_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Checks that `origin` can be a checkpoint origin and key name: non-empty, no
/// whitespace, no `+`, no control characters.
pub fn validate_origin(origin: &str) -> Result<(), &'static str> {
    if origin.is_empty() {
        return Err("is empty");
    }
    if origin.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    if origin.contains('+') {
        return Err("contains '+'");
    }
    if origin.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    Ok(())
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub key_name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// A parsed checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed text (the body).
    pub body: String,
    pub signatures: Vec<NoteSignature>,
}

/// What is wrong with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("contains a control character other than newline")]
    ControlCharacter,
    #[error("does not end with a newline")]
    NoFinalNewline,
    #[error("has no blank line between the checkpoint and its signatures")]
    NoSignatureBlock,
    #[error("has no signature lines")]
    NoSignatures,
    #[error("has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("signature line {0}: {1}")]
    BadSignatureLine(usize, &'static str),
    #[error("checkpoint has {0} lines; expected exactly origin, tree size and root hash")]
    WrongLineCount(usize),
    #[error("origin {0:?} {1}")]
    BadOrigin(String, &'static str),
    #[error("tree size {0:?} is not a decimal number without leading zeros")]
    BadSize(String),
    #[error("root hash {0:?} is not the base64 of 32 bytes")]
    BadRoot(String),
    #[error("signature by {0} (a known key) does not verify")]
    BadSignature(String),
    #[error("not signed by any of the given keys (signed by: {0})")]
    NoKnownSignature(String),
}

impl SignedCheckpoint {
    /// Parses one note (the full text, ending in the newline of its last signature line).
    pub fn parse(text: &str) -> Result<SignedCheckpoint, CheckpointError> {
        if text.chars().any(|c| c != '\n' && c.is_ascii_control()) {
            return Err(CheckpointError::ControlCharacter);
        }
        if !text.ends_with('\n') {
            return Err(CheckpointError::NoFinalNewline);
        }
        let split = text.rfind("\n\n").ok_or(CheckpointError::NoSignatureBlock)?;
        let body = &text[..=split];
        let signature_block = &text[split + 2..];
        if signature_block.is_empty() {
            return Err(CheckpointError::NoSignatures);
        }
        let mut signatures = Vec::new();
        for (i, line) in signature_block.trim_end_matches('\n').split('\n').enumerate() {
            if signatures.len() == MAX_SIGNATURES {
                return Err(CheckpointError::TooManySignatures);
            }
            signatures.push(parse_signature_line(line).map_err(|why| CheckpointError::BadSignatureLine(i + 1, why))?);
        }
        let lines: Vec<&str> = body.trim_end_matches('\n').split('\n').collect();
        if lines.len() != 3 {
            return Err(CheckpointError::WrongLineCount(lines.len()));
        }
        let origin = lines[0];
        validate_origin(origin).map_err(|why| CheckpointError::BadOrigin(origin.to_string(), why))?;
        let size_text = lines[1];
        let canonical_number = !size_text.is_empty()
            && size_text.bytes().all(|b| b.is_ascii_digit())
            && (size_text == "0" || !size_text.starts_with('0'));
        let size: u64 = match size_text.parse() {
            Ok(n) if canonical_number => n,
            _ => return Err(CheckpointError::BadSize(size_text.to_string())),
        };
        let root: Hash = STANDARD
            .decode(lines[2])
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CheckpointError::BadRoot(lines[2].to_string()))?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint { origin: origin.to_string(), size, root },
            body: body.to_string(),
            signatures,
        })
    }

    /// The note as text again (parsing is strict, so this is the text it came from).
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n", self.body);
        for sig in &self.signatures {
            let mut blob = sig.key_id.to_vec();
            blob.extend_from_slice(&sig.signature);
            text.push_str(&format!("{SIGNATURE_PREFIX}{} {}\n", sig.key_name, STANDARD.encode(blob)));
        }
        text
    }

    /// Verifies the note against trusted keys, as C2SP signed-note says: unknown
    /// keys are ignored, a failing signature by a known key rejects the note, and
    /// at least one known key must have signed. Returns the key name that verified.
    pub fn verify(&self, keys: &[VerifyingKey]) -> Result<String, CheckpointError> {
        let mut verified = None;
        for sig in &self.signatures {
            for key in keys {
                if key_id(&sig.key_name, key) != sig.key_id {
                    continue;
                }
                let ok = <[u8; 64]>::try_from(sig.signature.as_slice())
                    .map(|bytes| key.verify_strict(self.body.as_bytes(), &Signature::from_bytes(&bytes)).is_ok())
                    .unwrap_or(false);
                if !ok {
                    return Err(CheckpointError::BadSignature(sig.key_name.clone()));
                }
                verified.get_or_insert_with(|| sig.key_name.clone());
            }
        }
        verified.ok_or_else(|| {
            let names: Vec<&str> = self.signatures.iter().map(|s| s.key_name.as_str()).collect();
            CheckpointError::NoKnownSignature(names.join(", "))
        })
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, &'static str> {
    let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or("does not start with an em dash and a space")?;
    let (name, blob) = rest.split_once(' ').ok_or("has no space between key name and signature")?;
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err("key name is empty or contains whitespace or '+'");
    }
    let bytes = STANDARD.decode(blob).map_err(|_| "signature is not standard base64")?;
    if bytes.len() < 5 {
        return Err("signature is shorter than a key ID and one byte");
    }
    Ok(NoteSignature { key_name: name.to_string(), key_id: [bytes[0], bytes[1], bytes[2], bytes[3]], signature: bytes[4..].to_vec() })
}

/// A checkpoint found in a file, with the line its note starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointAt {
    pub line: u64,
    pub note: SignedCheckpoint,
}

/// Parses a file of one or more notes, each but possibly the last followed by a
/// blank line. Errors carry the line number where the bad note starts.
pub fn parse_checkpoints(text: &str) -> Result<Vec<CheckpointAt>, (u64, CheckpointError)> {
    let mut notes = Vec::new();
    let mut rest = text;
    let mut line = 1u64;
    while !rest.is_empty() {
        let Some(body_end) = rest.find("\n\n") else { return Err((line, CheckpointError::NoSignatureBlock)) };
        let signatures = body_end + 2;
        let end = rest[signatures..].find("\n\n").map(|e| signatures + e + 1).unwrap_or(rest.len());
        let note_text = &rest[..end];
        let note = SignedCheckpoint::parse(note_text).map_err(|e| (line, e))?;
        notes.push(CheckpointAt { line, note });
        line += note_text.matches('\n').count() as u64;
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix('\n') {
            rest = after;
            line += 1;
        }
    }
    Ok(notes)
}

/// A checkpoint file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {error}")]
    Bad { path: String, line: u64, error: CheckpointError },
}

/// Reads a checkpoint file. `Ok(None)` when it does not exist.
pub fn read_checkpoint_file(path: &Path) -> Result<Option<Vec<CheckpointAt>>, CheckpointFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointFileError::Io { path: path.display().to_string(), source }),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| CheckpointFileError::Bad { path: path.display().to_string(), line: 1, error: CheckpointError::NotUtf8 })?;
    parse_checkpoints(&text)
        .map(Some)
        .map_err(|(line, error)| CheckpointFileError::Bad { path: path.display().to_string(), line, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn cp() -> Checkpoint {
        Checkpoint { origin: "example.org/mqseal-audit".into(), size: 12, root: [5; 32] }
    }

    #[test]
    fn sign_parse_verify_round_trip() {
        let k = key(1);
        let text = cp().sign(&k);
        assert!(text.starts_with("example.org/mqseal-audit\n12\nBQUF"));
        assert!(text.contains("\n\n\u{2014} example.org/mqseal-audit "));
        let note = SignedCheckpoint::parse(&text).unwrap();
        assert_eq!(note.checkpoint, cp());
        assert_eq!(note.to_text(), text);
        assert_eq!(note.verify(&[k.verifying_key()]).unwrap(), "example.org/mqseal-audit");
        // An unknown key is ignored; with no known key the note is refused.
        assert!(matches!(note.verify(&[key(2).verifying_key()]), Err(CheckpointError::NoKnownSignature(_))));
        assert_eq!(note.verify(&[key(2).verifying_key(), k.verifying_key()]).unwrap(), "example.org/mqseal-audit");
    }

    #[test]
    fn key_id_follows_c2sp() {
        // The C2SP signed-note example key name and the RFC 8032 test 1 public key.
        let public: [u8; 32] = [
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1,
            0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
        ];
        let vk = VerifyingKey::from_bytes(&public).unwrap();
        let mut h = Sha256::new();
        h.update(b"name\n\x01");
        h.update(public);
        assert_eq!(key_id("name", &vk)[..], h.finalize()[..4]);
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let k = key(3);
        let text = cp().sign(&k);
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.to_vec();
                b[i] ^= 1 << bit;
                let ok = std::str::from_utf8(&b)
                    .ok()
                    .and_then(|t| parse_checkpoints(t).ok())
                    .filter(|notes| notes.len() == 1)
                    .map(|notes| notes[0].note.verify(&[k.verifying_key()]).is_ok() && notes[0].note.checkpoint == cp())
                    .unwrap_or(false);
                assert!(!ok, "flip of bit {bit} in byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn strict_parsing() {
        let good = cp().sign(&key(1));
        let cases: Vec<(String, &str)> = vec![
            (good.replacen("\n12\n", "\n012\n", 1), "tree size"),
            (good.replacen("\n12\n", "\n+12\n", 1), "tree size"),
            (good.replacen("\n12\n", "\n12\next\n", 1), "4 lines"),
            (good.replacen("mqseal-audit\n12", "mqseal audit\n12", 1), "origin"),
            (good.replacen("BQUF", "BQU", 1), "root hash"),
            (good.replacen("\u{2014}", "-", 1), "em dash"),
            (good.trim_end().to_string(), "newline"),
            (good.replacen("\n\n", "\n", 1), "blank line"),
            (good.replacen("12\n", "12\r\n", 1), "control"),
        ];
        for (text, expect) in cases {
            let err = SignedCheckpoint::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }

    #[test]
    fn files_of_several_notes() {
        let k = key(1);
        let a = Checkpoint { size: 1, ..cp() }.sign(&k);
        let b = Checkpoint { size: 2, ..cp() }.sign(&k);
        let notes = parse_checkpoints(&format!("{a}\n{b}\n")).unwrap();
        assert_eq!(notes.iter().map(|n| (n.line, n.note.checkpoint.size)).collect::<Vec<_>>(), vec![(1, 1), (7, 2)]);
        // A single note without the separator, as the latest-checkpoint file holds it.
        assert_eq!(parse_checkpoints(&a).unwrap().len(), 1);
        let err = parse_checkpoints(&format!("{a}\n{}", &b[..b.len() - 3])).unwrap_err();
        assert_eq!(err.0, 7);
    }
}
