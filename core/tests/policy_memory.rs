//! The compiled policy stays compact: well under 1 KiB per device. Measured
//! with a counting allocator on a policy shaped like a large fleet (one group
//! per device with its own topic subtree, plus a fleet-wide group).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use mqseal_core::formats::keys::SigningKey;
use mqseal_core::formats::policy::{DevicePolicy, GroupPolicy, Policy, Role};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn compiled_policy_is_under_one_kib_per_device() {
    const N: usize = 20_000;
    let keys: Vec<_> = (0..16u8).map(|i| SigningKey::ed25519_from_seed(&[i + 1; 32]).verifying_key()).collect();
    let mut devices = BTreeMap::new();
    let mut groups = BTreeMap::new();
    let mut fleet_members = BTreeMap::new();
    for i in 0..N {
        let id = format!("dev-{i:07}");
        devices.insert(id.clone(), DevicePolicy { username: format!("user-{i:07}"), sign: keys[i % 16].clone() });
        groups.insert(
            format!("g-{i:07}"),
            GroupPolicy {
                topics: vec![format!("site/{id}/#")],
                members: [(id.clone(), Role::PubSub)].into(),
                epoch: 1,
                epoch_started_at: 0,
                previous_epoch_grace_secs: 3600,
            },
        );
        fleet_members.insert(id, Role::Pub);
    }
    groups.insert(
        "fleet".into(),
        GroupPolicy {
            topics: vec!["fleet/+/telemetry".into()],
            members: fleet_members,
            epoch: 1,
            epoch_started_at: 0,
            previous_epoch_grace_secs: 0,
        },
    );
    let policy = Policy { version: 1, issued_at: 0, devices, groups };

    let before = LIVE.load(Ordering::Relaxed);
    let compiled = policy.compile("mem").unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    let per_device = (after - before) as f64 / N as f64;
    eprintln!("compiled policy: {:.0} bytes per device ({} devices, 2 memberships each)", per_device, N);
    assert!(per_device < 1024.0, "{per_device} bytes per device");
    // Still answers, and the per-message lookups allocate nothing.
    let topics = ["site/dev-0000042/x/y", "fleet/dev-0000007/telemetry", "site/unknown/x", "other/topic/a/b/c", "$SYS/x"];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut found = 0;
    for _ in 0..100 {
        let d = compiled.device_by_username("user-0000042").unwrap();
        let me = compiled.device_by_id("dev-0000042").unwrap();
        assert_eq!(d, me);
        let _key = compiled.verifying_key(d);
        for t in topics {
            if let Some(g) = compiled.group_of_topic(t) {
                found += 1;
                let _ = compiled.role(g, d);
                let _ = compiled.check_epoch(g, 1, 10);
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(found, 200);
    assert_eq!(after - before, 0, "lookups on the hot path allocated");
    let d = compiled.device_by_username("user-0000042").unwrap();
    let g = compiled.group_of_topic("site/dev-0000042/x/y").unwrap();
    assert_eq!(compiled.role(g, d), Some(Role::PubSub));
}
