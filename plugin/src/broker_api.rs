//! Which Mosquitto is running us, found out at run time, and the few 2.1
//! declarations that 2.0.11's headers (which the shipped plugin is built
//! against) do not have.
//!
//! One `libmqseal.so` must load in 2.0.11, 2.0.21 and 2.1.x. 2.1 loads plugins
//! with `RTLD_NOW | RTLD_LOCAL`, and 2.0 lacks the 2.1-only functions, so a
//! directly linked 2.1 function makes the library fail to load in 2.0: they are
//! looked up with `dlsym` instead. Both offer plugin API versions {5,4,3,2}, so
//! the version handshake cannot tell them apart; `mosquitto_plugin_set_info`,
//! exported only by 2.1 (`src/linker.syms`), can.
//!
//! 2.0.11 cannot be told from 2.0.15+ (whose TICK also runs with
//! `per_listener_settings true`): `src/linker.syms` is the same from 2.0.11 to
//! 2.0.21. mqseal does not need to: nothing it must do waits for a tick where
//! the broker never ticks (see `callbacks.rs`).
//!
//! The hand declarations below are checked against the real ones at compile
//! time whenever the bindings come from 2.1 headers (`MQSEAL_MOSQUITTO_INCLUDE`
//! pointing at a 2.1 installation; build.rs then sets `mqseal_headers_2_1`).

use std::ffi::{c_char, c_int, c_long, c_void};
use std::sync::OnceLock;

use crate::sys;

/// `mosquitto_plugin_set_info` (2.1, `mosquitto/broker.h`).
pub type PluginSetInfo =
    unsafe extern "C" fn(identifier: *mut sys::mosquitto_plugin_id_t, name: *const c_char, version: *const c_char) -> c_int;

/// `MOSQ_EVT_CLIENT_OFFLINE` (2.1): a persistent session's client went away;
/// 2.1 fires it instead of DISCONNECT, which it keeps for sessions that end.
pub const EVT_CLIENT_OFFLINE: c_int = 28;

/// `struct mosquitto_evt_tick` as 2.1 declares it: 2.0's `next_ns` (always
/// zero, ignored) became `next_ms`, at the same place.
#[repr(C)]
pub struct EvtTick {
    pub future: *mut c_void,
    pub now_ns: c_long,
    pub next_ms: c_long,
    pub now_s: libc::time_t,
    pub next_s: libc::time_t,
    pub future2: [*mut c_void; 4],
}

#[cfg(mqseal_headers_2_1)]
const _: () = {
    // Fails to compile if the real declaration differs (the function is never
    // called through this binding, nor linked: an unused constant).
    let _: PluginSetInfo = sys::mosquitto_plugin_set_info;
    assert!(sys::mosquitto_plugin_event::MOSQ_EVT_CLIENT_OFFLINE as c_int == EVT_CLIENT_OFFLINE);
    assert!(std::mem::offset_of!(sys::mosquitto_evt_tick, next_ms) == std::mem::offset_of!(EvtTick, next_ms));
    assert!(std::mem::offset_of!(sys::mosquitto_evt_tick, next_s) == std::mem::offset_of!(EvtTick, next_s));
    assert!(std::mem::size_of::<sys::mosquitto_evt_tick>() == std::mem::size_of::<EvtTick>());
};

#[cfg(not(mqseal_headers_2_1))]
const _: () = {
    // 2.0's layout, which 2.1 kept.
    assert!(std::mem::offset_of!(sys::mosquitto_evt_tick, next_ns) == std::mem::offset_of!(EvtTick, next_ms));
    assert!(std::mem::offset_of!(sys::mosquitto_evt_tick, next_s) == std::mem::offset_of!(EvtTick, next_s));
    assert!(std::mem::size_of::<sys::mosquitto_evt_tick>() == std::mem::size_of::<EvtTick>());
};

/// The broker generation, as far as mqseal's behaviour differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 2.0.x: RELOAD must answer DEFER for other plugins to reload; DISCONNECT
    /// for every session; TICK at least every 100 ms (never, on 2.0.11, with
    /// `per_listener_settings true`).
    V2_0,
    /// 2.1.x: RELOAD must answer SUCCESS (anything else terminates the broker);
    /// CLIENT_OFFLINE for persistent sessions; the tick may ask for its next one.
    V2_1,
}

/// What the running broker offers.
pub struct BrokerApi {
    pub generation: Generation,
    set_info: Option<PluginSetInfo>,
}

impl BrokerApi {
    /// Looks the running broker up once per process.
    pub fn detect() -> &'static BrokerApi {
        static API: OnceLock<BrokerApi> = OnceLock::new();
        API.get_or_init(|| {
            // SAFETY: dlsym with RTLD_DEFAULT searches the global scope (the broker
            // executable exports its plugin functions there); the name is a valid C
            // string; a null result means "not there".
            let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mosquitto_plugin_set_info".as_ptr()) };
            let set_info = (!found.is_null()).then(|| {
                // SAFETY: the symbol is 2.1's mosquitto_plugin_set_info, whose type is
                // PluginSetInfo (checked against the header when built with 2.1 headers).
                unsafe { std::mem::transmute::<*mut c_void, PluginSetInfo>(found) }
            });
            let generation = if set_info.is_some() { Generation::V2_1 } else { Generation::V2_0 };
            BrokerApi { generation, set_info }
        })
    }

    /// Gives the broker our name and version for its own log lines (2.1 only).
    ///
    /// # Safety
    /// `identifier` is the handle passed to `mosquitto_plugin_init`, on the broker's thread.
    pub unsafe fn set_plugin_info(&self, identifier: *mut sys::mosquitto_plugin_id_t) -> Option<c_int> {
        const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => panic!("the crate version contains a NUL"),
        };
        let set_info = self.set_info?;
        // SAFETY: per the caller; the broker copies both strings (strdup).
        Some(unsafe { set_info(identifier, c"mqseal".as_ptr(), VERSION.as_ptr()) })
    }

    /// What RELOAD must answer for this broker to go on.
    pub fn reload_answer(&self) -> c_int {
        match self.generation {
            Generation::V2_0 => sys::mosq_err_t::MOSQ_ERR_PLUGIN_DEFER,
            Generation::V2_1 => sys::mosq_err_t::MOSQ_ERR_SUCCESS,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self.generation {
            Generation::V2_0 => "Mosquitto 2.0",
            Generation::V2_1 => "Mosquitto 2.1 or later",
        }
    }
}
