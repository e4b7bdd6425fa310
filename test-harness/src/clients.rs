//! Real MQTT clients: Mosquitto's own command-line clients (an independent
//! implementation) and our own client built on rumqttc.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT ARGS...` to completion.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mosquitto_pub (scripts/setup installs mosquitto-clients)")
}

/// Publishes `payload` (sealed, or deliberately not) on `topic` with `mosquitto_pub`
/// at QoS 1 as MQTT user `user`, from a file so that any bytes pass; asserts that
/// it was sent (MQTT 3.1.1: a refused publish is acknowledged too).
pub fn publish_raw(broker: &crate::Broker, topic: &str, user: &str, client_id: &str, payload: &[u8]) {
    let file = broker.path(&format!("payload-{client_id}.bin"));
    std::fs::write(&file, payload).expect("write payload");
    let out = mosquitto_pub(broker.port(), &["-u", user, "-i", client_id, "-t", topic, "-q", "1", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "mosquitto_pub: {}\nbroker log:\n{}", String::from_utf8_lossy(&out.stderr), broker.log());
}

/// Marks payload lines in `mosquitto_sub` output, apart from its debug lines.
const LINE_MARK: &str = "<<MSG>> ";

/// A running `mosquitto_sub`, printing each message as `<<MSG>> <topic> <retain> <hex payload>`.
pub struct MosquittoSub {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    consumed: usize,
}

/// One message as `mosquitto_sub` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubMessage {
    pub topic: String,
    pub retained: bool,
    pub payload: Vec<u8>,
}

impl MosquittoSub {
    /// Starts `mosquitto_sub -d` on `filter` and waits until its SUBACK arrived, so
    /// that a publish made afterwards is certain to be routed to it.
    /// Returns Err with the output so far if the subscription was refused.
    pub fn start(port: u16, filter: &str, extra_args: &[&str]) -> Result<MosquittoSub, String> {
        // stdbuf: mosquitto_sub's debug lines (the SUBACK we wait for) are otherwise
        // block-buffered on a pipe.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-d", "-t", filter])
            .args(["-F", &format!("{LINE_MARK}%t %r %x")])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto_sub (scripts/setup installs mosquitto-clients)");
        let (tx, rx) = channel();
        for stream in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut sub = MosquittoSub { child, lines: rx, seen: Vec::new(), consumed: 0 };
        match sub.wait_line(|l| l.contains("received SUBACK"), Duration::from_secs(10)) {
            Some(_) => {
                // mosquitto_sub prints the refusal right after the SUBACK line.
                if sub.wait_line(|l| l.contains("denied"), Duration::from_millis(300)).is_some() {
                    return Err(sub.seen.join("\n"));
                }
                Ok(sub)
            }
            None => Err(sub.seen.join("\n")),
        }
    }

    fn wait_line(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| want(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits up to `timeout` for the next message not yet returned.
    pub fn next_message(&mut self, timeout: Duration) -> Option<SubMessage> {
        let deadline = Instant::now() + timeout;
        let already = self.messages_seen();
        loop {
            let all = self.parsed_messages();
            if all.len() > already {
                self.consumed += 1;
                return all.into_iter().nth(already);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn messages_seen(&self) -> usize {
        self.consumed
    }

    fn parsed_messages(&self) -> Vec<SubMessage> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(LINE_MARK))
            .filter_map(|rest| {
                let mut parts = rest.splitn(3, ' ');
                let topic = parts.next()?.to_string();
                let retained = parts.next()? == "1";
                let payload = hex_decode(parts.next().unwrap_or(""))?;
                Some(SubMessage { topic, retained, payload })
            })
            .collect()
    }

    /// All output lines so far (debug lines included), for diagnostics.
    pub fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Our own MQTT client (rumqttc), with the event loop on a helper thread.
pub struct OwnClient {
    client: Client,
    events: Receiver<Result<Event, String>>,
    pending: Vec<Event>,
}

/// One received publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl OwnClient {
    /// Connects as `client_id` (optionally with credentials) and waits for the CONNACK.
    pub fn connect(port: u16, client_id: &str, credentials: Option<(&str, &str)>) -> Result<OwnClient, String> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, pass)) = credentials {
            options.set_credentials(user, pass);
        }
        let (client, mut connection) = Client::new(options, 64);
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() || failed {
                    break;
                }
            }
        });
        let mut own = OwnClient { client, events: rx, pending: Vec::new() };
        own.wait_event(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))), Duration::from_secs(10))
            .map(|_| own)
    }

    /// Waits for an event matching `want`; other events are kept for later reads.
    fn wait_event(&mut self, want: impl Fn(&Event) -> bool, timeout: Duration) -> Result<Event, String> {
        if let Some(pos) = self.pending.iter().position(&want) {
            return Ok(self.pending.remove(pos));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(event)) if want(&event) => return Ok(event),
                Ok(Ok(event)) => {
                    if matches!(event, Event::Incoming(Packet::Publish(_))) {
                        self.pending.push(event);
                    }
                }
                Ok(Err(e)) => return Err(format!("connection error: {e}")),
                Err(_) => return Err("timed out".into()),
            }
        }
    }

    /// Subscribes and returns whether the broker granted it (SUBACK).
    pub fn subscribe(&mut self, filter: &str, qos: u8) -> Result<bool, String> {
        self.client.subscribe(filter, to_qos(qos)).map_err(|e| e.to_string())?;
        match self.wait_event(|e| matches!(e, Event::Incoming(Packet::SubAck(_))), Duration::from_secs(10))? {
            Event::Incoming(Packet::SubAck(ack)) => {
                Ok(ack.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))))
            }
            _ => unreachable!("wait_event returned a non-matching event"),
        }
    }

    /// Publishes and, for QoS 1 and 2, waits for the broker's acknowledgement.
    pub fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) -> Result<(), String> {
        self.client.publish(topic, to_qos(qos), retain, payload.to_vec()).map_err(|e| e.to_string())?;
        let done = match qos {
            0 => |e: &Event| matches!(e, Event::Outgoing(rumqttc::Outgoing::Publish(_))),
            1 => |e: &Event| matches!(e, Event::Incoming(Packet::PubAck(_))),
            _ => |e: &Event| matches!(e, Event::Incoming(Packet::PubComp(_))),
        };
        self.wait_event(done, Duration::from_secs(10)).map(|_| ())
    }

    /// The next message delivered to this client, if one arrives within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Received> {
        match self.wait_event(|e| matches!(e, Event::Incoming(Packet::Publish(_))), timeout) {
            Ok(Event::Incoming(Packet::Publish(p))) => Some(Received {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                qos: p.qos as u8,
                retain: p.retain,
            }),
            _ => None,
        }
    }

    /// Waits until the broker closes this connection (a kick); Ok carries the error seen.
    pub fn wait_disconnected(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Err(e)) => return Ok(e),
                Err(RecvTimeoutError::Disconnected) => return Ok("event loop ended".into()),
                Ok(Ok(event)) => {
                    if matches!(event, Event::Incoming(Packet::Publish(_))) {
                        self.pending.push(event);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err("still connected".into()),
            }
        }
    }

    pub fn disconnect(self) {
        let _ = self.client.disconnect();
    }
}

fn to_qos(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}
