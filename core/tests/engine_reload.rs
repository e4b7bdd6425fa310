//! SIGHUP reloads: once the broker ticks, the policy file is read, verified and
//! compiled on a helper thread, and a later tick installs it on the broker
//! thread (a million-device policy takes seconds to load: clients must not
//! stall meanwhile). Before the first tick it loads at once, as before.

#[path = "../benches/support/broker.rs"]
mod broker;
#[path = "../benches/support/fleet.rs"]
mod fleet;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqseal_core::broker::engine::{Engine, Kick};
use mqseal_core::broker::host::{Host, LogLevel};
use mqseal_core::formats::policy::Policy;
use parking_lot::Mutex;

/// Keeps every line the engine logs.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Host for Lines {
    fn log(&self, _level: LogLevel, message: &str) {
        self.0.lock().push(message.to_string());
    }
}

impl Lines {
    fn any(&self, needle: &str) -> bool {
        self.0.lock().iter().any(|l| l.contains(needle))
    }
}

fn policy(version: u64) -> Policy {
    let mut p = fleet::fleet_policy(300, 30);
    p.version = version;
    p
}

fn start(dir: &Path) -> (Engine, Lines) {
    let lines = Lines::default();
    let engine = broker::start_engine(dir, &policy(1), &[], Box::new(lines.clone()));
    assert_eq!(engine.policy().version(), 1);
    (engine, lines)
}

fn write_policy(dir: &Path, version: u64) {
    write_signed(dir, &policy(version));
}

fn write_signed(dir: &Path, policy: &Policy) {
    let signed = policy.sign(&broker::authority()).expect("sign");
    std::fs::write(dir.join("policy.json"), signed).expect("write policy");
}

/// An engine that has ticked, reloading version 2 in the background.
fn reloading_in_background(dir: &Path) -> (Engine, Lines) {
    let (mut engine, lines) = start(dir);
    engine.tick();
    write_policy(dir, 2);
    engine.reload();
    (engine, lines)
}

/// Ticks like the broker until the background reload is installed.
fn tick_until_installed(engine: &mut Engine) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.reload_in_progress() {
        assert!(Instant::now() < deadline, "the background reload never finished");
        engine.tick();
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn before_the_first_tick_a_reload_loads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, lines) = start(dir.path());
    write_policy(dir.path(), 2);
    engine.reload();
    assert!(!engine.reload_in_progress());
    assert_eq!(engine.policy().version(), 2);
    assert!(lines.any("policy version 2 loaded on reload"));
    engine.shutdown();
}

#[test]
fn after_a_tick_the_file_loads_in_the_background_and_a_tick_installs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, lines) = reloading_in_background(dir.path());
    // Only a tick installs: until then the policy in force is the old one.
    assert!(engine.reload_in_progress());
    assert_eq!(engine.policy().version(), 1);
    assert!(lines.any("in the background"));
    tick_until_installed(&mut engine);
    assert_eq!(engine.policy().version(), 2);
    assert!(lines.any("policy version 2 loaded on reload (was 1)"));
    engine.shutdown();
}

#[test]
fn a_broken_file_loaded_in_the_background_keeps_the_current_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, lines) = start(dir.path());
    engine.tick();
    std::fs::write(dir.path().join("policy.json"), b"{\"not\": \"a signed policy\"}").unwrap();
    engine.reload();
    tick_until_installed(&mut engine);
    assert_eq!(engine.policy().version(), 1);
    assert!(lines.any("policy reload rejected, keeping version 1"), "{:?}", lines.0.lock());
    engine.shutdown();
}

#[test]
fn a_sighup_during_a_load_reads_the_file_again_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, lines) = reloading_in_background(dir.path());
    // The file changes while it loads; the second SIGHUP must not be lost.
    write_policy(dir.path(), 3);
    engine.reload();
    assert!(lines.any("already in progress"));
    tick_until_installed(&mut engine);
    assert_eq!(engine.policy().version(), 3, "{:?}", lines.0.lock());
    engine.shutdown();
}

#[test]
fn shutdown_waits_for_a_load_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, lines) = reloading_in_background(dir.path());
    assert!(engine.reload_in_progress());
    // Returns only when the loader thread has exited (the library may be unloaded next).
    engine.shutdown();
    assert!(lines.any("reload in progress was abandoned"));
}

#[test]
fn clients_of_a_device_removed_by_a_background_reload_are_disconnected_by_the_tick_that_installs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, lines) = start(dir.path());
    engine.tick();
    let mut next = policy(2);
    let gone = fleet::device_id(5);
    next.devices.remove(&gone);
    for group in next.groups.values_mut() {
        group.members.remove(&gone);
    }
    write_signed(dir.path(), &next);
    engine.reload();
    // Who loses rights is worked out on the loader thread; the installing tick kicks them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kicks = loop {
        let kicks = engine.tick();
        if !engine.reload_in_progress() {
            break kicks;
        }
        assert!(kicks.is_empty(), "nobody is kicked before the policy is installed: {kicks:?}");
        assert!(Instant::now() < deadline, "the background reload never finished");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(engine.policy().version(), 2);
    assert!(engine.policy().device_by_id(&gone).is_none());
    assert!(
        kicks.iter().any(|k| matches!(k, Kick::Username(u) if *u == fleet::username(5))),
        "{kicks:?}\n{:?}",
        lines.0.lock()
    );
    assert!(lines.any("1 devices lost rights"), "{:?}", lines.0.lock());
    engine.shutdown();
}
