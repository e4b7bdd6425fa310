//! End-to-end benchmark (issue 7): plain Mosquitto against Mosquitto with mqseal,
//! on unprotected and on protected topics, in one run.
//!
//! [`run`] starts each configuration in turn on its own free loopback port:
//! (a) plain Mosquitto, (b) mqseal with `unprotected allow` carrying traffic on a
//! topic no group owns, (c) mqseal on `bench/#`, owned by group `bench`, with
//! sealed envelopes (full verification, audit log at its default durability).
//! Envelopes are sealed before the timed phase, so device-side cost is not counted.

pub mod load;

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use mqseal_core::device_store::DeviceStore;
use mqseal_core::envelope::AeadAlg;
use mqseal_core::keys::{SignAlg, SigningKey};
use serde_json::json;

use crate::broker::{Broker, BrokerConfig};
use crate::fleet::Fleet;
use load::{LoadResult, Workload};

/// Command-line knobs of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Total messages published per configuration (split over the publishers).
    pub messages: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: u8,
    /// Plaintext payload size in bytes (128 or 1024).
    pub payload: usize,
    /// Total publish rate (msg/s) over all publishers; None = as fast as possible.
    /// QoS 1 runs at a fixed rate (default 2000 msg/s).
    pub rate: Option<f64>,
    /// Iterations of the in-process Ed25519 verify microbenchmark.
    pub verify_iterations: usize,
    /// `plugin_opt_audit_durability` for (c); None = the plugin's default (fsync).
    pub audit_durability: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { messages: 20_000, publishers: 4, subscribers: 1, qos: 0, payload: 128, rate: None, verify_iterations: 20_000, audit_durability: None }
    }
}

impl BenchOptions {
    fn effective_rate(&self) -> Option<f64> {
        match (self.qos, self.rate) {
            (_, Some(r)) => Some(r),
            (0, None) => None,
            (_, None) => Some(2000.0),
        }
    }
}

/// One configuration's measurements.
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

/// The whole comparison.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: BenchOptions,
    pub rows: Vec<Row>,
    /// One Ed25519 verify_strict (in-process, this build's profile).
    pub verify_us: f64,
    /// 1 / (broker CPU per message in (a) + one verify), msg/s.
    pub ceiling_msgs_per_s: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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

/// Times `iterations` Ed25519 verifications of a 200-byte message; µs per verify.
pub fn measure_verify_us(iterations: usize) -> Result<f64> {
    let key = SigningKey::generate(SignAlg::Ed25519);
    let public = key.verifying_key();
    let msg = vec![0x5a_u8; 200];
    let sig = key.sign(&msg);
    let iterations = iterations.max(1);
    let start = Instant::now();
    for _ in 0..iterations {
        public.verify(std::hint::black_box(&msg), std::hint::black_box(&sig)).map_err(|e| anyhow!("verify failed: {e}"))?;
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
fn measure(name: &str, config: BrokerConfig, work: impl FnOnce(u16) -> Workload, wire_payload_bytes: usize) -> Result<Row> {
    let mut broker = Broker::try_start(config).map_err(|f| anyhow!("{name}: {f}"))?;
    let pid = broker.pid().ok_or_else(|| anyhow!("{name}: broker has no pid"))?;
    let workload = work(broker.port());
    let cpu_before = process_cpu_seconds(pid)?;
    let result: LoadResult = load::run(workload).with_context(|| format!("{name}: load"))?;
    let cpu_after = process_cpu_seconds(pid)?;
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

/// Runs configurations (a), (b), (c) one after another and returns the report.
pub fn run(options: &BenchOptions) -> Result<Report> {
    let counts = per_publisher(options);
    let rate = options.effective_rate();
    let plain_payloads: Vec<Vec<Vec<u8>>> =
        counts.iter().enumerate().map(|(p, &n)| (0..n).map(|i| plaintext(options.payload, p, i)).collect()).collect();
    let make_work = |topic_prefix: &str, filter: &str, payloads: Vec<Vec<Vec<u8>>>| {
        let publishers = payloads
            .into_iter()
            .enumerate()
            .map(|(p, ps)| (publisher_id(p), format!("{topic_prefix}/p{p}"), ps))
            .collect();
        let subscribers = (0..options.subscribers).map(|s| (subscriber_id(s), filter.to_string())).collect();
        move |port| Workload { port, qos: options.qos, rate, publishers, subscribers }
    };

    // The fleet: group `bench` owns bench/#; publishers publish, subscribers read.
    let fleet = Fleet::new();
    fleet.add_group("bench", &["bench/#"], 3600);
    for p in 0..counts.len() {
        fleet.add_device(&publisher_id(p)).add_member("bench", &publisher_id(p), "pub");
    }
    for s in 0..options.subscribers {
        fleet.add_device(&subscriber_id(s)).add_member("bench", &subscriber_id(s), "sub");
    }
    for p in 0..counts.len() {
        fleet.join(&publisher_id(p));
    }
    for s in 0..options.subscribers {
        fleet.join(&subscriber_id(s));
    }
    // Seal everything before any timed phase; sequence numbers rise per sender.
    let mut sealed: Vec<Vec<Vec<u8>>> = Vec::new();
    for (p, payloads) in plain_payloads.iter().enumerate() {
        let store = DeviceStore::open(&fleet.device_dir(&publisher_id(p))).context("open publisher device")?;
        let mut sealer = store.sealer().context("publisher sealer")?;
        let topic = format!("bench/p{p}");
        let mut envelopes = Vec::with_capacity(payloads.len());
        for payload in payloads {
            envelopes.push(sealer.seal(&topic, payload, AeadAlg::default()).context("seal")?.envelope);
        }
        sealed.push(envelopes);
    }
    let envelope_bytes = sealed.first().and_then(|e| e.first()).map_or(0, Vec::len);

    let mut rows = Vec::new();
    rows.push(measure("(a) plain Mosquitto", BrokerConfig::plain(), make_work("bench", "bench/#", plain_payloads.clone()), options.payload.max(16))?);
    rows.push(measure(
        "(b) mqseal, unprotected topic",
        fleet.broker_config("allow"),
        make_work("open", "open/#", plain_payloads),
        options.payload.max(16),
    )?);
    let mut protected = fleet.broker_config("allow");
    if let Some(durability) = &options.audit_durability {
        protected = protected.option("audit_durability", durability);
    }
    rows.push(measure("(c) mqseal, protected topic", protected, make_work("bench", "bench/#", sealed), envelope_bytes)?);

    let verify_us = measure_verify_us(options.verify_iterations)?;
    let ceiling_msgs_per_s = 1e6 / (rows[0].cpu_us_per_msg + verify_us);
    Ok(Report { options: options.clone(), rows, verify_us, ceiling_msgs_per_s })
}

impl Report {
    fn ratio(&self, i: usize) -> f64 {
        self.rows[i].msgs_per_s / self.rows[0].msgs_per_s
    }

    /// The results as a Markdown table plus the ceiling line.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "{} messages, {} publishers, {} subscribers, QoS {}, {} B payload, rate {}, audit durability {}\n\n",
            o.messages,
            o.publishers,
            o.subscribers,
            o.qos,
            o.payload,
            o.effective_rate().map_or("unlimited".to_string(), |r| format!("{r} msg/s")),
            o.audit_durability.as_deref().unwrap_or("default (fsync)"),
        );
        out.push_str("| configuration | delivered | msg/s | vs (a) | p50 µs | p99 µs | max µs | broker CPU s | CPU µs/msg | wire payload B |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for (i, r) in self.rows.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {}/{} | {:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {} |\n",
                r.name,
                r.delivered,
                r.expected,
                r.msgs_per_s,
                self.ratio(i),
                r.p50_us,
                r.p99_us,
                r.max_us,
                r.broker_cpu_s,
                r.cpu_us_per_msg,
                r.wire_payload_bytes
            ));
        }
        let c = self.rows.get(2).map_or(f64::NAN, |r| r.msgs_per_s);
        out.push_str(&format!(
            "\nCeiling for (c): 1 / ({:.1} µs broker CPU per message in (a) + {:.1} µs Ed25519 verify) = {:.0} msg/s; (c) reaches {:.3} of it.\n",
            self.rows[0].cpu_us_per_msg,
            self.verify_us,
            self.ceiling_msgs_per_s,
            c / self.ceiling_msgs_per_s
        ));
        if o.effective_rate().is_some() {
            out.push_str(
                "This run was rate-limited: msg/s is the offered rate, so the ratios and the ceiling fraction say \
                 nothing about capacity (compare CPU µs/msg and latency instead).\n",
            );
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let o = &self.options;
        let rows: Vec<_> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "name": r.name, "expected": r.expected, "delivered": r.delivered, "elapsed_s": r.elapsed_s,
                    "msgs_per_s": r.msgs_per_s, "ratio_to_a": self.ratio(i), "p50_us": r.p50_us, "p99_us": r.p99_us,
                    "max_us": r.max_us, "broker_cpu_s": r.broker_cpu_s, "cpu_us_per_msg": r.cpu_us_per_msg,
                    "wire_payload_bytes": r.wire_payload_bytes,
                })
            })
            .collect();
        json!({
            "options": {
                "messages": o.messages, "publishers": o.publishers, "subscribers": o.subscribers, "qos": o.qos,
                "payload": o.payload, "rate": o.effective_rate(), "audit_durability": o.audit_durability,
            },
            "rows": rows,
            "verify_us": self.verify_us,
            "ceiling_msgs_per_s": self.ceiling_msgs_per_s,
            "c_fraction_of_ceiling": self.rows.get(2).map(|r| r.msgs_per_s / self.ceiling_msgs_per_s),
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
        let num = |v: String| v.parse::<f64>().map_err(|_| anyhow!("{flag}: '{v}' is not a number"));
        match flag.as_str() {
            "--messages" => o.messages = num(value()?)? as usize,
            "--publishers" => o.publishers = (num(value()?)? as usize).max(1),
            "--subscribers" => o.subscribers = (num(value()?)? as usize).max(1),
            "--qos" => {
                o.qos = match value()?.as_str() {
                    "0" => 0,
                    "1" => 1,
                    v => return Err(anyhow!("--qos: '{v}' must be 0 or 1")),
                }
            }
            "--payload" => o.payload = num(value()?)? as usize,
            "--rate" => o.rate = Some(num(value()?)?),
            "--verify-iterations" => o.verify_iterations = num(value()?)? as usize,
            "--audit-durability" => o.audit_durability = Some(value()?),
            "--json" => json_out = Some(value()?),
            "--markdown" => md_out = Some(value()?),
            other => return Err(anyhow!("unknown option '{other}' (see --messages --publishers --subscribers --qos --payload --rate --audit-durability --json --markdown)")),
        }
    }
    Ok((o, json_out, md_out))
}
