//! The panic boundary: every exported function runs its body through
//! [`guard`], so no panic unwinds into C, and every failure sets the thread's
//! last error.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mqseal_core::device::DeviceError;

use crate::result::{mqseal_result, set_last_error};

/// Why a call failed: a core error (with its reason token) or a problem with
/// the arguments the caller passed.
pub enum Failure {
    Device(DeviceError),
    InvalidArgument(String),
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Failure {
        Failure::Device(e)
    }
}

/// Runs `body`; turns its error, or a panic, into a result code and the
/// thread's last error message.
pub fn guard(what: &str, body: impl FnOnce() -> Result<(), Failure>) -> mqseal_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mqseal_result::MQSEAL_OK,
        Ok(Err(Failure::Device(error))) => {
            let code = mqseal_result::from_token(error.reason());
            set_last_error(format!("{what}: {error} [{}]", error.reason()));
            code
        }
        Ok(Err(Failure::InvalidArgument(detail))) => {
            set_last_error(format!("{what}: {detail}"));
            mqseal_result::MQSEAL_INVALID_ARGUMENT
        }
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            // Recording the message must not panic out of here either.
            let _ = catch_unwind(|| set_last_error(format!("{what}: internal error ({detail})")));
            mqseal_result::MQSEAL_INTERNAL_ERROR
        }
    }
}

/// For the functions that cannot fail but must not unwind: `fallback` on a panic.
pub fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}
