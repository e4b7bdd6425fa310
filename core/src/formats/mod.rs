//! The formats both sides share: what the broker, devices and the
//! administrator all read or write (docs/ENVELOPE.md, docs/POLICY.md,
//! docs/LOGIN.md, docs/AUDIT.md, docs/REASONS.md), and the names they use.

pub mod audit;
pub mod bundle;
pub mod canonical_json;
pub mod control;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod login_token;
pub mod policy;
pub mod reasons;
pub mod signed_doc;
pub mod topic;
pub mod verify_backend;
