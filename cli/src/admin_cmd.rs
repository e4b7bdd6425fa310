//! Administrator commands: the realm, its devices and groups, and the files
//! handed to brokers (the policy) and devices (their key bundles).
//!
//! Every command locks the realm for its duration, checks the change as a
//! whole (the resulting policy must be valid) and writes atomically.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mqseal_core::device::realm::{unix_now, MemberChange, Realm, AUTHORITY_PUB_FILE, DEFAULT_GRACE_SECS};
use mqseal_core::formats::identity::Identity;
use mqseal_core::formats::keys::{write_atomic, Overwrite};
use mqseal_core::formats::policy::Role;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    /// May publish (seal) on the group's topics.
    Pub,
    /// May subscribe to and read the group's topics.
    Sub,
    /// Both.
    Pubsub,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Pub => Role::Pub,
            RoleArg::Sub => Role::Sub,
            RoleArg::Pubsub => Role::PubSub,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum Commands {
    /// The realm: the authority key and the registry of devices and groups.
    #[command(subcommand)]
    Realm(RealmCommand),
    /// Register or remove devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Groups: topics, members, key epochs.
    #[command(subcommand)]
    Group(GroupCommand),
    /// The signed policy file the broker (and every device) loads.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The signed key bundle for one device.
    #[command(subcommand)]
    Bundle(BundleCommand),
}

#[derive(clap::Subcommand)]
pub enum RealmCommand {
    /// Create a realm: DIR/authority.key (private, 0600), DIR/authority.pub
    /// (give it to brokers and devices), DIR/realm.json, DIR/group-keys.json (0600).
    Init {
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
    },
    /// List the realm's devices and groups (public data only).
    Show {
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum DeviceCommand {
    /// Register a device from its public identity file (ID.pub from `mqseal keygen`).
    Add {
        /// Device id; must match the id inside the identity file.
        id: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        /// The device's ID.pub.
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
        /// MQTT username the device logs in with (default: its id).
        #[arg(long, value_name = "NAME")]
        username: Option<String>,
    },
    /// Remove a device: it leaves every group, and each of those groups gets a new key epoch.
    Remove {
        /// Device id.
        id: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group owning topic filters (no two groups may own the same topic).
    Create {
        /// Group id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
        group: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        /// A topic filter the group owns (repeat for several), e.g. 'plant/hall1/#'.
        #[arg(long = "topic", value_name = "FILTER", required = true)]
        topics: Vec<String>,
        /// Seconds the previous key epoch stays accepted after a rotation.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_GRACE_SECS)]
        grace: u64,
    },
    /// Add a device to a group with a role (or change its role; losing a right rotates the key).
    Add {
        /// Group id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
        group: String,
        /// Device id.
        id: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        /// What the member may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Remove a member; the group gets a fresh key under the next epoch.
    Remove {
        /// Group id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
        group: String,
        /// Device id.
        id: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
    },
    /// Give the group a fresh random key under the next epoch.
    Rotate {
        /// Group id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
        group: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Sign the current policy with the next version number and write it to FILE.
    Export {
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        /// Where to write it (replaced atomically).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign the current policy with the next version number and publish it over
    /// MQTT (retained, on $mqseal/policy), logged in as the authority; the broker
    /// applies it live if it is newer than its own. Then publish every device's
    /// signed identity (retained, on $mqseal/identity/ID).
    Push {
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        #[command(flatten)]
        broker: crate::push_cmd::BrokerArgs,
        /// Do not publish the device identities.
        #[arg(long)]
        no_identities: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum BundleCommand {
    /// Write the signed key bundle of device ID (its groups' keys, wrapped to its X25519 key).
    Export {
        /// Device id.
        id: String,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        /// Where to write it (replaced atomically).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Publish fresh key bundles over MQTT (retained, on $mqseal/bundle/ID, which
    /// only device ID may read), logged in as the authority. Push the policy first.
    Push {
        #[command(flatten)]
        targets: crate::push_cmd::BundleTargets,
        /// The realm directory.
        #[arg(long, value_name = "DIR")]
        realm: PathBuf,
        #[command(flatten)]
        broker: crate::push_cmd::BrokerArgs,
    },
}

pub fn run(command: Commands) -> anyhow::Result<()> {
    match command {
        Commands::Realm(RealmCommand::Init { realm }) => realm_init(&realm),
        Commands::Realm(RealmCommand::Show { realm }) => realm_show(&realm),
        Commands::Device(DeviceCommand::Add { id, realm, public, username }) => {
            device_add(&id, &realm, &public, username.as_deref())
        }
        Commands::Device(DeviceCommand::Remove { id, realm }) => device_remove(&id, &realm),
        Commands::Group(GroupCommand::Create { group, realm, topics, grace }) => group_create(&group, &realm, &topics, grace),
        Commands::Group(GroupCommand::Add { group, id, realm, role }) => group_add(&group, &id, &realm, role.into()),
        Commands::Group(GroupCommand::Remove { group, id, realm }) => group_remove(&group, &id, &realm),
        Commands::Group(GroupCommand::Rotate { group, realm }) => group_rotate(&group, &realm),
        Commands::Policy(PolicyCommand::Export { realm, out }) => policy_export(&realm, &out),
        Commands::Bundle(BundleCommand::Export { id, realm, out }) => bundle_export(&id, &realm, &out),
        Commands::Policy(PolicyCommand::Push { realm, broker, no_identities }) => {
            crate::push_cmd::policy_push(&realm, &broker, !no_identities)
        }
        Commands::Bundle(BundleCommand::Push { targets, realm, broker }) => crate::push_cmd::bundle_push(&realm, &broker, &targets),
    }
}

fn open(realm: &Path) -> anyhow::Result<Realm> {
    Realm::open(realm).with_context(|| format!("cannot open realm {}", realm.display()))
}

fn realm_init(dir: &Path) -> anyhow::Result<()> {
    let realm = Realm::init(dir).with_context(|| format!("cannot create a realm in {}", dir.display()))?;
    println!("created realm {}", dir.display());
    println!("  authority public key: {} ({})", dir.join(AUTHORITY_PUB_FILE).display(), realm.authority_public().fingerprint());
    println!("  give it to the broker (plugin_opt_authority) and to every device (mqseal join --authority)");
    Ok(())
}

fn realm_show(dir: &Path) -> anyhow::Result<()> {
    let realm = open(dir)?;
    println!("realm {} (authority {}, last export version {})", dir.display(), realm.authority_public().fingerprint(), realm.serial());
    println!("devices:");
    for (id, d) in realm.devices() {
        println!("  {id}  username={}  {}  {}", d.username, d.identity.sign.alg(), d.identity.fingerprint());
    }
    println!("groups:");
    for (id, g) in realm.groups() {
        let members: Vec<String> = g.members.iter().map(|(d, r)| format!("{d}:{r}")).collect();
        println!(
            "  {id}  epoch={} grace={}s  topics={}  members={}",
            g.epoch,
            g.previous_epoch_grace_secs,
            g.topics.join(","),
            if members.is_empty() { "-".to_string() } else { members.join(",") }
        );
    }
    Ok(())
}

fn device_add(id: &str, dir: &Path, public: &Path, username: Option<&str>) -> anyhow::Result<()> {
    let identity = Identity::load(public).with_context(|| format!("cannot read the device identity {}", public.display()))?;
    if identity.id != id {
        anyhow::bail!("{} is the identity of device {:?}, not {id:?}", public.display(), identity.id);
    }
    let mut realm = open(dir)?;
    let fingerprint = identity.fingerprint();
    realm.add_device(identity, username).with_context(|| format!("cannot add device {id:?}"))?;
    println!("added device {id} (username {}, {fingerprint})", realm.devices()[id].username);
    Ok(())
}

fn print_rotations(rotated: &[(String, u64)]) {
    for (group, epoch) in rotated {
        println!("  group {group} rotated to epoch {epoch}");
    }
    if !rotated.is_empty() {
        println!("  next: `mqseal policy push` (or `policy export` for the broker) and `mqseal bundle push --group GROUP` (or `bundle export`) for the remaining members");
    }
}

fn device_remove(id: &str, dir: &Path) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    let rotated = realm.remove_device(id, unix_now()).with_context(|| format!("cannot remove device {id:?}"))?;
    println!("removed device {id}");
    print_rotations(&rotated);
    Ok(())
}

fn group_create(group: &str, dir: &Path, topics: &[String], grace: u64) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    realm.create_group(group, topics, grace, unix_now()).with_context(|| format!("cannot create group {group:?}"))?;
    println!("created group {group} (epoch 1, grace {grace}s) owning {}", topics.join(", "));
    Ok(())
}

fn group_add(group: &str, id: &str, dir: &Path, role: Role) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    let change = realm
        .add_member(group, id, role, unix_now())
        .with_context(|| format!("cannot add {id:?} to group {group:?}"))?;
    match change {
        MemberChange::Added => println!("added {id} to group {group} as {role}"),
        MemberChange::Unchanged => println!("{id} already is a member of group {group} as {role}; nothing changed"),
        MemberChange::RoleChanged { from, rotated_to } => {
            println!("changed the role of {id} in group {group} from {from} to {role}");
            if let Some(epoch) = rotated_to {
                print_rotations(&[(group.to_string(), epoch)]);
            }
        }
    }
    Ok(())
}

fn group_remove(group: &str, id: &str, dir: &Path) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    let epoch = realm
        .remove_member(group, id, unix_now())
        .with_context(|| format!("cannot remove {id:?} from group {group:?}"))?;
    println!("removed {id} from group {group}");
    print_rotations(&[(group.to_string(), epoch)]);
    Ok(())
}

fn group_rotate(group: &str, dir: &Path) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    let epoch = realm.rotate_group(group, unix_now()).with_context(|| format!("cannot rotate group {group:?}"))?;
    print_rotations(&[(group.to_string(), epoch)]);
    Ok(())
}

fn write_out(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic(out, bytes, 0o644, Overwrite::Allow).with_context(|| format!("cannot write {}", out.display()))
}

fn policy_export(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    let bytes = realm.export_policy(unix_now()).context("cannot export the policy")?;
    write_out(out, &bytes)?;
    println!(
        "wrote policy version {} ({} devices, {} groups) to {}",
        realm.serial(),
        realm.devices().len(),
        realm.groups().len(),
        out.display()
    );
    Ok(())
}

fn bundle_export(id: &str, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut realm = open(dir)?;
    let bytes = realm.export_bundle(id, unix_now()).with_context(|| format!("cannot export the bundle of {id:?}"))?;
    write_out(out, &bytes)?;
    let groups: Vec<String> = realm
        .groups()
        .iter()
        .filter(|(_, g)| g.members.contains_key(id))
        .map(|(name, g)| format!("{name}@{}", g.epoch))
        .collect();
    println!(
        "wrote bundle version {} for {id} ({}) to {}",
        realm.serial(),
        if groups.is_empty() { "no groups".to_string() } else { groups.join(", ") },
        out.display()
    );
    Ok(())
}
