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

/// The signature verification backends this build uses, per algorithm. The core
/// does not name its backend yet; when it chooses one at run time (issue 16,
/// item 1), ask it here, and only here.
pub fn verification_backend() -> String {
    "Ed25519: ed25519-dalek; P-256: p256".to_string()
}
