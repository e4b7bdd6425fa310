//! The administrator's realm: init, devices, groups, policy and bundle export,
//! rotation on removal, locking, and crash tolerance.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mqseal_core::device::realm::{MemberChange, Realm, RealmError};
use mqseal_core::formats::bundle::{unwrap_group_key, Bundle};
use mqseal_core::formats::identity::{DeviceDir, Identity};
use mqseal_core::formats::keys::{KxSecret, SignAlg};
use mqseal_core::formats::policy::{load_policy_file, Role};
use mqseal_core::formats::signed_doc::AuthorityPublicKey;

const T0: u64 = 1_700_000_000;

fn device(root: &Path, id: &str, alg: SignAlg) -> (Identity, KxSecret) {
    let dir = DeviceDir::keygen(&root.join(id), id, alg).unwrap();
    (dir.identity().clone(), dir.kx_secret().unwrap())
}

/// A realm in `root/realm` with one Ed25519 device, alice, a `pubsub` member
/// of group g1 (`g1/#`): its directory, the open realm, and alice's kx secret.
fn realm_with_alice_in_g1(root: &Path) -> (std::path::PathBuf, Realm, KxSecret) {
    let dir = root.join("realm");
    let (alice, alice_kx) = device(root, "alice", SignAlg::Ed25519);
    let mut realm = Realm::init(&dir).unwrap();
    realm.add_device(alice, None).unwrap();
    realm.create_group("g1", &["g1/#".into()], 60, T0).unwrap();
    realm.add_member("g1", "alice", Role::PubSub, T0).unwrap();
    (dir, realm, alice_kx)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn realm_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("realm");
    let (alice, alice_kx) = device(tmp.path(), "alice", SignAlg::Ed25519);
    let (bob, bob_kx) = device(tmp.path(), "bob", SignAlg::P256);
    {
        let mut realm = Realm::init(&dir).unwrap();
        realm.add_device(alice.clone(), None).unwrap();
        realm.add_device(bob.clone(), Some("bob-mqtt")).unwrap();
        realm.create_group("plant", &["plant/#".into()], 600, T0).unwrap();
        assert_eq!(realm.add_member("plant", "alice", Role::PubSub, T0).unwrap(), MemberChange::Added);
        assert_eq!(realm.add_member("plant", "bob", Role::Sub, T0).unwrap(), MemberChange::Added);
        assert_eq!(realm.add_member("plant", "bob", Role::Sub, T0).unwrap(), MemberChange::Unchanged);
    }
    assert_eq!(mode(&dir.join("authority.key")), 0o600);
    assert_eq!(mode(&dir.join("group-keys.json")), 0o600);
    assert_eq!(mode(&dir.join("authority.pub")), 0o644);
    let authority = AuthorityPublicKey::load(&dir.join("authority.pub")).unwrap();

    // Reopened, the realm holds the same state; exports are signed and versioned.
    let mut realm = Realm::open(&dir).unwrap();
    assert_eq!(realm.devices()["bob"].username, "bob-mqtt");
    let policy_path = tmp.path().join("policy.json");
    std::fs::write(&policy_path, realm.export_policy(T0).unwrap()).unwrap();
    let policy = load_policy_file(&policy_path, &authority).unwrap();
    assert_eq!(policy.version(), 1);
    let plant = policy.group_of_topic("plant/a").unwrap();
    let bob_idx = policy.device_by_username("bob-mqtt").unwrap();
    assert_eq!(policy.role(plant, bob_idx), Some(Role::Sub));
    assert_eq!(policy.group(plant).epoch, 1);
    // No group key material in the policy file.
    let text = std::fs::read_to_string(&policy_path).unwrap();
    let keys_file = std::fs::read_to_string(dir.join("group-keys.json")).unwrap();
    let key_b64 = keys_file.split("\"key\": \"").nth(1).unwrap().split('"').next().unwrap();
    assert!(!text.contains(key_b64));

    let bundle_bytes = realm.export_bundle("bob", T0).unwrap();
    let bundle = Bundle::from_signed(&bundle_bytes, &authority, "bob.bundle").unwrap();
    assert_eq!(bundle.version, 2, "the export counter is shared with the policy");
    assert!(!String::from_utf8_lossy(&bundle_bytes).contains(key_b64));
    let bob_keys = bundle.unwrap_all(&bob_kx, "bob.bundle").unwrap();
    let alice_bundle = Bundle::from_signed(&realm.export_bundle("alice", T0).unwrap(), &authority, "a").unwrap();
    let alice_keys = alice_bundle.unwrap_all(&alice_kx, "a").unwrap();
    assert_eq!(
        bob_keys[&("plant".to_string(), 1)].as_bytes(),
        alice_keys[&("plant".to_string(), 1)].as_bytes(),
        "both members hold the same group key"
    );
    // A bundle cannot be unwrapped with another device's key.
    assert_eq!(bundle.unwrap_all(&alice_kx, "b").unwrap_err().reason(), "bundle-wrong-kx-key");

    // Removing bob rotates the group.
    let epoch = realm.remove_member("plant", "bob", T0 + 10).unwrap();
    assert_eq!(epoch, 2);
    let removed_bundle = Bundle::from_signed(&realm.export_bundle("bob", T0 + 10).unwrap(), &authority, "b2").unwrap();
    assert!(removed_bundle.groups.is_empty(), "a removed member's next bundle has nothing for the group");
    let alice_bundle = Bundle::from_signed(&realm.export_bundle("alice", T0 + 10).unwrap(), &authority, "a2").unwrap();
    let epochs: Vec<u64> = alice_bundle.groups["plant"].iter().map(|k| k.epoch).collect();
    assert_eq!(epochs, [2, 1], "current and, during grace, previous");
    let alice_keys2 = alice_bundle.unwrap_all(&alice_kx, "a2").unwrap();
    let new_key = &alice_keys2[&("plant".to_string(), 2)];
    assert_ne!(new_key.as_bytes(), alice_keys[&("plant".to_string(), 1)].as_bytes(), "fresh random key");
    // The removed member cannot unwrap the new epoch's key, whatever ids it claims.
    let wrapped_for_alice = &alice_bundle.groups["plant"][0].cose;
    for claimed in ["alice", "bob"] {
        assert!(unwrap_group_key(wrapped_for_alice, &bob_kx, claimed, "plant", 2).is_err());
    }
    // After the grace period only the current key is handed out.
    let later = Bundle::from_signed(&realm.export_bundle("alice", T0 + 10 + 600).unwrap(), &authority, "a3").unwrap();
    assert_eq!(later.groups["plant"].iter().map(|k| k.epoch).collect::<Vec<_>>(), [2]);

    // The exported policy reflects the new epoch, with a higher version.
    std::fs::write(&policy_path, realm.export_policy(T0 + 20).unwrap()).unwrap();
    let policy2 = load_policy_file(&policy_path, &authority).unwrap();
    assert!(policy2.version() > policy.version());
    let plant2 = policy2.group_by_id("plant").unwrap();
    assert_eq!(policy2.group(plant2).epoch, 2);
    assert_eq!(policy2.group(plant2).epoch_started_at, T0 + 10);
    assert_eq!(policy2.role(plant2, policy2.device_by_id("bob").unwrap()), None);
}

#[test]
fn removing_a_device_rotates_all_its_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("realm");
    let (alice, _) = device(tmp.path(), "alice", SignAlg::Ed25519);
    let (bob, _) = device(tmp.path(), "bob", SignAlg::Ed25519);
    let mut realm = Realm::init(&dir).unwrap();
    realm.add_device(alice, None).unwrap();
    realm.add_device(bob, None).unwrap();
    realm.create_group("g1", &["g1/#".into()], 60, T0).unwrap();
    realm.create_group("g2", &["g2/#".into()], 60, T0).unwrap();
    realm.create_group("g3", &["g3/#".into()], 60, T0).unwrap();
    for g in ["g1", "g2", "g3"] {
        realm.add_member(g, "alice", Role::PubSub, T0).unwrap();
    }
    realm.add_member("g1", "bob", Role::Pub, T0).unwrap();
    realm.add_member("g3", "bob", Role::Sub, T0).unwrap();
    let rotated = realm.remove_device("bob", T0 + 1).unwrap();
    assert_eq!(rotated, vec![("g1".to_string(), 2), ("g3".to_string(), 2)]);
    assert_eq!(realm.groups()["g2"].epoch, 1);
    assert!(!realm.devices().contains_key("bob"));
    assert!(matches!(realm.export_bundle("bob", T0), Err(RealmError::UnknownDevice(_))));
    // A role change that loses a right rotates too (the device still holds the key).
    let change = realm.add_member("g2", "alice", Role::Pub, T0 + 2).unwrap();
    assert_eq!(change, MemberChange::RoleChanged { from: Role::PubSub, rotated_to: Some(2) });
    let change = realm.add_member("g2", "alice", Role::PubSub, T0 + 3).unwrap();
    assert_eq!(change, MemberChange::RoleChanged { from: Role::Pub, rotated_to: None });
}

#[test]
fn bad_changes_are_refused_and_leave_the_realm_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("realm");
    let (alice, _) = device(tmp.path(), "alice", SignAlg::Ed25519);
    let (bob, _) = device(tmp.path(), "bob", SignAlg::Ed25519);
    let mut realm = Realm::init(&dir).unwrap();
    realm.add_device(alice.clone(), Some("shared")).unwrap();
    let err = realm.add_device(bob.clone(), Some("shared")).unwrap_err().to_string();
    assert!(err.contains("already used by device \"alice\""), "{err}");
    assert!(realm.add_device(bob.clone(), Some("a/#")).is_err());
    assert!(matches!(realm.add_device(alice.clone(), None), Err(RealmError::DeviceExists(_))));
    realm.create_group("g1", &["site/+/tele".into()], 60, T0).unwrap();
    let err = realm.create_group("g2", &["site/dev1/#".into()], 60, T0).unwrap_err().to_string();
    assert!(err.contains("groups.g2.topics[0]") && err.contains("overlaps 'site/+/tele' of group 'g1'"), "{err}");
    assert!(!realm.groups().contains_key("g2"), "refused change is not kept");
    let err = realm.create_group("g3", &["a/#/b".into()], 60, T0).unwrap_err().to_string();
    assert!(err.contains("--topic 'a/#/b'") && err.contains("'#' must be the last level"), "{err}");
    assert!(matches!(realm.add_member("g1", "nobody", Role::Sub, T0), Err(RealmError::UnknownDevice(_))));
    assert!(matches!(realm.add_member("nogroup", "alice", Role::Sub, T0), Err(RealmError::UnknownGroup(_))));
    assert!(matches!(realm.remove_member("g1", "alice", T0), Err(RealmError::NotAMember { .. })));
    drop(realm);
    let realm = Realm::open(&dir).unwrap();
    assert_eq!(realm.groups().keys().collect::<Vec<_>>(), ["g1"]);
    assert_eq!(realm.groups()["g1"].epoch, 1);
}

#[test]
fn concurrent_commands_are_refused_and_init_does_not_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("realm");
    let realm = Realm::init(&dir).unwrap();
    let err = Realm::open(&dir).unwrap_err();
    assert!(matches!(err, RealmError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another mqseal command is working on realm"), "{err}");
    drop(realm);
    let err = Realm::init(&dir).unwrap_err();
    assert!(matches!(err, RealmError::AlreadyInitialized { .. }), "{err}");
    let err = Realm::open(&tmp.path().join("nothing")).unwrap_err().to_string();
    assert!(err.contains("mqseal realm init --realm"), "{err}");
}

#[test]
fn crash_between_key_file_and_realm_file_is_tolerated() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, mut realm, alice_kx) = realm_with_alice_in_g1(tmp.path());
    let authority = realm.authority_public();
    let before = Bundle::from_signed(&realm.export_bundle("alice", T0).unwrap(), &authority, "x").unwrap();
    let old_realm_json = std::fs::read(dir.join("realm.json")).unwrap();
    realm.rotate_group("g1", T0 + 1).unwrap();
    drop(realm);
    // As if realm.json had not been replaced yet when the machine crashed.
    std::fs::write(dir.join("realm.json"), old_realm_json).unwrap();
    let mut realm = Realm::open(&dir).unwrap();
    assert_eq!(realm.groups()["g1"].epoch, 1);
    let after = Bundle::from_signed(&realm.export_bundle("alice", T0 + 2).unwrap(), &authority, "y").unwrap();
    let k1 = before.unwrap_all(&alice_kx, "x").unwrap();
    let k2 = after.unwrap_all(&alice_kx, "y").unwrap();
    assert_eq!(k1[&("g1".to_string(), 1)].as_bytes(), k2[&("g1".to_string(), 1)].as_bytes());
    assert_eq!(realm.rotate_group("g1", T0 + 3).unwrap(), 2);
}

#[test]
fn a_realm_file_with_a_bad_role_is_refused_with_the_member_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, realm, _) = realm_with_alice_in_g1(tmp.path());
    drop(realm);
    let realm_json = dir.join("realm.json");
    let text = std::fs::read_to_string(&realm_json).unwrap();
    assert!(text.contains("\"alice\": \"pubsub\""), "{text}");
    std::fs::write(&realm_json, text.replace("\"alice\": \"pubsub\"", "\"alice\": \"owner\"")).unwrap();
    let err = Realm::open(&dir).map(|_| ()).unwrap_err();
    assert!(matches!(err, RealmError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("groups.g1.members.alice: bad role \"owner\""), "{err}");
}
