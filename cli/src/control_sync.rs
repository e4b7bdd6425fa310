//! The device's side of key exchange over MQTT: `mqseal join` without files,
//! and the live key updates of `mqseal pub`/`sub`.
//!
//! A device subscribes to `$mqseal/policy` and its own `$mqseal/bundle/ID`;
//! both are retained, so the current documents arrive right after the SUBACK.
//! Mosquitto queues them while it handles the SUBSCRIBE and writes them before
//! it reads the client's next packet, so once the SUBACK of a *second*
//! SUBSCRIBE has arrived, the retained documents of the first have too (the
//! "sentinel": the device's own identity topic). Later messages on these
//! topics are rotations and policy changes, applied as they come.
//!
//! Every document is verified against the authority key the device joined
//! with (`mqseal_core::device_store::update`), so the broker is not trusted.
//! A policy that needs keys the device does not have yet (its bundle is on the
//! way) is held until the bundle arrives.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mqseal_core::control::ControlTopic;
use mqseal_core::device_store::{update, DeviceStoreError, JoinReport, KeySource};
use mqseal_core::policy::PolicyError;

use crate::mqtt_link::{Ev, Link};

/// The control filters a device subscribes to.
pub fn control_filters(me: &str) -> Vec<String> {
    vec![ControlTopic::Policy.topic(), ControlTopic::Bundle(me).topic()]
}

/// The second subscription whose SUBACK marks the end of the retained documents.
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

/// Subscribes to this device's control topics, then to the sentinel, and
/// collects every message until the sentinel's SUBACK: by then the retained
/// policy and bundle have arrived (see the module docs). False when the broker
/// refused the control subscription.
pub fn fetch_control_documents(
    link: &mut Link,
    me: &str,
    timeout: Duration,
    inbox: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<bool> {
    link.subscribe(&control_filters(me), 1)?;
    link.subscribe(&[sentinel_filter(me)], 0)?;
    let deadline = Instant::now() + timeout;
    let mut granted_control = true;
    let mut subacks = 0;
    loop {
        match link.next(Some(deadline))? {
            Some(Ev::SubAck(granted)) => {
                subacks += 1;
                if subacks == 1 {
                    granted_control = granted.iter().all(Option::is_some);
                }
                if subacks == 2 {
                    return Ok(granted_control);
                }
            }
            Some(Ev::Message { topic, payload }) => inbox.push((topic, payload)),
            Some(_) => {}
            None => anyhow::bail!("the broker did not acknowledge the key-update subscriptions within {} s", timeout.as_secs()),
        }
    }
}

/// Documents received and not yet applied.
pub struct ControlSync {
    device_dir: PathBuf,
    me: String,
    policy: Option<Vec<u8>>,
    bundle: Option<Vec<u8>>,
}

/// What a control message did.
pub enum SyncOutcome {
    /// Not a control topic of this device.
    NotControl,
    /// Stored, nothing changed (yet): an identity, a document already held, or
    /// a policy waiting for its bundle (the text says which).
    Held(Option<String>),
    /// Policy and keys were replaced.
    Updated(JoinReport),
    /// Refused (wrong authority, bad signature, older...): the text says why.
    Refused(String),
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
                    return SyncOutcome::Refused(format!("{error:#}"));
                }
            }
        }
    }
}

/// One line for stderr about an update.
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
