//! Verification on worker threads for QoS 0 protected publishes
//! (`plugin_opt_verify_workers`; docs/PERFORMANCE.md "Verification on every
//! core" says what it changes for subscribers).
//!
//! Mosquitto calls plugins on its one thread, so a signature check there caps
//! protected throughput at one core. On this path the broker thread does every
//! check but the signature (the same checks, in the same order, with the same
//! reasons), hands the signature to a worker, and answers the publish's ACL
//! check with a refusal, which drops the original: QoS 0 has no answer to the
//! publisher, so the publisher sees no difference. Once verified, the broker
//! thread checks the publish again against what holds then (policy, replay
//! window, crash floor), records it, and hands the copy to the broker
//! (`mosquitto_broker_publish`), whose every delivery is checked as any other.
//!
//! This module is the bookkeeping on the broker thread: whether a publish goes
//! to a worker ([`RateGate`], the sender's jobs in flight, the limits), the
//! tickets that release results in admission order (so each publisher's order
//! holds), and the pool ([`pool`]). The engine's side is in
//! `engine/offloaded.rs`.

pub mod pool;
mod rate_gate;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

pub use pool::{VerifierPool, Verified, VerifyJob};
pub use rate_gate::RateGate;

/// At most this many publishes wait for a worker (then the broker thread waits
/// for the oldest: back-pressure instead of unbounded memory).
pub const MAX_JOBS_IN_FLIGHT: usize = 8192;

/// And at most this many payload bytes.
pub const MAX_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;

/// The longest the broker thread waits for a worker before it counts the
/// worker as stuck and logs it (it then keeps waiting: results are never dropped).
pub const STUCK_AFTER: Duration = Duration::from_secs(5);

/// Workers with nothing handed to them for this long are stopped (started
/// again by the next hand-off): a broker that has gone quiet keeps one thread.
pub const RETIRE_IDLE_AFTER: Duration = Duration::from_secs(30);

/// A verified publish the broker is to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Republish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// How long [`Offload::collect`] may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Take what is ready.
    No,
    /// Until every job up to and including this ticket is released.
    Through(u64),
    /// Up to this long for every job in flight (the broker's next loop pass
    /// may be 100 ms away on 2.0: the last few are worth waiting for).
    AllFor(Duration),
}

pub struct Offload {
    /// Started at the first hand-off: an idle broker keeps one thread.
    pool: Option<VerifierPool>,
    workers: usize,
    /// The threads could not be started: every publish is verified at once.
    unavailable: bool,
    last_handoff: Instant,
    gate: RateGate,
    next_ticket: u64,
    /// The next ticket to release; results that come back early wait in `early`.
    next_release: u64,
    early: BTreeMap<u64, Verified>,
    /// Sender id → (jobs in flight, newest ticket).
    senders: foldhash::HashMap<Box<str>, (u32, u64)>,
    bytes_in_flight: usize,
    /// Admitted and not yet handed over: sent as one batch by [`Self::hand_over`].
    batch: Vec<VerifyJob>,
}

/// A batch is handed over at once when it reaches this size (otherwise at the
/// tick that ends the broker's loop pass, or before any wait).
pub const BATCH_SIZE: usize = 64;

impl Offload {
    /// `workers` 0: off, every publish is verified on the broker thread. The
    /// threads start with the first publish handed to them.
    pub fn new(workers: usize, offload_above_per_second: u32) -> Offload {
        Offload {
            pool: None,
            workers,
            unavailable: false,
            last_handoff: Instant::now(),
            gate: RateGate::new(offload_above_per_second),
            next_ticket: 0,
            next_release: 0,
            early: BTreeMap::new(),
            senders: Default::default(),
            bytes_in_flight: 0,
            batch: Vec::new(),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether this eligible publish (QoS 0, no properties to carry) from
    /// `sender` goes to a worker: always while the sender has jobs in flight
    /// (its order must hold), otherwise when the rate of eligible publishes
    /// calls for it. `Err` (once) when the threads could not be started: the caller logs it,
    /// and from then on every publish is verified at once.
    pub fn wants(&mut self, sender: &str, now: Instant) -> Result<bool, String> {
        if self.workers == 0 || self.unavailable {
            return Ok(false);
        }
        let busy = self.gate.note(now);
        if !(busy || self.senders.contains_key(sender)) {
            return Ok(false);
        }
        if self.pool.is_none() {
            match VerifierPool::start(self.workers) {
                Ok(pool) => self.pool = Some(pool),
                Err(e) => {
                    self.unavailable = true;
                    return Err(format!("cannot start {} verification worker threads ({e}): verifying every publish on the broker thread", self.workers));
                }
            }
        }
        Ok(true)
    }

    /// The newest ticket of `sender` still in flight.
    pub fn in_flight_for(&self, sender: &str) -> Option<u64> {
        if self.in_flight() == 0 {
            return None; // the common case: no lookup
        }
        self.senders.get(sender).map(|&(_, newest)| newest)
    }

    pub fn in_flight(&self) -> usize {
        (self.next_ticket - self.next_release) as usize
    }

    /// Whether a job of `payload_len` bytes fits the limits now.
    pub fn has_room(&self, payload_len: usize) -> bool {
        self.in_flight() < MAX_JOBS_IN_FLIGHT && self.bytes_in_flight + payload_len <= MAX_BYTES_IN_FLIGHT
    }

    /// The oldest ticket in flight.
    pub fn oldest(&self) -> Option<u64> {
        (self.in_flight() > 0).then_some(self.next_release)
    }

    /// Takes `job` for the workers, with the next ticket: it goes with the next
    /// batch. Only after [`Self::wants`] said yes, which started the threads
    /// (they are stopped only with nothing in flight).
    pub fn submit(&mut self, mut job: VerifyJob) {
        job.ticket = self.next_ticket;
        self.next_ticket += 1;
        self.bytes_in_flight += job.payload.len();
        let entry = self.senders.entry(job.sender_id.clone()).or_insert((0, job.ticket));
        entry.0 += 1;
        entry.1 = job.ticket;
        self.batch.push(job);
        if self.batch.len() >= BATCH_SIZE {
            self.hand_over();
        }
    }

    /// Sends the jobs admitted since the last hand-over to the workers.
    pub fn hand_over(&mut self) {
        let Some(pool) = &self.pool else { return };
        if self.batch.is_empty() {
            return;
        }
        self.last_handoff = Instant::now();
        pool.submit(std::mem::take(&mut self.batch));
    }

    /// The results released by `wait`, in admission order. Logs nothing;
    /// `on_stuck` is called once per [`STUCK_AFTER`] a wait goes on.
    pub fn collect(&mut self, wait: Wait, mut on_stuck: impl FnMut()) -> Vec<Verified> {
        let mut released = Vec::new();
        if wait != Wait::No {
            // Nothing waited for may stay unsent.
            self.hand_over();
        }
        let Some(pool) = &self.pool else { return released };
        let started = Instant::now();
        loop {
            for verified in pool.results().try_iter() {
                self.early.insert(verified.job.ticket, verified);
            }
            while let Some(verified) = self.early.remove(&self.next_release) {
                self.next_release += 1;
                self.bytes_in_flight -= verified.job.payload.len();
                if let Some(entry) = self.senders.get_mut(&verified.job.sender_id) {
                    entry.0 -= 1;
                    if entry.0 == 0 {
                        self.senders.remove(&verified.job.sender_id);
                    }
                }
                released.push(verified);
            }
            let deadline = match wait {
                Wait::No => return released,
                Wait::Through(ticket) if self.next_release > ticket => return released,
                Wait::Through(_) => None,
                Wait::AllFor(_) if self.in_flight() == 0 => return released,
                Wait::AllFor(up_to) => Some(started + up_to),
            };
            let pause = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => return released,
                },
                None => STUCK_AFTER,
            };
            match pool.results().recv_timeout(pause) {
                Ok(verified) => {
                    self.early.insert(verified.job.ticket, verified);
                }
                Err(RecvTimeoutError::Timeout) if deadline.is_none() => on_stuck(),
                Err(RecvTimeoutError::Timeout) => {}
                // Every worker has gone (only `stop` ends them): nothing more will come.
                Err(RecvTimeoutError::Disconnected) => return released,
            }
        }
    }

    /// Stops the workers once nothing was handed to them for [`RETIRE_IDLE_AFTER`]
    /// and nothing is in flight; true if it did.
    pub fn retire_if_idle(&mut self, now: Instant) -> bool {
        if self.pool.is_none() || self.in_flight() > 0 || now.duration_since(self.last_handoff) < RETIRE_IDLE_AFTER {
            return false;
        }
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
        true
    }

    /// Stops the workers; returns how many admitted publishes were never released.
    pub fn stop(&mut self) -> usize {
        let unreleased = self.in_flight();
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
        self.early.clear();
        self.senders.clear();
        self.batch.clear();
        unreleased
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_start_at_the_first_hand_off_and_stop_when_idle() {
        let mut offload = Offload::new(2, 0);
        assert!(offload.pool.is_none(), "nothing started before work comes");
        assert_eq!(offload.wants("alice", Instant::now()), Ok(true));
        assert!(offload.pool.is_some(), "started for the first hand-off");
        let now = Instant::now();
        assert!(!offload.retire_if_idle(now), "just used");
        assert!(offload.retire_if_idle(now + RETIRE_IDLE_AFTER + Duration::from_secs(1)));
        assert!(offload.pool.is_none());
        assert_eq!(offload.wants("alice", Instant::now()), Ok(true), "and started again");
        assert!(offload.pool.is_some());
        assert_eq!(offload.stop(), 0);
    }

    #[test]
    fn off_never_starts_a_thread() {
        let mut offload = Offload::new(0, 0);
        assert_eq!(offload.wants("alice", Instant::now()), Ok(false));
        assert!(offload.pool.is_none());
    }
}
