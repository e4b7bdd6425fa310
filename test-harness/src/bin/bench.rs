//! `cargo run --release -p test-harness --bin bench -- [--messages N] [--publishers P]
//! [--subscribers S] [--qos 0|1] [--payload 128|1024] [--rate R] [--audit-durability fsync|os] [--json FILE] [--markdown FILE]`
//!
//! Runs plain Mosquitto, mqseal on unprotected topics and mqseal on protected
//! topics one after another and prints a Markdown table (see docs/PERFORMANCE.md).

use std::path::Path;
use std::process::ExitCode;

/// Set in the re-executed copy so it does not copy itself again.
const RELAUNCHED: &str = "MQSEAL_BENCH_RELAUNCHED";

/// `test_harness::artifacts()` finds the target directory from the running
/// executable's `deps/` ancestor, which test binaries have and `target/<profile>/bench`
/// does not. So the bench runs from a copy of itself in `target/<profile>/deps/`;
/// the plugin and CLI are then built with the same profile as the bench.
fn relaunch_from_deps() -> Option<ExitCode> {
    if std::env::var_os(RELAUNCHED).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    if exe.ancestors().any(|p| p.file_name().is_some_and(|n| n == "deps")) {
        return None;
    }
    let deps = exe.parent()?.join("deps");
    let copy = deps.join("mqseal-bench-runner");
    if let Err(e) = std::fs::copy(&exe, &copy) {
        eprintln!("bench: cannot copy {} to {}: {e}", exe.display(), copy.display());
        return Some(ExitCode::FAILURE);
    }
    let status = std::process::Command::new(&copy).args(std::env::args_os().skip(1)).env(RELAUNCHED, "1").status();
    Some(match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: cannot run {}: {e}", copy.display());
            ExitCode::FAILURE
        }
    })
}

fn write(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(Path::new(path), text).map_err(|e| format!("cannot write {path}: {e}"))
}

fn main() -> ExitCode {
    if let Some(code) = relaunch_from_deps() {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, json_out, md_out) = match test_harness::bench::parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match test_harness::bench::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = report.markdown();
    print!("{markdown}");
    let json = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
    for (target, text) in [(json_out, json + "\n"), (md_out, markdown)] {
        if let Some(path) = target {
            if let Err(e) = write(&path, &text) {
                eprintln!("bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
