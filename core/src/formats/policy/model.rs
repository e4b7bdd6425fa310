//! The policy as data, its rules, and its JSON body.
//!
//! Body (canonical JSON inside a `mqseal-policy-v1` signed document):
//!
//! ```json
//! {"devices":{"1111":{"sign":{"alg":"Ed25519","public":"<b64url>"},"username":"1111"}},
//!  "groups":{"hsu0001":{"epoch":1,"epoch_started_at":1700000000,"members":{"1111":"pubsub"},
//!            "previous_epoch_grace_secs":3600,"topics":["hsu/0001/#"]}},
//!  "issued_at":1700000000,"version":1}
//! ```
//!
//! Every rule is checked with the path of the field that breaks it, so an
//! error reads like `groups.hsu0001.topics[1]: '#' must be the last level`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::compiled::CompiledPolicy;
use super::PolicyError;
use crate::formats::keys::{SignAlg, VerifyingKey};
use crate::formats::signed_doc::{self, AuthorityPublicKey, AuthoritySigningKey};

/// The `format` of signed policy documents.
pub const POLICY_FORMAT: &str = "mqseal-policy-v1";

/// The longest grace period a group may give its previous epoch (one year).
pub const MAX_GRACE_SECS: u64 = 365 * 24 * 3600;

/// The longest MQTT username a policy may assign, in bytes.
pub const MAX_USERNAME_BYTES: usize = 256;

/// What a member may do in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Pub,
    Sub,
    PubSub,
}

impl Role {
    /// May publish (seal) on the group's topics.
    pub fn can_publish(self) -> bool {
        matches!(self, Role::Pub | Role::PubSub)
    }

    /// May subscribe to and receive the group's topics.
    pub fn can_read(self) -> bool {
        matches!(self, Role::Sub | Role::PubSub)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pub => "pub",
            Role::Sub => "sub",
            Role::PubSub => "pubsub",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "pub" => Some(Role::Pub),
            "sub" => Some(Role::Sub),
            "pubsub" => Some(Role::PubSub),
            _ => None,
        }
    }

    /// True when `self` can do everything `other` can.
    pub fn covers(self, other: Role) -> bool {
        (!other.can_publish() || self.can_publish()) && (!other.can_read() || self.can_read())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device as the policy knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// The MQTT username the device logs in with.
    pub username: String,
    /// Its signing key (Ed25519 or P-256), the one envelopes are verified with.
    pub sign: VerifyingKey,
}

/// One group: the topics it owns, its members, and its key epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Topic filters; every topic they match belongs to this group.
    pub topics: Vec<String>,
    /// Device id → role.
    pub members: BTreeMap<String, Role>,
    /// The current key epoch (starts at 1, +1 on every rotation).
    pub epoch: u64,
    /// When the current epoch began (Unix seconds).
    pub epoch_started_at: u64,
    /// How long after `epoch_started_at` envelopes sealed under `epoch - 1`
    /// are still accepted (0 = never).
    pub previous_epoch_grace_secs: u64,
}

/// A complete policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Strictly increasing on every export; a loader never goes back.
    pub version: u64,
    /// When it was exported (Unix seconds).
    pub issued_at: u64,
    pub devices: BTreeMap<String, DevicePolicy>,
    pub groups: BTreeMap<String, GroupPolicy>,
}

// --- JSON shape -------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    version: u64,
    issued_at: u64,
    devices: BTreeMap<String, DeviceJson>,
    groups: BTreeMap<String, GroupJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceJson {
    username: String,
    sign: KeyJson,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    alg: String,
    public: String,
}

/// A group as the policy file writes it. The realm file
/// (`device::realm`) writes its groups in this same shape.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupJson {
    topics: Vec<String>,
    members: BTreeMap<String, String>,
    epoch: u64,
    epoch_started_at: u64,
    previous_epoch_grace_secs: u64,
}

impl From<&GroupPolicy> for GroupJson {
    fn from(g: &GroupPolicy) -> Self {
        GroupJson {
            topics: g.topics.clone(),
            members: g.members.iter().map(|(d, r)| (d.clone(), r.as_str().to_string())).collect(),
            epoch: g.epoch,
            epoch_started_at: g.epoch_started_at,
            previous_epoch_grace_secs: g.previous_epoch_grace_secs,
        }
    }
}

/// A member whose role is not one of pub | sub | pubsub: (device, role).
pub(crate) struct BadRole(pub String, pub String);

impl GroupJson {
    /// The group as data; each file's reader words the error for its file.
    pub(crate) fn into_policy(self) -> Result<GroupPolicy, BadRole> {
        let mut members = BTreeMap::new();
        for (device, role) in self.members {
            match Role::parse(&role) {
                Some(parsed) => members.insert(device, parsed),
                None => return Err(BadRole(device, role)),
            };
        }
        Ok(GroupPolicy {
            topics: self.topics,
            members,
            epoch: self.epoch,
            epoch_started_at: self.epoch_started_at,
            previous_epoch_grace_secs: self.previous_epoch_grace_secs,
        })
    }
}

/// Checks an MQTT username a policy assigns: 1..=256 bytes, no `+`, `#` or
/// `/` (a username substituted into an ACL pattern such as `%u/#` must not
/// widen it), no control characters, no surrounding whitespace.
pub fn validate_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("is empty".into());
    }
    if username.len() > MAX_USERNAME_BYTES {
        return Err(format!("is {} bytes long; at most {MAX_USERNAME_BYTES}", username.len()));
    }
    if let Some(c) = username.chars().find(|c| matches!(c, '+' | '#' | '/')) {
        return Err(format!(
            "{username:?} contains '{c}': usernames must not contain '+', '#' or '/', which could widen topic patterns"
        ));
    }
    if let Some(c) = username.chars().find(|c| c.is_control()) {
        return Err(format!("{username:?} contains control character U+{:04X}", c as u32));
    }
    if username.trim() != username {
        return Err(format!("{username:?} has leading or trailing whitespace"));
    }
    if username == crate::formats::control::AUTHORITY_USERNAME {
        // The authority logs in with this name to publish on mqseal's control topics.
        return Err(format!("{username:?} is reserved for the realm's authority"));
    }
    Ok(())
}

impl Policy {
    /// Parses and verifies a signed policy document.
    pub fn from_signed(bytes: &[u8], authority: &AuthorityPublicKey, origin: &str) -> Result<Policy, PolicyError> {
        let body = signed_doc::verify_document(bytes, POLICY_FORMAT, authority, origin)?;
        Policy::from_body(body, origin)
    }

    /// Parses a policy body (already verified) and decodes its keys; then
    /// checks every rule (see [`Policy::validate`]).
    pub fn from_body(body: &[u8], origin: &str) -> Result<Policy, PolicyError> {
        let policy = Policy::parse_body(body, origin)?;
        policy.validate(origin)?;
        Ok(policy)
    }

    /// [`Policy::from_body`] without the rule check, for callers that compile
    /// next (compiling checks every rule): see [`super::compile_signed`].
    pub(super) fn parse_body(body: &[u8], origin: &str) -> Result<Policy, PolicyError> {
        let raw: PolicyJson = serde_json::from_slice(body)
            .map_err(|e| PolicyError::Syntax { origin: origin.to_string(), detail: e.to_string() })?;
        let mut devices = BTreeMap::new();
        for (id, d) in raw.devices {
            let at = |f: &str| format!("devices.{id}.sign.{f}");
            let alg = SignAlg::from_identity_name(&d.sign.alg).ok_or_else(|| {
                PolicyError::invalid(origin, at("alg"), format!("{:?} is not one of \"Ed25519\", \"ESP256\"", d.sign.alg))
            })?;
            let raw_key = URL_SAFE_NO_PAD
                .decode(&d.sign.public)
                .map_err(|e| PolicyError::invalid(origin, at("public"), format!("not unpadded base64url: {e}")))?;
            let sign =
                VerifyingKey::from_raw(alg, &raw_key).map_err(|e| PolicyError::invalid(origin, at("public"), e.to_string()))?;
            devices.insert(id, DevicePolicy { username: d.username, sign });
        }
        let mut groups = BTreeMap::new();
        for (id, g) in raw.groups {
            let group = g.into_policy().map_err(|BadRole(device, role)| {
                PolicyError::invalid(
                    origin,
                    format!("groups.{id}.members.{device}"),
                    format!("{role:?} is not one of pub | sub | pubsub"),
                )
            })?;
            groups.insert(id, group);
        }
        Ok(Policy { version: raw.version, issued_at: raw.issued_at, devices, groups })
    }

    /// Checks every rule; the error names `origin` and the field.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        self.compile(origin).map(|_| ())
    }

    /// Validates and compiles for lookups.
    pub fn compile(&self, origin: &str) -> Result<CompiledPolicy, PolicyError> {
        CompiledPolicy::build(self, origin)
    }

    /// The body as canonical-JSON-ready data.
    fn to_json(&self) -> PolicyJson {
        PolicyJson {
            version: self.version,
            issued_at: self.issued_at,
            devices: self
                .devices
                .iter()
                .map(|(id, d)| {
                    let sign = KeyJson {
                        alg: d.sign.alg().identity_name().to_string(),
                        public: URL_SAFE_NO_PAD.encode(d.sign.to_raw()),
                    };
                    (id.clone(), DeviceJson { username: d.username.clone(), sign })
                })
                .collect(),
            groups: self.groups.iter().map(|(id, g)| (id.clone(), GroupJson::from(g))).collect(),
        }
    }

    /// The canonical JSON of the body (what the authority signs).
    pub fn body_bytes(&self) -> Result<Vec<u8>, PolicyError> {
        crate::formats::canonical_json::to_vec(&self.to_json())
            .map_err(|e| PolicyError::Syntax { origin: "policy".into(), detail: e.to_string() })
    }

    /// Validates, then signs: returns the policy file's bytes.
    pub fn sign(&self, key: &AuthoritySigningKey) -> Result<Vec<u8>, PolicyError> {
        self.validate("policy")?;
        Ok(signed_doc::sign_document(POLICY_FORMAT, &self.to_json(), key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("dev-1@example.com").is_ok());
        assert!(validate_username("Sensor 1").is_ok());
        for bad in ["", "a/b", "a+", "#", "a\nb", " a", "a\t"] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_username(&"x".repeat(257)).is_err());
    }

    #[test]
    fn roles() {
        assert!(Role::PubSub.covers(Role::Pub) && Role::PubSub.covers(Role::Sub));
        assert!(!Role::Pub.covers(Role::Sub) && !Role::Sub.covers(Role::PubSub));
        for r in [Role::Pub, Role::Sub, Role::PubSub] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
    }
}
