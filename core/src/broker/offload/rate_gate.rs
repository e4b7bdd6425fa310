//! When worker threads pay: a hand-off costs a loop pass of latency (the copy
//! is delivered on the broker's next pass), which only pays when the broker
//! thread is busy. The gate counts eligible publishes per 100 ms window and
//! opens while the last full window, or the current one, ran at or above the
//! configured rate (`plugin_opt_verify_offload_above`, 0: always open).

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_millis(100);

pub struct RateGate {
    /// Publishes per window at which the gate opens (0: always open).
    per_window: u64,
    window_start: Option<Instant>,
    in_window: u64,
    last_window: u64,
}

impl RateGate {
    pub fn new(per_second: u32) -> RateGate {
        RateGate { per_window: (u64::from(per_second) * WINDOW.as_millis() as u64).div_ceil(1000), window_start: None, in_window: 0, last_window: 0 }
    }

    /// Counts one eligible publish at `now`; true if the gate is open.
    pub fn note(&mut self, now: Instant) -> bool {
        if self.per_window == 0 {
            return true;
        }
        match self.window_start {
            Some(start) if now.duration_since(start) < WINDOW => {}
            Some(start) => {
                // A gap of more than a window means the last full one was quiet.
                self.last_window = if now.duration_since(start) < 2 * WINDOW { self.in_window } else { 0 };
                self.window_start = Some(now);
                self.in_window = 0;
            }
            None => self.window_start = Some(now),
        }
        self.in_window += 1;
        self.last_window >= self.per_window || self.in_window >= self.per_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_always_open() {
        let mut gate = RateGate::new(0);
        assert!(gate.note(Instant::now()));
    }

    #[test]
    fn opens_at_the_rate_and_closes_when_quiet() {
        let mut gate = RateGate::new(1000); // 100 per window
        let t0 = Instant::now();
        let opened: Vec<bool> = (0..100).map(|i| gate.note(t0 + Duration::from_micros(i * 900))).collect();
        assert!(!opened[..99].iter().any(|&o| o), "below the rate the gate stays shut");
        assert!(opened[99], "the 100th publish within a window opens it");
        // The next window: the last one was busy, so it is open from the first publish.
        assert!(gate.note(t0 + Duration::from_millis(101)));
        // After a quiet stretch it is shut again.
        assert!(!gate.note(t0 + Duration::from_millis(400)));
    }
}
