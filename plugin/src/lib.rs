//! libmqseal.so: the Mosquitto plugin (API v5).
//!
//! This crate only translates: C pointers and return codes in, calls on
//! `mqseal_core::broker::engine::Engine` out. Every `unsafe` block carries a SAFETY note,
//! and every callback runs behind `boundary::guard`, so that no panic reaches C
//! and every failure refuses access.

mod boundary;
mod broker_api;
mod broker_conf;
mod callbacks;
mod cstr;
mod log;
mod sys;

use std::ffi::{c_int, c_void};

use mqseal_core::broker::config::PluginConfig;
use mqseal_core::broker::engine::Engine;
use mqseal_core::broker::host::LogLevel;

use crate::callbacks::Instance;
use crate::log::log;

use sys::mosq_err_t::{MOSQ_ERR_INVAL, MOSQ_ERR_SUCCESS, MOSQ_ERR_UNKNOWN};

/// The only plugin API version mqseal speaks.
const PLUGIN_API_VERSION: c_int = 5;

/// Mosquitto offers the versions it supports; we take 5 or refuse (-1).
///
/// # Safety
/// `supported_versions` must point to `supported_version_count` ints (the broker guarantees it).
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_version(
    supported_version_count: c_int,
    supported_versions: *const c_int,
) -> c_int {
    if supported_versions.is_null() || supported_version_count <= 0 {
        return -1;
    }
    // SAFETY: the broker passes an array of exactly `supported_version_count` ints.
    let offered = unsafe { std::slice::from_raw_parts(supported_versions, supported_version_count as usize) };
    if offered.contains(&PLUGIN_API_VERSION) {
        PLUGIN_API_VERSION
    } else {
        -1
    }
}

/// Mosquitto 2.0 with the CVE-2023-28366 fix (2.0.16+, Debian's 2.0.11) disconnects the publisher of every refused
/// publish with `max_queued_messages 0`, and the worker path refuses every
/// original it takes (mqseal_core::broker::mosquitto_conf): then it stays off.
fn keep_publishers_connected(config: &mut PluginConfig) {
    match broker_conf::max_queued_messages() {
        Ok(0) => {
            config.verify_workers = 0;
            log(
                LogLevel::Warning,
                "plugin_opt_verify_workers: off, because max_queued_messages is 0: Mosquitto 2.0 (with its CVE-2023-28366 fix) then \
                 disconnect the publisher of every refused publish, and verification on worker threads refuses each \
                 original it takes (docs/WORKERS.md); give max_queued_messages a number to use it",
            );
        }
        Ok(_) => {}
        Err(problem) => log(LogLevel::Info, &format!("cannot check max_queued_messages ({problem}); assuming it is not 0")),
    }
}

/// Parses the options, starts the engine, registers the callbacks. Any problem
/// is logged with the option it concerns and makes the broker refuse to start.
///
/// # Safety
/// Called by Mosquitto with valid pointers: `options` holds `option_count` entries.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut sys::mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    options: *mut sys::mosquitto_opt,
    option_count: c_int,
) -> c_int {
    boundary::guard("plugin init", MOSQ_ERR_UNKNOWN, || {
        if identifier.is_null() || userdata.is_null() {
            log(LogLevel::Error, "plugin init called without identifier; refusing to start");
            return MOSQ_ERR_INVAL;
        }
        // SAFETY: the broker passes `option_count` valid mosquitto_opt entries that live
        // for the duration of this call; we copy them out.
        let pairs = match unsafe { cstr::options(options, option_count) } {
            Ok(pairs) => pairs,
            Err(problem) => {
                log(LogLevel::Error, &format!("refusing to start: {problem}"));
                return MOSQ_ERR_INVAL;
            }
        };
        let mut config = match PluginConfig::from_options(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(config) => config,
            Err(problem) => {
                log(LogLevel::Error, &format!("refusing to start: {problem}"));
                return MOSQ_ERR_INVAL;
            }
        };
        let broker = broker_api::BrokerApi::detect();
        if config.verify_workers > 0 && broker.generation == broker_api::Generation::V2_0 {
            keep_publishers_connected(&mut config);
        }
        let engine = match Engine::start(config, Box::new(log::BrokerLog)) {
            Ok(engine) => engine,
            Err(problem) => {
                log(LogLevel::Error, &format!("refusing to start: {problem}"));
                return MOSQ_ERR_INVAL;
            }
        };
        // SAFETY: identifier is the broker's handle for this plugin, during init.
        if let Some(rc) = unsafe { broker.set_plugin_info(identifier) } {
            if rc != MOSQ_ERR_SUCCESS {
                log(LogLevel::Warning, &format!("the broker refused the plugin's name and version (error {rc})"));
            }
        }
        let instance = Box::new(Instance::new(identifier, engine, broker));
        let instance_ptr = Box::into_raw(instance);
        // SAFETY: instance_ptr is a fresh, valid Box pointer; the callbacks receive it as
        // userdata and it stays alive until mosquitto_plugin_cleanup reclaims it.
        let rc = unsafe { callbacks::register_all(instance_ptr) };
        if rc != MOSQ_ERR_SUCCESS {
            // SAFETY: registration failed and was rolled back, so nothing else holds the pointer.
            drop(unsafe { Box::from_raw(instance_ptr) });
            log(LogLevel::Error, &format!("refusing to start: could not register callbacks (error {rc})"));
            return rc;
        }
        // SAFETY: userdata is a valid out-pointer provided by the broker.
        unsafe { *userdata = instance_ptr.cast() };
        // SAFETY: instance_ptr is valid (owned by userdata now) and we are on the broker's thread.
        unsafe { (*instance_ptr).log_started() };
        MOSQ_ERR_SUCCESS
    })
}

/// Unregisters the callbacks, flushes state (audit log, replay window) and frees the instance.
///
/// # Safety
/// `userdata` must be what `mosquitto_plugin_init` stored (or null if init failed).
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _options: *mut sys::mosquitto_opt,
    _option_count: c_int,
) -> c_int {
    boundary::guard("plugin cleanup", MOSQ_ERR_UNKNOWN, || {
        if userdata.is_null() {
            return MOSQ_ERR_SUCCESS;
        }
        let instance_ptr = userdata.cast::<Instance>();
        // SAFETY: userdata is the pointer init stored; unregister before freeing so that no
        // callback can run with a dangling pointer.
        unsafe { callbacks::unregister_all(instance_ptr) };
        // SAFETY: callbacks are gone, so we hold the only reference; reclaim the Box.
        let instance = unsafe { Box::from_raw(instance_ptr) };
        instance.shutdown();
        MOSQ_ERR_SUCCESS
    })
}
