//! Flood defence: a client that sends too many bad envelopes within a window is
//! disconnected. Counting is per client id, in fixed windows that start at the
//! client's first bad envelope, so memory is only spent on misbehaving clients.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct FloodGuard {
    limit: u32,
    window: Duration,
    offenders: HashMap<String, Offences>,
}

struct Offences {
    window_start: Instant,
    count: u32,
}

impl FloodGuard {
    /// `limit` 0 disables the defence.
    pub fn new(limit: u32, window: Duration) -> Self {
        FloodGuard { limit, window, offenders: HashMap::new() }
    }

    /// Counts one bad envelope; true when the client has now gone over the limit
    /// (returned once per window, so the kick is asked for once).
    pub fn record_bad(&mut self, client_id: &str, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let entry = self
            .offenders
            .entry(client_id.to_string())
            .or_insert(Offences { window_start: now, count: 0 });
        if now.duration_since(entry.window_start) > self.window {
            entry.window_start = now;
            entry.count = 0;
        }
        entry.count += 1;
        entry.count == self.limit + 1
    }

    /// Forgets a client (it disconnected).
    pub fn forget(&mut self, client_id: &str) {
        self.offenders.remove(client_id);
    }

    /// Drops windows that ended, so the map holds only current offenders.
    pub fn expire(&mut self, now: Instant) {
        let window = self.window;
        self.offenders.retain(|_, o| now.duration_since(o.window_start) <= window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_once_when_the_limit_is_passed_within_the_window() {
        let mut guard = FloodGuard::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let verdicts: Vec<bool> = (0..6).map(|i| guard.record_bad("c", t0 + Duration::from_millis(i))).collect();
        assert_eq!(verdicts, [false, false, false, true, false, false]);
        assert!(!guard.record_bad("other", t0), "clients are counted separately");
    }

    #[test]
    fn a_new_window_starts_the_count_again() {
        let mut guard = FloodGuard::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(!guard.record_bad("c", t0));
        assert!(!guard.record_bad("c", t0));
        assert!(!guard.record_bad("c", t0 + Duration::from_secs(2)), "old offences expired");
        guard.expire(t0 + Duration::from_secs(10));
        assert!(guard.offenders.is_empty());
    }

    #[test]
    fn zero_disables() {
        let mut guard = FloodGuard::new(0, Duration::from_secs(1));
        assert!((0..100).all(|_| !guard.record_bad("c", Instant::now())));
    }
}
