//! The periodic tick and kicks: housekeeping, when the next tick is due, and
//! the disconnections the engine decided for the plugin to carry out.

use std::time::{Duration, Instant};

use crate::broker::host::LogLevel;
use crate::formats::audit::AuditEvent;

use super::{Engine, Kick, KickNote, HOUSEKEEPING_EVERY, RELOAD_POLL_EVERY};

impl Engine {
    /// Periodic work on the broker thread; returns clients to disconnect.
    pub fn tick(&mut self) -> Vec<Kick> {
        self.ticks_seen = true;
        // The broker's re-check of logins after a reload has run by now.
        self.logins.close_recheck_window();
        self.poll_reload();
        if let Some(audit) = &self.audit {
            // Wakes a parked audit writer when its checkpoint falls due.
            audit.tick();
        }
        let now = Instant::now();
        if now.duration_since(self.last_housekeeping) >= HOUSEKEEPING_EVERY {
            self.last_housekeeping = now;
            self.flood.expire(now);
            if self.offload.retire_if_idle(now) {
                self.host.log(LogLevel::Info, "verification workers idle: stopped until the next busy spell");
            }
            if self.withheld.over_capacity() {
                for event in self.withheld.take_all() {
                    self.record(event);
                }
            }
            if let Some(audit) = &self.audit {
                for problem in audit.take_problems() {
                    self.host.log(LogLevel::Error, &format!("audit log: {problem}"));
                }
            }
        }
        self.take_kicks()
    }

    /// How soon the engine needs its next tick: the nearest of its deadlines
    /// (pending kicks at once, a background reload's result, a parked audit
    /// writer's checkpoint, housekeeping, publishes with a verification worker). Mosquitto 2.1 built without
    /// websockets sleeps until its next event unless told (`next_ms`).
    pub fn next_tick_in(&self) -> Duration {
        let now = Instant::now();
        if !self.pending_kicks.is_empty() || self.offloaded_pending() > 0 {
            return Duration::ZERO;
        }
        let mut next = (self.last_housekeeping + HOUSEKEEPING_EVERY).saturating_duration_since(now);
        if self.pending_reload.is_some() {
            next = next.min(RELOAD_POLL_EVERY);
        }
        if let Some(wake) = self.audit.as_ref().and_then(|audit| audit.wake_deadline()) {
            next = next.min(wake.saturating_duration_since(now));
        }
        next
    }

    pub(super) fn kick(&mut self, kick: Kick, client_label: &str, why: &str, reason: &'static str) {
        self.host.log(LogLevel::Warning, &format!("disconnecting client '{client_label}': {why}"));
        if self.kick_notes.insert(kick.clone(), KickNote { label: client_label.to_string(), reason }).is_none() {
            self.pending_kicks.push(kick);
        }
    }

    /// Takes the kicks decided so far, for the plugin to carry out now.
    pub fn take_kicks(&mut self) -> Vec<Kick> {
        std::mem::take(&mut self.pending_kicks)
    }

    /// Puts back a kick the plugin could not carry out yet (it targets the
    /// client whose callback was running).
    pub fn requeue_kick(&mut self, kick: Kick) {
        self.pending_kicks.push(kick);
    }

    /// Takes a pending kick of the client `client_id` itself (a flood), which
    /// the plugin carries out by answering the client's own ACL check with a
    /// code that makes the broker disconnect it.
    pub fn take_kick_of(&mut self, client_id: &str) -> Option<Kick> {
        let at = self.pending_kicks.iter().position(|k| matches!(k, Kick::ClientId(id) if id == client_id))?;
        Some(self.pending_kicks.remove(at))
    }

    /// The plugin carried out `kick`: `disconnected` says whether it
    /// disconnected anyone. Only then is it recorded (`client.kicked`).
    pub fn kick_carried_out(&mut self, kick: &Kick, disconnected: bool) {
        let Some(note) = self.kick_notes.remove(kick) else { return };
        if disconnected {
            self.stats.clients_kicked += 1;
            // Every kick that happened is recorded: held if the log cannot take it right now.
            self.record_decided(AuditEvent::ClientKicked { client: note.label, reason: note.reason.into() });
        } else {
            self.host.log(LogLevel::Info, &format!("client '{}' was no longer connected: nobody to disconnect", note.label));
        }
    }

    /// Whether the broker has called [`Engine::tick`] yet (2.0.11 never does
    /// with `per_listener_settings true`).
    pub fn has_ticked(&self) -> bool {
        self.ticks_seen
    }
}
