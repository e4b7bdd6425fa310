//! The authority's side of key exchange over MQTT: `mqseal policy push` and
//! `mqseal bundle push`. Each signs what the realm holds now and publishes it,
//! retained, on mqseal's control topics (see `mqseal_core::formats::control`), logged
//! in as the authority (username `authority`, password a login token signed
//! with the authority key). They speak MQTT 5 so that the broker's refusal of
//! a document is visible (PUBACK 0x87); the broker's log and audit log say why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use mqseal_core::device::realm::{unix_now, Realm};
use mqseal_core::formats::control::{ControlTopic, AUTHORITY_USERNAME};

use crate::mqtt_link::{read_password_file, wait_connected, wait_delivered, Link, LinkOptions, Login, Password};

/// How the authority reaches the broker.
#[derive(clap::Args)]
pub struct BrokerArgs {
    /// Broker host.
    #[arg(short = 'H', long, value_name = "HOST", default_value = "localhost")]
    host: String,
    /// Broker port.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = 1883)]
    port: u16,
    /// MQTT client id [default: authority-push-RANDOM].
    #[arg(short = 'i', long = "id", value_name = "CLIENT_ID")]
    client_id: Option<String>,
    /// Read an MQTT password (first line) from FILE instead of sending a login
    /// token, for brokers where another mechanism authenticates the username `authority`.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Seconds to wait for the connection and for each acknowledgement.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

/// Which devices' bundles to push.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct BundleTargets {
    /// Device ids.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    /// Every member of GROUP (after a rotation).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Every device of the realm.
    #[arg(long)]
    all: bool,
}

/// A connection logged in as the realm's authority.
struct AuthorityLink {
    link: Link,
    timeout: Duration,
}

impl AuthorityLink {
    fn connect(realm: &Realm, broker: &BrokerArgs) -> anyhow::Result<AuthorityLink> {
        let client_id = Login::client_id(broker.client_id.as_ref(), "authority", "push")?;
        let password = match &broker.password_file {
            Some(path) => Password::Fixed(read_password_file(path)?),
            None => Password::Token(realm.authority_login_key()),
        };
        let login = Login::new(client_id, AUTHORITY_USERNAME.to_string(), password);
        let options = LinkOptions::one_shot(&broker.host, broker.port, broker.timeout);
        let mut link = Link::new(&options, login, true);
        let timeout = Duration::from_secs(broker.timeout);
        wait_connected(&mut link, timeout)?;
        Ok(AuthorityLink { link, timeout })
    }

    /// Publishes a document retained at QoS 1 and waits for the broker's PUBACK.
    fn publish(&mut self, topic: &str, document: Vec<u8>, what: &str) -> anyhow::Result<()> {
        self.link.publish(topic, 1, true, document)?;
        // Nothing is subscribed: there are no incoming messages to keep.
        let mut no_messages = Vec::new();
        wait_delivered(&mut self.link, 1, self.timeout, &mut no_messages).with_context(|| {
            format!(
                "{what} on {topic} (when the broker refuses a document, its log and audit log \
                 (publish.denied, policy.rejected) give the reason)"
            )
        })
    }

    fn close(mut self) {
        self.link.disconnect();
    }
}

fn open_realm(dir: &Path) -> anyhow::Result<Realm> {
    Realm::open(dir).with_context(|| format!("cannot open realm {}", dir.display()))
}

/// `mqseal policy push`: the next policy version, then every device's identity certificate.
pub fn policy_push(realm_dir: &Path, broker: &BrokerArgs, identities: bool) -> anyhow::Result<()> {
    let mut realm = open_realm(realm_dir)?;
    let now = unix_now();
    let policy = realm.export_policy(now).context("cannot export the policy")?;
    let version = realm.serial();
    let mut link = AuthorityLink::connect(&realm, broker)?;
    link.publish(&ControlTopic::Policy.topic(), policy, &format!("policy version {version}"))?;
    println!("pushed policy version {version} to {}:{} ({})", broker.host, broker.port, ControlTopic::Policy.topic());
    if identities {
        let ids: Vec<String> = realm.devices().keys().cloned().collect();
        for id in &ids {
            let cert = realm.identity_cert(id, now).with_context(|| format!("cannot sign the identity of {id}"))?;
            link.publish(&ControlTopic::Identity(id).topic(), cert, &format!("the identity of device {id}"))?;
        }
        println!("published {} device identities on $mqseal/identity/ID", ids.len());
    }
    link.close();
    Ok(())
}

/// `mqseal bundle push`: fresh bundles for the chosen devices. Devices that
/// only read go first: after a rotation, every reader should hold the new key
/// before any publisher can seal with it.
pub fn bundle_push(realm_dir: &Path, broker: &BrokerArgs, targets: &BundleTargets) -> anyhow::Result<()> {
    let mut realm = open_realm(realm_dir)?;
    let mut ids: Vec<String> = if targets.all {
        realm.devices().keys().cloned().collect()
    } else if let Some(group) = &targets.group {
        let g = realm.groups().get(group).ok_or_else(|| anyhow!("no group {group:?} in realm {}", realm_dir.display()))?;
        g.members.keys().cloned().collect()
    } else {
        targets.ids.clone()
    };
    for id in &ids {
        if !realm.devices().contains_key(id) {
            bail!("no device {id:?} in realm {}", realm_dir.display());
        }
    }
    if ids.is_empty() {
        bail!("no device to push a bundle to");
    }
    let publishes = |realm: &Realm, id: &str| realm.groups().values().any(|g| g.members.get(id).is_some_and(|r| r.can_publish()));
    ids.sort_by_key(|id| (publishes(&realm, id), id.clone()));
    let now = unix_now();
    let mut bundles = Vec::with_capacity(ids.len());
    for id in &ids {
        let bundle = realm.export_bundle(id, now).with_context(|| format!("cannot export the bundle of {id}"))?;
        bundles.push((id.clone(), realm.serial(), bundle));
    }
    let mut link = AuthorityLink::connect(&realm, broker)?;
    for (id, version, bundle) in bundles {
        link.publish(&ControlTopic::Bundle(&id).topic(), bundle, &format!("the key bundle of device {id}"))?;
        println!("pushed key bundle version {version} for device {id} ($mqseal/bundle/{id})");
    }
    link.close();
    Ok(())
}
