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
use mqseal_core::broker::engine::{AfterClose, ConnectionId, Engine, Kick};
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
fn a_connection_whose_session_ended_is_not_rechecked() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let alice = token(1);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow);
    // DISCONNECT of a session that ends with it; the broker may reuse the handle.
    engine.connection_closed(A, AfterClose::SessionEnded);
    assert_eq!((engine.bound_logins(), engine.offline_sessions()), (0, 0));
    engine.reload();
    assert_eq!(login(&mut engine, A, &alice), REUSED);
    engine.shutdown();
}

/// Policy 1 with a different username for device `i`.
fn renamed(i: usize) -> Policy {
    let mut next = policy(2);
    next.devices.get_mut(&fleet::device_id(i)).unwrap().username = "renamed".into();
    next
}

#[test]
fn an_offline_session_is_never_refused_by_a_recheck_and_its_token_still_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let (alice, bob) = (token(1), token(2));
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow);
    assert_eq!(login(&mut engine, B, &bob), Decision::Allow);
    // CLIENT_OFFLINE (2.1), or 2.0's DISCONNECT of a session that may persist.
    engine.connection_closed(A, AfterClose::SessionMayPersist);
    engine.connection_closed(B, AfterClose::SessionMayPersist);
    assert_eq!((engine.bound_logins(), engine.offline_sessions()), (0, 2));

    // A reload that removes device 2: both offline sessions pass their
    // re-check (a refusal would not end them, and 2.0 would then hold them
    // twice on its expiry list), without a record.
    let mut next = policy(2);
    next.devices.remove(&fleet::device_id(2));
    for group in next.groups.values_mut() {
        group.members.remove(&fleet::device_id(2));
    }
    write_signed(dir.path(), &next);
    engine.reload();
    assert_eq!(engine.policy().version(), 2);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow, "the offline session of a device that keeps its login");
    assert_eq!(login(&mut engine, B, &bob), Decision::Allow, "the offline session of the removed device");
    // Inside the window, the token still opens no other connection, and
    // another password or client id on the offline handle is a new login.
    assert_eq!(login(&mut engine, ConnectionId(0x3000), &alice), REUSED);
    let mut other_password = alice.clone();
    other_password.2.push('x');
    assert_ne!(login(&mut engine, A, &other_password), Decision::Allow);
    engine.tick();
    // Outside the window the offline handle's token is a new login: refused.
    assert_eq!(login(&mut engine, A, &alice), REUSED);
    // The device comes back with a fresh token on a new handle; the broker
    // ends the offline session (a second DISCONNECT of its handle).
    assert_eq!(login(&mut engine, ConnectionId(0x4000), &token(1)), Decision::Allow);
    engine.connection_closed(A, AfterClose::SessionEnded);
    assert_eq!(engine.offline_sessions(), 1, "device 2's session alone is left");
    engine.shutdown();
    assert_eq!(kinds(dir.path(), "auth.accepted").len(), 3, "two logins and device 1's return; no re-check recorded");
}

#[test]
fn a_second_end_of_a_handle_removes_its_offline_login() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let alice = token(1);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow);
    engine.connection_closed(A, AfterClose::SessionMayPersist);
    // Its session taken over or ended: 2.0 reports DISCONNECT for the handle again.
    engine.connection_closed(A, AfterClose::SessionMayPersist);
    assert_eq!(engine.offline_sessions(), 0);
    engine.reload();
    assert_eq!(login(&mut engine, A, &alice), REUSED, "a handle the broker may have reused");
    engine.shutdown();
}

#[test]
fn a_live_connection_refused_by_its_recheck_is_not_refused_again_once_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path());
    let alice = token(1);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow);
    write_signed(dir.path(), &renamed(1));
    engine.reload();
    assert_eq!(login(&mut engine, A, &alice), Decision::Deny(DenyReason::NOT_A_DEVICE), "the live connection's re-check");
    // The broker disconnects it; its session lives on offline.
    engine.connection_closed(A, AfterClose::SessionMayPersist);
    // The next SIGHUP (no tick yet, so it loads at once).
    write_signed(dir.path(), &{
        let mut p = renamed(1);
        p.version = 3;
        p
    });
    engine.reload();
    assert_eq!(engine.policy().version(), 3);
    assert_eq!(login(&mut engine, A, &alice), Decision::Allow, "the offline session's re-check");
    engine.shutdown();
}

#[test]
fn with_auth_defer_an_offline_session_gets_no_refusal_and_no_opinion() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = broker::start_engine(dir.path(), &policy(1), &[("auth", "defer")], Box::new(broker::NullHost));
    // Device 1's own client id, under its username: mqseal has no objection;
    // the mechanism that authenticates (a password file) decides.
    let client = format!("{}-c", fleet::device_id(1));
    let (user, password) = (fleet::username(1), b"a password".as_slice());
    let defer_login = |engine: &mut Engine, connection| engine.login(connection, &client, Some(&user), Some(password));
    assert_eq!(defer_login(&mut engine, A), Decision::Defer);
    assert_eq!(defer_login(&mut engine, B), Decision::Defer);
    engine.connection_closed(A, AfterClose::SessionMayPersist);
    // Renamed, device 1 no longer logs in as that username, so the client id
    // is no longer the login's own: a new login, or a live connection, is refused.
    write_signed(dir.path(), &renamed(1));
    engine.reload();
    assert_eq!(defer_login(&mut engine, B), Decision::Deny(DenyReason::CLIENT_ID_NOT_OWNED), "the live connection");
    assert_eq!(defer_login(&mut engine, A), Decision::Defer, "the offline session: no refusal, the password check decides");
    engine.tick();
    assert_eq!(defer_login(&mut engine, A), Decision::Deny(DenyReason::CLIENT_ID_NOT_OWNED), "outside the window: a new login");
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

#[test]
fn a_session_restored_from_persistence_is_answered_as_an_offline_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = start(dir.path());
    assert_eq!(key.recheck_restored_session(), Decision::Allow, "auth key: mqseal authenticates, and never refuses it");
    key.shutdown();
    let dir = tempfile::tempdir().unwrap();
    let defer = broker::start_engine(dir.path(), &policy(1), &[("auth", "defer")], Box::new(broker::NullHost));
    assert_eq!(defer.recheck_restored_session(), Decision::Defer, "auth defer: the mechanism that authenticates decides");
    defer.shutdown();
}
