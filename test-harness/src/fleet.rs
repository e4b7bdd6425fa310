//! A realm of devices and groups made with the real `mqseal` CLI, and the broker
//! files (policy, authority key, broker key) it yields.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::artifacts::artifacts;
use crate::broker::BrokerConfig;

/// A realm, its devices (each in its own directory) and the broker's key.
pub struct Fleet {
    dir: tempfile::TempDir,
}

/// Runs the `mqseal` CLI; returns its output whatever the exit status.
pub fn mqseal(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(&artifacts().cli);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().expect("run mqseal");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait for mqseal")
}

/// Runs the CLI and panics with its stderr unless it succeeds.
pub fn mqseal_ok(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = mqseal(args, stdin);
    assert!(
        out.status.success(),
        "mqseal {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Fleet {
    /// The fleet most broker tests use: group `sensors` owns `sensors/#`; alice
    /// publishes there, bob reads, eve is a registered device in no group.
    pub fn sensors() -> Fleet {
        let fleet = Fleet::new();
        fleet.add_device("alice").add_device("bob").add_device("eve");
        fleet.add_group("sensors", &["sensors/#"], 3600);
        fleet.add_member("sensors", "alice", "pub").add_member("sensors", "bob", "sub");
        fleet.join("alice").join("bob").join("eve");
        fleet
    }

    /// A new realm with no devices or groups, and a broker key.
    pub fn new() -> Fleet {
        let dir = tempfile::Builder::new().prefix("mqseal-fleet-").tempdir().expect("temp dir");
        let fleet = Fleet { dir };
        mqseal_ok(&["realm", "init", "--realm", fleet.realm().to_str().unwrap()], None);
        mqseal_ok(&["keygen", "broker", "--broker", "--out", fleet.path("broker").to_str().unwrap()], None);
        fleet.export_policy();
        fleet
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn realm(&self) -> PathBuf {
        self.path("realm")
    }

    fn realm_arg(&self) -> String {
        self.realm().display().to_string()
    }

    /// The directory of device `id`.
    pub fn device_dir(&self, id: &str) -> PathBuf {
        self.path("devices").join(id)
    }

    /// Makes a device's keys (as the device would) and registers it; MQTT username = id.
    pub fn add_device(&self, id: &str) -> &Self {
        let dir = self.device_dir(id);
        mqseal_ok(&["keygen", id, "--out", dir.to_str().unwrap()], None);
        let public = dir.join(format!("{id}.pub"));
        mqseal_ok(&["device", "add", id, "--realm", &self.realm_arg(), "--public", public.to_str().unwrap()], None);
        self
    }

    pub fn remove_device(&self, id: &str) -> &Self {
        mqseal_ok(&["device", "remove", id, "--realm", &self.realm_arg()], None);
        self
    }

    /// Creates a group owning `topics`, with `grace` seconds for the previous epoch.
    pub fn add_group(&self, group: &str, topics: &[&str], grace: u64) -> &Self {
        let mut args = vec!["group".to_string(), "create".into(), group.into(), "--realm".into(), self.realm_arg()];
        for topic in topics {
            args.push("--topic".into());
            args.push(topic.to_string());
        }
        args.push("--grace".into());
        args.push(grace.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mqseal_ok(&args, None);
        self
    }

    pub fn add_member(&self, group: &str, id: &str, role: &str) -> &Self {
        mqseal_ok(&["group", "add", group, id, "--realm", &self.realm_arg(), "--role", role], None);
        self
    }

    pub fn remove_member(&self, group: &str, id: &str) -> &Self {
        mqseal_ok(&["group", "remove", group, id, "--realm", &self.realm_arg()], None);
        self
    }

    /// Exports the signed policy to `policy.json` in the fleet directory.
    pub fn export_policy(&self) -> PathBuf {
        let out = self.path("policy.json");
        mqseal_ok(&["policy", "export", "--realm", &self.realm_arg(), "--out", out.to_str().unwrap()], None);
        out
    }

    /// Exports the policy and device `id`'s bundle, and has the device join.
    pub fn join(&self, id: &str) -> &Self {
        let policy = self.export_policy();
        let bundle = self.path(&format!("{id}.bundle.json"));
        mqseal_ok(&["bundle", "export", id, "--realm", &self.realm_arg(), "--out", bundle.to_str().unwrap()], None);
        let authority = self.realm().join("authority.pub");
        mqseal_ok(
            &[
                "join",
                "--device",
                self.device_dir(id).to_str().unwrap(),
                "--authority",
                authority.to_str().unwrap(),
                "--bundle",
                bundle.to_str().unwrap(),
                "--policy",
                policy.to_str().unwrap(),
            ],
            None,
        );
        self
    }

    /// Seals `message` as device `id` for `topic`.
    pub fn seal(&self, id: &str, topic: &str, message: &[u8]) -> Vec<u8> {
        mqseal_ok(&["seal", "--device", self.device_dir(id).to_str().unwrap(), "--topic", topic], Some(message))
    }

    /// Opens an envelope as device `id`; Err carries the CLI's message.
    pub fn open(&self, id: &str, topic: &str, envelope: &[u8]) -> Result<Vec<u8>, String> {
        let out = mqseal(&["open", "--device", self.device_dir(id).to_str().unwrap(), "--topic", topic], Some(envelope));
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The realm's last export version (the version of the newest policy or bundle made).
    pub fn serial(&self) -> u64 {
        let out = mqseal_ok(&["realm", "show", "--realm", self.realm().to_str().unwrap()], None);
        let text = String::from_utf8_lossy(&out).into_owned();
        let tail = text.split("last export version ").nth(1).unwrap_or_else(|| panic!("realm show: {text}"));
        tail.trim_end_matches(|c: char| !c.is_ascii_digit()).split(')').next().unwrap().trim().parse().expect("serial")
    }

    /// A broker config carrying this fleet's current policy, authority key and broker key.
    /// Nothing authenticates usernames (`plugin_opt_auth none`, `allow_anonymous true`):
    /// a test's client claims whatever device it likes; `.option("auth", "key")` or
    /// `"defer"` with a password file make logins count.
    pub fn broker_config(&self, unprotected: &str) -> BrokerConfig {
        let policy = self.export_policy();
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        BrokerConfig::default()
            .file("policy.json", read(&policy))
            .file("authority.pub", read(&self.realm().join("authority.pub")))
            .file("broker.sign.pem", read(&self.path("broker/broker.sign.pem")))
            .option("policy", "{dir}/policy.json")
            .option("authority", "{dir}/authority.pub")
            .option("broker_key", "{dir}/broker.sign.pem")
            .option("audit_log", "{dir}/audit.jsonl")
            .option("unprotected", unprotected)
            .option("auth", "none")
    }

    /// Copies the current policy over the broker's policy file (then SIGHUP it).
    pub fn install_policy(&self, broker_dir: &Path) {
        let policy = self.export_policy();
        let target = broker_dir.join("policy.json");
        let tmp = broker_dir.join("policy.json.tmp");
        std::fs::copy(policy, &tmp).expect("copy policy");
        std::fs::rename(tmp, target).expect("install policy");
    }

    /// A fresh login token (`plugin_opt_auth key`) for device `id`, whose MQTT
    /// username is its id, connecting as `client_id`: what `mqseal token` prints.
    pub fn login_token(&self, id: &str, client_id: &str) -> String {
        let path = self.device_dir(id).join(format!("{id}.sign.pem"));
        let pem = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let key = mqseal_core::formats::keys::SigningKey::from_pkcs8_pem(&pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        mqseal_core::formats::login_token::make_token(&key, client_id, id, mqseal_core::device::store::unix_millis())
    }

    /// The broker's public key (for `mqseal audit verify --broker-key`).
    pub fn broker_public_key(&self) -> PathBuf {
        self.path("broker/broker.pub.pem")
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

// Here rather than in `broker`, so that `broker` does not depend on `fleet`.
impl BrokerConfig {
    /// mqseal with every required option, a realm with no groups (an empty
    /// signed policy), and the given `unprotected` mode.
    pub fn mqseal(unprotected: &str) -> Self {
        Fleet::new().broker_config(unprotected)
    }
}
