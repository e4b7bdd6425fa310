//! mqseal-core: everything mqseal decides, in safe Rust.
//!
//! This crate knows nothing of Mosquitto's C interface. Its modules are grouped
//! by the side they serve:
//!
//! - [`broker`]: what only the broker plugin uses. The plugin crate turns broker
//!   events into calls on [`broker::engine::Engine`] and turns the answers back
//!   into return codes.
//! - [`device`]: what only devices and the administrator use: the device core
//!   ([`device::Device`], called by the CLI, the C library and the Python
//!   package), the device directory's store and sequence counter, and the
//!   administrator's realm.
//! - [`formats`]: what both sides share: the envelope, policy, key, identity,
//!   login-token and audit formats and the names and reasons they use.

pub mod broker;
pub mod device;
pub mod formats;
