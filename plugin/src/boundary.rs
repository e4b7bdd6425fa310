//! The panic boundary: no panic may unwind into Mosquitto's C code.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mqseal_core::broker::decision::DenyReason;
use mqseal_core::broker::host::LogLevel;

use crate::log::log;

/// Runs `body`; if it panics, logs what and where, and returns `fail_closed`
/// instead (for ACL and message events that is MOSQ_ERR_ACL_DENIED, so a bug
/// refuses access rather than granting it or disconnecting the client).
pub fn guard(what: &str, fail_closed: i32, body: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            // Logging itself must not panic out of here either.
            let _ = catch_unwind(|| {
                log(LogLevel::Error, &format!("internal error in {what} ({detail}); failing closed [{}]", DenyReason::INTERNAL_ERROR))
            });
            fail_closed
        }
    }
}
