//! End-to-end benchmark (issues 7 and 16): plain Mosquitto against Mosquitto with
//! mqseal, on unprotected and on protected topics, in one run.
//!
//! [`run`] starts each configuration in turn on its own free loopback port:
//! (a) plain Mosquitto, (b) mqseal with `unprotected allow` carrying traffic on a
//! topic no group owns (mqseal's defaults otherwise), (c) mqseal on `bench/#`,
//! owned by group `bench`, with sealed envelopes (full verification, audit log at
//! its default durability) and `verify_workers` as
//! [`BenchOptions::protected_workers`] says (`off` by default: the single-thread
//! path, the one the ceiling describes). At QoS 0 it also runs one protected
//! configuration per [`BenchOptions::worker_configs`] entry: (c1) and (c2) by
//! default, `verify_workers 1` and `2` (issue 16, item 2). QoS 1 is always
//! verified on the broker thread, so those do not run at QoS 1.
//! Envelopes are sealed before the timed phase, so device-side cost is not counted.
//!
//! This VM's figures move by 5-15 % from one run to the next, as much as the
//! differences the targets are about; so each (QoS, payload) scenario runs the
//! configurations several rounds, interleaved, rotating which goes first,
//! and reports each configuration's median round. [`report`] makes the tables
//! and judges the targets.
//!
//! With a Python given ([`BenchOptions::agent_python`]), each round also runs
//! (d), the baseline users build without mqseal: plain Mosquitto and a separate
//! verify-and-republish agent ([`agent`]).

pub mod agent;
pub mod load;
pub mod machine;
pub mod report;

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use mqseal_core::broker::config::auto_verify_workers;
use mqseal_core::device::store::DeviceStore;
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::{GroupKey, SignAlg, SigningKey};

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
    /// Messages per (d) run, if fewer than `messages`: at QoS 1 a flat-out burst
    /// of 100,000 makes (d) stop delivering after 65,000-69,000 messages (cause
    /// not found, docs/PERFORMANCE.md); None: `messages`.
    pub agent_messages: Option<usize>,
    /// `plugin_opt_audit_durability` for (c); None = the plugin's default (fsync).
    pub audit_durability: Option<String>,
    /// `plugin_opt_verify_workers` for (c): `off`, `auto` or a count; None = the
    /// plugin's default (`auto`). Default `off`: (c) is then the single-thread
    /// path, which the ceiling describes.
    pub protected_workers: Option<String>,
    /// More protected configurations, run at QoS 0 only (QoS 1 is always verified
    /// on the broker thread): one per `verify_workers` value given, labelled
    /// (c1), (c2), ... for counts and (c-off), (c-auto) otherwise ([`worker_label`]).
    /// Default: 1 and 2.
    pub worker_configs: Vec<String>,
    /// `plugin_opt_verify_offload_above` for (c) and those; None = the plugin's
    /// default (10000 a second, which a flat-out run exceeds).
    pub offload_above: Option<String>,
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
            agent_messages: None,
            audit_durability: None,
            protected_workers: Some("off".to_string()),
            worker_configs: vec!["1".to_string(), "2".to_string()],
            offload_above: None,
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

/// `max_queued_messages` of every benchmark broker: more than any run queues.
pub const QUEUE_WITHOUT_LIMIT: u32 = 1_000_000_000;

/// How long each broker runs before its timed phase.
pub const SETTLE_AFTER_START: std::time::Duration = std::time::Duration::from_millis(500);

/// The three configurations every scenario runs, in table order. Protected rows
/// are named with their `verify_workers` setting after this: see [`protected_name`].
pub const CONFIGURATIONS: [&str; 3] = ["(a) plain Mosquitto", "(b) mqseal, unprotected topic", "(c) mqseal, protected topic"];

/// The short label of the protected configuration with `verify_workers` =
/// `workers` that runs beside (c): (c1), (c2) for counts, (c-off), (c-auto) otherwise.
pub fn worker_label(workers: &str) -> String {
    if workers.parse::<u32>().is_ok() {
        format!("(c{workers})")
    } else {
        format!("(c-{workers})")
    }
}

/// `verify_workers` as the report names it; `auto` (and the default, which is
/// `auto`) with what it means on this machine.
pub fn workers_setting(workers: Option<&str>) -> String {
    match workers {
        None => format!("verify_workers default: auto = {}", auto_verify_workers()),
        Some("auto") => format!("verify_workers auto = {}", auto_verify_workers()),
        Some(value) => format!("verify_workers {value}"),
    }
}

/// A protected row's name: its label, then its `verify_workers` setting.
pub fn protected_name(label: &str, workers: Option<&str>) -> String {
    format!("{label} mqseal, protected topic, {}", workers_setting(workers))
}

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
    /// Of `broker_cpu_s`, the broker thread's (Mosquitto's main thread, where
    /// every plugin callback runs); the rest is the verification workers', the
    /// audit writer's and, in (d), the agent's.
    pub broker_thread_cpu_s: f64,
    /// The load generator's CPU (the bench's publisher and subscriber threads),
    /// which runs on the same cores.
    pub clients_cpu_s: f64,
    /// Wire size of each message's payload (the envelope in (c)).
    pub wire_payload_bytes: usize,
    /// mqseal's counts from the broker log's `stopping:` line (configurations
    /// with mqseal; None for plain Mosquitto, or when the line is missing, which
    /// `log_notes` then says).
    pub broker_stats: Option<BrokerStats>,
    /// Lines of the broker log a reader should see (errors, warnings, workers
    /// not answering; see [`notable_log_lines`]); empty in a clean run.
    pub log_notes: Vec<String>,
}

impl Row {
    /// Whether every subscriber got every message: a row that did not is no
    /// measure of throughput (its msg/s counts only what arrived).
    pub fn complete(&self) -> bool {
        self.delivered == self.expected
    }

    /// CPU per delivered message, µs: (broker thread, the broker's other
    /// threads (and the agent in (d)), the load generator). The kernel scales a
    /// thread's and its process's tick counts apart, so the thread may show a
    /// few ticks more than the whole: the rest is then 0.
    pub fn cpu_split_us(&self) -> (f64, f64, f64) {
        let per = |s: f64| s * 1e6 / self.delivered.max(1) as f64;
        (per(self.broker_thread_cpu_s), per((self.broker_cpu_s - self.broker_thread_cpu_s).max(0.0)), per(self.clients_cpu_s))
    }
}

/// The counts of mqseal's last log line, `stopping: N publishes accepted (M
/// verified on worker threads), D denied, ...; audit log R records, F refused`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub accepted: u64,
    /// Of those, verified on worker threads: shows which path was taken.
    pub on_workers: u64,
    pub denied: u64,
    pub audit_records: u64,
    pub audit_refused: u64,
}

/// The counts of the broker log's `mqseal: stopping:` line, if it has one in
/// the expected form.
pub fn parse_stopping_line(log: &str) -> Option<BrokerStats> {
    let line = log.lines().rev().find(|l| l.contains("mqseal: stopping: "))?;
    let tail = line.split_once("mqseal: stopping: ")?.1;
    let numbers: Vec<u64> = tail.split(|c: char| !c.is_ascii_digit()).filter(|t| !t.is_empty()).filter_map(|t| t.parse().ok()).collect();
    // accepted, on workers, denied, subscriptions denied, deliveries withheld,
    // clients disconnected, audit records, audit refused.
    if numbers.len() != 8 || !tail.contains("verified on worker threads") {
        return None;
    }
    Some(BrokerStats { accepted: numbers[0], on_workers: numbers[1], denied: numbers[2], audit_records: numbers[6], audit_refused: numbers[7] })
}

/// Lines of a benchmark broker's log worth a reader's look: the broker's or
/// mqseal's errors and warnings (workers not answering included). Mosquitto's
/// log file carries no level, so this goes by the words; the bench's own
/// clients connect and disconnect cleanly and are never refused. Mosquitto's
/// warning about running as root (the bench runs where the tests run) is left out.
pub fn notable_log_lines(log: &str) -> Vec<String> {
    const WORDS: [&str; 10] =
        ["error", "warning", "not answered", "cannot", "refus", "denied:", "lost", "panic", "disconnected due", "out of memory"];
    log.lines()
        .filter(|l| !l.contains("mqseal: stopping: ") && !l.contains("should not be run as root"))
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            WORDS.iter().any(|w| lower.contains(w))
        })
        .map(str::to_string)
        .collect()
}

/// One (QoS, payload) pair: every round of (a), (b), (c) and the worker configurations.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub qos: u8,
    pub payload: usize,
    /// `verify_workers` of (c) ([`BenchOptions::protected_workers`]).
    pub protected_workers: Option<String>,
    /// `verify_workers` of configurations 3, 4, ... (empty at QoS 1).
    pub worker_configs: Vec<String>,
    /// `rounds[r][k]`: configuration k (0 = (a), 1 = (b), 2 = (c), then one per
    /// `worker_configs` entry) in round r.
    pub rounds: Vec<Vec<Row>>,
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

    /// How many configurations each round ran ((d) not counted).
    pub fn configurations(&self) -> usize {
        3 + self.worker_configs.len()
    }

    /// Configuration k's short label: (a), (b), (c), (c1), ...
    pub fn label(&self, k: usize) -> String {
        match k {
            0 => "(a)".to_string(),
            1 => "(b)".to_string(),
            2 => "(c)".to_string(),
            _ => worker_label(&self.worker_configs[k - 3]),
        }
    }

    /// The protected configurations: (c), then the worker configurations.
    pub fn protected(&self) -> std::ops::Range<usize> {
        2..self.configurations()
    }

    /// `verify_workers` of protected configuration k.
    pub fn workers_of(&self, k: usize) -> Option<&str> {
        if k == 2 {
            self.protected_workers.as_deref()
        } else {
            self.worker_configs.get(k.wrapping_sub(3)).map(String::as_str)
        }
    }

    /// The protected configuration with the highest median throughput.
    pub fn best_protected(&self) -> usize {
        self.protected().max_by(|&x, &y| self.median(x).msgs_per_s.total_cmp(&self.median(y).msgs_per_s)).unwrap_or(2)
    }

    /// The best protected configuration's median throughput over (d)'s: the
    /// "10x the agent" target of issue 16.
    pub fn best_over_agent(&self) -> Option<(usize, f64)> {
        let k = self.best_protected();
        self.agent_median().map(|d| (k, self.median(k).msgs_per_s / d.msgs_per_s))
    }

    /// Configuration k's median throughput over (c)'s.
    pub fn ratio_to_c(&self, k: usize) -> f64 {
        self.median(k).msgs_per_s / self.median(2).msgs_per_s
    }

    /// Worker threads of protected configuration k: `off` 0, `auto` (and the
    /// default) resolved as the plugin resolves it on this machine.
    pub fn threads_of(&self, k: usize) -> Option<usize> {
        match self.workers_of(k) {
            Some("off") => Some(0),
            Some("auto") | None => Some(auto_verify_workers()),
            Some(v) => v.parse().ok(),
        }
    }

    /// (worker threads, configuration) of the protected configurations, fewest
    /// threads first: (c) (`off`), (c1), (c2).
    pub fn by_worker_count(&self) -> Vec<(usize, usize)> {
        let mut series: Vec<(usize, usize)> = self.protected().filter_map(|k| Some((self.threads_of(k)?, k))).collect();
        series.sort();
        series.dedup_by_key(|(n, _)| *n);
        series
    }

    /// Whether median throughput does not fall as worker threads are added
    /// ((c) off <= (c1) <= (c2)); None with fewer than two worker counts.
    pub fn grows_with_cores(&self) -> Option<bool> {
        let series = self.by_worker_count();
        (series.len() >= 2).then(|| series.windows(2).all(|w| self.median(w[1].1).msgs_per_s >= self.median(w[0].1).msgs_per_s))
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

/// utime + stime of a process (all its threads, exited ones included), in
/// seconds, from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// utime + stime of one thread of a process, in seconds: its main thread's
/// (`tid` = `pid`) is the broker thread, where Mosquitto runs every plugin callback.
pub fn thread_cpu_seconds(pid: u32, tid: u32) -> Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/task/{tid}/stat"))
}

fn stat_cpu_seconds(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may contain spaces: fields after its ')' are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("{path}: no ')'"))?;
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
    // limit in practice, so that a slow subscriber loses no message at unlimited
    // rate. Not `max_queued_messages 0` (no limit): with 0, Mosquitto 2.0's
    // handle__publish answers every ACL-denied QoS 0 publish by disconnecting the
    // publisher (its `out_packet_count >= max_queued_messages` check; 2.1 tests
    // for > 0 first), and the worker path drops each original with a denial.
    let config = config.production_logging().line(&format!("max_queued_messages {QUEUE_WITHOUT_LIMIT}"));
    let with_plugin = config.with_plugin;
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
    // Apart: the broker thread's share, and the load generator's (this process's
    // client threads), which shares the machine's cores with the broker.
    let broker_thread = || thread_cpu_seconds(pid, pid);
    let clients = || process_cpu_seconds(std::process::id());
    let (cpu_before, thread_before, clients_before) = (cpu(&agent)?, broker_thread()?, clients()?);
    let result: LoadResult = match load::run(workload) {
        Ok(result) => result,
        Err(e) => {
            // The broker's log says why it closed a connection or stopped answering.
            broker.stop();
            let log = broker.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(e.context(format!("{name}: load; the broker log ends:\n{}", tail.join("\n"))));
        }
    };
    let (cpu_after, thread_after, clients_after) = (cpu(&agent)?, broker_thread()?, clients()?);
    if let Some(agent) = agent {
        agent.stop().with_context(|| name.to_string())?;
    }
    broker.stop();
    let log = broker.log();
    let mut log_notes = notable_log_lines(&log);
    let broker_stats = if with_plugin { parse_stopping_line(&log) } else { None };
    if with_plugin && broker_stats.is_none() {
        log_notes.push("no `mqseal: stopping:` line in the broker log".to_string());
    }
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
        broker_thread_cpu_s: thread_after - thread_before,
        clients_cpu_s: clients_after - clients_before,
        wire_payload_bytes,
        broker_stats,
        log_notes,
    })
}

/// `messages` split over the publishers.
fn per_publisher(messages: usize, publishers: usize) -> Vec<usize> {
    let p = publishers.max(1);
    (0..p).map(|i| messages / p + usize::from(i < messages % p)).collect()
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

/// Runs every scenario: (a), (b), (c), at QoS 0 the worker configurations, and,
/// with a Python, (d), `rounds` times each, interleaved; the verification
/// samples in the gaps between rounds.
pub fn run(options: &BenchOptions) -> Result<Report> {
    if options.qos.is_empty() || options.payloads.is_empty() || options.rounds == 0 {
        return Err(anyhow!("nothing to run: give at least one QoS, one payload size and one round"));
    }
    let counts = per_publisher(options.messages, options.publishers);
    let agent_counts = per_publisher(options.agent_messages.unwrap_or(options.messages).min(options.messages), options.publishers);
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
            Some(_) => {
                let fewer: Payloads = plain.iter().zip(&agent_counts).map(|(ps, &n)| ps[..n.min(ps.len())].to_vec()).collect();
                Some(agent::sign_all(&fewer, agent_dir.path())?)
            }
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
            // QoS 1 is always verified on the broker thread: worker configurations
            // would only repeat (c).
            let worker_configs = if qos == 0 { options.worker_configs.clone() } else { Vec::new() };
            let protected = |workers: Option<&str>| {
                let mut config = fleet.broker_config("allow");
                if let Some(workers) = workers {
                    config = config.option("verify_workers", workers);
                }
                if let Some(above) = &options.offload_above {
                    config = config.option("verify_offload_above", above);
                }
                if let Some(durability) = &options.audit_durability {
                    config = config.option("audit_durability", durability);
                }
                config
            };
            let mqseal_configurations = 3 + worker_configs.len();
            let configurations = mqseal_configurations + usize::from(signed.is_some());
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
                let mut rows: Vec<Option<Row>> = vec![None; mqseal_configurations];
                // Rotate the order so that no configuration always runs first or last.
                for k in (0..configurations).map(|i| (i + round) % configurations) {
                    let row = match k {
                        0 => measure(CONFIGURATIONS[0], BrokerConfig::plain(), options.settle, workload("bench", "bench/#", &plain, 0), payload.max(16), None)?,
                        1 => measure(CONFIGURATIONS[1], fleet.broker_config("allow"), options.settle, workload("open", "open/#", &plain, 0), payload.max(16), None)?,
                        k if k < mqseal_configurations => {
                            let (label, workers) = match k {
                                2 => ("(c)".to_string(), options.protected_workers.as_deref()),
                                _ => (worker_label(&worker_configs[k - 3]), Some(worker_configs[k - 3].as_str())),
                            };
                            let name = protected_name(&label, workers);
                            measure(&name, protected(workers), options.settle, workload("bench", "bench/#", &sealed, 0), envelope_bytes, None)?
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
                rounds.push(rows.into_iter().map(|row| row.expect("ran every configuration")).collect());
            }
            sample_verify(options.rounds)?;
            let verify_us = median(verify_samples_us.clone());
            scenarios.push(Scenario {
                qos,
                payload,
                protected_workers: options.protected_workers.clone(),
                worker_configs,
                rounds,
                agent_rounds,
                verify_us,
                verify_samples_us,
                rate_limited: options.rate.is_some(),
            });
        }
    }
    Ok(Report {
        options: options.clone(),
        scenarios,
        cpu_model: machine::cpu_model(),
        verification_backend: machine::verification_backend(),
    })
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
            "--agent-messages" => o.agent_messages = Some(count(&value()?)?.max(1)),
            "--audit-durability" => o.audit_durability = Some(value()?),
            "--protected-workers" => {
                o.protected_workers = match value()?.as_str() {
                    "default" => None,
                    v => Some(workers_value("--protected-workers", v)?),
                }
            }
            "--worker-configs" => {
                o.worker_configs = match value()?.as_str() {
                    "" | "none" => Vec::new(),
                    list => list.split(',').map(|v| workers_value("--worker-configs", v.trim())).collect::<Result<_>>()?,
                }
            }
            "--offload-above" => {
                o.offload_above = match value()?.as_str() {
                    "default" => None,
                    v => Some(count(v)?.to_string()),
                }
            }
            "--json" => json_out = Some(value()?),
            "--markdown" => md_out = Some(value()?),
            other => {
                return Err(anyhow!(
                    "unknown option '{other}' (see --messages --publishers --subscribers --qos --payload --rate --inflight \
                     --eager-subscribers --rounds --verify-iterations --verify-samples --agent-python --agent-messages --audit-durability \
                     --protected-workers --worker-configs --offload-above --json --markdown)"
                ))
            }
        }
    }
    Ok((o, json_out, md_out))
}

/// A `verify_workers` value the plugin accepts: `off`, `auto` or 1-64.
fn workers_value(flag: &str, value: &str) -> Result<String> {
    match value {
        "off" | "auto" => Ok(value.to_string()),
        v => match v.parse::<usize>() {
            Ok(n) if (1..=mqseal_core::broker::config::MAX_VERIFY_WORKERS).contains(&n) => Ok(n.to_string()),
            _ => Err(anyhow!("{flag}: '{v}' is not off, auto or 1-{}", mqseal_core::broker::config::MAX_VERIFY_WORKERS)),
        },
    }
}
