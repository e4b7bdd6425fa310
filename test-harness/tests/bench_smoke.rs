//! CI smoke run of the benchmark (issue 7): tiny numbers, debug profile, seconds.
//! It checks the tool works end to end, never how fast anything is. The agent
//! baseline (d) runs once, briefly, where `MQSEAL_PYTHON` names a Python with
//! paho-mqtt and cryptography (scripts/test sets it to the venv scripts/setup makes).

use test_harness::bench::{self, BenchOptions};

fn tiny(qos: Vec<u8>, rounds: usize) -> BenchOptions {
    BenchOptions {
        messages: 200,
        publishers: 2,
        subscribers: 1,
        qos,
        payloads: vec![128],
        rate: None,
        inflight: 5,
        batched_reads: true,
        rounds,
        settle: std::time::Duration::ZERO,
        verify_iterations: 20,
        verify_samples: 4,
        agent_python: None,
        audit_durability: None,
    }
}

fn check_delivered_everything(report: &bench::Report) {
    for s in &report.scenarios {
        assert!(!s.rounds.is_empty());
        for round in &s.rounds {
            for (row, name) in round.iter().zip(bench::CONFIGURATIONS) {
                assert_eq!(row.name, name, "row order");
                assert_eq!(row.expected, 200, "{}", row.name);
                assert_eq!(row.delivered, 200, "QoS {}: {} must deliver every message", s.qos, row.name);
                assert!(row.p50_us > 0.0 && row.p99_us >= row.p50_us && row.max_us >= row.p99_us, "{row:?}");
                assert!(row.broker_cpu_s >= 0.0, "{row:?}");
            }
            // (c) carries envelopes, larger than the 128-byte plaintext.
            assert!(round[2].wire_payload_bytes > 128, "{:?}", round[2]);
        }
        assert!(s.ceiling_msgs_per_s().is_finite() && s.ceiling_msgs_per_s() > 0.0);
    }
}

#[test]
fn every_configuration_delivers_everything_at_qos0_and_at_qos1_with_a_window() {
    let report = bench::run(&tiny(vec![0, 1], 1)).expect("bench runs");
    assert_eq!(report.scenarios.iter().map(|s| (s.qos, s.payload)).collect::<Vec<_>>(), [(0, 128), (1, 128)]);
    check_delivered_everything(&report);
    assert!(report.scenarios.iter().all(|s| s.verify_us > 0.0));
    // The verification samples are spread over the gaps around the one round.
    assert!(report.scenarios.iter().all(|s| s.verify_samples_us.len() == 4 && s.verify_samples_us.iter().all(|v| *v > 0.0)));
    assert!(report.scenarios.iter().all(|s| s.agent_rounds.is_empty()), "no (d) without a Python");
    let table = report.markdown();
    for needle in ["CPU: ", "verification backend: ", "| (a)", "| (b)", "| (c)", "Ceiling for (c)", "of 4 samples taken between rounds", "### QoS 0, 128 B", "### QoS 1, 128 B", "Targets:"] {
        assert!(table.contains(needle), "markdown lacks {needle}:\n{table}");
    }
    let json = report.to_json();
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "{json}");
    assert_eq!(scenarios[1]["median"].as_array().map(Vec::len), Some(3), "{json}");
}

#[test]
fn rounds_are_kept_and_the_median_round_is_reported() {
    let report = bench::run(&tiny(vec![0], 3)).expect("bench runs");
    check_delivered_everything(&report);
    let s = &report.scenarios[0];
    assert_eq!(s.rounds.len(), 3);
    for k in 0..3 {
        let mut rates: Vec<f64> = s.rounds.iter().map(|r| r[k].msgs_per_s).collect();
        rates.sort_by(f64::total_cmp);
        assert_eq!(s.median(k).msgs_per_s, rates[1], "configuration {k}");
        assert_eq!(s.range(k), (rates[0], rates[2]));
    }
}

#[test]
fn bad_arguments_are_refused_with_the_flag_named() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let err = bench::parse_args(&args(&["--qos", "0,2"])).unwrap_err().to_string();
    assert!(err.contains("--qos"), "{err}");
    let err = bench::parse_args(&args(&["--messages"])).unwrap_err().to_string();
    assert!(err.contains("--messages"), "{err}");
    let err = bench::parse_args(&args(&["--payload", "128,big"])).unwrap_err().to_string();
    assert!(err.contains("--payload") && err.contains("big"), "{err}");
    let (o, json, md) =
        bench::parse_args(&args(&["--messages", "10", "--qos", "1", "--payload", "128,1024", "--rounds", "5", "--json", "x.json", "--markdown", "x.md"]))
            .unwrap();
    assert_eq!((o.messages, o.qos.clone(), o.payloads.clone(), o.rounds), (10, vec![1], vec![128, 1024], 5));
    assert_eq!((json.as_deref(), md.as_deref()), (Some("x.json"), Some("x.md")));
}

fn row(name: &str, msgs_per_s: f64, p50_us: f64) -> bench::Row {
    bench::Row {
        name: name.to_string(),
        expected: 1,
        delivered: 1,
        elapsed_s: 1.0,
        msgs_per_s,
        p50_us,
        p99_us: p50_us,
        max_us: p50_us,
        broker_cpu_s: 0.0,
        cpu_us_per_msg: 0.0,
        wire_payload_bytes: 1,
    }
}

#[test]
fn the_median_round_is_by_throughput_at_full_speed_and_by_latency_at_a_fixed_rate() {
    let round = |rate: f64, p50: f64| [row("a", rate, p50), row("b", rate, p50), row("c", rate, p50)];
    let mut s = bench::Scenario {
        qos: 0,
        payload: 128,
        rounds: vec![round(100.0, 9.0), round(300.0, 1.0), round(200.0, 5.0)],
        agent_rounds: vec![row("d", 10.0, 50.0), row("d", 30.0, 90.0), row("d", 20.0, 70.0)],
        verify_us: 30.0,
        verify_samples_us: vec![31.0, 30.0, 45.0],
        rate_limited: false,
    };
    assert_eq!((s.median(0).msgs_per_s, s.median(0).p50_us), (200.0, 5.0));
    assert_eq!(s.agent_median().map(|d| d.msgs_per_s), Some(20.0));
    assert_eq!(s.c_over_agent(), Some(10.0));
    assert_eq!(s.verify_spread(), (30.0, 31.0, 45.0));
    s.rounds = vec![round(4000.0, 9.0), round(4000.0, 1.0), round(4001.0, 3.0)];
    s.rate_limited = true;
    assert_eq!(s.median(2).p50_us, 3.0, "the round with the median p50, whatever its msg/s");
}

#[test]
fn the_agent_baseline_verifies_and_republishes_everything_where_a_python_is_given() {
    let Ok(python) = std::env::var("MQSEAL_PYTHON") else {
        eprintln!("MQSEAL_PYTHON is not set: (d) left to scripts/bench (scripts/test runs it)");
        return;
    };
    let mut options = tiny(vec![1], 1);
    options.agent_python = Some(python);
    let report = bench::run(&options).expect("bench runs with the agent");
    check_delivered_everything(&report);
    let s = &report.scenarios[0];
    assert_eq!(s.agent_rounds.len(), 1);
    let d = &s.agent_rounds[0];
    assert_eq!((d.name.as_str(), d.expected, d.delivered), (bench::AGENT, 200, 200), "{d:?}");
    // It delivers the message without its 64-byte signature, and costs CPU of its own.
    assert_eq!(d.wire_payload_bytes, 128 + 64, "{d:?}");
    assert!(d.broker_cpu_s > 0.0 && d.p99_us >= d.p50_us, "{d:?}");
    let table = report.markdown();
    assert!(table.contains("| (d) plain Mosquitto + verify-and-republish agent") && table.contains("(c)/(d)"), "{table}");
}
