//! What a policy reload takes away, so the broker can disconnect the clients
//! that lost rights (their sessions were admitted under the old policy).

use std::collections::BTreeMap;

use super::compiled::CompiledPolicy;
use super::model::Role;

/// One right a device lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationReason {
    /// The device is gone from the policy.
    DeviceRemoved,
    /// The device now logs in under another username.
    UsernameChanged { new_username: String },
    /// The device's signing key was replaced.
    KeyChanged,
    /// The device is no longer a member of the group (or the group is gone).
    MembershipRemoved { group: String },
    /// The device's role in the group no longer includes what it had.
    RoleReduced { group: String, from: Role, to: Role },
}

impl RevocationReason {
    /// A stable short token for logs and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            RevocationReason::DeviceRemoved => "device-removed",
            RevocationReason::UsernameChanged { .. } => "username-changed",
            RevocationReason::KeyChanged => "key-changed",
            RevocationReason::MembershipRemoved { .. } => "membership-removed",
            RevocationReason::RoleReduced { .. } => "role-reduced",
        }
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevocationReason::DeviceRemoved => f.write_str("device removed from the policy"),
            RevocationReason::UsernameChanged { new_username } => write!(f, "username changed to {new_username:?}"),
            RevocationReason::KeyChanged => f.write_str("signing key replaced"),
            RevocationReason::MembershipRemoved { group } => write!(f, "no longer a member of group {group}"),
            RevocationReason::RoleReduced { group, from, to } => write!(f, "role in group {group} reduced from {from} to {to}"),
        }
    }
}

/// A device (as the OLD policy knew it) that lost rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub device_id: String,
    /// The username its clients are connected under (from the old policy).
    pub username: String,
    pub reasons: Vec<RevocationReason>,
}

/// Devices of `old` that lost any right in `new`, sorted by device id.
/// Gains (new devices, new memberships, wider roles) are not listed: they
/// need no disconnect.
pub fn revocations(old: &CompiledPolicy, new: &CompiledPolicy) -> Vec<Revocation> {
    let mut lost: BTreeMap<String, Revocation> = BTreeMap::new();
    let mut add = |old_dev, reason| {
        let id = old.device_id(old_dev).to_string();
        lost.entry(id.clone())
            .or_insert_with(|| Revocation { device_id: id, username: old.username(old_dev).to_string(), reasons: Vec::new() })
            .reasons
            .push(reason);
    };
    for d in old.devices() {
        match new.device_by_id(old.device_id(d)) {
            None => add(d, RevocationReason::DeviceRemoved),
            Some(n) => {
                if new.username(n) != old.username(d) {
                    add(d, RevocationReason::UsernameChanged { new_username: new.username(n).to_string() });
                }
                if new.verifying_key(n) != old.verifying_key(d) {
                    add(d, RevocationReason::KeyChanged);
                }
            }
        }
    }
    for (g, d, role) in old.memberships() {
        let Some(nd) = new.device_by_id(old.device_id(d)) else { continue }; // already DeviceRemoved
        let group = old.group(g).id.to_string();
        let new_role = new.group_by_id(&group).and_then(|ng| new.role(ng, nd));
        match new_role {
            None => add(d, RevocationReason::MembershipRemoved { group }),
            Some(to) if !to.covers(role) => add(d, RevocationReason::RoleReduced { group, from: role, to }),
            Some(_) => {}
        }
    }
    let mut result: Vec<Revocation> = lost.into_values().collect();
    for r in &mut result {
        r.reasons.sort_by_key(|x| x.to_string());
    }
    result
}
