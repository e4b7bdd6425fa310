//! The C interface called as a C program would (through the exported
//! functions), on a realm made with the real CLI: sealing and opening across
//! devices, the reason codes of refused envelopes, argument checks, buffer
//! ownership and the last-error message.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;

use ::mqseal_device::bytes::{mqseal_bytes, mqseal_bytes_free};
use ::mqseal_device::device::*;
use ::mqseal_device::result::{mqseal_last_error_message, mqseal_result, mqseal_result_token};
use test_harness::Fleet;

fn fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_device("alice").add_device("bob");
    fleet.add_group("g", &["g/#"], 0);
    fleet.add_member("g", "alice", "pub").add_member("g", "bob", "sub");
    fleet.join("alice").join("bob");
    fleet
}

fn load(fleet: &Fleet, id: &str) -> *mut mqseal_device {
    let dir = CString::new(fleet.device_dir(id).to_str().unwrap()).unwrap();
    let mut device = ptr::null_mut();
    // SAFETY: valid C string and out-pointer.
    assert_eq!(unsafe { mqseal_device_load(dir.as_ptr(), &mut device) }, mqseal_result::MQSEAL_OK, "{}", last_error());
    device
}

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 1024];
    // SAFETY: buf is 1024 bytes.
    unsafe { mqseal_last_error_message(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by the call.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn text(bytes: &mqseal_bytes) -> String {
    // SAFETY: library text is NUL-terminated.
    unsafe { CStr::from_ptr(bytes.data.cast()) }.to_str().unwrap().to_string()
}

fn seal(device: *mut mqseal_device, topic: &str, plaintext: &[u8]) -> Result<Vec<u8>, mqseal_result> {
    let topic = CString::new(topic).unwrap();
    let mut out = mqseal_bytes::EMPTY;
    // SAFETY: live handle, valid buffers.
    let rc = unsafe { mqseal_device_seal(device, topic.as_ptr(), plaintext.as_ptr(), plaintext.len(), &mut out) };
    if rc != mqseal_result::MQSEAL_OK {
        return Err(rc);
    }
    // SAFETY: out was filled in: data/len valid.
    let envelope = unsafe { std::slice::from_raw_parts(out.data, out.len) }.to_vec();
    // SAFETY: ours to free, once.
    unsafe { mqseal_bytes_free(&mut out) };
    assert!(out.data.is_null() && out.len == 0, "freeing zeroes the buffer");
    Ok(envelope)
}

fn open(device: *mut mqseal_device, topic: &str, envelope: &[u8]) -> Result<(String, String, u64, Vec<u8>), mqseal_result> {
    let topic = CString::new(topic).unwrap();
    let mut m = unsafe { std::mem::zeroed::<mqseal_message>() };
    // SAFETY: live handle, valid buffers.
    let rc = unsafe { mqseal_device_open(device, topic.as_ptr(), envelope.as_ptr(), envelope.len(), &mut m) };
    if rc != mqseal_result::MQSEAL_OK {
        assert!(m.payload.data.is_null() && m.sender.data.is_null(), "a failed open leaves nothing to free");
        return Err(rc);
    }
    // SAFETY: filled in by a successful open.
    let payload = unsafe { std::slice::from_raw_parts(m.payload.data, m.payload.len) }.to_vec();
    let got = (text(&m.sender), text(&m.group), m.epoch, payload);
    // SAFETY: ours to free; twice is harmless (zeroed by the first).
    unsafe {
        mqseal_message_free(&mut m);
        mqseal_message_free(&mut m);
    }
    Ok(got)
}

fn token(rc: mqseal_result) -> String {
    // SAFETY: static string.
    unsafe { CStr::from_ptr(mqseal_result_token(rc as i32)) }.to_str().unwrap().to_string()
}

#[test]
fn a_sealed_message_opens_at_a_member_and_tampering_and_replays_are_refused_by_reason() {
    let fleet = fleet();
    let alice = load(&fleet, "alice");
    let bob = load(&fleet, "bob");

    let envelope = seal(alice, "g/temp", b"21.5").unwrap();
    assert_eq!(open(bob, "g/temp", &envelope).unwrap(), ("alice".into(), "g".into(), 1, b"21.5".to_vec()));
    let for_the_cli = seal(alice, "g/temp", b"22").unwrap();

    // A replay of the first message.
    assert_eq!(open(bob, "g/temp", &envelope), Err(mqseal_result::MQSEAL_REPLAY));
    assert!(last_error().contains("[replay]"), "{}", last_error());
    // Another topic than the one it was sealed for.
    let moved = seal(alice, "g/temp", b"x").unwrap();
    assert_eq!(open(bob, "g/humidity", &moved), Err(mqseal_result::MQSEAL_BAD_SIGNATURE));
    // A flipped byte in the ciphertext.
    let mut tampered = seal(alice, "g/temp", b"y").unwrap();
    let last = tampered.len() - 70;
    tampered[last] ^= 1;
    assert!(open(bob, "g/temp", &tampered).is_err());
    // Not an envelope at all.
    let rc = open(bob, "g/temp", b"hello").unwrap_err();
    assert_eq!((rc, token(rc).as_str()), (mqseal_result::MQSEAL_NOT_SIGN1, "not-sign1"));
    // bob may not publish; an unprotected topic has nothing to seal for.
    assert_eq!(seal(bob, "g/temp", b"z"), Err(mqseal_result::MQSEAL_NOT_A_PUBLISHER));
    assert_eq!(seal(alice, "public/x", b"z"), Err(mqseal_result::MQSEAL_NOT_PROTECTED));
    assert_eq!(seal(alice, "g/+", b"z"), Err(mqseal_result::MQSEAL_TOPIC_WILDCARD_IN_NAME));

    // SAFETY: handles from load, freed once.
    unsafe {
        mqseal_device_free(alice);
        mqseal_device_free(bob);
    }
    // Freed, bob's replay lock is released: the CLI opens what the library sealed.
    let opened = fleet.open("bob", "g/temp", &for_the_cli).unwrap_or_else(|e| panic!("mqseal open: {e}"));
    assert_eq!(opened, b"22");
}

#[test]
fn identity_login_tokens_and_control_topics() {
    let fleet = fleet();
    let alice = load(&fleet, "alice");
    let mut out = mqseal_bytes::EMPTY;
    // SAFETY: live handle, valid out.
    unsafe {
        assert_eq!(mqseal_device_id(alice, &mut out), mqseal_result::MQSEAL_OK);
        assert_eq!(text(&out), "alice");
        mqseal_bytes_free(&mut out);
        assert_eq!(mqseal_device_username(alice, &mut out), mqseal_result::MQSEAL_OK);
        assert_eq!(text(&out), "alice");
        mqseal_bytes_free(&mut out);
        let cid = CString::new("alice-1").unwrap();
        assert_eq!(mqseal_device_login_token(alice, cid.as_ptr(), &mut out), mqseal_result::MQSEAL_OK);
        assert!(text(&out).starts_with("mqseal-login-v1."), "{}", text(&out));
        mqseal_bytes_free(&mut out);
        let mut topics = Vec::new();
        for i in 0..mqseal_control_topic_count() {
            assert_eq!(mqseal_device_control_topic(alice, i, &mut out), mqseal_result::MQSEAL_OK);
            topics.push(text(&out));
            mqseal_bytes_free(&mut out);
        }
        assert_eq!(topics, ["$mqseal/policy", "$mqseal/bundle/alice"]);
        assert_eq!(mqseal_device_control_topic(alice, 2, &mut out), mqseal_result::MQSEAL_INVALID_ARGUMENT);
        let t = CString::new("g/x").unwrap();
        assert!(mqseal_device_is_protected(alice, t.as_ptr()));
        let t = CString::new("public/x").unwrap();
        assert!(!mqseal_device_is_protected(alice, t.as_ptr()));
        let g = CString::new("g").unwrap();
        let mut epoch = 0;
        assert_eq!(mqseal_device_group_epoch(alice, g.as_ptr(), &mut epoch), mqseal_result::MQSEAL_OK);
        assert_eq!(epoch, 1);
        // An ordinary topic is no control message.
        let mut what = mqseal_control::MQSEAL_CONTROL_UPDATED;
        assert_eq!(mqseal_device_apply_control(alice, t.as_ptr(), ptr::null(), 0, &mut what), mqseal_result::MQSEAL_OK);
        assert_eq!(what, mqseal_control::MQSEAL_CONTROL_NOT_CONTROL);
        // A forged policy on the policy topic is refused with the document's reason.
        let topic = CString::new("$mqseal/policy").unwrap();
        let forged = b"{\"format\":\"mqseal-policy-v1\"}";
        let rc = mqseal_device_apply_control(alice, topic.as_ptr(), forged.as_ptr(), forged.len(), &mut what);
        assert!(token(rc).starts_with("doc-"), "{}: {}", token(rc), last_error());
        mqseal_device_free(alice);
    }
}

#[test]
fn bad_arguments_are_refused_without_crashing() {
    let fleet = fleet();
    let alice = load(&fleet, "alice");
    let topic = CString::new("g/x").unwrap();
    let mut out = mqseal_bytes::EMPTY;
    // SAFETY: each call passes NULLs or valid pointers, as a careless C caller might.
    unsafe {
        assert_eq!(mqseal_device_seal(ptr::null_mut(), topic.as_ptr(), ptr::null(), 0, &mut out), mqseal_result::MQSEAL_INVALID_ARGUMENT);
        assert!(last_error().contains("device is NULL"), "{}", last_error());
        assert_eq!(mqseal_device_seal(alice, ptr::null(), ptr::null(), 0, &mut out), mqseal_result::MQSEAL_INVALID_ARGUMENT);
        assert_eq!(mqseal_device_seal(alice, topic.as_ptr(), ptr::null(), 5, &mut out), mqseal_result::MQSEAL_INVALID_ARGUMENT);
        assert_eq!(mqseal_device_seal(alice, topic.as_ptr(), ptr::null(), 0, ptr::null_mut()), mqseal_result::MQSEAL_INVALID_ARGUMENT);
        let bad_utf8 = [0xffu8, 0xfe, 0];
        assert_eq!(
            mqseal_device_seal(alice, bad_utf8.as_ptr().cast(), ptr::null(), 0, &mut out),
            mqseal_result::MQSEAL_INVALID_ARGUMENT
        );
        assert!(last_error().contains("not UTF-8"), "{}", last_error());
        let mut device = ptr::null_mut();
        let missing = CString::new("/nonexistent/device").unwrap();
        let rc = mqseal_device_load(missing.as_ptr(), &mut device);
        assert_ne!(rc, mqseal_result::MQSEAL_OK);
        assert!(device.is_null());
        assert!(last_error().contains("/nonexistent/device"), "{}", last_error());
        // A short buffer gets a cut, NUL-terminated message and the full length.
        let mut small = [0 as c_char; 8];
        let full = mqseal_last_error_message(small.as_mut_ptr(), small.len());
        assert!(full > 7);
        assert_eq!(CStr::from_ptr(small.as_ptr()).to_bytes().len(), 7);
        // NULLs to the free functions are ignored.
        mqseal_bytes_free(ptr::null_mut());
        mqseal_message_free(ptr::null_mut());
        mqseal_device_free(ptr::null_mut());
        // A second loaded handle on the same device cannot seal while the first holds the counter.
        let second = load(&fleet, "alice");
        assert!(seal(alice, "g/x", b"1").is_ok());
        assert_eq!(seal(second, "g/x", b"2"), Err(mqseal_result::MQSEAL_SEQ_LOCKED));
        mqseal_device_free(second);
        mqseal_device_free(alice);
    }
}

#[test]
fn a_device_joins_from_the_documents_and_refuses_another_authority() {
    let fleet = Fleet::new();
    fleet.add_device("carol");
    fleet.add_group("g", &["g/#"], 0);
    fleet.add_member("g", "carol", "pub");
    let policy = std::fs::read(fleet.export_policy()).unwrap();
    let bundle_path = fleet.path("carol.bundle");
    test_harness::fleet::mqseal_ok(
        &["bundle", "export", "carol", "--realm", fleet.realm().to_str().unwrap(), "--out", bundle_path.to_str().unwrap()],
        None,
    );
    let bundle = std::fs::read(&bundle_path).unwrap();
    let dir = CString::new(fleet.device_dir("carol").to_str().unwrap()).unwrap();
    let other = Fleet::new();
    let wrong = CString::new(other.realm().join("authority.pub").to_str().unwrap()).unwrap();
    let right = CString::new(fleet.realm().join("authority.pub").to_str().unwrap()).unwrap();
    let mut device = ptr::null_mut();
    let mut out = mqseal_bytes::EMPTY;
    // SAFETY: valid strings, buffers and out-pointers.
    unsafe {
        // Before joining, a token for fetching the documents (username: the id).
        let cid = CString::new("carol-join").unwrap();
        assert_eq!(mqseal_join_login_token(dir.as_ptr(), cid.as_ptr(), ptr::null(), &mut out), mqseal_result::MQSEAL_OK);
        assert!(text(&out).starts_with("mqseal-login-v1."));
        mqseal_bytes_free(&mut out);
        // Not loadable yet.
        assert_eq!(mqseal_device_load(dir.as_ptr(), &mut device), mqseal_result::MQSEAL_NOT_JOINED);
        let rc = mqseal_device_join(
            dir.as_ptr(),
            wrong.as_ptr(),
            policy.as_ptr(),
            policy.len(),
            bundle.as_ptr(),
            bundle.len(),
            &mut device,
        );
        assert_eq!(rc, mqseal_result::MQSEAL_DOC_WRONG_AUTHORITY, "{}", last_error());
        let rc = mqseal_device_join(
            dir.as_ptr(),
            right.as_ptr(),
            policy.as_ptr(),
            policy.len(),
            bundle.as_ptr(),
            bundle.len(),
            &mut device,
        );
        assert_eq!(rc, mqseal_result::MQSEAL_OK, "{}", last_error());
    }
    assert!(seal(device, "g/x", b"joined").is_ok());
    // SAFETY: a handle from join, freed once.
    unsafe { mqseal_device_free(device) };
}
