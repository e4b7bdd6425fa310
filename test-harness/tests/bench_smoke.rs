//! CI smoke run of the benchmark (issues 7 and 16): tiny numbers, debug profile,
//! seconds. It checks the tool works end to end, never how fast anything is. At
//! QoS 0 it runs the worker configurations (c1) and (c2) too, with
//! `verify_offload_above 0` so that 200 messages take the worker path (the real
//! run keeps the default, which a flat-out run exceeds), and checks the broker
//! log's counts say so. The agent baseline (d) runs once, briefly, where
//! `MQSEAL_PYTHON` names a Python with paho-mqtt and cryptography (scripts/test
//! sets it to the venv scripts/setup makes).

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
        agent_messages: None,
        audit_durability: None,
        protected_workers: Some("off".to_string()),
        worker_configs: vec!["1".to_string(), "2".to_string()],
        offload_above: Some("0".to_string()),
    }
}

fn check_delivered_everything(report: &bench::Report) {
    let messages = report.options.messages as u64;
    for s in &report.scenarios {
        assert!(!s.rounds.is_empty());
        // Worker configurations at QoS 0 only: QoS 1 is always verified on the broker thread.
        let workers: Vec<String> = if s.qos == 0 { report.options.worker_configs.clone() } else { Vec::new() };
        assert_eq!(s.worker_configs, workers, "QoS {}", s.qos);
        for round in &s.rounds {
            assert_eq!(round.len(), 3 + workers.len(), "QoS {}: configurations per round", s.qos);
            for (k, row) in round.iter().enumerate() {
                assert!(row.name.starts_with(&s.label(k)), "row order: {} is not {}", row.name, s.label(k));
                assert_eq!(row.expected, messages, "{}", row.name);
                assert_eq!(row.delivered, messages, "QoS {}: {} must deliver every message", s.qos, row.name);
                assert!(row.p50_us > 0.0 && row.p99_us >= row.p50_us && row.max_us >= row.p99_us, "{row:?}");
                assert!(row.broker_cpu_s >= 0.0 && row.clients_cpu_s >= 0.0, "{row:?}");
                assert!(row.broker_thread_cpu_s >= 0.0 && row.cpu_split_us().1 >= 0.0, "{row:?}");
                assert!(row.log_notes.is_empty(), "{}: the broker logged something to look at: {:?}", row.name, row.log_notes);
                // Every mqseal broker says what it did when it stops.
                assert_eq!(row.broker_stats.is_some(), k > 0, "{}: {:?}", row.name, row.broker_stats);
            }
            assert_eq!(round[0].name, bench::CONFIGURATIONS[0]);
            assert_eq!(round[1].name, bench::CONFIGURATIONS[1]);
            assert!(round[2].name.contains("verify_workers off"), "{}", round[2].name);
            for k in s.protected() {
                // Protected rows carry envelopes, larger than the 128-byte plaintext,
                // and mqseal accepted every one of them.
                let (row, stats) = (&round[k], round[k].broker_stats.expect("stats"));
                assert!(row.wire_payload_bytes > 128, "{row:?}");
                assert_eq!((stats.accepted, stats.denied, stats.audit_refused), (messages, 0, 0), "{}", row.name);
                if k == 2 {
                    assert_eq!(stats.on_workers, 0, "(c) with verify_workers off verifies on the broker thread");
                } else {
                    // verify_offload_above 0: the worker path (all of it but a
                    // publish that came before the broker's first tick).
                    assert!(stats.on_workers > 0 && stats.on_workers <= messages, "{}: {stats:?}", row.name);
                }
            }
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
    for needle in [
        "CPU: ",
        "verification backend: ",
        "| (a)",
        "| (b)",
        "| (c) mqseal, protected topic, verify_workers off",
        "| (c1) mqseal, protected topic, verify_workers 1",
        "| (c2) mqseal, protected topic, verify_workers 2",
        "Verification on worker threads",
        "verified on workers / accepted",
        "of it broker thread / other threads",
        "Ceiling for (c)",
        "of 4 samples taken between rounds",
        "### QoS 0, 128 B",
        "### QoS 1, 128 B",
        "Targets of issue 16",
        "growing with cores",
        "single-thread ceiling",
        "Targets of issue 7:",
    ] {
        assert!(table.contains(needle), "markdown lacks {needle}:\n{table}");
    }
    assert!(!table.contains("Path warnings") && !table.contains("Incomplete deliveries"), "{table}");
    let json = report.to_json();
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "{json}");
    assert_eq!(scenarios[0]["median"].as_array().map(Vec::len), Some(5), "{json}");
    assert_eq!(scenarios[1]["median"].as_array().map(Vec::len), Some(3), "{json}");
    assert!(scenarios[0]["median"][3]["broker_stats"]["on_workers"].as_u64().is_some_and(|n| n > 0), "{json}");
}

#[test]
fn a_fixed_rate_run_reports_latency_and_the_path_with_the_default_worker_setting() {
    let mut options = tiny(vec![0], 1);
    options.rate = Some(2000.0);
    options.protected_workers = None;
    options.worker_configs = vec!["off".to_string()];
    options.offload_above = None;
    let report = bench::run(&options).expect("bench runs at a fixed rate");
    let s = &report.scenarios[0];
    assert_eq!(s.label(3), "(c-off)");
    for row in &s.rounds[0] {
        assert_eq!(row.delivered, 200, "{}", row.name);
    }
    assert!(s.rounds[0][2].name.contains("verify_workers default: auto"), "{}", s.rounds[0][2].name);
    assert_eq!(s.rounds[0][3].broker_stats.map(|b| b.on_workers), Some(0), "off verifies on the broker thread");
    let table = report.markdown();
    for needle in ["Latency at this rate", "| (c-off) mqseal, protected, verify_workers off", "p99 latency (c)/(a)", "Path taken by (c)"] {
        assert!(table.contains(needle), "markdown lacks {needle}:\n{table}");
    }
}

#[test]
fn rounds_are_kept_and_the_median_round_is_reported() {
    let mut options = tiny(vec![0], 3);
    // The worker configurations are the first test's; here only the rounds matter.
    options.worker_configs.clear();
    let report = bench::run(&options).expect("bench runs");
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
    // By default (c) is the single-thread path and (c1), (c2) run beside it.
    assert_eq!((o.protected_workers.as_deref(), o.worker_configs.clone(), o.offload_above.clone()), (Some("off"), vec!["1".to_string(), "2".to_string()], None));
    let (o, _, _) = bench::parse_args(&args(&["--protected-workers", "default", "--worker-configs", "off,4", "--offload-above", "0"])).unwrap();
    assert_eq!((o.protected_workers, o.worker_configs, o.offload_above), (None, vec!["off".to_string(), "4".to_string()], Some("0".to_string())));
    let (o, _, _) = bench::parse_args(&args(&["--worker-configs", "none", "--agent-messages", "20000"])).unwrap();
    assert!(o.worker_configs.is_empty());
    assert_eq!(o.agent_messages, Some(20000));
    let err = bench::parse_args(&args(&["--worker-configs", "1,0"])).unwrap_err().to_string();
    assert!(err.contains("--worker-configs") && err.contains("'0'"), "{err}");
    let err = bench::parse_args(&args(&["--protected-workers", "many"])).unwrap_err().to_string();
    assert!(err.contains("--protected-workers"), "{err}");
}

#[test]
fn the_stopping_line_gives_the_path_taken_and_problems_are_picked_out_of_the_log() {
    let log = "1764595200: mqseal: 1 verification worker threads for QoS 0 protected publishes from 2000 a second\n\
               1764595201: mqseal: stopping: 100000 publishes accepted (99800 verified on worker threads), 0 denied, \
               0 subscriptions denied, 0 deliveries withheld, 0 clients disconnected; audit log 100004 records, 0 refused\n";
    let stats = bench::parse_stopping_line(log).expect("parsed");
    assert_eq!(
        stats,
        bench::BrokerStats { accepted: 100_000, on_workers: 99_800, denied: 0, audit_records: 100_004, audit_refused: 0 }
    );
    assert_eq!(bench::parse_stopping_line("1764595201: mqseal: stopping: soon\n"), None);
    assert!(bench::notable_log_lines(log).is_empty(), "a clean log has nothing to look at");
    let troubled = format!("{log}1764595202: mqseal: verification workers have not answered for 5 s; still waiting\n");
    assert_eq!(bench::notable_log_lines(&troubled).len(), 1);
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
        broker_thread_cpu_s: 0.0,
        clients_cpu_s: 0.0,
        wire_payload_bytes: 1,
        broker_stats: None,
        log_notes: Vec::new(),
    }
}

#[test]
fn the_median_round_is_by_throughput_at_full_speed_and_by_latency_at_a_fixed_rate() {
    let round = |rate: f64, p50: f64| vec![row("a", rate, p50), row("b", rate, p50), row("c", rate, p50)];
    let mut s = bench::Scenario {
        qos: 0,
        payload: 128,
        protected_workers: Some("off".to_string()),
        worker_configs: Vec::new(),
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
fn the_best_protected_configuration_is_judged_against_the_agent_and_growth_with_cores() {
    // (a), (b), (c) off, (c1), (c2): msg/s per round.
    let round = |c: f64, c1: f64, c2: f64| vec![row("a", 100.0, 1.0), row("b", 100.0, 1.0), row("c", c, 1.0), row("c1", c1, 1.0), row("c2", c2, 1.0)];
    let mut s = bench::Scenario {
        qos: 0,
        payload: 128,
        protected_workers: Some("off".to_string()),
        worker_configs: vec!["1".to_string(), "2".to_string()],
        rounds: vec![round(20.0, 30.0, 40.0), round(21.0, 31.0, 41.0), round(19.0, 29.0, 39.0)],
        agent_rounds: vec![row("d", 10.0, 50.0)],
        verify_us: 30.0,
        verify_samples_us: vec![30.0],
        rate_limited: false,
    };
    assert_eq!((s.label(3), s.label(4)), ("(c1)".to_string(), "(c2)".to_string()));
    assert_eq!(s.by_worker_count(), [(0, 2), (1, 3), (2, 4)]);
    assert_eq!(s.best_over_agent(), Some((4, 4.0)));
    assert_eq!(s.ratio_to_c(3), 1.5);
    assert_eq!(s.grows_with_cores(), Some(true));
    s.rounds = vec![round(20.0, 30.0, 25.0)];
    assert_eq!(s.grows_with_cores(), Some(false), "(c2) below (c1)");
    assert_eq!(s.best_over_agent(), Some((3, 3.0)));
    let report = |s: &bench::Scenario| {
        bench::Report { options: BenchOptions::default(), scenarios: vec![s.clone()], cpu_model: "cpu".into(), verification_backend: "b".into() }.markdown()
    };
    let table = report(&s);
    assert!(table.contains("(c1) 30 / 10 = 3.00 missed") && table.contains("worker threads) 20 <= 30 <= 25 missed"), "{table}");
    // A (d) that lost messages is flagged, and no target is judged against it.
    s.agent_rounds[0].expected = 2;
    let table = report(&s);
    assert!(table.contains("Incomplete deliveries") && table.contains("(d) round 1: 1 of 2 delivered"), "{table}");
    assert!(table.contains("128 B not judged: (d) delivered 1 of 2"), "{table}");
}

#[test]
fn the_agent_baseline_verifies_and_republishes_everything_where_a_python_is_given() {
    let Ok(python) = std::env::var("MQSEAL_PYTHON") else {
        eprintln!("MQSEAL_PYTHON is not set: (d) left to scripts/bench (scripts/test runs it)");
        return;
    };
    let mut options = tiny(vec![1], 1);
    options.agent_python = Some(python);
    // (d) may run fewer messages than the others (the agent's QoS 1 limit).
    // Not fewer than 1,000: CPU time comes from /proc in 10 ms clock ticks,
    // and 100 messages (about 12 ms of broker and agent CPU) once read as 0.
    options.messages = 1500;
    options.agent_messages = Some(1000);
    let report = bench::run(&options).expect("bench runs with the agent");
    check_delivered_everything(&report);
    let s = &report.scenarios[0];
    assert_eq!(s.agent_rounds.len(), 1);
    let d = &s.agent_rounds[0];
    assert_eq!((d.name.as_str(), d.expected, d.delivered), (bench::AGENT, 1000, 1000), "{d:?}");
    // It delivers the message without its 64-byte signature, and costs CPU of its own.
    assert_eq!(d.wire_payload_bytes, 128 + 64, "{d:?}");
    assert!(d.broker_cpu_s > 0.0 && d.p99_us >= d.p50_us, "{d:?}");
    let table = report.markdown();
    assert!(table.contains("| (d) plain Mosquitto + verify-and-republish agent") && table.contains("(c)/(d)"), "{table}");
}
