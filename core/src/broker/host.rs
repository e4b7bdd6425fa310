//! What the engine needs from the broker that hosts it, as a trait so that the
//! core stays free of FFI (the plugin implements it over mosquitto_log_printf).

/// Log levels, mapped by the plugin onto Mosquitto's MOSQ_LOG_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

/// The broker, seen from the engine. Only ever called on the broker's thread.
pub trait Host {
    /// Writes one line to the broker's log; the plugin adds the `mqseal: ` prefix.
    fn log(&self, level: LogLevel, message: &str);
}

/// A host that collects log lines in memory, for tests of the core.
#[derive(Default)]
pub struct MemoryHost {
    pub lines: parking_lot::Mutex<Vec<(LogLevel, String)>>,
}

impl Host for MemoryHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.lines.lock().push((level, message.to_string()));
    }
}
