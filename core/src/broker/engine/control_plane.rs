//! The engine's side of the control topics (`$mqseal/...`, see
//! [`crate::formats::control`]): who may publish, read and subscribe there, and what a
//! pushed policy, identity certificate or key bundle must satisfy before the
//! broker lets it in.
//!
//! Every accepted document is an audit record (its SHA-256, never a key), and
//! every refusal is a `publish.denied` record with its reason; a refused policy
//! is also a `policy.rejected` record, as for a reload.

use crate::broker::decision::{Client, DenyReason};
use crate::broker::host::LogLevel;
use crate::formats::audit::AuditEvent;
use crate::formats::audit::hashing::sha256;
use crate::formats::bundle::Bundle;
use crate::formats::control::{self, ControlTopic, IdentityCert, Reader};

use super::{write_policy_version, Engine, PUSHED_POLICY_FILE};

impl Engine {
    /// Who this client is, as far as control topics are concerned.
    fn control_reader<'a>(&'a self, client: Client<'_>) -> Reader<'a> {
        if client.username == Some(control::AUTHORITY_USERNAME) {
            return Reader::Authority;
        }
        match self.device_of(client) {
            Some(device) => Reader::Device(self.policy.device_id(device)),
            None => Reader::Other,
        }
    }

    /// A publish on a control topic (ACL write check). Ok means the document
    /// was verified and has taken effect.
    pub(super) fn check_control_publish(&mut self, client: Client<'_>, topic: &str, payload: &[u8]) -> Result<(), DenyReason> {
        if client.username != Some(control::AUTHORITY_USERNAME) {
            return Err(DenyReason::NOT_AUTHORITY);
        }
        let parsed = ControlTopic::parse(topic).ok_or(DenyReason::RESERVED_TOPIC)?;
        // A document takes effect only if its record can be written.
        if !self.audit_can_record() {
            return Err(self.refuse_unrecorded(|| format!("control document on {topic} from client '{}'", client.id)));
        }
        if payload.is_empty() {
            // Clearing a retained identity or bundle (a removed device).
            if parsed == ControlTopic::Policy {
                return Err(DenyReason::POLICY_EMPTY);
            }
            self.host.log(LogLevel::Notice, &format!("the authority cleared {topic} (client '{}')", client.id));
            self.record_decided(AuditEvent::ControlCleared { topic: topic.to_string(), client: Some(client.id.to_string()) });
            if let ControlTopic::Bundle(device) = parsed {
                self.bundle_versions.remove(device);
            }
            return Ok(());
        }
        match parsed {
            ControlTopic::Policy => self.accept_pushed_policy(client, payload),
            ControlTopic::Identity(device) => self.accept_identity(client, device, topic, payload),
            ControlTopic::Bundle(device) => self.accept_bundle(client, device, topic, payload),
        }
    }

    /// `$mqseal/policy`: verified, strictly newer, persisted, then applied as a reload is.
    fn accept_pushed_policy(&mut self, client: Client<'_>, payload: &[u8]) -> Result<(), DenyReason> {
        let sha = sha256(payload);
        let origin = format!("policy pushed by client '{}'", client.id);
        // The document's own reason token (doc-bad-signature, doc-wrong-authority,
        // policy-syntax, ...) is what a PUBLISH denial and the audit record carry.
        let compiled = crate::formats::policy::compile_signed(payload, &self.authority, &origin)
            .map_err(|e| (DenyReason(e.reason()), e.to_string()));
        let refuse = |engine: &mut Engine, reason: DenyReason, problem: String| {
            engine.host.log(
                LogLevel::Error,
                &format!("pushed policy rejected, keeping version {}: {problem} ({reason})", engine.policy.version()),
            );
            engine.record(AuditEvent::PolicyRejected {
                source: "push".into(),
                reason: format!("{reason}: {problem}"),
                policy_sha256: Some(sha),
            });
            Err(reason)
        };
        let policy = match compiled {
            Ok(policy) => policy,
            Err((reason, problem)) => return refuse(self, reason, problem),
        };
        if policy.version() <= self.policy.version() {
            let problem =
                format!("version {} is not newer than the current version {}", policy.version(), self.policy.version());
            return refuse(self, DenyReason::POLICY_NOT_NEWER, problem);
        }
        // Persist before applying: a policy that took effect must survive a
        // restart, and the version floor must never run ahead of a file we have.
        let path = self.config.state_dir.join(PUSHED_POLICY_FILE);
        if let Err(e) = crate::formats::keys::write_atomic(&path, payload, 0o644, crate::formats::keys::Overwrite::Allow) {
            return refuse(self, DenyReason::POLICY_NOT_PERSISTED, format!("cannot write {}: {e}", path.display()));
        }
        if let Err(problem) = write_policy_version(&self.config.state_dir, policy.version()) {
            return refuse(self, DenyReason::POLICY_NOT_PERSISTED, problem);
        }
        self.record_decided(AuditEvent::PolicyPushed {
            policy_sha256: sha,
            serial: Some(policy.version()),
            client: Some(client.id.to_string()),
        });
        // Bundles are judged against the policy in force; a new one starts afresh
        // for devices it dropped.
        let bundle_versions = std::mem::take(&mut self.bundle_versions);
        self.bundle_versions = bundle_versions.into_iter().filter(|(d, _)| policy.device_by_id(d).is_some()).collect();
        self.install_policy(policy, sha, "push", None);
        Ok(())
    }

    /// `$mqseal/identity/ID`: a certificate for a device of the current policy,
    /// with exactly the keys and username the policy gives it.
    fn accept_identity(&mut self, client: Client<'_>, device_id: &str, topic: &str, payload: &[u8]) -> Result<(), DenyReason> {
        let cert = IdentityCert::from_signed(payload, &self.authority, topic).map_err(|e| {
            self.log_denial(|| format!("refused identity on {topic}: {e}"));
            DenyReason(e.reason())
        })?;
        if cert.identity.id != device_id {
            return Err(DenyReason::CONTROL_WRONG_TOPIC);
        }
        let device = self.policy.device_by_id(device_id).ok_or(DenyReason::CONTROL_UNKNOWN_DEVICE)?;
        if self.policy.verifying_key(device) != &cert.identity.sign || self.policy.username(device) != cert.username {
            return Err(DenyReason::IDENTITY_MISMATCH);
        }
        self.host.log(LogLevel::Info, &format!("identity of device {device_id} published ({})", cert.identity.fingerprint()));
        self.record_decided(AuditEvent::IdentityAccepted {
            device: device_id.to_string(),
            identity_sha256: sha256(payload),
            client: Some(client.id.to_string()),
        });
        Ok(())
    }

    /// `$mqseal/bundle/ID`: a bundle for a device of the current policy that
    /// holds the current key epoch of each of its groups, no key of a group it
    /// is not in, and is not older than the last one accepted.
    fn accept_bundle(&mut self, client: Client<'_>, device_id: &str, topic: &str, payload: &[u8]) -> Result<(), DenyReason> {
        let bundle = Bundle::from_signed(payload, &self.authority, topic).map_err(|e| {
            self.log_denial(|| format!("refused bundle on {topic}: {e}"));
            DenyReason(e.reason())
        })?;
        if bundle.device != device_id {
            return Err(DenyReason::CONTROL_WRONG_TOPIC);
        }
        let device = self.policy.device_by_id(device_id).ok_or(DenyReason::CONTROL_UNKNOWN_DEVICE)?;
        let mut epochs = Vec::new();
        for (group_id, keys) in &bundle.groups {
            let member = self.policy.group_by_id(group_id).filter(|&g| self.policy.role(g, device).is_some());
            let Some(group) = member else {
                let version = self.policy.version();
                self.log_denial(|| {
                    format!(
                        "refused bundle on {topic}: it holds keys of group {group_id}, which the policy in force (version {version}) \
                         does not list device {device_id} in; push the policy first"
                    )
                });
                return Err(DenyReason::BUNDLE_GROUP_NOT_MEMBER);
            };
            let current = self.policy.group(group).epoch;
            if !keys.iter().any(|k| k.epoch == current) || keys.iter().any(|k| k.epoch > current) {
                return Err(DenyReason::BUNDLE_BEHIND_POLICY);
            }
            epochs.push((group_id.clone(), current));
        }
        let missing = self.policy.groups().find(|&g| {
            self.policy.role(g, device).is_some() && !bundle.groups.contains_key(self.policy.group(g).id)
        });
        if missing.is_some() {
            return Err(DenyReason::BUNDLE_BEHIND_POLICY);
        }
        if self.bundle_versions.get(device_id).is_some_and(|&last| bundle.version < last) {
            return Err(DenyReason::BUNDLE_NOT_NEWER);
        }
        self.bundle_versions.insert(device_id.into(), bundle.version);
        let sha = sha256(payload);
        let listed: Vec<String> = epochs.iter().map(|(g, e)| format!("{g} epoch {e}")).collect();
        self.host.log(
            LogLevel::Info,
            &format!(
                "key bundle version {} for device {device_id} published ({})",
                bundle.version,
                if listed.is_empty() { "no group".to_string() } else { listed.join(", ") }
            ),
        );
        if epochs.is_empty() {
            self.record_decided(AuditEvent::BundlePublished {
                device: device_id.to_string(),
                version: bundle.version,
                group: None,
                epoch: None,
                bundle_sha256: sha,
                client: Some(client.id.to_string()),
            });
        }
        for (group, epoch) in epochs {
            self.record_decided(AuditEvent::BundlePublished {
                device: device_id.to_string(),
                version: bundle.version,
                group: Some(group),
                epoch: Some(epoch),
                bundle_sha256: sha,
                client: Some(client.id.to_string()),
            });
        }
        Ok(())
    }

    /// A delivery on a control topic (ACL read check).
    pub(super) fn check_control_delivery(&self, client: Client<'_>, topic: &str) -> Result<(), DenyReason> {
        let parsed = ControlTopic::parse(topic).ok_or(DenyReason::RESERVED_TOPIC)?;
        if control::may_read(self.control_reader(client), parsed) {
            Ok(())
        } else {
            Err(DenyReason::CONTROL_NOT_READABLE)
        }
    }

    /// A subscription to a control topic filter.
    pub(super) fn check_control_subscription(&self, client: Client<'_>, filter_text: &str) -> Result<(), DenyReason> {
        // `$share/NAME/$mqseal/...` would spread one device's bundle over a group of clients.
        if !filter_text.starts_with(control::PREFIX) {
            return Err(DenyReason::RESERVED_TOPIC);
        }
        if control::may_subscribe(self.control_reader(client), filter_text) {
            Ok(())
        } else {
            Err(DenyReason::CONTROL_NOT_READABLE)
        }
    }
}
