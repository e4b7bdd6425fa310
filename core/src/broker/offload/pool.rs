//! The verifier pool: worker threads that check envelope signatures off the
//! broker thread. They see only what a signature check needs (the envelope,
//! its topic and the sender's key, through the policy the job was admitted
//! under) and decide nothing else: every other check, the audit record and
//! the delivery stay on the broker thread ([`super::Offload`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::broker::decision::DenyReason;
use crate::formats::envelope;
use crate::formats::policy::compiled::{CompiledPolicy, DeviceIdx};

/// One publish waiting for its signature check.
pub struct VerifyJob {
    /// Admission order, set by `Offload::submit`: results are released in this order.
    pub ticket: u64,
    /// The policy the publish was admitted under; `sender` indexes it.
    pub policy: Arc<CompiledPolicy>,
    pub sender: DeviceIdx,
    /// The envelope's sender id (the per-sender bookkeeping's key).
    pub sender_id: Box<str>,
    pub client_id: String,
    pub username: Option<String>,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub max_envelope_bytes: usize,
}

/// A job back from a worker with the signature check's answer: `Err` holds
/// the reason the synchronous path would have given.
pub struct Verified {
    pub job: VerifyJob,
    pub signature: Result<(), DenyReason>,
}

pub struct VerifierPool {
    jobs: Option<Sender<Vec<VerifyJob>>>,
    results: Receiver<Verified>,
    threads: Vec<JoinHandle<()>>,
}

impl VerifierPool {
    /// Starts `workers` threads (at least one).
    pub fn start(workers: usize) -> std::io::Result<VerifierPool> {
        let (jobs, inbox) = crossbeam_channel::unbounded::<Vec<VerifyJob>>();
        let (outbox, results) = crossbeam_channel::unbounded::<Verified>();
        let mut threads = Vec::with_capacity(workers);
        for n in 0..workers.max(1) {
            let inbox = inbox.clone();
            let outbox = outbox.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mqseal-verify-{n}"))
                .spawn(move || work(inbox, outbox))?;
            threads.push(thread);
        }
        Ok(VerifierPool { jobs: Some(jobs), results, threads })
    }

    /// Hands over a batch (one wake-up for the lot); any worker takes it whole.
    pub fn submit(&self, batch: Vec<VerifyJob>) {
        if let Some(jobs) = &self.jobs {
            // Fails only once every worker has gone, which only `stop` does.
            let _ = jobs.send(batch);
        }
    }

    pub fn results(&self) -> &Receiver<Verified> {
        &self.results
    }

    /// Stops the workers and waits for them; returns the jobs left unverified.
    pub fn stop(mut self) -> usize {
        // Closing the queue ends each worker once it is empty.
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.results.try_iter().count()
    }
}

fn work(inbox: Receiver<Vec<VerifyJob>>, outbox: Sender<Verified>) {
    // One wake-up per batch (a loop pass's publishes). Spinning for the next
    // batch instead was measured to cost more than it saved: 200 µs of looking
    // a message at 4,000 msg/s, on cores the broker needs.
    for batch in inbox.iter() {
        for job in batch {
            // A panic in a check must not lose the job (its ticket would block the
            // release of every later one): it comes back refused.
            let signature = catch_unwind(AssertUnwindSafe(|| check_signature(&job))).unwrap_or(Err(DenyReason::INTERNAL_ERROR));
            if outbox.send(Verified { job, signature }).is_err() {
                return;
            }
        }
    }
}

/// The same check, with the same reasons, as the synchronous path's.
fn check_signature(job: &VerifyJob) -> Result<(), DenyReason> {
    let parsed = envelope::parse(&job.payload, job.max_envelope_bytes).map_err(|e| DenyReason(e.reason()))?;
    parsed
        .verify_signature(&job.topic, job.policy.verifying_key(job.sender))
        .map_err(|e| DenyReason(e.reason()))
}
