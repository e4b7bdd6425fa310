//! Device commands: join a realm, seal and open envelopes.
//!
//! The logic lives in `mqseal_core::device_store` (join, Sealer, Receiver) so
//! the MQTT clients (`mqseal pub`/`sub`) seal and open exactly the same way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use mqseal_core::device_store::{join, DeviceStore, DEFAULT_MAX_ENVELOPE_BYTES};
use mqseal_core::envelope::AeadAlg;
use mqseal_core::keys::{write_atomic, Overwrite};

/// Largest plaintext `mqseal seal` reads (the envelope cap bounds it anyway).
const MAX_PLAINTEXT_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AeadArg {
    /// AES-256-GCM (COSE alg 3); the default.
    Aes256gcm,
    /// ChaCha20-Poly1305 (COSE alg 24).
    Chacha20poly1305,
}

impl From<AeadArg> for AeadAlg {
    fn from(a: AeadArg) -> AeadAlg {
        match a {
            AeadArg::Aes256gcm => AeadAlg::A256Gcm,
            AeadArg::Chacha20poly1305 => AeadAlg::ChaCha20Poly1305,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum Commands {
    /// Join a realm: verify the policy and this device's key bundle against the
    /// authority's public key, unwrap the group keys, and store them in DIR.
    /// A later join with a newer policy and bundle replaces them; older ones are refused.
    Join {
        /// The device directory (from `mqseal keygen`).
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// The realm's authority.pub.
        #[arg(long, value_name = "FILE")]
        authority: PathBuf,
        /// This device's bundle (from `mqseal bundle export`).
        #[arg(long, value_name = "FILE")]
        bundle: PathBuf,
        /// The policy (from `mqseal policy export`).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Seal a message for TOPIC: sign and encrypt it for the group owning the topic.
    /// Reads the message from --in (default stdin), writes the envelope to --out (default stdout).
    Seal {
        /// The joined device directory.
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// The MQTT topic the envelope will be published on (bound into it).
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// Message file (default: standard input).
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Envelope file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Content encryption.
        #[arg(long, value_enum, default_value = "aes256gcm")]
        aead: AeadArg,
    },
    /// Open an envelope received on TOPIC: check the sender's role, the key epoch
    /// and the sequence number, verify the signature, decrypt. Reads --in (default
    /// stdin); writes the message to stdout, or with --json its details.
    Open {
        /// The joined device directory.
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// The MQTT topic the envelope arrived on.
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// Envelope file (default: standard input).
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Print {"topic","sender","group","epoch","seq","timestamp_ms","aead","payload_base64"}.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Commands) -> anyhow::Result<()> {
    match command {
        Commands::Join { device, authority, bundle, policy } => run_join(&device, &authority, &bundle, &policy),
        Commands::Seal { device, topic, input, out, aead } => run_seal(&device, &topic, input.as_deref(), out.as_deref(), aead.into()),
        Commands::Open { device, topic, input, json } => run_open(&device, &topic, input.as_deref(), json),
    }
}

fn run_join(device: &Path, authority: &Path, bundle: &Path, policy: &Path) -> anyhow::Result<()> {
    let report = join(device, authority, bundle, policy).with_context(|| format!("cannot join with device {}", device.display()))?;
    println!(
        "device {} joined the realm of authority {} (policy version {}, bundle version {})",
        report.device, report.authority, report.policy_version, report.bundle_version
    );
    if report.groups.is_empty() {
        println!("  member of no group");
    }
    for (group, epochs) in &report.groups {
        let epochs: Vec<String> = epochs.iter().map(|e| e.to_string()).collect();
        println!("  group {group}: keys for epoch {}", epochs.join(", "));
    }
    for group in &report.dropped_groups {
        println!("  group {group}: keys dropped (the policy no longer lists this device there)");
    }
    Ok(())
}

fn read_input(input: Option<&Path>, limit: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match input {
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            file.take(limit + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
        }
        None => {
            std::io::stdin().take(limit + 1).read_to_end(&mut bytes).context("cannot read standard input")?;
        }
    }
    if bytes.len() as u64 > limit {
        anyhow::bail!("input is larger than {limit} bytes");
    }
    Ok(bytes)
}

fn run_seal(device: &Path, topic: &str, input: Option<&Path>, out: Option<&Path>, aead: AeadAlg) -> anyhow::Result<()> {
    let store = DeviceStore::open(device)?;
    let mut sealer = store.sealer()?;
    let plaintext = read_input(input, MAX_PLAINTEXT_BYTES)?;
    let sealed = sealer.seal(topic, &plaintext, aead).context("cannot seal")?;
    match out {
        Some(path) => write_atomic(path, &sealed.envelope, 0o644, Overwrite::Allow)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&sealed.envelope).and_then(|_| stdout.flush()).context("cannot write standard output")?;
        }
    }
    eprintln!(
        "sealed {} bytes for topic {topic} (group {}, epoch {}, seq {}, {} byte envelope)",
        plaintext.len(),
        sealed.group,
        sealed.epoch,
        sealed.seq,
        sealed.envelope.len()
    );
    Ok(())
}

fn run_open(device: &Path, topic: &str, input: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let store = DeviceStore::open(device)?;
    let mut receiver = store.receiver()?;
    let envelope = read_input(input, DEFAULT_MAX_ENVELOPE_BYTES as u64)
        .map_err(|e| anyhow::anyhow!("{e} (envelopes are at most {DEFAULT_MAX_ENVELOPE_BYTES} bytes)"))?;
    let opened = receiver
        .open(topic, &envelope)
        .map_err(|e| anyhow::anyhow!("cannot open the envelope: {e} [{}]", e.reason()))?;
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", opened.to_json(topic)).context("cannot write standard output")?;
    } else {
        stdout.write_all(&opened.payload).and_then(|_| stdout.flush()).context("cannot write standard output")?;
    }
    Ok(())
}
