//! Why a device operation failed, as one error type with one reason token per
//! condition. The tokens of envelopes, documents, policies, bundles and topics
//! are those types' own (`EnvelopeError::reason`, ...); this module names the
//! conditions only a device meets (its directory, its locks, sealing).
//! Every token a device can get is in [`DEVICE_REASONS`]; the C library's
//! error codes and the Python package's exceptions are named after them.

use crate::device_store::{DeviceStoreError, OpenError, SealError};
use crate::identity::IdentityError;
use crate::keys::KeyError;
use crate::sequence::SequenceError;

/// A device operation's failure. `Display` says what and where;
/// [`DeviceError::reason`] gives the stable token.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Store(#[from] DeviceStoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("device {0:?} is not in the policy in force")]
    NotInPolicy(String),
}

impl DeviceError {
    /// The reason token (see `docs/REASONS.md`).
    pub fn reason(&self) -> &'static str {
        match self {
            DeviceError::Store(e) => store_reason(e),
            DeviceError::Seal(e) => seal_reason(e),
            DeviceError::Open(e) => e.reason(),
            DeviceError::NotInPolicy(_) => "not-in-policy",
        }
    }
}

fn store_reason(e: &DeviceStoreError) -> &'static str {
    match e {
        DeviceStoreError::Io { .. } => "device-io",
        DeviceStoreError::Identity(e) => identity_reason(e),
        DeviceStoreError::Key(e) => key_reason(e),
        DeviceStoreError::Document(e) => e.reason(),
        DeviceStoreError::Policy(e) => e.reason(),
        DeviceStoreError::Bundle(e) => e.reason(),
        DeviceStoreError::Sequence(e) => sequence_reason(e),
        DeviceStoreError::OtherAuthority { .. } => "doc-wrong-authority",
        DeviceStoreError::NotJoined { .. } => "not-joined",
        DeviceStoreError::NotInPolicy { .. } => "not-in-policy",
        DeviceStoreError::PolicyKeyMismatch { .. } => "policy-key-mismatch",
        DeviceStoreError::BundleNotNewer { .. } => "bundle-not-newer",
        DeviceStoreError::BundleBehindPolicy { .. } => "bundle-behind-policy",
        DeviceStoreError::Corrupt { .. } => "device-corrupt",
        DeviceStoreError::ReceiverLocked { .. } => "device-locked",
        DeviceStoreError::Seal(e) => seal_reason(e),
    }
}

fn seal_reason(e: &SealError) -> &'static str {
    match e {
        SealError::BadTopic { source, .. } => source.reason(),
        SealError::Unprotected(_) => "not-protected",
        SealError::NotAPublisher { .. } => "not-a-publisher",
        SealError::NoKey { .. } => "no-key",
        SealError::Sequence(e) => sequence_reason(e),
        SealError::Envelope(e) => e.reason(),
    }
}

fn identity_reason(e: &IdentityError) -> &'static str {
    match e {
        IdentityError::Io { .. } => "device-io",
        IdentityError::Key(e) => key_reason(e),
        IdentityError::Sequence(e) => sequence_reason(e),
        IdentityError::Json { .. }
        | IdentityError::Field { .. }
        | IdentityError::Id { .. }
        | IdentityError::NoIdentity { .. }
        | IdentityError::SeveralIdentities { .. }
        | IdentityError::IdMismatch { .. }
        | IdentityError::KeyMismatch { .. }
        | IdentityError::Exists { .. }
        | IdentityError::ReservedId(_) => "device-corrupt",
    }
}

fn key_reason(e: &KeyError) -> &'static str {
    match e {
        KeyError::Io { .. } => "device-io",
        KeyError::InFile { source, .. } => key_reason(source),
        _ => "device-corrupt",
    }
}

fn sequence_reason(e: &SequenceError) -> &'static str {
    match e {
        SequenceError::Locked { .. } => "device-locked",
        SequenceError::Exhausted { .. } => "sequence-exhausted",
        SequenceError::Io { .. } => "device-io",
        SequenceError::Missing { .. } | SequenceError::Corrupt { .. } => "device-corrupt",
        SequenceError::Write(e) => key_reason(e),
    }
}

/// Every reason token a [`DeviceError`] can carry: the envelope's, and those
/// of opening, sealing, the device directory and the control documents.
pub const DEVICE_REASONS: &[&str] = &[
    // the device directory and its locks
    "device-io",
    "device-corrupt",
    "device-locked",
    "not-joined",
    "not-in-policy",
    "sequence-exhausted",
    // control documents (policy and bundle updates)
    "doc-io",
    "doc-too-large",
    "doc-malformed",
    "doc-wrong-format",
    "doc-unsupported-alg",
    "doc-wrong-authority",
    "doc-bad-signature",
    "doc-bad-authority-key",
    "doc-key",
    "doc-serialize",
    "policy-syntax",
    "policy-invalid",
    "policy-not-newer",
    "policy-io",
    "policy-key-mismatch",
    "bundle-syntax",
    "bundle-invalid",
    "bundle-wrong-device",
    "bundle-wrong-kx-key",
    "bundle-key-malformed",
    "bundle-key-unwrap",
    "bundle-wrap",
    "bundle-not-newer",
    "bundle-behind-policy",
    // topics
    "topic-empty",
    "topic-too-long",
    "topic-nul",
    "topic-control-char",
    "topic-noncharacter",
    "topic-wildcard-in-name",
    // sealing and opening
    "not-protected",
    "not-a-publisher",
    "no-key",
    "group-mismatch",
    "unknown-sender",
    "epoch-previous-expired",
    "epoch-too-old",
    "epoch-future",
    "replayed-seq",
    "replay-state",
    // the envelope itself
    "too-large",
    "malformed-cbor",
    "non-deterministic-cbor",
    "indefinite-length",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EnvelopeError;

    #[test]
    fn every_envelope_reason_is_a_device_reason() {
        for token in EnvelopeError::ALL_REASONS {
            assert!(DEVICE_REASONS.contains(&token), "{token}");
        }
    }

    #[test]
    fn tokens_are_unique_and_lowercase_words() {
        let mut seen = std::collections::BTreeSet::new();
        for token in DEVICE_REASONS {
            assert!(seen.insert(token), "{token} twice");
            assert!(token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{token}");
        }
    }
}
