//! Why a device operation failed: one error type over the errors of the
//! device directory, sealing and opening. Its reason tokens are those errors'
//! own `reason()` (the registry, `docs/REASONS.md`, and its code side,
//! [`crate::formats::reasons`]); [`device_reasons`] lists every token a device can get,
//! and the C library's result codes and the Python package's exceptions are
//! named after them.

use std::collections::BTreeSet;

use crate::device::store::{DeviceStoreError, OpenError, SealError};

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
            DeviceError::Store(e) => e.reason(),
            DeviceError::Seal(e) => e.reason(),
            DeviceError::Open(e) => e.reason(),
            DeviceError::NotInPolicy(_) => "not-in-policy",
        }
    }
}

/// The token families ([`crate::formats::reasons::FAMILIES`]) a [`DeviceError`] can
/// carry tokens of: its own errors and everything they wrap.
const DEVICE_FAMILIES: &[&str] = &[
    "DeviceStoreError",
    "SealError",
    "OpenError",
    "EpochCheck",
    "EnvelopeError",
    "SequenceError",
    "IdentityError",
    "KeyError",
    "SignedDocError",
    "PolicyError",
    "BundleError",
    "TopicError",
];

/// The epoch checks that accept: never an error.
const ACCEPTING_EPOCHS: &[&str] = &["epoch-current", "epoch-previous-in-grace"];

/// Every reason token a [`DeviceError`] can carry.
pub fn device_reasons() -> BTreeSet<&'static str> {
    crate::formats::reasons::FAMILIES
        .iter()
        .filter(|(family, _)| DEVICE_FAMILIES.contains(family))
        .flat_map(|(_, tokens)| tokens.iter().copied())
        .filter(|token| !ACCEPTING_EPOCHS.contains(token))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_family_is_in_the_registry() {
        for family in DEVICE_FAMILIES {
            assert!(crate::formats::reasons::FAMILIES.iter().any(|(f, _)| f == family), "{family}");
        }
        let all = device_reasons();
        for token in ["replay", "wrong-group", "bad-signature", "not-a-publisher", "doc-bad-signature", "file-io"] {
            assert!(all.contains(token), "{token}");
        }
    }
}
