//! One record: its line (canonical JSON) and how it is checked when read back.
//!
//! ```text
//! {"facts":{...},"index":N,"kind":"K","prev":"<64 hex>","time":"<RFC 3339 ms Z>","v":1}
//! ```
//! Keys in this (sorted) order and nothing else; the record hash covers the line's
//! exact bytes, so the line must be the canonical JSON of its own value.

use serde_json::{Map, Value};

use super::event::{push_json_string, push_u64, FactsWriter, Recordable};
use super::hashing::{hash_from_hex, push_hex, record_hash, Hash};
use super::timestamp::is_valid_timestamp;
use crate::formats::canonical_json;

/// The record format version (`"v"`).
pub const FORMAT_VERSION: u64 = 1;

/// The longest line a reader accepts. Records the writer makes are far shorter
/// (a 64 KiB topic is the largest field); the cap keeps a damaged or hostile
/// file from exhausting memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Appends one record line (without the newline) to `out` and returns its hash.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    index: u64,
    time: &[u8],
    event: &dyn Recordable,
    prev: &Hash,
) -> Hash {
    let start = out.len();
    out.extend_from_slice(b"{\"facts\":");
    let mut facts = FactsWriter::begin(out);
    event.write_facts(&mut facts);
    facts.finish();
    out.extend_from_slice(b",\"index\":");
    push_u64(out, index);
    out.extend_from_slice(b",\"kind\":");
    push_json_string(out, event.kind());
    out.extend_from_slice(b",\"prev\":\"");
    push_hex(out, prev);
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(time);
    out.extend_from_slice(b"\",\"v\":1}");
    record_hash(&out[start..])
}

/// A record read back from a line, with the hash of that line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub index: u64,
    pub time: String,
    pub kind: String,
    pub facts: Map<String, Value>,
    pub prev: Hash,
    /// `SHA-256("mqseal-audit-v1 record\n" || line)`.
    pub hash: Hash,
}

impl Record {
    /// A string fact, if present.
    pub fn fact_str(&self, name: &str) -> Option<&str> {
        self.facts.get(name).and_then(Value::as_str)
    }

    /// An unsigned integer fact, if present.
    pub fn fact_u64(&self, name: &str) -> Option<u64> {
        self.facts.get(name).and_then(Value::as_u64)
    }

    /// A list of hashes (as `merkle_prefix` holds), if present and well formed.
    pub fn fact_hashes(&self, name: &str) -> Option<Vec<Hash>> {
        let items = self.facts.get(name)?.as_array()?;
        items.iter().map(|v| v.as_str().and_then(hash_from_hex)).collect()
    }
}

/// Why a line is not a valid record. The texts name the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("line is {0} bytes, longer than the {MAX_LINE_BYTES}-byte limit")]
    TooLong(usize),
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not in canonical JSON form (sorted keys, no spaces, integers only, no duplicate keys)")]
    NotCanonical,
    #[error("not a JSON object")]
    NotObject,
    #[error("field {0:?} is missing")]
    Missing(&'static str),
    #[error("unexpected field {0:?}")]
    Unexpected(String),
    #[error("field {field:?}: {problem}")]
    Field { field: &'static str, problem: String },
}

fn field(field: &'static str, problem: impl Into<String>) -> RecordError {
    RecordError::Field { field, problem: problem.into() }
}

/// Kind names: dotted lowercase words, e.g. `publish.denied`, `epoch.first_seen`.
pub fn is_valid_kind(kind: &str) -> bool {
    let mut parts = kind.split('.');
    let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if ok(a) && ok(b))
}

/// Parses and checks one line (without its newline).
pub fn parse_record(line: &[u8]) -> Result<Record, RecordError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(RecordError::TooLong(line.len()));
    }
    if std::str::from_utf8(line).is_err() {
        return Err(RecordError::NotUtf8);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| RecordError::NotJson(e.to_string()))?;
    match canonical_json::value_to_vec(&value) {
        Ok(bytes) if bytes == line => {}
        _ => return Err(RecordError::NotCanonical),
    }
    let Value::Object(mut map) = value else { return Err(RecordError::NotObject) };
    for key in map.keys() {
        if !["facts", "index", "kind", "prev", "time", "v"].contains(&key.as_str()) {
            return Err(RecordError::Unexpected(key.clone()));
        }
    }
    let mut take = |name: &'static str| map.remove(name).ok_or(RecordError::Missing(name));
    let v = take("v")?;
    if v.as_u64() != Some(FORMAT_VERSION) {
        return Err(field("v", format!("{v} is not the supported format version {FORMAT_VERSION}")));
    }
    let index = take("index")?.as_u64().ok_or_else(|| field("index", "not an unsigned integer"))?;
    let time = match take("time")? {
        Value::String(s) if is_valid_timestamp(&s) => s,
        other => return Err(field("time", format!("{other} is not an RFC 3339 UTC time like 2024-05-01T12:34:56.789Z"))),
    };
    let kind = match take("kind")? {
        Value::String(s) if is_valid_kind(&s) => s,
        other => return Err(field("kind", format!("{other} is not a kind like \"publish.denied\""))),
    };
    let prev = match take("prev")? {
        Value::String(s) => hash_from_hex(&s).ok_or_else(|| field("prev", "not 64 lowercase hex digits"))?,
        _ => return Err(field("prev", "not a string")),
    };
    let facts = match take("facts")? {
        Value::Object(m) => m,
        _ => return Err(field("facts", "not an object")),
    };
    Ok(Record { index, time, kind, facts, prev, hash: record_hash(line) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::audit::event::tests::{every_event, every_log_event};

    fn encode(index: u64, event: &dyn Recordable, prev: &Hash) -> (Vec<u8>, Hash) {
        let mut out = Vec::new();
        let h = encode_record(&mut out, index, b"2024-05-01T12:34:56.789Z", event, prev);
        (out, h)
    }

    #[test]
    fn every_event_round_trips() {
        let prev = [9u8; 32];
        for (i, e) in every_event().iter().enumerate() {
            let (line, h) = encode(i as u64, e, &prev);
            let r = parse_record(&line).unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&line)));
            assert_eq!((r.index, r.kind.as_str(), r.prev, r.hash), (i as u64, e.kind(), prev, h));
        }
        for e in every_log_event() {
            let (line, _) = encode(0, &e, &prev);
            parse_record(&line).unwrap();
        }
    }

    #[test]
    fn exact_layout() {
        let e = AuditEventForTest::client_kicked();
        let (line, h) = encode(3, &e, &[0u8; 32]);
        let expected = format!(
            "{{\"facts\":{{\"client\":\"c1\",\"reason\":\"flood\"}},\"index\":3,\"kind\":\"client.kicked\",\"prev\":\"{}\",\"time\":\"2024-05-01T12:34:56.789Z\",\"v\":1}}",
            "0".repeat(64)
        );
        assert_eq!(String::from_utf8(line.clone()).unwrap(), expected);
        assert_eq!(h, record_hash(expected.as_bytes()));
    }

    struct AuditEventForTest;
    impl AuditEventForTest {
        fn client_kicked() -> crate::formats::audit::AuditEvent {
            crate::formats::audit::AuditEvent::ClientKicked { client: "c1".into(), reason: "flood".into() }
        }
    }

    #[test]
    fn refuses_malformed_lines_naming_the_field() {
        let (good, _) = encode(1, &AuditEventForTest::client_kicked(), &[0u8; 32]);
        let good = String::from_utf8(good).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (good.replace("{\"facts\"", "{ \"facts\""), "canonical"),
            (good.replace("\"v\":1", "\"v\":2"), "\"v\""),
            (good.replace("\"index\":1", "\"index\":-1"), "\"index\""),
            (good.replace("\"index\":1", "\"index\":1.5"), "canonical"),
            (good.replace("56.789Z", "56Z"), "\"time\""),
            (good.replace("client.kicked", "Client.Kicked"), "\"kind\""),
            (good.replace(&"0".repeat(64), &"0".repeat(63)), "\"prev\""),
            (good.replace(",\"v\":1}", ",\"v\":1,\"x\":1}"), "unexpected field \"x\""),
            (good.replace("\"index\":1,", ""), "\"index\" is missing"),
            (good.replace("\"facts\":{\"client\":\"c1\",\"reason\":\"flood\"}", "\"facts\":[]"), "\"facts\""),
            ("[1]".to_string(), "not a JSON object"),
            ("{\"a\":".to_string(), "not JSON"),
            (good.replace("\"index\":1", "\"index\":1,\"index\":1"), "canonical"),
        ];
        for (line, expect) in cases {
            let err = parse_record(line.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expect), "{line}\n  gave {err}, expected {expect}");
        }
        assert_eq!(parse_record(b"\xff").unwrap_err(), RecordError::NotUtf8);
    }

    #[test]
    fn kind_syntax() {
        for ok in ["publish.denied", "epoch.first_seen", "log.v2"] {
            assert!(is_valid_kind(ok), "{ok}");
        }
        for bad in ["publish", "a.b.c", ".x", "x.", "Publish.x", "a-b.c"] {
            assert!(!is_valid_kind(bad), "{bad}");
        }
    }
}
