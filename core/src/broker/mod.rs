//! The broker's side: what only the broker plugin uses. [`engine::Engine`]
//! answers every broker event; the other modules are its parts (the replay
//! window, flood limits, verification on worker threads, the decision types, the plugin options, the host
//! interface, the start-up state checked against the audit log).

pub mod config;
pub mod decision;
pub mod engine;
pub mod flood;
pub mod host;
pub mod mosquitto_conf;
pub mod offload;
pub mod replay;
pub mod state;
