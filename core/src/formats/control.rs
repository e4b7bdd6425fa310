//! mqseal's control topics: key exchange and policy updates through the broker.
//!
//! Everything under `$mqseal/` belongs to mqseal; the plugin refuses every
//! other use of the prefix. Three kinds of topic, all carrying documents signed
//! by the realm's authority (see `docs/POLICY.md`, "Over MQTT"):
//!
//! | topic | payload | who may publish | who may read |
//! |---|---|---|---|
//! | `$mqseal/identity/ID` | identity certificate of device ID | the authority | any client |
//! | `$mqseal/policy` | the signed policy | the authority | the authority and every device of the policy |
//! | `$mqseal/bundle/ID` | device ID's key bundle | the authority | device ID only |
//!
//! The authority logs in with the MQTT username [`AUTHORITY_USERNAME`] (with
//! `plugin_opt_auth key`, its login token is checked against the authority's
//! public key). All three are published retained, so a client that subscribes
//! gets the current document at once. An empty retained payload clears an
//! identity or bundle topic (after a device was removed); the policy topic can
//! only be replaced by a newer policy.
//!
//! Documents are checked twice: by the plugin before it lets them in, and by
//! every receiver against its own copy of the authority's key, so a client
//! never has to trust the broker.

use serde::{Deserialize, Serialize};

use crate::formats::identity::{Identity, IdentityError};
use crate::formats::ids::validate_id;
use crate::formats::signed_doc::{self, AuthorityPublicKey, AuthoritySigningKey, SignedDocError};

/// The prefix of every control topic.
pub const PREFIX: &str = "$mqseal/";
/// Retained identity certificates: `$mqseal/identity/ID`.
pub const IDENTITY_PREFIX: &str = "$mqseal/identity/";
/// The retained signed policy.
pub const POLICY_TOPIC: &str = "$mqseal/policy";
/// Retained key bundles: `$mqseal/bundle/ID`.
pub const BUNDLE_PREFIX: &str = "$mqseal/bundle/";
/// The MQTT username the realm's authority logs in with. No device may have it:
/// `authority` is a reserved device id and a reserved username.
pub const AUTHORITY_USERNAME: &str = "authority";

/// The `format` of identity certificates.
pub const IDENTITY_CERT_FORMAT: &str = "mqseal-identity-cert-v1";

/// A control topic, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlTopic<'a> {
    Identity(&'a str),
    Policy,
    Bundle(&'a str),
}

impl<'a> ControlTopic<'a> {
    /// Parses a topic name under [`PREFIX`]; None for anything else under it
    /// (unknown kinds, invalid device ids, extra levels).
    pub fn parse(topic: &'a str) -> Option<ControlTopic<'a>> {
        if topic == POLICY_TOPIC {
            return Some(ControlTopic::Policy);
        }
        let device = |id: &'a str| validate_id("device", id).is_ok().then_some(id);
        if let Some(id) = topic.strip_prefix(IDENTITY_PREFIX) {
            return device(id).map(ControlTopic::Identity);
        }
        if let Some(id) = topic.strip_prefix(BUNDLE_PREFIX) {
            return device(id).map(ControlTopic::Bundle);
        }
        None
    }

    /// The topic name.
    pub fn topic(self) -> String {
        match self {
            ControlTopic::Identity(id) => format!("{IDENTITY_PREFIX}{id}"),
            ControlTopic::Policy => POLICY_TOPIC.to_string(),
            ControlTopic::Bundle(id) => format!("{BUNDLE_PREFIX}{id}"),
        }
    }
}

/// Who is asking to read control topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader<'a> {
    Authority,
    /// A device of the current policy, by id.
    Device(&'a str),
    /// Any other client.
    Other,
}

/// May `reader` receive messages on `topic`?
pub fn may_read(reader: Reader<'_>, topic: ControlTopic<'_>) -> bool {
    match (topic, reader) {
        (ControlTopic::Identity(_), _) => true,
        (ControlTopic::Policy, Reader::Authority | Reader::Device(_)) => true,
        (ControlTopic::Policy, Reader::Other) => false,
        (ControlTopic::Bundle(id), Reader::Device(me)) => id == me,
        (ControlTopic::Bundle(_), _) => false,
    }
}

/// May `reader` subscribe to `filter` (a filter under [`PREFIX`])? Only these
/// shapes are allowed: `$mqseal/identity/+`, `$mqseal/identity/#`,
/// `$mqseal/identity/ID`, `$mqseal/policy` and the reader's own
/// `$mqseal/bundle/ID`. Wider filters (`$mqseal/#`, `$mqseal/bundle/+`) are
/// refused outright rather than filtered per message, so the rule is visible
/// in the SUBACK.
pub fn may_subscribe(reader: Reader<'_>, filter: &str) -> bool {
    if filter == "$mqseal/identity/+" || filter == "$mqseal/identity/#" {
        return true;
    }
    match ControlTopic::parse(filter) {
        Some(topic) => may_read(reader, topic),
        None => false,
    }
}

/// Why a control document was refused. The tokens are stable (logs, audit records).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Document(#[from] SignedDocError),
    #[error("{origin}: not a valid identity certificate: {detail}")]
    Syntax { origin: String, detail: String },
    #[error("{origin}: {source}")]
    Identity { origin: String, source: IdentityError },
}

impl ControlError {
    pub fn reason(&self) -> &'static str {
        match self {
            ControlError::Document(e) => e.reason(),
            ControlError::Syntax { .. } | ControlError::Identity { .. } => "identity-malformed",
        }
    }
}

/// A device's public identity as the authority vouches for it: its keys (the
/// `ID.pub` content) and the MQTT username it logs in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityCert {
    pub identity: Identity,
    pub username: String,
    /// Unix seconds when the authority signed it.
    pub issued_at: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityCertJson {
    identity: serde_json::Value,
    issued_at: u64,
    username: String,
}

impl IdentityCert {
    /// Signs the certificate: returns the document bytes (canonical JSON + `\n`).
    pub fn sign(&self, key: &AuthoritySigningKey) -> Result<Vec<u8>, SignedDocError> {
        let identity = serde_json::from_slice(&self.identity.to_json())
            .map_err(|e| SignedDocError::Serialize(e.to_string()))?;
        let body = IdentityCertJson { identity, issued_at: self.issued_at, username: self.username.clone() };
        signed_doc::sign_document(IDENTITY_CERT_FORMAT, &body, key)
    }

    /// Verifies a certificate against the trusted authority and parses it.
    pub fn from_signed(bytes: &[u8], authority: &AuthorityPublicKey, origin: &str) -> Result<IdentityCert, ControlError> {
        let body = signed_doc::verify_document(bytes, IDENTITY_CERT_FORMAT, authority, origin)?;
        let raw: IdentityCertJson = serde_json::from_slice(body)
            .map_err(|e| ControlError::Syntax { origin: origin.into(), detail: e.to_string() })?;
        // The inner identity is re-encoded canonically by the outer document
        // already (the body is canonical), so its bytes are exactly ID.pub's.
        let inner = crate::formats::canonical_json::to_vec(&raw.identity)
            .map_err(|e| ControlError::Syntax { origin: origin.into(), detail: e.to_string() })?;
        let identity = Identity::from_json(&inner, &format!("{origin}: body.identity"))
            .map_err(|source| ControlError::Identity { origin: origin.into(), source })?;
        crate::formats::policy::model::validate_username(&raw.username)
            .map_err(|d| ControlError::Syntax { origin: origin.into(), detail: format!("body.username: {d}") })?;
        Ok(IdentityCert { identity, username: raw.username, issued_at: raw.issued_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::keys::{KxSecret, SignAlg, SigningKey};

    fn cert() -> IdentityCert {
        let identity = Identity {
            id: "1111".into(),
            sign: SigningKey::generate(SignAlg::Ed25519).verifying_key(),
            kx: KxSecret::generate().public(),
        };
        IdentityCert { identity, username: "1111".into(), issued_at: 1_800_000_000 }
    }

    #[test]
    fn topics_parse_strictly() {
        assert_eq!(ControlTopic::parse("$mqseal/policy"), Some(ControlTopic::Policy));
        assert_eq!(ControlTopic::parse("$mqseal/identity/1111"), Some(ControlTopic::Identity("1111")));
        assert_eq!(ControlTopic::parse("$mqseal/bundle/d-1"), Some(ControlTopic::Bundle("d-1")));
        for bad in ["$mqseal/policy/x", "$mqseal/bundle/", "$mqseal/bundle/a/b", "$mqseal/identity/+", "$mqseal/other", "$mqseal/"] {
            assert_eq!(ControlTopic::parse(bad), None, "{bad}");
        }
        assert_eq!(ControlTopic::Bundle("x").topic(), "$mqseal/bundle/x");
    }

    #[test]
    fn who_reads_what() {
        let me = Reader::Device("1111");
        assert!(may_read(Reader::Other, ControlTopic::Identity("1111")));
        assert!(!may_read(Reader::Other, ControlTopic::Policy));
        assert!(may_read(me, ControlTopic::Policy));
        assert!(may_read(me, ControlTopic::Bundle("1111")));
        assert!(!may_read(me, ControlTopic::Bundle("1112")), "another device's bundle");
        assert!(!may_read(Reader::Authority, ControlTopic::Bundle("1111")));
        assert!(may_subscribe(Reader::Other, "$mqseal/identity/#"));
        assert!(may_subscribe(me, "$mqseal/bundle/1111"));
        for wide in ["$mqseal/#", "$mqseal/bundle/+", "$mqseal/+/1111", "$mqseal/bundle/#"] {
            assert!(!may_subscribe(me, wide), "{wide}");
        }
        assert!(!may_subscribe(Reader::Other, "$mqseal/policy"));
    }

    #[test]
    fn identity_certificates_round_trip_and_are_bound_to_the_authority() {
        let authority = AuthoritySigningKey::generate();
        let cert = cert();
        let bytes = cert.sign(&authority).unwrap();
        assert_eq!(IdentityCert::from_signed(&bytes, &authority.public(), "t").unwrap(), cert);
        let other = AuthoritySigningKey::generate();
        let err = IdentityCert::from_signed(&bytes, &other.public(), "t").unwrap_err();
        assert_eq!(err.reason(), "doc-wrong-authority");
        // A changed username breaks the signature.
        let text = String::from_utf8(bytes).unwrap().replace("\"username\":\"1111\"", "\"username\":\"1112\"");
        assert_eq!(IdentityCert::from_signed(text.as_bytes(), &authority.public(), "t").unwrap_err().reason(), "doc-bad-signature");
    }

    #[test]
    fn a_policy_document_is_not_an_identity_certificate() {
        let authority = AuthoritySigningKey::generate();
        let doc = signed_doc::sign_document("mqseal-policy-v1", &serde_json::json!({"x": 1}), &authority).unwrap();
        assert_eq!(IdentityCert::from_signed(&doc, &authority.public(), "t").unwrap_err().reason(), "doc-wrong-format");
    }
}
