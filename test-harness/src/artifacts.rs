//! Locates (and builds once, if needed) the plugin and the CLI under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the built artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// libmqseal.so
    pub plugin: PathBuf,
    /// the `mqseal` binary
    pub cli: PathBuf,
}

/// The workspace root (where the top-level Cargo.toml and mosquitto.conf live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Builds the C device library (`libmqseal_device.so`, `.a`) with the test's
/// profile, once per process, and returns the directory holding it.
pub fn device_library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile_dir = artifacts().cli.parent().expect("profile dir").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "mqseal-device-ffi"])
            .env("CARGO_TARGET_DIR", target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        assert!(build.status().expect("run cargo build").success(), "building libmqseal_device failed");
        assert!(profile_dir.join("libmqseal_device.so").exists(), "libmqseal_device.so missing after build");
        profile_dir
    })
}

/// Builds the plugin and the CLI with the same profile as the running test binary
/// (a no-op when they are up to date) and returns their paths.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        // Test binaries live in target/<profile>/deps/, binaries such as `bench` in
        // target/<profile>/; the artifacts in target/<profile>/.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .or_else(|| exe.parent())
            .unwrap_or_else(|| panic!("cannot find target dir from {}", exe.display()))
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "mqseal-plugin", "-p", "mqseal-cli"])
            .env("CARGO_TARGET_DIR", &target_dir);
        // Cargo gives the test process its package's variables (CARGO_MANIFEST_DIR, ...).
        // Passed on, they reach build scripts that watch them (ring's watches
        // CARGO_MANIFEST_DIR): this build would rerun them, and the next `cargo test`
        // would again, rebuilding ring, rustls and rumqttc each time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
            {
                build.env_remove(name.as_ref());
            }
        }
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the plugin and CLI failed");
        let found = Artifacts { plugin: profile_dir.join("libmqseal.so"), cli: profile_dir.join("mqseal") };
        assert!(found.plugin.exists(), "{} missing after build", found.plugin.display());
        assert!(found.cli.exists(), "{} missing after build", found.cli.display());
        found
    })
}
