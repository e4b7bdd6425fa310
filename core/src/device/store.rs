//! What a device keeps besides its own keys, and the seal/open logic the CLI
//! (`mqseal seal`/`open`, and `pub`/`sub`) runs on it.
//!
//! Files in the device directory (next to `ID.pub`, `ID.sign.pem`, `ID.kx.pem`, `seq`):
//!
//! ```text
//! authority.pub   the realm authority's public key (PEM SPKI), fixed at the first join
//! policy.json     the signed policy, exactly as exported (re-verified on every load)
//! keys.json       0600: the group keys from the bundle, by group and epoch, and the bundle version
//! replay.json     0600: per sender, the highest sequence number opened so far
//! replay.lock     held by the process that opens envelopes (one at a time)
//! ```
//!
//! `join` verifies both documents against the authority key, checks they are
//! for this device, unwraps the keys, and replaces policy and keys (keys
//! first, each file atomically). It never goes back to an older policy or
//! bundle, and never switches to another authority.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::device::sequence::{SequenceCounter, SequenceError};
use crate::formats::bundle::{Bundle, BundleError};
use crate::formats::envelope::{self, AeadAlg, EnvelopeError, SealInput};
use crate::formats::identity::{DeviceDir, IdentityError};
use crate::formats::keys::{read_private_file, write_atomic, GroupKey, KeyError, Overwrite, SigningKey};
use crate::formats::policy::{CompiledPolicy, EpochCheck, Policy, PolicyError};
use crate::formats::signed_doc::{self, AuthorityPublicKey, SignedDocError};
use crate::formats::topic::{validate_topic_name, TopicError};

pub const AUTHORITY_FILE: &str = "authority.pub";
pub const POLICY_FILE: &str = "policy.json";
pub const KEYS_FILE: &str = "keys.json";
pub const REPLAY_FILE: &str = "replay.json";
pub const REPLAY_LOCK_FILE: &str = "replay.lock";
pub const KEYS_FORMAT: &str = "mqseal-device-keys-v1";
pub const REPLAY_FORMAT: &str = "mqseal-replay-v1";

/// The largest envelope a device opens (the broker's default cap).
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum DeviceStoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Document(#[from] SignedDocError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error(
        "{dir} already belongs to the realm of authority {stored}, but {given} was given; \
         refusing to switch realms (remove {AUTHORITY_FILE}, {POLICY_FILE} and {KEYS_FILE} to re-home the device)"
    )]
    OtherAuthority { dir: PathBuf, stored: String, given: String },
    #[error(
        "{dir}: this device has not joined a realm yet; run `mqseal join --device {dir} --authority FILE` \
         with -H HOST -p PORT (over MQTT) or --bundle FILE --policy FILE"
    )]
    NotJoined { dir: PathBuf },
    #[error("{origin}: device {device:?} is not in this policy")]
    NotInPolicy { origin: String, device: String },
    #[error(
        "{origin}: the policy registers another signing key for device {device:?} than {identity}: \
         the realm holds a different identity for this device"
    )]
    PolicyKeyMismatch { origin: String, device: String, identity: PathBuf },
    #[error("{origin}: bundle version {offered} is older than the version {current} already joined; refusing to go back")]
    BundleNotNewer { origin: String, offered: u64, current: u64 },
    #[error(
        "{origin}: no key for group {group:?} epoch {epoch}, the policy's current epoch: the bundle is older than \
         the policy; export a fresh bundle for this device"
    )]
    BundleBehindPolicy { origin: String, group: String, epoch: u64 },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: another process is opening envelopes for this device (lock held)")]
    ReplayLocked { path: PathBuf },
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl DeviceStoreError {
    /// A stable short token (docs/REASONS.md); wrapped errors give their own.
    pub fn reason(&self) -> &'static str {
        match self {
            DeviceStoreError::Io { .. } => "file-io",
            DeviceStoreError::Identity(e) => e.reason(),
            DeviceStoreError::Key(e) => e.reason(),
            DeviceStoreError::Document(e) => e.reason(),
            DeviceStoreError::Policy(e) => e.reason(),
            DeviceStoreError::Bundle(e) => e.reason(),
            DeviceStoreError::Sequence(e) => e.reason(),
            DeviceStoreError::OtherAuthority { .. } => "other-authority",
            DeviceStoreError::NotJoined { .. } => "not-joined",
            DeviceStoreError::NotInPolicy { .. } => "not-in-policy",
            DeviceStoreError::PolicyKeyMismatch { .. } => "policy-key-mismatch",
            DeviceStoreError::BundleNotNewer { .. } => "bundle-not-newer",
            DeviceStoreError::BundleBehindPolicy { .. } => "bundle-behind-policy",
            DeviceStoreError::Corrupt { .. } => "device-state-corrupt",
            DeviceStoreError::ReplayLocked { .. } => "replay-locked",
            DeviceStoreError::Seal(e) => e.reason(),
        }
    }

}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("topic {topic:?} {source}")]
    BadTopic { topic: String, source: TopicError },
    #[error("topic {0:?} belongs to no group in the policy, so there is nothing to seal it for; publish it as is")]
    Unprotected(String),
    #[error("device {device:?} may not publish in group {group:?} (which owns topic {topic:?}): {role}")]
    NotAPublisher { device: String, group: String, topic: String, role: String },
    #[error("no key for group {group:?} epoch {epoch}: join with a fresh bundle")]
    NoKey { group: String, epoch: u64 },
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

impl SealError {
    /// A stable short token (docs/REASONS.md): the same word the broker and
    /// `open` use for the same condition (`not-a-publisher`, `no-key`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            SealError::BadTopic { source, .. } => source.reason(),
            SealError::Unprotected(_) => "not-protected",
            SealError::NotAPublisher { .. } => "not-a-publisher",
            SealError::NoKey { .. } => "no-key",
            SealError::Sequence(e) => e.reason(),
            SealError::Envelope(e) => e.reason(),
        }
    }

}

/// Why an envelope was not opened. [`OpenError::reason`] gives a stable token.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    #[error("topic {0:?} belongs to no group in the policy: it carries no envelopes")]
    NotProtected(String),
    #[error("envelope is for group {envelope:?}, but topic {topic:?} belongs to group {owner:?}")]
    GroupMismatch { topic: String, owner: String, envelope: String },
    #[error("sender {0:?} is not a device of the policy")]
    UnknownSender(String),
    #[error("sender {sender:?} may not publish in group {group:?}")]
    NotAPublisher { sender: String, group: String },
    #[error("epoch {epoch} of group {group:?} is not accepted ({}; the group is at epoch {current})", .check.reason())]
    Epoch { group: String, epoch: u64, current: u64, check: EpochCheck },
    #[error("this device holds no key for group {group:?} epoch {epoch} (not a member, or removed from the group)")]
    NoKey { group: String, epoch: u64 },
    #[error("sequence number {seq} from {sender:?} is not newer than {last}, the last one opened: a replay")]
    Replayed { sender: String, seq: u64, last: u64 },
    #[error("{path}: {detail}")]
    ReplayState { path: PathBuf, detail: String },
}

impl OpenError {
    /// A stable short token (the envelope's own tokens for envelope errors).
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Envelope(e) => e.reason(),
            OpenError::NotProtected(_) => "not-protected",
            OpenError::GroupMismatch { .. } => "wrong-group",
            OpenError::UnknownSender(_) => "unknown-sender",
            OpenError::NotAPublisher { .. } => "not-a-publisher",
            OpenError::Epoch { check, .. } => check.reason(),
            OpenError::NoKey { .. } => "no-key",
            OpenError::Replayed { .. } => "replay",
            OpenError::ReplayState { .. } => "replay-state",
        }
    }

}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceStoreError + '_ {
    move |source| DeviceStoreError::Io { path: path.to_owned(), source }
}

/// What a join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReport {
    pub device: String,
    pub authority: String,
    pub policy_version: u64,
    pub bundle_version: u64,
    /// Group → epochs whose keys are now stored.
    pub groups: BTreeMap<String, Vec<u64>>,
    /// Bundle groups dropped because the policy no longer lists the device there.
    pub dropped_groups: Vec<String>,
}

/// Where the group keys of a (re-)join come from.
pub enum KeySource<'a> {
    /// A signed bundle (a file, or a message on `$mqseal/bundle/ID`); `origin` names it in errors.
    Bundle { bytes: &'a [u8], origin: &'a str },
    /// The keys already stored (a new policy alone: a device was added elsewhere,
    /// or the bundle for a rotation has not arrived yet).
    Stored,
}

/// Joins (or re-joins) a realm from files: see the module docs.
pub fn join(device_dir: &Path, authority_file: &Path, bundle_file: &Path, policy_file: &Path) -> Result<JoinReport, DeviceStoreError> {
    let authority = AuthorityPublicKey::load(authority_file)?;
    let policy_bytes = signed_doc::read_document_file(policy_file)?;
    let bundle_bytes = signed_doc::read_document_file(bundle_file)?;
    let bundle_origin = bundle_file.display().to_string();
    join_documents(
        device_dir,
        &authority,
        &policy_bytes,
        &policy_file.display().to_string(),
        KeySource::Bundle { bytes: &bundle_bytes, origin: &bundle_origin },
    )
}

/// Applies a policy and keys received over MQTT to an already joined device,
/// with the authority it joined with. Same checks as [`join`].
pub fn update(device_dir: &Path, policy: Option<(&[u8], &str)>, keys: KeySource<'_>) -> Result<JoinReport, DeviceStoreError> {
    let device = DeviceDir::open(device_dir)?;
    let authority_path = device.file(AUTHORITY_FILE);
    if !authority_path.exists() {
        return Err(DeviceStoreError::NotJoined { dir: device_dir.to_owned() });
    }
    let authority = AuthorityPublicKey::load(&authority_path)?;
    let stored;
    let stored_origin;
    let (policy_bytes, policy_origin) = match policy {
        Some(given) => given,
        None => {
            let path = device.file(POLICY_FILE);
            stored = signed_doc::read_document_file(&path)?;
            stored_origin = path.display().to_string();
            (&stored[..], stored_origin.as_str())
        }
    };
    join_documents(device_dir, &authority, policy_bytes, policy_origin, keys)
}

/// The join itself, on documents already read: verify against the trusted
/// authority, check they are for this device and agree with each other, and
/// replace keys and policy (never going back to older versions).
pub fn join_documents(
    device_dir: &Path,
    authority: &AuthorityPublicKey,
    policy_bytes: &[u8],
    policy_origin: &str,
    keys_from: KeySource<'_>,
) -> Result<JoinReport, DeviceStoreError> {
    let device = DeviceDir::open(device_dir)?;
    let stored_authority_path = device.file(AUTHORITY_FILE);
    let first_join = !stored_authority_path.exists();
    if !first_join {
        let stored = AuthorityPublicKey::load(&stored_authority_path)?;
        if &stored != authority {
            return Err(DeviceStoreError::OtherAuthority {
                dir: device_dir.to_owned(),
                stored: stored.fingerprint(),
                given: authority.fingerprint(),
            });
        }
    }

    let policy_origin = policy_origin.to_string();
    let policy = Policy::from_signed(policy_bytes, authority, &policy_origin)?;
    let compiled = policy.compile(&policy_origin)?;
    let me = device.id().to_string();
    let my_policy = policy
        .devices
        .get(&me)
        .ok_or_else(|| DeviceStoreError::NotInPolicy { origin: policy_origin.clone(), device: me.clone() })?;
    if my_policy.sign != device.identity().sign {
        return Err(DeviceStoreError::PolicyKeyMismatch {
            origin: policy_origin,
            device: me,
            identity: device.identity_path(),
        });
    }

    let (bundle_version, bundle_origin, mut unwrapped) = match keys_from {
        KeySource::Bundle { bytes, origin } => {
            let bundle = Bundle::from_signed(bytes, authority, origin)?;
            if bundle.device != me {
                return Err(BundleError::WrongDevice { origin: origin.into(), found: bundle.device, expected: me }.into());
            }
            let secret = device.kx_secret()?;
            let unwrapped = bundle.unwrap_all(&secret, origin)?;
            drop(secret);
            if let Some(current) = stored_bundle_version(&device)? {
                if bundle.version < current {
                    return Err(DeviceStoreError::BundleNotNewer { origin: origin.into(), offered: bundle.version, current });
                }
            }
            (bundle.version, origin.to_string(), unwrapped)
        }
        KeySource::Stored => {
            let path = device.file(KEYS_FILE);
            if first_join || !path.exists() {
                return Err(DeviceStoreError::NotJoined { dir: device_dir.to_owned() });
            }
            let (version, keys) = read_keys_file(&path, device.id())?;
            (version, path.display().to_string(), keys)
        }
    };

    // Never go back.
    if let Some(current) = stored_policy_version(&device, authority)? {
        if policy.version < current {
            return Err(PolicyError::NotNewer { origin: policy_origin, offered: policy.version, current }.into());
        }
    }

    // Keep the keys of groups the policy lists the device in; each needs the
    // policy's current epoch.
    let me_idx = compiled.device_by_id(&me);
    let mut dropped_groups = Vec::new();
    let mut keys: BTreeMap<(String, u64), GroupKey> = BTreeMap::new();
    for ((group, epoch), key) in std::mem::take(&mut unwrapped) {
        let member = compiled.group_by_id(&group).zip(me_idx).and_then(|(g, d)| compiled.role(g, d)).is_some();
        if member {
            keys.insert((group, epoch), key);
        } else if !dropped_groups.contains(&group) {
            dropped_groups.push(group);
        }
    }
    for g in compiled.groups() {
        let Some(d) = me_idx else { break };
        if compiled.role(g, d).is_none() {
            continue;
        }
        let view = compiled.group(g);
        if !keys.contains_key(&(view.id.to_string(), view.epoch)) {
            return Err(DeviceStoreError::BundleBehindPolicy {
                origin: bundle_origin,
                group: view.id.to_string(),
                epoch: view.epoch,
            });
        }
    }

    if first_join {
        authority.save(&stored_authority_path, Overwrite::Refuse)?;
    }
    write_atomic(&device.file(KEYS_FILE), keys_json(&me, bundle_version, &keys).as_bytes(), 0o600, Overwrite::Allow)?;
    write_atomic(&device.file(POLICY_FILE), policy_bytes, 0o644, Overwrite::Allow)?;

    let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (group, epoch) in keys.keys() {
        groups.entry(group.clone()).or_default().push(*epoch);
    }
    for epochs in groups.values_mut() {
        epochs.sort_unstable_by(|a, b| b.cmp(a));
    }
    Ok(JoinReport {
        device: me,
        authority: authority.fingerprint(),
        policy_version: policy.version,
        bundle_version,
        groups,
        dropped_groups,
    })
}

fn stored_policy_version(device: &DeviceDir, authority: &AuthorityPublicKey) -> Result<Option<u64>, DeviceStoreError> {
    let path = device.file(POLICY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = signed_doc::read_document_file(&path)?;
    Ok(Some(Policy::from_signed(&bytes, authority, &path.display().to_string())?.version))
}

fn stored_bundle_version(device: &DeviceDir) -> Result<Option<u64>, DeviceStoreError> {
    let path = device.file(KEYS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(read_keys_file(&path, device.id())?.0))
}

/// The keys file, built by hand so no copy of a key outlives it.
fn keys_json(device: &str, bundle_version: u64, keys: &BTreeMap<(String, u64), GroupKey>) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    out.push_str(&format!(
        "{{\n  \"format\": \"{KEYS_FORMAT}\",\n  \"device\": \"{device}\",\n  \"bundle_version\": {bundle_version},\n  \"groups\": {{"
    ));
    let mut current_group: Option<&str> = None;
    for ((group, epoch), key) in keys.iter().rev() {
        if current_group != Some(group.as_str()) {
            out.push_str(if current_group.is_none() { "\n    \"" } else { "\n    ],\n    \"" });
            out.push_str(group);
            out.push_str("\": [\n      ");
            current_group = Some(group);
        } else {
            out.push_str(",\n      ");
        }
        let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(key.as_bytes()));
        out.push_str(&format!("{{\"epoch\": {epoch}, \"key\": \""));
        out.push_str(&encoded);
        out.push_str("\"}");
    }
    out.push_str(if current_group.is_none() { "}\n}\n" } else { "\n    ]\n  }\n}\n" });
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFileJson {
    format: String,
    device: String,
    bundle_version: u64,
    groups: BTreeMap<String, Vec<KeyEntryJson>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntryJson {
    epoch: u64,
    key: String,
}

type KeyMap = BTreeMap<(String, u64), GroupKey>;

fn read_keys_file(path: &Path, device: &str) -> Result<(u64, KeyMap), DeviceStoreError> {
    let corrupt = |detail: String| DeviceStoreError::Corrupt { path: path.to_owned(), detail };
    let bytes = read_private_file(path)?;
    let mut raw: KeysFileJson = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if raw.format != KEYS_FORMAT {
        return Err(corrupt(format!("format {:?}, expected {KEYS_FORMAT:?}", raw.format)));
    }
    if raw.device != device {
        return Err(corrupt(format!("holds keys of device {:?}, not {device:?}", raw.device)));
    }
    let mut keys = BTreeMap::new();
    for (group, entries) in raw.groups.iter_mut() {
        for e in entries.iter_mut() {
            let mut decoded = Zeroizing::new(
                URL_SAFE_NO_PAD.decode(&e.key).map_err(|_| corrupt(format!("groups.{group}: key is not base64url")))?,
            );
            e.key.zeroize();
            let raw_key: [u8; 32] =
                decoded.as_slice().try_into().map_err(|_| corrupt(format!("groups.{group}: key is not 32 bytes")))?;
            decoded.zeroize();
            keys.insert((group.clone(), e.epoch), GroupKey::from_bytes(raw_key));
        }
    }
    Ok((raw.bundle_version, keys))
}

/// A joined device: its identity, trusted authority, verified policy and keys.
pub struct DeviceStore {
    device: DeviceDir,
    authority: AuthorityPublicKey,
    policy: CompiledPolicy,
    keys: KeyMap,
    bundle_version: u64,
}

impl std::fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceStore")
            .field("device", &self.device.id())
            .field("policy_version", &self.policy.version())
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl DeviceStore {
    /// Opens a joined device directory; the stored policy is re-verified.
    pub fn open(dir: &Path) -> Result<DeviceStore, DeviceStoreError> {
        let device = DeviceDir::open(dir)?;
        let authority_path = device.file(AUTHORITY_FILE);
        if !authority_path.exists() || !device.file(KEYS_FILE).exists() || !device.file(POLICY_FILE).exists() {
            return Err(DeviceStoreError::NotJoined { dir: dir.to_owned() });
        }
        let authority = AuthorityPublicKey::load(&authority_path)?;
        let policy = crate::formats::policy::load_policy_file(&device.file(POLICY_FILE), &authority)?;
        let (bundle_version, keys) = read_keys_file(&device.file(KEYS_FILE), device.id())?;
        Ok(DeviceStore { device, authority, policy, keys, bundle_version })
    }

    pub fn device(&self) -> &DeviceDir {
        &self.device
    }

    pub fn id(&self) -> &str {
        self.device.id()
    }

    pub fn authority(&self) -> &AuthorityPublicKey {
        &self.authority
    }

    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    pub fn bundle_version(&self) -> u64 {
        self.bundle_version
    }

    /// The device's MQTT username in the stored policy (None if the policy no longer lists it).
    pub fn username(&self) -> Option<&str> {
        self.policy.device_by_id(self.id()).map(|d| self.policy.username(d))
    }

    /// The stored key for (group, epoch), if any.
    pub fn group_key(&self, group: &str, epoch: u64) -> Option<&GroupKey> {
        self.keys.get(&(group.to_string(), epoch))
    }

    /// (group, epoch) pairs this device holds keys for.
    pub fn key_epochs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.keys.keys().map(|(g, e)| (g.as_str(), *e))
    }

    /// A sealer: loads the signing key and locks the sequence counter.
    pub fn sealer(self) -> Result<Sealer, DeviceStoreError> {
        let signer = self.device.signing_key()?;
        let seq = self.device.sequence()?;
        Ok(Sealer { store: self, signer, seq })
    }

    /// A receiver: locks and loads the replay state.
    pub fn receiver(self) -> Result<Receiver, DeviceStoreError> {
        let lock_path = self.device.file(REPLAY_LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DeviceStoreError::ReplayLocked { path: lock_path }),
            Err(fs::TryLockError::Error(source)) => return Err(DeviceStoreError::Io { path: lock_path, source }),
        }
        let replay_path = self.device.file(REPLAY_FILE);
        let last_seq = read_replay_file(&replay_path)?;
        Ok(Receiver { store: self, _lock: lock, replay_path, last_seq, max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES })
    }
}

/// Seals messages as this device (`mqseal seal`, `mqseal pub`).
pub struct Sealer {
    store: DeviceStore,
    signer: SigningKey,
    seq: SequenceCounter,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("device", &self.store.id()).finish()
    }
}

/// What [`Sealer::seal`] produced.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub envelope: Vec<u8>,
    pub group: String,
    pub epoch: u64,
    pub seq: u64,
    pub timestamp_ms: u64,
}

impl Sealer {
    pub fn store(&self) -> &DeviceStore {
        &self.store
    }

    /// Re-reads policy and keys after [`update`] changed them (a live key
    /// rotation); the signing key and sequence counter stay as they are.
    pub fn reload_store(&mut self) -> Result<(), DeviceStoreError> {
        self.store = DeviceStore::open(self.store.device.dir())?;
        Ok(())
    }

    /// Seals `plaintext` for `topic` at the current time.
    pub fn seal(&mut self, topic: &str, plaintext: &[u8], aead: AeadAlg) -> Result<Sealed, SealError> {
        self.seal_at(topic, plaintext, aead, unix_millis())
    }

    /// Seals for `topic` with the given timestamp: finds the group owning the
    /// topic, checks this device may publish there, takes the next sequence
    /// number (persisted before use), seals under the group's current epoch.
    pub fn seal_at(&mut self, topic: &str, plaintext: &[u8], aead: AeadAlg, timestamp_ms: u64) -> Result<Sealed, SealError> {
        validate_topic_name(topic).map_err(|source| SealError::BadTopic { topic: topic.into(), source })?;
        let policy = &self.store.policy;
        let group = policy.group_of_topic(topic).ok_or_else(|| SealError::Unprotected(topic.into()))?;
        let view = policy.group(group);
        let me = self.store.device.id();
        let role = policy.device_by_id(me).and_then(|d| policy.role(group, d));
        if !role.is_some_and(|r| r.can_publish()) {
            return Err(SealError::NotAPublisher {
                device: me.into(),
                group: view.id.into(),
                topic: topic.into(),
                role: match role {
                    Some(r) => format!("its role is {r}"),
                    None => "it is not a member".into(),
                },
            });
        }
        let key = self
            .store
            .keys
            .get(&(view.id.to_string(), view.epoch))
            .ok_or_else(|| SealError::NoKey { group: view.id.into(), epoch: view.epoch })?;
        let seq = self.seq.next()?;
        let envelope = envelope::seal(&SealInput {
            signer: &self.signer,
            sender: me,
            group: view.id,
            epoch: view.epoch,
            seq,
            timestamp_ms,
            topic,
            aead,
            group_key: key,
            plaintext,
        })?;
        Ok(Sealed { envelope, group: view.id.into(), epoch: view.epoch, seq, timestamp_ms })
    }
}

/// A verified, decrypted message.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    pub sender: String,
    pub group: String,
    pub epoch: u64,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub aead: AeadAlg,
    pub payload: Vec<u8>,
}

impl Opened {
    /// The JSON form `mqseal open --json` and `mqseal sub --json` print:
    /// `{"aead","epoch","group","payload_base64","sender","seq","timestamp_ms","topic"}`
    /// (payload in standard base64 with padding).
    pub fn to_json(&self, topic: &str) -> serde_json::Value {
        serde_json::json!({
            "topic": topic,
            "sender": self.sender,
            "group": self.group,
            "epoch": self.epoch,
            "seq": self.seq,
            "timestamp_ms": self.timestamp_ms,
            "aead": self.aead.name(),
            "payload_base64": base64::engine::general_purpose::STANDARD.encode(&self.payload),
        })
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("sender", &self.sender)
            .field("group", &self.group)
            .field("epoch", &self.epoch)
            .field("seq", &self.seq)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Opens envelopes received on topics (`mqseal open`, `mqseal sub`).
pub struct Receiver {
    store: DeviceStore,
    _lock: File,
    replay_path: PathBuf,
    last_seq: BTreeMap<String, u64>,
    max_envelope_bytes: usize,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("device", &self.store.id()).field("senders", &self.last_seq.len()).finish()
    }
}

impl Receiver {
    pub fn store(&self) -> &DeviceStore {
        &self.store
    }

    /// Re-reads policy and keys after [`update`] changed them (a live key
    /// rotation); the replay state and its lock stay as they are.
    pub fn reload_store(&mut self) -> Result<(), DeviceStoreError> {
        self.store = DeviceStore::open(self.store.device.dir())?;
        Ok(())
    }

    /// Changes the size cap (default [`DEFAULT_MAX_ENVELOPE_BYTES`]).
    pub fn with_max_envelope_bytes(mut self, max: usize) -> Self {
        self.max_envelope_bytes = max;
        self
    }

    /// Opens `bytes` received on `topic` at the current time.
    pub fn open(&mut self, topic: &str, bytes: &[u8]) -> Result<Opened, OpenError> {
        self.open_at(topic, bytes, crate::device::realm::unix_now())
    }

    /// Opens an envelope, cheapest checks first: parse (size cap, strict CBOR),
    /// the topic's owning group must be the envelope's group, the sender must
    /// be a device with a pub/pubsub role there, the epoch current or previous
    /// within grace (at `now`, Unix seconds), a key for it held, the sequence
    /// number newer than the last opened from that sender; then the signature
    /// (sender's key from the policy) and decryption. The sequence number is
    /// recorded durably before the plaintext is returned.
    pub fn open_at(&mut self, topic: &str, bytes: &[u8], now: u64) -> Result<Opened, OpenError> {
        let parsed = envelope::parse(bytes, self.max_envelope_bytes)?;
        let h = parsed.header;
        let policy = &self.store.policy;
        let group = policy.group_of_topic(topic).ok_or_else(|| OpenError::NotProtected(topic.into()))?;
        let view = policy.group(group);
        if h.group != view.id {
            return Err(OpenError::GroupMismatch { topic: topic.into(), owner: view.id.into(), envelope: h.group.into() });
        }
        let sender = policy.device_by_id(h.sender).ok_or_else(|| OpenError::UnknownSender(h.sender.into()))?;
        if !policy.role(group, sender).is_some_and(|r| r.can_publish()) {
            return Err(OpenError::NotAPublisher { sender: h.sender.into(), group: view.id.into() });
        }
        let check = policy.check_epoch(group, h.epoch, now);
        if !check.is_accepted() {
            return Err(OpenError::Epoch { group: view.id.into(), epoch: h.epoch, current: view.epoch, check });
        }
        let key = self
            .store
            .keys
            .get(&(view.id.to_string(), h.epoch))
            .ok_or_else(|| OpenError::NoKey { group: view.id.into(), epoch: h.epoch })?;
        let last = self.last_seq.get(h.sender).copied().unwrap_or(0);
        if h.seq <= last {
            return Err(OpenError::Replayed { sender: h.sender.into(), seq: h.seq, last });
        }
        parsed.verify_signature(topic, policy.verifying_key(sender))?;
        let payload = parsed.decrypt(topic, key)?;
        self.last_seq.insert(h.sender.to_string(), h.seq);
        self.save_replay()?;
        Ok(Opened {
            sender: h.sender.into(),
            group: h.group.into(),
            epoch: h.epoch,
            seq: h.seq,
            timestamp_ms: h.timestamp_ms,
            aead: h.aead,
            payload,
        })
    }

    fn save_replay(&self) -> Result<(), OpenError> {
        let map: serde_json::Map<String, serde_json::Value> =
            self.last_seq.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect();
        let value = serde_json::json!({ "format": REPLAY_FORMAT, "last_seq": map });
        let mut bytes = serde_json::to_vec_pretty(&value)
            .map_err(|e| OpenError::ReplayState { path: self.replay_path.clone(), detail: e.to_string() })?;
        bytes.push(b'\n');
        write_atomic(&self.replay_path, &bytes, 0o600, Overwrite::Allow)
            .map_err(|e| OpenError::ReplayState { path: self.replay_path.clone(), detail: e.to_string() })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayJson {
    format: String,
    last_seq: BTreeMap<String, u64>,
}

fn read_replay_file(path: &Path) -> Result<BTreeMap<String, u64>, DeviceStoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(DeviceStoreError::Io { path: path.to_owned(), source: e }),
    };
    let corrupt = |detail: String| DeviceStoreError::Corrupt { path: path.to_owned(), detail };
    let raw: ReplayJson = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if raw.format != REPLAY_FORMAT {
        return Err(corrupt(format!("format {:?}, expected {REPLAY_FORMAT:?}", raw.format)));
    }
    Ok(raw.last_seq)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
