//! The device handle: a joined device directory loaded into memory
//! (`mqseal_core::device::Device`), and everything a device program does with it.
//!
//! Thread-safety: a handle is not thread-safe. Calls on one handle must not
//! overlap (use it from one thread, or hold a lock around each call); the
//! handle may move between threads. Different handles are independent, but
//! two handles on the same device directory cannot both seal (or both open):
//! the second gets MQSEAL_SEQ_LOCKED (or MQSEAL_REPLAY_LOCKED).

use std::ffi::CStr;
use std::os::raw::c_char;
use std::path::Path;

use mqseal_core::device::{ControlOutcome, Device};

use crate::boundary::{guard, guard_value, Failure};
use crate::bytes::{mqseal_bytes, release_all, write_out};
use crate::result::mqseal_result;

/// An opaque device handle (made by mqseal_device_load, freed by mqseal_device_free).
pub struct mqseal_device {
    inner: Device,
}

/// A message mqseal_device_open opened. Its three buffers belong to the caller
/// and are freed together with mqseal_message_free.
#[repr(C)]
pub struct mqseal_message {
    /// The plaintext.
    pub payload: mqseal_bytes,
    /// The sending device's id (text).
    pub sender: mqseal_bytes,
    /// The group it was sealed for (text).
    pub group: mqseal_bytes,
    /// The group key epoch it was sealed under.
    pub epoch: u64,
    /// The sender's sequence number.
    pub seq: u64,
    /// When the sender sealed it (Unix milliseconds, the sender's clock).
    pub timestamp_ms: u64,
}

/// What mqseal_device_apply_control did with a message.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mqseal_control {
    /// Not one of this device's control topics: an ordinary message (open it).
    MQSEAL_CONTROL_NOT_CONTROL = 0,
    /// A control message that changed nothing (yet): a document already in
    /// force, or one held until its companion arrives.
    MQSEAL_CONTROL_UNCHANGED = 1,
    /// The policy and keys were replaced: later seals and opens use them.
    MQSEAL_CONTROL_UPDATED = 2,
}

/// A NUL-terminated UTF-8 argument.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string valid for the call.
unsafe fn text_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::InvalidArgument(format!("{name} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated (the caller's contract).
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map_err(|e| Failure::InvalidArgument(format!("{name} is not UTF-8: {e}")))
}

/// A (pointer, length) argument; NULL is allowed for length 0.
///
/// # Safety
/// `p` must be valid for reads of `len` bytes when `len` > 0.
unsafe fn bytes_arg<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::InvalidArgument(format!("{name} is NULL but its length is {len}")));
    }
    // SAFETY: non-null and valid for len bytes (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The handle behind a pointer.
///
/// # Safety
/// `device` must be NULL or a live handle from mqseal_device_load, not in use
/// by another call.
unsafe fn handle<'a>(device: *mut mqseal_device) -> Result<&'a mut Device, Failure> {
    if device.is_null() {
        return Err(Failure::InvalidArgument("device is NULL".into()));
    }
    // SAFETY: a live handle, used by this call alone (the caller's contract).
    Ok(unsafe { &mut (*device).inner })
}

fn out_missing(name: &str) -> Failure {
    Failure::InvalidArgument(format!("{name} is NULL"))
}

/// Loads a joined device directory (made with `mqseal keygen`, joined with
/// `mqseal join`) and stores a new handle in `*out`. The stored policy is
/// verified again against the stored authority key. No lock is taken yet:
/// the first seal takes the sequence counter's, the first open the replay
/// state's. Any thread.
///
/// # Safety
/// `dir` must be a NUL-terminated path; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_load(dir: *const c_char, out: *mut *mut mqseal_device) -> mqseal_result {
    guard("mqseal_device_load", || {
        if out.is_null() {
            return Err(out_missing("out"));
        }
        // SAFETY: forwarded from the caller.
        let dir = unsafe { text_arg(dir, "dir") }?;
        let inner = Device::load(Path::new(dir))?;
        let raw = Box::into_raw(Box::new(mqseal_device { inner }));
        // SAFETY: checked non-null above; writable (the caller's contract).
        unsafe { write_out(out, raw) };
        Ok(())
    })
}

/// Joins a realm from the documents the authority published (first join or
/// re-join, as `mqseal join`): the signed policy (`policy_len` bytes) and this
/// device's key bundle (`bundle_len` bytes) are verified against the
/// authority's public key in the file `authority_file`, checked to be for this
/// device and not older than what it holds, and stored in `dir` (made by
/// `mqseal keygen`); then `*out` gets a handle as from mqseal_device_load.
/// Over MQTT the documents are the retained messages on `$mqseal/policy` and
/// `$mqseal/bundle/ID`, read by a client logged in with
/// mqseal_join_login_token. Any thread (not while another process or handle
/// uses `dir`).
///
/// # Safety
/// `dir` and `authority_file` NUL-terminated; `policy`/`bundle` valid for
/// their lengths; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_join(
    dir: *const c_char,
    authority_file: *const c_char,
    policy: *const u8,
    policy_len: usize,
    bundle: *const u8,
    bundle_len: usize,
    out: *mut *mut mqseal_device,
) -> mqseal_result {
    guard("mqseal_device_join", || {
        if out.is_null() {
            return Err(out_missing("out"));
        }
        // SAFETY: forwarded from the caller.
        let (dir, authority, policy, bundle) = unsafe {
            (
                text_arg(dir, "dir")?,
                text_arg(authority_file, "authority_file")?,
                bytes_arg(policy, policy_len, "policy")?,
                bytes_arg(bundle, bundle_len, "bundle")?,
            )
        };
        let inner = Device::join(Path::new(dir), Path::new(authority), policy, bundle)?;
        let raw = Box::into_raw(Box::new(mqseal_device { inner }));
        // SAFETY: checked non-null above; writable (the caller's contract).
        unsafe { write_out(out, raw) };
        Ok(())
    })
}

/// A login token for a device directory that has not joined yet, to fetch its
/// documents for mqseal_device_join (text, free with mqseal_bytes_free). The
/// username is the device id when `username` is NULL. Any thread.
///
/// # Safety
/// `dir` and `client_id` NUL-terminated; `username` NULL or NUL-terminated;
/// `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_join_login_token(
    dir: *const c_char,
    client_id: *const c_char,
    username: *const c_char,
    out: *mut mqseal_bytes,
) -> mqseal_result {
    guard("mqseal_join_login_token", || {
        // SAFETY: forwarded from the caller.
        let (dir, client_id) = unsafe { (text_arg(dir, "dir")?, text_arg(client_id, "client_id")?) };
        // SAFETY: as above; NULL means "the device id".
        let username = if username.is_null() { None } else { Some(unsafe { text_arg(username, "username") }?) };
        let token = Device::join_login_token(Path::new(dir), client_id, username)?;
        // SAFETY: forwarded from the caller.
        unsafe { give(out, mqseal_bytes::from_string(token)) }
    })
}

/// Frees a handle and releases its locks. NULL is ignored.
///
/// Threads: not while another call uses this handle (or after it is freed).
///
/// # Safety
/// `device` must be NULL or a handle from mqseal_device_load, not yet freed
/// and not in use by another call.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_free(device: *mut mqseal_device) {
    guard_value((), || {
        if !device.is_null() {
            // SAFETY: made by Box::into_raw in mqseal_device_load, freed once.
            drop(unsafe { Box::from_raw(device) });
        }
    })
}

/// The device's id (text) into `*out` (free with mqseal_bytes_free).
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_id(device: *mut mqseal_device, out: *mut mqseal_bytes) -> mqseal_result {
    guard("mqseal_device_id", || {
        // SAFETY: forwarded from the caller.
        let device = unsafe { handle(device) }?;
        let id = mqseal_bytes::from_string(device.id().to_string());
        // SAFETY: forwarded from the caller.
        unsafe { give(out, id) }
    })
}

/// The MQTT username the device logs in with (from the policy in force) into
/// `*out` (free with mqseal_bytes_free).
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_username(device: *mut mqseal_device, out: *mut mqseal_bytes) -> mqseal_result {
    guard("mqseal_device_username", || {
        // SAFETY: forwarded from the caller.
        let device = unsafe { handle(device) }?;
        let name = mqseal_bytes::from_string(device.username()?.to_string());
        // SAFETY: forwarded from the caller.
        unsafe { give(out, name) }
    })
}

/// A fresh login token for `client_id` (text, free with mqseal_bytes_free):
/// the MQTT password that a broker with `plugin_opt_auth key` accepts once,
/// for a few minutes, from this device logging in with this client id and
/// the username of mqseal_device_username. Make a new one for every
/// connection attempt, reconnects included.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `client_id` NUL-terminated; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_login_token(
    device: *mut mqseal_device,
    client_id: *const c_char,
    out: *mut mqseal_bytes,
) -> mqseal_result {
    guard("mqseal_device_login_token", || {
        // SAFETY: forwarded from the caller.
        let (device, client_id) = unsafe { (handle(device)?, text_arg(client_id, "client_id")?) };
        let token = mqseal_bytes::from_string(device.login_token(client_id)?);
        // SAFETY: forwarded from the caller.
        unsafe { give(out, token) }
    })
}

/// The number of control topics a device subscribes to (2: the policy, then
/// its own key bundle). Any thread.
#[no_mangle]
pub extern "C" fn mqseal_control_topic_count() -> usize {
    2
}

/// Control topic `index` (0 .. mqseal_control_topic_count() - 1) of this
/// device (text, free with mqseal_bytes_free): subscribe to each at QoS 1 and
/// pass every message on them to mqseal_device_apply_control. Past the last:
/// MQSEAL_INVALID_ARGUMENT.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_control_topic(
    device: *mut mqseal_device,
    index: usize,
    out: *mut mqseal_bytes,
) -> mqseal_result {
    guard("mqseal_device_control_topic", || {
        // SAFETY: forwarded from the caller.
        let device = unsafe { handle(device) }?;
        let topics = device.control_topics();
        let topic = topics
            .get(index)
            .ok_or_else(|| Failure::InvalidArgument(format!("index {index}: there are {} control topics", topics.len())))?;
        // SAFETY: forwarded from the caller.
        unsafe { give(out, mqseal_bytes::from_string(topic.clone())) }
    })
}

/// Whether `topic` belongs to a group (its messages are sealed envelopes);
/// false for an unprotected topic, a NULL or non-UTF-8 topic, or a NULL handle.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `topic` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_is_protected(device: *mut mqseal_device, topic: *const c_char) -> bool {
    guard_value(false, || {
        // SAFETY: forwarded from the caller.
        let (Ok(device), Ok(topic)) = (unsafe { handle(device) }, unsafe { text_arg(topic, "topic") }) else {
            return false;
        };
        device.group_of_topic(topic).is_some()
    })
}

/// The version of the policy in force (0 for a NULL handle).
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_policy_version(device: *mut mqseal_device) -> u64 {
    // SAFETY: forwarded from the caller.
    guard_value(0, || unsafe { handle(device) }.map(|d| d.policy_version()).unwrap_or(0))
}

/// The version of the key bundle in force (0 for a NULL handle).
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_bundle_version(device: *mut mqseal_device) -> u64 {
    // SAFETY: forwarded from the caller.
    guard_value(0, || unsafe { handle(device) }.map(|d| d.bundle_version()).unwrap_or(0))
}

/// The current key epoch of `group` in the policy in force into `*epoch`;
/// MQSEAL_INVALID_ARGUMENT when the policy has no such group.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `group` NUL-terminated; `epoch` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_group_epoch(
    device: *mut mqseal_device,
    group: *const c_char,
    epoch: *mut u64,
) -> mqseal_result {
    guard("mqseal_device_group_epoch", || {
        // SAFETY: forwarded from the caller.
        let (device, group) = unsafe { (handle(device)?, text_arg(group, "group")?) };
        let current =
            device.group_epoch(group).ok_or_else(|| Failure::InvalidArgument(format!("no group {group:?} in the policy")))?;
        // SAFETY: forwarded from the caller.
        if unsafe { write_out(epoch, current) } {
            Ok(())
        } else {
            Err(out_missing("epoch"))
        }
    })
}

/// Seals `len` bytes at `plaintext` for `topic`: signs them as this device and
/// encrypts them for the group owning the topic, under its current epoch, with
/// the next sequence number (stored before use). The envelope goes to `*out`
/// (free with mqseal_bytes_free); publish it on exactly that topic. Fails with
/// MQSEAL_NOT_PROTECTED for a topic no group owns (publish that as it is) and
/// MQSEAL_NOT_A_PUBLISHER where the device's role does not allow it.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `topic` NUL-terminated; `plaintext` valid for `len`
/// bytes (NULL if 0); `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_seal(
    device: *mut mqseal_device,
    topic: *const c_char,
    plaintext: *const u8,
    len: usize,
    out: *mut mqseal_bytes,
) -> mqseal_result {
    guard("mqseal_device_seal", || {
        // SAFETY: forwarded from the caller.
        let (device, topic, plaintext) =
            unsafe { (handle(device)?, text_arg(topic, "topic")?, bytes_arg(plaintext, len, "plaintext")?) };
        if out.is_null() {
            return Err(out_missing("out"));
        }
        let sealed = device.seal(topic, plaintext)?;
        // SAFETY: forwarded from the caller.
        unsafe { give(out, mqseal_bytes::from_vec(sealed.envelope)) }
    })
}

/// Opens a payload of `len` bytes received on `topic`: checks the sender's role
/// in the topic's group, the key epoch and the sequence number, verifies the
/// signature and decrypts. On success `*out` holds the message (free with
/// mqseal_message_free) and its sequence number is recorded, so a replay is
/// refused from then on. Otherwise the result names the reason
/// (MQSEAL_BAD_SIGNATURE, MQSEAL_REPLAY, ...) and `*out` is zeroed.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `topic` NUL-terminated; `payload` valid for `len`
/// bytes (NULL if 0); `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_open(
    device: *mut mqseal_device,
    topic: *const c_char,
    payload: *const u8,
    len: usize,
    out: *mut mqseal_message,
) -> mqseal_result {
    guard("mqseal_device_open", || {
        if out.is_null() {
            return Err(out_missing("out"));
        }
        // SAFETY: checked non-null; writable (the caller's contract). Zeroed first
        // so that a failed open leaves nothing to free.
        unsafe { write_out(out, mqseal_message::EMPTY) };
        // SAFETY: forwarded from the caller.
        let (device, topic, payload) =
            unsafe { (handle(device)?, text_arg(topic, "topic")?, bytes_arg(payload, len, "payload")?) };
        let opened = device.open(topic, payload)?;
        let message = mqseal_message {
            payload: mqseal_bytes::from_vec(opened.payload),
            sender: mqseal_bytes::from_string(opened.sender),
            group: mqseal_bytes::from_string(opened.group),
            epoch: opened.epoch,
            seq: opened.seq,
            timestamp_ms: opened.timestamp_ms,
        };
        // SAFETY: as above.
        unsafe { write_out(out, message) };
        Ok(())
    })
}

impl mqseal_message {
    const EMPTY: mqseal_message = mqseal_message {
        payload: mqseal_bytes::EMPTY,
        sender: mqseal_bytes::EMPTY,
        group: mqseal_bytes::EMPTY,
        epoch: 0,
        seq: 0,
        timestamp_ms: 0,
    };
}

/// Frees the buffers of a message and zeroes it. NULL is ignored. Any thread.
///
/// # Safety
/// `message` must be NULL or filled in by mqseal_device_open (or zeroed).
#[no_mangle]
pub unsafe extern "C" fn mqseal_message_free(message: *mut mqseal_message) {
    guard_value((), || {
        if message.is_null() {
            return;
        }
        // SAFETY: non-null; one of ours (the caller's contract).
        let m = unsafe { &mut *message };
        // SAFETY: each buffer was made by mqseal_bytes::from_vec.
        unsafe { release_all(&mut [&mut m.payload, &mut m.sender, &mut m.group]) };
        *m = mqseal_message::EMPTY;
    })
}

/// Passes a message received on any topic: one on this device's control
/// topics (a policy or key bundle the authority published) is verified against
/// the authority key the device joined with and applied if newer, so a key
/// rotation takes effect while the program runs. `*outcome` (may be NULL) says
/// what happened; MQSEAL_CONTROL_NOT_CONTROL means an ordinary message. A
/// refused document gives its reason (MQSEAL_DOC_BAD_SIGNATURE, ...) and leaves
/// what was in force.
///
/// Threads: not while another call uses this handle.
///
/// # Safety
/// `device` a live handle; `topic` NUL-terminated; `payload` valid for `len`
/// bytes (NULL if 0); `outcome` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mqseal_device_apply_control(
    device: *mut mqseal_device,
    topic: *const c_char,
    payload: *const u8,
    len: usize,
    outcome: *mut mqseal_control,
) -> mqseal_result {
    guard("mqseal_device_apply_control", || {
        // SAFETY: forwarded from the caller.
        let (device, topic, payload) =
            unsafe { (handle(device)?, text_arg(topic, "topic")?, bytes_arg(payload, len, "payload")?) };
        let what = match device.apply_control(topic, payload)? {
            ControlOutcome::NotControl => mqseal_control::MQSEAL_CONTROL_NOT_CONTROL,
            ControlOutcome::Unchanged(_) => mqseal_control::MQSEAL_CONTROL_UNCHANGED,
            ControlOutcome::Updated(_) => mqseal_control::MQSEAL_CONTROL_UPDATED,
        };
        // SAFETY: NULL or writable (the caller's contract); NULL means "not wanted".
        unsafe { write_out(outcome, what) };
        Ok(())
    })
}

/// Hands a buffer to the caller's out-pointer, or frees it if there is none.
///
/// # Safety
/// `out` NULL or valid for a write.
unsafe fn give(out: *mut mqseal_bytes, mut value: mqseal_bytes) -> Result<(), Failure> {
    if out.is_null() {
        // SAFETY: value was just made by from_vec.
        unsafe { release_all(&mut [&mut value]) };
        return Err(out_missing("out"));
    }
    // SAFETY: non-null and writable (the caller's contract).
    unsafe { write_out(out, value) };
    Ok(())
}

/// The library's version (static text, never freed). Any thread.
#[no_mangle]
pub extern "C" fn mqseal_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
