//! End-to-end benchmark (issue 7): plain Mosquitto against Mosquitto with mqseal,
//! on unprotected and on protected topics, in one run.
//!
//! [`run`] starts each configuration in turn on its own free loopback port:
//! (a) plain Mosquitto, (b) mqseal with `unprotected allow` carrying traffic on a
//! topic no group owns, (c) mqseal on `bench/#`, owned by group `bench`, with
//! sealed envelopes (full verification, audit log at its default durability).
//! Envelopes are sealed before the timed phase, so device-side cost is not counted.
//!
//! This VM's figures move by 5-15 % from one run to the next, as much as the
//! differences the targets are about; so each (QoS, payload) scenario runs the
//! three configurations several rounds, interleaved, rotating which goes first,
//! and reports each configuration's median round.
//!
//! With a Python given ([`BenchOptions::agent_python`]), each round also runs
//! (d), the baseline users build without mqseal: plain Mosquitto and a separate
//! verify-and-republish agent ([`agent`]).

pub mod agent;
pub mod load;
pub mod machine;

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use mqseal_core::device::store::DeviceStore;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::{GroupKey, SignAlg, SigningKey};
use serde_json::json;

use crate::broker::{Broker, BrokerConfig};
use crate::fleet::Fleet;
use load::{LoadResult, Workload};

/// Command-line knobs of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages published per configuration and round (split over the publishers).
    pub messages: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// QoS levels to run; each (QoS, payload) pair is one scenario.
    pub qos: Vec<u8>,
    /// Plaintext payload sizes in bytes.
    pub payloads: Vec<usize>,
    /// Total publish rate (msg/s) over all publishers; None = as fast as possible
    /// (QoS 1: as fast as each publisher's in-flight window allows).
    pub rate: Option<f64>,
    /// QoS 1 in-flight window per publisher.
    pub inflight: usize,
    /// Subscribers read in batches (SO_RCVLOWAT) at unlimited rate, so that the
    /// broker is not charged for waking a same-host client per message (see
    /// `load::set_receive_low_water_mark`). Never with `rate`: latency runs read
    /// every packet as it comes.
    pub batched_reads: bool,
    /// Each scenario runs (a), (b), (c) this many times, interleaved, the order
    /// rotating each round; the tables give the median round of each.
    pub rounds: usize,
    /// How long each broker runs before its timed phase (see [`SETTLE_AFTER_START`]).
    pub settle: std::time::Duration,
    /// Iterations of the in-process Ed25519 verify microbenchmark, over all its samples.
    pub verify_iterations: usize,
    /// Samples of it per scenario, taken between rounds (before the first, between
    /// each two and after the last), so that the ceiling's figure is a median
    /// over the whole scenario rather than one moment of a shared machine.
    pub verify_samples: usize,
    /// The Python (with paho-mqtt and cryptography) that runs the agent baseline
    /// (d); None: no (d).
    pub agent_python: Option<String>,
    /// `plugin_opt_audit_durability` for (c); None = the plugin's default (fsync).
    pub audit_durability: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            messages: 100_000,
            publishers: 4,
            subscribers: 1,
            qos: vec![0, 1],
            payloads: vec![128, 1024],
            rate: None,
            inflight: 20,
            batched_reads: true,
            rounds: 5,
            settle: SETTLE_AFTER_START,
            verify_iterations: 20_000,
            verify_samples: 40,
            agent_python: None,
            audit_durability: None,
        }
    }
}

impl BenchOptions {
    /// SO_RCVLOWAT for subscribers, if they read in batches: 16 KiB at QoS 0; at
    /// QoS 1 ten packets, half of the 20 Mosquitto keeps in flight to a client
    /// (a larger mark would wait for PUBLISHes the broker holds back until the
    /// subscriber's PUBACKs come).
    pub fn subscriber_batch_bytes(&self, qos: u8, largest_payload: usize) -> Option<usize> {
        self.reads_in_batches().then(|| if qos == 0 { 16 * 1024 } else { 10 * (largest_payload + 16) })
    }

    /// Batching is for capacity runs only: a rate-limited run measures latency.
    fn reads_in_batches(&self) -> bool {
        self.batched_reads && self.rate.is_none()
    }

    fn subscriber_reads(&self) -> &'static str {
        if self.reads_in_batches() {
            "batched (SO_RCVLOWAT)"
        } else {
            "every packet"
        }
    }
}

/// How long each broker runs before its timed phase.
pub const SETTLE_AFTER_START: std::time::Duration = std::time::Duration::from_millis(500);

/// The three configurations, in table order.
pub const CONFIGURATIONS: [&str; 3] = ["(a) plain Mosquitto", "(b) mqseal, unprotected topic", "(c) mqseal, protected topic"];
/// The baseline's row; its CPU figures are the broker's and the agent's together.
pub const AGENT: &str = "(d) plain Mosquitto + verify-and-republish agent (Python)";

/// The targets of issue 7, reported (never asserted: speed is not a test).
pub const TARGET_B_OVER_A: f64 = 0.97;
pub const TARGET_C_OVER_CEILING: f64 = 0.9;
/// Issue 16: protected QoS 0 throughput at least ten times the agent baseline's.
pub const TARGET_C_OVER_AGENT: f64 = 10.0;
/// Issue 16: p99 latency at 1,000 msg/s protected at most twice plain Mosquitto's.
pub const TARGET_P99_C_OVER_A: f64 = 2.0;

/// One configuration's measurements in one round.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub expected: u64,
    pub delivered: u64,
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Broker utime+stime during the timed phase.
    pub broker_cpu_s: f64,
    /// Broker CPU per delivered message.
    pub cpu_us_per_msg: f64,
    /// Wire size of each message's payload (the envelope in (c)).
    pub wire_payload_bytes: usize,
}

/// One (QoS, payload) pair: every round of (a), (b), (c).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub qos: u8,
    pub payload: usize,
    /// `rounds[r][k]`: configuration k (0 = (a), 1 = (b), 2 = (c)) in round r.
    pub rounds: Vec<[Row; 3]>,
    /// (d) in each round, if the agent ran.
    pub agent_rounds: Vec<Row>,
    /// One signature verification of this scenario's envelopes, µs: the median
    /// of `verify_samples_us` (see [`measure_verify_us`]).
    pub verify_us: f64,
    /// Every sample of it, taken between rounds, µs.
    pub verify_samples_us: Vec<f64>,
    /// Ran at a fixed rate: every round has the same throughput, so the median
    /// round is the one with the median p50 latency.
    pub rate_limited: bool,
}

impl Scenario {
    /// Configuration k's median round: by throughput, or by p50 latency in a
    /// rate-limited run (the lower middle one for an even number of rounds).
    pub fn median(&self, k: usize) -> &Row {
        self.median_of(self.rounds.iter().map(|r| &r[k]).collect()).expect("at least one round")
    }

    /// (d)'s median round, if the agent ran.
    pub fn agent_median(&self) -> Option<&Row> {
        self.median_of(self.agent_rounds.iter().collect())
    }

    /// (c)'s median throughput over (d)'s: what mqseal gains over the baseline.
    pub fn c_over_agent(&self) -> Option<f64> {
        self.agent_median().map(|d| self.median(2).msgs_per_s / d.msgs_per_s)
    }

    /// (lowest, median, highest) of the verification samples, µs.
    pub fn verify_spread(&self) -> (f64, f64, f64) {
        let mut v = self.verify_samples_us.clone();
        v.sort_by(f64::total_cmp);
        (v.first().copied().unwrap_or(f64::NAN), percentile(&v, 0.5), v.last().copied().unwrap_or(f64::NAN))
    }

    fn median_of<'a>(&self, mut rows: Vec<&'a Row>) -> Option<&'a Row> {
        if rows.is_empty() {
            return None;
        }
        if self.rate_limited {
            rows.sort_by(|x, y| x.p50_us.total_cmp(&y.p50_us));
        } else {
            rows.sort_by(|x, y| x.msgs_per_s.total_cmp(&y.msgs_per_s));
        }
        Some(rows[(rows.len() - 1) / 2])
    }

    /// (lowest, highest) throughput of configuration k over the rounds.
    pub fn range(&self, k: usize) -> (f64, f64) {
        let rates = self.rounds.iter().map(|r| r[k].msgs_per_s);
        (rates.clone().fold(f64::INFINITY, f64::min), rates.fold(0.0, f64::max))
    }

    /// Median throughput of configuration k over median throughput of (a).
    pub fn ratio_to_a(&self, k: usize) -> f64 {
        self.median(k).msgs_per_s / self.median(0).msgs_per_s
    }

    /// Median over the rounds of configuration k's broker CPU per message, µs.
    pub fn median_cpu_us(&self, k: usize) -> f64 {
        median(self.rounds.iter().map(|r| r[k].cpu_us_per_msg).collect())
    }

    /// The ceiling for (c): 1 / (median broker CPU per message in (a) + one
    /// verification), msg/s.
    pub fn ceiling_msgs_per_s(&self) -> f64 {
        1e6 / (self.median_cpu_us(0) + self.verify_us)
    }

    /// (c)'s median throughput as a fraction of the ceiling.
    pub fn c_over_ceiling(&self) -> f64 {
        self.median(2).msgs_per_s / self.ceiling_msgs_per_s()
    }
}

/// The whole comparison.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: BenchOptions,
    pub scenarios: Vec<Scenario>,
    /// [`machine::cpu_model`] and [`machine::verification_backend`] of this run.
    pub cpu_model: String,
    pub verification_backend: String,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    percentile(&values, 0.5)
}

/// utime + stime of a process, in seconds, from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields after its ')' are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("/proc/{pid}/stat: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / ticks)
}

/// The ceiling's "one signature verification": `iterations` times the check the
/// broker makes of an envelope sealed (Ed25519, AES-256-GCM) around a plaintext
/// of `plaintext_len` bytes — build the COSE Sig_structure over the topic,
/// headers and ciphertext, then `verify_strict` — in a hot loop on this
/// process's build (criterion's `envelope/verify` measures the same); µs each.
pub fn measure_verify_us(iterations: usize, plaintext_len: usize) -> Result<f64> {
    const TOPIC: &str = "bench/p0";
    let signer = SigningKey::generate(SignAlg::Ed25519);
    let plaintext = vec![0x5a_u8; plaintext_len];
    let bytes = envelope::seal(&SealInput {
        signer: &signer,
        sender: "bench-pub-0",
        group: "bench",
        epoch: 1,
        seq: 1,
        timestamp_ms: 1_700_000_000_000,
        topic: TOPIC,
        aead: AeadAlg::A256Gcm,
        group_key: &GroupKey::from_bytes([7; 32]),
        plaintext: &plaintext,
    })
    .map_err(|e| anyhow!("seal: {e}"))?;
    let parsed = envelope::parse(&bytes, usize::MAX).map_err(|e| anyhow!("parse: {e}"))?;
    let public = signer.verifying_key();
    let iterations = iterations.max(1);
    let start = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(&parsed).verify_signature(TOPIC, &public).map_err(|e| anyhow!("verify failed: {e}"))?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / iterations as f64)
}

/// A unique plaintext of `size` bytes for (publisher, index).
fn plaintext(size: usize, publisher: usize, index: usize) -> Vec<u8> {
    let mut payload = vec![b'.'; size.max(16)];
    let tag = format!("p{publisher:03}-m{index:09}");
    payload[..tag.len()].copy_from_slice(tag.as_bytes());
    payload
}

fn publisher_id(p: usize) -> String {
    format!("bench-pub-{p}")
}

fn subscriber_id(s: usize) -> String {
    format!("bench-sub-{s}")
}

/// Runs one configuration: starts the broker, runs the load, stops the broker.
/// The agent to run beside the broker in (d): (python, QoS, in-flight window, key file).
type AgentRun<'a> = (&'a str, u8, usize, &'a std::path::Path);

fn measure(
    name: &str,
    config: BrokerConfig,
    settle: std::time::Duration,
    workload: impl FnOnce(u16) -> Workload,
    wire_payload_bytes: usize,
    agent: Option<AgentRun<'_>>,
) -> Result<Row> {
    // Every configuration logs as a production broker would and queues without a
    // limit, so that a slow subscriber loses no QoS 1 message at unlimited rate.
    let config = config.production_logging().line("max_queued_messages 0");
    let mut broker = Broker::try_start(config).map_err(|f| anyhow!("{name}: {f}"))?;
    let pid = broker.pid().ok_or_else(|| anyhow!("{name}: broker has no pid"))?;
    // Measure a broker in service, not one finishing its start: every
    // configuration gets the same settling time after it accepts connections.
    // (mqseal's start-up records keep its audit writer thread for 100-200 ms,
    // and a second thread alone costs Mosquitto 8 %: see docs/PERFORMANCE.md.)
    let agent = match agent {
        Some((python, qos, inflight, keys)) => Some(agent::Agent::start(python, broker.port(), qos, inflight, keys)?),
        None => None,
    };
    std::thread::sleep(settle);
    let workload = workload(broker.port());
    // (d) is charged the broker's CPU and the agent's.
    let cpu = |agent: &Option<agent::Agent>| -> Result<f64> {
        Ok(process_cpu_seconds(pid)? + agent.as_ref().map_or(Ok(0.0), |a| process_cpu_seconds(a.pid()))?)
    };
    let cpu_before = cpu(&agent)?;
    let result: LoadResult = load::run(workload).with_context(|| format!("{name}: load"))?;
    let cpu_after = cpu(&agent)?;
    if let Some(agent) = agent {
        agent.stop().with_context(|| name.to_string())?;
    }
    broker.stop();
    let elapsed_s = result.elapsed.as_secs_f64().max(1e-9);
    let broker_cpu_s = cpu_after - cpu_before;
    Ok(Row {
        name: name.to_string(),
        expected: result.expected,
        delivered: result.delivered,
        elapsed_s,
        msgs_per_s: result.delivered as f64 / elapsed_s,
        p50_us: percentile(&result.latencies_us, 0.50),
        p99_us: percentile(&result.latencies_us, 0.99),
        max_us: result.latencies_us.last().copied().unwrap_or(f64::NAN),
        broker_cpu_s,
        cpu_us_per_msg: broker_cpu_s * 1e6 / (result.delivered.max(1) as f64),
        wire_payload_bytes,
    })
}

fn per_publisher(options: &BenchOptions) -> Vec<usize> {
    let p = options.publishers.max(1);
    (0..p).map(|i| options.messages / p + usize::from(i < options.messages % p)).collect()
}

/// Payloads per publisher: `[publisher][message]`.
type Payloads = Vec<Vec<Vec<u8>>>;

/// The fleet every run uses: group `bench` owns bench/#; publishers publish, subscribers read.
fn bench_fleet(options: &BenchOptions) -> Fleet {
    let fleet = Fleet::new();
    fleet.add_group("bench", &["bench/#"], 3600);
    for p in 0..options.publishers.max(1) {
        fleet.add_device(&publisher_id(p)).add_member("bench", &publisher_id(p), "pub");
    }
    for s in 0..options.subscribers {
        fleet.add_device(&subscriber_id(s)).add_member("bench", &subscriber_id(s), "sub");
    }
    for p in 0..options.publishers.max(1) {
        fleet.join(&publisher_id(p));
    }
    for s in 0..options.subscribers {
        fleet.join(&subscriber_id(s));
    }
    fleet
}

/// Seals every payload, before any timed phase; sequence numbers rise per sender.
/// A fresh broker each run has a fresh replay window, so rounds reuse them.
fn seal_all(fleet: &Fleet, plain: &Payloads) -> Result<Payloads> {
    let mut sealed = Vec::new();
    for (p, payloads) in plain.iter().enumerate() {
        let store = DeviceStore::open(&fleet.device_dir(&publisher_id(p))).context("open publisher device")?;
        let mut sealer = store.sealer().context("publisher sealer")?;
        let topic = format!("bench/p{p}");
        let mut envelopes = Vec::with_capacity(payloads.len());
        for payload in payloads {
            envelopes.push(sealer.seal(&topic, payload, AeadAlg::default()).context("seal")?.envelope);
        }
        sealed.push(envelopes);
    }
    Ok(sealed)
}

/// Runs every scenario: (a), (b), (c) and, with a Python, (d) `rounds` times
/// each, interleaved; the verification samples in the gaps between rounds.
pub fn run(options: &BenchOptions) -> Result<Report> {
    if options.qos.is_empty() || options.payloads.is_empty() || options.rounds == 0 {
        return Err(anyhow!("nothing to run: give at least one QoS, one payload size and one round"));
    }
    let counts = per_publisher(options);
    let fleet = bench_fleet(options);
    let agent_dir = tempfile::tempdir().context("temp dir for the agent's keys")?;
    let gaps = options.rounds + 1;
    let samples = options.verify_samples.max(gaps);
    let iterations_per_sample = (options.verify_iterations / samples).max(1);
    let mut scenarios = Vec::new();
    for &payload in &options.payloads {
        let plain: Payloads =
            counts.iter().enumerate().map(|(p, &n)| (0..n).map(|i| plaintext(payload, p, i)).collect()).collect();
        let sealed = seal_all(&fleet, &plain)?;
        let envelope_bytes = sealed.first().and_then(|e| e.first()).map_or(0, Vec::len);
        let signed = match &options.agent_python {
            Some(_) => Some(agent::sign_all(&plain, agent_dir.path())?),
            None => None,
        };
        for &qos in &options.qos {
            let workload = |topic_prefix: &str, filter: &str, payloads: &Payloads, delivered_offset: usize| {
                let publishers = payloads
                    .iter()
                    .enumerate()
                    .map(|(p, ps)| (publisher_id(p), format!("{topic_prefix}/p{p}"), ps.clone()))
                    .collect();
                let subscribers = (0..options.subscribers).map(|s| (subscriber_id(s), filter.to_string())).collect();
                let subscriber_batch_bytes = options.subscriber_batch_bytes(qos, envelope_bytes.max(payload));
                move |port| Workload {
                    port,
                    qos,
                    rate: options.rate,
                    inflight: options.inflight,
                    subscriber_batch_bytes,
                    publishers,
                    subscribers,
                    delivered_offset,
                }
            };
            let configurations = if signed.is_some() { 4 } else { 3 };
            let mut verify_samples_us = Vec::with_capacity(samples);
            let mut sample_verify = |gap: usize| -> Result<()> {
                // Spread the samples evenly over the gaps.
                let n = samples / gaps + usize::from(gap < samples % gaps);
                for _ in 0..n {
                    verify_samples_us.push(measure_verify_us(iterations_per_sample, payload)?);
                }
                Ok(())
            };
            let mut rounds = Vec::new();
            let mut agent_rounds = Vec::new();
            for round in 0..options.rounds {
                sample_verify(round)?;
                let mut rows: [Option<Row>; 3] = [None, None, None];
                // Rotate the order so that no configuration always runs first or last.
                for k in (0..configurations).map(|i| (i + round) % configurations) {
                    let row = match k {
                        0 => measure(CONFIGURATIONS[0], BrokerConfig::plain(), options.settle, workload("bench", "bench/#", &plain, 0), payload.max(16), None)?,
                        1 => measure(CONFIGURATIONS[1], fleet.broker_config("allow"), options.settle, workload("open", "open/#", &plain, 0), payload.max(16), None)?,
                        2 => {
                            let mut protected = fleet.broker_config("allow");
                            if let Some(durability) = &options.audit_durability {
                                protected = protected.option("audit_durability", durability);
                            }
                            measure(CONFIGURATIONS[2], protected, options.settle, workload("bench", "bench/#", &sealed, 0), envelope_bytes, None)?
                        }
                        _ => {
                            let (signed, keys) = signed.as_ref().expect("signed payloads for (d)");
                            let python = options.agent_python.as_deref().expect("a Python for (d)");
                            let wire = signed.first().and_then(|s| s.first()).map_or(0, Vec::len);
                            let run = Some((python, qos, options.inflight, keys.as_path()));
                            agent_rounds.push(measure(
                                AGENT,
                                BrokerConfig::plain(),
                                options.settle,
                                workload(agent::INGRESS, "bench/#", signed, agent::SIGNATURE_LEN),
                                wire,
                                run,
                            )?);
                            continue;
                        }
                    };
                    rows[k] = Some(row);
                }
                let [a, b, c] = rows;
                rounds.push([a.expect("ran (a)"), b.expect("ran (b)"), c.expect("ran (c)")]);
            }
            sample_verify(options.rounds)?;
            let verify_us = median(verify_samples_us.clone());
            scenarios.push(Scenario { qos, payload, rounds, agent_rounds, verify_us, verify_samples_us, rate_limited: options.rate.is_some() });
        }
    }
    Ok(Report {
        options: options.clone(),
        scenarios,
        cpu_model: machine::cpu_model(),
        verification_backend: machine::verification_backend(),
    })
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value >= target {
        "met"
    } else {
        "missed"
    }
}

impl Report {
    /// The results as Markdown: a summary line per scenario, then each scenario's table.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut out = format!("CPU: {}; verification backend: {}\n\n", self.cpu_model, self.verification_backend);
        out.push_str(&format!(
            "{} messages per run, {} publishers, {} subscribers, rate {}, QoS 1 in-flight window {}, subscriber reads {}, \
             audit durability {}, {} round(s) per configuration (median shown; order rotated each round)\n\n",
            o.messages,
            o.publishers,
            o.subscribers,
            o.rate.map_or("unlimited".to_string(), |r| format!("{r} msg/s")),
            o.inflight,
            o.subscriber_reads(),
            o.audit_durability.as_deref().unwrap_or("default (fsync)"),
            o.rounds,
        ));
        let with_agent = self.scenarios.iter().any(|s| !s.agent_rounds.is_empty());
        out.push_str(
            "| QoS | payload B | (a) msg/s | (b) msg/s | (b)/(a) | broker CPU µs/msg (a) / (b) / (c) | (c) msg/s | (c)/(a) | ceiling for (c) msg/s | (c)/ceiling |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for s in &self.scenarios {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.3} | {:.1} / {:.1} / {:.1} | {:.0} | {:.3} | {:.0} | {:.3} |\n",
                s.qos,
                s.payload,
                s.median(0).msgs_per_s,
                s.median(1).msgs_per_s,
                s.ratio_to_a(1),
                s.median_cpu_us(0),
                s.median_cpu_us(1),
                s.median_cpu_us(2),
                s.median(2).msgs_per_s,
                s.ratio_to_a(2),
                s.ceiling_msgs_per_s(),
                s.c_over_ceiling(),
            ));
        }
        if with_agent {
            out.push_str("\n| QoS | payload B | (d) agent msg/s | (d) CPU µs/msg (broker + agent) | (c) msg/s | (c)/(d) | p50 µs (a) / (c) / (d) | p99 µs (a) / (c) / (d) |\n");
            out.push_str("|---|---|---|---|---|---|---|---|\n");
            for s in &self.scenarios {
                let Some(d) = s.agent_median() else { continue };
                let (a, c) = (s.median(0), s.median(2));
                out.push_str(&format!(
                    "| {} | {} | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |\n",
                    s.qos,
                    s.payload,
                    d.msgs_per_s,
                    median(s.agent_rounds.iter().map(|r| r.cpu_us_per_msg).collect()),
                    c.msgs_per_s,
                    s.c_over_agent().unwrap_or(f64::NAN),
                    a.p50_us,
                    c.p50_us,
                    d.p50_us,
                    a.p99_us,
                    c.p99_us,
                    d.p99_us,
                ));
            }
        }
        if o.rate.is_some() {
            out.push_str(&format!(
                "\nAt this rate, p99 latency (c)/(a) (target at 1,000 msg/s: <= {TARGET_P99_C_OVER_A}): {}.\n",
                self.scenarios
                    .iter()
                    .map(|s| {
                        let ratio = s.median(2).p99_us / s.median(0).p99_us;
                        format!("QoS {} {} B {ratio:.2} {}", s.qos, s.payload, if ratio <= TARGET_P99_C_OVER_A { "met" } else { "missed" })
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if with_agent && o.rate.is_none() {
            out.push_str(&format!(
                "\nTarget (c)/(d) >= {TARGET_C_OVER_AGENT} at QoS 0: {}.\n",
                self.scenarios
                    .iter()
                    .filter(|s| s.qos == 0)
                    .filter_map(|s| s.c_over_agent().map(|r| format!("{} B {r:.2} {}", s.payload, verdict(r, TARGET_C_OVER_AGENT))))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if o.rate.is_some() {
            out.push_str(
                "\nThis run was rate-limited: msg/s is the offered rate, so the ratios and the ceiling fraction say \
                 nothing about capacity (compare CPU µs/msg and latency; each table shows the round with the median p50).\n",
            );
        } else {
            out.push_str(&format!(
                "\nTargets: (b)/(a) >= {TARGET_B_OVER_A} {}; (c)/ceiling >= {TARGET_C_OVER_CEILING} {}.\n",
                self.scenarios.iter().map(|s| format!("QoS {} {} B {}", s.qos, s.payload, verdict(s.ratio_to_a(1), TARGET_B_OVER_A))).collect::<Vec<_>>().join(", "),
                self.scenarios.iter().map(|s| format!("QoS {} {} B {}", s.qos, s.payload, verdict(s.c_over_ceiling(), TARGET_C_OVER_CEILING))).collect::<Vec<_>>().join(", "),
            ));
        }
        for s in &self.scenarios {
            out.push_str(&format!("\n### QoS {}, {} B payload\n\n", s.qos, s.payload));
            out.push_str("| configuration | delivered | msg/s | range over rounds | vs (a) | p50 µs | p99 µs | max µs | broker CPU s | CPU µs/msg | wire payload B |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
            let agent = s.agent_median().map(|d| {
                let rates = s.agent_rounds.iter().map(|r| r.msgs_per_s);
                (d, rates.clone().fold(f64::INFINITY, f64::min), rates.fold(0.0, f64::max))
            });
            let rows = (0..3).map(|k| {
                let (low, high) = s.range(k);
                (s.median(k), low, high)
            });
            for (r, low, high) in rows.chain(agent) {
                out.push_str(&format!(
                    "| {} | {}/{} | {:.0} | {:.0}-{:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {} |\n",
                    r.name,
                    r.delivered,
                    r.expected,
                    r.msgs_per_s,
                    low,
                    high,
                    r.msgs_per_s / s.median(0).msgs_per_s,
                    r.p50_us,
                    r.p99_us,
                    r.max_us,
                    r.broker_cpu_s,
                    r.cpu_us_per_msg,
                    r.wire_payload_bytes
                ));
            }
            let (low, mid, high) = s.verify_spread();
            out.push_str(&format!(
                "\nCeiling for (c): 1 / ({:.1} µs median broker CPU per message in (a) + {:.1} µs to verify one envelope) = {:.0} msg/s; \
                 (c) reaches {:.3} of it. Verification: median {mid:.1} µs of {} samples taken between rounds, \
                 lowest {low:.1}, highest {high:.1}.\n",
                s.median_cpu_us(0),
                s.verify_us,
                s.ceiling_msgs_per_s(),
                s.c_over_ceiling(),
                s.verify_samples_us.len(),
            ));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let o = &self.options;
        let row_json = |r: &Row| {
            json!({
                "name": r.name, "expected": r.expected, "delivered": r.delivered, "elapsed_s": r.elapsed_s,
                "msgs_per_s": r.msgs_per_s, "p50_us": r.p50_us, "p99_us": r.p99_us,
                "max_us": r.max_us, "broker_cpu_s": r.broker_cpu_s, "cpu_us_per_msg": r.cpu_us_per_msg,
                "wire_payload_bytes": r.wire_payload_bytes,
            })
        };
        let scenarios: Vec<_> = self
            .scenarios
            .iter()
            .map(|s| {
                json!({
                    "qos": s.qos,
                    "payload": s.payload,
                    "median": (0..3).map(|k| row_json(s.median(k))).collect::<Vec<_>>(),
                    "b_over_a": s.ratio_to_a(1),
                    "c_over_a": s.ratio_to_a(2),
                    "median_cpu_us_per_msg": (0..3).map(|k| s.median_cpu_us(k)).collect::<Vec<_>>(),
                    "verify_us": s.verify_us,
                    "verify_samples_us": s.verify_samples_us,
                    "agent_median": s.agent_median().map(row_json),
                    "c_over_agent": s.c_over_agent(),
                    "agent_rounds": s.agent_rounds.iter().map(row_json).collect::<Vec<_>>(),
                    "ceiling_msgs_per_s": s.ceiling_msgs_per_s(),
                    "c_over_ceiling": s.c_over_ceiling(),
                    "rounds": s.rounds.iter().map(|r| r.iter().map(row_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "cpu_model": self.cpu_model,
            "verification_backend": self.verification_backend,
            "options": {
                "messages": o.messages, "publishers": o.publishers, "subscribers": o.subscribers, "qos": o.qos,
                "payloads": o.payloads, "rate": o.rate, "inflight": o.inflight, "rounds": o.rounds,
                "subscriber_reads": o.subscriber_reads(),
                "audit_durability": o.audit_durability,
                "verify_samples": o.verify_samples, "agent": o.agent_python.is_some(),
            },
            "targets": {
                "b_over_a": TARGET_B_OVER_A, "c_over_ceiling": TARGET_C_OVER_CEILING,
                "c_over_agent": TARGET_C_OVER_AGENT, "p99_c_over_a_at_1000": TARGET_P99_C_OVER_A,
            },
            "scenarios": scenarios,
        })
    }
}

/// Parses the bench command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<(BenchOptions, Option<String>, Option<String>)> {
    let mut o = BenchOptions::default();
    let (mut json_out, mut md_out) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| anyhow!("{flag} needs a value"));
        let num = |v: &str| v.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).ok_or_else(|| anyhow!("{flag}: '{v}' is not a number"));
        let count = |v: &str| num(v).map(|n| n as usize);
        match flag.as_str() {
            "--messages" => o.messages = count(&value()?)?.max(1),
            "--publishers" => o.publishers = count(&value()?)?.max(1),
            "--subscribers" => o.subscribers = count(&value()?)?.max(1),
            "--qos" => {
                o.qos = value()?
                    .split(',')
                    .map(|q| match q.trim() {
                        "0" => Ok(0),
                        "1" => Ok(1),
                        v => Err(anyhow!("--qos: '{v}' must be 0 or 1 (or a list: 0,1)")),
                    })
                    .collect::<Result<_>>()?
            }
            "--payload" => o.payloads = value()?.split(',').map(|v| count(v.trim()).map(|n| n.max(16))).collect::<Result<_>>()?,
            "--rate" => o.rate = Some(num(&value()?)?).filter(|r| *r > 0.0),
            "--inflight" => o.inflight = count(&value()?)?.max(1),
            "--rounds" => o.rounds = count(&value()?)?.max(1),
            "--eager-subscribers" => o.batched_reads = false,
            "--verify-iterations" => o.verify_iterations = count(&value()?)?.max(1),
            "--verify-samples" => o.verify_samples = count(&value()?)?.max(1),
            "--agent-python" => o.agent_python = Some(value()?),
            "--audit-durability" => o.audit_durability = Some(value()?),
            "--json" => json_out = Some(value()?),
            "--markdown" => md_out = Some(value()?),
            other => {
                return Err(anyhow!(
                    "unknown option '{other}' (see --messages --publishers --subscribers --qos --payload --rate --inflight \
                     --eager-subscribers --rounds --verify-iterations --verify-samples --agent-python --audit-durability --json --markdown)"
                ))
            }
        }
    }
    Ok((o, json_out, md_out))
}
