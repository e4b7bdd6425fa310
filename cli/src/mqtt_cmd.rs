//! `mqseal pub` and `mqseal sub`: MQTT clients that log in as the device and
//! seal or open messages transparently, through the device core
//! (`mqseal_core::device::Device`, also behind the C and Python libraries),
//! which seals and opens as `mqseal seal`/`open` do.
//!
//! Login. The MQTT username is the device's username in the policy it joined
//! with (`--username` overrides it). The password is a fresh login token
//! (`mqseal_core::formats::login_token`): signed with the device key, bound to the client
//! id, the username and the moment, accepted once. That is what a broker with
//! `plugin_opt_auth key` checks. A new token is made for every connection
//! attempt, reconnects included, because a token cannot be used twice. Where
//! another mechanism authenticates (`plugin_opt_auth defer` with a
//! `password_file`, dynamic security, ...), give `--password`/`--password-file`,
//! or `--no-auth-token` to send no password at all.
//!
//! Connection loss. Without `--reconnect`, a lost connection ends the command
//! with an error. With it, the client reconnects with a fresh token after
//! 1, 2, 4 ... 30 seconds; `sub` subscribes again (sessions are clean, so
//! messages sent while it was away are not delivered). A refused login always
//! ends the command: retrying with the same key would be refused again.
//!
//! Exit codes: 0 success; 1 any error (refused login, refused publish where
//! observable, lost connection, local errors); `sub` only: 2 every filter was
//! refused (SUBACK failure), 27 no message for `-W` seconds (as mosquitto_sub).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mqseal_core::device::store::{DeviceStore, OpenError, DEFAULT_MAX_ENVELOPE_BYTES};
use mqseal_core::device::{ControlOutcome, Device, DeviceError};
use mqseal_core::formats::envelope::AeadAlg;
use mqseal_core::formats::policy::CompiledPolicy;
use mqseal_core::formats::topic::{parse_subscription, validate_topic_name};

use crate::control_sync::fetch_control_documents;
use crate::device_cmd::AeadArg;
use crate::mqtt_link::{read_password_file, wait_connected, wait_delivered, Ev, Link, LinkOptions, Login, Password};
use mqseal_core::device::control_sync::{control_filters, describe, refused_updates};

/// Largest message `mqseal pub` reads (the broker's envelope cap, 64 KiB by
/// default, is usually the tighter bound for sealed messages).
const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// `sub`: every subscription was refused.
pub const EXIT_ALL_SUBSCRIPTIONS_REFUSED: i32 = 2;
/// `sub`: `-W` seconds passed without a message (mosquitto_sub's code).
pub const EXIT_IDLE_TIMEOUT: i32 = 27;

#[derive(clap::Subcommand)]
pub enum Commands {
    /// Publish as the device: seal the message for TOPIC (sign it, encrypt it for
    /// the group owning the topic) and publish it over MQTT, logging in with a
    /// fresh login token signed by the device key.
    #[command(after_help = PUB_AFTER_HELP)]
    Pub(PubArgs),
    /// Subscribe as the device: print each message received, opened (sender role,
    /// key epoch, replay, signature, decryption) when its topic is protected.
    /// Messages that cannot be opened are reported as rejected, and it keeps going.
    #[command(after_help = SUB_AFTER_HELP)]
    Sub(SubArgs),
}

const PUB_AFTER_HELP: &str = "\
At QoS 1 and 2, pub waits for the broker's PUBACK/PUBCOMP of every message. With MQTT 3.1.1 a broker \
that refuses a publish (ACL denied) still acknowledges it normally, so the refusal is not visible to \
the client; with --mqtt5 it is (PUBACK/PUBREC reason 0x87, not authorized) and pub exits with an error.
Exit status: 0 sent; 1 error (refused login, refused publish, lost connection, bad input).";

const SUB_AFTER_HELP: &str = "\
Output: for each message, its payload as is followed by a newline (-v: topic, space, payload), or \
with --json one JSON object per line: opened messages as {\"topic\",\"sender\",\"group\",\"epoch\",\
\"seq\",\"timestamp_ms\",\"aead\",\"payload_base64\"}, messages on unprotected topics as \
{\"topic\",\"unprotected\":true,\"payload_base64\"}, rejected ones as {\"topic\",\"rejected\":REASON,\
\"detail\"}. Without --json, rejections go to stderr as `rejected TOPIC: REASON (detail)`.
`subscribed to FILTER, ...` is written to stderr once the broker has acknowledged the subscription.
-C counts delivered messages (opened or unprotected), not rejections; -W restarts at each delivered message.
Exit status: 0 count reached; 1 error (refused login, lost connection); 2 every filter refused; \
27 no message for -W seconds.";

/// How to reach the broker and log in (shared by pub and sub).
#[derive(clap::Args)]
pub struct ConnectArgs {
    /// The joined device directory.
    #[arg(long, value_name = "DIR")]
    device: PathBuf,
    /// Broker host.
    #[arg(short = 'H', long, value_name = "HOST", default_value = "localhost")]
    host: String,
    /// Broker port.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = 1883)]
    port: u16,
    /// MQTT client id [default: DEVICE-pub-RANDOM or DEVICE-sub-RANDOM].
    #[arg(short = 'i', long = "id", value_name = "CLIENT_ID")]
    client_id: Option<String>,
    /// MQTT username [default: the device's username in its stored policy].
    #[arg(short = 'u', long, value_name = "USERNAME")]
    username: Option<String>,
    /// MQTT password, sent instead of a login token (for brokers where another
    /// mechanism authenticates). Visible to other local users: prefer --password-file.
    #[arg(short = 'P', long, value_name = "PASSWORD", conflicts_with_all = ["password_file", "no_auth_token"])]
    password: Option<String>,
    /// Read the MQTT password (first line) from FILE, instead of a login token.
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth_token")]
    password_file: Option<PathBuf>,
    /// Send no password (no login token): for brokers that authenticate otherwise, e.g. by TLS.
    #[arg(long)]
    no_auth_token: bool,
    /// Keepalive interval in seconds.
    #[arg(short = 'k', long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u16).range(5..))]
    keepalive: u16,
    /// Seconds to wait for the connection (TCP and CONNACK) and for each acknowledgement.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Reconnect (with a fresh login token) when the connection drops, instead of failing.
    #[arg(long)]
    reconnect: bool,
    /// Do not fetch the policy and this device's key bundle from the broker
    /// ($mqseal/policy, $mqseal/bundle/ID) on connect, nor apply later ones
    /// (key rotations) while running; use only what the device directory holds.
    #[arg(long)]
    no_key_updates: bool,
}

/// Where the message comes from: exactly one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct MessageSource {
    /// The message, from the command line.
    #[arg(short = 'm', long = "message", value_name = "MSG")]
    message: Option<OsString>,
    /// Read the message from standard input (all of it, as one message).
    #[arg(short = 's', long)]
    stdin: bool,
    /// Read the message from FILE.
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The topic to publish on.
    #[arg(short = 't', long, value_name = "TOPIC")]
    topic: String,
    #[command(flatten)]
    message: MessageSource,
    /// MQTT QoS.
    #[arg(short = 'q', long, value_name = "QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Publish as a retained message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// Content encryption of the envelope.
    #[arg(long, value_enum, default_value = "aes256gcm")]
    aead: AeadArg,
    /// Publish the message unsealed. Only for topics no group owns; refused on protected topics.
    #[arg(long)]
    plain: bool,
    /// Send the message N times, each sealed anew (fresh sequence number and timestamp).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Pause between messages when --count is more than 1.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    interval_ms: u64,
    /// Speak MQTT 5 (the broker's refusal of a publish at QoS 1/2 becomes visible).
    #[arg(long)]
    mqtt5: bool,
    /// Print a line to stderr for each message sent.
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(clap::Args)]
pub struct SubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A topic filter to subscribe to (repeatable; `+`, `#` and `$share/NAME/...` allowed).
    #[arg(short = 't', long = "topic", value_name = "FILTER", required = true)]
    filters: Vec<String>,
    /// MQTT QoS requested for every filter.
    #[arg(short = 'q', long, value_name = "QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// One JSON object per line (see below).
    #[arg(long, conflicts_with = "verbose")]
    json: bool,
    /// Print the topic before each payload (`TOPIC PAYLOAD`).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Stop (exit 0) after COUNT delivered messages.
    #[arg(short = 'C', long = "count", value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop (exit 27) when no message was delivered for SECONDS (counted from the subscription).
    #[arg(short = 'W', long = "wait", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    wait: Option<u64>,
}

pub fn run(command: Commands) -> anyhow::Result<()> {
    match command {
        Commands::Pub(args) => run_pub(args),
        Commands::Sub(args) => run_sub(args),
    }
}
// ---------------------------------------------------------------------------
// Login

/// Works out a device's login from the flags and its stored policy.
fn device_login(connect: &ConnectArgs, store: &DeviceStore, role: &str) -> anyhow::Result<Login> {
    let client_id = Login::client_id(connect.client_id.as_ref(), store.id(), role)?;
    let username = match &connect.username {
        Some(name) => name.clone(),
        None => policy_username(store)?,
    };
    let password = if let Some(password) = &connect.password {
        Password::Fixed(password.clone())
    } else if let Some(path) = &connect.password_file {
        Password::Fixed(read_password_file(path)?)
    } else if connect.no_auth_token {
        Password::Nothing
    } else {
        Password::Token(store.device().signing_key()?)
    };
    Ok(Login::new(client_id, username, password))
}

impl ConnectArgs {
    fn link_options(&self) -> LinkOptions {
        LinkOptions {
            host: self.host.clone(),
            port: self.port,
            keepalive: self.keepalive,
            timeout: self.timeout,
            reconnect: self.reconnect,
        }
    }
}

/// The device's MQTT username in its stored policy.
fn policy_username(store: &DeviceStore) -> anyhow::Result<String> {
    let username = store.username().ok_or_else(|| {
        anyhow!("device {:?} is not in its stored policy: join again with a current policy", store.id())
    })?;
    Ok(username.to_string())
}


// ---------------------------------------------------------------------------
// pub

fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    validate_topic_name(topic).map_err(|e| anyhow!("--topic {topic:?}: {e}"))?;
    let mut device = Device::load(&args.connect.device)?;
    // Sealed messages use the keys fetched on connect; check then, with the current policy.
    let fetch_keys = !args.plain && !args.connect.no_key_updates;
    if !fetch_keys {
        check_may_publish(device.store().policy(), device.id(), topic, args.plain)?;
    }
    let message = read_message(&args.message)?;
    if !args.plain && message.len() >= DEFAULT_MAX_ENVELOPE_BYTES {
        bail!("{}", too_large(message.len(), "the message"));
    }
    let login = device_login(&args.connect, device.store(), "pub")?;
    let me = device.id().to_string();
    if !args.plain {
        device.prepare_sealing()?;
    }
    let aead = AeadAlg::from(args.aead);
    let timeout = Duration::from_secs(args.connect.timeout);

    let mut link = Link::new(&args.connect.link_options(), login, args.mqtt5);
    wait_connected(&mut link, timeout)?;
    let mut inbox = Vec::new();
    if fetch_keys {
        if !fetch_control_documents(&mut link, &me, timeout, &mut inbox)? {
            eprintln!("mqseal: warning: {}", refused_updates(&me));
        }
        apply_control_messages(&mut device, &mut inbox);
        check_may_publish(device.store().policy(), &me, topic, args.plain).inspect_err(|_| link.disconnect())?;
    }
    for n in 1..=args.count {
        let (payload, what) = if args.plain {
            (message.clone(), format!("{} bytes unsealed", message.len()))
        } else {
            let sealed = device.seal_with(topic, &message, aead).context("cannot seal")?;
            if sealed.envelope.len() > DEFAULT_MAX_ENVELOPE_BYTES {
                link.disconnect();
                bail!("{}", too_large(sealed.envelope.len(), "the sealed envelope"));
            }
            let what = format!(
                "seq {} (group {}, epoch {}, {} byte envelope)",
                sealed.seq,
                sealed.group,
                sealed.epoch,
                sealed.envelope.len()
            );
            (sealed.envelope, what)
        };
        link.publish(topic, args.qos, args.retain, payload)?;
        wait_delivered(&mut link, args.qos, timeout, &mut inbox).with_context(|| format!("message {n} of {}", args.count))?;
        if args.verbose {
            let acked = match args.qos {
                0 => "sent",
                1 => "acknowledged (PUBACK)",
                _ => "acknowledged (PUBCOMP)",
            };
            eprintln!("published {what} on {topic} at QoS {}: {acked}", args.qos);
        }
        if n < args.count && args.interval_ms > 0 {
            idle(&mut link, Instant::now() + Duration::from_millis(args.interval_ms), &mut inbox)?;
        }
        // A rotation while running: the next message is sealed with the new key.
        if fetch_keys {
            apply_control_messages(&mut device, &mut inbox);
        }
    }
    link.disconnect();
    Ok(())
}

/// Applies the control messages collected so far, together (on connect the
/// policy and bundle arrive back to back); other messages stay in the inbox.
fn apply_control_messages(device: &mut Device, inbox: &mut Vec<(String, Vec<u8>)>) {
    let mut rest = Vec::new();
    let mut received = false;
    for (topic, payload) in inbox.drain(..) {
        if device.receive_control(&topic, &payload) {
            received = true;
        } else {
            rest.push((topic, payload));
        }
    }
    *inbox = rest;
    if received {
        let outcome = device.apply_received();
        report_control(outcome, "$mqseal");
    }
}

/// Says what a control message did (stderr); false when it was not a control
/// message of this device.
fn report_control(outcome: Result<ControlOutcome, DeviceError>, topic: &str) -> bool {
    match outcome {
        Ok(ControlOutcome::NotControl) => return false,
        Ok(ControlOutcome::Unchanged(None)) => {}
        Ok(ControlOutcome::Unchanged(Some(note))) => eprintln!("mqseal: {note}"),
        Ok(ControlOutcome::Updated(report)) => eprintln!("mqseal: {}", describe(&report)),
        Err(why) => eprintln!("mqseal: warning: ignored a key update from {topic}: {why:#}"),
    }
    std::io::stderr().flush().ok();
    true
}

/// Refuses, before connecting, what the broker would refuse or what would leak:
/// sealing for an unprotected topic, plaintext on a protected one, a topic this
/// device may not publish on.
fn check_may_publish(policy: &CompiledPolicy, me: &str, topic: &str, plain: bool) -> anyhow::Result<()> {
    match (policy.group_of_topic(topic), plain) {
        (None, true) => Ok(()),
        (None, false) => bail!(
            "topic {topic:?} belongs to no group in the policy, so there is no group key to seal it with; \
             to publish it unsealed, add --plain"
        ),
        (Some(group), true) => bail!(
            "topic {topic:?} belongs to group {:?}: it carries only sealed messages, so --plain is refused",
            policy.group(group).id
        ),
        (Some(group), false) => {
            let role = policy.device_by_id(me).and_then(|d| policy.role(group, d));
            match role {
                Some(role) if role.can_publish() => Ok(()),
                Some(role) => bail!(
                    "device {me:?} may not publish on {topic:?}: its role in group {:?} is {role}",
                    policy.group(group).id
                ),
                None => bail!(
                    "device {me:?} may not publish on {topic:?}: it is not a member of group {:?}, which owns the topic",
                    policy.group(group).id
                ),
            }
        }
    }
}

/// Subscribers (`mqseal sub`, `Receiver`) and the broker (by default) refuse
/// envelopes over 64 KiB: sending one would only be dropped.
fn too_large(len: usize, what: &str) -> String {
    format!(
        "{what} is {len} bytes; sealed messages must fit in an envelope of at most {DEFAULT_MAX_ENVELOPE_BYTES} bytes \
         (the broker's and the receivers' default cap)"
    )
}

fn read_message(source: &MessageSource) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::new();
    if let Some(message) = &source.message {
        bytes.extend_from_slice(message.as_bytes());
    } else if let Some(path) = &source.file {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        file.take(MAX_MESSAGE_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
    } else {
        std::io::stdin().take(MAX_MESSAGE_BYTES + 1).read_to_end(&mut bytes).context("cannot read standard input")?;
    }
    if bytes.len() as u64 > MAX_MESSAGE_BYTES {
        bail!("the message is larger than {MAX_MESSAGE_BYTES} bytes");
    }
    Ok(bytes)
}

/// Keeps the connection serviced (pings, reconnects) until `until`.
fn idle(link: &mut Link, until: Instant, inbox: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    while let Some(event) = link.next(Some(until))? {
        if let Ev::Message { topic, payload } = event {
            inbox.push((topic, payload));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// sub

/// How `sub` prints.
#[derive(Clone, Copy)]
enum Style {
    Payload,
    TopicAndPayload,
    Json,
}

fn run_sub(args: SubArgs) -> anyhow::Result<()> {
    for filter in &args.filters {
        parse_subscription(filter).map_err(|e| anyhow!("--topic {filter:?}: {e}"))?;
    }
    let mut device = Device::load(&args.connect.device)?;
    let login = device_login(&args.connect, device.store(), "sub")?;
    device.prepare_opening()?;
    let style = if args.json {
        Style::Json
    } else if args.verbose {
        Style::TopicAndPayload
    } else {
        Style::Payload
    };
    let idle_limit = args.wait.map(Duration::from_secs);

    let me = device.id().to_string();
    let key_updates = !args.connect.no_key_updates;
    // Control messages are the user's output too only if they asked for them.
    let user_wants_control = args.filters.iter().any(|f| f.starts_with(mqseal_core::formats::control::PREFIX));

    let mut link = Link::new(&args.connect.link_options(), login, false);
    wait_connected(&mut link, Duration::from_secs(args.connect.timeout))?;
    // SUBACKs come back in the order of the SUBSCRIBEs: remember which is which.
    let mut pending_subacks = std::collections::VecDeque::new();
    let subscribe = |link: &mut Link, pending: &mut std::collections::VecDeque<bool>| -> anyhow::Result<()> {
        if key_updates {
            // First, so the retained policy and bundle arrive before any message they open.
            link.subscribe(&control_filters(&me), 1)?;
            pending.push_back(true);
        }
        link.subscribe(&args.filters, args.qos)?;
        pending.push_back(false);
        Ok(())
    };
    subscribe(&mut link, &mut pending_subacks)?;
    let mut idle_deadline: Option<Instant> = None;
    let mut delivered: u64 = 0;
    let stdout = std::io::stdout();
    loop {
        match link.next(idle_deadline)? {
            None => {
                link.disconnect();
                eprintln!("mqseal: no message for {} s; stopping", idle_limit.map_or(0, |d| d.as_secs()));
                std::process::exit(EXIT_IDLE_TIMEOUT);
            }
            // A reconnect: the session was clean, so subscribe again.
            Some(Ev::Connected) => {
                pending_subacks.clear();
                subscribe(&mut link, &mut pending_subacks)?;
            }
            Some(Ev::SubAck(granted)) => {
                if pending_subacks.pop_front() == Some(true) {
                    if granted.iter().any(Option::is_none) {
                        eprintln!("mqseal: warning: {}", refused_updates(&me));
                    }
                    continue;
                }
                if !report_suback(&args.filters, &granted, link.client_id())? {
                    link.disconnect();
                    eprintln!("mqseal: error: every subscription was refused");
                    std::process::exit(EXIT_ALL_SUBSCRIPTIONS_REFUSED);
                }
                if idle_deadline.is_none() {
                    idle_deadline = idle_limit.map(|limit| Instant::now() + limit);
                }
            }
            Some(Ev::Message { topic, payload }) => {
                if key_updates && report_control(device.apply_control(&topic, &payload), &topic) && !user_wants_control {
                    continue;
                }
                let mut out = stdout.lock();
                if deliver(&mut device, &topic, &payload, style, &mut out)? {
                    delivered += 1;
                    idle_deadline = idle_limit.map(|limit| Instant::now() + limit);
                    if args.count == Some(delivered) {
                        link.disconnect();
                        return Ok(());
                    }
                }
            }
            Some(_) => {}
        }
    }
}

/// Reports refused filters and the subscription; false when all were refused.
fn report_suback(filters: &[String], granted: &[Option<u8>], client_id: &str) -> anyhow::Result<bool> {
    if granted.len() != filters.len() {
        bail!("the broker answered {} filters with {} SUBACK codes", filters.len(), granted.len());
    }
    let mut accepted = Vec::new();
    for (filter, code) in filters.iter().zip(granted) {
        match code {
            Some(qos) => accepted.push(format!("{filter} (QoS {qos})")),
            None => eprintln!("mqseal: error: the broker refused the subscription to {filter} (SUBACK failure 0x80)"),
        }
    }
    if accepted.is_empty() {
        return Ok(false);
    }
    eprintln!("subscribed to {} as client {client_id}", accepted.join(", "));
    std::io::stderr().flush().ok();
    Ok(true)
}

/// Prints one message; true when it was delivered (opened, or unprotected),
/// false when it was rejected. Errors only for local failures.
fn deliver(
    device: &mut Device,
    topic: &str,
    payload: &[u8],
    style: Style,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let protected = device.group_of_topic(topic).is_some();
    let line: Vec<u8>;
    let delivered = if !protected {
        line = match style {
            Style::Json => json_line(&serde_json::json!({
                "topic": topic,
                "unprotected": true,
                "payload_base64": STANDARD.encode(payload),
            })),
            _ => payload_line(style, topic, payload),
        };
        true
    } else {
        match device.open(topic, payload) {
            Ok(opened) => {
                line = match style {
                    Style::Json => json_line(&opened.to_json(topic)),
                    _ => payload_line(style, topic, &opened.payload),
                };
                true
            }
            // Verified but not recorded as seen: fail closed rather than print.
            Err(error @ DeviceError::Open(OpenError::ReplayState { .. })) => {
                bail!("cannot record the message on {topic:?} as seen: {error}")
            }
            Err(error) => {
                match style {
                    Style::Json => {
                        line = json_line(&serde_json::json!({
                            "topic": topic,
                            "rejected": error.reason(),
                            "detail": error.to_string(),
                        }))
                    }
                    _ => {
                        eprintln!("rejected {}: {} ({error})", printable(topic), error.reason());
                        return Ok(false);
                    }
                }
                false
            }
        }
    };
    out.write_all(&line).and_then(|()| out.flush()).context("cannot write standard output")?;
    Ok(delivered)
}

fn payload_line(style: Style, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(topic.len() + payload.len() + 2);
    if let Style::TopicAndPayload = style {
        line.extend_from_slice(topic.as_bytes());
        line.push(b' ');
    }
    line.extend_from_slice(payload);
    line.push(b'\n');
    line
}

fn json_line(value: &serde_json::Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A topic from the network, safe to show on a terminal (control characters escaped).
fn printable(topic: &str) -> String {
    topic.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}
