//! The administrator's realm: a directory holding the authority key, the
//! registered devices, the groups and their keys.
//!
//! ```text
//! DIR/authority.key     Ed25519 PKCS#8 PEM, 0600: signs policies and bundles
//! DIR/authority.pub     PEM SubjectPublicKeyInfo, 0644: what brokers and devices trust
//! DIR/realm.json        0644, public data: devices (identities, usernames), groups
//!                       (topics, members, epochs), and the export counter
//! DIR/group-keys.json   0600, secret: per group the current key and the previous
//!                       one (kept for the grace period); never exported as such
//! DIR/realm.lock        held (flock) by the command working on the realm
//! ```
//!
//! Every change is checked as a whole (the resulting policy must validate:
//! no overlapping groups, unique usernames, ...) before anything is written.
//! Writes are atomic (temp file + fsync + rename + directory fsync); the key
//! file is written before realm.json, and loading tolerates the one crash
//! window between them (a key for an epoch realm.json does not know yet is
//! ignored and replaced by the next rotation).
//!
//! Removing a member (or a device) rotates the group: a fresh random key
//! under the next epoch, which only the remaining members' bundles carry. The
//! previous key stays in group-keys.json so the remaining members get it in
//! their bundles during the grace period (to open messages still in flight);
//! it is dropped once the grace period is over.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::formats::bundle::{wrap_group_key, Bundle, BundleError, WrappedKey};
use crate::formats::identity::{Identity, IdentityError, RESERVED_DEVICE_IDS};
use crate::formats::ids::validate_id;
use crate::formats::keys::{read_private_file, write_atomic, GroupKey, KeyError, Overwrite};
use crate::formats::policy::model::{BadRole, GroupJson};
use crate::formats::policy::{validate_username, DevicePolicy, GroupPolicy, Policy, PolicyError, Role, MAX_GRACE_SECS};
use crate::formats::signed_doc::{AuthorityPublicKey, AuthoritySigningKey, SignedDocError};
use crate::formats::topic::validate_policy_filter;

pub const AUTHORITY_KEY_FILE: &str = "authority.key";
pub const AUTHORITY_PUB_FILE: &str = "authority.pub";
pub const REALM_FILE: &str = "realm.json";
pub const GROUP_KEYS_FILE: &str = "group-keys.json";
pub const LOCK_FILE: &str = "realm.lock";
pub const REALM_FORMAT: &str = "mqseal-realm-v1";
pub const GROUP_KEYS_FORMAT: &str = "mqseal-group-keys-v1";

/// Grace period given to a group's previous epoch unless `--grace` says otherwise.
pub const DEFAULT_GRACE_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum RealmError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dir} already holds a realm ({file} exists); refusing to overwrite it")]
    AlreadyInitialized { dir: PathBuf, file: PathBuf },
    #[error("{dir} is not a realm ({file} is missing); create one with `mqseal realm init --realm {dir}`")]
    NotARealm { dir: PathBuf, file: PathBuf },
    #[error("another mqseal command is working on realm {dir} (lock {lock} is held); try again when it has finished")]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Document(#[from] SignedDocError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Invalid(String),
    #[error("no device {0:?} in this realm")]
    UnknownDevice(String),
    #[error("device {0:?} is already registered; remove it first to replace its identity")]
    DeviceExists(String),
    #[error("no group {0:?} in this realm")]
    UnknownGroup(String),
    #[error("group {0:?} already exists")]
    GroupExists(String),
    #[error("device {device:?} is not a member of group {group:?}")]
    NotAMember { group: String, device: String },
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmDevice {
    pub identity: Identity,
    pub username: String,
}

/// A group as the realm keeps it: exactly what the policy publishes of it
/// (its key material lives apart, in the group-keys file).
pub type RealmGroup = GroupPolicy;

/// One group's secret keys.
#[derive(Debug, Clone)]
struct GroupKeys {
    current: (u64, GroupKey),
    previous: Option<(u64, GroupKey)>,
}

/// What `add_member` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Added,
    Unchanged,
    /// The role changed; when it lost a right the group was rotated to `epoch`.
    RoleChanged { from: Role, rotated_to: Option<u64> },
}

/// An open, locked realm.
pub struct Realm {
    dir: PathBuf,
    _lock: File,
    authority: AuthoritySigningKey,
    serial: u64,
    devices: BTreeMap<String, RealmDevice>,
    groups: BTreeMap<String, RealmGroup>,
    keys: BTreeMap<String, GroupKeys>,
}

impl std::fmt::Debug for Realm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realm")
            .field("dir", &self.dir)
            .field("devices", &self.devices.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

// --- file shapes --------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RealmJson {
    format: String,
    serial: u64,
    devices: BTreeMap<String, DeviceJson>,
    groups: BTreeMap<String, GroupJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceJson {
    identity: serde_json::Value,
    username: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupKeysJson {
    format: String,
    groups: BTreeMap<String, Vec<KeyJson>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    epoch: u64,
    key: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RealmError + '_ {
    move |source| RealmError::Io { path: path.to_owned(), source }
}

fn lock(dir: &Path) -> Result<File, RealmError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(RealmError::Locked { dir: dir.to_owned(), lock: path }),
        Err(fs::TryLockError::Error(source)) => Err(RealmError::Io { path, source }),
    }
}

impl Realm {
    /// Creates a realm in `dir` (created with mode 0700 if missing): a fresh
    /// authority key pair, an empty realm.json and an empty key file.
    pub fn init(dir: &Path) -> Result<Realm, RealmError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let lock = lock(dir)?;
        for name in [AUTHORITY_KEY_FILE, AUTHORITY_PUB_FILE, REALM_FILE, GROUP_KEYS_FILE] {
            let file = dir.join(name);
            if fs::symlink_metadata(&file).is_ok() {
                return Err(RealmError::AlreadyInitialized { dir: dir.to_owned(), file });
            }
        }
        let authority = AuthoritySigningKey::generate();
        authority.save(&dir.join(AUTHORITY_KEY_FILE), Overwrite::Refuse)?;
        authority.public().save(&dir.join(AUTHORITY_PUB_FILE), Overwrite::Refuse)?;
        let realm = Realm {
            dir: dir.to_owned(),
            _lock: lock,
            authority,
            serial: 0,
            devices: BTreeMap::new(),
            groups: BTreeMap::new(),
            keys: BTreeMap::new(),
        };
        realm.save()?;
        Ok(realm)
    }

    /// Opens (and locks) an existing realm.
    pub fn open(dir: &Path) -> Result<Realm, RealmError> {
        let realm_path = dir.join(REALM_FILE);
        if !realm_path.exists() {
            return Err(RealmError::NotARealm { dir: dir.to_owned(), file: realm_path });
        }
        let lock = lock(dir)?;
        let authority = AuthoritySigningKey::load(&dir.join(AUTHORITY_KEY_FILE))?;
        let published = AuthorityPublicKey::load(&dir.join(AUTHORITY_PUB_FILE))?;
        if published != authority.public() {
            return Err(RealmError::Corrupt {
                path: dir.join(AUTHORITY_PUB_FILE),
                detail: format!("does not match {AUTHORITY_KEY_FILE}"),
            });
        }

        let corrupt = |detail: String| RealmError::Corrupt { path: realm_path.clone(), detail };
        let bytes = fs::read(&realm_path).map_err(io_err(&realm_path))?;
        let raw: RealmJson = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if raw.format != REALM_FORMAT {
            return Err(corrupt(format!("format {:?}, expected {REALM_FORMAT:?}", raw.format)));
        }
        let mut devices = BTreeMap::new();
        for (id, d) in raw.devices {
            let origin = format!("{} devices.{id}.identity", realm_path.display());
            let identity_bytes = serde_json::to_vec(&d.identity).map_err(|e| corrupt(e.to_string()))?;
            let identity = Identity::from_json(&identity_bytes, &origin)?;
            if identity.id != id {
                return Err(corrupt(format!("devices.{id}: identity is for {:?}", identity.id)));
            }
            devices.insert(id, RealmDevice { identity, username: d.username });
        }
        let mut groups = BTreeMap::new();
        for (id, g) in raw.groups {
            let group = g
                .into_policy()
                .map_err(|BadRole(device, role)| corrupt(format!("groups.{id}.members.{device}: bad role {role:?}")))?;
            groups.insert(id, group);
        }
        let keys = load_group_keys(&dir.join(GROUP_KEYS_FILE), &groups)?;
        let realm = Realm { dir: dir.to_owned(), _lock: lock, authority, serial: raw.serial, devices, groups, keys };
        realm.policy_at(realm.serial.max(1), 0).validate(&realm_path.display().to_string())?;
        Ok(realm)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn authority_public(&self) -> AuthorityPublicKey {
        self.authority.public()
    }

    /// The export counter: the version of the last exported policy or bundle.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn devices(&self) -> &BTreeMap<String, RealmDevice> {
        &self.devices
    }

    pub fn groups(&self) -> &BTreeMap<String, RealmGroup> {
        &self.groups
    }

    /// The authority's key for its MQTT login token (`mqseal policy push`, `bundle push`).
    pub fn authority_login_key(&self) -> crate::formats::keys::SigningKey {
        self.authority.login_key()
    }

    /// The signed identity certificate of `device` (for `$mqseal/identity/ID`).
    pub fn identity_cert(&self, device: &str, now: u64) -> Result<Vec<u8>, RealmError> {
        let d = self.devices.get(device).ok_or_else(|| RealmError::UnknownDevice(device.into()))?;
        let cert = crate::formats::control::IdentityCert { identity: d.identity.clone(), username: d.username.clone(), issued_at: now };
        Ok(cert.sign(&self.authority)?)
    }

    /// The policy this realm would export, with the given version and time.
    pub fn policy_at(&self, version: u64, issued_at: u64) -> Policy {
        Policy {
            version,
            issued_at,
            devices: self
                .devices
                .iter()
                .map(|(id, d)| (id.clone(), DevicePolicy { username: d.username.clone(), sign: d.identity.sign.clone() }))
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|(id, g)| (id.clone(), g.clone()))
                .collect(),
        }
    }

    /// Runs a change; keeps it only if the realm still validates as a policy
    /// and was saved, otherwise restores the state in memory.
    fn transact<T>(&mut self, change: impl FnOnce(&mut Self) -> Result<T, RealmError>) -> Result<T, RealmError> {
        let saved = (self.serial, self.devices.clone(), self.groups.clone(), self.keys.clone());
        let result = change(self).and_then(|value| {
            self.check()?;
            self.save()?;
            Ok(value)
        });
        if result.is_err() {
            (self.serial, self.devices, self.groups, self.keys) = saved;
        }
        result
    }

    /// Checks the realm as a policy (after a change, before saving).
    fn check(&self) -> Result<(), RealmError> {
        self.policy_at(self.serial + 1, 0).validate(&format!("realm {}", self.dir.display()))?;
        Ok(())
    }

    /// Registers a device from its public identity; the username defaults to its id.
    pub fn add_device(&mut self, identity: Identity, username: Option<&str>) -> Result<(), RealmError> {
        let id = identity.id.clone();
        validate_id("device", &id).map_err(|e| RealmError::Invalid(e.to_string()))?;
        if RESERVED_DEVICE_IDS.contains(&id.as_str()) {
            return Err(RealmError::Invalid(format!("device id {id:?} is reserved")));
        }
        if self.devices.contains_key(&id) {
            return Err(RealmError::DeviceExists(id));
        }
        let username = username.unwrap_or(&id).to_string();
        validate_username(&username).map_err(|p| RealmError::Invalid(format!("username {p}")))?;
        if let Some((other, _)) = self.devices.iter().find(|(_, d)| d.username == username) {
            return Err(RealmError::Invalid(format!(
                "username {username:?} is already used by device {other:?}; give this device another with --username"
            )));
        }
        if let Some((other, _)) = self.devices.iter().find(|(_, d)| d.identity.sign == identity.sign || d.identity.kx == identity.kx) {
            return Err(RealmError::Invalid(format!(
                "this identity's keys are already registered for device {other:?}; every device needs its own keys"
            )));
        }
        self.transact(|realm| {
            realm.devices.insert(id, RealmDevice { identity, username });
            Ok(())
        })
    }

    /// Removes a device from every group (rotating each) and from the realm.
    /// Returns the groups rotated, with their new epochs.
    pub fn remove_device(&mut self, id: &str, now: u64) -> Result<Vec<(String, u64)>, RealmError> {
        if !self.devices.contains_key(id) {
            return Err(RealmError::UnknownDevice(id.into()));
        }
        self.transact(|realm| {
            let mut rotated = Vec::new();
            let groups: Vec<String> =
                realm.groups.iter().filter(|(_, g)| g.members.contains_key(id)).map(|(name, _)| name.clone()).collect();
            for group in groups {
                if let Some(g) = realm.groups.get_mut(&group) {
                    g.members.remove(id);
                }
                rotated.push((group.clone(), realm.rotate_in_memory(&group, now)?));
            }
            realm.devices.remove(id);
            Ok(rotated)
        })
    }

    /// Creates a group owning `topics`, with a fresh key at epoch 1.
    pub fn create_group(&mut self, id: &str, topics: &[String], grace_secs: u64, now: u64) -> Result<(), RealmError> {
        validate_id("group", id).map_err(|e| RealmError::Invalid(e.to_string()))?;
        if self.groups.contains_key(id) {
            return Err(RealmError::GroupExists(id.into()));
        }
        if topics.is_empty() {
            return Err(RealmError::Invalid("a group needs at least one --topic".into()));
        }
        for t in topics {
            validate_policy_filter(t).map_err(|e| RealmError::Invalid(format!("--topic '{t}': {e}")))?;
        }
        if grace_secs > MAX_GRACE_SECS {
            return Err(RealmError::Invalid(format!("--grace {grace_secs} is more than the maximum {MAX_GRACE_SECS}")));
        }
        self.transact(|realm| {
            let group = RealmGroup {
                topics: topics.to_vec(),
                members: BTreeMap::new(),
                epoch: 1,
                epoch_started_at: now,
                previous_epoch_grace_secs: grace_secs,
            };
            realm.groups.insert(id.into(), group);
            realm.keys.insert(id.into(), GroupKeys { current: (1, GroupKey::generate()), previous: None });
            Ok(())
        })
    }

    /// Adds a member (or changes its role; losing a right rotates the group,
    /// since the device still holds the key).
    pub fn add_member(&mut self, group: &str, device: &str, role: Role, now: u64) -> Result<MemberChange, RealmError> {
        if !self.devices.contains_key(device) {
            return Err(RealmError::UnknownDevice(device.into()));
        }
        let g = self.groups.get(group).ok_or_else(|| RealmError::UnknownGroup(group.into()))?;
        if g.members.get(device) == Some(&role) {
            return Ok(MemberChange::Unchanged);
        }
        self.transact(|realm| {
            let old = realm.groups.get_mut(group).and_then(|g| g.members.insert(device.into(), role));
            Ok(match old {
                None => MemberChange::Added,
                Some(old) if role.covers(old) => MemberChange::RoleChanged { from: old, rotated_to: None },
                Some(old) => MemberChange::RoleChanged { from: old, rotated_to: Some(realm.rotate_in_memory(group, now)?) },
            })
        })
    }

    /// Removes a member and rotates the group; returns the new epoch.
    pub fn remove_member(&mut self, group: &str, device: &str, now: u64) -> Result<u64, RealmError> {
        let g = self.groups.get(group).ok_or_else(|| RealmError::UnknownGroup(group.into()))?;
        if !g.members.contains_key(device) {
            return Err(RealmError::NotAMember { group: group.into(), device: device.into() });
        }
        self.transact(|realm| {
            if let Some(g) = realm.groups.get_mut(group) {
                g.members.remove(device);
            }
            realm.rotate_in_memory(group, now)
        })
    }

    /// Rotates a group: fresh random key, epoch + 1; returns the new epoch.
    pub fn rotate_group(&mut self, group: &str, now: u64) -> Result<u64, RealmError> {
        self.transact(|realm| realm.rotate_in_memory(group, now))
    }

    fn rotate_in_memory(&mut self, group: &str, now: u64) -> Result<u64, RealmError> {
        let g = self.groups.get_mut(group).ok_or_else(|| RealmError::UnknownGroup(group.into()))?;
        let epoch = g
            .epoch
            .checked_add(1)
            .ok_or_else(|| RealmError::Invalid(format!("group {group:?}: epoch counter exhausted")))?;
        let old_epoch = g.epoch;
        g.epoch = epoch;
        g.epoch_started_at = now;
        let keys = self.keys.get_mut(group).ok_or_else(|| RealmError::Corrupt {
            path: self.dir.join(GROUP_KEYS_FILE),
            detail: format!("no key for group {group:?}"),
        })?;
        let old_key = if keys.current.0 == old_epoch { keys.current.1.clone() } else { GroupKey::generate() };
        *keys = GroupKeys { current: (epoch, GroupKey::generate()), previous: Some((old_epoch, old_key)) };
        Ok(epoch)
    }

    /// Signs the current policy with the next version; returns the file bytes.
    pub fn export_policy(&mut self, now: u64) -> Result<Vec<u8>, RealmError> {
        let version = self.next_serial()?;
        let bytes = self.policy_at(version, now).sign(&self.authority)?;
        self.serial = version;
        self.save()?;
        Ok(bytes)
    }

    /// The keys of a group a member may hold at `now`: the current epoch's,
    /// and the previous one's while its grace period lasts.
    fn member_keys(&self, group: &str, now: u64) -> Result<Vec<(u64, &GroupKey)>, RealmError> {
        let g = self.groups.get(group).ok_or_else(|| RealmError::UnknownGroup(group.into()))?;
        let keys = self.keys.get(group).ok_or_else(|| RealmError::Corrupt {
            path: self.dir.join(GROUP_KEYS_FILE),
            detail: format!("no key for group {group:?}"),
        })?;
        let mut out = vec![(keys.current.0, &keys.current.1)];
        if let Some((epoch, key)) = &keys.previous {
            if now < g.epoch_started_at.saturating_add(g.previous_epoch_grace_secs) {
                out.push((*epoch, key));
            }
        }
        Ok(out)
    }

    /// Builds the signed key bundle for `device` with the next version.
    pub fn export_bundle(&mut self, device: &str, now: u64) -> Result<Vec<u8>, RealmError> {
        let d = self.devices.get(device).ok_or_else(|| RealmError::UnknownDevice(device.into()))?;
        let mut groups = BTreeMap::new();
        for (name, g) in &self.groups {
            if !g.members.contains_key(device) {
                continue;
            }
            let mut wrapped = Vec::new();
            for (epoch, key) in self.member_keys(name, now)? {
                wrapped.push(WrappedKey { epoch, cose: wrap_group_key(key, &d.identity.kx, device, name, epoch)? });
            }
            groups.insert(name.clone(), wrapped);
        }
        let version = self.next_serial()?;
        let bundle = Bundle { device: device.into(), kx: d.identity.kx, version, issued_at: now, groups };
        let bytes = bundle.sign(&self.authority)?;
        self.serial = version;
        self.save()?;
        Ok(bytes)
    }

    fn next_serial(&self) -> Result<u64, RealmError> {
        self.serial.checked_add(1).ok_or_else(|| RealmError::Invalid("export counter exhausted".into()))
    }

    /// Writes group-keys.json, then realm.json (see the module docs).
    fn save(&self) -> Result<(), RealmError> {
        write_atomic(&self.dir.join(GROUP_KEYS_FILE), self.group_keys_json().as_bytes(), 0o600, Overwrite::Allow)?;
        let raw = RealmJson {
            format: REALM_FORMAT.into(),
            serial: self.serial,
            devices: self
                .devices
                .iter()
                .map(|(id, d)| {
                    let identity = serde_json::from_slice(&d.identity.to_json()).unwrap_or(serde_json::Value::Null);
                    (id.clone(), DeviceJson { identity, username: d.username.clone() })
                })
                .collect(),
            groups: self.groups.iter().map(|(id, g)| (id.clone(), GroupJson::from(g))).collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&raw).map_err(|e| RealmError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(&self.dir.join(REALM_FILE), &bytes, 0o644, Overwrite::Allow)?;
        Ok(())
    }

    /// The secret key file, built by hand so no copy of a key outlives it
    /// (ids and base64url need no JSON escaping).
    fn group_keys_json(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        out.push_str("{\n  \"format\": \"");
        out.push_str(GROUP_KEYS_FORMAT);
        out.push_str("\",\n  \"groups\": {");
        let mut first_group = true;
        for (group, keys) in &self.keys {
            if !self.groups.contains_key(group) {
                continue;
            }
            out.push_str(if first_group { "\n    \"" } else { ",\n    \"" });
            first_group = false;
            out.push_str(group);
            out.push_str("\": [");
            let mut entries: Vec<&(u64, GroupKey)> = vec![&keys.current];
            if let Some(p) = &keys.previous {
                entries.push(p);
            }
            for (i, (epoch, key)) in entries.into_iter().enumerate() {
                let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(key.as_bytes()));
                out.push_str(if i == 0 { "\n      " } else { ",\n      " });
                out.push_str(&format!("{{\"epoch\": {epoch}, \"key\": \""));
                out.push_str(&encoded);
                out.push_str("\"}");
            }
            out.push_str("\n    ]");
        }
        out.push_str(if first_group { "}\n}\n" } else { "\n  }\n}\n" });
        out
    }
}

/// Reads group-keys.json and matches it with the groups of realm.json.
fn load_group_keys(path: &Path, groups: &BTreeMap<String, RealmGroup>) -> Result<BTreeMap<String, GroupKeys>, RealmError> {
    let corrupt = |detail: String| RealmError::Corrupt { path: path.to_owned(), detail };
    let bytes = read_private_file(path)?;
    let mut raw: GroupKeysJson = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if raw.format != GROUP_KEYS_FORMAT {
        return Err(corrupt(format!("format {:?}, expected {GROUP_KEYS_FORMAT:?}", raw.format)));
    }
    let mut keys = BTreeMap::new();
    for (name, group) in groups {
        let entries = raw.groups.get(name).ok_or_else(|| corrupt(format!("no keys for group {name:?}")))?;
        let mut by_epoch: BTreeMap<u64, GroupKey> = BTreeMap::new();
        for e in entries {
            let mut decoded = Zeroizing::new(
                URL_SAFE_NO_PAD.decode(&e.key).map_err(|_| corrupt(format!("groups.{name}: key is not base64url")))?,
            );
            let raw_key: [u8; 32] =
                decoded.as_slice().try_into().map_err(|_| corrupt(format!("groups.{name}: key is not 32 bytes")))?;
            decoded.zeroize();
            by_epoch.insert(e.epoch, GroupKey::from_bytes(raw_key));
        }
        // A key newer than realm.json's epoch is the trace of a crash between
        // the two writes; it was never exported, so it is dropped.
        let current = by_epoch
            .remove(&group.epoch)
            .ok_or_else(|| corrupt(format!("no key for group {name:?} epoch {}", group.epoch)))?;
        let previous = group.epoch.checked_sub(1).and_then(|p| by_epoch.remove(&p).map(|k| (p, k)));
        keys.insert(name.clone(), GroupKeys { current: (group.epoch, current), previous });
    }
    for entries in raw.groups.values_mut() {
        for e in entries.iter_mut() {
            e.key.zeroize();
        }
    }
    Ok(keys)
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
