//! Runs a real Mosquitto with the mqseal plugin on loopback.
