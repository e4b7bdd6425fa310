//! The device's side of key exchange over MQTT: which control topics a device
//! follows, and how the documents that arrive there are applied.
//!
//! A device subscribes to `$mqseal/policy` and its own `$mqseal/bundle/ID`;
//! both are retained, so the current documents arrive right after the SUBACK.
//! Later messages on these topics are rotations and policy changes, applied as
//! they come. (How a client knows the retained documents have all arrived is
//! the MQTT client's business: `mqseal join`, `pub` and `sub` use a second
//! subscription as a sentinel, see `cli/src/mqtt_link.rs`.)
//!
//! Every document is verified against the authority key the device joined
//! with ([`crate::device::store::update`]), so the broker is not trusted. A
//! policy that needs keys the device does not have yet (its bundle is on the
//! way) is held until the bundle arrives; so is a bundle that needs a newer
//! policy.

use std::path::{Path, PathBuf};

use crate::device::store::{update, DeviceStoreError, JoinReport, KeySource};
use crate::formats::control::ControlTopic;
use crate::formats::policy::PolicyError;

/// The control filters a device subscribes to, in this order: the policy, then its own bundle.
pub fn control_filters(me: &str) -> Vec<String> {
    vec![ControlTopic::Policy.topic(), ControlTopic::Bundle(me).topic()]
}

/// A subscription whose SUBACK, after those of [`control_filters`], marks the
/// end of the retained documents (the device's own identity topic).
pub fn sentinel_filter(me: &str) -> String {
    ControlTopic::Identity(me).topic()
}

/// What to say when the broker refuses a device its control subscription.
pub fn refused_updates(me: &str) -> String {
    format!(
        "the broker refused the subscription to this device's key updates ($mqseal/policy, $mqseal/bundle/{me}); \
         using the keys in the device directory"
    )
}

/// Documents received and not yet applied.
pub struct ControlSync {
    device_dir: PathBuf,
    me: String,
    policy: Option<Vec<u8>>,
    bundle: Option<Vec<u8>>,
}

/// What a control message did.
#[derive(Debug)]
pub enum SyncOutcome {
    /// Not a control topic of this device.
    NotControl,
    /// Stored, nothing changed (yet): an identity, a document already held, or
    /// a document waiting for its companion (the text says which).
    Held(Option<String>),
    /// Policy and keys were replaced.
    Updated(JoinReport),
    /// Refused (wrong authority, bad signature, older...).
    Refused(DeviceStoreError),
}

impl ControlSync {
    pub fn new(device_dir: &Path, me: &str) -> ControlSync {
        ControlSync { device_dir: device_dir.to_owned(), me: me.to_string(), policy: None, bundle: None }
    }

    /// Takes a message; applies what can be applied. `current` = (policy
    /// version, bundle version) now in use, to tell a change from a repeat.
    pub fn on_message(&mut self, topic: &str, payload: &[u8], current: (u64, u64)) -> SyncOutcome {
        match self.stash(topic, payload) {
            None => SyncOutcome::NotControl,
            Some(false) => SyncOutcome::Held(None),
            Some(true) => self.apply(current),
        }
    }

    /// Keeps a document without applying it (several arrive together on
    /// connect). None: not a control topic; Some(true): a document to apply.
    pub fn stash(&mut self, topic: &str, payload: &[u8]) -> Option<bool> {
        match ControlTopic::parse(topic) {
            Some(ControlTopic::Policy) if !payload.is_empty() => self.policy = Some(payload.to_vec()),
            Some(ControlTopic::Bundle(id)) if id == self.me && !payload.is_empty() => self.bundle = Some(payload.to_vec()),
            Some(_) => return Some(false),
            None => return None,
        }
        Some(true)
    }

    /// Applies what was received (see [`ControlSync::on_message`]).
    pub fn apply(&mut self, current: (u64, u64)) -> SyncOutcome {
        loop {
            let policy_origin = format!("{} (over MQTT)", ControlTopic::Policy.topic());
            let bundle_origin = format!("{} (over MQTT)", ControlTopic::Bundle(&self.me).topic());
            let keys = match &self.bundle {
                Some(bytes) => KeySource::Bundle { bytes, origin: &bundle_origin },
                None => KeySource::Stored,
            };
            let policy = self.policy.as_deref().map(|bytes| (bytes, policy_origin.as_str()));
            if policy.is_none() && self.bundle.is_none() {
                return SyncOutcome::Held(None);
            }
            match update(&self.device_dir, policy, keys) {
                Ok(report) => {
                    self.policy = None;
                    self.bundle = None;
                    return if (report.policy_version, report.bundle_version) == current {
                        SyncOutcome::Held(None)
                    } else {
                        SyncOutcome::Updated(report)
                    };
                }
                // A policy that needs a key still on its way: wait for the bundle.
                Err(DeviceStoreError::BundleBehindPolicy { group, epoch, .. }) => {
                    return SyncOutcome::Held(Some(format!(
                        "policy received; waiting for the key bundle with group {group} epoch {epoch}"
                    )))
                }
                // An older retained document than what the device holds: drop it and
                // try the other one alone.
                Err(DeviceStoreError::Policy(PolicyError::NotNewer { .. })) if self.policy.is_some() => self.policy = None,
                Err(DeviceStoreError::BundleNotNewer { .. }) if self.bundle.is_some() => self.bundle = None,
                Err(error) => {
                    self.policy = None;
                    self.bundle = None;
                    return SyncOutcome::Refused(error);
                }
            }
        }
    }
}

/// One line about an update (`mqseal sub` writes it to stderr).
pub fn describe(report: &JoinReport) -> String {
    let mut groups: Vec<String> = report
        .groups
        .iter()
        .map(|(g, epochs)| format!("{g} epoch {}", epochs.first().copied().unwrap_or_default()))
        .collect();
    groups.extend(report.dropped_groups.iter().map(|g| format!("{g} dropped")));
    format!(
        "keys updated over MQTT: policy version {}, bundle version {}; {}",
        report.policy_version,
        report.bundle_version,
        if groups.is_empty() { "member of no group".to_string() } else { groups.join(", ") }
    )
}
