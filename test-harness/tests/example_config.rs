//! The example mosquitto.conf at the top of the repository really works, and it
//! and README.md document every option the plugin accepts.

use mqseal_core::broker::config::KNOWN_OPTIONS;
use test_harness::artifacts::workspace_root;
use test_harness::clients::{mosquitto_pub, MosquittoSub};
use test_harness::{Broker, BrokerConfig};

fn example_conf() -> String {
    std::fs::read_to_string(workspace_root().join("mosquitto.conf")).expect("read mosquitto.conf")
}

#[test]
fn every_option_is_documented_in_the_example_config_and_readme() {
    let conf = example_conf();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("read README.md");
    for (name, _) in KNOWN_OPTIONS {
        let option = format!("plugin_opt_{name}");
        assert!(conf.contains(&option), "mosquitto.conf does not mention {option}");
        assert!(readme.contains(&option), "README.md does not mention {option}");
    }
}

#[test]
fn example_config_starts_a_broker_that_passes_unprotected_traffic() {
    // Keep the example's own lines; point its listener, plugin and state at the test's.
    let mut config = BrokerConfig { with_plugin: false, ..BrokerConfig::default() };
    let mut plugin_options = Vec::new();
    for line in example_conf().lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("listener") || line.starts_with("log_dest") {
            continue;
        }
        if line.starts_with("plugin ") {
            config.with_plugin = true;
        } else if let Some(rest) = line.strip_prefix("plugin_opt_") {
            let (name, value) = rest.split_once(' ').expect("option with a value");
            plugin_options.push((name.to_string(), value.replace("run/", "{dir}/run/")));
        } else if !line.starts_with("allow_anonymous") {
            config.extra_lines.push(line.to_string());
        }
    }
    assert!(config.with_plugin, "the example must load the plugin");
    config.plugin_options = plugin_options;
    // The state the example points at, made by the same script `scripts/run` uses.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run");
    let status = std::process::Command::new(workspace_root().join("scripts/prepare-example"))
        .arg(&state)
        .arg(&test_harness::artifacts().cli)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/prepare-example failed");
    // Enrol a device in the example's realm, as an operator would, before the start.
    let cli = test_harness::artifacts().cli.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&cli).args(args).output().unwrap();
        assert!(out.status.success(), "mqseal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (realm, device) = (state.join("realm"), state.join("dev1"));
    let (realm, device) = (realm.to_str().unwrap(), device.to_str().unwrap());
    run(&["keygen", "dev1", "--out", device]);
    run(&["device", "add", "dev1", "--realm", realm, "--public", &format!("{device}/dev1.pub")]);
    let (policy, bundle) = (state.join("policy.json"), state.join("dev1.bundle"));
    run(&["policy", "export", "--realm", realm, "--out", policy.to_str().unwrap()]);
    run(&["bundle", "export", "dev1", "--realm", realm, "--out", bundle.to_str().unwrap()]);
    let authority = format!("{realm}/authority.pub");
    run(&["join", "--device", device, "--authority", &authority, "--bundle", bundle.to_str().unwrap(), "--policy", policy.to_str().unwrap()]);
    let token = |client: &str| {
        let out = std::process::Command::new(&cli).args(["token", "--device", device, "-i", client]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    let broker = Broker::try_start_in(dir, config).unwrap_or_else(|f| panic!("{f}"));
    assert!(broker.log().contains("mqseal: plugin 0.1.0 loaded"), "{}", broker.log());
    // plugin_opt_auth key: an anonymous client is refused, a device with its token gets in.
    let out = mosquitto_pub(broker.port(), &["-t", "example/topic", "-m", "hello"]);
    assert!(!out.status.success(), "an anonymous client got in");
    let mut sub = MosquittoSub::start(broker.port(), "example/topic", &["-u", "dev1", "-i", "dev1-sub", "-P", &token("dev1-sub")])
        .expect("subscribe");
    let out = mosquitto_pub(broker.port(), &["-t", "example/topic", "-m", "hello", "-u", "dev1", "-i", "dev1-pub", "-P", &token("dev1-pub")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = sub.next_message(std::time::Duration::from_secs(5)).expect("message through the example config");
    assert_eq!(got.payload, b"hello");
}
