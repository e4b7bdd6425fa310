//! The benchmarks' fleet (benches/support) is what the benchmarks and the scale
//! table say it is: a small one gets exactly the answers its cases promise, from
//! the compiled policy and from an engine started as the plugin starts it. This
//! keeps the support code compiling under `cargo test` (benches are not built by
//! it) and keeps a benchmark from silently measuring refusals. Asserts behaviour,
//! never speed.

#[path = "../benches/support/broker.rs"]
mod broker;
#[path = "../benches/support/fleet.rs"]
mod fleet;

use mqseal_core::broker::decision::{Access, Client, Decision};
use mqseal_core::formats::envelope::{self, AeadAlg, SealInput};
use mqseal_core::formats::keys::SignAlg;
use mqseal_core::formats::policy::{Role, SubscriptionVerdict};

const DEVICES: usize = 300;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
const GROUPS: usize = 30;

#[test]
fn the_fleet_has_the_promised_shape() {
    let policy = fleet::fleet_policy(DEVICES, GROUPS);
    let compiled = policy.compile("fleet").expect("the fleet compiles");
    assert_eq!((compiled.device_count(), compiled.group_count()), (DEVICES, GROUPS + 1));
    assert_eq!(compiled.memberships().count(), 3 * DEVICES);
    for i in [0, 1, 17, DEVICES - 1] {
        let d = compiled.device_by_username(&fleet::username(i)).expect("every device logs in by its username");
        let home = compiled.group_by_id(&fleet::group_id(fleet::home_group(i, GROUPS))).expect("home group");
        let second = compiled.group_by_id(&fleet::group_id(fleet::second_group(i, GROUPS))).expect("second group");
        let all = compiled.group_by_id("fleet").expect("fleet group");
        assert_eq!(compiled.role(home, d), Some(Role::PubSub));
        assert_eq!(compiled.role(second, d), Some(Role::Sub));
        assert_eq!(compiled.role(all, d), Some(Role::Pub));
        let foreign = compiled.group_by_id(&fleet::group_id(fleet::foreign_group(i, GROUPS, i * 7))).expect("group");
        assert_eq!(compiled.role(foreign, d), None);
        assert_eq!(compiled.verifying_key(d), &fleet::device_signing_key(i).verifying_key());
    }
    assert_eq!(fleet::device_signing_key(fleet::device_with_alg(SignAlg::P256)).alg(), SignAlg::P256);
    assert_eq!(fleet::device_signing_key(fleet::device_with_alg(SignAlg::Ed25519)).alg(), SignAlg::Ed25519);
}

#[test]
fn cases_get_the_answers_they_promise_from_the_policy() {
    let compiled = fleet::fleet_policy(DEVICES, GROUPS).compile("fleet").expect("compiles");
    let mut rng = fleet::Rng(3);
    let (mut readable, mut refused) = (0, 0);
    for _ in 0..2000 {
        let s = fleet::subscribe_case(&mut rng, DEVICES, GROUPS);
        let device = compiled.device_by_username(&fleet::username(s.device));
        let verdict = compiled.check_subscription(device, &s.filter).expect("valid filter");
        assert_eq!(matches!(verdict, SubscriptionVerdict::Readable(_)), s.readable, "{} by {}", s.filter, s.device);
        let d = fleet::delivery_case(&mut rng, DEVICES, GROUPS);
        let device = compiled.device_by_username(&fleet::username(d.device)).expect("device");
        let group = compiled.group_of_topic(&d.topic).expect("owned topic");
        let may_read = compiled.role(group, device).is_some_and(|r| r.can_read());
        assert_eq!(may_read, d.readable, "{} to {}", d.topic, d.device);
        if d.readable { readable += 1 } else { refused += 1 }
        let p = fleet::publish_case(&mut rng, DEVICES, GROUPS);
        let device = compiled.device_by_username(&fleet::username(p.device)).expect("device");
        let group = compiled.group_of_topic(&p.topic).expect("owned topic");
        assert_eq!(compiled.group(group).id, p.group);
        assert!(compiled.role(group, device).is_some_and(|r| r.can_publish()), "{} by {}", p.topic, p.device);
    }
    // About a quarter of the cases are refusals.
    assert!((300..700).contains(&refused) && readable + refused == 2000, "{refused} refused");
}

#[test]
fn an_engine_started_like_the_plugin_accepts_sealed_publishes_and_judges_the_cases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine = broker::start_engine(dir.path(), &fleet::fleet_policy(DEVICES, GROUPS), &[], Box::new(broker::NullHost));
    for alg in [SignAlg::Ed25519, SignAlg::P256] {
        let i = fleet::device_with_alg(alg);
        let home = fleet::home_group(i, GROUPS);
        let topic = format!("site/{home}/hall/sensor7");
        let (id, user) = (format!("c-{}", fleet::username(i)), fleet::username(i));
        let client = Client { id: &id, username: Some(&user) };
        for seq in 1..=3 {
            let payload = envelope::seal(&SealInput {
                signer: &fleet::device_signing_key(i),
                sender: &fleet::device_id(i),
                group: &fleet::group_id(home),
                epoch: fleet::EPOCH,
                seq,
                timestamp_ms: now_ms(),
                topic: &topic,
                aead: AeadAlg::A256Gcm,
                group_key: &fleet::group_key(),
                plaintext: b"reading",
            })
            .expect("seal");
            assert_eq!(engine.acl_check(client, Access::Write, &topic, &payload), Decision::Allow, "{alg} seq {seq}");
            assert_eq!(engine.on_message(client, &topic, &payload, false), Decision::Allow);
            // The same envelope again is a replay.
            assert!(matches!(engine.acl_check(client, Access::Write, &topic, &payload), Decision::Deny(_)));
        }
    }
    let mut rng = fleet::Rng(5);
    for _ in 0..200 {
        let s = fleet::subscribe_case(&mut rng, DEVICES, GROUPS);
        let (id, user) = (format!("c-{}", fleet::username(s.device)), fleet::username(s.device));
        let d = engine.acl_check(Client { id: &id, username: Some(&user) }, Access::Subscribe, &s.filter, b"");
        assert_eq!(d == Decision::Allow, s.readable, "{} by {}: {d:?}", s.filter, s.device);
    }
    engine.shutdown();
}
