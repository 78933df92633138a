//! `tether_agent`: the agent runtime on its own threads.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_core::agent::{self, AgentEvent, RunOutcome};
use agent_core::document::ServiceInfo;
use tokio::sync::{Notify, oneshot, watch};

use crate::config::{tether_config, tether_services};
use crate::{UserData, boundary, handle, out_arg, tether_result};

/// Worker threads of an agent's runtime (plus blocking threads for diagnostics, on demand).
const WORKER_THREADS: usize = 2;
/// How long `tether_agent_stop` waits for the agent to close its tunnel.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `tether_agent_free` waits for the library's threads to end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent is.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tether_state {
    /// Dialing the relay.
    Connecting = 1,
    /// The tunnel is up.
    Connected = 2,
    /// Waiting before the next attempt after a failure or a lost tunnel.
    BackingOff = 3,
    /// The relay ended the support session (close code 4000); the agent does not reconnect.
    ClosedByRelay = 4,
    /// Stopped by `tether_agent_stop`.
    Stopped = 5,
    /// The agent could not run (an unusable CA file, a bug); `tether_event.detail` said why.
    Failed = 6,
}

/// What an event reports.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tether_event_kind {
    /// An attempt to reach the relay starts (`attempt`).
    Connecting = 1,
    /// The tunnel is up.
    Connected = 2,
    /// An attempt failed (`detail`: why; `retry_in_ms`).
    AttemptFailed = 3,
    /// A tunnel that was up went down (`detail`: why; `retry_in_ms`).
    Disconnected = 4,
    /// The relay closed the support session.
    SessionClosed = 5,
    /// An operator reached a service (`detail`: its name).
    ServiceOpened = 6,
    /// An operator opened a terminal (`detail`: the operator, or NULL).
    TerminalOpened = 7,
    /// A relay command was applied (`detail`: `changed` or `unchanged`).
    CommandApplied = 8,
    /// The agent's run ended (`state`: why; `detail`: the error when failed).
    Stopped = 9,
}

/// One event. The session id is not known to the agent (the relay assigns it) and so is not
/// part of an event.
#[repr(C)]
pub struct tether_event {
    pub kind: tether_event_kind,
    /// The state after this event.
    pub state: tether_state,
    /// Attempt number (from 1) for CONNECTING and ATTEMPT_FAILED, else 0.
    pub attempt: u64,
    /// Delay before the next attempt for ATTEMPT_FAILED and DISCONNECTED, else 0.
    pub retry_in_ms: u64,
    /// A NUL-terminated text or NULL; lives only during the callback.
    pub detail: *const c_char,
}

/// A running agent.
pub struct tether_agent {
    status: Arc<Status>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    services: watch::Sender<BTreeMap<String, ServiceInfo>>,
    refresh: Arc<Notify>,
    runtime: Option<tokio::runtime::Runtime>,
}

type EventCallback = (
    unsafe extern "C" fn(*mut c_void, *const tether_event),
    UserData,
);

struct Status {
    state: Mutex<(tether_state, bool)>,
    ended: Condvar,
    events: Option<EventCallback>,
}

thread_local! {
    static LIBRARY_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Status {
    /// Records the new state, then (with no lock held) tells the host.
    fn report(
        &self,
        kind: tether_event_kind,
        state: Option<tether_state>,
        attempt: u64,
        retry_in: Duration,
        detail: Option<&str>,
    ) {
        let state = {
            let mut current = lock(&self.state);
            if let Some(state) = state {
                current.0 = state;
            }
            current.0
        };
        let Some((callback, userdata)) = self.events else {
            return;
        };
        let detail = detail.and_then(|d| CString::new(d.replace('\0', " ")).ok());
        let event = tether_event {
            kind,
            state,
            attempt,
            retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            detail: detail.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
        };
        // SAFETY: the host registered this callback for these arguments; the event and its
        // text live until the call returns, as documented.
        unsafe { callback(userdata.0, &event) };
    }

    fn on_agent_event(&self, event: &AgentEvent) {
        use tether_event_kind as K;
        use tether_state as S;
        let zero = Duration::ZERO;
        match event {
            AgentEvent::Connecting { attempt } => {
                self.report(K::Connecting, Some(S::Connecting), *attempt, zero, None);
            }
            AgentEvent::Connected => self.report(K::Connected, Some(S::Connected), 0, zero, None),
            AgentEvent::AttemptFailed {
                attempt,
                error,
                retry_in,
            } => self.report(
                K::AttemptFailed,
                Some(S::BackingOff),
                *attempt,
                *retry_in,
                Some(error),
            ),
            AgentEvent::Disconnected { reason, retry_in } => self.report(
                K::Disconnected,
                Some(S::BackingOff),
                0,
                *retry_in,
                Some(reason),
            ),
            AgentEvent::SessionClosed => {
                self.report(K::SessionClosed, Some(S::ClosedByRelay), 0, zero, None);
            }
            AgentEvent::ServiceOpened { service } => {
                self.report(K::ServiceOpened, None, 0, zero, Some(service));
            }
            AgentEvent::TerminalOpened { operator } => {
                self.report(K::TerminalOpened, None, 0, zero, operator.as_deref());
            }
            AgentEvent::CommandApplied { changed } => {
                let detail = if *changed { "changed" } else { "unchanged" };
                self.report(K::CommandApplied, None, 0, zero, Some(detail));
            }
            _ => {}
        }
    }

    fn finished(&self, state: tether_state, detail: Option<&str>) {
        self.report(
            tether_event_kind::Stopped,
            Some(state),
            0,
            Duration::ZERO,
            detail,
        );
        lock(&self.state).1 = true;
        self.ended.notify_all();
    }
}

/// Starts an agent from `config` on threads of its own; `*out` is the handle on success.
/// The agent connects, reconnects after failures and runs until `tether_agent_stop`.
///
/// # Safety
/// `config` is a live configuration, `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_agent_start(
    config: *const tether_config,
    out: *mut *mut tether_agent,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let config = &unsafe { handle(config) }?.config;
        out_arg(out)?;
        let status = Arc::new(Status {
            state: Mutex::new((tether_state::Connecting, false)),
            ended: Condvar::new(),
            events: config.events,
        });
        let (services, services_rx) = watch::channel(config.services.clone());
        let refresh = Arc::new(Notify::new());
        let mut agent_config = config.agent.clone();
        agent_config.service_source = Some(services_rx);
        agent_config.diagnostics_refresh = Some(refresh.clone());
        let observer = status.clone();
        agent_config.on_event = Some(Arc::new(move |e: &AgentEvent| observer.on_agent_event(e)));

        let dispatch = config.log.clone().map(crate::log::dispatch);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("tether-agent")
            .enable_all()
            .on_thread_start(move || {
                LIBRARY_THREAD.with(|t| t.set(true));
                if let Some(dispatch) = &dispatch {
                    crate::log::enter(dispatch);
                }
            })
            .on_thread_stop(crate::log::leave)
            .build()
            .map_err(|_| tether_result::Runtime)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let run_status = status.clone();
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let ran = tokio::spawn(agent::run(agent_config, shutdown)).await;
            match ran {
                Ok(Ok(RunOutcome::Shutdown)) => run_status.finished(tether_state::Stopped, None),
                Ok(Ok(RunOutcome::SessionClosed)) => {
                    run_status.finished(tether_state::ClosedByRelay, None);
                }
                Ok(Err(e)) => run_status.finished(tether_state::Failed, Some(&e.to_string())),
                Err(e) => run_status.finished(tether_state::Failed, Some(&e.to_string())),
            }
        });
        let agent = Box::new(tether_agent {
            status,
            stop: Mutex::new(Some(stop)),
            services,
            refresh,
            runtime: Some(runtime),
        });
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { out.write(Box::into_raw(agent)) };
        Ok(())
    })
}

/// The agent's current state into `*out`.
///
/// # Safety
/// `agent` is a live agent, `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_agent_state(
    agent: *const tether_agent,
    out: *mut tether_state,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let agent = unsafe { handle(agent) }?;
        out_arg(out)?;
        let state = lock(&agent.status.state).0;
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { out.write(state) };
        Ok(())
    })
}

/// Stops the agent: it closes the tunnel (the relay sees a normal close, not the end of the
/// support session). Waits up to 10 s for that, except on a library thread (in a callback),
/// where it only asks. Stopping a stopped agent does nothing.
///
/// # Safety
/// `agent` is a live agent.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_agent_stop(agent: *const tether_agent) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let agent = unsafe { handle(agent) }?;
        stop(agent)
    })
}

fn stop(agent: &tether_agent) -> Result<(), tether_result> {
    if let Some(stop) = lock(&agent.stop).take() {
        let _ = stop.send(());
    }
    if LIBRARY_THREAD.with(Cell::get) {
        return Ok(());
    }
    let ended = lock(&agent.status.state);
    let (ended, waited) = agent
        .status
        .ended
        .wait_timeout_while(ended, STOP_TIMEOUT, |s| !s.1)
        .unwrap_or_else(PoisonError::into_inner);
    drop(ended);
    if waited.timed_out() {
        return Err(tether_result::Timeout);
    }
    Ok(())
}

/// Stops the agent if needed, ends its threads and frees it; NULL does nothing. Cannot be
/// called from a callback (CALLBACK_THREAD, nothing freed).
///
/// # Safety
/// `agent` is NULL or an agent from `tether_agent_start` not yet freed; no other call on it
/// runs or follows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_agent_free(agent: *mut tether_agent) -> tether_result {
    boundary(|| {
        if agent.is_null() {
            return Ok(());
        }
        if LIBRARY_THREAD.with(Cell::get) {
            return Err(tether_result::CallbackThread);
        }
        // SAFETY: not NULL; the caller gives back ownership of an agent from Box::into_raw.
        let mut agent = unsafe { Box::from_raw(agent) };
        let stopped = stop(&agent);
        if let Some(runtime) = agent.runtime.take() {
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
        stopped
    })
}

/// Replaces the services the host publishes (a copy is taken); the relay gets a new manifest
/// at once when connected, else on connect.
///
/// # Safety
/// `agent` is a live agent, `services` a live service list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_agent_set_services(
    agent: *const tether_agent,
    services: *const tether_services,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let agent = unsafe { handle(agent) }?;
        // SAFETY: the caller's contract.
        let services = unsafe { handle(services) }?;
        agent.services.send_replace(services.services.clone());
        Ok(())
    })
}

/// Collects a health report now and sends it when it changed (the relay keeps at most one
/// per 30 s, so a refresh soon after a report goes out when that time has passed).
///
/// # Safety
/// `agent` is a live agent.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_agent_refresh_diagnostics(
    agent: *const tether_agent,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let agent = unsafe { handle(agent) }?;
        agent.refresh.notify_one();
        Ok(())
    })
}
