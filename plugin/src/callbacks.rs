//! The five broker events mqseal listens to, each translated into one engine call.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};

use mqseal_core::decision::{Access, Client, Decision};
use mqseal_core::config::AuthMode;
use mqseal_core::engine::{Engine, Kick};
use mqseal_core::host::LogLevel;

use crate::boundary::guard;
use crate::cstr;
use crate::log::log;
use crate::sys;
use crate::sys::mosq_err_t::{MOSQ_ERR_ACL_DENIED, MOSQ_ERR_AUTH, MOSQ_ERR_PLUGIN_DEFER, MOSQ_ERR_SUCCESS};
use crate::sys::mosquitto_plugin_event as Event;

type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

/// The events we always register, with their handlers.
const CALLBACKS: [(Event, Callback); 5] = [
    (Event::MOSQ_EVT_ACL_CHECK, on_acl_check),
    (Event::MOSQ_EVT_MESSAGE, on_message),
    (Event::MOSQ_EVT_RELOAD, on_reload),
    (Event::MOSQ_EVT_TICK, on_tick),
    (Event::MOSQ_EVT_DISCONNECT, on_disconnect),
];

/// Registered with `plugin_opt_auth key` (mqseal authenticates) and `defer` (mqseal
/// refuses client ids the login does not own, and defers the rest to the mechanism
/// that authenticates). Not with `none`: a registered callback that defers makes
/// Mosquitto refuse every client with a username that no mechanism accepted.
const AUTH_CALLBACK: (Event, Callback) = (Event::MOSQ_EVT_BASIC_AUTH, on_basic_auth);

/// One loaded plugin instance (one per listener with `per_listener_settings true`).
/// Lives in the broker's userdata; only ever touched on the broker's thread.
pub struct Instance {
    identifier: *mut sys::mosquitto_plugin_id_t,
    /// RefCell, not a lock: all calls come from the one broker thread, and a
    /// re-entrant call (a broker function that fires an event while we are inside
    /// another) shows up as a caught panic, failing closed, instead of aliasing.
    engine: RefCell<Engine>,
    /// The callbacks this instance registered (for cleanup).
    registered: Vec<(Event, Callback)>,
}

impl Instance {
    pub fn new(identifier: *mut sys::mosquitto_plugin_id_t, engine: Engine) -> Self {
        let mut registered = CALLBACKS.to_vec();
        if engine.config().auth != AuthMode::None {
            registered.push(AUTH_CALLBACK);
        }
        Instance { identifier, engine: RefCell::new(engine), registered }
    }

    pub fn log_started(&self) {
        let engine = self.engine.borrow();
        let cfg = engine.config();
        log(
            LogLevel::Notice,
            &format!(
                "plugin {} loaded (policy {}, audit log {}, unprotected {:?}, auth {:?})",
                env!("CARGO_PKG_VERSION"),
                cfg.policy.display(),
                cfg.audit_log.display(),
                cfg.unprotected,
                cfg.auth
            ),
        );
    }

    pub fn shutdown(self) {
        self.engine.into_inner().shutdown();
        log(LogLevel::Notice, "plugin stopped");
    }
}

/// Registers every callback with `instance` as userdata; on any failure, rolls back.
///
/// # Safety
/// `instance` must be valid until `unregister_all` has run.
pub unsafe fn register_all(instance: *mut Instance) -> c_int {
    // SAFETY: instance is valid per the caller.
    let (identifier, callbacks) = unsafe { ((*instance).identifier, &(*instance).registered) };
    for (done, (event, callback)) in callbacks.iter().enumerate() {
        // SAFETY: identifier is the broker's handle for this plugin; callback has the
        // generic callback signature; instance outlives the registration.
        let rc = unsafe {
            sys::mosquitto_callback_register(identifier, *event as c_int, Some(*callback), std::ptr::null(), instance.cast())
        };
        if rc != MOSQ_ERR_SUCCESS {
            for (event, callback) in &callbacks[..done] {
                // SAFETY: undoing a registration that succeeded just above.
                unsafe { sys::mosquitto_callback_unregister(identifier, *event as c_int, Some(*callback), std::ptr::null()) };
            }
            return rc;
        }
    }
    MOSQ_ERR_SUCCESS
}

/// Unregisters every callback.
///
/// # Safety
/// `instance` must be the pointer passed to `register_all`.
pub unsafe fn unregister_all(instance: *mut Instance) {
    // SAFETY: instance is valid per the caller.
    let (identifier, callbacks) = unsafe { ((*instance).identifier, &(*instance).registered) };
    for (event, callback) in callbacks {
        // SAFETY: these are exactly the registrations made in register_all.
        unsafe { sys::mosquitto_callback_unregister(identifier, *event as c_int, Some(*callback), std::ptr::null()) };
    }
}

/// Borrows the instance behind a callback's userdata.
///
/// # Safety
/// `userdata` is the Instance pointer registered with the callback.
unsafe fn instance<'a>(userdata: *mut c_void) -> &'a Instance {
    // SAFETY: per the caller; the broker hands back exactly what we registered.
    unsafe { &*userdata.cast::<Instance>() }
}

/// Reads the client's id and username. `None` when either is not UTF-8, which
/// the callers treat as a refusal.
///
/// # Safety
/// `client` is a live client handle from the current event.
unsafe fn client<'a>(client: *mut sys::mosquitto) -> Option<Client<'a>> {
    // SAFETY: the accessors read fields of a live client; the strings live as long as it.
    let id = unsafe { cstr::utf8(sys::mosquitto_client_id(client)) }.ok()?.unwrap_or("");
    let username = unsafe { cstr::utf8(sys::mosquitto_client_username(client)) }.ok()?;
    Some(Client { id, username })
}

fn acl_code(decision: &Decision) -> c_int {
    match decision {
        Decision::Allow => MOSQ_ERR_SUCCESS,
        Decision::Deny(_) => MOSQ_ERR_ACL_DENIED,
        Decision::Defer => MOSQ_ERR_PLUGIN_DEFER,
    }
}

unsafe extern "C" fn on_acl_check(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("ACL check", MOSQ_ERR_ACL_DENIED, || {
        // SAFETY: for MOSQ_EVT_ACL_CHECK the broker passes a mosquitto_evt_acl_check that
        // lives for this call, and our registered userdata.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_acl_check>(), instance(userdata)) };
        let access = match ev.access as u32 {
            sys::MOSQ_ACL_READ => Access::Read,
            sys::MOSQ_ACL_WRITE => Access::Write,
            sys::MOSQ_ACL_SUBSCRIBE => Access::Subscribe,
            sys::MOSQ_ACL_UNSUBSCRIBE => Access::Unsubscribe,
            _ => return MOSQ_ERR_ACL_DENIED,
        };
        // SAFETY: client, topic and payload come from the live event.
        let Some(client) = (unsafe { client(ev.client) }) else { return MOSQ_ERR_ACL_DENIED };
        let Ok(Some(topic)) = (unsafe { cstr::utf8(ev.topic) }) else { return MOSQ_ERR_ACL_DENIED };
        let payload = unsafe { cstr::bytes(ev.payload, ev.payloadlen) };
        let decision = instance.engine.borrow_mut().acl_check(client, access, topic, payload);
        acl_code(&decision)
    })
}

unsafe extern "C" fn on_basic_auth(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("login", MOSQ_ERR_AUTH, || {
        // SAFETY: for MOSQ_EVT_BASIC_AUTH the broker passes a mosquitto_evt_basic_auth.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_basic_auth>(), instance(userdata)) };
        // SAFETY: the client and its credentials are live during the event.
        let Ok(Some(client_id)) = (unsafe { cstr::utf8(sys::mosquitto_client_id(ev.client)) }) else { return MOSQ_ERR_AUTH };
        let Ok(username) = (unsafe { cstr::utf8(ev.username) }) else { return MOSQ_ERR_AUTH };
        let password = if ev.password.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string owned by the client context.
            Some(unsafe { std::ffi::CStr::from_ptr(ev.password) }.to_bytes())
        };
        match instance.engine.borrow_mut().authenticate(client_id, username, password) {
            Decision::Allow => MOSQ_ERR_SUCCESS,
            Decision::Deny(_) => MOSQ_ERR_AUTH,
            Decision::Defer => MOSQ_ERR_PLUGIN_DEFER,
        }
    })
}

unsafe extern "C" fn on_message(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("message", MOSQ_ERR_ACL_DENIED, || {
        // SAFETY: for MOSQ_EVT_MESSAGE the broker passes a mosquitto_evt_message for this call.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_message>(), instance(userdata)) };
        // SAFETY: client, topic and payload come from the live event.
        let Some(client) = (unsafe { client(ev.client) }) else { return MOSQ_ERR_ACL_DENIED };
        let Ok(Some(topic)) = (unsafe { cstr::utf8(ev.topic) }) else { return MOSQ_ERR_ACL_DENIED };
        let payload = unsafe { cstr::bytes(ev.payload, ev.payloadlen) };
        // The message chain continues only on SUCCESS: a deferring answer passes too.
        match instance.engine.borrow_mut().on_message(client, topic, payload, ev.retain) {
            Decision::Deny(_) => MOSQ_ERR_ACL_DENIED,
            Decision::Allow | Decision::Defer => MOSQ_ERR_SUCCESS,
        }
    })
}

unsafe extern "C" fn on_reload(_event: c_int, _event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    // Always DEFER, even on failure, so that the other plugins reload too; a failed
    // reload keeps the previous policy inside the engine.
    guard("reload", MOSQ_ERR_PLUGIN_DEFER, || {
        // SAFETY: our registered userdata.
        let instance = unsafe { instance(userdata) };
        instance.engine.borrow_mut().reload();
        MOSQ_ERR_PLUGIN_DEFER
    })
}

unsafe extern "C" fn on_tick(_event: c_int, _event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("tick", MOSQ_ERR_SUCCESS, || {
        // SAFETY: our registered userdata.
        let instance = unsafe { instance(userdata) };
        // Take the work out first, then call the broker with no borrow held: kicking a
        // client fires DISCONNECT, which re-enters us.
        let kicks = instance.engine.borrow_mut().tick();
        for kick in kicks {
            // Never pass NULL: the broker reads it as "every client" (by id) or
            // "every anonymous client" (by username).
            match kick {
                Kick::ClientId(id) => {
                    let Ok(id) = std::ffi::CString::new(id) else { continue };
                    // SAFETY: a valid C string; called on the broker's thread during TICK.
                    unsafe { sys::mosquitto_kick_client_by_clientid(id.as_ptr(), false) };
                }
                Kick::Username(name) => {
                    let Ok(name) = std::ffi::CString::new(name) else { continue };
                    // SAFETY: as above.
                    unsafe { sys::mosquitto_kick_client_by_username(name.as_ptr(), false) };
                }
            }
        }
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_disconnect(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("disconnect", MOSQ_ERR_SUCCESS, || {
        // SAFETY: for MOSQ_EVT_DISCONNECT the broker passes a mosquitto_evt_disconnect.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_disconnect>(), instance(userdata)) };
        // SAFETY: the client is still live during its disconnect event.
        if let Some(client) = unsafe { client(ev.client) } {
            instance.engine.borrow_mut().on_disconnect(client);
        }
        MOSQ_ERR_SUCCESS
    })
}
