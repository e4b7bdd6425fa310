//! The topic policy: which devices exist, which MQTT username each logs in
//! with, which groups own which topics, and who may publish or read there.
//!
//! - [`model`]: the policy as data ([`Policy`]), its validation with precise
//!   field paths, and its signed JSON file (format `mqseal-policy-v1`, see
//!   docs/POLICY.md).
//! - [`compiled`]: [`CompiledPolicy`], the form the broker and devices query
//!   on every message: hash and trie lookups over indices, keys pre-decoded.
//! - [`diff`]: what a reload takes away from whom ([`revocations`]).
//!
//! The broker calls [`load_policy_file`] at start and on every reload.

pub mod compiled;
pub mod diff;
pub mod model;

use std::path::Path;

pub use compiled::{CompiledPolicy, DeviceIdx, EpochCheck, GroupIdx, GroupView, SubscriptionVerdict};
pub use diff::{revocations, Revocation, RevocationReason};
pub use model::{validate_username, DevicePolicy, GroupPolicy, Policy, Role, MAX_GRACE_SECS, POLICY_FORMAT};

use crate::formats::signed_doc::{AuthorityPublicKey, SignedDocError};

/// Why a policy could not be loaded. Every variant names the file (`origin`).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Reading the file or checking the authority signature failed.
    #[error(transparent)]
    Document(#[from] SignedDocError),
    /// The signed body is not the JSON shape of a policy.
    #[error("{origin}: policy body: {detail}")]
    Syntax { origin: String, detail: String },
    /// A field breaks a rule; `field` is a path like `groups.g1.topics[1]`.
    #[error("{origin}: {field}: {problem}")]
    Invalid { origin: String, field: String, problem: String },
    /// A policy older than (or as old as) the one in use was offered.
    #[error("{origin}: policy version {offered} is not newer than the version {current} already in use; refusing to go back")]
    NotNewer { origin: String, offered: u64, current: u64 },
}

impl PolicyError {
    /// A stable short token for logs and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Document(e) => e.reason(),
            PolicyError::Syntax { .. } => "policy-syntax",
            PolicyError::Invalid { .. } => "policy-invalid",
            PolicyError::NotNewer { .. } => "policy-not-newer",
        }
    }

    pub(crate) fn invalid(origin: &str, field: impl Into<String>, problem: impl Into<String>) -> Self {
        PolicyError::Invalid { origin: origin.to_string(), field: field.into(), problem: problem.into() }
    }
}

/// Reads a policy file, verifies the authority signature against the given
/// trusted key, validates it and compiles it for lookups.
pub fn load_policy_file(path: &Path, authority: &AuthorityPublicKey) -> Result<CompiledPolicy, PolicyError> {
    let bytes = crate::formats::signed_doc::read_document_file(path)?;
    compile_signed(&bytes, authority, &path.display().to_string())
}

/// Verifies a signed policy document against the trusted `authority` and
/// compiles it. The same result and errors as `Policy::from_signed` followed by
/// `compile`, but the rules are checked once (compiling checks them all) instead
/// of twice: this is the broker's start-up and reload path, where a policy of a
/// million devices takes seconds to compile (docs/PERFORMANCE.md, "Scale").
pub fn compile_signed(bytes: &[u8], authority: &AuthorityPublicKey, origin: &str) -> Result<CompiledPolicy, PolicyError> {
    let body = crate::formats::signed_doc::verify_document(bytes, POLICY_FORMAT, authority, origin)?;
    Policy::parse_body(body, origin)?.compile(origin)
}

/// Like [`load_policy_file`], but returns the policy as data.
pub fn read_policy_file(path: &Path, authority: &AuthorityPublicKey) -> Result<Policy, PolicyError> {
    let bytes = crate::formats::signed_doc::read_document_file(path)?;
    Policy::from_signed(&bytes, authority, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::formats::keys::SigningKey;
    use crate::formats::signed_doc::AuthoritySigningKey;

    fn policy(topics_of_b: &str) -> Policy {
        let device = |seed: u8, username: &str| DevicePolicy {
            username: username.into(),
            sign: SigningKey::ed25519_from_seed(&[seed; 32]).verifying_key(),
        };
        let group = |topic: &str, member: &str| GroupPolicy {
            topics: vec![topic.into()],
            members: BTreeMap::from([(member.to_string(), Role::PubSub)]),
            epoch: 1,
            epoch_started_at: 0,
            previous_epoch_grace_secs: 0,
        };
        Policy {
            version: 3,
            issued_at: 0,
            devices: BTreeMap::from([("d1".to_string(), device(1, "u1")), ("d2".to_string(), device(2, "u2"))]),
            groups: BTreeMap::from([("a".to_string(), group("a/#", "d1")), ("b".to_string(), group(topics_of_b, "d2"))]),
        }
    }

    /// Signs without validating (`Policy::sign` refuses invalid policies).
    fn sign_unchecked(policy: &Policy, key: &AuthoritySigningKey) -> Vec<u8> {
        let body: serde_json::Value = serde_json::from_slice(&policy.body_bytes().unwrap()).unwrap();
        crate::formats::signed_doc::sign_document(POLICY_FORMAT, &body, key).unwrap()
    }

    #[test]
    fn compile_signed_answers_like_from_signed_then_compile() {
        let authority = AuthoritySigningKey::from_seed(&[9; 32]);
        let file = policy("b/+/x").sign(&authority).unwrap();
        let fast = compile_signed(&file, &authority.public(), "p.json").unwrap();
        let slow = Policy::from_signed(&file, &authority.public(), "p.json").unwrap().compile("p.json").unwrap();
        assert_eq!((fast.version(), fast.device_count(), fast.group_count()), (3, 2, 2));
        let (d2, b) = (fast.device_by_username("u2").unwrap(), fast.group_of_topic("b/q/x").unwrap());
        assert_eq!(fast.group(b).id, "b");
        assert_eq!(fast.role(b, d2), Some(Role::PubSub));
        assert_eq!(fast.group_of_topic("a/1"), slow.group_of_topic("a/1"));
        assert_eq!(fast.memberships().count(), slow.memberships().count());
    }

    #[test]
    fn compile_signed_refuses_what_from_signed_refuses_with_the_same_error() {
        let authority = AuthoritySigningKey::from_seed(&[9; 32]);
        // Overlapping filters: a rule only compiling checks.
        let overlapping = sign_unchecked(&policy("a/x"), &authority);
        let fast = compile_signed(&overlapping, &authority.public(), "p.json").unwrap_err();
        let slow = Policy::from_signed(&overlapping, &authority.public(), "p.json").unwrap_err();
        assert_eq!(fast.to_string(), slow.to_string());
        assert!(fast.to_string().contains("groups.b.topics[0]"), "{fast}");
        // Signed by someone else.
        let other = AuthoritySigningKey::from_seed(&[8; 32]);
        let forged = policy("b/#").sign(&other).unwrap();
        let err = compile_signed(&forged, &authority.public(), "p.json").unwrap_err();
        assert_eq!(err.reason(), Policy::from_signed(&forged, &authority.public(), "p.json").unwrap_err().reason());
    }
}
