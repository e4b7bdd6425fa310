//! Just enough raw MQTT to probe readiness and to send packets no well-behaved
//! client library would (the attacker's side in security tests).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Encodes MQTT's variable-length "remaining length".
pub fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn utf8_field(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// An MQTT 3.1.1 CONNECT packet (clean session, keepalive 30 s).
pub fn connect_packet(client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Vec<u8> {
    build_connect(client_id, username, password, None, true)
}

/// The one CONNECT encoder: flags, then the payload fields in the order MQTT 3.1.1 §3.1.3 fixes.
fn build_connect(client_id: &str, username: Option<&str>, password: Option<&[u8]>, will: Option<&Will<'_>>, clean: bool) -> Vec<u8> {
    let mut body = Vec::new();
    utf8_field(b"MQTT", &mut body);
    body.push(4); // protocol level 3.1.1
    let mut flags = if clean { 0x02 } else { 0x00 }; // clean session
    if let Some(will) = will {
        flags |= 0x04 | ((will.qos & 0x03) << 3); // will flag, will QoS
        if will.retain {
            flags |= 0x20;
        }
    }
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    utf8_field(client_id.as_bytes(), &mut body);
    if let Some(will) = will {
        utf8_field(will.topic.as_bytes(), &mut body);
        utf8_field(will.payload, &mut body);
    }
    if let Some(u) = username {
        utf8_field(u.as_bytes(), &mut body);
    }
    if let Some(p) = password {
        utf8_field(p, &mut body);
    }
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// Opens a loopback connection, sends `connect`, and reads the 4-byte CONNACK.
fn connect_and_read_connack(port: u16, connect: &[u8], timeout: Duration) -> std::io::Result<(TcpStream, [u8; 4])> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(connect)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    Ok((stream, connack))
}

/// Connects, sends CONNECT, and returns the CONNACK return code, or an error if the
/// broker does not answer with a CONNACK within `timeout`.
pub fn connack_code(port: u16, client_id: &str, timeout: Duration) -> std::io::Result<u8> {
    connack_code_of(port, &connect_packet(client_id, None, None), timeout)
}

/// Connects with credentials and returns the CONNACK return code (0 = accepted,
/// 5 = not authorised).
pub fn connack_code_with(port: u16, client_id: &str, username: &str, password: &[u8], timeout: Duration) -> std::io::Result<u8> {
    connack_code_of(port, &connect_packet(client_id, Some(username), Some(password)), timeout)
}

fn connack_code_of(port: u16, connect: &[u8], timeout: Duration) -> std::io::Result<u8> {
    let (mut stream, connack) = connect_and_read_connack(port, connect, timeout)?;
    if connack[0] != 0x20 || connack[1] != 0x02 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a CONNACK: {connack:02x?}")));
    }
    // Polite goodbye: DISCONNECT.
    let _ = stream.write_all(&[0xe0, 0x00]);
    Ok(connack[3])
}

/// Connects with `clean session` off (a persistent 3.1.1 session) and returns the
/// open socket, whether the broker had a session for the client id, and the
/// CONNACK return code.
pub fn connect_persistent(port: u16, client_id: &str, username: &str, password: &[u8], timeout: Duration) -> std::io::Result<(TcpStream, bool, u8)> {
    let connect = build_connect(client_id, Some(username), Some(password), None, false);
    let (stream, connack) = connect_and_read_connack(port, &connect, timeout)?;
    if connack[0] != 0x20 || connack[1] != 0x02 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a CONNACK: {connack:02x?}")));
    }
    Ok((stream, connack[2] & 0x01 == 1, connack[3]))
}

/// A last will carried in a CONNECT packet.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// An MQTT 3.1.1 CONNECT packet with a will (clean session, keepalive 30 s).
pub fn connect_packet_with_will(client_id: &str, username: Option<&str>, password: Option<&[u8]>, will: &Will<'_>) -> Vec<u8> {
    build_connect(client_id, username, password, Some(will), true)
}

/// Connects with a will and returns the open socket (after a successful CONNACK),
/// so the caller can drop it without DISCONNECT: the broker then sends the will.
pub fn connect_with_will(port: u16, client_id: &str, username: Option<&str>, will: &Will<'_>, timeout: Duration) -> std::io::Result<TcpStream> {
    let (stream, connack) = connect_and_read_connack(port, &connect_packet_with_will(client_id, username, None, will), timeout)?;
    if connack[0] != 0x20 || connack[1] != 0x02 || connack[3] != 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("connection refused: {connack:02x?}")));
    }
    Ok(stream)
}
