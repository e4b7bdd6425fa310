//! From realm to device: join, seal, open, and every way opening must fail.

use std::path::{Path, PathBuf};

use mqseal_core::device::realm::{unix_now, Realm};
use mqseal_core::device::store::{join, DeviceStore, DeviceStoreError, OpenError, SealError};
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::identity::DeviceDir;
use mqseal_core::formats::keys::SignAlg;
use mqseal_core::formats::policy::Role;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    realm: Realm,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let mut realm = Realm::init(&root.join("realm")).unwrap();
        for (id, alg) in [("alice", SignAlg::Ed25519), ("bob", SignAlg::P256), ("carol", SignAlg::Ed25519)] {
            let dir = DeviceDir::keygen(&root.join(id), id, alg).unwrap();
            realm.add_device(dir.identity().clone(), None).unwrap();
        }
        let now = unix_now();
        realm.create_group("plant", &["plant/#".into()], 600, now).unwrap();
        realm.create_group("fleet", &["fleet/+/tele".into()], 600, now).unwrap();
        realm.add_member("plant", "alice", Role::PubSub, now).unwrap();
        realm.add_member("plant", "bob", Role::Sub, now).unwrap();
        realm.add_member("fleet", "carol", Role::PubSub, now).unwrap();
        std::fs::write(root.join("authority.pub"), realm.authority_public().to_pem().unwrap()).unwrap();
        Setup { _tmp: tmp, root, realm }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Exports the policy and the device's bundle and joins with them.
    fn join(&mut self, id: &str) -> Result<mqseal_core::device::store::JoinReport, DeviceStoreError> {
        let now = unix_now();
        let policy = self.root.join("policy.json");
        std::fs::write(&policy, self.realm.export_policy(now).unwrap()).unwrap();
        let bundle = self.root.join(format!("{id}.bundle"));
        std::fs::write(&bundle, self.realm.export_bundle(id, now).unwrap()).unwrap();
        join(&self.dir(id), &self.root.join("authority.pub"), &bundle, &policy)
    }
}

fn seal(dir: &Path, topic: &str, msg: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut sealer = DeviceStore::open(dir).unwrap().sealer().unwrap();
    sealer.seal(topic, msg, AeadAlg::default()).map(|s| s.envelope)
}

fn open(dir: &Path, topic: &str, envelope: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut receiver = DeviceStore::open(dir).unwrap().receiver().unwrap();
    receiver.open(topic, envelope).map(|o| o.payload)
}

#[test]
fn members_round_trip_and_others_cannot_open() {
    let mut s = Setup::new();
    for id in ["alice", "bob", "carol"] {
        s.join(id).unwrap();
    }
    let report = s.join("bob").unwrap();
    assert_eq!(report.groups.keys().collect::<Vec<_>>(), ["plant"]);

    let env = seal(&s.dir("alice"), "plant/hall1/temp", b"21.5").unwrap();
    let mut receiver = DeviceStore::open(&s.dir("bob")).unwrap().receiver().unwrap();
    let opened = receiver.open("plant/hall1/temp", &env).unwrap();
    assert_eq!(opened.payload, b"21.5");
    assert_eq!((opened.sender.as_str(), opened.group.as_str(), opened.epoch), ("alice", "plant", 1));
    // Replay of the same envelope.
    let err = receiver.open("plant/hall1/temp", &env).unwrap_err();
    assert_eq!(err.reason(), "replay");
    drop(receiver);
    // ... also after a restart (the replay state is on disk).
    assert_eq!(open(&s.dir("bob"), "plant/hall1/temp", &env).unwrap_err().reason(), "replay");

    // A non-member has no key.
    let err = open(&s.dir("carol"), "plant/hall1/temp", &env).unwrap_err();
    assert_eq!(err.reason(), "no-key", "{err}");
    // Another topic of the same group: the topic is bound into the signature.
    let env2 = seal(&s.dir("alice"), "plant/hall1/temp", b"22").unwrap();
    assert_eq!(open(&s.dir("bob"), "plant/hall2/temp", &env2).unwrap_err().reason(), "bad-signature");
    // A topic of another group, or no group.
    assert_eq!(open(&s.dir("carol"), "fleet/x/tele", &env2).unwrap_err().reason(), "wrong-group");
    assert_eq!(open(&s.dir("bob"), "other/topic", &env2).unwrap_err().reason(), "not-protected");
    // The original topic still opens (the failed attempts did not advance the replay state).
    assert_eq!(open(&s.dir("bob"), "plant/hall1/temp", &env2).unwrap(), b"22");
}

#[test]
fn roles_are_enforced_on_both_sides() {
    let mut s = Setup::new();
    for id in ["alice", "bob", "carol"] {
        s.join(id).unwrap();
    }
    // bob is sub-only: the CLI refuses to seal ...
    let err = seal(&s.dir("bob"), "plant/x", b"evil").unwrap_err();
    assert!(matches!(err, SealError::NotAPublisher { .. }), "{err}");
    assert!(err.to_string().contains("its role is sub"), "{err}");
    // ... and an envelope bob builds by hand with the group key he holds is refused.
    let store = DeviceStore::open(&s.dir("bob")).unwrap();
    let key = store.group_key("plant", 1).unwrap().clone();
    let signer = store.device().signing_key().unwrap();
    let forged = envelope::seal(&SealInput {
        signer: &signer,
        sender: "bob",
        group: "plant",
        epoch: 1,
        seq: 1000,
        timestamp_ms: 0,
        topic: "plant/x",
        aead: AeadAlg::ChaCha20Poly1305,
        group_key: &key,
        plaintext: b"evil",
    })
    .unwrap();
    assert_eq!(open(&s.dir("alice"), "plant/x", &forged).unwrap_err().reason(), "not-a-publisher");
    // Claiming to be alice with bob's key: the signature fails.
    let spoofed = envelope::seal(&SealInput {
        signer: &signer,
        sender: "alice",
        group: "plant",
        epoch: 1,
        seq: 1000,
        timestamp_ms: 0,
        topic: "plant/x",
        aead: AeadAlg::A256Gcm,
        group_key: &key,
        plaintext: b"evil",
    })
    .unwrap();
    let err = open(&s.dir("bob"), "plant/x", &spoofed).unwrap_err();
    assert!(matches!(err.reason(), "key-alg-mismatch" | "bad-signature"), "{err}");
    // Unprotected topics have nothing to seal.
    assert!(matches!(seal(&s.dir("alice"), "free/topic", b"x"), Err(SealError::Unprotected(_))));
}

#[test]
fn removed_member_cannot_open_the_new_epoch() {
    let mut s = Setup::new();
    for id in ["alice", "bob"] {
        s.join(id).unwrap();
    }
    let old = seal(&s.dir("alice"), "plant/a", b"before").unwrap();
    assert_eq!(open(&s.dir("bob"), "plant/a", &old).unwrap(), b"before");

    assert_eq!(s.realm.remove_member("plant", "bob", unix_now()).unwrap(), 2);
    s.join("alice").unwrap();
    let new = seal(&s.dir("alice"), "plant/a", b"after").unwrap();
    // bob, still on the old policy, sees an epoch from the future it has no key for.
    let err = open(&s.dir("bob"), "plant/a", &new).unwrap_err();
    assert_eq!(err.reason(), "epoch-future", "{err}");
    // bob re-joins with the new policy and his new bundle: nothing for plant.
    let report = s.join("bob").unwrap();
    assert!(report.groups.is_empty(), "{report:?}");
    let err = open(&s.dir("bob"), "plant/a", &new).unwrap_err();
    assert_eq!(err.reason(), "no-key", "{err}");
    // And bob's old key does not decrypt the new epoch even when forced: the
    // key derivation binds the epoch (and the key is fresh anyway).
    let store_alice = DeviceStore::open(&s.dir("alice")).unwrap();
    assert!(store_alice.group_key("plant", 2).is_some());
    let parsed = envelope::parse(&new, 65536).unwrap();
    let old_key = store_alice.group_key("plant", 1).unwrap();
    assert_eq!(parsed.decrypt("plant/a", old_key).unwrap_err().reason(), "decrypt-failed");
}

#[test]
fn previous_epoch_is_accepted_only_within_grace() {
    let mut s = Setup::new();
    for id in ["alice", "bob"] {
        s.join(id).unwrap();
    }
    let old = seal(&s.dir("alice"), "plant/a", b"epoch1").unwrap();
    s.realm.rotate_group("plant", unix_now()).unwrap();
    s.join("bob").unwrap();
    let store = DeviceStore::open(&s.dir("bob")).unwrap();
    assert!(store.group_key("plant", 1).is_some() && store.group_key("plant", 2).is_some());
    let mut receiver = store.receiver().unwrap();
    // 600 s grace: too late ...
    let err = receiver.open_at("plant/a", &old, unix_now() + 601).unwrap_err();
    assert_eq!(err.reason(), "epoch-previous-expired");
    // ... in time.
    assert_eq!(receiver.open_at("plant/a", &old, unix_now()).unwrap().payload, b"epoch1");
}

#[test]
fn join_refuses_what_it_must() {
    let mut s = Setup::new();
    s.join("alice").unwrap();
    let now = unix_now();
    let root = s.root.clone();
    let authority = root.join("authority.pub");

    // An older policy (a replayed file) is refused.
    let old_policy = root.join("old-policy.json");
    std::fs::write(&old_policy, s.realm.export_policy(now).unwrap()).unwrap();
    s.join("alice").unwrap();
    let bundle = root.join("alice.bundle");
    let err = join(&s.dir("alice"), &authority, &bundle, &old_policy).unwrap_err();
    assert_eq!(match &err { DeviceStoreError::Policy(p) => p.reason(), _ => "other" }, "policy-not-newer", "{err}");

    // A bundle for another device.
    let policy = root.join("policy.json");
    let bob_bundle = root.join("bob.bundle");
    std::fs::write(&bob_bundle, s.realm.export_bundle("bob", now).unwrap()).unwrap();
    let err = join(&s.dir("alice"), &authority, &bob_bundle, &policy).unwrap_err();
    assert!(err.to_string().contains("this bundle is for device \"bob\", not for \"alice\""), "{err}");

    // A tampered bundle.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let tampered = root.join("tampered.bundle");
    std::fs::write(&tampered, text.replace("\"version\":", "\"version\":9")).unwrap();
    let err = join(&s.dir("alice"), &authority, &tampered, &policy).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");

    // Another realm's authority.
    let other = Realm::init(&root.join("other-realm")).unwrap();
    let other_pub = root.join("other.pub");
    std::fs::write(&other_pub, other.authority_public().to_pem().unwrap()).unwrap();
    let err = join(&s.dir("alice"), &other_pub, &bundle, &policy).unwrap_err();
    assert!(matches!(err, DeviceStoreError::OtherAuthority { .. }), "{err}");

    // A device the policy does not know cannot join.
    DeviceDir::keygen(&root.join("dave"), "dave", SignAlg::Ed25519).unwrap();
    let err = join(&root.join("dave"), &authority, &bundle, &policy).unwrap_err();
    assert!(err.to_string().contains("not in this policy"), "{err}");

    // A device that never joined cannot seal or open.
    let err = DeviceStore::open(&s.dir("carol")).unwrap_err();
    assert!(err.to_string().contains("has not joined a realm yet"), "{err}");
}
