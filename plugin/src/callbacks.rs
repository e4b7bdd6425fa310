//! The broker events mqseal listens to, each translated into one engine call.
//!
//! Kicks. The engine decides them; the plugin carries them out, and tells the
//! engine which disconnected someone (only those are audit records):
//! - a flooding client is disconnected by the broker itself: its own ACL check
//!   answers MOSQ_ERR_AUTH, which makes `handle__publish` end the connection
//!   (any code but SUCCESS and ACL_DENIED does, on 2.0 and 2.1);
//! - other kicks happen on the next TICK, outside any other callback, and right
//!   after a RELOAD (main-loop context, where the broker itself disconnects
//!   clients that fail its re-check next);
//! - where the broker has never ticked (2.0.11 with `per_listener_settings
//!   true` never does), also at the end of the ACL check that decided them
//!   (a policy pushed over MQTT), as upstream's dynamic-security plugin kicks
//!   clients from inside its CONTROL callback; never the client being checked.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mqseal_core::broker::config::AuthMode;
use mqseal_core::broker::decision::{Access, Client, Decision, PublishInfo};
use mqseal_core::broker::engine::{AfterClose, ConnectionId, Engine, Kick};
use mqseal_core::broker::host::LogLevel;

use crate::boundary::guard;
use crate::broker_api::{self, BrokerApi, Generation};
use crate::cstr;
use crate::log::log;
use crate::sys::mosq_err_t::{MOSQ_ERR_ACL_DENIED, MOSQ_ERR_AUTH, MOSQ_ERR_PLUGIN_DEFER, MOSQ_ERR_SUCCESS};
use crate::sys::mosquitto_plugin_event as Event;
use crate::sys;

type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

/// The events we always register, with their handlers.
const CALLBACKS: [(c_int, Callback); 5] = [
    (Event::MOSQ_EVT_ACL_CHECK as c_int, on_acl_check),
    (Event::MOSQ_EVT_MESSAGE as c_int, on_message),
    (Event::MOSQ_EVT_RELOAD as c_int, on_reload),
    (Event::MOSQ_EVT_TICK as c_int, on_tick),
    (Event::MOSQ_EVT_DISCONNECT as c_int, on_disconnect),
];

/// Registered with `plugin_opt_auth key` (mqseal authenticates) and `defer` (mqseal
/// refuses client ids the login does not own, and defers the rest to the mechanism
/// that authenticates). Not with `none`: a registered callback that defers makes
/// Mosquitto refuse every client with a username that no mechanism accepted.
const AUTH_CALLBACK: (c_int, Callback) = (Event::MOSQ_EVT_BASIC_AUTH as c_int, on_basic_auth);

/// Registered only on 2.1 (2.0 answers MOSQ_ERR_NOT_SUPPORTED): the end of a
/// persistent session's connection, which 2.1 no longer reports as DISCONNECT.
const OFFLINE_CALLBACK: (c_int, Callback) = (broker_api::EVT_CLIENT_OFFLINE, on_client_offline);

/// DISCONNECT and CLIENT_OFFLINE events seen by every instance in this broker:
/// a kick that raised it disconnected someone. Process-wide, because a kick
/// by username also reaches clients of other listeners, whose events go to
/// their own instance. Touched only on the broker's thread.
static DISCONNECTS_SEEN: AtomicU64 = AtomicU64::new(0);

/// Some instance is carrying out kicks: a callback fired by one of them (a
/// will's ACL check, into any instance) must not start more from inside the
/// broker's disconnect; it leaves them queued.
static KICKING: AtomicBool = AtomicBool::new(false);

/// Clears [`KICKING`] however carrying out ends (a caught panic included).
struct Kicking;

impl Kicking {
    fn begin() -> Option<Kicking> {
        (!KICKING.swap(true, Ordering::Relaxed)).then_some(Kicking)
    }
}

impl Drop for Kicking {
    fn drop(&mut self) {
        KICKING.store(false, Ordering::Relaxed);
    }
}

/// One loaded plugin instance (one per listener with `per_listener_settings true`).
/// Lives in the broker's userdata; only ever touched on the broker's thread.
pub struct Instance {
    identifier: *mut sys::mosquitto_plugin_id_t,
    /// RefCell, not a lock: all calls come from the one broker thread, and a
    /// re-entrant call (a broker function that fires an event while we are inside
    /// another) shows up as a caught panic, failing closed, instead of aliasing.
    engine: RefCell<Engine>,
    /// The callbacks this instance registered (for cleanup).
    registered: Vec<(c_int, Callback)>,
    broker: &'static BrokerApi,
}

impl Instance {
    pub fn new(identifier: *mut sys::mosquitto_plugin_id_t, engine: Engine, broker: &'static BrokerApi) -> Self {
        let mut registered = CALLBACKS.to_vec();
        if engine.config().auth != AuthMode::None {
            registered.push(AUTH_CALLBACK);
        }
        if broker.generation == Generation::V2_1 {
            registered.push(OFFLINE_CALLBACK);
        }
        Instance { identifier, engine: RefCell::new(engine), registered, broker }
    }

    /// Carries out `kicks` (no engine borrow may be held: a kick fires
    /// DISCONNECT, and a will's ACL check, into us) and reports each back.
    /// A kick of `current` (the client whose callback runs) waits for later.
    fn carry_out(&self, kicks: Vec<Kick>, current: Option<Client<'_>>) {
        if kicks.is_empty() {
            return;
        }
        let Some(_kicking) = Kicking::begin() else {
            let mut engine = self.engine.borrow_mut();
            kicks.into_iter().for_each(|kick| engine.requeue_kick(kick));
            return;
        };
        for kick in kicks {
            let is_current = current.is_some_and(|c| match &kick {
                Kick::ClientId(id) => id == c.id,
                Kick::Username(name) => Some(name.as_str()) == c.username,
            });
            if is_current {
                self.engine.borrow_mut().requeue_kick(kick);
                continue;
            }
            let before = DISCONNECTS_SEEN.load(Ordering::Relaxed);
            // Never pass NULL: the broker reads it as "every client" (by id) or
            // "every anonymous client" (by username).
            let found = match &kick {
                Kick::ClientId(id) => std::ffi::CString::new(id.as_str()).ok().map(|id| {
                    // SAFETY: a valid C string; called on the broker's thread, outside
                    // any iteration over the clients (see the module notes).
                    unsafe { sys::mosquitto_kick_client_by_clientid(id.as_ptr(), false) == MOSQ_ERR_SUCCESS }
                }),
                Kick::Username(name) => std::ffi::CString::new(name.as_str()).ok().map(|name| {
                    // SAFETY: as above. Always SUCCESS: whether anyone went is seen below.
                    unsafe { sys::mosquitto_kick_client_by_username(name.as_ptr(), false) };
                    true
                }),
            };
            let disconnected = found == Some(true) && DISCONNECTS_SEEN.load(Ordering::Relaxed) > before;
            self.engine.borrow_mut().kick_carried_out(&kick, disconnected);
        }
    }

    /// Hands the publishes verified on worker threads to the broker, which
    /// delivers them on its next loop pass, checking every delivery as any
    /// other (a READ ACL check per subscriber).
    fn publish_verified(&self, at_tick: bool) {
        let ready = self.engine.borrow_mut().take_republish(at_tick);
        for message in ready {
            let Ok(topic) = std::ffi::CString::new(message.topic) else { continue };
            let Ok(len) = c_int::try_from(message.payload.len()) else { continue };
            // SAFETY: the broker takes ownership of a payload from mosquitto_malloc
            // (and frees it with mosquitto_free); `len` bytes are allocated and copied.
            let payload = unsafe { sys::mosquitto_malloc(message.payload.len().max(1)) };
            if payload.is_null() {
                log(LogLevel::Error, "out of memory: a verified QoS 0 publish was dropped");
                continue;
            }
            // SAFETY: payload has room for len bytes; the regions cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(message.payload.as_ptr(), payload.cast::<u8>(), message.payload.len()) };
            // SAFETY: on the broker's thread; NULL client id = to every subscriber;
            // the broker copies the topic and owns the payload on success. It only
            // queues the message (no callback runs from inside it).
            let rc = unsafe {
                sys::mosquitto_broker_publish(std::ptr::null(), topic.as_ptr(), len, payload, 0, message.retain, std::ptr::null_mut())
            };
            if rc != MOSQ_ERR_SUCCESS {
                // SAFETY: not taken by the broker on failure.
                unsafe { sys::mosquitto_free(payload) };
                log(LogLevel::Error, &format!("the broker refused a verified QoS 0 publish (error {rc}); dropped"));
            }
        }
    }

    pub fn log_started(&self) {
        let engine = self.engine.borrow();
        let cfg = engine.config();
        log(
            LogLevel::Notice,
            &format!(
                "plugin {} loaded in {} (policy {}, audit log {}, unprotected {:?}, auth {:?})",
                env!("CARGO_PKG_VERSION"),
                self.broker.describe(),
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
            sys::mosquitto_callback_register(identifier, *event, Some(*callback), std::ptr::null(), instance.cast())
        };
        if rc != MOSQ_ERR_SUCCESS {
            for (event, callback) in &callbacks[..done] {
                // SAFETY: undoing a registration that succeeded just above.
                unsafe { sys::mosquitto_callback_unregister(identifier, *event, Some(*callback), std::ptr::null()) };
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
        unsafe { sys::mosquitto_callback_unregister(identifier, *event, Some(*callback), std::ptr::null()) };
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
        // The original is dropped: its verified copy follows (crate docs: offload).
        Decision::Deny(_) | Decision::Offloaded => MOSQ_ERR_ACL_DENIED,
        Decision::Defer => MOSQ_ERR_PLUGIN_DEFER,
    }
}

/// What the broker tells of a publish in its WRITE check. Offloadable: QoS 0
/// (nothing owed to the publisher) from an MQTT 3.1/3.1.1 client, whose
/// publish has no properties (2.0 passes none to the check to copy) and whose
/// subscriptions have no `no local`, so the broker's own copy loses nothing.
///
/// # Safety
/// `ev` is the live event of the current ACL check.
unsafe fn publish_info(ev: &sys::mosquitto_evt_acl_check) -> PublishInfo {
    // SAFETY: the client is live during its ACL check.
    let protocol = unsafe { sys::mosquitto_client_protocol_version(ev.client) };
    PublishInfo { retain: ev.retain, offloadable: ev.qos == 0 && (protocol == 3 || protocol == 4) }
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
        // SAFETY: the live event.
        let info = if access == Access::Write { unsafe { publish_info(ev) } } else { PublishInfo::default() };
        let (decision, flood_kick, kicks) = {
            let mut engine = instance.engine.borrow_mut();
            let decision = engine.acl_check_publish(client, access, topic, payload, info);
            let flood_kick = match (access, decision) {
                (Access::Write, Decision::Deny(_)) => engine.take_kick_of(client.id),
                _ => None,
            };
            // A policy pushed over MQTT may have decided kicks; where no tick will
            // come, they are carried out here (see the module notes).
            // Only in a publish's check: a delivery's runs inside the broker's loop
            // over subscribers.
            let kicks = if access == Access::Write && !engine.has_ticked() { engine.take_kicks() } else { Vec::new() };
            (decision, flood_kick, kicks)
        };
        instance.carry_out(kicks, Some(client));
        if access == Access::Write {
            instance.publish_verified(false);
        }
        if let Some(kick) = flood_kick {
            // The broker disconnects the client on this answer.
            instance.engine.borrow_mut().kick_carried_out(&kick, true);
            return MOSQ_ERR_AUTH;
        }
        acl_code(&decision)
    })
}

unsafe extern "C" fn on_basic_auth(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("login", MOSQ_ERR_AUTH, || {
        // SAFETY: for MOSQ_EVT_BASIC_AUTH the broker passes a mosquitto_evt_basic_auth.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_basic_auth>(), instance(userdata)) };
        // A session restored from the persistence file that no client has
        // connected to since: only a reload's re-check asks, and it is never refused.
        // SAFETY: the client is live during the event.
        if unsafe { sys::mosquitto_client_protocol_version(ev.client) } == 0 {
            return auth_code(instance.engine.borrow().recheck_restored_session());
        }
        // SAFETY: the client and its credentials are live during the event.
        let Ok(Some(client_id)) = (unsafe { cstr::utf8(sys::mosquitto_client_id(ev.client)) }) else { return MOSQ_ERR_AUTH };
        let Ok(username) = (unsafe { cstr::utf8(ev.username) }) else { return MOSQ_ERR_AUTH };
        let password = if ev.password.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string owned by the client context.
            Some(unsafe { std::ffi::CStr::from_ptr(ev.password) }.to_bytes())
        };
        let connection = ConnectionId(ev.client as usize);
        auth_code(instance.engine.borrow_mut().login(connection, client_id, username, password))
    })
}

fn auth_code(decision: Decision) -> c_int {
    match decision {
        Decision::Allow => MOSQ_ERR_SUCCESS,
        Decision::Deny(_) | Decision::Offloaded => MOSQ_ERR_AUTH,
        Decision::Defer => MOSQ_ERR_PLUGIN_DEFER,
    }
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
            Decision::Deny(_) | Decision::Offloaded => MOSQ_ERR_ACL_DENIED,
            Decision::Allow | Decision::Defer => MOSQ_ERR_SUCCESS,
        }
    })
}

unsafe extern "C" fn on_reload(_event: c_int, _event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    // The same answer even on failure (a failed reload keeps the previous policy
    // inside the engine): DEFER on 2.0, so that the other plugins reload too;
    // SUCCESS on 2.1, which terminates on any other answer.
    let answer = BrokerApi::detect().reload_answer();
    guard("reload", answer, || {
        // SAFETY: our registered userdata.
        let instance = unsafe { instance(userdata) };
        let kicks = {
            let mut engine = instance.engine.borrow_mut();
            engine.reload();
            // A reload on this thread (no ticks yet) has decided its kicks already.
            engine.take_kicks()
        };
        instance.carry_out(kicks, None);
        answer
    })
}

unsafe extern "C" fn on_tick(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("tick", MOSQ_ERR_SUCCESS, || {
        // SAFETY: our registered userdata.
        let instance = unsafe { instance(userdata) };
        // Take the work out first, then call the broker with no borrow held: kicking a
        // client fires DISCONNECT, which re-enters us.
        let kicks = instance.engine.borrow_mut().tick();
        instance.carry_out(kicks, None);
        // Settling verified publishes may decide kicks (a flood of forgeries).
        instance.publish_verified(true);
        let kicks = instance.engine.borrow_mut().take_kicks();
        instance.carry_out(kicks, None);
        if instance.broker.generation == Generation::V2_1 && !event_data.is_null() {
            let wait = instance.engine.borrow().next_tick_in();
            // SAFETY: for MOSQ_EVT_TICK 2.1 passes its mosquitto_evt_tick, laid out as
            // EvtTick (checked at compile time against 2.1's header), writable by us.
            ask_for_next_tick(unsafe { &mut *event_data.cast::<broker_api::EvtTick>() }, wait);
        }
        MOSQ_ERR_SUCCESS
    })
}

/// Tells 2.1 to run its loop again within `wait` and to call our tick then.
///
/// 2.1.2 (`src/plugin_tick.c`) calls a tick callback only once its next-tick
/// time, now + `next_s` s + `next_ms` ms (nanoseconds carried into seconds
/// once), has passed, and bounds the loop's sleep (built without websockets:
/// up to a day) only by the callbacks it called in that pass. Plain `next_ms`
/// is therefore forgotten whenever a pass comes earlier (any network traffic),
/// and the pass after it may sleep past our deadline. Answering
/// `next_s = -2, next_ms = 2000 + wait` makes the loop's bound
/// `next_s * 1000 + next_ms = wait`, while the next-tick time, carried once,
/// lies a second in the past: we are called on every pass, as on 2.0, and every
/// pass sleeps at most until our nearest deadline. Should a later version carry
/// fully, the next-tick time becomes now + `wait`: plain `next_ms`.
fn ask_for_next_tick(tick: &mut broker_api::EvtTick, wait: Duration) {
    // 0 would mean "no wish" (loop__update_next_event ignores it).
    let wait_ms = wait.as_millis().clamp(1, 1000) as std::ffi::c_long;
    tick.next_s = -2;
    tick.next_ms = 2000 + wait_ms;
}

/// DISCONNECT: on 2.1 the session ended; on 2.0 it may live on offline.
unsafe extern "C" fn on_disconnect(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("disconnect", MOSQ_ERR_SUCCESS, || {
        // SAFETY: for MOSQ_EVT_DISCONNECT the broker passes a mosquitto_evt_disconnect.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_disconnect>(), instance(userdata)) };
        let after = match instance.broker.generation {
            Generation::V2_1 => AfterClose::SessionEnded,
            // SAFETY: the client is still live during its disconnect event.
            Generation::V2_0 => unsafe { after_close_on_2_0(ev.client) },
        };
        // SAFETY: the client is live during the event.
        unsafe { connection_ended(instance, ev.client, after) };
        MOSQ_ERR_SUCCESS
    })
}

/// CLIENT_OFFLINE (2.1): a persistent session's connection ended.
unsafe extern "C" fn on_client_offline(_event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int {
    guard("client offline", MOSQ_ERR_SUCCESS, || {
        // SAFETY: for CLIENT_OFFLINE the broker passes a mosquitto_evt_client_offline,
        // whose layout is mosquitto_evt_disconnect's.
        let (ev, instance) = unsafe { (&*event_data.cast::<sys::mosquitto_evt_disconnect>(), instance(userdata)) };
        // SAFETY: the client is live during the event.
        unsafe { connection_ended(instance, ev.client, AfterClose::SessionMayPersist) };
        MOSQ_ERR_SUCCESS
    })
}

/// What 2.0's DISCONNECT leaves, which it does not say: an MQTT 3.1/3.1.1
/// clean session ends with its connection; any other session may persist
/// (an MQTT 5 session's expiry interval is not readable through the plugin API).
///
/// # Safety
/// `client` is the live client of the current event.
unsafe fn after_close_on_2_0(client: *mut sys::mosquitto) -> AfterClose {
    // SAFETY: per the caller.
    let (protocol, clean) = unsafe { (sys::mosquitto_client_protocol_version(client), sys::mosquitto_client_clean_session(client)) };
    if protocol < 5 && clean {
        AfterClose::SessionEnded
    } else {
        AfterClose::SessionMayPersist
    }
}

/// A connection ended, by either event.
///
/// # Safety
/// `client_ptr` is the live client of the current event.
unsafe fn connection_ended(instance: &Instance, client_ptr: *mut sys::mosquitto, after: AfterClose) {
    DISCONNECTS_SEEN.fetch_add(1, Ordering::Relaxed);
    let mut engine = instance.engine.borrow_mut();
    engine.connection_closed(ConnectionId(client_ptr as usize), after);
    // SAFETY: per the caller.
    if let Some(client) = unsafe { client(client_ptr) } {
        engine.on_disconnect(client);
    }
}
