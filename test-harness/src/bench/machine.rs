//! What the report names about the machine and build it ran on.

/// The CPU model from /proc/cpuinfo ("unknown CPU" where it cannot be read).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// The signature verification backends the core chose on this machine, per
/// algorithm (it times the P-256 candidates once; docs/ENVELOPE.md §3.2.3).
pub fn verification_backend() -> String {
    mqseal_core::formats::verify_backend::describe()
}
