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

use std::path::{Path, PathBuf};

pub use compiled::{CompiledPolicy, DeviceIdx, EpochCheck, GroupIdx, GroupView, SubscriptionVerdict};
pub use diff::{revocations, Revocation, RevocationReason};
pub use model::{validate_username, DevicePolicy, GroupPolicy, Policy, Role, MAX_GRACE_SECS, POLICY_FORMAT};

use crate::signed_doc::{AuthorityPublicKey, SignedDocError};

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
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl PolicyError {
    /// A stable short token for logs and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Document(e) => e.reason(),
            PolicyError::Syntax { .. } => "policy-syntax",
            PolicyError::Invalid { .. } => "policy-invalid",
            PolicyError::NotNewer { .. } => "policy-not-newer",
            PolicyError::Io { .. } => "policy-io",
        }
    }

    pub(crate) fn invalid(origin: &str, field: impl Into<String>, problem: impl Into<String>) -> Self {
        PolicyError::Invalid { origin: origin.to_string(), field: field.into(), problem: problem.into() }
    }
}

/// Reads a policy file, verifies the authority signature against the given
/// trusted key, validates it and compiles it for lookups.
pub fn load_policy_file(path: &Path, authority: &AuthorityPublicKey) -> Result<CompiledPolicy, PolicyError> {
    read_policy_file(path, authority)?.compile(&path.display().to_string())
}

/// Like [`load_policy_file`], but returns the policy as data.
pub fn read_policy_file(path: &Path, authority: &AuthorityPublicKey) -> Result<Policy, PolicyError> {
    let bytes = crate::signed_doc::read_document_file(path)?;
    Policy::from_signed(&bytes, authority, &path.display().to_string())
}
