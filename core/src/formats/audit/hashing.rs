//! The hashes of the audit log: record hashes (the chain) and the origin hash
//! the first record links to. Both are SHA-256 with a domain-separation prefix,
//! so that no record hash can be confused with any other hash mqseal computes.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Prefix of every record hash: `SHA-256(RECORD_DOMAIN || line)`.
pub const RECORD_DOMAIN: &[u8] = b"mqseal-audit-v1 record\n";

/// Prefix of the origin hash: `SHA-256(ORIGIN_DOMAIN || origin)`.
pub const ORIGIN_DOMAIN: &[u8] = b"mqseal-audit-v1 origin\n";

/// The hash of one record: over its line's bytes, without the newline.
pub fn record_hash(line: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(RECORD_DOMAIN);
    h.update(line);
    h.finalize().into()
}

/// What record 0's `prev` holds: a hash of the log's origin name.
pub fn origin_hash(origin: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(ORIGIN_DOMAIN);
    h.update(origin.as_bytes());
    h.finalize().into()
}

/// Plain SHA-256, for callers hashing material they audit (envelopes, policies).
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex of `bytes` to `out` (no allocation beyond `out`).
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    // Only ASCII hex digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses exactly 64 lowercase hex digits (the only spelling records use).
pub fn hash_from_hex(text: &str) -> Option<Hash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let h = sha256(b"abc");
        let text = to_hex(&h);
        assert_eq!(text, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_from_hex(&text), Some(h));
        assert_eq!(hash_from_hex(&text.to_uppercase()), None, "uppercase is not the canonical spelling");
        assert_eq!(hash_from_hex(&text[1..]), None);
        assert_eq!(hash_from_hex(&format!("{}g", &text[1..])), None);
    }

    #[test]
    fn domains_separate_record_and_origin_hashes() {
        assert_ne!(record_hash(b"x"), origin_hash("x"));
        assert_ne!(record_hash(b"x"), sha256(b"x"));
    }
}
