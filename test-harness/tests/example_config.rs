//! The example mosquitto.conf at the top of the repository really works, and it
//! and README.md document every option the plugin accepts.

use mqseal_core::config::KNOWN_OPTIONS;
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
    let broker = Broker::try_start_in(dir, config).unwrap_or_else(|f| panic!("{f}"));
    assert!(broker.log().contains("mqseal: plugin 0.1.0 loaded"), "{}", broker.log());
    let mut sub = MosquittoSub::start(broker.port(), "example/topic", &[]).expect("subscribe");
    let out = mosquitto_pub(broker.port(), &["-t", "example/topic", "-m", "hello"]);
    assert!(out.status.success());
    let got = sub.next_message(std::time::Duration::from_secs(5)).expect("message through the example config");
    assert_eq!(got.payload, b"hello");
}
