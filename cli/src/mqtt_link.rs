//! The MQTT connection every `mqseal` network command uses (pub, sub, join,
//! policy push, bundle push): rumqttc's 3.1.1 or 5 client behind one small
//! event vocabulary, a login (a fresh single-use login token per connection
//! attempt, or a fixed password), and reconnects with fresh credentials.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use mqseal_core::device::store::unix_millis;
use mqseal_core::formats::keys::SigningKey;
use mqseal_core::formats::login_token::make_token;
use rand_core::{OsRng, RngCore};

/// Largest MQTT packet sent or accepted: a maximal message plus envelope and header overhead.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a clean DISCONNECT may take before the socket is simply closed.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Where to connect and how patiently.
pub struct LinkOptions {
    pub host: String,
    pub port: u16,
    pub keepalive: u16,
    /// Seconds for the connection (TCP and CONNACK).
    pub timeout: u64,
    pub reconnect: bool,
}

impl LinkOptions {
    /// A short administrative connection (join, push): keepalive 60 s, no reconnecting.
    pub fn one_shot(host: &str, port: u16, timeout: u64) -> LinkOptions {
        LinkOptions { host: host.to_string(), port, keepalive: 60, timeout, reconnect: false }
    }
}

/// Reads the MQTT password (first line) from a file.
pub fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read the password file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("{}: the password file is empty", path.display());
    }
    Ok(line.to_string())
}


/// What goes in the CONNECT password field.
// One per process: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Password {
    /// A fresh login token per connection attempt.
    Token(SigningKey),
    Fixed(String),
    Nothing,
}

/// The client id, username and password source of one command.
pub struct Login {
    pub client_id: String,
    pub username: String,
    password: Password,
    /// The last token's timestamp: every token must be newer than the previous one.
    last_token_ms: u64,
}

impl Login {
    pub fn new(client_id: String, username: String, password: Password) -> Login {
        Login { client_id, username, password, last_token_ms: 0 }
    }

    /// Checks a client id given with `--id`, or makes a random one `PREFIX-ROLE-HEX`.
    pub fn client_id(given: Option<&String>, prefix: &str, role: &str) -> anyhow::Result<String> {
        match given {
            Some(id) => {
                if id.is_empty() {
                    bail!("--id: the client id is empty (the login token is bound to the client id, so it must be known)");
                }
                if id.len() > usize::from(u16::MAX) {
                    bail!("--id: the client id is longer than an MQTT string can be");
                }
                Ok(id.clone())
            }
            None => {
                let mut random = [0u8; 6];
                OsRng.fill_bytes(&mut random);
                let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
                Ok(format!("{prefix}-{role}-{hex}"))
            }
        }
    }

    /// Username and password for the next connection attempt.
    pub fn credentials(&mut self) -> (String, String) {
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
                "; the password was a login token signed by the device's (or the authority's) key, for \
                 plugin_opt_auth key: check that the broker's policy lists this device with this username and key \
                 (or that it trusts this authority), and that both clocks are right. For brokers that authenticate \
                 otherwise, use --password/--password-file or --no-auth-token"
            }
            Password::Fixed(_) => "; check --username and --password",
            Password::Nothing => "; no password was sent (--no-auth-token)",
        }
    }
}


/// What happened on the connection, in the terms pub and sub care about.
pub enum Ev {
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
pub enum Failure {
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
pub struct Link {
    client: Client,
    login: Login,
    address: String,
    pub reconnect: bool,
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
    pub fn new(connect: &LinkOptions, mut login: Login, mqtt5: bool) -> Link {
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

    pub fn client_id(&self) -> &str {
        &self.login.client_id
    }

    /// The next event, or None once `deadline` has passed. Reconnects (with a
    /// fresh token) on network failures when `--reconnect` was given.
    pub fn next(&mut self, deadline: Option<Instant>) -> anyhow::Result<Option<Ev>> {
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

    pub fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) -> anyhow::Result<()> {
        match &self.client {
            Client::V4(client, _) => client
                .publish(topic, qos_v4(qos), retain, payload)
                .map_err(|e| anyhow!("cannot publish on {topic:?}: {e}")),
            Client::V5(client, _) => client
                .publish(topic, qos_v5(qos), retain, payload)
                .map_err(|e| anyhow!("cannot publish on {topic:?}: {e}")),
        }
    }

    pub fn subscribe(&mut self, filters: &[String], qos: u8) -> anyhow::Result<()> {
        match &self.client {
            Client::V4(client, _) => client
                .subscribe_many(filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos_v4(qos))))
                .map_err(|e| anyhow!("cannot subscribe: {e}")),
            Client::V5(client, _) => client
                .subscribe_many(filters.iter().map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos_v5(qos))))
                .map_err(|e| anyhow!("cannot subscribe: {e}")),
        }
    }

    /// Sends DISCONNECT and waits (briefly) until it is written.
    pub fn disconnect(&mut self) {
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
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
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
                    _ => None,
                })
                .collect(),
        ),
        Event::Incoming(Packet::Publish(publish)) => Ev::Message {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: publish.payload.to_vec(),
        },
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
pub fn wait_connected(link: &mut Link, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match link.next(if link.reconnect { None } else { Some(deadline) })? {
            Some(Ev::Connected) => return Ok(()),
            Some(_) => {}
            None => bail!("no CONNACK from {} within {} s", link.address, timeout.as_secs()),
        }
    }
}

/// After `publish`: waits until the PUBLISH is on the wire (QoS 0) or acknowledged
/// (PUBACK/PUBCOMP). Messages that arrive meanwhile go to `inbox`.
pub fn wait_delivered(link: &mut Link, qos: u8, timeout: Duration, inbox: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
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
            Some(Ev::Message { topic, payload }) => inbox.push((topic, payload)),
            Some(_) => {}
            None => bail!(
                "the broker did not {} within {} s",
                if packet_id.is_some() { "acknowledge the message" } else { "accept the message" },
                timeout.as_secs()
            ),
        }
    }
}
