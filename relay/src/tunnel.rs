//! Agent tunnels: the handshake endpoint (`/api/tunnel`, `/support/api/tunnel`), the registry
//! of live tunnels, the streams agents open (manifest, diagnostics, users), and the streams the
//! relay opens on behalf of operators (`CONNECT`, `COMMAND`).
//!
//! Order of a handshake (fixing reference defects B-3, B-4, B-6, B-7, S-4): reject browsers,
//! rate-limit by the believed client address, authenticate, rate-limit by system key, upgrade,
//! and only then pick or create the session, under a per-(system, node) lock, and register the
//! tunnel. A tunnel's cleanup only unregisters itself (compare-and-delete), so a replaced tunnel
//! never tears down its successor.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use agent_core::document::{
    Command, MAX_CONTROL_STREAM_BYTES, MAX_DIAGNOSTICS_BYTES, MAX_USERS_BYTES, Manifest,
    ServiceInfo, UsersReport,
};
use agent_core::policy;
use agent_core::transport::{
    self, CLOSE_SESSION_CLOSED, CLOSE_SESSION_CLOSED_REASON, Keepalive, Mode, MuxHandle, MuxStream,
};
use agent_core::wire::{self, AgentStream, RelayStream, Reply};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;

mod connect;

pub use self::connect::{ConnectStream, Outcome};
use crate::AppState;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, AuthOutcome, CloseReason, Store, System};

/// Routes agents connect to.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tunnel", get(handshake))
        .route("/support/api/tunnel", get(handshake))
}

/// Identifies one tunnel slot: a system, or one node of a clustered system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelKey {
    /// The system's id.
    pub system_id: String,
    /// The node id, `None` for a single-node system.
    pub node_id: Option<String>,
}

/// Why an operator-side request on a tunnel failed.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum TunnelError {
    /// The per-tunnel stream cap is reached.
    #[error("too many concurrent streams on this tunnel (at most {max})")]
    TooManyStreams {
        /// The cap.
        max: usize,
    },
    /// The agent does not publish this service.
    #[error("service {0:?} is not published by the agent")]
    ServiceNotFound(String),
    /// The agent answered `ERROR <text>`.
    #[error("the agent refused: {0}")]
    Agent(String),
    /// The agent did not answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The tunnel is gone.
    #[error("the tunnel to the agent is closed")]
    Closed,
    /// The stream broke or the agent answered something that is not a reply line.
    #[error("tunnel stream failed: {0}")]
    Io(String),
}

impl From<std::io::Error> for TunnelError {
    fn from(e: std::io::Error) -> Self {
        TunnelError::Io(e.to_string())
    }
}

/// Held while a proxy or terminal stream is open; dropping it frees the slot.
pub struct StreamPermit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.metrics.streams_open.dec();
    }
}

#[derive(Debug, Default)]
struct ControlLimits {
    last_manifest: Option<Instant>,
    pending_manifest: Option<BTreeMap<String, ServiceInfo>>,
    flush_scheduled: bool,
    last_diagnostics: Option<Instant>,
}

/// One live agent connection.
pub struct Tunnel {
    generation: u64,
    key: TunnelKey,
    session_id: String,
    remote: IpAddr,
    mux: MuxHandle,
    /// The manifest's services by name, sorted: a `Vec` rather than a `BTreeMap`, whose first
    /// node has room for 11 services (2 KiB per idle tunnel for one or two).
    services: RwLock<Vec<(String, ServiceInfo)>>,
    manifest_seq: watch::Sender<u64>,
    streams: Arc<Semaphore>,
    max_streams: usize,
    connected_at: i64,
    limits: Mutex<ControlLimits>,
    commands_pending: AtomicUsize,
    connect_timeout: Duration,
    command_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The agent offered protocol v2 on the upgrade (and was answered with it).
    v2: bool,
    /// Whether the agent's terminal is on (it says `X-Tether-Terminal: disabled` on the upgrade,
    /// or answers `CONNECT terminal` with "terminal disabled").
    terminal: std::sync::atomic::AtomicBool,
    /// Kept-alive HTTP connections to the services, for the proxy.
    pool: crate::proxy::pool::Pool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Guarded data is plain state; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tunnel {
    /// The session this tunnel serves.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The system's id.
    pub fn system_id(&self) -> &str {
        &self.key.system_id
    }

    /// The node id, if the system is a cluster node.
    pub fn node_id(&self) -> Option<&str> {
        self.key.node_id.as_deref()
    }

    /// When the tunnel connected (unix ms).
    pub fn connected_at(&self) -> i64 {
        self.connected_at
    }

    /// The agent's current manifest.
    pub fn services(&self) -> BTreeMap<String, ServiceInfo> {
        self.services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// One published service.
    pub fn service(&self, name: &str) -> Option<ServiceInfo> {
        let services = self.services.read().unwrap_or_else(PoisonError::into_inner);
        services
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .and_then(|i| services.get(i))
            .map(|(_, info)| info.clone())
    }

    /// Whether the agent speaks protocol v2 (PROTOCOL section 9).
    pub fn speaks_v2(&self) -> bool {
        self.v2
    }

    /// Whether the agent offers a web terminal, as far as the relay knows.
    pub fn terminal_available(&self) -> bool {
        self.terminal.load(Ordering::Relaxed)
    }

    /// The agent refused a terminal as disabled: hide it from now on.
    pub fn mark_terminal_disabled(&self) {
        self.terminal.store(false, Ordering::Relaxed);
    }

    /// Open a terminal stream: `CONNECT terminal` (with the operator's name to a v2 agent) and
    /// the agent's reply; terminal frames follow on the returned stream.
    pub async fn open_terminal(&self, operator: &str) -> Result<MuxStream, TunnelError> {
        let header = if self.v2 && wire::is_operator_name(operator) {
            RelayStream::TerminalFor(operator.to_owned())
        } else {
            RelayStream::Terminal
        }
        .header();
        self.open_with(header, "the agent did not answer CONNECT terminal in time")
            .await
    }

    /// Open a stream, write its header line and read the agent's `OK` / `ERROR` reply.
    async fn open_with(
        &self,
        header: String,
        timeout_what: &'static str,
    ) -> Result<MuxStream, TunnelError> {
        let open = async {
            let mut s = self.mux.open().await.map_err(|_| TunnelError::Closed)?;
            s.write_all(header.as_bytes()).await?;
            match read_reply(&mut s).await? {
                Reply::Ok => Ok(s),
                Reply::Error(text) => {
                    let _ = s.shutdown().await;
                    Err(TunnelError::Agent(text))
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| TunnelError::Timeout(timeout_what))?
    }

    /// Take a slot of the per-tunnel stream cap.
    pub fn acquire_stream(self: &Arc<Self>) -> Result<StreamPermit, TunnelError> {
        let permit =
            self.streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| TunnelError::TooManyStreams {
                    max: self.max_streams,
                })?;
        self.metrics.streams_open.inc();
        Ok(StreamPermit {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }

    /// Take a slot of the per-tunnel stream cap; when the cap is reached and kept-alive proxy
    /// connections hold slots, close those (which gives their slots back at once) and try again.
    pub fn acquire_stream_evicting(self: &Arc<Self>) -> Result<StreamPermit, TunnelError> {
        self.acquire_stream().or_else(|refused| {
            if self.pool.clear() == 0 {
                return Err(refused);
            }
            self.acquire_stream()
        })
    }

    /// The kept-alive HTTP connections to this tunnel's services.
    pub fn pool(&self) -> &crate::proxy::pool::Pool {
        &self.pool
    }

    /// Open a byte stream to a published service: `CONNECT <service>`. A v2 agent takes bytes
    /// right behind the header line, so its stream is returned at once and the reply is read
    /// in front of the service's first bytes (the [`Outcome`] then says why a refused stream
    /// failed); a v1 agent's `OK` is waited for, as the reference relay does.
    pub async fn connect(&self, service: &str) -> Result<(ConnectStream, Outcome), TunnelError> {
        const WHAT: &str = "the agent did not answer CONNECT in time";
        if policy::validate_connect_name(service).is_err() || self.service(service).is_none() {
            return Err(TunnelError::ServiceNotFound(service.to_owned()));
        }
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let header = RelayStream::Connect(service.to_owned()).header();
        let open = async {
            let mut s = self.mux.open().await.map_err(|_| TunnelError::Closed)?;
            s.write_all(header.as_bytes()).await?;
            Ok::<_, TunnelError>(s)
        };
        let s = tokio::time::timeout_at(deadline, open)
            .await
            .map_err(|_| TunnelError::Timeout(WHAT))??;
        let (mut s, outcome) = ConnectStream::new(s, deadline, WHAT);
        if !self.v2
            && let Err(e) = s.accepted().await
        {
            let _ = s.shutdown().await;
            return Err(e);
        }
        Ok((s, outcome))
    }

    /// Send a command and wait for the agent's answer (and for the manifest it re-sends).
    pub async fn command(&self, cmd: &Command) -> Result<(), TunnelError> {
        self.commands_pending.fetch_add(1, Ordering::SeqCst);
        let result = self.command_inner(cmd).await;
        self.commands_pending.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn command_inner(&self, cmd: &Command) -> Result<(), TunnelError> {
        let mut seq = self.manifest_seq.subscribe();
        let exchange = async {
            let mut s = self.mux.open().await.map_err(|_| TunnelError::Closed)?;
            let mut msg = RelayStream::Command.header().into_bytes();
            msg.extend_from_slice(&cmd.to_json_line());
            s.write_all(&msg).await?;
            let reply = read_reply(&mut s).await;
            let _ = s.shutdown().await;
            match reply? {
                Reply::Ok => Ok(()),
                Reply::Error(text) => Err(TunnelError::Agent(text)),
            }
        };
        tokio::time::timeout(self.command_timeout, exchange)
            .await
            .map_err(|_| TunnelError::Timeout("the agent did not answer the command in time"))??;
        // The agent re-sends its manifest before it answers OK, on another stream that may
        // still be in flight here: wait (bounded) until our view reflects the command.
        let reflected = |svc: &BTreeMap<String, ServiceInfo>| match cmd {
            Command::AddServices { services } => services
                .iter()
                .all(|(n, i)| svc.get(n).is_some_and(|s| s.target == i.target)),
            Command::RemoveServices { service_names } => {
                service_names.iter().all(|n| !svc.contains_key(n))
            }
        };
        let wait = async {
            loop {
                if reflected(&self.services()) {
                    break;
                }
                if seq.changed().await.is_err() {
                    break;
                }
                if matches!(cmd, Command::RemoveServices { .. }) {
                    break;
                }
            }
        };
        // A removal of a service the agent discovered itself changes nothing and brings no
        // manifest: wait less for it.
        let patience = match cmd {
            Command::AddServices { .. } => Duration::from_secs(5),
            Command::RemoveServices { .. } => Duration::from_secs(1),
        };
        let _ = tokio::time::timeout(patience, wait).await;
        Ok(())
    }

    /// End the session on purpose: close code 4000 tells the agent not to reconnect.
    pub fn close_session_closed(&self) {
        self.mux
            .close(Some((CLOSE_SESSION_CLOSED, CLOSE_SESSION_CLOSED_REASON)));
    }

    /// Drop the connection without a close code (the agent reconnects).
    pub fn disconnect(&self) {
        self.mux.close(None);
    }

    fn set_services(&self, services: BTreeMap<String, ServiceInfo>) {
        *self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner) = services.into_iter().collect();
        self.manifest_seq.send_modify(|n| *n = n.wrapping_add(1));
    }
}

async fn read_reply(s: &mut MuxStream) -> Result<Reply, TunnelError> {
    // Byte by byte: whatever follows the reply line belongs to the caller.
    let mut line = Vec::with_capacity(16);
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(TunnelError::Io(
                "the agent closed the stream before replying".into(),
            ));
        }
        line.push(b[0]);
        match wire::find_line(&line) {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => return Err(TunnelError::Io(format!("bad reply line: {e}"))),
        }
    }
    let text = wire::line_text(&line).map_err(|e| TunnelError::Io(format!("bad reply: {e}")))?;
    Reply::parse(text).map_err(|e| TunnelError::Io(format!("bad reply: {e}")))
}

#[derive(Default)]
struct RegistryInner {
    by_key: HashMap<TunnelKey, Arc<Tunnel>>,
    by_session: HashMap<String, Arc<Tunnel>>,
    graces: HashMap<TunnelKey, u64>,
}

const KEY_LOCK_SHARDS: usize = 64;

/// Every live tunnel, by (system, node) and by session, plus pending grace periods.
pub struct Registry {
    inner: Mutex<RegistryInner>,
    key_locks: Vec<tokio::sync::Mutex<()>>,
    next_generation: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            key_locks: (0..KEY_LOCK_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            next_generation: AtomicU64::new(1),
        }
    }
}

impl Registry {
    /// The tunnel serving a session.
    pub fn by_session(&self, session_id: &str) -> Option<Arc<Tunnel>> {
        lock(&self.inner).by_session.get(session_id).cloned()
    }

    /// Number of live tunnels.
    pub fn len(&self) -> usize {
        lock(&self.inner).by_key.len()
    }

    /// Whether no tunnel is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live tunnel.
    pub fn all(&self) -> Vec<Arc<Tunnel>> {
        lock(&self.inner).by_key.values().cloned().collect()
    }

    async fn lock_key(&self, key: &TunnelKey) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys: a key always maps to the same shard.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let shard = (h.finish() as usize) % KEY_LOCK_SHARDS;
        self.key_locks[shard].lock().await
    }

    fn has_key(&self, key: &TunnelKey) -> bool {
        lock(&self.inner).by_key.contains_key(key)
    }

    /// Register a tunnel: cancels the key's grace period and returns the tunnel it replaces.
    fn register(&self, tunnel: Arc<Tunnel>) -> Option<Arc<Tunnel>> {
        let mut inner = lock(&self.inner);
        inner.graces.remove(&tunnel.key);
        let old = inner.by_key.insert(tunnel.key.clone(), tunnel.clone());
        if let Some(old) = &old
            && inner
                .by_session
                .get(&old.session_id)
                .is_some_and(|t| Arc::ptr_eq(t, old))
        {
            inner.by_session.remove(&old.session_id);
        }
        inner.by_session.insert(tunnel.session_id.clone(), tunnel);
        old
    }

    /// Remove a tunnel only if it is still the registered one; true when it was.
    fn unregister_if_current(&self, tunnel: &Arc<Tunnel>) -> bool {
        let mut inner = lock(&self.inner);
        let current = inner
            .by_key
            .get(&tunnel.key)
            .is_some_and(|t| Arc::ptr_eq(t, tunnel));
        if current {
            inner.by_key.remove(&tunnel.key);
            if inner
                .by_session
                .get(&tunnel.session_id)
                .is_some_and(|t| Arc::ptr_eq(t, tunnel))
            {
                inner.by_session.remove(&tunnel.session_id);
            }
        }
        current
    }

    /// Remove the tunnel of a session (whatever its key), returning it.
    pub fn remove_session(&self, session_id: &str) -> Option<Arc<Tunnel>> {
        let mut inner = lock(&self.inner);
        let t = inner.by_session.remove(session_id)?;
        if inner.by_key.get(&t.key).is_some_and(|c| Arc::ptr_eq(c, &t)) {
            inner.by_key.remove(&t.key);
        }
        inner.graces.remove(&t.key);
        Some(t)
    }

    /// Start a grace period for a key; returns its generation.
    pub(crate) fn begin_grace(&self, key: &TunnelKey) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner).graces.insert(key.clone(), generation);
        generation
    }

    /// End a grace period if it is still the one started with `generation` and no tunnel
    /// came back; true when the session should now be closed.
    pub(crate) fn end_grace(&self, key: &TunnelKey, generation: u64) -> bool {
        let mut inner = lock(&self.inner);
        if inner.graces.get(key) == Some(&generation) && !inner.by_key.contains_key(key) {
            inner.graces.remove(key);
            true
        } else {
            false
        }
    }
}

/// Why a handshake was refused: the one place these map to HTTP.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("tunnels cannot be opened from a browser (the request carries an Origin header)")]
    BrowserOrigin,
    #[error("too many connection attempts from this address, retry later")]
    RateLimitedAddress,
    #[error("{0}")]
    BadAuth(&'static str),
    #[error("invalid system credentials")]
    InvalidCredentials,
    #[error("support is not enabled for this system")]
    SupportDisabled,
    #[error("too many connection attempts for this system, retry later")]
    RateLimitedSystem,
    #[error("invalid node_id {0:?}: expected 1 to 10 digits")]
    BadNodeId(String),
    #[error(
        "expected a WebSocket upgrade (GET with Upgrade: websocket, Sec-WebSocket-Version: 13)"
    )]
    NotWebSocket,
    #[error("the relay is at its tunnel limit, retry later")]
    TooManyTunnels,
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            HandshakeError::BrowserOrigin => (StatusCode::FORBIDDEN, "browser_origin"),
            HandshakeError::RateLimitedAddress | HandshakeError::RateLimitedSystem => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            HandshakeError::BadAuth(_) | HandshakeError::InvalidCredentials => {
                (StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            HandshakeError::SupportDisabled => (StatusCode::FORBIDDEN, "support_disabled"),
            HandshakeError::BadNodeId(_) => (StatusCode::BAD_REQUEST, "invalid_node_id"),
            HandshakeError::NotWebSocket => (StatusCode::BAD_REQUEST, "not_websocket"),
            HandshakeError::TooManyTunnels => (StatusCode::SERVICE_UNAVAILABLE, "too_many_tunnels"),
            HandshakeError::Internal(detail) => {
                tracing::error!(%detail, "tunnel handshake failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"System Authentication\""),
            );
        }
        resp
    }
}

fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), HandshakeError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(HandshakeError::BadAuth(
            "authentication required: Basic auth with the system key and secret",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| HandshakeError::BadAuth("invalid authentication format"))?;
    let encoded = value.strip_prefix("Basic ").ok_or(HandshakeError::BadAuth(
        "invalid authentication format: expected Basic",
    ))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| HandshakeError::BadAuth("invalid authentication encoding"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| HandshakeError::BadAuth("invalid authentication encoding"))?;
    let (key, secret) = decoded
        .split_once(':')
        .ok_or(HandshakeError::BadAuth("invalid credentials format"))?;
    Ok((key.to_owned(), secret.to_owned()))
}

fn is_websocket_upgrade(req: &Request) -> bool {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == axum::http::Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && h.get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13")
        && h.contains_key(header::SEC_WEBSOCKET_KEY)
}

async fn handshake(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match accept(state.clone(), peer, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let reason = match &e {
                HandshakeError::BadAuth(_) | HandshakeError::InvalidCredentials => "auth",
                HandshakeError::SupportDisabled => "disabled",
                HandshakeError::RateLimitedAddress | HandshakeError::RateLimitedSystem => {
                    "rate_limited"
                }
                _ => "other",
            };
            state.metrics.reject(reason);
            tracing::info!(%peer, reason, error = %e, "tunnel handshake refused");
            e.into_response()
        }
    }
}

async fn accept(
    state: AppState,
    peer: SocketAddr,
    mut req: Request,
) -> Result<Response, HandshakeError> {
    if req.headers().contains_key(header::ORIGIN) {
        return Err(HandshakeError::BrowserOrigin);
    }
    let remote = crate::auth::client_ip(peer, req.headers(), &state.config.trusted_proxies);
    if !state.limits.per_ip.allow(&remote.to_string()) {
        return Err(HandshakeError::RateLimitedAddress);
    }
    let (key, secret) = basic_credentials(req.headers())?;
    let system = match state
        .store
        .verify_system(&key, &secret)
        .await
        .map_err(|e| HandshakeError::Internal(e.to_string()))?
    {
        AuthOutcome::Valid(system) => system,
        AuthOutcome::Disabled(_) => return Err(HandshakeError::SupportDisabled),
        AuthOutcome::Invalid => return Err(HandshakeError::InvalidCredentials),
    };
    if !state.limits.per_key.allow(&system.system_key) {
        return Err(HandshakeError::RateLimitedSystem);
    }
    let node_id = query_param(req.uri().query(), "node_id").filter(|n| !n.is_empty());
    if let Some(node) = &node_id {
        policy::validate_node_id(node).map_err(|_| HandshakeError::BadNodeId(node.clone()))?;
    }
    if !is_websocket_upgrade(&req) {
        return Err(HandshakeError::NotWebSocket);
    }
    let key = TunnelKey {
        system_id: system.id.clone(),
        node_id,
    };
    if state.tunnels.len() >= state.config.max_tunnels && !state.tunnels.has_key(&key) {
        return Err(HandshakeError::TooManyTunnels);
    }
    let accept_key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| tungstenite::handshake::derive_accept_key(k.as_bytes()))
        .ok_or(HandshakeError::NotWebSocket)?;
    let header_is = |name: &str, value: &str| {
        req.headers()
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    let v2 = header_is(wire::PROTOCOL_HEADER, wire::PROTOCOL_V2);
    let terminal = !header_is("x-tether-terminal", "disabled");
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The set-up runs boxed and is freed when done: the task lives as long as the tunnel, and
    // its size would otherwise be that of the set-up's largest state (the WebSocket before the
    // driver task takes it, the store calls), not the little a live tunnel is watched with.
    let setup = Box::pin(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    transport::ReadAhead::new(TokioIo::new(upgraded)),
                    Role::Server,
                    Some(transport::ws_config()),
                )
                .await;
                start_tunnel(state, system, key, remote, ws, (v2, terminal)).await
            }
            Err(e) => {
                tracing::warn!(%remote, error = %e, "tunnel upgrade failed");
                None
            }
        }
    });
    tokio::spawn(async move {
        let setup = setup;
        if let Some(live) = setup.await {
            live.watch().await;
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if v2 {
        h.insert(
            wire::PROTOCOL_HEADER,
            HeaderValue::from_static(wire::PROTOCOL_V2),
        );
    }
    Ok(resp)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url_pairs(query?).find(|(k, _)| k == name).map(|(_, v)| v)
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A registered tunnel, watched until its connection ends.
struct Live {
    state: AppState,
    tunnel: Arc<Tunnel>,
    control: tokio::task::JoinHandle<()>,
    system_name: String,
}

impl Live {
    async fn watch(self) {
        let Live {
            state,
            tunnel,
            control,
            system_name,
        } = self;
        let end = tunnel.mux.closed().await;
        control.abort();
        state.metrics.tunnels_connected.dec();
        tracing::info!(session = %tunnel.session_id, system = %system_name, error = ?end.error, "tunnel disconnected");
        let actor = format!("agent:{system_name}");
        Box::pin(audit(&state, &tunnel, &actor, "tunnel_disconnected")).await;
        if state.tunnels.unregister_if_current(&tunnel) {
            state
                .sessions
                .start_grace(tunnel.key.clone(), tunnel.session_id.clone());
        }
    }
}

/// Registers the tunnel of a new agent connection; `None` when the agent was turned away.
async fn start_tunnel<S>(
    state: AppState,
    system: System,
    key: TunnelKey,
    remote: IpAddr,
    ws: WebSocketStream<S>,
    (v2, terminal): (bool, bool),
) -> Option<Live>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mux, incoming) = transport::spawn_mux(ws, Mode::Server, Some(Keepalive::default()));
    let actor = format!("agent:{}", system.name);
    let guard = state.tunnels.lock_key(&key).await;
    let session = match pick_session(&state, &key).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            drop(guard);
            tracing::info!(system = %system.name, node = ?key.node_id, "support session was closed by an operator; telling the agent to stop (4000)");
            mux.close(Some((CLOSE_SESSION_CLOSED, CLOSE_SESSION_CLOSED_REASON)));
            return None;
        }
        Err(e) => {
            drop(guard);
            tracing::error!(system = %system.name, error = %e, "cannot pick a session for the tunnel");
            mux.close(None);
            return None;
        }
    };
    let services: BTreeMap<String, ServiceInfo> = session
        .services
        .as_ref()
        .and_then(|v| serde_json::from_value::<Manifest>(v.clone()).ok())
        .map(|m| m.services)
        .unwrap_or_default();
    let tunnel = Arc::new(Tunnel {
        generation: state
            .tunnels
            .next_generation
            .fetch_add(1, Ordering::Relaxed),
        key: key.clone(),
        session_id: session.id.clone(),
        remote,
        mux: mux.clone(),
        services: RwLock::new(services.into_iter().collect()),
        manifest_seq: watch::Sender::new(0),
        streams: Arc::new(Semaphore::new(state.config.max_streams_per_tunnel)),
        max_streams: state.config.max_streams_per_tunnel,
        connected_at: Store::now(),
        limits: Mutex::default(),
        commands_pending: AtomicUsize::new(0),
        connect_timeout: state.config.connect_timeout,
        command_timeout: state.config.command_timeout,
        metrics: state.metrics.clone(),
        v2,
        terminal: std::sync::atomic::AtomicBool::new(terminal),
        pool: crate::proxy::pool::Pool::new(state.config.proxy_keepalive),
    });
    let replaced = state.tunnels.register(tunnel.clone());
    drop(guard);
    if let Some(old) = replaced {
        tracing::info!(session = %session.id, old = old.generation, new = tunnel.generation, "a new tunnel replaces the previous one for this system/node");
        old.disconnect();
    }
    state.metrics.tunnels_connected.inc();
    state.metrics.tunnel_connects.inc();
    tracing::info!(session = %session.id, system = %system.name, node = ?key.node_id, %remote, "tunnel connected");
    drop(session);
    Box::pin(audit(&state, &tunnel, &actor, "tunnel_connected")).await;

    let control = tokio::spawn(accept_agent_streams(
        state.clone(),
        tunnel.clone(),
        incoming,
    ));
    Some(Live {
        state,
        tunnel,
        control,
        system_name: system.name,
    })
}

/// The session for a new tunnel: resume the open one (same id; v1 agents resume on matching
/// credentials), or create one; `None` when an operator closed it and it must stay closed.
async fn pick_session(
    state: &AppState,
    key: &TunnelKey,
) -> Result<Option<crate::store::Session>, crate::store::StoreError> {
    let store = &state.store;
    let node = key.node_id.as_deref();
    if store.is_reopen_blocked(&key.system_id, node).await? {
        return Ok(None);
    }
    let now = Store::now();
    let session = match store.open_session_for(&key.system_id, node).await? {
        Some(s) if s.expires_at > now => s,
        other => {
            if let Some(expired) = other {
                store
                    .close_session(&expired.id, CloseReason::Timeout)
                    .await?;
            }
            let lifetime =
                i64::try_from(state.config.session_lifetime.as_millis()).unwrap_or(i64::MAX);
            store.create_session(&key.system_id, node, lifetime).await?
        }
    };
    store.activate_session(&session.id).await?;
    Ok(Some(session))
}

async fn audit(state: &AppState, tunnel: &Tunnel, actor: &str, action: &str) {
    let entry = AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        system_id: Some(tunnel.key.system_id.clone()),
        session_id: Some(tunnel.session_id.clone()),
        service: None,
        remote_addr: Some(tunnel.remote.to_string()),
        detail: tunnel
            .key
            .node_id
            .as_ref()
            .map(|n| serde_json::json!({"node_id": n})),
    };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!(error = %e, "cannot write audit record");
    }
}

async fn accept_agent_streams(
    state: AppState,
    tunnel: Arc<Tunnel>,
    mut incoming: transport::Incoming,
) {
    while let Some(stream) = incoming.recv().await {
        let state = state.clone();
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            let deadline = state.config.control_timeout;
            match tokio::time::timeout(deadline, agent_stream(&state, &tunnel, stream)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(session = %tunnel.session_id, error = %e, "agent stream refused")
                }
                Err(_) => tracing::warn!(
                    session = %tunnel.session_id,
                    "agent stream not finished within {} s; closed",
                    deadline.as_secs()
                ),
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what} is larger than {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    #[error("{what} is not valid: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

async fn agent_stream(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    mut s: MuxStream,
) -> Result<(), ControlError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    let (kind, header_len) = loop {
        if let Some(found) = AgentStream::classify(&buf)? {
            break found;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            let _ = s.shutdown().await;
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    state.metrics.control_stream(kind_name(kind));
    let body_limit = match kind {
        AgentStream::Manifest => MAX_CONTROL_STREAM_BYTES,
        AgentStream::Diagnostics => MAX_DIAGNOSTICS_BYTES,
        AgentStream::Users => MAX_USERS_BYTES,
        AgentStream::UsersFetch => 0,
    };
    let result = match kind {
        AgentStream::UsersFetch => users_fetch(state, tunnel, &mut s).await,
        _ => {
            let body = read_body(&mut s, buf.split_off(header_len), body_limit, kind).await?;
            match kind {
                AgentStream::Manifest => on_manifest(state, tunnel, &body).await,
                AgentStream::Diagnostics => on_diagnostics(state, tunnel, &body).await,
                AgentStream::Users => on_users(state, tunnel, &body).await,
                AgentStream::UsersFetch => Ok(()),
            }
        }
    };
    let _ = s.shutdown().await;
    result
}

fn kind_name(kind: AgentStream) -> &'static str {
    match kind {
        AgentStream::Manifest => "manifest",
        AgentStream::Diagnostics => "diagnostics report",
        AgentStream::Users => "users report",
        AgentStream::UsersFetch => "users fetch",
    }
}

async fn read_body(
    s: &mut MuxStream,
    mut body: Vec<u8>,
    max: usize,
    kind: AgentStream,
) -> Result<Vec<u8>, ControlError> {
    let mut chunk = [0u8; 4096];
    loop {
        if body.len() > max {
            return Err(ControlError::TooLarge {
                what: kind_name(kind),
                max,
            });
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// Keep the manifest entries the relay can serve; log the others with the reason.
fn sanitize_services(
    session: &str,
    services: BTreeMap<String, ServiceInfo>,
) -> BTreeMap<String, ServiceInfo> {
    services
        .into_iter()
        .filter(|(name, info)| {
            let problem = policy::validate_connect_name(name)
                .err()
                .map(|e| e.to_string())
                .or_else(|| {
                    policy::validate_upstream_host(&info.host)
                        .err()
                        .map(|e| e.to_string())
                })
                .or_else(|| {
                    policy::split_target(&info.target)
                        .err()
                        .map(|e| e.to_string())
                });
            if let Some(problem) = &problem {
                tracing::warn!(%session, service = %name, %problem, "manifest entry dropped");
            }
            problem.is_none()
        })
        .collect()
}

async fn on_manifest(
    state: &AppState,
    tunnel: &Arc<Tunnel>,
    body: &[u8],
) -> Result<(), ControlError> {
    let Some(manifest) = Manifest::parse_json(body).map_err(|e| ControlError::Invalid {
        what: "manifest",
        detail: e.to_string(),
    })?
    else {
        tracing::debug!(session = %tunnel.session_id, "manifest with null services ignored");
        return Ok(());
    };
    let services = sanitize_services(&tunnel.session_id, manifest.services);
    let interval = state.config.manifest_interval;
    let solicited = tunnel.commands_pending.load(Ordering::SeqCst) > 0;
    enum Next {
        ApplyNow(BTreeMap<String, ServiceInfo>),
        FlushAt(Instant),
        AlreadyScheduled,
    }
    let next = {
        let mut limits = lock(&tunnel.limits);
        match limits.last_manifest {
            Some(last) if !solicited && last.elapsed() < interval => {
                limits.pending_manifest = Some(services);
                if limits.flush_scheduled {
                    Next::AlreadyScheduled
                } else {
                    limits.flush_scheduled = true;
                    Next::FlushAt(last + interval)
                }
            }
            _ => {
                limits.pending_manifest = None;
                limits.last_manifest = Some(Instant::now());
                Next::ApplyNow(services)
            }
        }
    };
    let flush_at = match next {
        Next::ApplyNow(services) => {
            apply_manifest(state, tunnel, services).await;
            return Ok(());
        }
        Next::AlreadyScheduled => return Ok(()),
        Next::FlushAt(at) => Some(at),
    };
    if let Some(at) = flush_at {
        tracing::debug!(session = %tunnel.session_id, "manifest coalesced until the rate-limit window ends");
        let state = state.clone();
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let pending = {
                let mut limits = lock(&tunnel.limits);
                limits.flush_scheduled = false;
                let p = limits.pending_manifest.take();
                if p.is_some() {
                    limits.last_manifest = Some(Instant::now());
                }
                p
            };
            if let Some(services) = pending {
                apply_manifest(&state, &tunnel, services).await;
            }
        });
    }
    Ok(())
}

async fn apply_manifest(
    state: &AppState,
    tunnel: &Tunnel,
    services: BTreeMap<String, ServiceInfo>,
) {
    let manifest = Manifest {
        version: 1,
        services,
    };
    let json = serde_json::to_value(&manifest).unwrap_or(serde_json::Value::Null);
    tracing::info!(session = %tunnel.session_id, services = manifest.services.len(), "manifest applied");
    tunnel.set_services(manifest.services);
    if let Err(e) = state.store.save_services(&tunnel.session_id, &json).await {
        tracing::error!(session = %tunnel.session_id, error = %e, "cannot store the manifest");
    }
}

async fn on_diagnostics(
    state: &AppState,
    tunnel: &Tunnel,
    body: &[u8],
) -> Result<(), ControlError> {
    {
        let mut limits = lock(&tunnel.limits);
        if limits
            .last_diagnostics
            .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
        {
            tracing::debug!(session = %tunnel.session_id, "diagnostics report within 30 s of the previous one dropped");
            return Ok(());
        }
        limits.last_diagnostics = Some(Instant::now());
    }
    let accepted =
        crate::diagnostics::validate(trim_json(body)).map_err(|e| ControlError::Invalid {
            what: "diagnostics report",
            detail: e.to_string(),
        })?;
    let saved = crate::diagnostics::store(state, &tunnel.session_id, &accepted).await?;
    tracing::info!(session = %tunnel.session_id, overall = accepted.report.overall_status.as_str(), saved, "diagnostics report received");
    Ok(())
}

async fn on_users(state: &AppState, tunnel: &Tunnel, body: &[u8]) -> Result<(), ControlError> {
    let report: UsersReport =
        serde_json::from_slice(trim_json(body)).map_err(|e| ControlError::Invalid {
            what: "users report",
            // serde_json errors name positions, never values: no secret reaches the log
            detail: e.to_string(),
        })?;
    let json = serde_json::to_vec(&report).map_err(|e| ControlError::Invalid {
        what: "users report",
        detail: e.to_string(),
    })?;
    state.store.save_users(&tunnel.session_id, &json).await?;
    tracing::info!(session = %tunnel.session_id, "users report received (stored encrypted)");
    Ok(())
}

async fn users_fetch(
    state: &AppState,
    tunnel: &Tunnel,
    s: &mut MuxStream,
) -> Result<(), ControlError> {
    let users = state
        .store
        .users_for_system(&tunnel.key.system_id)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read users for USERS_FETCH");
            None
        });
    let mut reply = users.unwrap_or_else(|| b"{}".to_vec());
    reply.push(b'\n');
    s.write_all(&reply).await?;
    Ok(())
}

fn trim_json(body: &[u8]) -> &[u8] {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    body.get(start..end).unwrap_or_default()
}

/// Handshake rate limiters.
pub struct Limits {
    /// Per believed client address.
    pub per_ip: crate::ratelimit::RateLimiter,
    /// Per authenticated system key.
    pub per_key: crate::ratelimit::RateLimiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        assert_eq!(
            query_param(Some("a=1&node_id=%31%32"), "node_id").as_deref(),
            Some("12")
        );
        assert_eq!(query_param(Some("node_id"), "node_id").as_deref(), Some(""));
        assert_eq!(query_param(Some("x=%zz"), "x"), None);
        assert_eq!(query_param(None, "x"), None);
    }

    #[test]
    fn basic_credentials_split_on_the_first_colon() {
        let mut h = HeaderMap::new();
        let enc = base64::engine::general_purpose::STANDARD.encode("KEY:tth_a.b:c");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {enc}")).unwrap(),
        );
        let (k, s) = basic_credentials(&h).unwrap();
        assert_eq!((k.as_str(), s.as_str()), ("KEY", "tth_a.b:c"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(basic_credentials(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&h).is_err());
    }

    #[test]
    fn trims_json_whitespace() {
        assert_eq!(trim_json(b"  {}\n"), b"{}");
        assert_eq!(trim_json(b"\n\n"), b"");
    }
}
