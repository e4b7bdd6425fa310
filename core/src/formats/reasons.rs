//! Every reason token mqseal can produce, by the type that produces it: the
//! code side of the registry in docs/REASONS.md.
//!
//! A token names one condition everywhere (broker log, audit record, CLI,
//! device libraries). Each error type gives its token with `reason()`; the
//! lists here are what those functions can return, so that documentation,
//! bindings and tests can enumerate them. `core/tests/reasons_registry.rs`
//! checks these lists against the `reason()` functions' sources and against
//! docs/REASONS.md, in both directions.
//!
//! Adding a token: return it from the `reason()` of its type (or add a
//! [`DenyReason`] constant), add it to that type's list below, and add a row
//! to docs/REASONS.md.

use std::collections::BTreeSet;

use crate::broker::decision::DenyReason;
use crate::formats::envelope::EnvelopeError;

/// `client.kicked`: more than `plugin_opt_flood_limit` refused publishes within the window.
pub const FLOOD: &str = "flood";
/// `client.kicked`: a device lost rights for no listed reason (the fallback of a kick).
pub const REVOKED: &str = "revoked";
/// `plugin.stop`: the broker unloads the plugin.
pub const SHUTDOWN: &str = "shutdown";
/// `plugin.stop`: the plugin refused to start after opening the log (e.g. a
/// policy older than the floor the log proves).
pub const REFUSED_TO_START: &str = "refused-to-start";

/// The tokens of the broker's own decisions ([`DenyReason`] constants).
const DENY_REASONS: &[&str] = &[
    DenyReason::UNPROTECTED_DENIED.0,
    DenyReason::INTERNAL_ERROR.0,
    DenyReason::NOT_A_DEVICE.0,
    DenyReason::SENDER_MISMATCH.0,
    DenyReason::UNKNOWN_SENDER.0,
    DenyReason::WRONG_GROUP.0,
    DenyReason::NOT_A_PUBLISHER.0,
    DenyReason::NOT_A_READER.0,
    DenyReason::REPLAY.0,
    DenyReason::SEALED_BEFORE_CRASH.0,
    DenyReason::RESERVED_TOPIC.0,
    DenyReason::BAD_CLIENT_ID.0,
    DenyReason::BAD_USERNAME.0,
    DenyReason::CLIENT_ID_NOT_OWNED.0,
    DenyReason::BAD_FILTER.0,
    DenyReason::NOT_AUTHORITY.0,
    DenyReason::CONTROL_NOT_READABLE.0,
    DenyReason::CONTROL_WRONG_TOPIC.0,
    DenyReason::CONTROL_UNKNOWN_DEVICE.0,
    DenyReason::IDENTITY_MISMATCH.0,
    DenyReason::BUNDLE_GROUP_NOT_MEMBER.0,
    DenyReason::BUNDLE_BEHIND_POLICY.0,
    DenyReason::BUNDLE_NOT_NEWER.0,
    DenyReason::POLICY_NOT_NEWER.0,
    DenyReason::POLICY_NOT_PERSISTED.0,
    DenyReason::POLICY_EMPTY.0,
    DenyReason::AUDIT_UNAVAILABLE.0,
];

/// The token families: (the type or place that produces them, its tokens).
/// A wrapper's list holds only the tokens it gives itself; the tokens of the
/// errors it wraps are in their own families.
pub const FAMILIES: &[(&str, &[&str])] = &[
    ("DenyReason", DENY_REASONS),
    ("engine kicks and lifecycle", &[FLOOD, REVOKED, SHUTDOWN, REFUSED_TO_START]),
    ("LoginError", &["login-malformed", "login-expired", "login-from-future", "login-reused", "login-bad-signature"]),
    ("EnvelopeError", &EnvelopeError::ALL_REASONS),
    (
        "EpochCheck",
        &["epoch-current", "epoch-previous-in-grace", "epoch-previous-expired", "epoch-too-old", "epoch-future"],
    ),
    ("OpenError", &["not-protected", "wrong-group", "unknown-sender", "not-a-publisher", "no-key", "replay", "replay-state"]),
    ("SealError", &["not-protected", "not-a-publisher", "no-key"]),
    (
        "DeviceStoreError",
        &[
            "file-io",
            "other-authority",
            "not-joined",
            "not-in-policy",
            "policy-key-mismatch",
            "bundle-not-newer",
            "bundle-behind-policy",
            "device-state-corrupt",
            "replay-locked",
        ],
    ),
    ("SequenceError", &["file-io", "seq-missing", "seq-corrupt", "seq-locked", "seq-exhausted"]),
    (
        "IdentityError",
        &[
            "file-io",
            "identity-malformed",
            "no-identity",
            "several-identities",
            "identity-id-mismatch",
            "identity-key-mismatch",
            "file-exists",
            "identity-reserved-id",
        ],
    ),
    (
        "KeyError",
        &[
            "file-io",
            "file-exists",
            "key-permissions",
            "key-not-a-file",
            "key-malformed",
            "key-wrong-kind",
            "key-bad-public",
            "bad-signature",
            "key-non-contributory",
        ],
    ),
    (
        "SignedDocError",
        &[
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
        ],
    ),
    ("PolicyError", &["policy-syntax", "policy-invalid", "policy-not-newer"]),
    (
        "BundleError",
        &[
            "bundle-syntax",
            "bundle-invalid",
            "bundle-wrong-device",
            "bundle-wrong-kx-key",
            "bundle-key-malformed",
            "bundle-key-unwrap",
            "bundle-wrap",
        ],
    ),
    ("ControlError", &["identity-malformed"]),
    ("RevocationReason", &["device-removed", "username-changed", "key-changed", "membership-removed", "role-reduced"]),
    (
        "TopicError",
        &[
            "topic-empty",
            "topic-too-long",
            "topic-nul",
            "topic-control-char",
            "topic-noncharacter",
            "topic-wildcard-in-name",
            "filter-plus-not-whole-level",
            "filter-hash-not-whole-level",
            "filter-hash-not-last",
            "filter-too-deep",
            "share-without-filter",
            "share-bad-name",
        ],
    ),
    (
        "AuditError",
        &["audit-io", "audit-chain-broken", "audit-origin-mismatch", "audit-origin-invalid", "audit-config", "audit-thread"],
    ),
    ("AppendError", &["audit-queue-full", "audit-outage", "audit-writer-failed"]),
];

/// Every token the code can produce, each once.
pub fn all() -> BTreeSet<&'static str> {
    FAMILIES.iter().flat_map(|(_, tokens)| tokens.iter().copied()).collect()
}

/// True for a well-formed token: `[a-z0-9]+(-[a-z0-9]+)*`.
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.split('-').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_is_well_formed() {
        for token in all() {
            assert!(is_token(token), "{token:?}");
        }
        assert!(!is_token("Replay") && !is_token("a--b") && !is_token("-a") && !is_token(""));
    }

    #[test]
    fn no_family_lists_a_token_twice() {
        for (family, tokens) in FAMILIES {
            let unique: BTreeSet<_> = tokens.iter().collect();
            assert_eq!(unique.len(), tokens.len(), "{family}");
        }
    }
}
