//! The compiled policy: what the broker (and a device opening envelopes) asks
//! on every message, answered with hash and trie lookups and no allocation.
//!
//! Devices and groups are numbered ([`DeviceIdx`], [`GroupIdx`]); every table
//! refers to them by index, so each id and username is stored once per map
//! instead of being cloned into every membership. Signing keys are decoded at
//! load time, so verification never parses a key.

// Seeded foldhash, not SipHash: these look-ups run several times per message,
// and their keys come from the policy (an attacker can only look up, never insert).
use foldhash::{HashMap, HashMapExt};
use std::ops::ControlFlow;

use super::model::{validate_username, Policy, Role, MAX_GRACE_SECS};
use super::PolicyError;
use crate::formats::identity::RESERVED_DEVICE_IDS;
use crate::formats::ids::validate_id;
use crate::formats::keys::VerifyingKey;
use crate::formats::topic::{self, FilterTrie, InsertError, Scope, ScopeHit, TopicError};

/// A device's number in a [`CompiledPolicy`] (valid only for that policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceIdx(pub u32);

/// A group's number in a [`CompiledPolicy`] (valid only for that policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupIdx(pub u32);

struct DeviceEntry {
    id: Box<str>,
    username: Box<str>,
    key: VerifyingKey,
}

struct GroupEntry {
    id: Box<str>,
    epoch: u64,
    epoch_started_at: u64,
    grace_secs: u64,
}

/// A group's epoch bookkeeping, borrowed from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupView<'a> {
    pub id: &'a str,
    pub epoch: u64,
    pub epoch_started_at: u64,
    pub previous_epoch_grace_secs: u64,
}

/// How an envelope's key epoch compares with its group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// The group's current epoch.
    Current,
    /// The previous epoch, still inside its grace period.
    PreviousInGrace,
    /// The previous epoch, grace period over.
    PreviousExpired,
    /// Older than the previous epoch.
    TooOld,
    /// Newer than the policy knows (a forged header or an outdated policy).
    Future,
}

impl EpochCheck {
    pub fn is_accepted(self) -> bool {
        matches!(self, EpochCheck::Current | EpochCheck::PreviousInGrace)
    }

    /// A stable short token for logs and audit records.
    pub fn reason(self) -> &'static str {
        match self {
            EpochCheck::Current => "epoch-current",
            EpochCheck::PreviousInGrace => "epoch-previous-in-grace",
            EpochCheck::PreviousExpired => "epoch-previous-expired",
            EpochCheck::TooOld => "epoch-too-old",
            EpochCheck::Future => "epoch-future",
        }
    }
}

/// What a subscription filter reaches, seen from one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionVerdict {
    /// It can match topics of this group, where the device may read (the first
    /// such group found). Allow; delivery checks keep other groups out.
    Readable(GroupIdx),
    /// It can match topics of groups the device may not read AND topics no
    /// group owns. Allow; delivery checks let only the unowned ones through.
    Mixed,
    /// It can match only topics no group owns: the `unprotected` mode decides.
    UnprotectedOnly,
    /// It can match only topics of groups the device may not read (the first
    /// such group found). Deny.
    Forbidden(GroupIdx),
}

/// The compiled policy. Built by [`Policy::compile`] or
/// [`super::load_policy_file`]; immutable afterwards (swap the whole value on reload).
pub struct CompiledPolicy {
    version: u64,
    issued_at: u64,
    devices: Vec<DeviceEntry>,
    device_by_id: HashMap<Box<str>, u32>,
    device_by_username: HashMap<Box<str>, u32>,
    groups: Vec<GroupEntry>,
    group_by_id: HashMap<Box<str>, u32>,
    /// (group, device) → role.
    roles: HashMap<(u32, u32), Role>,
    trie: FilterTrie<u32>,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("version", &self.version)
            .field("devices", &self.devices.len())
            .field("groups", &self.groups.len())
            .field("filters", &self.trie.len())
            .finish()
    }
}

/// First levels a group topic may not start with: the broker's own `$SYS`
/// tree (the broker publishes there itself, unsigned) and `$share` (a topic
/// filter starting with it would read as a shared subscription).
/// `$mqseal` is mqseal's own control prefix (see engine::RESERVED_PREFIX).
const RESERVED_FIRST_LEVELS: &[&str] = &["$SYS", "$share", "$mqseal"];

impl CompiledPolicy {
    pub(super) fn build(policy: &Policy, origin: &str) -> Result<CompiledPolicy, PolicyError> {
        let invalid = |field: String, problem: String| PolicyError::invalid(origin, field, problem);
        if policy.version == 0 {
            return Err(invalid("version".into(), "must be at least 1".into()));
        }
        if policy.devices.len() >= u32::MAX as usize || policy.groups.len() >= u32::MAX as usize {
            return Err(invalid("devices".into(), "too many devices or groups".into()));
        }

        let mut devices = Vec::with_capacity(policy.devices.len());
        let mut device_by_id = HashMap::with_capacity(policy.devices.len());
        let mut device_by_username: HashMap<Box<str>, u32> = HashMap::with_capacity(policy.devices.len());
        for (index, (id, device)) in policy.devices.iter().enumerate() {
            let index = index as u32;
            validate_id("device", id).map_err(|e| invalid(format!("devices.{id}"), e.to_string()))?;
            if RESERVED_DEVICE_IDS.contains(&id.as_str()) {
                return Err(invalid(format!("devices.{id}"), format!("device id {id:?} is reserved")));
            }
            validate_username(&device.username).map_err(|p| invalid(format!("devices.{id}.username"), p))?;
            if let Some(&other) = device_by_username.get(device.username.as_str()) {
                let other_id = &devices.get(other as usize).map(|d: &DeviceEntry| d.id.clone()).unwrap_or_default();
                return Err(invalid(
                    format!("devices.{id}.username"),
                    format!(
                        "{:?} is already the username of device {other_id:?}; every device needs its own username",
                        device.username
                    ),
                ));
            }
            device_by_id.insert(Box::<str>::from(id.as_str()), index);
            device_by_username.insert(Box::<str>::from(device.username.as_str()), index);
            devices.push(DeviceEntry { id: id.as_str().into(), username: device.username.as_str().into(), key: device.sign.clone() });
        }

        let mut groups = Vec::with_capacity(policy.groups.len());
        let mut group_by_id = HashMap::with_capacity(policy.groups.len());
        // Sized once: growing a table of millions of memberships rehashes it ~20 times.
        let mut roles = HashMap::with_capacity(policy.groups.values().map(|g| g.members.len()).sum());
        let mut trie = FilterTrie::new();
        let group_ids: Vec<&str> = policy.groups.keys().map(|k| k.as_str()).collect();
        for (index, (id, group)) in policy.groups.iter().enumerate() {
            let index = index as u32;
            let at = |field: &str| format!("groups.{id}{field}");
            validate_id("group", id).map_err(|e| invalid(at(""), e.to_string()))?;
            if group.topics.is_empty() {
                return Err(invalid(at(".topics"), "a group needs at least one topic filter".into()));
            }
            for (i, filter) in group.topics.iter().enumerate() {
                let field = at(&format!(".topics[{i}]"));
                topic::validate_policy_filter(filter).map_err(|e: TopicError| invalid(field.clone(), e.to_string()))?;
                let first = filter.split('/').next().unwrap_or_default();
                if RESERVED_FIRST_LEVELS.contains(&first) {
                    return Err(invalid(
                        field,
                        format!("'{filter}': topics under '{first}' cannot belong to a group (reserved by the broker)"),
                    ));
                }
                if let Some(j) = group.topics[..i].iter().position(|t| t == filter) {
                    return Err(invalid(field, format!("'{filter}' is a duplicate of topics[{j}]")));
                }
                trie.insert(filter, index).map_err(|e| match e {
                    InsertError::Invalid(t) => invalid(field.clone(), t.to_string()),
                    InsertError::Overlap(o) => invalid(
                        field.clone(),
                        format!(
                            "topic filter '{}' overlaps '{}' of group '{}': both match e.g. '{}'. A topic must \
                             belong to at most one group, otherwise the broker could not tell whose members may \
                             publish or read there; narrow one of the filters",
                            o.filter,
                            o.other_filter,
                            group_ids.get(o.other_owner as usize).copied().unwrap_or("?"),
                            o.example
                        ),
                    ),
                })?;
            }
            for (device, role) in &group.members {
                let Some(&d) = device_by_id.get(device.as_str()) else {
                    return Err(invalid(at(&format!(".members.{device}")), format!("no device {device:?} in devices")));
                };
                roles.insert((index, d), *role);
            }
            if group.epoch == 0 {
                return Err(invalid(at(".epoch"), "must be at least 1".into()));
            }
            if group.previous_epoch_grace_secs > MAX_GRACE_SECS {
                return Err(invalid(
                    at(".previous_epoch_grace_secs"),
                    format!("{} is more than the maximum {MAX_GRACE_SECS} (one year)", group.previous_epoch_grace_secs),
                ));
            }
            group_by_id.insert(Box::<str>::from(id.as_str()), index);
            groups.push(GroupEntry {
                id: id.as_str().into(),
                epoch: group.epoch,
                epoch_started_at: group.epoch_started_at,
                grace_secs: group.previous_epoch_grace_secs,
            });
        }
        trie.shrink_to_fit();
        roles.shrink_to_fit();
        Ok(CompiledPolicy {
            version: policy.version,
            issued_at: policy.issued_at,
            devices,
            device_by_id,
            device_by_username,
            groups,
            group_by_id,
            roles,
            trie,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The device that logs in with this MQTT username.
    pub fn device_by_username(&self, username: &str) -> Option<DeviceIdx> {
        self.device_by_username.get(username).map(|&i| DeviceIdx(i))
    }

    /// The device with this id (as an envelope names its sender).
    pub fn device_by_id(&self, id: &str) -> Option<DeviceIdx> {
        self.device_by_id.get(id).map(|&i| DeviceIdx(i))
    }

    /// Panics only on an index from another policy (a programming error).
    pub fn device_id(&self, device: DeviceIdx) -> &str {
        &self.devices[device.0 as usize].id
    }

    pub fn username(&self, device: DeviceIdx) -> &str {
        &self.devices[device.0 as usize].username
    }

    /// The device's signing key, decoded at load time.
    pub fn verifying_key(&self, device: DeviceIdx) -> &VerifyingKey {
        &self.devices[device.0 as usize].key
    }

    pub fn devices(&self) -> impl Iterator<Item = DeviceIdx> {
        (0..self.devices.len() as u32).map(DeviceIdx)
    }

    pub fn group_by_id(&self, id: &str) -> Option<GroupIdx> {
        self.group_by_id.get(id).map(|&i| GroupIdx(i))
    }

    pub fn group(&self, group: GroupIdx) -> GroupView<'_> {
        let g = &self.groups[group.0 as usize];
        GroupView { id: &g.id, epoch: g.epoch, epoch_started_at: g.epoch_started_at, previous_epoch_grace_secs: g.grace_secs }
    }

    pub fn groups(&self) -> impl Iterator<Item = GroupIdx> {
        (0..self.groups.len() as u32).map(GroupIdx)
    }

    /// The group's topic filters (walks all filters; not for the hot path).
    pub fn group_topics(&self, group: GroupIdx) -> Vec<&str> {
        self.trie.filters().filter(|(_, owner)| *owner == group.0).map(|(f, _)| f).collect()
    }

    /// The group owning topic name `topic`, if any: O(depth), no allocation.
    pub fn group_of_topic(&self, topic: &str) -> Option<GroupIdx> {
        self.trie.owner_of(topic).map(GroupIdx)
    }

    /// The device's role in the group, if it is a member.
    pub fn role(&self, group: GroupIdx, device: DeviceIdx) -> Option<Role> {
        self.roles.get(&(group.0, device.0)).copied()
    }

    /// Whether an envelope under `epoch` is acceptable in `group` at `now` (Unix seconds).
    /// The previous epoch is accepted while `now < epoch_started_at + grace`.
    pub fn check_epoch(&self, group: GroupIdx, epoch: u64, now: u64) -> EpochCheck {
        let g = &self.groups[group.0 as usize];
        if epoch == g.epoch {
            EpochCheck::Current
        } else if epoch > g.epoch {
            EpochCheck::Future
        } else if epoch + 1 == g.epoch {
            if now < g.epoch_started_at.saturating_add(g.grace_secs) {
                EpochCheck::PreviousInGrace
            } else {
                EpochCheck::PreviousExpired
            }
        } else {
            EpochCheck::TooOld
        }
    }

    /// Every group a subscription filter (without `$share/...`) can reach, and
    /// whether it also reaches unowned topics.
    pub fn subscription_scope(&self, filter: &str) -> Scope<GroupIdx> {
        let scope = self.trie.scope(filter);
        Scope { owners: scope.owners.into_iter().map(GroupIdx).collect(), spans_unprotected: scope.spans_unprotected }
    }

    /// Judges a SUBSCRIBE filter as sent (a `$share/<name>/` prefix is taken
    /// apart first) for `device` (`None`: a client that is no device of the policy).
    pub fn check_subscription(&self, device: Option<DeviceIdx>, text: &str) -> Result<SubscriptionVerdict, TopicError> {
        let subscription = topic::parse_subscription(text)?;
        Ok(self.subscription_verdict(device, subscription.filter))
    }

    /// Judges a subscription filter (already stripped of `$share/...`). Stops
    /// walking as soon as the answer is an allow.
    pub fn subscription_verdict(&self, device: Option<DeviceIdx>, filter: &str) -> SubscriptionVerdict {
        let mut readable = None;
        let mut foreign = None;
        let mut unowned = false;
        self.trie.visit_scope(filter, &mut |hit| {
            match hit {
                ScopeHit::Owner { owner, .. } => {
                    let may_read = device.and_then(|d| self.roles.get(&(owner, d.0))).is_some_and(|r| r.can_read());
                    if may_read {
                        readable = Some(GroupIdx(owner));
                        return ControlFlow::Break(());
                    }
                    foreign = foreign.or(Some(GroupIdx(owner)));
                }
                ScopeHit::Unprotected => unowned = true,
            }
            if unowned && foreign.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match (readable, foreign, unowned) {
            (Some(g), _, _) => SubscriptionVerdict::Readable(g),
            (None, Some(_), true) => SubscriptionVerdict::Mixed,
            (None, Some(g), false) => SubscriptionVerdict::Forbidden(g),
            (None, None, _) => SubscriptionVerdict::UnprotectedOnly,
        }
    }

    /// All (group, device, role) memberships, in no particular order.
    pub fn memberships(&self) -> impl Iterator<Item = (GroupIdx, DeviceIdx, Role)> + '_ {
        self.roles.iter().map(|(&(g, d), &r)| (GroupIdx(g), DeviceIdx(d), r))
    }
}
