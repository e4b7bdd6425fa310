//! The timed phase: P publisher threads and S subscriber threads speaking raw
//! MQTT 3.1.1 over loopback TCP.
//!
//! Every PUBLISH packet is encoded before the clock starts, so the clients do no
//! work per message beyond one `write` (publishers) or one parse and one hash
//! look-up (subscribers). Latency is publish-to-delivery: each publisher stores
//! its send time in a shared table slot before writing; each subscriber finds the
//! slot from the payload bytes (a hash map built before the run), which works
//! alike for plain payloads and for sealed envelopes.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::mqtt_wire::remaining_length;

/// How long a subscriber keeps waiting after the last message once every
/// publisher is done (messages that never come were dropped by the broker).
const IDLE_AFTER_DONE: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What one configuration's clients send.
pub struct Workload {
    pub port: u16,
    pub qos: u8,
    /// Total messages per second over all publishers; None: as fast as possible
    /// (at QoS 1, as fast as the in-flight window lets each publisher go).
    pub rate: Option<f64>,
    /// QoS 1: how many PUBLISHes a publisher may have unacknowledged, like a real
    /// client's in-flight window (Mosquitto's own default is 20).
    pub inflight: usize,
    /// Subscribers ask the kernel to wake them only once this many bytes are
    /// buffered (SO_RCVLOWAT, with a 1 ms read timeout for the rest); None: on
    /// every packet. See [`set_receive_low_water_mark`].
    pub subscriber_batch_bytes: Option<usize>,
    /// (MQTT username, topic, payloads) per publisher.
    pub publishers: Vec<(String, String, Vec<Vec<u8>>)>,
    /// (MQTT username, topic filter) per subscriber.
    pub subscribers: Vec<(String, String)>,
    /// Bytes at the start of each published payload that its delivered copy
    /// lacks: the verify-and-republish agent strips the 64-byte signature.
    pub delivered_offset: usize,
}

/// What the timed phase measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub expected: u64,
    pub delivered: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// Publish-to-delivery latencies, sorted, in microseconds.
    pub latencies_us: Vec<f64>,
}

fn payload_key(payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// CONNECT with keepalive 0 (no PINGREQ needed however long a run takes).
fn connect(port: u16, client_id: &str, username: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut body = Vec::new();
    for field in [&b"MQTT"[..]] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field);
    }
    body.push(4);
    body.push(0x82); // username, clean session
    body.extend_from_slice(&0u16.to_be_bytes());
    for field in [client_id.as_bytes(), username.as_bytes()] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field);
    }
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    stream.write_all(&packet)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).context("waiting for CONNACK")?;
    if connack[0] != 0x20 || connack[3] != 0 {
        bail!("{client_id} (user {username}) refused: CONNACK {connack:02x?}");
    }
    Ok(stream)
}

fn publish_packet(topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut packet = vec![0x30 | (qos << 1)];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// Reads one MQTT packet: (first byte, body).
fn read_packet(reader: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    reader.read_exact(&mut first)?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let mut b = [0u8; 1];
        reader.read_exact(&mut b)?;
        len |= ((b[0] & 0x7f) as usize) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad remaining length"));
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok((first[0], body))
}

fn subscribe(stream: &mut TcpStream, filter: &str, qos: u8) -> Result<()> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    let mut packet = vec![0x82];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    stream.write_all(&packet)?;
    let (kind, body) = read_packet(stream).context("waiting for SUBACK")?;
    if kind != 0x90 || body.len() != 3 || body[2] >= 0x80 {
        bail!("subscription to {filter} refused: {kind:02x} {body:02x?}");
    }
    Ok(())
}

struct Shared {
    base: Instant,
    /// send time (ns since base, +1 so 0 means "not sent") per [publisher][index]
    sent: Vec<Vec<AtomicU64>>,
    index: HashMap<u64, (u32, u32)>,
    publishers_done: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }
}

/// Runs the workload: subscribers first (SUBACKed), then publishers.
pub fn run(work: Workload) -> Result<LoadResult> {
    let qos = work.qos;
    let mut index = HashMap::new();
    for (p, (_, _, payloads)) in work.publishers.iter().enumerate() {
        for (i, payload) in payloads.iter().enumerate() {
            let delivered = payload.get(work.delivered_offset..).ok_or_else(|| anyhow!("payload shorter than delivered_offset"))?;
            if index.insert(payload_key(delivered), (p as u32, i as u32)).is_some() {
                bail!("two payloads hash alike (publisher {p}, message {i}): payloads must be unique");
            }
        }
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent: work.publishers.iter().map(|(_, _, ps)| ps.iter().map(|_| AtomicU64::new(0)).collect()).collect(),
        index,
        publishers_done: AtomicBool::new(false),
    });
    let expected_per_sub: u64 = work.publishers.iter().map(|(_, _, ps)| ps.len() as u64).sum();

    let mut sub_threads = Vec::new();
    for (s, (user, filter)) in work.subscribers.iter().enumerate() {
        let mut stream = connect(work.port, &format!("bench-sub-{s}"), user)?;
        subscribe(&mut stream, filter, qos)?;
        match work.subscriber_batch_bytes {
            Some(bytes) => {
                set_receive_low_water_mark(&stream, bytes)?;
                stream.set_read_timeout(Some(Duration::from_millis(1)))?;
            }
            None => stream.set_read_timeout(Some(Duration::from_millis(200)))?,
        }
        let shared = shared.clone();
        sub_threads.push(std::thread::spawn(move || subscriber(stream, shared, qos, expected_per_sub)));
    }

    // Encode every packet before the clock starts.
    let mut pub_streams = Vec::new();
    for (p, (user, topic, payloads)) in work.publishers.iter().enumerate() {
        let stream = connect(work.port, &format!("bench-pub-{p}"), user)?;
        let packets: Vec<Vec<u8>> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| publish_packet(topic, payload, qos, (i % 65535) as u16 + 1))
            .collect();
        pub_streams.push((stream, packets));
    }
    let per_pub_rate = work.rate.map(|r| r / work.publishers.len().max(1) as f64);
    let inflight = work.inflight.max(1) as u64;
    // Batched reads for PUBACKs too (4 bytes each): half the window per wake-up.
    let ack_batch_bytes = work.subscriber_batch_bytes.map(|_| 4 * (work.inflight / 2).max(1));
    let start_ns = shared.now_ns();
    let mut pub_threads = Vec::new();
    for (p, (stream, packets)) in pub_streams.into_iter().enumerate() {
        let shared = shared.clone();
        pub_threads.push(std::thread::spawn(move || publisher(p, stream, packets, shared, qos, per_pub_rate, inflight, ack_batch_bytes)));
    }
    for t in pub_threads {
        t.join().map_err(|_| anyhow!("publisher thread panicked"))??;
    }
    shared.publishers_done.store(true, Ordering::Release);
    let mut delivered = 0;
    let mut last_ns = start_ns;
    let mut latencies_us = Vec::new();
    for t in sub_threads {
        let (count, last, lat) = t.join().map_err(|_| anyhow!("subscriber thread panicked"))??;
        delivered += count;
        last_ns = last_ns.max(last);
        latencies_us.extend(lat);
    }
    latencies_us.sort_by(|a, b| a.total_cmp(b));
    Ok(LoadResult {
        expected: expected_per_sub * work.subscribers.len() as u64,
        delivered,
        elapsed: Duration::from_nanos(last_ns.saturating_sub(start_ns)),
        latencies_us,
    })
}

/// On loopback the broker's `write` runs the subscriber's whole TCP receive
/// path, including waking the subscriber thread when it sleeps in `read`: an
/// inter-processor interrupt to an idle vCPU, which perf shows costing the
/// broker 3 µs per message when it is fast (the subscriber is often awake) and
/// 7 µs when it is slow (the subscriber always sleeps), so it penalises the
/// slower configuration. A subscriber on another host costs the broker no
/// wake-up at all. With SO_RCVLOWAT the kernel wakes the subscriber once per
/// batch instead; the broker still pays for the receive path itself.
fn set_receive_low_water_mark(stream: &TcpStream, bytes: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the stream's lifetime; the option value is a
    // c_int that lives across the call, and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("setsockopt(SO_RCVLOWAT, {bytes}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// PUBACKs received by one QoS 1 publisher, for its in-flight window.
#[derive(Default)]
struct Acks {
    count: Mutex<u64>,
    arrived: Condvar,
}

impl Acks {
    fn add_one(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.arrived.notify_one();
    }

    /// Waits until at least `n` PUBACKs have arrived (or `IO_TIMEOUT` passes without one).
    fn wait_for(&self, n: u64) -> Result<()> {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count < n {
            let (next, timeout) = self.arrived.wait_timeout(count, IO_TIMEOUT).unwrap_or_else(|p| p.into_inner());
            if timeout.timed_out() && *next < n {
                bail!("no PUBACK for {IO_TIMEOUT:?} ({} of {n} acknowledged)", *next);
            }
            count = next;
        }
        Ok(())
    }
}

fn publisher(
    p: usize,
    mut stream: TcpStream,
    packets: Vec<Vec<u8>>,
    shared: Arc<Shared>,
    qos: u8,
    rate: Option<f64>,
    inflight: u64,
    ack_batch_bytes: Option<usize>,
) -> Result<()> {
    let acks = Arc::new(Acks::default());
    let total = packets.len() as u64;
    let ack_reader = if qos > 0 {
        let ack_stream = stream.try_clone()?;
        match ack_batch_bytes {
            Some(bytes) => {
                set_receive_low_water_mark(&ack_stream, bytes)?;
                ack_stream.set_read_timeout(Some(Duration::from_millis(1)))?;
            }
            None => ack_stream.set_read_timeout(Some(Duration::from_millis(200)))?,
        }
        let mut reader = PacketReader { stream: ack_stream, buf: Vec::with_capacity(1 << 12), start: 0 };
        let acks = acks.clone();
        Some(std::thread::spawn(move || -> Result<()> {
            let mut received = 0;
            let mut last_progress = Instant::now();
            while received < total {
                match reader.next() {
                    Ok((0x40, _)) => {
                        received += 1;
                        last_progress = Instant::now();
                        acks.add_one();
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        if last_progress.elapsed() > IO_TIMEOUT {
                            bail!("no PUBACK for {IO_TIMEOUT:?} ({received} of {total})");
                        }
                    }
                    Err(e) => return Err(e).context("waiting for PUBACK"),
                }
            }
            Ok(())
        }))
    } else {
        None
    };
    let started = Instant::now();
    for (i, packet) in packets.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        if qos > 0 && i as u64 >= inflight {
            acks.wait_for(i as u64 + 1 - inflight).with_context(|| format!("publisher {p}"))?;
        }
        shared.sent[p][i].store(shared.now_ns(), Ordering::Release);
        stream.write_all(packet).with_context(|| format!("publisher {p}: write message {i}"))?;
    }
    if let Some(reader) = ack_reader {
        reader.join().map_err(|_| anyhow!("PUBACK reader panicked"))??;
    }
    // A clean DISCONNECT after all acks (QoS 1) or all writes (QoS 0) loses nothing.
    let _ = stream.write_all(&[0xe0, 0x00]);
    Ok(())
}

type SubResult = (u64, u64, Vec<f64>);

/// Reads whole MQTT packets from a socket with a read timeout: bytes already
/// received stay in the buffer when a read times out, so a timeout in the middle
/// of a packet loses nothing (unlike `read_exact`).
struct PacketReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl PacketReader {
    /// The next complete packet: (first byte, body), or the read error (timeouts included).
    fn next(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((first, body_at, len)) = self.complete_packet()? {
                let body = self.buf[body_at..body_at + len].to_vec();
                self.start = body_at + len;
                return Ok((first, body));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 1 << 16];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "broker closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// (first byte, body offset, body length) if a whole packet is buffered.
    fn complete_packet(&self) -> std::io::Result<Option<(u8, usize, usize)>> {
        let data = &self.buf[self.start..];
        let Some(&first) = data.first() else { return Ok(None) };
        let mut len = 0usize;
        for (k, &b) in data[1..].iter().enumerate().take(4) {
            len |= ((b & 0x7f) as usize) << (7 * k);
            if b & 0x80 == 0 {
                let body_at = self.start + 2 + k;
                return Ok((self.buf.len() >= body_at + len).then_some((first, body_at, len)));
            }
            if k == 3 {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad remaining length"));
            }
        }
        Ok(None)
    }
}

fn subscriber(stream: TcpStream, shared: Arc<Shared>, qos: u8, expected: u64) -> Result<SubResult> {
    let mut writer = stream.try_clone()?;
    let mut reader = PacketReader { stream, buf: Vec::with_capacity(1 << 17), start: 0 };
    let mut count = 0u64;
    let mut last_ns = 0u64;
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut last_progress = Instant::now();
    while count < expected {
        match reader.next() {
            Ok((kind, body)) if kind & 0xf0 == 0x30 => {
                let now = shared.now_ns();
                let packet_qos = (kind >> 1) & 0x03;
                if body.len() < 2 {
                    bail!("short PUBLISH");
                }
                let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                let mut at = 2 + topic_len;
                if packet_qos > 0 {
                    let id = body.get(at..at + 2).ok_or_else(|| anyhow!("short PUBLISH"))?;
                    writer.write_all(&[0x40, 0x02, id[0], id[1]])?;
                    at += 2;
                }
                let payload = body.get(at..).ok_or_else(|| anyhow!("short PUBLISH"))?;
                let _ = qos;
                if let Some(&(p, i)) = shared.index.get(&payload_key(payload)) {
                    let sent = shared.sent[p as usize][i as usize].load(Ordering::Acquire);
                    if sent != 0 {
                        latencies.push(now.saturating_sub(sent) as f64 / 1000.0);
                    }
                    count += 1;
                    last_ns = now;
                    last_progress = Instant::now();
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if shared.publishers_done.load(Ordering::Acquire) && last_progress.elapsed() > IDLE_AFTER_DONE {
                    break;
                }
                if last_progress.elapsed() > Duration::from_secs(60) {
                    bail!("subscriber: no message for 60 s ({count} of {expected} received)");
                }
            }
            Err(e) => return Err(e).context("subscriber read"),
        }
    }
    let _ = writer.write_all(&[0xe0, 0x00]);
    Ok((count, last_ns, latencies))
}
