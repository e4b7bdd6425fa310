//! The signed policy file: tampering, another authority, versions.

use std::collections::BTreeMap;

use mqseal_core::formats::keys::SigningKey;
use mqseal_core::formats::policy::{load_policy_file, DevicePolicy, GroupPolicy, Policy, Role};
use mqseal_core::formats::signed_doc::AuthoritySigningKey;

fn sample(version: u64) -> Policy {
    let mut devices = BTreeMap::new();
    devices.insert(
        "1111".to_string(),
        DevicePolicy { username: "1111".into(), sign: SigningKey::ed25519_from_seed(&[1; 32]).verifying_key() },
    );
    let mut groups = BTreeMap::new();
    groups.insert(
        "g1".to_string(),
        GroupPolicy {
            topics: vec!["g1/#".into()],
            members: [("1111".to_string(), Role::PubSub)].into(),
            epoch: 1,
            epoch_started_at: 10,
            previous_epoch_grace_secs: 60,
        },
    );
    Policy { version, issued_at: 100, devices, groups }
}

#[test]
fn signed_policy_round_trips_through_a_file() {
    let authority = AuthoritySigningKey::from_seed(&[9; 32]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, sample(4).sign(&authority).unwrap()).unwrap();
    let compiled = load_policy_file(&path, &authority.public()).unwrap();
    assert_eq!(compiled.version(), 4);
    let g = compiled.group_of_topic("g1/x").unwrap();
    let d = compiled.device_by_username("1111").unwrap();
    assert_eq!(compiled.role(g, d), Some(Role::PubSub));
    let read = mqseal_core::formats::policy::read_policy_file(&path, &authority.public()).unwrap();
    assert_eq!(read, sample(4));
}

#[test]
fn tampered_policy_is_refused() {
    let authority = AuthoritySigningKey::from_seed(&[9; 32]);
    let signed = String::from_utf8(sample(4).sign(&authority).unwrap()).unwrap();
    // Make the device a member of nothing... or rather grant more: change the role.
    let tampered = signed.replace("\"1111\":\"pubsub\"", "\"1111\":\"sub\"");
    assert_ne!(tampered, signed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, tampered).unwrap();
    let err = load_policy_file(&path, &authority.public()).unwrap_err();
    assert_eq!(err.reason(), "doc-bad-signature");
    assert!(err.to_string().starts_with(&format!("{}:", path.display())), "{err}");
    // Raising the version without re-signing is tampering too.
    let bumped = signed.replace("\"version\":4", "\"version\":5");
    std::fs::write(&path, bumped).unwrap();
    assert_eq!(load_policy_file(&path, &authority.public()).unwrap_err().reason(), "doc-bad-signature");
}

#[test]
fn policy_signed_by_another_authority_is_refused() {
    let authority = AuthoritySigningKey::from_seed(&[9; 32]);
    let rogue = AuthoritySigningKey::from_seed(&[8; 32]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, sample(4).sign(&rogue).unwrap()).unwrap();
    let err = load_policy_file(&path, &authority.public()).unwrap_err();
    assert_eq!(err.reason(), "doc-wrong-authority");
    let text = err.to_string();
    assert!(text.contains(&rogue.public().fingerprint()) && text.contains(&authority.public().fingerprint()), "{text}");
}

#[test]
fn invalid_policy_cannot_be_signed() {
    let authority = AuthoritySigningKey::from_seed(&[9; 32]);
    let mut p = sample(1);
    p.groups.get_mut("g1").unwrap().members.insert("ghost".into(), Role::Sub);
    let err = p.sign(&authority).unwrap_err();
    assert_eq!(err.to_string(), "policy: groups.g1.members.ghost: no device \"ghost\" in devices");
}
