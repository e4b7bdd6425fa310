//! Logging through the broker's own log (mosquitto_log_printf), with the `mqseal: ` prefix.

use std::ffi::CString;

use mqseal_core::broker::host::{Host, LogLevel};

use crate::sys;

/// Writes one line to Mosquitto's log. Must run on the broker's thread.
pub fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Error => sys::MOSQ_LOG_ERR,
        LogLevel::Warning => sys::MOSQ_LOG_WARNING,
        LogLevel::Notice => sys::MOSQ_LOG_NOTICE,
        LogLevel::Info => sys::MOSQ_LOG_INFO,
        LogLevel::Debug => sys::MOSQ_LOG_DEBUG,
    };
    // An interior NUL would truncate the C string; show it instead of failing.
    let text = CString::new(format!("mqseal: {message}").replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: the format is a static "%s" and the single vararg is a valid,
    // NUL-terminated C string that outlives the call; the broker copies it.
    unsafe { sys::mosquitto_log_printf(level as i32, c"%s".as_ptr(), text.as_ptr()) };
}

/// The engine's view of the broker's log.
pub struct BrokerLog;

impl Host for BrokerLog {
    fn log(&self, level: LogLevel, message: &str) {
        log(level, message)
    }
}
