//! `cargo run --release -p test-harness --bin bench -- [--messages N (100000)] [--publishers P (4)]
//! [--subscribers S (1)] [--qos 0,1] [--payload 128,1024] [--rounds R (5)] [--rate MSG_PER_S]
//! [--inflight W (20)] [--eager-subscribers] [--audit-durability fsync|os]
//! [--protected-workers off|auto|N|default (off)] [--worker-configs W,... | none (1,2)]
//! [--offload-above N|default] [--agent-python PYTHON] [--agent-messages N] [--json FILE] [--markdown FILE]`
//!
//! For every (QoS, payload) pair, runs plain Mosquitto, mqseal on unprotected
//! topics and mqseal on protected topics ((c), `verify_workers` as
//! `--protected-workers` says), at QoS 0 one more protected configuration per
//! `--worker-configs` value ((c1), (c2): verification on worker threads), and
//! with `--agent-python` the verify-and-republish agent baseline (d), R rounds
//! each, interleaved, and prints Markdown tables with the targets met or missed
//! (see docs/PERFORMANCE.md).

use std::path::Path;
use std::process::ExitCode;

fn write(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(Path::new(path), text).map_err(|e| format!("cannot write {path}: {e}"))
}

fn main() -> ExitCode {
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
