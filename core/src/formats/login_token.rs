//! Device-key login tokens (`plugin_opt_auth key`): the MQTT password is a short
//! token signed with the device's signing key, so devices need no shared passwords.
//!
//! Token text (ASCII, fits any MQTT password field):
//!
//! ```text
//! mqseal-login-v1.<timestamp_ms>.<base64url(signature), no padding>
//! ```
//!
//! The signature (Ed25519, or ECDSA P-256 as r||s) covers the UTF-8 bytes of
//!
//! ```text
//! "mqseal-login-v1\n" || client_id || "\n" || username || "\n" || timestamp_ms (decimal)
//! ```
//!
//! so a token is bound to one client id, one username and one moment. The broker
//! accepts it only within `max_age` in the past (and a small clock skew into the
//! future), and only if its timestamp is later than the last token it accepted
//! for that device, so a captured token cannot be used twice.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::formats::keys::{SigningKey, VerifyingKey};

/// The token's format tag, also the signature's domain separator.
pub const TOKEN_PREFIX: &str = "mqseal-login-v1";

/// How far in the future a token's timestamp may lie (device clocks drift).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Why a login token was refused. `reason()` gives the stable token for logs and audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("password is not an mqseal login token")]
    Malformed,
    #[error("login token is too old")]
    Expired,
    #[error("login token is dated in the future")]
    FromTheFuture,
    #[error("login token was already used (timestamp not newer than the last login)")]
    Reused,
    #[error("login token signature does not verify with the device key")]
    BadSignature,
}

impl LoginError {
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::Malformed => "login-malformed",
            LoginError::Expired => "login-expired",
            LoginError::FromTheFuture => "login-from-future",
            LoginError::Reused => "login-reused",
            LoginError::BadSignature => "login-bad-signature",
        }
    }
}

/// The bytes a token's signature covers (docs/LOGIN.md §3).
pub fn signed_bytes(client_id: &str, username: &str, timestamp_ms: u64) -> Vec<u8> {
    format!("{TOKEN_PREFIX}\n{client_id}\n{username}\n{timestamp_ms}").into_bytes()
}

/// Makes a token (the device side: `mqseal pub`/`sub`).
pub fn make_token(key: &SigningKey, client_id: &str, username: &str, timestamp_ms: u64) -> String {
    let signature = key.sign(&signed_bytes(client_id, username, timestamp_ms));
    format!("{TOKEN_PREFIX}.{timestamp_ms}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A token split into its parts, before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    pub timestamp_ms: u64,
    pub signature: Vec<u8>,
}

/// Splits a token; rejects anything but the exact format.
pub fn parse_token(password: &[u8]) -> Result<ParsedToken, LoginError> {
    let text = std::str::from_utf8(password).map_err(|_| LoginError::Malformed)?;
    let rest = text.strip_prefix(TOKEN_PREFIX).and_then(|r| r.strip_prefix('.')).ok_or(LoginError::Malformed)?;
    let (timestamp, signature) = rest.split_once('.').ok_or(LoginError::Malformed)?;
    if timestamp.is_empty() || timestamp.len() > 20 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LoginError::Malformed);
    }
    // Leading zeros would give one moment several spellings.
    if timestamp.len() > 1 && timestamp.starts_with('0') {
        return Err(LoginError::Malformed);
    }
    let timestamp_ms = timestamp.parse().map_err(|_| LoginError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| LoginError::Malformed)?;
    if signature.len() != 64 {
        return Err(LoginError::Malformed);
    }
    Ok(ParsedToken { timestamp_ms, signature })
}

/// Checks a token against the device's key, the clock and the last accepted login
/// (`last_login_ms`, 0 if none). Returns the timestamp to remember on success.
pub fn verify_token(
    password: &[u8],
    key: &VerifyingKey,
    client_id: &str,
    username: &str,
    now_ms: u64,
    max_age: Duration,
    last_login_ms: u64,
) -> Result<u64, LoginError> {
    let token = parse_token(password)?;
    if token.timestamp_ms > now_ms.saturating_add(MAX_CLOCK_SKEW.as_millis() as u64) {
        return Err(LoginError::FromTheFuture);
    }
    if now_ms.saturating_sub(token.timestamp_ms) > max_age.as_millis() as u64 {
        return Err(LoginError::Expired);
    }
    if token.timestamp_ms <= last_login_ms {
        return Err(LoginError::Reused);
    }
    key.verify(&signed_bytes(client_id, username, token.timestamp_ms), &token.signature)
        .map_err(|_| LoginError::BadSignature)?;
    Ok(token.timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::keys::SignAlg;

    const NOW: u64 = 1_800_000_000_000;
    const AGE: Duration = Duration::from_secs(300);

    #[test]
    fn a_fresh_token_verifies_for_both_algorithms() {
        for alg in [SignAlg::Ed25519, SignAlg::P256] {
            let key = SigningKey::generate(alg);
            let token = make_token(&key, "c1", "dev1", NOW);
            assert!(token.starts_with("mqseal-login-v1."));
            let ts = verify_token(token.as_bytes(), &key.verifying_key(), "c1", "dev1", NOW + 5, AGE, 0).unwrap();
            assert_eq!(ts, NOW);
        }
    }

    #[test]
    fn a_token_is_bound_to_client_id_username_and_key() {
        let key = SigningKey::generate(SignAlg::Ed25519);
        let other = SigningKey::generate(SignAlg::Ed25519);
        let token = make_token(&key, "c1", "dev1", NOW);
        let check = |k: &SigningKey, cid, user| verify_token(token.as_bytes(), &k.verifying_key(), cid, user, NOW, AGE, 0);
        assert_eq!(check(&key, "c2", "dev1"), Err(LoginError::BadSignature));
        assert_eq!(check(&key, "c1", "dev2"), Err(LoginError::BadSignature));
        assert_eq!(check(&other, "c1", "dev1"), Err(LoginError::BadSignature));
    }

    #[test]
    fn old_future_and_reused_tokens_are_refused() {
        let key = SigningKey::generate(SignAlg::Ed25519);
        let vk = key.verifying_key();
        let token = make_token(&key, "c", "u", NOW);
        assert_eq!(verify_token(token.as_bytes(), &vk, "c", "u", NOW + 301_000, AGE, 0), Err(LoginError::Expired));
        assert_eq!(verify_token(token.as_bytes(), &vk, "c", "u", NOW - 31_000, AGE, 0), Err(LoginError::FromTheFuture));
        assert_eq!(verify_token(token.as_bytes(), &vk, "c", "u", NOW, AGE, NOW), Err(LoginError::Reused));
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let vk = SigningKey::generate(SignAlg::Ed25519).verifying_key();
        for bad in [
            &b""[..],
            b"secret",
            b"mqseal-login-v1",
            b"mqseal-login-v1.12.",
            b"mqseal-login-v1.012.AAAA",
            b"mqseal-login-v1.-1.AAAA",
            b"mqseal-login-v1.99999999999999999999999.AAAA",
            b"mqseal-login-v1.12.not base64!",
            b"\xff\xfe",
        ] {
            assert_eq!(verify_token(bad, &vk, "c", "u", NOW, AGE, 0), Err(LoginError::Malformed), "{bad:?}");
        }
    }
}
