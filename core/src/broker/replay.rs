//! The broker's replay window: for every sender, the highest sequence number it
//! has accepted. A sealed message is new only if its sequence number is above
//! that mark, so a replayed envelope is refused on any topic, at any time.
//!
//! Surviving a restart: the audit log is the ledger of accepted publishes, and
//! the window is rebuilt from it at start (with a signed snapshot written at
//! clean shutdown to save reading all of it): see [`crate::broker::state`].
//!
//! What a crash can lose: the audit records of the last accepted publishes that
//! were still queued in memory or not yet fsynced. The engine covers that gap:
//! after a start that does not follow a clean shutdown, it refuses envelopes sealed
//! before the restart from each sender until that sender has a newer message
//! accepted (`sealed-before-crash`; see engine::CLEAN_SHUTDOWN_MARKER). This needs
//! device clocks that are roughly right (NTP); a device whose clock lags is
//! refused until its clock passes the restart time.

// Seeded foldhash: looked up twice per protected message; the engine inserts
// only senders it has matched to a device of the policy.
use foldhash::HashMap;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The highest sequence number already accepted from that sender.
    pub last_accepted: u64,
}

#[derive(Default)]
pub struct ReplayWindow {
    high_water: HashMap<Box<str>, u64>,
}

impl ReplayWindow {
    /// Is `seq` new for `sender`? Does not record it: call [`Self::accept`] only
    /// once every other check (the signature above all) has passed, so that a
    /// forged envelope cannot burn a sender's sequence numbers.
    pub fn check(&self, sender: &str, seq: u64) -> Result<(), Replayed> {
        match self.high_water.get(sender) {
            Some(&last) if seq <= last => Err(Replayed { last_accepted: last }),
            _ => Ok(()),
        }
    }

    /// Records `seq` as accepted from `sender`.
    pub fn accept(&mut self, sender: &str, seq: u64) {
        match self.high_water.get_mut(sender) {
            Some(last) => *last = (*last).max(seq),
            None => {
                self.high_water.insert(sender.into(), seq);
            }
        }
    }

    pub fn senders(&self) -> usize {
        self.high_water.len()
    }

    /// Every sender and its highest accepted sequence number (for the snapshot).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.high_water.iter().map(|(k, v)| (&**k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strictly_higher_sequence_numbers_are_new() {
        let mut w = ReplayWindow::default();
        assert!(w.check("a", 1).is_ok());
        w.accept("a", 5);
        assert_eq!(w.check("a", 5), Err(Replayed { last_accepted: 5 }));
        assert_eq!(w.check("a", 4), Err(Replayed { last_accepted: 5 }));
        assert!(w.check("a", 6).is_ok());
        assert!(w.check("b", 1).is_ok(), "senders are independent");
        w.accept("a", 3);
        assert_eq!(w.check("a", 5), Err(Replayed { last_accepted: 5 }), "never goes back");
    }
}
