//! Runs a real Mosquitto with the mqseal plugin on loopback, for tests and benchmarks.
//!
//! - [`artifacts`] builds `libmqseal.so` and the `mqseal` binary once per test process.
//! - [`Broker::start`] writes a config into a fresh temporary directory, starts
//!   `/usr/sbin/mosquitto` (or `$MQSEAL_MOSQUITTO`) on a free 127.0.0.1 port, and waits until a real MQTT
//!   CONNECT is answered (no fixed sleeps). Dropping it stops the broker by PID and,
//!   when the test is panicking, prints the broker's log.
//! - [`clients`] drives the broker with `mosquitto_pub`/`mosquitto_sub` and with
//!   our own MQTT client.

pub mod artifacts;
pub mod audit_read;
pub mod bench;
pub mod broker;
pub mod clients;
pub mod fleet;
pub mod line_process;
pub mod mqtt_wire;
pub mod tmpfs;
pub mod wait;

pub use artifacts::artifacts;
pub use broker::{Broker, BrokerConfig, StartFailure};
pub use fleet::Fleet;
