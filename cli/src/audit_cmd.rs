//! `mqseal audit verify | tail | prove`: reading the broker's audit log offline.
//! The format and every check are specified in docs/AUDIT.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mqseal_core::formats::audit::checkpoint::{read_checkpoint_file, CheckpointAt};
use mqseal_core::formats::audit::files::{LogFile, LogPaths};
use mqseal_core::formats::audit::follow::{FoundRecord, Follower};
use mqseal_core::formats::audit::hashing::to_hex;
use mqseal_core::formats::audit::keyfile::{load_verifying_key, VerifyingKey};
use mqseal_core::formats::audit::prove::{prove_consistency, prove_inclusion};
use mqseal_core::formats::audit::record::Record;
use mqseal_core::formats::audit::verify::{verify_files, verify_path, VerifyOptions, VerifyReport};
use serde_json::Value;

#[derive(clap::Subcommand)]
pub enum Commands {
    /// The audit log: verify it, follow it, prove that a record is in it.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check every record, the chain across files and every checkpoint.
    ///
    /// Give the log's current file (rotated files beside it are found), or
    /// several files in order (then the checkpoints beside the last are used).
    /// Exit status: 0 sound, 1 not sound, 2 sound except that checkpoint
    /// signatures were not checked (no --broker-key).
    Verify {
        /// The log (its current file), or its files oldest first.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
        /// The broker's public key: PEM public key, PKCS#8 private key, or
        /// identity JSON. Repeat for a key that was replaced.
        #[arg(long = "broker-key", value_name = "FILE")]
        broker_keys: Vec<PathBuf>,
        /// A checkpoint kept elsewhere: the log must still hold at least its
        /// records, with the same root (truncation and rewrite detection).
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// Accept a log whose earliest files were archived away.
        #[arg(long)]
        partial: bool,
    },
    /// Show the last records, and with -f new ones as they are written,
    /// checking the chain as it reads.
    Tail {
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// Keep reading as the log grows (and rotates).
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many records to show first.
        #[arg(short = 'n', long = "lines", default_value_t = 10, value_name = "N")]
        lines: usize,
        /// Print records as stored (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Only this kind (e.g. publish.denied), or a family (e.g. publish). Repeatable.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only records about this MQTT client id.
        #[arg(long, value_name = "ID")]
        client: Option<String>,
        /// Only records whose topic matches this MQTT topic filter.
        #[arg(long, value_name = "FILTER")]
        topic: Option<String>,
    },
    /// Prove that a record is in the tree a checkpoint signed (RFC 9162
    /// inclusion proof), or that a checkpoint extends an older one
    /// (consistency proof, with --old-checkpoint).
    Prove {
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// The record's index.
        #[arg(long, value_name = "I", required_unless_present = "old_checkpoint")]
        index: Option<u64>,
        /// The checkpoint to prove against (its latest note if it holds several).
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        /// Prove that --checkpoint's tree extends this older checkpoint's.
        #[arg(long = "old-checkpoint", value_name = "FILE")]
        old_checkpoint: Option<PathBuf>,
        /// Check the checkpoints' signatures with this key.
        #[arg(long = "broker-key", value_name = "FILE")]
        broker_keys: Vec<PathBuf>,
        /// Print the proof as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Commands) -> anyhow::Result<()> {
    let Commands::Audit(command) = command;
    match command {
        AuditCommand::Verify { logs, broker_keys, checkpoints, partial } => verify(&logs, &broker_keys, checkpoints, partial),
        AuditCommand::Tail { log, follow, lines, json, kinds, client, topic } => {
            if let Some(filter) = &topic {
                mqseal_core::formats::topic::validate_topic_filter(filter).map_err(|e| anyhow::anyhow!("--topic {filter:?} {e}"))?;
            }
            let filter = Filter { kinds, client, topic };
            tail(&log, follow, lines, json, &filter)
        }
        AuditCommand::Prove { log, index, checkpoint, old_checkpoint, broker_keys, json } => {
            prove(&log, index, &checkpoint, old_checkpoint.as_deref(), &broker_keys, json)
        }
    }
}

fn load_keys(files: &[PathBuf]) -> anyhow::Result<Vec<VerifyingKey>> {
    files.iter().map(|f| load_verifying_key(f).map_err(anyhow::Error::from)).collect()
}

fn exit_with(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn verify(logs: &[PathBuf], broker_keys: &[PathBuf], external: Vec<PathBuf>, partial: bool) -> anyhow::Result<()> {
    let options = VerifyOptions { keys: load_keys(broker_keys)?, external, allow_partial: partial };
    let result = if logs.len() == 1 {
        verify_path(&logs[0], &options)
    } else {
        let files: Vec<LogFile> = logs.iter().map(|p| LogFile { path: p.clone(), seq: None }).collect();
        verify_files(&files, &LogPaths::new(&logs[logs.len() - 1]), &options)
    };
    match result {
        Ok(report) => {
            println!("{}", verdict(&report));
            exit_with(if report.signers.is_empty() { 2 } else { 0 })
        }
        Err(failure) => {
            println!("FAIL: {failure}");
            exit_with(1)
        }
    }
}

fn verdict(r: &VerifyReport) -> String {
    let mut text = format!(
        "OK: {} records in {} file{}, {} sealed by checkpoint, {} not yet sealed, head {}",
        r.records - r.first_index,
        r.files.len(),
        if r.files.len() == 1 { "" } else { "s" },
        r.sealed.saturating_sub(r.first_index),
        r.unsealed(),
        r.head.map(|h| to_hex(&h)).unwrap_or_else(|| "(empty log)".into()),
    );
    if r.first_index > 0 {
        text.push_str(&format!("; records 0..{} are not present (partial log)", r.first_index - 1));
    }
    if r.external_checked > 0 {
        text.push_str(&format!("; consistent with {} external checkpoint(s)", r.external_checked));
    }
    if r.signers.is_empty() {
        text.push_str("; checkpoint signatures NOT checked (give --broker-key)");
    } else {
        text.push_str(&format!("; signed by {}", r.signers.join(", ")));
    }
    text
}

struct Filter {
    kinds: Vec<String>,
    client: Option<String>,
    topic: Option<String>,
}

impl Filter {
    fn accepts(&self, r: &Record) -> bool {
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|k| {
                if k.contains('.') {
                    r.kind == *k
                } else {
                    r.kind.split('.').next() == Some(k.as_str())
                }
            });
        let client_ok = match self.client.as_deref() {
            None => true,
            Some(c) => r.fact_str("client") == Some(c),
        };
        let topic_ok = match self.topic.as_deref() {
            None => true,
            Some(f) => r.fact_str("topic").is_some_and(|t| mqseal_core::formats::topic::filter_matches(f, t)),
        };
        kind_ok && client_ok && topic_ok
    }
}

fn tail(log: &Path, follow: bool, lines: usize, json: bool, filter: &Filter) -> anyhow::Result<()> {
    let accepts = |r: &Record| filter.accepts(r);
    let (mut follower, last) = match Follower::open(log, lines, &accepts) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mqseal: audit tail: FAIL: {e}");
            exit_with(1)
        }
    };
    let mut out = std::io::stdout().lock();
    for r in &last {
        print_record(&mut out, r, json)?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(100));
        match follower.poll() {
            Ok(records) => {
                for r in records.iter().filter(|r| filter.accepts(&r.record)) {
                    print_record(&mut out, r, json)?;
                }
                out.flush()?;
            }
            Err(e) => {
                drop(out);
                eprintln!("mqseal: audit tail: FAIL: the log changed under tail, stopping: {e}");
                exit_with(1)
            }
        }
    }
}

fn print_record(out: &mut impl Write, r: &FoundRecord, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", r.text)?;
        return Ok(());
    }
    let mut line = format!("{} #{} {}", r.record.time, r.record.index, r.record.kind);
    for (name, value) in &r.record.facts {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        line.push_str(&human_value(value));
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// Facts for people: plain words bare, other strings quoted, hashes shortened.
fn human_value(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => format!("{}…", &s[..16]),
        Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "-_./:+#$@".contains(c)) => s.clone(),
        Value::Array(items) if items.iter().all(|v| v.as_str().is_some_and(|s| s.len() == 64)) => format!("[{} hashes]", items.len()),
        other => other.to_string(),
    }
}

fn latest_note(path: &Path) -> anyhow::Result<CheckpointAt> {
    let notes = read_checkpoint_file(path)?.with_context(|| format!("{}: no such file", path.display()))?;
    notes.into_iter().max_by_key(|n| n.note.checkpoint.size).with_context(|| format!("{}: no checkpoint in it", path.display()))
}

fn check_signature(path: &Path, note: &CheckpointAt, keys: &[VerifyingKey]) -> anyhow::Result<String> {
    if keys.is_empty() {
        return Ok("signature NOT checked (give --broker-key)".into());
    }
    match note.note.verify(keys) {
        Ok(name) => Ok(format!("signed by {name}")),
        Err(e) => {
            println!("FAIL: {}:{}: {e}", path.display(), note.line);
            exit_with(1)
        }
    }
}

fn prove(log: &Path, index: Option<u64>, checkpoint: &Path, old: Option<&Path>, broker_keys: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let keys = load_keys(broker_keys)?;
    let note = latest_note(checkpoint)?;
    let signed = check_signature(checkpoint, &note, &keys)?;
    let cp = &note.note.checkpoint;
    if let Some(old_path) = old {
        let old_note = latest_note(old_path)?;
        let old_signed = check_signature(old_path, &old_note, &keys)?;
        let old_cp = &old_note.note.checkpoint;
        if old_cp.origin != cp.origin {
            bail!("the checkpoints are of different logs ({:?} and {:?})", old_cp.origin, cp.origin);
        }
        let proof = match prove_consistency(log, old_cp, cp) {
            Ok(p) => p,
            Err(e) => {
                println!("FAIL: {e}");
                exit_with(1)
            }
        };
        if json {
            let v = serde_json::json!({
                "first_size": old_cp.size, "first_root": STANDARD.encode(old_cp.root),
                "second_size": cp.size, "second_root": STANDARD.encode(cp.root),
                "proof": proof.iter().map(|h| to_hex(h)).collect::<Vec<_>>(),
            });
            println!("{v}");
        } else {
            println!("old tree: {} records, root {} ({}, {old_signed})", old_cp.size, STANDARD.encode(old_cp.root), old_path.display());
            println!("new tree: {} records, root {} ({}, {signed})", cp.size, STANDARD.encode(cp.root), checkpoint.display());
            println!("consistency proof ({} hashes, RFC 9162 §2.1.4):", proof.len());
            for h in &proof {
                println!("  {}", to_hex(h));
            }
            println!("OK: the tree of {} records extends the tree of {}", cp.size, old_cp.size);
        }
        return Ok(());
    }
    let Some(index) = index else { bail!("give --index or --old-checkpoint") };
    let p = match prove_inclusion(log, index, cp) {
        Ok(p) => p,
        Err(e) => {
            println!("FAIL: {e}");
            exit_with(1)
        }
    };
    if json {
        let v = serde_json::json!({
            "index": p.index, "tree_size": p.tree_size, "record": p.record,
            "leaf_hash": to_hex(&p.leaf_hash), "root": STANDARD.encode(p.root),
            "proof": p.proof.iter().map(|h| to_hex(h)).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!("record #{} ({}:{}): {}", p.index, p.file.display(), p.line, p.record);
        println!("leaf hash: {}", to_hex(&p.leaf_hash));
        println!("tree: {} records, root {} ({}, {signed})", p.tree_size, STANDARD.encode(p.root), checkpoint.display());
        println!("inclusion proof ({} hashes, RFC 9162 §2.1.3):", p.proof.len());
        for h in &p.proof {
            println!("  {}", to_hex(h));
        }
        println!("OK: record {} is in the tree of {} records", p.index, p.tree_size);
    }
    Ok(())
}
