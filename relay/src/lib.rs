//! Tether relay: agents connect here over a WebSocket carrying yamux; operators reach the
//! agents' services and sessions through the REST API under `/api/v1`.
//!
//! Layout: [`tunnel`] owns the agent handshake, the registry of live tunnels and the streams
//! on them; [`session`] owns the session lifecycle (grace, close, expiry, reconciliation);
//! [`store`] is the only SQL (SQLite by default, PostgreSQL for scale); [`api`], [`proxy`] and
//! [`auth`] serve operators, and [`origin`] gives each proxied service an origin of its own;
//! [`error`] maps every error to HTTP in one place; [`admin`] holds
//! the command-line administration. [`app`] builds the router (the test seam) and [`serve`]
//! runs it.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod crypto;
pub mod demo;
pub mod diagnostics;
pub mod error;
pub mod metrics;
pub mod origin;
pub mod presence;
pub mod proxy;
pub mod ratelimit;
pub mod session;
pub mod store;
pub mod terminal;
pub mod ticket;
pub mod tunnel;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

use crate::config::ServeConfig;
use crate::crypto::DataKey;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::session::Sessions;
use crate::store::{Store, StoreError};
use crate::tunnel::{Limits, Registry};

/// Everything a request handler may need: one `Arc`, because axum clones the state for every
/// request (and every middleware on its way), and a clone of nine `Arc`s cost nine contended
/// atomic updates each time (2–3 % of the relay's CPU per proxied request under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// The database.
    pub store: Store,
    /// Live tunnels.
    pub tunnels: Arc<Registry>,
    /// Session lifecycle.
    pub sessions: Arc<Sessions>,
    /// Server settings.
    pub config: Arc<ServeConfig>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Handshake rate limits.
    pub limits: Arc<Limits>,
    /// One-time web terminal tickets.
    pub terminals: Arc<terminal::Tickets>,
    /// Service origins: short ids, one-time tokens, origin cookies.
    pub origins: Arc<origin::Origins>,
    /// Operators with a live terminal or a recent proxied request, by session.
    pub presence: Arc<presence::Presence>,
}

impl AppState {
    /// State over a store with the given settings.
    pub fn new(store: Store, config: ServeConfig) -> AppState {
        let tunnels = Arc::new(Registry::default());
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            tunnels.clone(),
            config.grace_period,
        ));
        let limits = Arc::new(Limits {
            per_ip: RateLimiter::new(config.rate_limit_per_ip, config.rate_limit_window),
            per_key: RateLimiter::new(config.rate_limit_per_key, config.rate_limit_window),
        });
        let terminals = Arc::new(terminal::Tickets::new(config.terminal_ticket_ttl));
        let origins = Arc::new(origin::Origins::new(
            store.derived_key(b"tether service origins v1"),
            config.origin_link_ttl,
        ));
        AppState(Arc::new(Shared {
            store,
            tunnels,
            sessions,
            terminals,
            origins,
            presence: Arc::default(),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            limits,
        }))
    }
}

/// The relay's routes: agent tunnels plus the operator API; with `--proxy-domain`, requests to
/// a service origin are taken by [`origin::route`] first.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(tunnel::router())
        .merge(api::router())
        .merge(terminal::router())
        .merge(console::router(&state))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::route,
        ))
        .layer(axum::middleware::from_fn(error::request_id))
        .with_state(state)
}

/// Why the relay could not start or stopped.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is wrong.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Open the store, reconcile sessions, and serve until `shutdown` resolves.
pub async fn serve(
    database: &str,
    data_key: DataKey,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let store = Store::connect(database, data_key).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let sweep = config.sweep_interval;
    let state = AppState::new(store.clone(), config);
    let reconciled = state.sessions.reconcile().await?;
    if reconciled > 0 {
        tracing::info!(
            sessions = reconciled,
            "open sessions from before the restart wait for their agents (grace period)"
        );
    }
    state.sessions.spawn_sweeper(sweep);
    terminal::spawn_recording_sweeper(state.clone());
    tracing::info!(%addr, backend = store.backend(), "tether-relay listening");
    // Tests and scripts read the bound address (port 0) from this line.
    println!("tether-relay listening on http://{addr}");
    // Small proxied requests and terminal keystrokes must not wait for delayed ACKs.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(ServeError::Serve)
}
