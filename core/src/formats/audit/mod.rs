//! The tamper-evident audit log (docs/AUDIT.md is the normative specification).
//!
//! - Records are JSON Lines, each line the canonical JSON of one record; every
//!   record carries the hash of the record before it ([`record`], [`hashing`]).
//! - All record hashes are also the leaves of an RFC 9162 Merkle tree ([`merkle`]),
//!   whose root the broker signs now and then as a C2SP checkpoint ([`checkpoint`]).
//! - [`writer::AuditLog`] appends from the broker thread through a bounded queue to
//!   a writer thread; [`open`] checks and recovers an existing log on start.
//! - [`verify`] checks a whole log offline, [`follow`] reads it as it grows.

pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod event;
pub mod files;
pub mod follow;
pub mod hashing;
pub mod keyfile;
pub mod merkle;
pub mod open;
pub mod prove;
pub mod record;
pub mod timestamp;
pub mod verify;
#[cfg(test)]
mod vectors;
pub mod writer;

pub use event::AuditEvent;
pub use hashing::Hash;
pub use config::AuditConfig;
pub use open::{AuditError, OpenReport};
pub use writer::{AppendError, AuditLog, AuditStats};
