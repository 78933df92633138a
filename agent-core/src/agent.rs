//! The agent runtime: keeps one tunnel to the relay up, serves the streams the relay opens
//! (`CONNECT`, `COMMAND`) and publishes the service manifest.
//!
//! Drive it with [`run`]: it dials the relay (re-resolving DNS every time, through an HTTP
//! CONNECT proxy when the environment says so), reconnects with jittered backoff after any
//! failure, the very first one included, and returns only when the relay ends the session on
//! purpose (close code 4000, [`RunOutcome::SessionClosed`]), when `shutdown` resolves
//! ([`RunOutcome::Shutdown`]) or when the configuration is unusable ([`AgentError`]).
//!
//! Modules: [`config`] (settings and their textual forms), `dial` (reaching the relay),
//! `proxy` (HTTP CONNECT proxies), `tls` (certificate policies), `connection` (one tunnel and
//! its tasks), `streams` (relay-opened streams), `target` (service dialing and copying),
//! `manifest` (publishing the catalogue), [`users`] (ephemeral support users).

use std::format;
use std::string::{String, ToString};

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::services::ServiceCatalogue;
use crate::transport::{self, Keepalive, Mode};

pub mod config;
mod connection;
pub mod diagnostics;
mod dial;
pub mod discovery;
mod manifest;
mod proxy;
mod streams;
mod target;
pub mod terminal;
mod tls;
pub mod users;

pub use config::{
    AgentConfig, ConfigError, EventHandler, ParseError, ProxySettings, Secret, parse_go_bool,
    parse_go_duration, parse_relay_pin,
};
pub use dial::DialError;
pub use proxy::ProxyError;

/// Close code the agent sends when it stops on request.
const CLOSE_NORMAL: u16 = 1000;
/// How long a stopping agent waits for its close frame to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The relay ended the support session on purpose (close code 4000); do not restart.
    SessionClosed,
    /// The `shutdown` future resolved.
    Shutdown,
}

/// Why [`run`] could not even start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What happened to the tunnel, for [`AgentConfig::on_event`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Attempt number `attempt` (from 1) to reach the relay starts.
    Connecting { attempt: u64 },
    /// The tunnel is up.
    Connected,
    /// An attempt failed; the next one starts after `retry_in`.
    AttemptFailed {
        attempt: u64,
        error: String,
        retry_in: Duration,
    },
    /// A tunnel that was up went down; the next attempt starts after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// The relay closed the session with code 4000; [`run`] returns.
    SessionClosed,
    /// An operator's `CONNECT` to `service` reached its target.
    ServiceOpened { service: String },
    /// An operator opened a terminal (`operator` when the relay named them).
    TerminalOpened { operator: Option<String> },
    /// A relay command was applied; `changed` when the published services changed.
    CommandApplied { changed: bool },
}

/// Runs the agent until the relay closes the session or `shutdown` resolves.
///
/// With [`AgentConfig::support_users`], the support users left by a crash are deleted before
/// the first dial and this session's users before `run` returns with a [`RunOutcome`].
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunOutcome, AgentError> {
    let Some(users) = config.support_users.clone() else {
        return tunnel(config, shutdown).await;
    };
    config.validate()?;
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        cleaned = users.cleanup_orphans() => match cleaned {
            Ok(done) if !done.deleted.is_empty() => {
                tracing::info!(count = done.deleted.len(), "support users of an earlier run deleted");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{}", users::describe(&e)),
        },
        () = &mut shutdown => return Ok(stopped()),
    }
    let outcome = tunnel(config, shutdown).await?;
    users.end_session().await;
    Ok(outcome)
}

/// [`run`] without the support users' start and end.
async fn tunnel(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunOutcome, AgentError> {
    config.validate()?;
    let relay_tls = tls::relay_client_config(&config)?;
    let target_tls = tls::target_client_config()?;
    let dialer = dial::Dialer::new(&config, relay_tls)?;
    let shared = connection::Shared {
        catalogue: Arc::new(Mutex::new(ServiceCatalogue::new(published_static(&config)))),
        target_tls,
        connect_timeout: config.connect_timeout,
        manifest_interval: config.manifest_interval,
        terminal: Arc::new(config.terminal.clone()),
        diagnostics: Arc::new(diagnostics::for_agent(&config)),
        diagnostics_cache: Arc::default(),
        diagnostics_hooks: Arc::new(diagnostics::Hooks {
            providers: config.diagnostics_providers.clone(),
            refresh: config.diagnostics_refresh.clone(),
        }),
        service_source: config
            .service_source
            .clone()
            .map(|rx| manifest::Source::new(rx, &config)),
        on_event: config.on_event.clone(),
        users: config.support_users.clone(),
    };
    let emit = |event: AgentEvent| {
        if let Some(handler) = &config.on_event {
            handler(&event);
        }
    };
    let mut backoff = Backoff::new(
        config.reconnect_delay,
        config.max_reconnect_delay,
        rand::random(),
    );
    tracing::info!(
        url = %config::redact_userinfo(dialer.url()),
        key = %config.key,
        "starting the tunnel"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        emit(AgentEvent::Connecting { attempt });
        let dialed = tokio::select! {
            dialed = dialer.dial() => dialed,
            () = &mut shutdown => return Ok(stopped()),
        };
        let ws = match dialed {
            Ok(ws) => ws,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    attempt,
                    "cannot connect to the relay: {e}; retrying in {}",
                    show(delay)
                );
                emit(AgentEvent::AttemptFailed {
                    attempt,
                    error: e.to_string(),
                    retry_in: delay,
                });
                if wait(delay, &mut shutdown).await {
                    return Ok(stopped());
                }
                continue;
            }
        };
        tracing::info!(attempt, "connected to the relay");
        emit(AgentEvent::Connected);
        if let Some(users) = &config.support_users {
            users.start(&config.key);
        }
        let started = Instant::now();
        let (mux, incoming) = transport::spawn_mux(ws, Mode::Client, Some(Keepalive::default()));
        let end = tokio::select! {
            end = connection::serve(&mux, incoming, &shared) => end,
            () = &mut shutdown => {
                mux.close(Some((CLOSE_NORMAL, "agent stopping")));
                let _ = tokio::time::timeout(CLOSE_GRACE, mux.closed()).await;
                return Ok(stopped());
            }
        };
        if end.is_session_closed() {
            tracing::info!(
                "the relay closed the support session (code 4000 session_closed); not reconnecting"
            );
            emit(AgentEvent::SessionClosed);
            return Ok(RunOutcome::SessionClosed);
        }
        let lasted = started.elapsed();
        backoff.connection_ended(lasted);
        let delay = backoff.next_delay();
        let reason = describe_end(&end);
        tracing::warn!(
            "connection to the relay lost after {}: {reason}; reconnecting in {}",
            show(lasted),
            show(delay)
        );
        emit(AgentEvent::Disconnected {
            reason,
            retry_in: delay,
        });
        if wait(delay, &mut shutdown).await {
            return Ok(stopped());
        }
    }
}

fn stopped() -> RunOutcome {
    tracing::info!("stopping");
    RunOutcome::Shutdown
}

/// Sleeps `delay`; true when `shutdown` resolved first.
async fn wait(delay: Duration, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown => true,
    }
}

/// One agent-opened control stream (`DIAGNOSTICS 1`, `USERS 1`): its header, the document
/// as one JSON line, then FIN.
pub(crate) async fn send_document(
    mux: &transport::MuxHandle,
    kind: crate::wire::AgentStream,
    document: &impl serde::Serialize,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let mut body = kind.header().to_vec();
    body.extend_from_slice(&crate::document::to_json_line(document));
    let mut stream = mux.open().await.map_err(|e| e.to_string())?;
    stream.write_all(&body).await.map_err(|e| e.to_string())?;
    stream.shutdown().await.map_err(|e| e.to_string())
}

/// Static services less the excluded ones.
pub(crate) fn published_static(
    config: &AgentConfig,
) -> std::collections::BTreeMap<String, crate::document::ServiceInfo> {
    config
        .static_services
        .iter()
        .filter(|(name, _)| {
            let excluded = config.exclude.is_excluded(name);
            if excluded {
                tracing::info!(service = %name, "service excluded");
            }
            !excluded
        })
        .map(|(name, info)| (name.clone(), info.clone()))
        .collect()
}

fn describe_end(end: &transport::MuxEnd) -> String {
    match (&end.close_code, &end.error) {
        (Some(code), _) if end.close_reason.is_empty() => format!("closed with code {code}"),
        (Some(code), _) => format!("closed with code {code} ({})", end.close_reason),
        (None, Some(e)) => e.clone(),
        (None, None) => "the relay closed the connection".into(),
    }
}

/// A delay as people read it: `50ms`, `5.0s`, `2m30s`.
fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(60) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section is a single call on the catalogue).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
