/*
 * Input to bindgen for the mqseal plugin crate (plugin/build.rs).
 *
 * Only includes: every declaration comes from the broker's own installed
 * headers (Debian: mosquitto-dev and libmosquitto-dev), never from a copy,
 * so the bindings always match the broker they are built against.
 */
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
