//! A synthetic fleet for the benchmarks and the scale table (shared by
//! `benches/*.rs` and `examples/scale.rs` through `#[path]`).
//!
//! Shape, for `devices` N and `groups` G:
//! - device `i`: id `d<i:07>`, username `u<i:07>`; signing key `KEY_COUNT`-way
//!   shared (key `i % KEY_COUNT`; key 0 is P-256, the rest Ed25519). Sharing keys
//!   changes nothing the broker measures: every device's key is decoded and
//!   stored on its own (`VerifyingKey` is held inline, not behind a pointer);
//!   it only saves generating a million key pairs.
//! - group `j`: id `g<j:06>`, topics `site/<j>/#` and `cmd/+/<j>/set`.
//! - device `i` is `pubsub` in its home group `i % G` and `sub` in `(i + G/2) % G`,
//!   so every group has about 2N/G members.
//! - one more group `fleet` owns `fleet/+/telemetry`; every device is a `pub`
//!   member (a fleet-wide ingest group: one group with N members).
//!
//! So the policy has N devices, G + 1 groups, 2G + 1 topic filters and 3N memberships.
#![allow(dead_code)]

use std::collections::BTreeMap;

use mqseal_core::formats::keys::{GroupKey, SignAlg, SigningKey, VerifyingKey};
use mqseal_core::formats::policy::{DevicePolicy, GroupPolicy, Policy, Role};

/// Distinct signing keys the fleet cycles through.
pub const KEY_COUNT: usize = 16;

/// The epoch every group is at.
pub const EPOCH: u64 = 1;

pub fn device_id(i: usize) -> String {
    format!("d{i:07}")
}

pub fn username(i: usize) -> String {
    format!("u{i:07}")
}

pub fn group_id(j: usize) -> String {
    format!("g{j:06}")
}

pub fn home_group(i: usize, groups: usize) -> usize {
    i % groups
}

pub fn second_group(i: usize, groups: usize) -> usize {
    (i + groups / 2) % groups
}

/// A group none of device `i`'s memberships can read (for denials); needs G >= 3.
pub fn foreign_group(i: usize, groups: usize, pick: usize) -> usize {
    let (home, second) = (home_group(i, groups), second_group(i, groups));
    let mut j = pick % groups;
    while j == home || j == second {
        j = (j + 1) % groups;
    }
    j
}

/// The signing key of key slot `k` (deterministic: benches re-create it to seal).
pub fn signing_key(k: usize) -> SigningKey {
    let k = k % KEY_COUNT;
    if k == 0 {
        let mut scalar = [0u8; 32];
        scalar[31] = 7;
        scalar[0] = 1;
        SigningKey::p256_from_scalar(&scalar).expect("fixed P-256 scalar is in range")
    } else {
        SigningKey::ed25519_from_seed(&[k as u8; 32])
    }
}

/// The signing key of device `i`.
pub fn device_signing_key(i: usize) -> SigningKey {
    signing_key(i % KEY_COUNT)
}

/// The first device whose key has algorithm `alg`.
pub fn device_with_alg(alg: SignAlg) -> usize {
    (0..KEY_COUNT).find(|&i| signing_key(i).alg() == alg).expect("the fleet has both algorithms")
}

/// The group key of every group at [`EPOCH`] (the broker never sees it; devices seal with it).
pub fn group_key() -> GroupKey {
    GroupKey::from_bytes([0x42; 32])
}

/// Builds the policy model described in the module comment.
pub fn fleet_policy(devices: usize, groups: usize) -> Policy {
    assert!(groups >= 3, "the fleet needs at least 3 groups");
    let keys: Vec<VerifyingKey> = (0..KEY_COUNT).map(|k| signing_key(k).verifying_key()).collect();
    let mut device_map = BTreeMap::new();
    let mut members: Vec<BTreeMap<String, Role>> = vec![BTreeMap::new(); groups];
    let mut fleet_members = BTreeMap::new();
    for i in 0..devices {
        let id = device_id(i);
        device_map.insert(id.clone(), DevicePolicy { username: username(i), sign: keys[i % KEY_COUNT].clone() });
        members[second_group(i, groups)].insert(id.clone(), Role::Sub);
        members[home_group(i, groups)].insert(id.clone(), Role::PubSub);
        fleet_members.insert(id, Role::Pub);
    }
    let mut group_map = BTreeMap::new();
    for (j, members) in members.into_iter().enumerate() {
        group_map.insert(
            group_id(j),
            GroupPolicy {
                topics: vec![format!("site/{j}/#"), format!("cmd/+/{j}/set")],
                members,
                epoch: EPOCH,
                epoch_started_at: 1_700_000_000,
                previous_epoch_grace_secs: 3600,
            },
        );
    }
    group_map.insert(
        "fleet".into(),
        GroupPolicy {
            topics: vec!["fleet/+/telemetry".into()],
            members: fleet_members,
            epoch: EPOCH,
            epoch_started_at: 1_700_000_000,
            previous_epoch_grace_secs: 0,
        },
    );
    Policy { version: 1, issued_at: 1_700_000_000, devices: device_map, groups: group_map }
}

/// splitmix64: a small deterministic generator for picking random decisions
/// (no `rand` dependency; quality is ample for sampling indices).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One subscription a device sends, and what the policy must answer.
pub struct SubscribeCase {
    pub device: usize,
    pub filter: String,
    /// True when the policy lets the device read what the filter reaches.
    pub readable: bool,
}

/// A mix of subscriptions: half to the home group's subtree, a quarter to the
/// second group's `+` filter, a quarter to a foreign group (denied).
pub fn subscribe_case(rng: &mut Rng, devices: usize, groups: usize) -> SubscribeCase {
    let device = rng.below(devices);
    match rng.below(4) {
        0 | 1 => SubscribeCase { device, filter: format!("site/{}/#", home_group(device, groups)), readable: true },
        2 => SubscribeCase { device, filter: format!("site/{}/+/status", second_group(device, groups)), readable: true },
        _ => {
            let foreign = foreign_group(device, groups, rng.below(groups));
            SubscribeCase { device, filter: format!("site/{foreign}/#"), readable: false }
        }
    }
}

/// One delivery: a message on `topic` about to be sent to `device`.
pub struct DeliveryCase {
    pub device: usize,
    pub topic: String,
    /// True when the device may read it.
    pub readable: bool,
}

/// A mix of deliveries: 3/4 to readers (home or second group), 1/4 to a
/// subscriber of a foreign group's topic (withheld).
pub fn delivery_case(rng: &mut Rng, devices: usize, groups: usize) -> DeliveryCase {
    let device = rng.below(devices);
    match rng.below(4) {
        0 | 1 => DeliveryCase { device, topic: format!("site/{}/hall/sensor7", home_group(device, groups)), readable: true },
        2 => DeliveryCase { device, topic: format!("cmd/pump/{}/set", second_group(device, groups)), readable: true },
        _ => {
            let foreign = foreign_group(device, groups, rng.below(groups));
            DeliveryCase { device, topic: format!("site/{foreign}/hall/sensor7"), readable: false }
        }
    }
}

/// One publish by `device` on a topic it may publish to (home group or fleet).
pub struct PublishCase {
    pub device: usize,
    pub topic: String,
    pub group: String,
}

pub fn publish_case(rng: &mut Rng, devices: usize, groups: usize) -> PublishCase {
    let device = rng.below(devices);
    if rng.below(2) == 0 {
        let home = home_group(device, groups);
        PublishCase { device, topic: format!("site/{home}/hall/sensor7"), group: group_id(home) }
    } else {
        PublishCase { device, topic: format!("fleet/{}/telemetry", device_id(device)), group: "fleet".into() }
    }
}
