//! Kept-alive HTTP/1.1 connections to a tunnel's services (REFERENCE B-11, its first fix: one
//! transport per tunnel, with idle timeouts).
//!
//! A proxied exchange whose response body was delivered completely leaves its connection (a
//! yamux stream `CONNECT`ed to the service, and the agent's TCP connection behind it) here for
//! the next request to the same service and target. Reusing it saves, per request, a stream
//! opened and closed both ways, the `CONNECT` line, and the agent's dial to the service: what
//! a port forwarder does once per client connection instead of once per request.
//!
//! Bounds: at most `--proxy-keepalive` (8) idle connections per tunnel, each closed after [`IDLE_TIMEOUT`]
//! unused (shorter than common servers' own keep-alive timeouts, so the server rarely closes a
//! connection just as it is reused). A pooled connection keeps its slot of the tunnel's stream
//! cap, as a real open stream, and gives it back the moment it closes; [`Pool::clear`] closes
//! them all when the cap is reached.
//! Entries are keyed by service name *and* target, so a service re-pointed by a new manifest
//! never reaches its old target through an old connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::tunnel::StreamPermit;

/// How long an unused connection stays open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// An exchange is running on the connection (or it is being handed out).
    Busy,
    /// In the pool since then.
    Idle(Instant),
    /// Closed (idle timeout, ended, or not kept): never to be handed out again.
    Closed,
}

struct Inner {
    state: State,
    /// The stream's slot of the tunnel's stream cap, given back the moment the connection is
    /// closed or not kept, so the cap counts real streams.
    permit: Option<StreamPermit>,
}

/// What a connection's entry in the pool, its exchange and its connection task share: whether
/// it is idle, since when, and its stream slot.
pub struct Slot(Mutex<Inner>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot").field(&lock(&self.0).state).finish()
    }
}

impl Slot {
    /// A new connection's slot (busy: its first exchange is about to run).
    pub fn new(permit: Option<StreamPermit>) -> Arc<Slot> {
        Arc::new(Slot(Mutex::new(Inner {
            state: State::Busy,
            permit,
        })))
    }

    fn set_idle(&self, now: Instant) -> bool {
        let mut s = lock(&self.0);
        if s.state == State::Closed {
            return false;
        }
        s.state = State::Idle(now);
        true
    }

    /// Idle → busy; false when the connection was closed first.
    fn claim(&self) -> bool {
        let mut s = lock(&self.0);
        match s.state {
            State::Idle(_) => {
                s.state = State::Busy;
                true
            }
            State::Busy | State::Closed => false,
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.0).state == State::Closed
    }

    /// The connection is done with (ended, or not kept): its stream slot is free.
    pub fn close(&self) {
        let permit = {
            let mut s = lock(&self.0);
            s.state = State::Closed;
            s.permit.take()
        };
        drop(permit);
    }

    /// The stream slot, for an upgrade that takes the connection's stream over.
    pub fn take_permit(&self) -> Option<StreamPermit> {
        lock(&self.0).permit.take()
    }

    /// For the connection task: `None` when the connection has been idle for
    /// [`IDLE_TIMEOUT`] (it is then closed, and the task must end), otherwise when to look
    /// again.
    pub fn expired(&self, now: Instant) -> Option<Instant> {
        let state = lock(&self.0).state;
        match state {
            State::Idle(since) if now.saturating_duration_since(since) >= IDLE_TIMEOUT => {
                self.close();
                None
            }
            State::Idle(since) => Some(since + IDLE_TIMEOUT),
            State::Busy => Some(now + IDLE_TIMEOUT),
            State::Closed => None,
        }
    }
}

struct Idle {
    service: String,
    target: String,
    sender: SendRequest<Body>,
    slot: Arc<Slot>,
}

impl Idle {
    /// Whether the connection can still be used; when not, its slot is freed.
    fn usable(&self) -> bool {
        if self.sender.is_closed() {
            self.slot.close();
        }
        !self.slot.is_closed()
    }
}

/// A tunnel's idle connections.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &lock(&self.idle).len())
            .finish()
    }
}

impl Pool {
    /// A pool of at most `max_idle` connections (0: none is kept).
    pub fn new(max_idle: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// The most recently used idle connection to `service` at `target`, if any (it must still
    /// be waited `ready` for: it may have closed a moment ago).
    pub fn take(&self, service: &str, target: &str) -> Option<(SendRequest<Body>, Arc<Slot>)> {
        let mut idle = lock(&self.idle);
        idle.retain(Idle::usable);
        let i = idle
            .iter()
            .rposition(|e| e.service == service && e.target == target && e.slot.claim())?;
        let e = idle.swap_remove(i);
        Some((e.sender, e.slot))
    }

    /// Keep a connection whose exchange has ended cleanly; dropped (and so closed) when the
    /// pool is full or the connection cannot take another request.
    pub fn put(&self, service: &str, target: &str, sender: SendRequest<Body>, slot: Arc<Slot>) {
        if sender.is_closed() || self.max_idle == 0 {
            slot.close();
            return;
        }
        let mut idle = lock(&self.idle);
        idle.retain(Idle::usable);
        if idle.len() >= self.max_idle || !slot.set_idle(Instant::now()) {
            drop(idle);
            slot.close();
            return;
        }
        idle.push(Idle {
            service: service.to_owned(),
            target: target.to_owned(),
            sender,
            slot,
        });
    }

    /// Close every idle connection, giving its stream slot back at once; the number closed.
    pub fn clear(&self) -> usize {
        let drained: Vec<Idle> = lock(&self.idle).drain(..).collect();
        for e in &drained {
            e.slot.close();
        }
        drained.len()
    }

    /// Idle connections held now (closed ones are let go of first).
    pub fn len(&self) -> usize {
        let mut idle = lock(&self.idle);
        idle.retain(Idle::usable);
        idle.len()
    }

    /// Whether no idle connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_expires_only_after_the_idle_timeout() {
        let slot = Slot::new(None);
        let t0 = Instant::now();
        // Busy: look again later, never expire.
        assert!(slot.expired(t0).is_some());
        assert!(slot.set_idle(t0));
        assert_eq!(slot.expired(t0), Some(t0 + IDLE_TIMEOUT));
        assert_eq!(slot.expired(t0 + IDLE_TIMEOUT), None);
        // Closed for good: it can be neither idled nor claimed again.
        assert!(!slot.set_idle(t0));
        assert!(!slot.claim());
    }

    #[test]
    fn a_claimed_slot_is_busy_and_does_not_expire() {
        let slot = Slot::new(None);
        let t0 = Instant::now();
        assert!(slot.set_idle(t0));
        assert!(slot.claim());
        assert!(!slot.claim(), "claimed twice");
        assert!(slot.expired(t0 + IDLE_TIMEOUT * 3).is_some());
    }
}
