//! The baseline users build without mqseal (issue 16): the paper's
//! verify-and-republish agent, `test-harness/bin/verify_agent.py` (paho-mqtt and
//! pyca/cryptography), a separate process beside a plain Mosquitto. Publishers
//! send `signature || message` to `ingress/pN`; the agent verifies each Ed25519
//! signature and republishes the message to `bench/pN`, where the subscribers read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mqseal_core::formats::keys::{SignAlg, SigningKey};

use crate::artifacts::workspace_root;
use crate::line_process::LineProcess;

/// The topic prefix publishers send to; the agent republishes to `bench/`.
pub const INGRESS: &str = "ingress";
/// An Ed25519 signature, which the agent strips before republishing.
pub const SIGNATURE_LEN: usize = 64;
/// How long the agent may take to start and subscribe (Python imports included,
/// on a machine shared with builds).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long it may take to exit once told to.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// The agent's script in this repository.
pub fn script() -> PathBuf {
    workspace_root().join("test-harness/bin/verify_agent.py")
}

/// Signed payloads (`signature || message`) per publisher, one key per publisher,
/// and the key file the agent reads (JSON: ingress topic → hex public key),
/// written into `dir`. Signed before any timed phase.
pub fn sign_all(plain: &[Vec<Vec<u8>>], dir: &Path) -> Result<(Vec<Vec<Vec<u8>>>, PathBuf)> {
    let mut keys = serde_json::Map::new();
    let mut signed = Vec::with_capacity(plain.len());
    for (p, messages) in plain.iter().enumerate() {
        let key = SigningKey::generate(SignAlg::Ed25519);
        let public: String = key.verifying_key().to_raw().iter().map(|b| format!("{b:02x}")).collect();
        keys.insert(format!("{INGRESS}/p{p}"), public.into());
        signed.push(
            messages
                .iter()
                .map(|m| {
                    let mut payload = key.sign(m).to_vec();
                    payload.extend_from_slice(m);
                    payload
                })
                .collect(),
        );
    }
    let path = dir.join("agent-keys.json");
    std::fs::write(&path, serde_json::Value::Object(keys).to_string()).with_context(|| format!("write {}", path.display()))?;
    Ok((signed, path))
}

/// A running agent, subscribed.
pub struct Agent {
    process: LineProcess,
}

impl Agent {
    /// Starts the agent with `python` against the broker on `port` and waits until it has subscribed.
    pub fn start(python: &str, port: u16, qos: u8, inflight: usize, keys: &Path) -> Result<Agent> {
        let mut command = Command::new(python);
        command.arg(script()).args(["--port", &port.to_string(), "--qos", &qos.to_string(), "--inflight", &inflight.to_string()]);
        command.arg("--keys").arg(keys).args(["--ingress", INGRESS, "--delivery", "bench"]);
        let mut process = LineProcess::spawn("verify agent", command);
        process.expect_line("'ready'", READY_WITHIN, |l| l == "ready");
        Ok(Agent { process })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops it (stdin closed) and returns how many messages it verified; an
    /// agent that rejected any of the bench's validly signed messages is an error.
    pub fn stop(mut self) -> Result<u64> {
        let status = self.process.finish(EXIT_WITHIN);
        let done = self.process.seen().iter().find(|l| l.starts_with("done ")).cloned();
        let Some(done) = done.filter(|_| status.success()) else {
            bail!("verify agent exited with {status} and no 'done' line; {}", self.process.transcript());
        };
        let field = |name: &str| -> Result<u64> {
            done.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("verify agent: no {name} in {done:?}"))
        };
        let rejected = field("rejected=")?;
        if rejected > 0 {
            bail!("verify agent rejected {rejected} validly signed messages ({done})");
        }
        field("verified=")
    }
}
