//! Publishes whose signature a worker thread checks (crate::broker::offload):
//! handing them over, taking them back in admission order, checking them again
//! against what holds now, and the verified copies for the broker to publish.

use std::time::{Duration, Instant};

use crate::broker::decision::{Client, Decision, PublishInfo};
use crate::broker::host::LogLevel;
use crate::broker::offload::{Republish, Verified, VerifyJob, Wait};
use crate::formats::policy::compiled::DeviceIdx;

use super::{Engine, PublishPath, Verification};

/// At a tick with this few jobs per worker in flight, the tick waits for them
/// (they take tens of microseconds) rather than leave them for the broker's
/// next loop pass, which on 2.0 may be 100 ms away when the broker is idle.
const WAIT_AT_TICK_FOR_PER_WORKER: usize = 2;

/// And waits at most this long.
const WAIT_AT_TICK_AT_MOST: Duration = Duration::from_millis(2);

impl Engine {
    /// Whether this publish's signature goes to a worker.
    pub(super) fn offload_wanted(&mut self, sender: &str, info: PublishInfo) -> bool {
        // Without ticks (2.0.11 with per_listener_settings) nothing would
        // deliver the verified copies.
        if !(info.offloadable && self.ticks_seen) {
            return false;
        }
        match self.offload.wants(sender, Instant::now()) {
            Ok(wanted) => wanted,
            Err(problem) => {
                self.host.log(LogLevel::Error, &problem);
                false
            }
        }
    }

    /// Hands the signature check to a worker; every other check has passed.
    pub(super) fn offload_signature(
        &mut self,
        client: Client<'_>,
        sender: DeviceIdx,
        sender_id: &str,
        topic: &str,
        payload: &[u8],
        info: PublishInfo,
    ) {
        while !self.offload.has_room(payload.len()) {
            // Back-pressure: the broker thread waits for the oldest.
            let Some(oldest) = self.offload.oldest() else { break };
            self.settle(Wait::Through(oldest));
        }
        self.offload.submit(VerifyJob {
            ticket: 0, // set by submit
            policy: self.policy.clone(),
            sender,
            sender_id: sender_id.into(),
            client_id: client.id.to_string(),
            username: client.username.map(str::to_string),
            topic: topic.to_string(),
            payload: payload.to_vec(),
            retain: info.retain,
            max_envelope_bytes: self.config.max_envelope_bytes,
        });
    }

    /// Settles every publish of `sender` still with a worker (and, to keep
    /// admission order, every one admitted before it).
    pub(super) fn settle_sender(&mut self, sender: &str) {
        if let Some(newest) = self.offload.in_flight_for(sender) {
            self.settle(Wait::Through(newest));
        }
    }

    /// Takes back what the workers finished (waiting as `wait` says), checks each
    /// again and queues the accepted ones for [`Self::take_republish`].
    fn settle(&mut self, wait: Wait) {
        let host = &self.host;
        let released = self.offload.collect(wait, || {
            host.log(LogLevel::Warning, "verification workers have not answered for 5 s; still waiting");
        });
        for verified in released {
            self.settle_one(verified);
        }
    }

    fn settle_one(&mut self, verified: Verified) {
        let Verified { job, signature } = verified;
        // A reload since admission may have changed the sender's key: then the
        // worker's answer does not count, and the signature is checked here.
        let signature = std::sync::Arc::ptr_eq(&job.policy, &self.policy).then_some(signature);
        drop(job.policy);
        let client = Client { id: &job.client_id, username: job.username.as_deref() };
        let decision = self.check_publish(client, &job.topic, &job.payload, PublishPath::AclWrite, Verification::Settled(signature));
        if decision == Decision::Allow {
            self.republish.push(Republish { topic: job.topic, payload: job.payload, retain: job.retain });
        }
    }

    /// The verified publishes for the plugin to hand to the broker
    /// (`mosquitto_broker_publish`), in order. Called after each publish's ACL
    /// check and at every tick; `at_tick` also hands over the jobs the pass
    /// admitted, and waits a little for the last few in flight.
    pub fn take_republish(&mut self, at_tick: bool) -> Vec<Republish> {
        if at_tick {
            // The end of the broker's loop pass: what this pass admitted goes now.
            self.offload.hand_over();
        }
        if self.offload.in_flight() > 0 {
            let few = self.offload.in_flight() <= WAIT_AT_TICK_FOR_PER_WORKER * self.offload.workers();
            self.settle(if at_tick && few { Wait::AllFor(WAIT_AT_TICK_AT_MOST) } else { Wait::No });
        }
        std::mem::take(&mut self.republish)
    }

    /// Publishes still with a worker or not yet handed to the broker.
    pub fn offloaded_pending(&self) -> usize {
        self.offload.in_flight() + self.republish.len()
    }

    /// At shutdown: stops the workers. What they still held was never accepted
    /// (no `publish.accepted` record), so nothing is lost that the log promised.
    pub(super) fn stop_offload(&mut self) {
        let unreleased = self.offload.stop() + std::mem::take(&mut self.republish).len();
        if unreleased > 0 {
            self.host.log(LogLevel::Notice, &format!("shutdown: {unreleased} QoS 0 publishes being verified were dropped"));
        }
    }
}
