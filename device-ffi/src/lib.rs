//! libmqseal_device: the mqseal device core for C programs (`include/mqseal.h`).
//!
//! A thin translation layer, in the manner of rustls-ffi: every C-facing
//! concept has its own file, every function crosses into Rust through one
//! panic boundary ([`boundary`]), and all logic is `mqseal_core::device`'s, the
//! same code the `mqseal` CLI runs.
//!
//! - [`result`]: the `mqseal_result` codes (one per reason token) and the
//!   calling thread's last error message;
//! - [`bytes`]: the one kind of buffer the library hands out, and who frees it;
//! - [`device`]: the device handle: load, seal, open, login token, control topics and updates.

#![allow(non_camel_case_types)]

pub mod boundary;
pub mod bytes;
pub mod device;
pub mod result;
