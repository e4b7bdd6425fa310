//! How mqseal's per-message decisions and its memory grow with the policy
//! (issue 7, "Scale"; docs/PERFORMANCE.md has the results).
//!
//! ```text
//! cargo run --release -p mqseal-core --example scale
//! cargo run --release -p mqseal-core --example scale -- --sizes 1000:100,1000000:100000 --decisions 100000 --markdown out.md
//! # --no-load skips signing and loading the policy file (the slow part at 1M devices)
//! ```
//!
//! For each (devices, groups) it builds the synthetic fleet of benches/support/fleet.rs,
//! signs it, and then measures:
//!
//! - **memory**: bytes the compiled policy keeps (a counting global allocator:
//!   live bytes after compiling minus before), the replay window once every
//!   device has published, and the peak while a signed policy file is loaded;
//! - **load**: the signed file's bytes to a compiled policy, what start-up and
//!   every SIGHUP reload do on the broker thread: `Policy::from_signed` + `compile`
//!   (engine.rs today: the rules are checked twice) and `policy::compile_signed` (once);
//! - **decisions**: p50 / p99 / max of single decisions over random devices and
//!   groups, each timed on its own, mirroring the engine's code paths
//!   (core/src/broker/engine/) without logging and auditing:
//!   - `subscribe`: username → device, `check_subscription`;
//!   - `delivery`: `check_delivery` (topic → group, username → device, role,
//!     envelope header parse, epoch);
//!   - `publish`: `check_publish` up to the signature (topic → group, parse,
//!     username → device, sender and group match, role, epoch, replay window);
//!   - wide-wildcard subscriptions (`#`, `site/+/#`), which walk the topic trie.

#[path = "../benches/support/broker.rs"]
mod broker;
#[path = "../benches/support/fleet.rs"]
mod fleet;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mqseal_core::broker::replay::ReplayWindow;
use mqseal_core::formats::envelope::{self, cbor, AeadAlg, COSE_SIGN1_TAG};
use mqseal_core::formats::keys::SignAlg;
use mqseal_core::formats::policy::{CompiledPolicy, Policy};
use mqseal_core::formats::signed_doc::AuthoritySigningKey;

// ---------------------------------------------------------------------------
// Counting allocator: requested bytes live now, and the peak since a reset.

struct Counting;
/// Bytes requested and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The same, as glibc malloc's chunks (header and 16-byte rounding, see [`chunk`]).
static CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// What glibc malloc (Debian 12) takes for a request of `size` bytes: a 16-byte
/// aligned chunk with an 8-byte header, 32 bytes at least; large requests are
/// page-rounded mmaps. An estimate of the allocator's overhead, nothing more.
fn chunk(size: usize) -> usize {
    if size >= 128 * 1024 {
        (size + 16 + 4095) & !4095
    } else {
        ((size + 8 + 15) & !15).max(32)
    }
}

fn grow(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
    CHUNKS.fetch_add(chunk(size), Ordering::Relaxed);
}

fn shrink(size: usize) {
    LIVE.fetch_sub(size, Ordering::Relaxed);
    CHUNKS.fetch_sub(chunk(size), Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrink(layout.size());
        grow(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn chunks() -> usize {
    CHUNKS.load(Ordering::Relaxed)
}

fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

// ---------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// An envelope whose header says (sender, group, seq) and whose signature is
/// 64 zero bytes: everything `envelope::parse` reads, built with the same
/// encoders `envelope::seal` uses, without the signing this program does not measure.
fn unsigned_envelope(alg: SignAlg, sender: &str, group: &str, seq: u64, ciphertext_len: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    cbor::write_head(&mut payload, cbor::ARRAY, 3);
    cbor::write_bstr(&mut payload, &envelope::encode_encrypt0_protected(AeadAlg::A256Gcm));
    cbor::write_head(&mut payload, cbor::MAP, 0);
    cbor::write_bstr(&mut payload, &vec![0x5a; ciphertext_len]);
    let protected = envelope::encode_sign1_protected(alg, sender, group, fleet::EPOCH, seq, now_ms());
    let mut out = Vec::new();
    cbor::write_head(&mut out, cbor::TAG, COSE_SIGN1_TAG);
    cbor::write_head(&mut out, cbor::ARRAY, 4);
    cbor::write_bstr(&mut out, &protected);
    cbor::write_head(&mut out, cbor::MAP, 0);
    cbor::write_bstr(&mut out, &payload);
    cbor::write_bstr(&mut out, &[0u8; 64]);
    out
}

const RESERVED_PREFIX: &str = mqseal_core::broker::engine::RESERVED_PREFIX;
const MAX_ENVELOPE: usize = 65536;

/// Percentiles of single-decision times, in nanoseconds.
#[derive(Clone, Copy)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

impl Latency {
    fn of(mut ns: Vec<u64>) -> Latency {
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize];
        Latency { p50: at(0.5), p99: at(0.99), max: *ns.last().unwrap_or(&0) }
    }

    fn cell(&self) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        format!("{:.2} / {:.2} / {:.0}", us(self.p50), us(self.p99), us(self.max))
    }
}

/// Times `f` once per case, each call on its own.
fn time_each<C>(cases: &[C], mut f: impl FnMut(&C) -> bool) -> (Latency, usize) {
    let mut ns = Vec::with_capacity(cases.len());
    let mut allowed = 0;
    for case in cases {
        let start = Instant::now();
        let ok = black_box(f(black_box(case)));
        ns.push(start.elapsed().as_nanos() as u64);
        allowed += usize::from(ok);
    }
    (Latency::of(ns), allowed)
}

struct Row {
    devices: usize,
    groups: usize,
    filters: usize,
    memberships: usize,
    /// None with --no-load.
    load: Option<Load>,
    compiled_per_device: f64,
    compiled_chunks_per_device: f64,
    replay_per_device: f64,
    replay_chunks_per_device: f64,
    subscribe: Latency,
    delivery: Latency,
    publish: Latency,
    wide_hash: Latency,
    wide_site: Latency,
    checks: String,
}

struct Load {
    policy_file_mb: f64,
    engine_s: f64,
    compile_signed_s: f64,
    peak_mb: f64,
}

struct SubCase {
    username: String,
    filter: String,
    readable: bool,
}

struct DeliveryCase {
    username: String,
    topic: String,
    readable: bool,
}

struct PublishCase {
    username: String,
    topic: String,
    envelope: Vec<u8>,
}

/// Start-up / reload: the signed file's bytes to a compiled policy.
fn measure_load(model: &Policy, devices: usize) -> Load {
    let authority = AuthoritySigningKey::from_seed(&[0xA1; 32]);
    let file = model.sign(&authority).expect("sign");
    // What engine.rs does today: from_signed (which validates by compiling) then compile.
    let start = Instant::now();
    let reloaded = Policy::from_signed(&file, &authority.public(), "scale")
        .and_then(|p| p.compile("scale"))
        .expect("signed fleet policy loads");
    let engine_s = start.elapsed().as_secs_f64();
    assert_eq!(reloaded.device_count(), devices);
    drop(reloaded);
    // policy::compile_signed: the rules checked once.
    let base = reset_peak();
    let start = Instant::now();
    let reloaded = mqseal_core::formats::policy::compile_signed(&file, &authority.public(), "scale").expect("signed fleet policy loads");
    let compile_signed_s = start.elapsed().as_secs_f64();
    // Peak above what was live before: the file's bytes (already in memory here,
    // so add their size), the parsed model and the compiled policy, together.
    let peak = PEAK.load(Ordering::Relaxed) - base + file.len();
    assert_eq!(reloaded.device_count(), devices);
    Load { policy_file_mb: file.len() as f64 / 1e6, engine_s, compile_signed_s, peak_mb: peak as f64 / 1e6 }
}

fn measure(devices: usize, groups: usize, decisions: usize, with_load: bool) -> Row {
    let started = Instant::now();
    let model: Policy = fleet::fleet_policy(devices, groups);
    let memberships: usize = model.groups.values().map(|g| g.members.len()).sum();
    let filters: usize = model.groups.values().map(|g| g.topics.len()).sum();

    // Steady-state memory: what compiling keeps.
    let (before, before_chunks) = (live(), chunks());
    let compiled: CompiledPolicy = model.compile("scale").expect("fleet policy compiles");
    let (compiled_bytes, compiled_chunks) = (live() - before, chunks() - before_chunks);

    // The replay window once every device has published.
    let (before, before_chunks) = (live(), chunks());
    let mut replay = ReplayWindow::default();
    for i in 0..devices {
        replay.accept(&fleet::device_id(i), 1);
    }
    let (replay_bytes, replay_chunks) = (live() - before, chunks() - before_chunks);

    let load = with_load.then(|| measure_load(&model, devices));
    drop(model);

    let p = &compiled;
    let mut rng = fleet::Rng(0x5eed ^ devices as u64);

    // subscribe
    let cases: Vec<SubCase> = (0..decisions)
        .map(|_| {
            let c = fleet::subscribe_case(&mut rng, devices, groups);
            SubCase { username: fleet::username(c.device), filter: c.filter, readable: c.readable }
        })
        .collect();
    let expected_sub = cases.iter().filter(|c| c.readable).count();
    let (subscribe, sub_allowed) = time_each(&cases, |c| {
        let device = p.device_by_username(&c.username);
        let reserved = c.filter.starts_with(RESERVED_PREFIX);
        !reserved && matches!(p.check_subscription(device, &c.filter), Ok(mqseal_core::formats::policy::SubscriptionVerdict::Readable(_)))
    });

    // delivery
    let delivered = unsigned_envelope(SignAlg::Ed25519, &fleet::device_id(1), &fleet::group_id(1), 1, 144);
    let cases: Vec<DeliveryCase> = (0..decisions)
        .map(|_| {
            let c = fleet::delivery_case(&mut rng, devices, groups);
            DeliveryCase { username: fleet::username(c.device), topic: c.topic, readable: c.readable }
        })
        .collect();
    let expected_delivery = cases.iter().filter(|c| c.readable).count();
    let (delivery, delivery_allowed) = time_each(&cases, |c| {
        if c.topic.starts_with(RESERVED_PREFIX) {
            return false;
        }
        let Some(group) = p.group_of_topic(&c.topic) else { return true };
        let Some(device) = p.device_by_username(&c.username) else { return false };
        if !p.role(group, device).is_some_and(|r| r.can_read()) {
            return false;
        }
        let Ok(parsed) = envelope::parse(&delivered, MAX_ENVELOPE) else { return false };
        p.check_epoch(group, parsed.header.epoch, now_ms() / 1000).is_accepted()
    });

    // publish, up to the signature; every device has published seq 1 already.
    let cases: Vec<PublishCase> = (0..decisions)
        .map(|_| {
            let c = fleet::publish_case(&mut rng, devices, groups);
            let alg = fleet::device_signing_key(c.device).alg();
            let envelope = unsigned_envelope(alg, &fleet::device_id(c.device), &c.group, 2, 144);
            PublishCase { username: fleet::username(c.device), topic: c.topic, envelope }
        })
        .collect();
    let (publish, publish_allowed) = time_each(&cases, |c| {
        if c.topic.starts_with(RESERVED_PREFIX) {
            return false;
        }
        let Some(group) = p.group_of_topic(&c.topic) else { return true };
        let Ok(parsed) = envelope::parse(&c.envelope, MAX_ENVELOPE) else { return false };
        let header = &parsed.header;
        let Some(device) = p.device_by_username(&c.username) else { return false };
        if p.device_id(device) != header.sender || p.group(group).id != header.group {
            return false;
        }
        if !p.role(group, device).is_some_and(|r| r.can_publish()) {
            return false;
        }
        if !p.check_epoch(group, header.epoch, now_ms() / 1000).is_accepted() {
            return false;
        }
        replay.check(header.sender, header.seq).is_ok() && p.verifying_key(device).alg() == header.sign_alg
    });

    // Wide wildcards: fewer samples, they walk the trie.
    let wide = (decisions / 20).max(100);
    let mut wide_cases = |filter: &str| -> Vec<SubCase> {
        (0..wide)
            .map(|_| SubCase { username: fleet::username(rng.below(devices)), filter: filter.to_string(), readable: false })
            .collect()
    };
    let (wide_hash, _) = time_each(&wide_cases("#"), |c| {
        matches!(p.check_subscription(p.device_by_username(&c.username), &c.filter), Ok(mqseal_core::formats::policy::SubscriptionVerdict::Readable(_)))
    });
    let (wide_site, _) = time_each(&wide_cases("site/+/#"), |c| {
        matches!(p.check_subscription(p.device_by_username(&c.username), &c.filter), Ok(mqseal_core::formats::policy::SubscriptionVerdict::Readable(_)))
    });

    let checks = format!(
        "allowed: subscribe {:.0} %, delivery {:.0} %, publish {:.0} %; {:.1} s",
        100.0 * sub_allowed as f64 / decisions as f64,
        100.0 * delivery_allowed as f64 / decisions as f64,
        100.0 * publish_allowed as f64 / decisions as f64,
        started.elapsed().as_secs_f64()
    );
    // Measured what we meant to: every publish case is a member's own topic; about a
    // quarter of the subscriptions and deliveries are to foreign groups and refused.
    assert_eq!(publish_allowed, decisions, "every publish case is allowed");
    assert_eq!(sub_allowed, expected_sub, "subscriptions allowed as the fleet promises");
    assert_eq!(delivery_allowed, expected_delivery, "deliveries allowed as the fleet promises");
    drop(replay);
    Row {
        devices,
        groups,
        filters,
        memberships,
        load,
        compiled_per_device: compiled_bytes as f64 / devices as f64,
        compiled_chunks_per_device: compiled_chunks as f64 / devices as f64,
        replay_per_device: replay_bytes as f64 / devices as f64,
        replay_chunks_per_device: replay_chunks as f64 / devices as f64,
        subscribe,
        delivery,
        publish,
        wide_hash,
        wide_site,
        checks,
    }
}

/// Bytes a running engine holds beyond its compiled policy (the audit queue and
/// buffers, the writer thread): the per-instance constant of the plugin's memory.
fn engine_fixed_bytes() -> (usize, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = fleet::fleet_policy(1000, 100);
    broker::write_broker_files(dir.path(), &policy);
    let before = live();
    let compiled = policy.compile("scale").expect("compiles");
    let compiled_bytes = live() - before;
    drop(compiled);
    let before = live();
    let engine = mqseal_core::broker::engine::Engine::start(broker::config(dir.path(), &[]), Box::new(broker::NullHost)).expect("engine starts");
    let engine_bytes = live() - before;
    engine.shutdown();
    (engine_bytes.saturating_sub(compiled_bytes), compiled_bytes)
}

fn timer_overhead_ns() -> f64 {
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(Instant::now());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn markdown(rows: &[Row], decisions: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Fleet: N devices, G + 1 groups (2 topic filters each, plus `fleet/+/telemetry`), 3 memberships per device. \
         {decisions} random decisions of each kind per row, each timed alone (clock overhead {:.0} ns, included).\n\n",
        timer_overhead_ns()
    ));
    out.push_str("Memory and load (bytes per device: requested from the allocator, and with glibc malloc's chunk overhead):\n\n");
    out.push_str("| devices | groups | filters | memberships | compiled policy B/device | replay window B/device | policy file MB | load s: from_signed + compile | load s: compile_signed | load peak MB |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let load = match &r.load {
            Some(l) => format!("{:.1} | {:.2} | {:.2} | {:.0}", l.policy_file_mb, l.engine_s, l.compile_signed_s, l.peak_mb),
            None => "- | - | - | -".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} ({:.0}) | {:.0} ({:.0}) | {load} |\n",
            r.devices,
            r.groups + 1,
            r.filters,
            r.memberships,
            r.compiled_per_device,
            r.compiled_chunks_per_device,
            r.replay_per_device,
            r.replay_chunks_per_device,
        ));
    }
    out.push_str("\nDecision time, µs, p50 / p99 / max:\n\n");
    out.push_str("| devices | groups | subscribe | delivery | publish (up to the signature) | subscribe `#` | subscribe `site/+/#` |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.devices,
            r.groups + 1,
            r.subscribe.cell(),
            r.delivery.cell(),
            r.publish.cell(),
            r.wide_hash.cell(),
            r.wide_site.cell()
        ));
    }
    out
}

fn parse_sizes(text: &str) -> Result<Vec<(usize, usize)>, String> {
    text.split(',')
        .map(|pair| {
            let (d, g) = pair.split_once(':').ok_or_else(|| format!("--sizes: '{pair}' is not DEVICES:GROUPS"))?;
            let num = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("--sizes: '{s}' is not a number"));
            let (d, g) = (num(d)?, num(g)?);
            if d == 0 || g < 3 {
                return Err(format!("--sizes: '{pair}' needs at least 1 device and 3 groups"));
            }
            Ok((d, g))
        })
        .collect()
}

fn main() -> ExitCode {
    let mut sizes = vec![(1_000, 100), (10_000, 1_000), (100_000, 10_000), (1_000_000, 100_000)];
    let mut decisions = 100_000;
    let mut markdown_out = None;
    let mut with_load = true;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--no-load" {
            with_load = false;
            continue;
        }
        let value = args.next();
        let result = match (flag.as_str(), value) {
            ("--sizes", Some(v)) => parse_sizes(&v).map(|s| sizes = s),
            ("--decisions", Some(v)) => v.parse().map(|n: usize| decisions = n.max(100)).map_err(|_| format!("--decisions: '{v}'")),
            ("--markdown", Some(v)) => {
                markdown_out = Some(v);
                Ok(())
            }
            (other, _) => Err(format!("unknown or incomplete option '{other}' (--sizes D:G,... --decisions N --no-load --markdown FILE)")),
        };
        if let Err(e) = result {
            eprintln!("scale: {e}");
            return ExitCode::from(2);
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("scale: warning: a debug build; run with --release for meaningful figures");
    }
    let mut rows = Vec::new();
    for (devices, groups) in sizes {
        let row = measure(devices, groups, decisions, with_load);
        eprintln!("scale: {devices} devices, {groups} groups: {}", row.checks);
        rows.push(row);
    }
    let mut text = markdown(&rows, decisions);
    let (fixed, _) = engine_fixed_bytes();
    text.push_str(&format!(
        "\nA running engine holds {:.1} MB beyond its compiled policy, whatever the fleet's size \
         (audit queue of 65536 slots, write buffer, writer thread).\n",
        fixed as f64 / 1e6
    ));
    print!("{text}");
    if let Some(path) = markdown_out {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("scale: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
