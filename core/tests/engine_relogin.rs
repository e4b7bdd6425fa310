//! The broker's re-check of logins on reload (docs/POLICY.md, "Login"): a key
//! login bound to its connection passes the basic-auth check Mosquitto runs
//! again for every client after a SIGHUP, while the device keeps its rights; the
//! token still opens no other connection. And kicks are recorded only once they
//! disconnected someone.

#[path = "../benches/support/broker.rs"]
mod broker;
#[path = "../benches/support/fleet.rs"]
mod fleet;

use std::path::Path;
use std::time::Duration;

use mqseal_core::broker::decision::{Decision, DenyReason};
use mqseal_core::broker::engine::{ConnectionId, Engine, Kick};
use mqseal_core::formats::login_token::make_token;
use mqseal_core::formats::policy::Policy;

const DEVICES: usize = 20;
const A: ConnectionId = ConnectionId(0x1000);
const B: ConnectionId = ConnectionId(0x2000);

fn policy(version: u64) -> Policy {
    let mut p = fleet::fleet_policy(DEVICES, 3);
    p.version = version;
    p
}

fn start(dir: &Path) -> Engine {
    broker::start_engine(dir, &policy(1), &[("auth", "key")], Box::new(broker::NullHost))
}

fn write_signed(dir: &Path, policy: &Policy) {
    std::fs::write(dir.join("policy.json"), policy.sign(&broker::authority()).expect("sign")).expect("write policy");
}

/// Device `i`'s fresh token for client id `<device id>-c` (a client id of its
/// own, docs/POLICY.md §3.5): (client id, username, token).
fn token(i: usize) -> (String, String, String) {
    let (client, user) = (format!("{}-c", fleet::device_id(i)), fleet::username(i));
    let now = mqseal_core::device::store::unix_millis();
    let token = make_token(&fleet::device_signing_key(i), &client, &user, now);
    (client, user, token)
}

fn login(engine: &mut Engine, connection: ConnectionId, (client, user, token): &(String, String, String)) -> Decision {
    engine.login(connection, client, Some(user), Some(token.as_bytes()))
}

const REUSED: Decision = Decision::Deny(DenyReason("login-reused"));

fn kinds(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[test]
fn a_bound_login_passes_the_recheck_of_a_reload_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let alice = token(1);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow);
    assert_eq!(engine.bound_logins(), 1);
    // A new connection with the same token: a replay, refused.
    assert_eq!(login(&mut engine, B, &alice), REUSED);
    // The same connection asked again outside a reload: refused too.
    assert_eq!(login(&mut engine, A, &alice), REUSED);

    // SIGHUP with an unchanged policy (before any tick: loaded at once).
    engine.reload();
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow, "the re-check of the live connection");
    assert_eq!(login(&mut engine, B, &alice), REUSED, "during the re-check, the token still opens no new connection");
    let mut other_client = alice.clone();
    other_client.0 = "c-other".into();
    assert_ne!(login(&mut engine, A, &other_client), Decision::Allow, "another client id on the same handle");
    let mut other_password = alice.clone();
    other_password.2.push('x');
    assert_ne!(login(&mut engine, A, &other_password), Decision::Allow, "another password on the same handle");
    // The broker's tick closes the window: the same check fails again.
    engine.tick();
    assert_eq!(login(&mut engine, A, &alice), REUSED);
    // A re-check never is a new login: one auth.accepted record in all.
    engine.shutdown();
    assert_eq!(kinds(dir.path(), "auth.accepted").len(), 1);
}

#[test]
fn a_connection_that_ended_is_not_rechecked() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let alice = token(1);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow);
    // DISCONNECT (or CLIENT_OFFLINE on 2.1); the broker may reuse the handle.
    engine.connection_closed(A);
    assert_eq!(engine.bound_logins(), 0);
    engine.reload();
    assert_eq!(login(&mut engine, A, &alice), REUSED);
    engine.shutdown();
}

#[test]
fn a_device_that_lost_its_login_in_the_new_policy_fails_the_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let (removed, rekeyed, kept) = (token(1), token(2), token(3));
    for (connection, t) in [(ConnectionId(1), &removed), (ConnectionId(2), &rekeyed), (ConnectionId(3), &kept)] {
        assert_eq!(login(&mut engine, connection, t), Decision::Allow);
    }
    let mut next = policy(2);
    next.devices.remove(&fleet::device_id(1));
    for group in next.groups.values_mut() {
        group.members.remove(&fleet::device_id(1));
    }
    let new_key = fleet::signing_key(fleet::KEY_COUNT - 1).verifying_key();
    assert_ne!(new_key, fleet::device_signing_key(2).verifying_key());
    next.devices.get_mut(&fleet::device_id(2)).unwrap().sign = new_key;
    write_signed(dir.path(), &next);
    engine.reload();
    assert_eq!(engine.policy().version(), 2);
    assert_eq!(login(&mut engine, ConnectionId(1), &removed), Decision::Deny(DenyReason::NOT_A_DEVICE));
    assert_ne!(login(&mut engine, ConnectionId(2), &rekeyed), Decision::Allow, "a replaced key ends the login");
    assert_eq!(login(&mut engine, ConnectionId(3), &kept), Decision::Allow);
    engine.shutdown();
}

#[test]
fn a_kick_is_recorded_only_once_it_disconnected_someone() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let mut next = policy(2);
    for i in [4, 5] {
        next.devices.remove(&fleet::device_id(i));
        for group in next.groups.values_mut() {
            group.members.remove(&fleet::device_id(i));
        }
    }
    write_signed(dir.path(), &next);
    engine.reload();
    assert_eq!(engine.next_tick_in(), Duration::ZERO, "kicks are waiting");
    let kicks = engine.tick();
    assert_eq!(kicks.len(), 2, "{kicks:?}");
    assert!(engine.next_tick_in() <= Duration::from_secs(1));
    for kick in &kicks {
        // Device 4 was connected (the broker's kick disconnected it), device 5 was not.
        let connected = matches!(kick, Kick::Username(u) if *u == fleet::username(4));
        engine.kick_carried_out(kick, connected);
    }
    engine.shutdown();
    let kicked = kinds(dir.path(), "client.kicked");
    assert_eq!(kicked.len(), 1, "{kicked:?}");
    assert!(kicked[0]["facts"]["client"].as_str().unwrap().contains(&fleet::username(4)), "{kicked:?}");
}

#[test]
fn the_next_tick_is_asked_for_soon_while_a_background_reload_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    engine.tick();
    assert!(engine.next_tick_in() <= Duration::from_secs(1));
    write_signed(dir.path(), &policy(2));
    engine.reload();
    assert!(engine.reload_in_progress());
    assert!(engine.next_tick_in() <= Duration::from_millis(10), "{:?}", engine.next_tick_in());
    engine.shutdown();
}
