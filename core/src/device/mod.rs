//! The device core: everything a device program does with mqseal, behind one
//! type. The CLI's `pub`/`sub`, the C library (`device-ffi/`) and the Python
//! package (`python/`) all call this; none has its own copy of the logic.
//!
//! A [`Device`] is a joined device directory (`docs/POLICY.md`, the device
//! directory) loaded into memory. It seals for a topic, opens what arrives on
//! one, makes login tokens, and applies the documents the authority publishes
//! on the control topics ([`Device::control_topics`]) so that a key rotation
//! takes effect while the program runs. It reaches no network: the program's
//! own MQTT client carries the bytes.
//!
//! Locks. Sealing holds the sequence counter's lock (`seq.lock`), opening the
//! replay state's (`replay.lock`), each taken at the first [`Device::seal`] or
//! [`Device::open`] and held until the `Device` is dropped, so two processes
//! never seal (or open) as the same device at once. A device that only
//! publishes never takes the replay lock, so `mqseal sub` can read as the same
//! device alongside it.
//!
//! This folder holds what only devices and the administrator use: the device
//! directory's [`store`] (join, seal, open) and [`sequence`] counter, and the
//! administrator's [`realm`]. The broker uses none of it.

pub mod control_sync;
mod error;
pub mod realm;
pub mod sequence;
pub mod store;

use std::path::{Path, PathBuf};

pub use error::{device_reasons, DeviceError};

use crate::device::store::{DeviceStore, DeviceStoreError, JoinReport, Opened, Receiver, Sealed, Sealer};
use crate::formats::envelope::AeadAlg;
use control_sync::{ControlSync, SyncOutcome};

/// A joined device, loaded (see the module docs).
pub struct Device {
    dir: PathBuf,
    /// The policy and keys in force, for the questions that need neither lock.
    store: DeviceStore,
    sealer: Option<Sealer>,
    receiver: Option<Receiver>,
    sync: ControlSync,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("dir", &self.dir).field("store", &self.store).finish()
    }
}

/// What a message on a control topic did ([`Device::apply_control`]).
#[derive(Debug)]
pub enum ControlOutcome {
    /// The topic is not one of this device's control topics: an ordinary message.
    NotControl,
    /// Nothing changed: a document already in force, an identity, or a
    /// document held until its companion arrives (the note says which).
    Unchanged(Option<String>),
    /// The policy and keys were replaced; later seals use the new epoch.
    Updated(JoinReport),
}

impl Device {
    /// Loads a joined device directory (`mqseal keygen`, then `mqseal join`);
    /// the stored policy is verified again against the stored authority key.
    pub fn load(dir: &Path) -> Result<Device, DeviceError> {
        let store = DeviceStore::open(dir)?;
        let sync = ControlSync::new(dir, store.id());
        Ok(Device { dir: dir.to_owned(), store, sealer: None, receiver: None, sync })
    }

    /// Joins a realm (or re-joins it) from the documents the authority
    /// published, as `mqseal join` does: the policy and this device's key
    /// bundle are verified against `authority_file` (the one key a device
    /// trusts; it is stored at the first join and may not change later),
    /// checked to be for this device and not older than what it holds, and
    /// stored; then the directory is loaded. Over MQTT the documents are the
    /// retained messages of [`control_sync::control_filters`], fetched by a
    /// client logged in with [`Device::join_login_token`].
    pub fn join(dir: &Path, authority_file: &Path, policy: &[u8], bundle: &[u8]) -> Result<Device, DeviceError> {
        let authority = crate::formats::signed_doc::AuthorityPublicKey::load(authority_file).map_err(DeviceStoreError::from)?;
        let me = crate::formats::identity::DeviceDir::open(dir).map_err(DeviceStoreError::from)?.id().to_string();
        let bundle_origin = format!("the bundle of {me}");
        crate::device::store::join_documents(
            dir,
            &authority,
            policy,
            "the policy",
            crate::device::store::KeySource::Bundle { bytes: bundle, origin: &bundle_origin },
        )?;
        Device::load(dir)
    }

    /// A login token for a device directory that has not joined yet (to fetch
    /// its documents for [`Device::join`]): the username is the device id
    /// unless `username` is given (a joined device's is in its policy).
    pub fn join_login_token(dir: &Path, client_id: &str, username: Option<&str>) -> Result<String, DeviceError> {
        let device = crate::formats::identity::DeviceDir::open(dir).map_err(DeviceStoreError::from)?;
        let key = device.signing_key().map_err(DeviceStoreError::from)?;
        let username = username.unwrap_or(device.id());
        Ok(crate::formats::login_token::make_token(&key, client_id, username, crate::device::store::unix_millis()))
    }

    /// The device id (the stem of `ID.pub`).
    pub fn id(&self) -> &str {
        self.store.id()
    }

    /// The device's MQTT username from the policy in force.
    pub fn username(&self) -> Result<&str, DeviceError> {
        self.store.username().ok_or_else(|| DeviceError::NotInPolicy(self.id().to_string()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version of the policy in force.
    pub fn policy_version(&self) -> u64 {
        self.store.policy().version()
    }

    /// The version of the key bundle in force.
    pub fn bundle_version(&self) -> u64 {
        self.store.bundle_version()
    }

    /// The current key epoch of `group`, if the policy has it.
    pub fn group_epoch(&self, group: &str) -> Option<u64> {
        let policy = self.store.policy();
        policy.group_by_id(group).map(|g| policy.group(g).epoch)
    }

    /// The group owning `topic`, or None for an unprotected topic (whose
    /// messages travel as they are).
    pub fn group_of_topic(&self, topic: &str) -> Option<&str> {
        let policy = self.store.policy();
        policy.group_of_topic(topic).map(|g| policy.group(g).id)
    }

    /// The control topics to subscribe to (QoS 1), in this order: the policy,
    /// then this device's bundle. Both are retained.
    pub fn control_topics(&self) -> Vec<String> {
        control_sync::control_filters(self.id())
    }

    /// A login token for `client_id` at the current time: the MQTT password a
    /// broker with `plugin_opt_auth key` accepts once (username: [`Device::username`]).
    pub fn login_token(&self, client_id: &str) -> Result<String, DeviceError> {
        self.login_token_at(client_id, crate::device::store::unix_millis())
    }

    /// A login token dated `timestamp_ms` (Unix milliseconds).
    pub fn login_token_at(&self, client_id: &str, timestamp_ms: u64) -> Result<String, DeviceError> {
        let username = self.username()?;
        let key = self.store.device().signing_key().map_err(DeviceStoreError::from)?;
        Ok(crate::formats::login_token::make_token(&key, client_id, username, timestamp_ms))
    }

    /// Seals `plaintext` for `topic` (AES-256-GCM) at the current time.
    pub fn seal(&mut self, topic: &str, plaintext: &[u8]) -> Result<Sealed, DeviceError> {
        self.seal_with(topic, plaintext, AeadAlg::A256Gcm)
    }

    /// Seals with the given content encryption.
    pub fn seal_with(&mut self, topic: &str, plaintext: &[u8], aead: AeadAlg) -> Result<Sealed, DeviceError> {
        Ok(self.sealer()?.seal(topic, plaintext, aead)?)
    }

    /// Opens a payload received on `topic`: the plaintext with its sender,
    /// group and epoch, or the reason it was refused
    /// ([`DeviceError::reason`]). The sequence number is recorded before the
    /// plaintext is returned, so a replay of it is refused from then on.
    pub fn open(&mut self, topic: &str, payload: &[u8]) -> Result<Opened, DeviceError> {
        Ok(self.receiver()?.open(topic, payload)?)
    }

    /// Takes a message received on any topic: a document on one of this
    /// device's control topics is verified against the authority key the
    /// device joined with and, if newer, applied (later seals and opens use
    /// it). Err: the document was refused; what was in force stays.
    pub fn apply_control(&mut self, topic: &str, payload: &[u8]) -> Result<ControlOutcome, DeviceError> {
        match self.sync.stash(topic, payload) {
            None => Ok(ControlOutcome::NotControl),
            Some(false) => Ok(ControlOutcome::Unchanged(None)),
            Some(true) => self.apply_received(),
        }
    }

    /// Keeps a control message to apply later with others
    /// ([`Device::apply_received`]): on connect the retained policy and
    /// bundle arrive back to back and are best applied together. False: not
    /// a control topic of this device (an ordinary message).
    pub fn receive_control(&mut self, topic: &str, payload: &[u8]) -> bool {
        self.sync.stash(topic, payload).is_some()
    }

    /// Applies the control documents kept by [`Device::receive_control`].
    pub fn apply_received(&mut self) -> Result<ControlOutcome, DeviceError> {
        let current = (self.policy_version(), self.bundle_version());
        match self.sync.apply(current) {
            SyncOutcome::NotControl => Ok(ControlOutcome::NotControl),
            SyncOutcome::Held(note) => Ok(ControlOutcome::Unchanged(note)),
            SyncOutcome::Refused(error) => Err(error.into()),
            SyncOutcome::Updated(report) => {
                self.reload()?;
                Ok(ControlOutcome::Updated(report))
            }
        }
    }

    /// The policy and keys in force (for questions this type does not answer).
    pub fn store(&self) -> &DeviceStore {
        &self.store
    }

    /// Takes the sequence counter's lock now rather than at the first seal,
    /// so that a program fails at its start if another one seals as this device.
    pub fn prepare_sealing(&mut self) -> Result<(), DeviceError> {
        self.sealer().map(|_| ())
    }

    /// Takes the replay state's lock now rather than at the first open.
    pub fn prepare_opening(&mut self) -> Result<(), DeviceError> {
        self.receiver().map(|_| ())
    }

    /// Re-reads policy and keys from the device directory (after an update).
    fn reload(&mut self) -> Result<(), DeviceError> {
        self.store = DeviceStore::open(&self.dir)?;
        if let Some(sealer) = self.sealer.as_mut() {
            sealer.reload_store()?;
        }
        if let Some(receiver) = self.receiver.as_mut() {
            receiver.reload_store()?;
        }
        Ok(())
    }

    fn sealer(&mut self) -> Result<&mut Sealer, DeviceError> {
        let sealer = match self.sealer.take() {
            Some(sealer) => sealer,
            None => DeviceStore::open(&self.dir)?.sealer()?,
        };
        Ok(self.sealer.insert(sealer))
    }

    fn receiver(&mut self) -> Result<&mut Receiver, DeviceError> {
        let receiver = match self.receiver.take() {
            Some(receiver) => receiver,
            None => DeviceStore::open(&self.dir)?.receiver()?,
        };
        Ok(self.receiver.insert(receiver))
    }
}
