//! `mqseal pub` and `mqseal sub`: MQTT clients that log in as the device and
//! seal or open messages transparently, with the same `Sealer` and `Receiver`
//! as `mqseal seal`/`open`.
//!
//! Login. The MQTT username is the device's username in the policy it joined
//! with (`--username` overrides it). The password is a fresh login token
//! (`mqseal_core::login_token`): signed with the device key, bound to the client
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mqseal_core::device_store::{unix_millis, DeviceStore, OpenError, Receiver, DEFAULT_MAX_ENVELOPE_BYTES};
use mqseal_core::envelope::AeadAlg;
use mqseal_core::keys::SigningKey;
use mqseal_core::login_token::make_token;
use mqseal_core::policy::CompiledPolicy;
use mqseal_core::topic::{parse_subscription, validate_topic_name};
use rand_core::{OsRng, RngCore};

use crate::device_cmd::AeadArg;

/// Largest message `mqseal pub` reads (the broker's envelope cap, 64 KiB by
/// default, is usually the tighter bound for sealed messages).
const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest MQTT packet sent or accepted: a maximal message plus envelope and header overhead.
const MAX_PACKET_BYTES: usize = MAX_MESSAGE_BYTES as usize + 64 * 1024;
/// `sub`: every subscription was refused.
pub const EXIT_ALL_SUBSCRIPTIONS_REFUSED: i32 = 2;
/// `sub`: `-W` seconds passed without a message (mosquitto_sub's code).
pub const EXIT_IDLE_TIMEOUT: i32 = 27;
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a clean DISCONNECT may take before the socket is simply closed.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

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

/// What goes in the CONNECT password field.
// One per process: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Password {
    /// A fresh login token per connection attempt.
    Token(SigningKey),
    Fixed(String),
    Nothing,
}

/// The client id, username and password source of one command.
struct Login {
    client_id: String,
    username: String,
    password: Password,
    /// The last token's timestamp: every token must be newer than the previous one.
    last_token_ms: u64,
}

impl Login {
    /// Works out the login from the flags and the device's stored policy.
    fn new(connect: &ConnectArgs, store: &DeviceStore, role: &str) -> anyhow::Result<Login> {
        let client_id = match &connect.client_id {
            Some(id) => {
                if id.is_empty() {
                    bail!(
                        "--id: the client id is empty (the login token is bound to the client id, so it must be known)"
                    );
                }
                if id.len() > usize::from(u16::MAX) {
                    bail!("--id: the client id is longer than an MQTT string can be");
                }
                id.clone()
            }
            None => {
                let mut random = [0u8; 6];
                OsRng.fill_bytes(&mut random);
                let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
                format!("{}-{role}-{hex}", store.id())
            }
        };
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
        Ok(Login { client_id, username, password, last_token_ms: 0 })
    }

    /// Username and password for the next connection attempt.
    fn credentials(&mut self) -> (String, String) {
        let password = match &self.password {
            Password::Token(key) => {
                let timestamp_ms = unix_millis().max(self.last_token_ms.saturating_add(1));
                self.last_token_ms = timestamp_ms;
                make_token(key, &self.client_id, &self.username, timestamp_ms)
            }
            Password::Fixed(password) => password.clone(),
            // An empty password is left out of CONNECT.
            Password::Nothing => String::new(),
        };
        (self.username.clone(), password)
    }

    /// A hint to add when the broker refuses the login.
    fn refusal_hint(&self) -> &'static str {
        match self.password {
            Password::Token(_) => {
                "; the password was a login token signed by the device key (for plugin_opt_auth key): check that \
                 the broker's policy lists this device with this username and key, and that both clocks are right. \
                 For brokers that authenticate otherwise, use --password/--password-file or --no-auth-token"
            }
            Password::Fixed(_) => "; check --username and --password",
            Password::Nothing => "; no password was sent (--no-auth-token)",
        }
    }
}

/// The device's MQTT username in its stored policy.
fn policy_username(store: &DeviceStore) -> anyhow::Result<String> {
    let policy = store.policy();
    let device = policy.device_by_id(store.id()).ok_or_else(|| {
        anyhow!("device {:?} is not in its stored policy: join again with a current policy", store.id())
    })?;
    Ok(policy.username(device).to_string())
}

fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("{}: the password file is empty", path.display());
    }
    Ok(line.to_string())
}

// ---------------------------------------------------------------------------
// The MQTT connection, over rumqttc's 3.1.1 or 5 client

/// What happened on the connection, in the terms pub and sub care about.
enum Ev {
    /// CONNACK accepted (also after each reconnect).
    Connected,
    /// A PUBLISH was written to the socket (packet id; 0 at QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for this packet id.
    Acked(u16),
    /// SUBACK: per filter, the granted QoS or None if refused.
    SubAck(Vec<Option<u8>>),
    /// An incoming message.
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// Our DISCONNECT was written.
    DisconnectSent,
    Other,
}

/// Why the connection failed.
enum Failure {
    /// CONNACK refused the login (code and its meaning).
    LoginRefused(String),
    /// The broker refused a publish (MQTT 5 reason code).
    PublishRefused(String),
    /// Anything else: network, timeouts, protocol.
    Network(String),
}

// One per process: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    V4(rumqttc::Client, rumqttc::Connection),
    V5(rumqttc::v5::Client, rumqttc::v5::Connection),
}

/// A connection that reconnects with fresh credentials when asked to.
struct Link {
    client: Client,
    login: Login,
    address: String,
    reconnect: bool,
    backoff: Duration,
    ever_connected: bool,
}

fn qos_v4(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos_v5(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Link {
    fn new(connect: &ConnectArgs, mut login: Login, mqtt5: bool) -> Link {
        let (username, password) = login.credentials();
        let keepalive = Duration::from_secs(u64::from(connect.keepalive));
        let client = if mqtt5 {
            let mut options =
                rumqttc::v5::MqttOptions::new(login.client_id.clone(), connect.host.clone(), connect.port);
            options
                .set_keep_alive(keepalive)
                .set_clean_start(true)
                .set_connection_timeout(connect.timeout)
                .set_max_packet_size(Some(MAX_PACKET_BYTES as u32))
                .set_credentials(username, password);
            let (client, connection) = rumqttc::v5::Client::new(options, 10);
            Client::V5(client, connection)
        } else {
            let mut options = rumqttc::MqttOptions::new(login.client_id.clone(), connect.host.clone(), connect.port);
            options
                .set_keep_alive(keepalive)
                .set_clean_session(true)
                .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
                .set_credentials(username, password);
            let (client, mut connection) = rumqttc::Client::new(options, 10);
            connection.eventloop.network_options.set_connection_timeout(connect.timeout);
            Client::V4(client, connection)
        };
        Link {
            client,
            login,
            address: format!("{}:{}", connect.host, connect.port),
            reconnect: connect.reconnect,
            backoff: Duration::from_secs(1),
            ever_connected: false,
        }
    }

    fn client_id(&self) -> &str {
        &self.login.client_id
    }

    /// The next event, or None once `deadline` has passed. Reconnects (with a
    /// fresh token) on network failures when `--reconnect` was given.
    fn next(&mut self, deadline: Option<Instant>) -> anyhow::Result<Option<Ev>> {
        loop {
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            let Some(outcome) = self.poll(wait) else { return Ok(None) };
            match outcome {
                Ok(Ev::Connected) => {
                    self.ever_connected = true;
                    self.backoff = Duration::from_secs(1);
                    return Ok(Some(Ev::Connected));
                }
                Ok(event) => return Ok(Some(event)),
                Err(Failure::LoginRefused(code)) => bail!(
                    "the broker at {} refused the login of client {:?} as user {:?}: {code}{}",
                    self.address,
                    self.login.client_id,
                    self.login.username,
                    self.login.refusal_hint()
                ),
                Err(Failure::PublishRefused(reason)) => {
                    bail!("the broker at {} refused the publish: {reason}", self.address)
                }
                Err(Failure::Network(detail)) => {
                    let what = if self.ever_connected {
                        format!("connection to {} lost", self.address)
                    } else {
                        format!("cannot connect to {}", self.address)
                    };
                    if !self.reconnect {
                        bail!("{what}: {detail}");
                    }
                    eprintln!("mqseal: {what}: {detail}; reconnecting in {} s", self.backoff.as_secs());
                    let pause = match deadline {
                        Some(d) => self.backoff.min(d.saturating_duration_since(Instant::now())),
                        None => self.backoff,
                    };
                    std::thread::sleep(pause);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.refresh_credentials();
                }
            }
        }
    }

    /// Before a reconnect: a login token is single use, so make a new one.
    fn refresh_credentials(&mut self) {
        let (username, password) = self.login.credentials();
        match &mut self.client {
            Client::V4(_, connection) => {
                connection.eventloop.mqtt_options.set_credentials(username, password);
            }
            Client::V5(_, connection) => {
                connection.eventloop.options.set_credentials(username, password);
            }
        }
    }

    /// One step of the event loop; None when `wait` elapsed.
    fn poll(&mut self, wait: Option<Duration>) -> Option<Result<Ev, Failure>> {
        match &mut self.client {
            Client::V4(_, connection) => {
                let result = match wait {
                    Some(wait) => match connection.recv_timeout(wait) {
                        Ok(result) => result,
                        Err(rumqttc::RecvTimeoutError::Timeout) => return None,
                        Err(rumqttc::RecvTimeoutError::Disconnected) => {
                            return Some(Err(Failure::Network("the client was closed".into())))
                        }
                    },
                    None => match connection.recv() {
                        Ok(result) => result,
                        Err(_) => return Some(Err(Failure::Network("the client was closed".into()))),
                    },
                };
                Some(result.map(event_v4).map_err(failure_v4))
            }
            Client::V5(_, connection) => {
                let result = match wait {
                    // rumqttc does not export the v5 timeout error's type; it only
                    // reports Disconnected when every Client handle is gone, and
                    // this Link holds one, so an error here is the timeout.
                    Some(wait) => connection.recv_timeout(wait).ok()?,
                    None => match connection.recv() {
                        Ok(result) => result,
                        Err(_) => return Some(Err(Failure::Network("the client was closed".into()))),
                    },
                };
                Some(result.map(event_v5).map_err(failure_v5))
            }
        }
    }

    fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) -> anyhow::Result<()> {
        match &self.client {
            Client::V4(client, _) => client
                .publish(topic, qos_v4(qos), retain, payload)
                .map_err(|e| anyhow!("cannot publish on {topic:?}: {e}")),
            Client::V5(client, _) => client
                .publish(topic, qos_v5(qos), retain, payload)
                .map_err(|e| anyhow!("cannot publish on {topic:?}: {e}")),
        }
    }

    fn subscribe(&mut self, filters: &[String], qos: u8) -> anyhow::Result<()> {
        match &self.client {
            Client::V4(client, _) => client
                .subscribe_many(filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos_v4(qos))))
                .map_err(|e| anyhow!("cannot subscribe: {e}")),
            Client::V5(..) => bail!("subscribing is implemented for MQTT 3.1.1 only"),
        }
    }

    /// Sends DISCONNECT and waits (briefly) until it is written.
    fn disconnect(&mut self) {
        let requested = match &self.client {
            Client::V4(client, _) => client.disconnect().is_ok(),
            Client::V5(client, _) => client.disconnect().is_ok(),
        };
        if !requested {
            return;
        }
        let deadline = Instant::now() + DISCONNECT_GRACE;
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            match self.poll(Some(wait)) {
                Some(Ok(Ev::DisconnectSent)) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

fn event_v4(event: rumqttc::Event) -> Ev {
    use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Ev::Connected,
        Event::Incoming(Packet::PubAck(ack)) => Ev::Acked(ack.pkid),
        Event::Incoming(Packet::PubComp(comp)) => Ev::Acked(comp.pkid),
        Event::Incoming(Packet::SubAck(suback)) => Ev::SubAck(
            suback
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(qos) => Some(*qos as u8),
                    SubscribeReasonCode::Failure => None,
                })
                .collect(),
        ),
        Event::Incoming(Packet::Publish(publish)) => {
            Ev::Message { topic: publish.topic, payload: publish.payload.to_vec() }
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Sent(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Ev::DisconnectSent,
        _ => Ev::Other,
    }
}

fn failure_v4(error: rumqttc::ConnectionError) -> Failure {
    use rumqttc::{ConnectReturnCode, ConnectionError};
    match error {
        ConnectionError::ConnectionRefused(code) => Failure::LoginRefused(match code {
            ConnectReturnCode::Success => "CONNACK 0 (accepted?)".into(),
            ConnectReturnCode::RefusedProtocolVersion => "CONNACK 1, unacceptable protocol version".into(),
            ConnectReturnCode::BadClientId => "CONNACK 2, client identifier rejected".into(),
            ConnectReturnCode::ServiceUnavailable => "CONNACK 3, server unavailable".into(),
            ConnectReturnCode::BadUserNamePassword => "CONNACK 4, bad user name or password".into(),
            ConnectReturnCode::NotAuthorized => "CONNACK 5, not authorized".into(),
        }),
        other => Failure::Network(other.to_string()),
    }
}

fn event_v5(event: rumqttc::v5::Event) -> Ev {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Ev::Connected,
        Event::Incoming(Packet::PubAck(ack)) => Ev::Acked(ack.pkid),
        Event::Incoming(Packet::PubComp(comp)) => Ev::Acked(comp.pkid),
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Sent(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Ev::DisconnectSent,
        _ => Ev::Other,
    }
}

fn failure_v5(error: rumqttc::v5::ConnectionError) -> Failure {
    use rumqttc::v5::mqttbytes::v5::{PubAckReason, PubRecReason};
    use rumqttc::v5::{ConnectionError, StateError};
    fn puback_code(reason: PubAckReason) -> u8 {
        match reason {
            PubAckReason::Success => 0x00,
            PubAckReason::NoMatchingSubscribers => 0x10,
            PubAckReason::UnspecifiedError => 0x80,
            PubAckReason::ImplementationSpecificError => 0x83,
            PubAckReason::NotAuthorized => 0x87,
            PubAckReason::TopicNameInvalid => 0x90,
            PubAckReason::PacketIdentifierInUse => 0x91,
            PubAckReason::QuotaExceeded => 0x97,
            PubAckReason::PayloadFormatInvalid => 0x99,
        }
    }
    fn pubrec_code(reason: PubRecReason) -> u8 {
        match reason {
            PubRecReason::Success => 0x00,
            PubRecReason::NoMatchingSubscribers => 0x10,
            PubRecReason::UnspecifiedError => 0x80,
            PubRecReason::ImplementationSpecificError => 0x83,
            PubRecReason::NotAuthorized => 0x87,
            PubRecReason::TopicNameInvalid => 0x90,
            PubRecReason::PacketIdentifierInUse => 0x91,
            PubRecReason::QuotaExceeded => 0x97,
            PubRecReason::PayloadFormatInvalid => 0x99,
        }
    }
    match error {
        ConnectionError::ConnectionRefused(code) => Failure::LoginRefused(format!("CONNACK reason {code:?}")),
        ConnectionError::MqttState(StateError::ConnFail { reason }) => {
            Failure::LoginRefused(format!("CONNACK reason {reason:?}"))
        }
        ConnectionError::MqttState(StateError::PubAckFail { reason }) => {
            Failure::PublishRefused(format!("PUBACK reason 0x{:02x} ({reason:?})", puback_code(reason)))
        }
        ConnectionError::MqttState(StateError::PubRecFail { reason }) => {
            Failure::PublishRefused(format!("PUBREC reason 0x{:02x} ({reason:?})", pubrec_code(reason)))
        }
        other => Failure::Network(other.to_string()),
    }
}

/// Waits for CONNACK (or fails as `Link::next` does).
fn wait_connected(link: &mut Link, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match link.next(if link.reconnect { None } else { Some(deadline) })? {
            Some(Ev::Connected) => return Ok(()),
            Some(_) => {}
            None => bail!("no CONNACK from {} within {} s", link.address, timeout.as_secs()),
        }
    }
}

// ---------------------------------------------------------------------------
// pub

fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    validate_topic_name(topic).map_err(|e| anyhow!("--topic {topic:?}: {e}"))?;
    let store = DeviceStore::open(&args.connect.device)?;
    check_may_publish(store.policy(), store.id(), topic, args.plain)?;
    let message = read_message(&args.message)?;
    if !args.plain && message.len() >= DEFAULT_MAX_ENVELOPE_BYTES {
        bail!("{}", too_large(message.len(), "the message"));
    }
    let login = Login::new(&args.connect, &store, "pub")?;
    let mut sealer = if args.plain { None } else { Some(store.sealer()?) };
    let aead = AeadAlg::from(args.aead);
    let timeout = Duration::from_secs(args.connect.timeout);

    let mut link = Link::new(&args.connect, login, args.mqtt5);
    wait_connected(&mut link, timeout)?;
    for n in 1..=args.count {
        let (payload, what) = match sealer.as_mut() {
            Some(sealer) => {
                let sealed = sealer.seal(topic, &message, aead).context("cannot seal")?;
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
            }
            None => (message.clone(), format!("{} bytes unsealed", message.len())),
        };
        link.publish(topic, args.qos, args.retain, payload)?;
        wait_delivered(&mut link, args.qos, timeout).with_context(|| format!("message {n} of {}", args.count))?;
        if args.verbose {
            let acked = match args.qos {
                0 => "sent",
                1 => "acknowledged (PUBACK)",
                _ => "acknowledged (PUBCOMP)",
            };
            eprintln!("published {what} on {topic} at QoS {}: {acked}", args.qos);
        }
        if n < args.count && args.interval_ms > 0 {
            idle(&mut link, Instant::now() + Duration::from_millis(args.interval_ms))?;
        }
    }
    link.disconnect();
    Ok(())
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

/// After `publish`: waits until the PUBLISH is on the wire (QoS 0) or acknowledged (PUBACK/PUBCOMP).
fn wait_delivered(link: &mut Link, qos: u8, timeout: Duration) -> anyhow::Result<()> {
    let mut deadline = Instant::now() + timeout;
    let mut packet_id = None;
    loop {
        match link.next(Some(deadline))? {
            Some(Ev::Sent(id)) => {
                if qos == 0 {
                    return Ok(());
                }
                packet_id = Some(id);
            }
            Some(Ev::Acked(id)) if packet_id == Some(id) => return Ok(()),
            // After a reconnect the message is sent again: the timeout starts over.
            Some(Ev::Connected) => deadline = Instant::now() + timeout,
            Some(_) => {}
            None => bail!(
                "the broker did not {} within {} s",
                if packet_id.is_some() { "acknowledge the message" } else { "accept the message" },
                timeout.as_secs()
            ),
        }
    }
}

/// Keeps the connection serviced (pings, reconnects) until `until`.
fn idle(link: &mut Link, until: Instant) -> anyhow::Result<()> {
    while link.next(Some(until))?.is_some() {}
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
    let store = DeviceStore::open(&args.connect.device)?;
    let login = Login::new(&args.connect, &store, "sub")?;
    let mut receiver = store.receiver()?;
    let style = if args.json {
        Style::Json
    } else if args.verbose {
        Style::TopicAndPayload
    } else {
        Style::Payload
    };
    let idle_limit = args.wait.map(Duration::from_secs);

    let mut link = Link::new(&args.connect, login, false);
    wait_connected(&mut link, Duration::from_secs(args.connect.timeout))?;
    link.subscribe(&args.filters, args.qos)?;
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
            Some(Ev::Connected) => link.subscribe(&args.filters, args.qos)?,
            Some(Ev::SubAck(granted)) => {
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
                let mut out = stdout.lock();
                if deliver(&mut receiver, &topic, &payload, style, &mut out)? {
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
    receiver: &mut Receiver,
    topic: &str,
    payload: &[u8],
    style: Style,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let protected = receiver.store().policy().group_of_topic(topic).is_some();
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
        match receiver.open(topic, payload) {
            Ok(opened) => {
                line = match style {
                    Style::Json => json_line(&opened.to_json(topic)),
                    _ => payload_line(style, topic, &opened.payload),
                };
                true
            }
            // Verified but not recorded as seen: fail closed rather than print.
            Err(error @ OpenError::ReplayState { .. }) => {
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
