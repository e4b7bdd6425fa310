//! Device commands: join a realm, seal and open envelopes.
//!
//! The logic lives in `mqseal_core::device::store` (join, Sealer, Receiver) so
//! the MQTT clients (`mqseal pub`/`sub`) seal and open exactly the same way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use mqseal_core::device::store::{join, join_documents, DeviceStore, KeySource, DEFAULT_MAX_ENVELOPE_BYTES};
use mqseal_core::formats::envelope::AeadAlg;
use mqseal_core::formats::identity::DeviceDir;
use mqseal_core::formats::keys::{write_atomic, Overwrite};
use mqseal_core::formats::signed_doc::AuthorityPublicKey;

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
    /// The documents come from files (--policy and --bundle) or, without them,
    /// from the broker (-H/-p): the retained $mqseal/policy and $mqseal/bundle/ID
    /// the authority pushed, fetched logged in as the device.
    /// A later join with a newer policy and bundle replaces them; older ones are refused.
    Join {
        /// The device directory (from `mqseal keygen`).
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// The realm's authority.pub (the one key a device trusts; get it out of band).
        #[arg(long, value_name = "FILE")]
        authority: PathBuf,
        /// This device's bundle (from `mqseal bundle export`).
        #[arg(long, value_name = "FILE", requires = "policy")]
        bundle: Option<PathBuf>,
        /// The policy (from `mqseal policy export`).
        #[arg(long, value_name = "FILE", requires = "bundle")]
        policy: Option<PathBuf>,
        /// Broker host (joining over MQTT).
        #[arg(short = 'H', long, value_name = "HOST", default_value = "localhost", conflicts_with = "policy")]
        host: String,
        /// Broker port (joining over MQTT).
        #[arg(short = 'p', long, value_name = "PORT", default_value_t = 1883)]
        port: u16,
        /// MQTT username [default: the device id].
        #[arg(short = 'u', long, value_name = "USERNAME")]
        username: Option<String>,
        /// MQTT client id [default: DEVICE-join-RANDOM].
        #[arg(short = 'i', long = "id", value_name = "CLIENT_ID")]
        client_id: Option<String>,
        /// Seconds to wait for the connection and the documents.
        #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
    },
    /// Print a fresh login token: the MQTT password a broker with
    /// `plugin_opt_auth key` accepts once from this device, for CLIENT_ID, for
    /// a few minutes. For other MQTT clients, e.g. `mosquitto_pub -i CLIENT_ID -u ID -P TOKEN`.
    Token {
        /// The device directory.
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// The MQTT client id the token is bound to.
        #[arg(short = 'i', long = "id", value_name = "CLIENT_ID")]
        client_id: String,
        /// The MQTT username [default: the device's username in its stored policy, else its id].
        #[arg(short = 'u', long, value_name = "USERNAME")]
        username: Option<String>,
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
        Commands::Join { device, authority, bundle: Some(bundle), policy: Some(policy), .. } => {
            let report = join(&device, &authority, &bundle, &policy)
                .with_context(|| format!("cannot join with device {}", device.display()))?;
            print_join(&report);
            Ok(())
        }
        Commands::Join { device, authority, host, port, username, client_id, timeout, .. } => {
            let broker = JoinBroker { host, port, username, client_id, timeout };
            join_over_mqtt(&device, &authority, &broker)
        }
        Commands::Token { device, client_id, username } => run_token(&device, &client_id, username.as_deref()),
        Commands::Seal { device, topic, input, out, aead } => run_seal(&device, &topic, input.as_deref(), out.as_deref(), aead.into()),
        Commands::Open { device, topic, input, json } => run_open(&device, &topic, input.as_deref(), json),
    }
}

/// Where `join` fetches the documents when no files are given.
struct JoinBroker {
    host: String,
    port: u16,
    username: Option<String>,
    client_id: Option<String>,
    timeout: u64,
}

/// `join` over MQTT: log in as the device, collect the retained policy and
/// bundle (see `control_sync`), and join with them.
fn join_over_mqtt(device_dir: &Path, authority_file: &Path, broker: &JoinBroker) -> anyhow::Result<()> {
    use crate::mqtt_link::{wait_connected, Link, LinkOptions, Login, Password};
    use mqseal_core::formats::control::ControlTopic;
    let device = DeviceDir::open(device_dir)?;
    let me = device.id().to_string();
    let authority = AuthorityPublicKey::load(authority_file)?;
    let client_id = Login::client_id(broker.client_id.as_ref(), &me, "join")?;
    let username = broker.username.clone().unwrap_or_else(|| me.clone());
    let login = Login::new(client_id, username, Password::Token(device.signing_key()?));
    let options = LinkOptions::one_shot(&broker.host, broker.port, broker.timeout);
    let timeout = std::time::Duration::from_secs(broker.timeout);
    let mut link = Link::new(&options, login, false);
    wait_connected(&mut link, timeout)?;
    let mut inbox = Vec::new();
    if !crate::control_sync::fetch_control_documents(&mut link, &me, timeout, &mut inbox)? {
        link.disconnect();
        anyhow::bail!(
            "the broker at {}:{} refused device {me} the subscription to $mqseal/policy and \
             $mqseal/bundle/{me}: is the device in the broker's policy (mqseal policy push)?",
            broker.host,
            broker.port
        );
    }
    let (mut policy, mut bundle) = (None, None);
    for (topic, payload) in inbox.into_iter().filter(|(_, payload)| !payload.is_empty()) {
        match ControlTopic::parse(&topic) {
            Some(ControlTopic::Policy) => policy = Some(payload),
            Some(ControlTopic::Bundle(id)) if id == me => bundle = Some(payload),
            _ => {}
        }
    }
    link.disconnect();
    let where_ = format!("{}:{}", broker.host, broker.port);
    let policy = policy.with_context(|| {
        format!("no policy retained on $mqseal/policy at {where_}: the authority publishes it with `mqseal policy push`")
    })?;
    let bundle = bundle.with_context(|| {
        format!("no key bundle retained on $mqseal/bundle/{me} at {where_}: the authority publishes it with `mqseal bundle push {me}`")
    })?;
    let bundle_origin = format!("$mqseal/bundle/{me} at {where_}");
    let report = join_documents(
        device_dir,
        &authority,
        &policy,
        &format!("$mqseal/policy at {where_}"),
        KeySource::Bundle { bytes: &bundle, origin: &bundle_origin },
    )
    .with_context(|| format!("cannot join with device {}", device_dir.display()))?;
    print_join(&report);
    Ok(())
}

fn run_token(device_dir: &Path, client_id: &str, username: Option<&str>) -> anyhow::Result<()> {
    let device = DeviceDir::open(device_dir)?;
    let username = match username {
        Some(u) => u.to_string(),
        None => DeviceStore::open(device_dir)
            .ok()
            .and_then(|store| store.username().map(str::to_string))
            .unwrap_or_else(|| device.id().to_string()),
    };
    let key = device.signing_key()?;
    let token = mqseal_core::formats::login_token::make_token(&key, client_id, &username, mqseal_core::device::store::unix_millis());
    println!("{token}");
    Ok(())
}

fn print_join(report: &mqseal_core::device::store::JoinReport) {
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
