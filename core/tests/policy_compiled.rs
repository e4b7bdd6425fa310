//! Lookups the broker makes: username → device, topic → group, roles, epochs,
//! subscriptions; and what a reload revokes.

use std::collections::BTreeMap;

use mqseal_core::formats::keys::SigningKey;
use mqseal_core::formats::policy::{
    revocations, CompiledPolicy, DevicePolicy, EpochCheck, GroupPolicy, Policy, RevocationReason, Role,
    SubscriptionVerdict,
};

fn device(seed: u8, username: &str) -> DevicePolicy {
    DevicePolicy { username: username.into(), sign: SigningKey::ed25519_from_seed(&[seed; 32]).verifying_key() }
}

fn group(topics: &[&str], members: &[(&str, Role)], epoch: u64) -> GroupPolicy {
    GroupPolicy {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        members: members.iter().map(|(d, r)| (d.to_string(), *r)).collect(),
        epoch,
        epoch_started_at: 1000,
        previous_epoch_grace_secs: 60,
    }
}

fn policy() -> Policy {
    let devices: BTreeMap<_, _> = [
        ("alice".to_string(), device(1, "alice")),
        ("bob".to_string(), device(2, "bob-user")),
        ("carol".to_string(), device(3, "carol")),
    ]
    .into();
    let groups: BTreeMap<_, _> = [
        ("plant".to_string(), group(&["plant/#"], &[("alice", Role::PubSub), ("bob", Role::Sub)], 3)),
        ("fleet".to_string(), group(&["fleet/+/tele"], &[("bob", Role::Pub), ("carol", Role::PubSub)], 1)),
    ]
    .into();
    Policy { version: 1, issued_at: 0, devices, groups }
}

fn compiled() -> CompiledPolicy {
    policy().compile("test").unwrap()
}

#[test]
fn identity_and_topic_lookups() {
    let p = compiled();
    let bob = p.device_by_username("bob-user").unwrap();
    assert_eq!(p.device_id(bob), "bob");
    assert_eq!(p.device_by_username("bob"), None, "usernames, not ids");
    assert_eq!(p.device_by_id("bob"), Some(bob));
    assert_eq!(p.verifying_key(bob), &SigningKey::ed25519_from_seed(&[2; 32]).verifying_key());
    let plant = p.group_of_topic("plant/hall/1").unwrap();
    assert_eq!(p.group(plant).id, "plant");
    assert_eq!(p.group_of_topic("plant"), Some(plant));
    assert_eq!(p.group_of_topic("fleet/x/tele").map(|g| p.group(g).id), Some("fleet"));
    assert_eq!(p.group_of_topic("fleet/x/other"), None);
    assert_eq!(p.group_of_topic("$SYS/broker/load"), None);
    assert_eq!(p.role(plant, bob), Some(Role::Sub));
    let carol = p.device_by_id("carol").unwrap();
    assert_eq!(p.role(plant, carol), None);
    assert_eq!(p.group_topics(plant), vec!["plant/#"]);
}

#[test]
fn epochs_and_grace() {
    let p = compiled();
    let plant = p.group_by_id("plant").unwrap();
    assert_eq!(p.check_epoch(plant, 3, 5000), EpochCheck::Current);
    assert_eq!(p.check_epoch(plant, 2, 1059), EpochCheck::PreviousInGrace);
    assert_eq!(p.check_epoch(plant, 2, 1060), EpochCheck::PreviousExpired);
    assert_eq!(p.check_epoch(plant, 1, 1000), EpochCheck::TooOld);
    assert_eq!(p.check_epoch(plant, 4, 1000), EpochCheck::Future);
    assert!(EpochCheck::PreviousInGrace.is_accepted() && !EpochCheck::PreviousExpired.is_accepted());
    assert!(!EpochCheck::Future.is_accepted() && !EpochCheck::TooOld.is_accepted());
}

#[test]
fn subscription_verdicts() {
    let p = compiled();
    let alice = p.device_by_id("alice");
    let bob = p.device_by_id("bob");
    let carol = p.device_by_id("carol");
    let plant = p.group_by_id("plant").unwrap();
    let fleet = p.group_by_id("fleet").unwrap();
    let v = |d, f: &str| p.check_subscription(d, f).unwrap();
    assert_eq!(v(alice, "plant/#"), SubscriptionVerdict::Readable(plant));
    assert_eq!(v(bob, "plant/+/x"), SubscriptionVerdict::Readable(plant));
    assert_eq!(v(carol, "plant/#"), SubscriptionVerdict::Forbidden(plant));
    // bob is only a publisher in fleet.
    assert_eq!(v(bob, "fleet/+/tele"), SubscriptionVerdict::Forbidden(fleet));
    assert_eq!(v(carol, "fleet/+/tele"), SubscriptionVerdict::Readable(fleet));
    // '#' spans protected and unprotected topics.
    assert_eq!(v(carol, "#"), SubscriptionVerdict::Readable(fleet));
    assert_eq!(v(None, "#"), SubscriptionVerdict::Mixed);
    assert_eq!(v(carol, "fleet/+/#"), SubscriptionVerdict::Readable(fleet));
    assert_eq!(v(alice, "fleet/+/#"), SubscriptionVerdict::Mixed);
    assert_eq!(v(alice, "other/#"), SubscriptionVerdict::UnprotectedOnly);
    assert_eq!(v(None, "$SYS/#"), SubscriptionVerdict::UnprotectedOnly);
    // Shared subscriptions are judged by their real filter.
    assert_eq!(v(carol, "$share/g/plant/#"), SubscriptionVerdict::Forbidden(plant));
    assert_eq!(v(alice, "$share/g/plant/#"), SubscriptionVerdict::Readable(plant));
    assert!(p.check_subscription(alice, "$share/g").is_err());
    assert!(p.check_subscription(alice, "plant/#/x").is_err());
    let scope = p.subscription_scope("#");
    assert!(scope.spans_unprotected);
    assert_eq!(scope.owners.len(), 2);
}

#[test]
fn reload_diff_lists_lost_rights() {
    let old = compiled();
    let mut next = policy();
    next.version = 2;
    // alice removed; bob loses plant membership and becomes sub-only in fleet
    // (loses pub); carol's username changes.
    next.devices.remove("alice");
    next.groups.get_mut("plant").unwrap().members.clear();
    next.groups.get_mut("plant").unwrap().epoch = 4;
    next.groups.get_mut("fleet").unwrap().members.insert("bob".into(), Role::Sub);
    next.devices.get_mut("carol").unwrap().username = "carol2".into();
    let new = next.compile("new").unwrap();
    let r = revocations(&old, &new);
    let ids: Vec<&str> = r.iter().map(|x| x.device_id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
    assert_eq!(r[0].reasons, vec![RevocationReason::DeviceRemoved]);
    assert_eq!(r[1].username, "bob-user");
    assert!(r[1].reasons.contains(&RevocationReason::MembershipRemoved { group: "plant".into() }), "{:?}", r[1]);
    assert!(r[1].reasons.contains(&RevocationReason::RoleReduced { group: "fleet".into(), from: Role::Pub, to: Role::Sub }));
    assert_eq!(r[2].reasons, vec![RevocationReason::UsernameChanged { new_username: "carol2".into() }]);

    // Gains revoke nothing; a replaced key does.
    let mut gain = policy();
    gain.groups.get_mut("plant").unwrap().members.insert("bob".into(), Role::PubSub);
    assert!(revocations(&old, &gain.compile("g").unwrap()).is_empty());
    let mut rekey = policy();
    rekey.devices.get_mut("bob").unwrap().sign = SigningKey::ed25519_from_seed(&[7; 32]).verifying_key();
    let r = revocations(&old, &rekey.compile("k").unwrap());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reasons, vec![RevocationReason::KeyChanged]);
    // Removing a whole group revokes its members.
    let mut nogroup = policy();
    nogroup.groups.remove("fleet");
    let r = revocations(&old, &nogroup.compile("n").unwrap());
    assert_eq!(r.iter().map(|x| x.device_id.as_str()).collect::<Vec<_>>(), ["bob", "carol"]);
}
