//! mqseal-core: everything mqseal decides, in safe Rust.
//!
//! This crate knows nothing of Mosquitto's C interface. The plugin crate turns
//! broker events into calls on [`engine::Engine`] and turns the answers back into
//! return codes; the CLI uses the same envelope, policy, key and audit code.

pub mod audit;
pub mod bundle;
pub mod canonical_json;
pub mod config;
pub mod control;
pub mod decision;
pub mod device;
pub mod device_store;
pub mod engine;
pub mod envelope;
pub mod flood;
pub mod host;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod login_token;
pub mod policy;
pub mod replay;
pub mod realm;
pub mod reasons;
pub mod sequence;
pub mod signed_doc;
pub mod state;
pub mod topic;
