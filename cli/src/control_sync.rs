//! Fetching a device's retained control documents over MQTT (`mqseal join`
//! without files, and the start of `mqseal pub`/`sub`). What the documents do
//! once here is the device core's: `mqseal_core::device::control_sync`.
//!
//! Mosquitto queues the retained messages while it handles a SUBSCRIBE and
//! writes them before it reads the client's next packet, so once the SUBACK of
//! a *second* SUBSCRIBE has arrived, the retained documents of the first have
//! too (the "sentinel": the device's own identity topic).

use std::time::{Duration, Instant};

use mqseal_core::device::control_sync::{control_filters, sentinel_filter};

use crate::mqtt_link::{Ev, Link};

/// Subscribes to this device's control topics, then to the sentinel, and
/// collects every message until the sentinel's SUBACK: by then the retained
/// policy and bundle have arrived (see the module docs). False when the broker
/// refused the control subscription.
pub fn fetch_control_documents(
    link: &mut Link,
    me: &str,
    timeout: Duration,
    inbox: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<bool> {
    link.subscribe(&control_filters(me), 1)?;
    link.subscribe(&[sentinel_filter(me)], 0)?;
    let deadline = Instant::now() + timeout;
    let mut granted_control = true;
    let mut subacks = 0;
    loop {
        match link.next(Some(deadline))? {
            Some(Ev::SubAck(granted)) => {
                subacks += 1;
                if subacks == 1 {
                    granted_control = granted.iter().all(Option::is_some);
                }
                if subacks == 2 {
                    return Ok(granted_control);
                }
            }
            Some(Ev::Message { topic, payload }) => inbox.push((topic, payload)),
            Some(_) => {}
            None => anyhow::bail!("the broker did not acknowledge the key-update subscriptions within {} s", timeout.as_secs()),
        }
    }
}
