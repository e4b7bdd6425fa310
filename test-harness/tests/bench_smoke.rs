//! CI smoke run of the benchmark (issue 7): tiny numbers, debug profile, seconds.
//! It checks the tool works end to end, never how fast anything is.

use test_harness::bench::{self, BenchOptions};

fn smoke(qos: u8) {
    let options = BenchOptions {
        messages: 200,
        publishers: 1,
        subscribers: 1,
        qos,
        payload: 128,
        rate: if qos == 1 { Some(5000.0) } else { None },
        verify_iterations: 20,
        audit_durability: None,
    };
    let report = bench::run(&options).expect("bench runs");
    assert_eq!(report.rows.len(), 3, "three configurations");
    for (row, prefix) in report.rows.iter().zip(["(a)", "(b)", "(c)"]) {
        assert!(row.name.starts_with(prefix), "row order: {}", row.name);
        assert_eq!(row.expected, 200, "{}", row.name);
        assert_eq!(row.delivered, 200, "{} must deliver every message", row.name);
        assert!(row.p50_us > 0.0 && row.p99_us >= row.p50_us && row.max_us >= row.p99_us, "{row:?}");
        assert!(row.broker_cpu_s >= 0.0, "{row:?}");
    }
    // (c) carries envelopes, larger than the 128-byte plaintext.
    assert!(report.rows[2].wire_payload_bytes > 128, "{:?}", report.rows[2]);
    assert!(report.verify_us > 0.0 && report.ceiling_msgs_per_s.is_finite());
    let table = report.markdown();
    for prefix in ["| (a)", "| (b)", "| (c)", "Ceiling for (c)"] {
        assert!(table.contains(prefix), "markdown lacks {prefix}:\n{table}");
    }
    let json = report.to_json();
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(3), "{json}");
}

#[test]
fn qos0_smoke_delivers_everything_in_all_three_configurations() {
    smoke(0);
}

#[test]
fn qos1_smoke_delivers_everything_in_all_three_configurations() {
    smoke(1);
}

#[test]
fn bad_arguments_are_refused_with_the_flag_named() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let err = bench::parse_args(&args(&["--qos", "2"])).unwrap_err().to_string();
    assert!(err.contains("--qos"), "{err}");
    let err = bench::parse_args(&args(&["--messages"])).unwrap_err().to_string();
    assert!(err.contains("--messages"), "{err}");
    let (o, json, md) = bench::parse_args(&args(&["--messages", "10", "--json", "x.json", "--markdown", "x.md"])).unwrap();
    assert_eq!((o.messages, json.as_deref(), md.as_deref()), (10, Some("x.json"), Some("x.md")));
}
