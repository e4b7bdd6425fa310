//! Who owns an MQTT client id (docs/POLICY.md §3.5).
//!
//! Mosquitto lets one connection per client id live: a login with a client id
//! already connected closes the older connection, and a clean start discards the
//! id's persistent session with the messages queued in it. So a client id is a
//! resource, and each one belongs to one identity: device `D` owns `D` and every
//! id that begins with `D-`; the realm's authority owns `authority` and
//! `authority-...` in the same way. Device ids may themselves contain `-`, so
//! when several ids match, the longest wins: with devices `a` and `a-b`, the
//! client id `a-b-7` is `a-b`'s, never `a`'s. An id no identity matches belongs
//! to nobody (a client that is no device may use it).

use crate::formats::ids::MAX_ID_LEN;

/// Who owns a client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<D> {
    Device(D),
    Authority,
    Nobody,
}

/// The owner of `client_id`: the device (found by `device_by_id`) or the
/// authority (`authority_id`) whose id is the longest that equals the client id
/// or is followed in it by `-`.
///
/// At most one look-up per `-` among the first [`MAX_ID_LEN`] + 1 bytes, and no
/// allocation: an id longer than that cannot be anyone's prefix.
pub fn owner<D>(client_id: &str, authority_id: &str, device_by_id: impl Fn(&str) -> Option<D>) -> Owner<D> {
    let bytes = client_id.as_bytes();
    let window = bytes.len().min(MAX_ID_LEN + 1);
    // Longest first: the whole id (if short enough to be an id), then before each '-'.
    let cuts = (1..=window).rev().filter(|&len| if len == bytes.len() { len <= MAX_ID_LEN } else { bytes[len] == b'-' });
    for len in cuts {
        // Cut only before '-' or at the end, both char boundaries: `get` never fails here.
        let Some(prefix) = client_id.get(..len) else { continue };
        if let Some(device) = device_by_id(prefix) {
            return Owner::Device(device);
        }
        if prefix == authority_id {
            return Owner::Authority;
        }
    }
    Owner::Nobody
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_in(devices: &[&'static str], client_id: &str) -> Owner<&'static str> {
        owner(client_id, "authority", |id| devices.iter().copied().find(|d| *d == id))
    }

    #[test]
    fn a_device_owns_its_id_and_everything_after_its_id_and_a_dash() {
        let devices = ["alice", "bob"];
        for id in ["alice", "alice-", "alice-sub", "alice-pub-0a1b2c", "alice-a/b", "alice--x"] {
            assert_eq!(owner_in(&devices, id), Owner::Device("alice"), "{id}");
        }
        for id in ["alicex", "alic", "xalice", "alice_sub", "alice.1", "Alice", "", "-alice", "bo", "bobby"] {
            assert_eq!(owner_in(&devices, id), Owner::Nobody, "{id}");
        }
        assert_eq!(owner_in(&devices, "bob-1"), Owner::Device("bob"));
    }

    #[test]
    fn the_longest_matching_device_id_wins() {
        let devices = ["a", "a-b", "a-b-c"];
        assert_eq!(owner_in(&devices, "a"), Owner::Device("a"));
        assert_eq!(owner_in(&devices, "a-x"), Owner::Device("a"));
        assert_eq!(owner_in(&devices, "a-b"), Owner::Device("a-b"));
        assert_eq!(owner_in(&devices, "a-b-7"), Owner::Device("a-b"));
        assert_eq!(owner_in(&devices, "a-b-c-7"), Owner::Device("a-b-c"));
        assert_eq!(owner_in(&devices, "a-bc"), Owner::Device("a"));
    }

    #[test]
    fn the_authority_owns_its_name_unless_a_longer_device_id_matches() {
        let devices = ["authority-box"];
        assert_eq!(owner_in(&devices, "authority"), Owner::Authority);
        assert_eq!(owner_in(&devices, "authority-push-1f2e"), Owner::Authority);
        assert_eq!(owner_in(&devices, "authority-box-1"), Owner::Device("authority-box"));
        assert_eq!(owner_in(&devices, "authorityx"), Owner::Nobody);
    }

    #[test]
    fn long_client_ids_are_bounded_work() {
        let long_id = "x".repeat(MAX_ID_LEN);
        let devices: Vec<&'static str> = vec![Box::leak(long_id.clone().into_boxed_str())];
        assert_eq!(owner_in(&devices, &format!("{long_id}-{}", "-".repeat(70_000))), Owner::Device(devices[0]));
        assert_eq!(owner_in(&devices, &"-".repeat(70_000)), Owner::Nobody);
        assert_eq!(owner_in(&devices, &format!("{long_id}y")), Owner::Nobody);
        let calls = std::cell::Cell::new(0);
        let _ = owner(&"a-".repeat(40_000), "authority", |_| {
            calls.set(calls.get() + 1);
            None::<()>
        });
        assert!(calls.get() <= MAX_ID_LEN + 1, "{} look-ups", calls.get());
    }
}
