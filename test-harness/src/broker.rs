//! A real `mosquitto` process on a free loopback port.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::artifacts::artifacts;
use crate::mqtt_wire;

/// The broker binary Debian's `mosquitto` package installs: the default.
pub const DEFAULT_MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The environment variable naming another broker binary to test against
/// (`scripts/brokers` builds 2.0.21 and 2.1.x under `target/brokers/`).
pub const MOSQUITTO_ENV: &str = "MQSEAL_MOSQUITTO";

/// The broker binary the tests run: `$MQSEAL_MOSQUITTO`, or Debian's. A relative
/// path is taken from the workspace root (as in README's examples), since test
/// binaries run in their package's directory and brokers in their own.
pub fn mosquitto_binary() -> PathBuf {
    match std::env::var_os(MOSQUITTO_ENV) {
        Some(path) if !path.is_empty() => crate::artifacts::workspace_root().join(path),
        _ => PathBuf::from(DEFAULT_MOSQUITTO),
    }
}

/// The version of the broker binary the tests run, from `mosquitto -h`
/// ("mosquitto version 2.1.2"): (major, minor, patch).
pub fn mosquitto_version() -> (u32, u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let binary = mosquitto_binary();
        let out = Command::new(&binary).arg("-h").output().unwrap_or_else(|e| panic!("cannot run {} ({e})", binary.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let version = text
            .split("mosquitto version ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no version in `{} -h`:\n{text}", binary.display()));
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    })
}

/// How long a broker may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What to put in the broker's config. Option values may use `{dir}` for the
/// broker's temporary directory.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Load libmqseal.so (false: plain Mosquitto, for comparisons).
    pub with_plugin: bool,
    /// `plugin_opt_*` options, names without the prefix, in order.
    pub plugin_options: Vec<(String, String)>,
    /// Raw config lines that must come before the listener (e.g. per_listener_settings).
    pub leading_lines: Vec<String>,
    /// Raw config lines added before the plugin line (password_file, acl_file, ...).
    pub extra_lines: Vec<String>,
    /// Lines added after the plugin's (e.g. a second plugin, to test chaining).
    pub trailing_lines: Vec<String>,
    pub allow_anonymous: bool,
    /// Files to create in the broker's directory before start: (relative name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// `log_type all` (tests read debug lines); false: Mosquitto's default log types
    /// (error, warning, notice, information), as a production broker runs, for benchmarks.
    pub debug_log: bool,
    /// Run the broker under valgrind's memcheck (report in `memcheck.log`):
    /// for tests of what the broker itself does with memory.
    pub memcheck: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            with_plugin: true,
            plugin_options: Vec::new(),
            leading_lines: Vec::new(),
            extra_lines: Vec::new(),
            trailing_lines: Vec::new(),
            allow_anonymous: true,
            files: Vec::new(),
            debug_log: true,
            memcheck: false,
        }
    }
}

impl BrokerConfig {
    /// A plain Mosquitto with no plugin.
    pub fn plain() -> Self {
        BrokerConfig { with_plugin: false, ..Default::default() }
    }

    /// Adds or replaces a `plugin_opt_NAME`.
    pub fn option(mut self, name: &str, value: &str) -> Self {
        self.plugin_options.retain(|(n, _)| n != name);
        self.plugin_options.push((name.to_string(), value.to_string()));
        self
    }

    /// Removes a `plugin_opt_NAME`.
    pub fn without_option(mut self, name: &str) -> Self {
        self.plugin_options.retain(|(n, _)| n != name);
        self
    }

    pub fn line(mut self, line: &str) -> Self {
        self.extra_lines.push(line.to_string());
        self
    }

    /// Logs as a production broker does (no per-message debug lines): benchmarks.
    pub fn production_logging(mut self) -> Self {
        self.debug_log = false;
        self
    }

    /// Runs the broker under valgrind's memcheck ([`Broker::memcheck_errors`]).
    pub fn under_memcheck(mut self) -> Self {
        self.memcheck = true;
        self
    }

    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }
}

/// A broker that did not come up: its exit status (if it exited) and its log.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "broker did not start (status {:?}); its log:\n{}", self.status, self.log)
    }
}

impl std::error::Error for StartFailure {}

/// A running broker. Dropping it stops the process by PID.
pub struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
    memcheck: bool,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Broker {
    /// Starts a broker and waits until it answers an MQTT CONNECT. Panics with the
    /// broker's log if it does not come up.
    pub fn start(config: BrokerConfig) -> Broker {
        Self::try_start(config).unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Starts a broker; `Err` carries the exit status and log if it refused to run.
    pub fn try_start(config: BrokerConfig) -> Result<Broker, StartFailure> {
        let dir = tempfile::Builder::new().prefix("mqseal-broker-").tempdir().expect("temp dir");
        Self::try_start_in(dir, config)
    }

    /// Like `try_start`, in a directory the caller prepared (kept by the Broker).
    pub fn try_start_in(mut dir: tempfile::TempDir, config: BrokerConfig) -> Result<Broker, StartFailure> {
        for (name, bytes) in &config.files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create dirs");
            }
            std::fs::write(&path, bytes).expect("write broker file");
            // Private keys must not be readable by others: mqseal refuses them.
            if name.ends_with(".pem") || name.ends_with(".key") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
            }
        }
        let mut last_failure = None;
        // A port found free can be taken before mosquitto binds it: try a few.
        for _attempt in 0..3 {
            let port = free_port();
            let mut broker = Broker {
                config_path: dir.path().join("mosquitto.conf"),
                log_path: dir.path().join("mosquitto.log"),
                dir,
                port,
                child: None,
                memcheck: config.memcheck,
            };
            broker.write_config(&config);
            match broker.spawn_and_wait() {
                Ok(()) => return Ok(broker),
                Err(failure) => {
                    let port_in_use = failure.log.contains("Address already in use");
                    dir = broker.into_dir();
                    if !port_in_use {
                        return Err(failure);
                    }
                    last_failure = Some(failure);
                }
            }
        }
        Err(last_failure.expect("at least one attempt"))
    }

    fn write_config(&self, config: &BrokerConfig) {
        let dir = self.dir.path().display().to_string();
        let mut conf = String::new();
        conf.push_str("# written by test-harness\n");
        for line in &config.leading_lines {
            conf.push_str(&line.replace("{dir}", &dir));
            conf.push('\n');
        }
        conf.push_str(&format!("listener {} 127.0.0.1\n", self.port));
        conf.push_str(&format!("allow_anonymous {}\n", config.allow_anonymous));
        conf.push_str("persistence false\nlog_dest stderr\nset_tcp_nodelay true\n");
        let log_types: &[&str] = if config.debug_log { &["all"] } else { &["error", "warning", "notice", "information"] };
        for log_type in log_types {
            conf.push_str(&format!("log_type {log_type}\n"));
        }
        // As root, mosquitto would switch to the `mosquitto` user, which cannot read
        // the test's private temp dir; tests run it as whoever runs the tests.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        for line in &config.extra_lines {
            conf.push_str(&line.replace("{dir}", &dir));
            conf.push('\n');
        }
        if config.with_plugin {
            conf.push_str(&format!("plugin {}\n", artifacts().plugin.display()));
            for (name, value) in &config.plugin_options {
                conf.push_str(&format!("plugin_opt_{name} {}\n", value.replace("{dir}", &dir)));
            }
        }
        for line in &config.trailing_lines {
            conf.push_str(&line.replace("{dir}", &dir));
            conf.push('\n');
        }
        std::fs::write(&self.config_path, conf).expect("write mosquitto.conf");
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let log = File::create(&self.log_path).expect("create log");
        let mosquitto = mosquitto_binary();
        let mut command = if self.memcheck {
            let mut valgrind = Command::new("valgrind");
            valgrind.arg("--tool=memcheck").arg(format!("--log-file={}", self.memcheck_log().display())).arg(&mosquitto);
            valgrind
        } else {
            Command::new(&mosquitto)
        };
        let child = command
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/setup", mosquitto.display()));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(StartFailure { status: Some(status), log: self.log() });
            }
            // Readiness: a real MQTT CONNECT answered by a CONNACK (any return code).
            if mqtt_wire::connack_code(self.port, "mqseal-harness-probe", Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill_now();
                return Err(StartFailure { status: None, log: self.log() });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        self.kill_now();
        // Move the directory out without running Drop's stop logic twice.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's private directory (config, log, and the files tests put there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn memcheck_log(&self) -> PathBuf {
        self.dir.path().join("memcheck.log")
    }

    /// For a broker started [`BrokerConfig::under_memcheck`] and stopped: the
    /// number of errors memcheck found (its `ERROR SUMMARY`) and its report.
    pub fn memcheck_errors(&self) -> (u64, String) {
        assert!(self.memcheck && self.child.is_none(), "memcheck_errors: a broker run under memcheck, after stop()");
        let report = std::fs::read_to_string(self.memcheck_log()).unwrap_or_default();
        let errors = report
            .lines()
            .find_map(|l| l.split("ERROR SUMMARY: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no ERROR SUMMARY in the memcheck report:\n{report}"));
        (errors, report)
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (polling the file), up to `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill() on the PID of our own child process.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    /// SIGHUP: Mosquitto reloads its config and the plugins' RELOAD callbacks run.
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// SIGKILL, as a crash would; returns once the process is gone.
    pub fn kill9(&mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill() on our own child's PID.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (plugin cleanup runs); returns the status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill() on our own child's PID.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the same broker again (same directory, config and port) after a stop or kill.
    pub fn restart(&mut self) -> Result<(), StartFailure> {
        self.stop();
        let previous = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        std::fs::write(self.dir.path().join("mosquitto.previous.log"), previous).expect("keep previous log");
        self.spawn_and_wait()
    }

    /// Appends a line to the config (takes effect at the next restart).
    pub fn append_config(&self, line: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.config_path).expect("open config");
        writeln!(f, "{line}").expect("append config");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ({}) ----\n{}\n---- end of log ----", self.log_path.display(), self.log());
        }
    }
}
