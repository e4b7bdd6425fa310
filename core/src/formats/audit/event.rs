//! What the log records: the plugin's events ([`AuditEvent`]) and the writer's
//! own bookkeeping ([`LogEvent`]). Each becomes a record's `kind` and `facts`.
//!
//! Facts are written straight into the record line as canonical JSON, without
//! building a `serde_json::Value`: the writer must handle hundreds of thousands of
//! records a second. Each variant therefore writes its fields in sorted key order
//! (the canonical order); a test renders every variant and checks the bytes are
//! canonical JSON, so a misordered field cannot slip through.
//!
//! Adding a kind: add a variant, its `kind` string and its `write_facts` arm, and
//! a row in docs/AUDIT.md (a test checks that every kind is documented).
//!
//! Never put plaintext, keys or secrets in facts: hash the material instead.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::hashing::{push_hex, Hash};

/// A short text that is usually a fixed token (a reason, a method), so callers
/// can pass `"bad-signature".into()` without allocating.
pub type Token = Cow<'static, str>;

/// An event the plugin asks to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// `plugin.start`: the plugin loaded. `settings` are the effective options
    /// (never key material).
    PluginStart { version: String, settings: BTreeMap<String, String> },
    /// `plugin.stop`: the plugin is unloading.
    PluginStop { reason: Token },
    /// `policy.loaded`: a policy took effect (at start, reload or push).
    PolicyLoaded { source: Token, policy_sha256: Hash, serial: Option<u64> },
    /// `policy.rejected`: a new policy was refused; the old one stays.
    PolicyRejected { source: Token, reason: String, policy_sha256: Option<Hash> },
    /// `auth.accepted`: a client authenticated (by `method`, e.g. "key").
    AuthAccepted { client: String, username: Option<String>, method: Token },
    /// `auth.refused`: a client's login was refused.
    AuthRefused { client: String, username: Option<String>, reason: Token },
    /// `publish.accepted`: a sealed message passed every check.
    PublishAccepted {
        client: String,
        topic: String,
        sender: String,
        group: String,
        epoch: u64,
        seq: u64,
        /// SHA-256 of the whole envelope (the payload bytes as published).
        envelope_sha256: Hash,
    },
    /// `publish.denied`: a publish was refused; what was known of it is kept.
    PublishDenied {
        client: String,
        topic: String,
        reason: Token,
        sender: Option<String>,
        group: Option<String>,
        epoch: Option<u64>,
        seq: Option<u64>,
        envelope_sha256: Option<Hash>,
    },
    /// `subscribe.denied`: a subscription was refused.
    SubscribeDenied { client: String, filter: String, reason: Token },
    /// `delivery.withheld`: messages were withheld from a subscriber. The first
    /// withholding per client and reason is recorded at once (`count` 1, with its
    /// topic); later ones are counted and recorded when the client disconnects
    /// (or the plugin stops), without a topic.
    DeliveryWithheld { client: String, reason: Token, count: u64, topic: Option<String> },
    /// `client.kicked`: mqseal disconnected a client.
    ClientKicked { client: String, reason: Token },
    /// `epoch.first_seen`: the first message of a group's key epoch.
    EpochFirstSeen { group: String, epoch: u64 },
    /// `identity.accepted`: a device identity was admitted (key exchange).
    IdentityAccepted { device: String, identity_sha256: Hash, client: Option<String> },
    /// `policy.pushed`: a signed policy arrived over MQTT.
    PolicyPushed { policy_sha256: Hash, serial: Option<u64>, client: Option<String> },
    /// `bundle.published`: a device's key bundle was published over MQTT; one
    /// record per group key epoch it carries (group and epoch absent when it
    /// carries none: the device left every group).
    BundlePublished {
        device: String,
        version: u64,
        group: Option<String>,
        epoch: Option<u64>,
        bundle_sha256: Hash,
        client: Option<String>,
    },
    /// `control.cleared`: the authority cleared a retained identity or bundle
    /// (an empty retained publish, after a device was removed).
    ControlCleared { topic: String, client: Option<String> },
    /// `state.rebuilt`: at start, a state file (`replay.json`, `policy-version`)
    /// was not used as found; the state was rebuilt from the audit log.
    /// `reason` is a token of [`crate::broker::state::reason`].
    StateRebuilt { file: Token, reason: Token, detail: String, records_read: u64 },
}

/// Records the writer adds itself; the plugin cannot forge them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogEvent {
    /// `log.opened`: the writer (re)opened the log.
    Opened { origin: String, key: String, checkpoint_every: u64, max_unsealed: u64, software: &'static str },
    /// `log.rotated`: first record of a file after rotation.
    Rotated { previous_file: String, merkle_prefix: Vec<Hash> },
    /// `log.recovered`: a torn last line was cut off on open.
    Recovered { file: String, cut_offset: u64, cut_bytes: u64, last_good_index: Option<u64> },
    /// `log.continued`: first record of a new file after a broken chain; its
    /// `prev` links to the last record that verified (the old head).
    Continued { file: Option<String>, line: Option<u64>, reason: String, merkle_prefix: Vec<Hash> },
    /// `log.closed`: the writer's last record before its final checkpoint.
    Closed { refused: u64, lost: u64 },
    /// `log.outage`: the log could not be written from `start` to `end` (both
    /// RFC 3339 ms, as record times); `held` records decided before or during
    /// it were kept in memory and written late (just before this record), and
    /// `refused` events were refused meanwhile. `error` is the first failure.
    Outage { start: String, end: String, error: String, held: u64, refused: u64 },
}

/// Every kind the plugin can write, for documentation checks and `tail --kind`.
pub const EVENT_KINDS: &[&str] = &[
    "plugin.start",
    "plugin.stop",
    "policy.loaded",
    "policy.rejected",
    "auth.accepted",
    "auth.refused",
    "publish.accepted",
    "publish.denied",
    "subscribe.denied",
    "delivery.withheld",
    "client.kicked",
    "epoch.first_seen",
    "identity.accepted",
    "policy.pushed",
    "bundle.published",
    "control.cleared",
    "state.rebuilt",
];

/// The writer's own kinds.
pub const LOG_KINDS: &[&str] = &["log.opened", "log.rotated", "log.recovered", "log.continued", "log.closed", "log.outage"];

pub(crate) const KIND_OPENED: &str = "log.opened";
pub(crate) const KIND_ROTATED: &str = "log.rotated";
pub(crate) const KIND_RECOVERED: &str = "log.recovered";
pub(crate) const KIND_CONTINUED: &str = "log.continued";
pub(crate) const KIND_CLOSED: &str = "log.closed";
pub(crate) const KIND_OUTAGE: &str = "log.outage";

/// Something that becomes a record's `kind` and `facts`.
pub(crate) trait Recordable {
    fn kind(&self) -> &'static str;
    fn write_facts(&self, w: &mut FactsWriter<'_>);
}

impl AuditEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::PluginStart { .. } => "plugin.start",
            AuditEvent::PluginStop { .. } => "plugin.stop",
            AuditEvent::PolicyLoaded { .. } => "policy.loaded",
            AuditEvent::PolicyRejected { .. } => "policy.rejected",
            AuditEvent::AuthAccepted { .. } => "auth.accepted",
            AuditEvent::AuthRefused { .. } => "auth.refused",
            AuditEvent::PublishAccepted { .. } => "publish.accepted",
            AuditEvent::PublishDenied { .. } => "publish.denied",
            AuditEvent::SubscribeDenied { .. } => "subscribe.denied",
            AuditEvent::DeliveryWithheld { .. } => "delivery.withheld",
            AuditEvent::ClientKicked { .. } => "client.kicked",
            AuditEvent::EpochFirstSeen { .. } => "epoch.first_seen",
            AuditEvent::IdentityAccepted { .. } => "identity.accepted",
            AuditEvent::PolicyPushed { .. } => "policy.pushed",
            AuditEvent::BundlePublished { .. } => "bundle.published",
            AuditEvent::ControlCleared { .. } => "control.cleared",
            AuditEvent::StateRebuilt { .. } => "state.rebuilt",
        }
    }
}

impl Recordable for AuditEvent {
    fn kind(&self) -> &'static str {
        AuditEvent::kind(self)
    }

    // Fields in sorted order, always.
    fn write_facts(&self, w: &mut FactsWriter<'_>) {
        match self {
            AuditEvent::PluginStart { version, settings } => {
                w.map("settings", settings);
                w.str("version", version);
            }
            AuditEvent::PluginStop { reason } => w.str("reason", reason),
            AuditEvent::PolicyLoaded { source, policy_sha256, serial } => {
                w.hash("policy_sha256", policy_sha256);
                w.opt_u64("serial", *serial);
                w.str("source", source);
            }
            AuditEvent::PolicyRejected { source, reason, policy_sha256 } => {
                w.opt_hash("policy_sha256", policy_sha256.as_ref());
                w.str("reason", reason);
                w.str("source", source);
            }
            AuditEvent::AuthAccepted { client, username, method } => {
                w.str("client", client);
                w.str("method", method);
                w.opt_str("username", username.as_deref());
            }
            AuditEvent::AuthRefused { client, username, reason } => {
                w.str("client", client);
                w.str("reason", reason);
                w.opt_str("username", username.as_deref());
            }
            AuditEvent::PublishAccepted { client, topic, sender, group, epoch, seq, envelope_sha256 } => {
                w.str("client", client);
                w.hash("envelope_sha256", envelope_sha256);
                w.u64("epoch", *epoch);
                w.str("group", group);
                w.str("sender", sender);
                w.u64("seq", *seq);
                w.str("topic", topic);
            }
            AuditEvent::PublishDenied { client, topic, reason, sender, group, epoch, seq, envelope_sha256 } => {
                w.str("client", client);
                w.opt_hash("envelope_sha256", envelope_sha256.as_ref());
                w.opt_u64("epoch", *epoch);
                w.opt_str("group", group.as_deref());
                w.str("reason", reason);
                w.opt_str("sender", sender.as_deref());
                w.opt_u64("seq", *seq);
                w.str("topic", topic);
            }
            AuditEvent::SubscribeDenied { client, filter, reason } => {
                w.str("client", client);
                w.str("filter", filter);
                w.str("reason", reason);
            }
            AuditEvent::DeliveryWithheld { client, reason, count, topic } => {
                w.str("client", client);
                w.u64("count", *count);
                w.str("reason", reason);
                w.opt_str("topic", topic.as_deref());
            }
            AuditEvent::ClientKicked { client, reason } => {
                w.str("client", client);
                w.str("reason", reason);
            }
            AuditEvent::EpochFirstSeen { group, epoch } => {
                w.u64("epoch", *epoch);
                w.str("group", group);
            }
            AuditEvent::IdentityAccepted { device, identity_sha256, client } => {
                w.opt_str("client", client.as_deref());
                w.str("device", device);
                w.hash("identity_sha256", identity_sha256);
            }
            AuditEvent::PolicyPushed { policy_sha256, serial, client } => {
                w.opt_str("client", client.as_deref());
                w.hash("policy_sha256", policy_sha256);
                w.opt_u64("serial", *serial);
            }
            AuditEvent::BundlePublished { device, version, group, epoch, bundle_sha256, client } => {
                w.hash("bundle_sha256", bundle_sha256);
                w.opt_str("client", client.as_deref());
                w.str("device", device);
                w.opt_u64("epoch", *epoch);
                w.opt_str("group", group.as_deref());
                w.u64("version", *version);
            }
            AuditEvent::ControlCleared { topic, client } => {
                w.opt_str("client", client.as_deref());
                w.str("topic", topic);
            }
            AuditEvent::StateRebuilt { file, reason, detail, records_read } => {
                w.str("detail", detail);
                w.str("file", file);
                w.str("reason", reason);
                w.u64("records_read", *records_read);
            }
        }
    }
}

impl Recordable for LogEvent {
    fn kind(&self) -> &'static str {
        match self {
            LogEvent::Opened { .. } => KIND_OPENED,
            LogEvent::Rotated { .. } => KIND_ROTATED,
            LogEvent::Recovered { .. } => KIND_RECOVERED,
            LogEvent::Continued { .. } => KIND_CONTINUED,
            LogEvent::Closed { .. } => KIND_CLOSED,
            LogEvent::Outage { .. } => KIND_OUTAGE,
        }
    }

    fn write_facts(&self, w: &mut FactsWriter<'_>) {
        match self {
            LogEvent::Opened { origin, key, checkpoint_every, max_unsealed, software } => {
                w.u64("checkpoint_every", *checkpoint_every);
                w.str("key", key);
                w.u64("max_unsealed", *max_unsealed);
                w.str("origin", origin);
                w.str("software", software);
            }
            LogEvent::Rotated { previous_file, merkle_prefix } => {
                w.hashes("merkle_prefix", merkle_prefix);
                w.str("previous_file", previous_file);
            }
            LogEvent::Recovered { file, cut_offset, cut_bytes, last_good_index } => {
                w.u64("cut_bytes", *cut_bytes);
                w.u64("cut_offset", *cut_offset);
                w.str("file", file);
                w.opt_u64("last_good_index", *last_good_index);
            }
            LogEvent::Continued { file, line, reason, merkle_prefix } => {
                w.opt_str("file", file.as_deref());
                w.opt_u64("line", *line);
                w.hashes("merkle_prefix", merkle_prefix);
                w.str("reason", reason);
            }
            LogEvent::Closed { refused, lost } => {
                w.u64("lost", *lost);
                w.u64("refused", *refused);
            }
            LogEvent::Outage { start, end, error, held, refused } => {
                w.str("end", end);
                w.str("error", error);
                w.u64("held", *held);
                w.u64("refused", *refused);
                w.str("start", start);
            }
        }
    }
}

/// Writes one canonical JSON object of facts into a line buffer. Absent optional
/// facts are left out (never written as `null`).
pub(crate) struct FactsWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last_key: &'static str,
}

impl<'a> FactsWriter<'a> {
    /// Writes `{`; [`FactsWriter::finish`] writes `}`.
    pub(crate) fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        FactsWriter {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last_key: "",
        }
    }

    pub(crate) fn finish(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: &'static str) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.first || key > self.last_key, "facts out of canonical order: {key} after {}", self.last_key);
            self.last_key = key;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Keys are ASCII identifiers: no escaping needed.
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub(crate) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_json_string(self.out, value);
    }

    pub(crate) fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    pub(crate) fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        push_u64(self.out, value);
    }

    pub(crate) fn opt_u64(&mut self, key: &'static str, value: Option<u64>) {
        if let Some(v) = value {
            self.u64(key, v);
        }
    }

    pub(crate) fn hash(&mut self, key: &'static str, value: &Hash) {
        self.key(key);
        self.out.push(b'"');
        push_hex(self.out, value);
        self.out.push(b'"');
    }

    pub(crate) fn opt_hash(&mut self, key: &'static str, value: Option<&Hash>) {
        if let Some(v) = value {
            self.hash(key, v);
        }
    }

    pub(crate) fn hashes(&mut self, key: &'static str, values: &[Hash]) {
        self.key(key);
        self.out.push(b'[');
        for (i, h) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.push(b'"');
            push_hex(self.out, h);
            self.out.push(b'"');
        }
        self.out.push(b']');
    }

    /// A string-to-string map; BTreeMap order is canonical order (by code point).
    pub(crate) fn map(&mut self, key: &'static str, values: &BTreeMap<String, String>) {
        self.key(key);
        self.out.push(b'{');
        for (i, (k, v)) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            push_json_string(self.out, k);
            self.out.push(b':');
            push_json_string(self.out, v);
        }
        self.out.push(b'}');
    }
}

/// Appends a JSON string exactly as canonical JSON spells it: `"` and `\` escaped,
/// control characters as `\b \f \n \r \t` or `\u00XX` (lowercase hex), everything
/// else as raw UTF-8.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends the decimal digits of `n`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::canonical_json;

    pub(crate) fn every_event() -> Vec<AuditEvent> {
        let h = [7u8; 32];
        let mut settings = BTreeMap::new();
        settings.insert("auth".to_string(), "key".to_string());
        settings.insert("z\u{e9}\u{1F600}".to_string(), "quote \" backslash \\ nl \n ctl \u{1}".to_string());
        settings.insert("\u{ff61}".to_string(), "".to_string());
        vec![
            AuditEvent::PluginStart { version: "0.1.0".into(), settings },
            AuditEvent::PluginStop { reason: "shutdown".into() },
            AuditEvent::PolicyLoaded { source: "file".into(), policy_sha256: h, serial: Some(3) },
            AuditEvent::PolicyLoaded { source: "file".into(), policy_sha256: h, serial: None },
            AuditEvent::PolicyRejected { source: "reload".into(), reason: "bad signature".into(), policy_sha256: Some(h) },
            AuditEvent::PolicyRejected { source: "reload".into(), reason: "unreadable".into(), policy_sha256: None },
            AuditEvent::AuthAccepted { client: "c1".into(), username: Some("dev-1".into()), method: "key".into() },
            AuditEvent::AuthAccepted { client: "c1".into(), username: None, method: "defer".into() },
            AuditEvent::AuthRefused { client: "c\"2".into(), username: Some("x".into()), reason: "login-expired".into() },
            AuditEvent::PublishAccepted {
                client: "c1".into(),
                topic: "fleet/a/t\u{e9}l\u{e9}".into(),
                sender: "dev-1".into(),
                group: "fleet".into(),
                epoch: 4,
                seq: u64::MAX,
                envelope_sha256: h,
            },
            AuditEvent::PublishDenied {
                client: "c1".into(),
                topic: "fleet/a".into(),
                reason: "replay".into(),
                sender: Some("dev-1".into()),
                group: Some("fleet".into()),
                epoch: Some(0),
                seq: Some(17),
                envelope_sha256: Some(h),
            },
            AuditEvent::PublishDenied {
                client: "c1".into(),
                topic: "fleet/a".into(),
                reason: "malformed-cbor".into(),
                sender: None,
                group: None,
                epoch: None,
                seq: None,
                envelope_sha256: None,
            },
            AuditEvent::SubscribeDenied { client: "c1".into(), filter: "#".into(), reason: "not-a-reader".into() },
            AuditEvent::ClientKicked { client: "c1".into(), reason: "flood".into() },
            AuditEvent::EpochFirstSeen { group: "fleet".into(), epoch: 9 },
            AuditEvent::IdentityAccepted { device: "dev-1".into(), identity_sha256: h, client: Some("c1".into()) },
            AuditEvent::PolicyPushed { policy_sha256: h, serial: Some(5), client: None },
            AuditEvent::BundlePublished {
                device: "dev-1".into(),
                version: 7,
                group: Some("fleet".into()),
                epoch: Some(2),
                bundle_sha256: h,
                client: Some("admin".into()),
            },
            AuditEvent::BundlePublished { device: "dev-1".into(), version: 8, group: None, epoch: None, bundle_sha256: h, client: None },
            AuditEvent::ControlCleared { topic: "$mqseal/bundle/dev-1".into(), client: Some("admin".into()) },
            AuditEvent::StateRebuilt {
                file: "replay.json".into(),
                reason: "snapshot-bad-signature".into(),
                detail: "state/replay.json: not signed by the broker key".into(),
                records_read: 1234,
            },
            AuditEvent::DeliveryWithheld { client: "c".into(), reason: "not-a-reader".into(), count: 1, topic: Some("a/b".into()) },
            AuditEvent::DeliveryWithheld { client: "c".into(), reason: "not-a-reader".into(), count: 41, topic: None },
        ]
    }

    pub(crate) fn every_log_event() -> Vec<LogEvent> {
        vec![
            LogEvent::Opened {
                origin: "example.org/log".into(),
                key: "AAAA".into(),
                checkpoint_every: 1000,
                max_unsealed: 5096,
                software: "mqseal-core 0.1.0",
            },
            LogEvent::Rotated { previous_file: "audit.jsonl.1".into(), merkle_prefix: vec![[1; 32], [2; 32]] },
            LogEvent::Rotated { previous_file: "audit.jsonl.1".into(), merkle_prefix: vec![] },
            LogEvent::Recovered { file: "audit.jsonl".into(), cut_offset: 10, cut_bytes: 3, last_good_index: Some(4) },
            LogEvent::Recovered { file: "audit.jsonl".into(), cut_offset: 0, cut_bytes: 3, last_good_index: None },
            LogEvent::Continued {
                file: Some("audit.jsonl.2".into()),
                line: Some(7),
                reason: "prev mismatch".into(),
                merkle_prefix: vec![[4; 32]],
            },
            LogEvent::Continued { file: None, line: None, reason: "files missing".into(), merkle_prefix: vec![] },
            LogEvent::Closed { refused: 2, lost: 0 },
            LogEvent::Outage {
                start: "2026-12-01T10:00:00.000Z".into(),
                end: "2026-12-01T10:00:05.250Z".into(),
                error: "write audit.jsonl: No space left on device (os error 28)".into(),
                held: 12,
                refused: 40,
            },
        ]
    }

    fn render(r: &dyn Recordable) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = FactsWriter::begin(&mut out);
        r.write_facts(&mut w);
        w.finish();
        out
    }

    #[test]
    fn every_variant_writes_canonical_json() {
        for e in every_event() {
            let bytes = render(&e);
            assert!(canonical_json::is_canonical(&bytes), "{}: {}", e.kind(), String::from_utf8_lossy(&bytes));
            assert!(EVENT_KINDS.contains(&e.kind()));
        }
        for e in every_log_event() {
            let bytes = render(&e);
            assert!(canonical_json::is_canonical(&bytes), "{}: {}", e.kind(), String::from_utf8_lossy(&bytes));
            assert!(LOG_KINDS.contains(&e.kind()));
        }
    }

    #[test]
    fn optional_facts_are_left_out() {
        let e = AuditEvent::PublishDenied {
            client: "c".into(),
            topic: "t".into(),
            reason: "r".into(),
            sender: None,
            group: None,
            epoch: None,
            seq: None,
            envelope_sha256: None,
        };
        assert_eq!(String::from_utf8(render(&e)).unwrap(), r#"{"client":"c","reason":"r","topic":"t"}"#);
    }

    #[test]
    fn string_escaping_matches_canonical_json_for_every_byte() {
        let mut all = String::new();
        for c in (0u32..0x300).chain([0x2028, 0x2029, 0xfeff, 0x1F600]) {
            if let Some(ch) = char::from_u32(c) {
                all.push(ch);
            }
        }
        let mut out = Vec::new();
        push_json_string(&mut out, &all);
        let expected = canonical_json::value_to_vec(&serde_json::Value::String(all)).unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn decimal_digits() {
        for n in [0u64, 9, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
