//! Deliveries withheld from subscribers, recorded without flooding the log.
//!
//! A withheld delivery is a refusal too, but one publish can be withheld from
//! every non-member subscribed to `#`, many times a second: one record each
//! would multiply the log by the number of such subscribers. So per client and
//! reason the first withholding is recorded at once (with its topic), and the
//! rest are counted and recorded as one `delivery.withheld` when the client
//! disconnects or the plugin stops (docs/AUDIT.md §7.1). Records are then
//! bounded by connections × reasons, not by messages.

use std::collections::HashMap;

use crate::formats::audit::AuditEvent;

/// More clients than this with pending counts (a broker whose disconnect events
/// do not arrive): everything pending is recorded and forgotten.
const MAX_CLIENTS: usize = 100_000;

/// Per client: for each reason seen, the withholdings not yet in a record.
#[derive(Default)]
pub struct WithheldDeliveries {
    pending: HashMap<Box<str>, Vec<(&'static str, u64)>>,
}

impl WithheldDeliveries {
    /// Counts one withheld delivery; returns the record to write when it is the
    /// first of its client and reason.
    pub fn note(&mut self, client: &str, reason: &'static str, topic: &str) -> Option<AuditEvent> {
        if let Some(reasons) = self.pending.get_mut(client) {
            if let Some((_, count)) = reasons.iter_mut().find(|(r, _)| *r == reason) {
                *count += 1;
                return None;
            }
            reasons.push((reason, 0));
        } else {
            self.pending.insert(client.into(), vec![(reason, 0)]);
        }
        Some(AuditEvent::DeliveryWithheld {
            client: client.to_string(),
            reason: reason.into(),
            count: 1,
            topic: Some(topic.to_string()),
        })
    }

    /// True when so many clients are pending that [`take_all`](Self::take_all) should run.
    pub fn over_capacity(&self) -> bool {
        self.pending.len() > MAX_CLIENTS
    }

    /// The client left: the records of what was withheld since its first records.
    pub fn take_client(&mut self, client: &str) -> Vec<AuditEvent> {
        self.pending.remove(client).map(|reasons| summaries(client, reasons)).unwrap_or_default()
    }

    /// Everything pending (at shutdown).
    pub fn take_all(&mut self) -> Vec<AuditEvent> {
        self.pending.drain().flat_map(|(client, reasons)| summaries(&client, reasons)).collect()
    }
}

fn summaries(client: &str, reasons: Vec<(&'static str, u64)>) -> Vec<AuditEvent> {
    reasons
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(reason, count)| AuditEvent::DeliveryWithheld { client: client.to_string(), reason: reason.into(), count, topic: None })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_of(e: &AuditEvent) -> (String, u64, Option<String>) {
        match e {
            AuditEvent::DeliveryWithheld { reason, count, topic, .. } => (reason.to_string(), *count, topic.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_per_client_and_reason_is_recorded_the_rest_counted_until_the_client_leaves() {
        let mut w = WithheldDeliveries::default();
        assert_eq!(count_of(&w.note("c", "not-a-reader", "a/1").unwrap()), ("not-a-reader".into(), 1, Some("a/1".into())));
        assert!(w.note("c", "not-a-reader", "a/2").is_none());
        assert!(w.note("c", "not-a-reader", "a/3").is_none());
        assert!(w.note("c", "epoch-too-old", "a/4").is_some());
        assert!(w.note("d", "not-a-reader", "a/5").is_some());
        let left: Vec<_> = w.take_client("c").iter().map(count_of).collect();
        assert_eq!(left, [("not-a-reader".into(), 2, None)]);
        assert!(w.take_client("c").is_empty());
        // A new connection of "c" starts over.
        assert!(w.note("c", "not-a-reader", "a/6").is_some());
        assert!(w.take_all().is_empty(), "nothing counted beyond the first records");
        assert!(!w.over_capacity());
    }
}
