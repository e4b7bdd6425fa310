//! Subscriptions and deliveries: which filters a client may subscribe to, and
//! which messages it may be delivered.

use std::time::Instant;

use crate::broker::decision::{Client, Decision, DenyReason};
use crate::formats::audit::AuditEvent;
use crate::formats::audit::event::Token;
use crate::formats::envelope;
use crate::formats::policy::compiled::SubscriptionVerdict;

use super::{Engine, Kick, now_ms, is_control_filter, RESERVED_PREFIX};

impl Engine {
    pub(super) fn check_delivery(&mut self, client: Client<'_>, topic: &str, payload: &[u8]) -> Decision {
        if topic.starts_with(RESERVED_PREFIX) {
            return match self.check_control_delivery(client, topic) {
                Ok(()) => Decision::Allow,
                Err(reason) => self.deny_delivery(client, topic, reason),
            };
        }
        let Some(group) = self.policy.group_of_topic(topic) else {
            return match self.unprotected_decision() {
                Decision::Deny(reason) => self.deny_delivery(client, topic, reason),
                other => other,
            };
        };
        let Some(device) = self.device_of(client) else {
            return self.deny_delivery(client, topic, DenyReason::NOT_A_DEVICE);
        };
        if !self.policy.role(group, device).is_some_and(|r| r.can_read()) {
            return self.deny_delivery(client, topic, DenyReason::NOT_A_READER);
        }
        // The signature was verified when the message came in; here only the
        // header matters: is its key epoch still accepted (retained messages age)?
        let parsed = match envelope::parse(payload, self.config.max_envelope_bytes) {
            Ok(parsed) => parsed,
            Err(e) => return self.deny_delivery(client, topic, DenyReason(e.reason())),
        };
        let epoch = self.policy.check_epoch(group, parsed.header.epoch, now_ms() / 1000);
        if !epoch.is_accepted() {
            return self.deny_delivery(client, topic, DenyReason(epoch.reason()));
        }
        Decision::Allow
    }

    /// Deliveries refused are routine (a `#` subscriber meets protected topics):
    /// not logged, and audited once per client and reason, then counted (see
    /// [`withheld`]).
    pub(super) fn deny_delivery(&mut self, client: Client<'_>, topic: &str, reason: DenyReason) -> Decision {
        self.stats.deliveries_denied += 1;
        if let Some(event) = self.withheld.note(client.id, reason.0, topic) {
            self.record(event);
        }
        Decision::Deny(reason)
    }

    pub(super) fn check_subscribe(&mut self, client: Client<'_>, filter_text: &str) -> Decision {
        let device = self.device_of(client);
        let decision = if is_control_filter(filter_text) {
            match self.check_control_subscription(client, filter_text) {
                Ok(()) => Decision::Allow,
                Err(reason) => Decision::Deny(reason),
            }
        } else {
            match self.policy.check_subscription(device, filter_text) {
                Err(_) => Decision::Deny(DenyReason::BAD_FILTER),
                Ok(SubscriptionVerdict::Readable(_)) => Decision::Allow,
                // Delivery checks keep the protected part out; the rest is unprotected.
                Ok(SubscriptionVerdict::Mixed) | Ok(SubscriptionVerdict::UnprotectedOnly) => self.unprotected_decision(),
                Ok(SubscriptionVerdict::Forbidden(_)) => Decision::Deny(DenyReason::NOT_A_READER),
            }
        };
        match decision {
            Decision::Deny(reason) => self.deny_subscribe(client, filter_text, reason),
            other => other,
        }
    }

    /// Logs (rate-limited) and records a refused subscription. It counts towards
    /// the flood limit like a refused publish: the client chose to send it, and
    /// otherwise a stream of SUBSCRIBE packets would grow the log without bound.
    pub(super) fn deny_subscribe(&mut self, client: Client<'_>, filter_text: &str, reason: DenyReason) -> Decision {
        self.stats.subscribes_denied += 1;
        self.log_denial(|| format!("denied SUBSCRIBE from client '{}' to '{filter_text}': {reason}", client.id));
        self.record(AuditEvent::SubscribeDenied {
            client: client.id.to_string(),
            filter: filter_text.to_string(),
            reason: Token::Borrowed(reason.0),
        });
        if reason.blames_client() && self.flood.record_bad(client.id, Instant::now()) {
            let why = format!("more than {} refused publishes and subscriptions within {:?}", self.config.flood_limit, self.config.flood_window);
            self.kick(Kick::ClientId(client.id.to_string()), client.id, &why, crate::formats::reasons::FLOOD);
        }
        Decision::Deny(reason)
    }
}
