//! Policy rules: every broken rule is refused with the file and the field path.

use std::collections::BTreeMap;

use mqseal_core::formats::keys::SigningKey;
use mqseal_core::formats::policy::{DevicePolicy, GroupPolicy, Policy, PolicyError, Role};

fn device(seed: u8, username: &str) -> DevicePolicy {
    DevicePolicy { username: username.into(), sign: SigningKey::ed25519_from_seed(&[seed; 32]).verifying_key() }
}

fn group(topics: &[&str], members: &[(&str, Role)]) -> GroupPolicy {
    GroupPolicy {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        members: members.iter().map(|(d, r)| (d.to_string(), *r)).collect(),
        epoch: 1,
        epoch_started_at: 1_700_000_000,
        previous_epoch_grace_secs: 3600,
    }
}

fn sample() -> Policy {
    let mut devices = BTreeMap::new();
    devices.insert("1111".to_string(), device(1, "1111"));
    devices.insert("2222".to_string(), device(2, "sensor-2"));
    let mut groups = BTreeMap::new();
    groups.insert("hsu0001".to_string(), group(&["hsu/0001/#"], &[("1111", Role::PubSub), ("2222", Role::Sub)]));
    groups.insert("fleet".to_string(), group(&["fleet/+/telemetry", "fleet/+/status"], &[("2222", Role::Pub)]));
    Policy { version: 3, issued_at: 1_700_000_000, devices, groups }
}

fn field_error(policy: &Policy) -> (String, String) {
    match policy.validate("p.json") {
        Err(PolicyError::Invalid { origin, field, problem }) => {
            assert_eq!(origin, "p.json");
            (field, problem)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn sample_is_valid() {
    sample().validate("p.json").unwrap();
}

#[test]
fn bad_filters_name_the_topic_index() {
    let mut p = sample();
    p.groups.get_mut("hsu0001").unwrap().topics = vec!["hsu/0001/x".into(), "hsu/#/x".into()];
    let (field, problem) = field_error(&p);
    assert_eq!(field, "groups.hsu0001.topics[1]");
    assert!(problem.contains("'#' must be the last level"), "{problem}");
    let err = p.validate("p.json").unwrap_err().to_string();
    assert!(err.starts_with("p.json: groups.hsu0001.topics[1]: '#' must be the last level"), "{err}");

    p.groups.get_mut("hsu0001").unwrap().topics = vec!["hsu/0001/x".into(), "hsu/a+/x".into()];
    assert_eq!(field_error(&p).0, "groups.hsu0001.topics[1]");
    p.groups.get_mut("hsu0001").unwrap().topics = vec![];
    assert_eq!(field_error(&p).0, "groups.hsu0001.topics");
    p.groups.get_mut("hsu0001").unwrap().topics = vec!["a/b".into(), "a/b".into()];
    let (field, problem) = field_error(&p);
    assert_eq!((field.as_str(), problem.contains("duplicate of topics[0]")), ("groups.hsu0001.topics[1]", true));
    p.groups.get_mut("hsu0001").unwrap().topics = vec!["$SYS/mqseal/#".into()];
    let (field, problem) = field_error(&p);
    assert_eq!(field, "groups.hsu0001.topics[0]");
    assert!(problem.contains("reserved"), "{problem}");
    // mqseal's own control prefix cannot be owned by a group either.
    p.groups.get_mut("hsu0001").unwrap().topics = vec!["$mqseal/identity/#".into()];
    let (field, problem) = field_error(&p);
    assert_eq!(field, "groups.hsu0001.topics[0]");
    assert!(problem.contains("'$mqseal'") && problem.contains("reserved"), "{problem}");
}

#[test]
fn overlapping_groups_are_refused_and_explained() {
    let mut p = sample();
    // 'fleet/+/telemetry' (group fleet) and 'fleet/dev9/#' would both own 'fleet/dev9/telemetry'.
    p.groups.get_mut("hsu0001").unwrap().topics = vec!["hsu/0001/#".into(), "fleet/dev9/#".into()];
    let (field, problem) = field_error(&p);
    assert_eq!(field, "groups.hsu0001.topics[1]");
    assert!(problem.contains("overlaps 'fleet/+/"), "{problem}");
    assert!(problem.contains("of group 'fleet'"), "{problem}");
    assert!(problem.contains("both match e.g. 'fleet/dev9/"), "{problem}");
    assert!(problem.contains("at most one group"), "{problem}");
}

#[test]
fn members_must_be_known_devices_and_ids_valid() {
    let mut p = sample();
    p.groups.get_mut("fleet").unwrap().members.insert("9999".into(), Role::Sub);
    let (field, problem) = field_error(&p);
    assert_eq!(field, "groups.fleet.members.9999");
    assert!(problem.contains("no device \"9999\""), "{problem}");

    let mut p = sample();
    let g = p.groups.remove("fleet").unwrap();
    p.groups.insert("bad/group".into(), g);
    assert_eq!(field_error(&p).0, "groups.bad/group");

    let mut p = sample();
    p.devices.insert("authority".into(), device(5, "auth"));
    assert_eq!(field_error(&p).0, "devices.authority");
}

#[test]
fn usernames_are_unique_and_trick_free() {
    let mut p = sample();
    p.devices.get_mut("1111").unwrap().username = "sensor-2".into();
    let (field, problem) = field_error(&p);
    assert_eq!(field, "devices.2222.username");
    assert!(problem.contains("already the username of device \"1111\""), "{problem}");

    for bad in ["a/b", "dev+", "#", "", "x\u{0}"] {
        let mut p = sample();
        p.devices.get_mut("1111").unwrap().username = bad.into();
        assert_eq!(field_error(&p).0, "devices.1111.username", "{bad:?}");
    }
}

#[test]
fn numbers_are_checked() {
    let mut p = sample();
    p.version = 0;
    assert_eq!(field_error(&p).0, "version");
    let mut p = sample();
    p.groups.get_mut("fleet").unwrap().epoch = 0;
    assert_eq!(field_error(&p).0, "groups.fleet.epoch");
    let mut p = sample();
    p.groups.get_mut("fleet").unwrap().previous_epoch_grace_secs = u64::MAX;
    assert_eq!(field_error(&p).0, "groups.fleet.previous_epoch_grace_secs");
}

#[test]
fn body_syntax_errors_name_the_file() {
    let err = Policy::from_body(br#"{"version":1}"#, "x.json").unwrap_err();
    assert_eq!(err.reason(), "policy-syntax");
    assert!(err.to_string().starts_with("x.json: policy body: missing field"), "{err}");
    let err = Policy::from_body(
        br#"{"devices":{},"groups":{},"issued_at":1,"version":1,"extra":true}"#,
        "x.json",
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    let body = br#"{"devices":{"d1":{"sign":{"alg":"RSA","public":"AA"},"username":"d1"}},"groups":{},"issued_at":1,"version":1}"#;
    let err = Policy::from_body(body, "x.json").unwrap_err().to_string();
    assert!(err.starts_with("x.json: devices.d1.sign.alg: \"RSA\" is not one of"), "{err}");
    let body = br#"{"devices":{"d1":{"sign":{"alg":"Ed25519","public":"AA"},"username":"d1"}},"groups":{},"issued_at":1,"version":1}"#;
    let err = Policy::from_body(body, "x.json").unwrap_err().to_string();
    assert!(err.starts_with("x.json: devices.d1.sign.public:"), "{err}");
    let body = br#"{"devices":{},"groups":{"g":{"epoch":1,"epoch_started_at":0,"members":{"d":"owner"},"previous_epoch_grace_secs":0,"topics":["a"]}},"issued_at":1,"version":1}"#;
    let err = Policy::from_body(body, "x.json").unwrap_err().to_string();
    assert!(err.starts_with("x.json: groups.g.members.d: \"owner\" is not one of pub | sub | pubsub"), "{err}");
}
