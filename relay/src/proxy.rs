//! The HTTP proxy from operators to the appliances' web services (REFERENCE 2.10).
//!
//! Each request runs as an HTTP/1.1 exchange with hyper's client connection over a yamux stream
//! `CONNECT`ed to the service, both bodies streamed through without buffering. The connection
//! comes from the tunnel's [`pool`] of kept-alive ones when it holds one for that service and
//! target (fixing B-11 the first way it suggests: one transport per tunnel, with idle
//! timeouts); otherwise a slot of the tunnel's stream cap is taken and a new stream opened. A
//! connection keeps its slot while it is open, in use or idle, so the cap counts real streams;
//! one whose response body was not read to its end is closed at once. WebSocket and other
//! `Upgrade` requests always get a new stream: on `101` both upgraded connections are joined
//! byte for byte, and the slot goes with them. Paths and headers are rewritten by [`Route`].

pub mod body;
pub mod pool;
mod rewrite;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::document::ServiceInfo;
use agent_core::policy;
use agent_core::wire::TERMINAL_SERVICE;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use self::pool::Slot;
pub use self::rewrite::{Route, merge_frame_ancestors, split_proxy_path};
use crate::AppState;
use crate::api::{self, ApiPath};
use crate::auth::{ClientAddr, CurrentOperator};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Role, SessionBrief};
use crate::tunnel::{ConnectStream, Outcome, StreamPermit, Tunnel, TunnelError};

/// How long the upstream may take to send its response headers.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// An operator's use of a service is audited once per this window, not once per request.
pub const AUDIT_WINDOW: Duration = Duration::from_secs(600);
/// Remembered (operator, session, service) uses before old ones are forgotten.
const MAX_REMEMBERED_USES: usize = 4096;

/// Path parameters of the proxy routes (the optional `path` is read raw from the URI).
#[derive(Debug, Deserialize)]
pub struct ProxyParams {
    id: String,
    service: String,
}

/// When each (operator, session, service) was last audited.
#[derive(Debug, Default)]
pub struct RecentUses {
    seen: Mutex<HashMap<(String, String, String), Instant>>,
}

impl RecentUses {
    /// Whether this use is the first of `key` within [`AUDIT_WINDOW`] (and remember it).
    pub fn first_use(&self, key: (String, String, String), now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = seen.get(&key)
            && now.saturating_duration_since(*last) < AUDIT_WINDOW
        {
            return false;
        }
        if seen.len() >= MAX_REMEMBERED_USES {
            seen.retain(|_, t| now.saturating_duration_since(*t) < AUDIT_WINDOW);
        }
        seen.insert(key, now);
        true
    }
}

/// Process-wide: one relay process serves one operator API.
static RECENT_USES: LazyLock<RecentUses> = LazyLock::new(RecentUses::default);

/// Whether a request asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn upstream_failed(service: &str, what: &str, e: &hyper::Error) -> AppError {
    AppError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("service {service:?} {what}: {e}"),
    )
}

/// `ANY /api/v1/sessions/{id}/proxy/{service}[/{path}]` (operator).
pub async fn handle(
    State(state): State<AppState>,
    who: CurrentOperator,
    from: ClientAddr,
    ApiPath(params): ApiPath<ProxyParams>,
    req: Request,
) -> Result<Response, AppError> {
    who.require(Role::Operator)?;
    let ProxyParams { id, service } = params;
    let target = resolve(&state, &id, &service).await?;
    let (base, rest) = split_proxy_path(req.uri().path()).ok_or_else(|| {
        AppError::internal(format!("proxy route without a service: {}", req.uri()))
    })?;
    let route = Route::new(base, &target.info);
    let rest = rest.to_owned();
    forward(&state, &who, from, target, route, &rest, None, req).await
}

/// A web service of a connected session, checked for proxying.
pub struct Target {
    /// The session.
    pub session: SessionBrief,
    /// Its live tunnel.
    pub tunnel: Arc<Tunnel>,
    /// The session's id.
    pub id: String,
    /// The service's name.
    pub service: String,
    /// The service as the agent published it.
    pub info: ServiceInfo,
}

/// The service `service` of session `id`, if it may be proxied now: the session is open and
/// connected, the name is a web service's, and its target is not refused.
pub async fn resolve(state: &AppState, id: &str, service: &str) -> Result<Target, AppError> {
    if service == TERMINAL_SERVICE || policy::validate_connect_name(service).is_err() {
        return Err(AppError::not_found(
            "service_not_found",
            format!("{service:?} is not a web service of the appliance"),
        ));
    }
    let (session, tunnel) = api::connected(state, id).await?;
    let info = tunnel
        .service(service)
        .ok_or_else(|| TunnelError::ServiceNotFound(service.to_owned()))?;
    // Syntax and literal addresses only: the relay never resolves the agent's names.
    if let Err(e) = policy::check_target(&info.target) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "target_refused",
            format!("service {service:?} points at a refused target: {e}"),
        ));
    }
    Ok(Target {
        session,
        tunnel,
        id: id.to_owned(),
        service: service.to_owned(),
        info,
    })
}

/// Where a service origin is, as the browser sees it: bodies naming the service's own host
/// are rewritten to it.
#[derive(Debug, Clone)]
pub struct OriginBase {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` of the service origin.
    pub authority: String,
}

/// Runs one proxied exchange (or upgrade) of `req` with `target` over its tunnel; `rest` is
/// the raw path below the proxy root. `origin` is set for a service origin.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    state: &AppState,
    who: &CurrentOperator,
    from: ClientAddr,
    target: Target,
    route: Route,
    rest: &str,
    origin: Option<OriginBase>,
    mut req: Request,
) -> Result<Response, AppError> {
    let Target {
        session,
        tunnel,
        id,
        service,
        info,
    } = target;
    if req.method() == Method::CONNECT {
        return Err(AppError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "CONNECT cannot be proxied to a web service",
        ));
    }
    let mut target = route.upstream_path(rest);
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let uri: Uri = target.parse().map_err(|_| {
        AppError::new(
            StatusCode::BAD_GATEWAY,
            "bad_route",
            format!("service {service:?} has a route path that makes no valid URL: {target:?}"),
        )
    })?;
    let upgrade = is_upgrade(req.headers());
    let headers = if origin.is_some() {
        route.origin_request_headers(req.headers(), upgrade)
    } else {
        route.request_headers(req.headers(), upgrade)
    };
    let head = req.method() == Method::HEAD;

    state.presence.touch(&id, &who.0.name, Instant::now());
    let key = (who.0.id.clone(), id.clone(), service.clone());
    if RECENT_USES.first_use(key, Instant::now()) {
        let entry = AuditEntry {
            action: "proxy_open".into(),
            system_id: Some(session.system_id.clone()),
            session_id: Some(id.clone()),
            service: Some(service.clone()),
            detail: Some(serde_json::json!({ "method": req.method().as_str(), "path": target })),
            ..AuditEntry::default()
        };
        api::audit(state, who, from, entry).await;
    }
    state.metrics.proxy_requests.inc();

    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // A request without a body can be sent again on a new connection when a kept-alive one
    // turns out to have been closed by the service just as it was reused.
    let mut again = (!upgrade && http_body::Body::is_end_stream(&body))
        .then(|| (parts.method.clone(), uri.clone(), headers.clone()));
    let metrics = state.metrics.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            metrics.bytes_to_agent.inc_by(data.len() as u64);
        }
        frame
    });
    let mut next = Some(upstream_request(
        parts.method,
        uri,
        headers,
        Body::new(body),
    ));
    let pool_target = info.target.clone();
    // Upgraded connections end with their upgrade: they never come from or go to the pool.
    let mut reused = if upgrade {
        None
    } else {
        pooled(&tunnel, &service, &pool_target).await
    };
    let (conn, mut resp) = loop {
        let mut conn = match reused.take() {
            Some(conn) => conn,
            None => open(&tunnel, &service).await?,
        };
        let Some(req) = next.take() else {
            return Err(AppError::internal("proxy exchange without a request"));
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT, conn.sender.send_request(req)).await {
            Ok(Ok(resp)) => break (conn, resp),
            Ok(Err(e)) => {
                // A failed exchange leaves its connection unusable: its slot is free now.
                conn.slot.close();
                if conn.reused
                    && (e.is_canceled() || e.is_incomplete_message())
                    && let Some((method, uri, headers)) = again.take()
                {
                    tracing::debug!(service = %service, error = %e, "kept-alive connection was closed by the service; sending again on a new one");
                    next = Some(upstream_request(method, uri, headers, Body::empty()));
                    continue;
                }
                return Err(conn.failed(&service, "gave no answer", &e));
            }
            Err(_) => {
                conn.slot.close();
                return Err(AppError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "service {service:?} did not answer within {} s",
                        RESPONSE_TIMEOUT.as_secs()
                    ),
                ));
            }
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(AppError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("service {service:?} switched protocols without being asked to"),
            ));
        };
        let headers = if origin.is_some() {
            route.origin_response_headers(resp.headers(), true)
        } else {
            route.response_headers(resp.headers(), true)
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        // The stream's slot travels with the upgraded connection.
        let permit = conn.slot.take_permit();
        tokio::spawn(splice(
            client_upgrade,
            upstream_upgrade,
            permit,
            state.metrics.clone(),
        ));
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = headers;
        return Ok(out);
    }

    let (parts, body) = resp.into_parts();
    let mut headers = match &origin {
        Some(_) => route.origin_response_headers(&parts.headers, false),
        None => route.response_headers(&parts.headers, false),
    };
    let metrics = state.metrics.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            metrics.bytes_from_agent.inc_by(data.len() as u64);
        }
        frame
    });
    // Once the body has been delivered to its end, the connection goes back to the pool; a
    // client that went away mid-body drops it, and the connection closes.
    let mut body = Body::new(Returning {
        inner: body,
        done: false,
        conn: Some((tunnel.clone(), service.clone(), pool_target, conn)),
    });
    let rewritable = !head
        && parts.status != StatusCode::PARTIAL_CONTENT
        && parts.status != StatusCode::NOT_MODIFIED
        && parts.status != StatusCode::NO_CONTENT
        && body::is_rewritable(&headers);
    if let Some(origin) = &origin
        && rewritable
        && let Some(encoding) = body::Encoding::of(&headers)
    {
        let rewriter = body::UrlRewriter::new(
            route.authorities(),
            origin.scheme,
            &origin.authority,
            body::MAX_REWRITE,
        );
        body::rewritten_headers(&mut headers);
        body = body::rewrite(body, encoding, rewriter);
    }
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Joins an upgraded client connection with the upgraded upstream one until both are done.
async fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    permit: Option<StreamPermit>,
    metrics: Arc<Metrics>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "proxied upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_agent, from_agent)) => {
            metrics.bytes_to_agent.inc_by(to_agent);
            metrics.bytes_from_agent.inc_by(from_agent);
        }
        Err(e) => tracing::debug!(error = %e, "proxied upgraded connection ended with an error"),
    }
    drop(permit);
}

/// A request for the service, as hyper's client connection sends it.
fn upstream_request(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> hyper::Request<Body> {
    let mut req = hyper::Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req
}

/// An HTTP/1.1 client connection to a service over one `CONNECT` stream.
struct Conn {
    sender: SendRequest<Body>,
    slot: Arc<Slot>,
    /// Why a new stream's `CONNECT` was refused (v2 agents answer after the request went out).
    outcome: Option<Outcome>,
    /// Taken from the pool rather than opened for this request.
    reused: bool,
}

impl Conn {
    /// The error for an exchange that failed: the agent's refusal when that is what happened.
    fn failed(&self, service: &str, what: &str, e: &hyper::Error) -> AppError {
        match self.outcome.as_ref().and_then(Outcome::take) {
            Some(refused) => AppError::connect_failed(service, refused),
            None => upstream_failed(service, what, e),
        }
    }
}

/// How long a pooled connection may take to show it can take a request.
const POOLED_READY: Duration = Duration::from_secs(1);

/// An idle connection to `service` at `target` from the tunnel's pool, ready for a request.
async fn pooled(tunnel: &Tunnel, service: &str, target: &str) -> Option<Conn> {
    while let Some((mut sender, slot)) = tunnel.pool().take(service, target) {
        if let Ok(Ok(())) = tokio::time::timeout(POOLED_READY, sender.ready()).await {
            return Some(Conn {
                sender,
                slot,
                outcome: None,
                reused: true,
            });
        }
    }
    None
}

/// A new connection: a slot of the tunnel's stream cap, `CONNECT <service>`, and hyper's
/// HTTP/1.1 client on the stream, driven by its own task until it closes or upgrades.
async fn open(tunnel: &Arc<Tunnel>, service: &str) -> Result<Conn, AppError> {
    let permit = tunnel.acquire_stream_evicting()?;
    let (stream, outcome) = tunnel
        .connect(service)
        .await
        .map_err(|e| AppError::connect_failed(service, e))?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| upstream_failed(service, "cannot start HTTP", &e))?;
    let slot = Slot::new(Some(permit));
    tokio::spawn(drive(conn, slot.clone()));
    Ok(Conn {
        sender,
        slot,
        outcome: Some(outcome),
        reused: false,
    })
}

/// Runs a client connection until it closes, hands its stream to an upgrade, or has been idle
/// in the pool for [`pool::IDLE_TIMEOUT`] (dropping it then closes the stream).
async fn drive(
    conn: hyper::client::conn::http1::Connection<TokioIo<ConnectStream>, Body>,
    slot: Arc<Slot>,
) {
    let mut conn = std::pin::pin!(conn.with_upgrades());
    while let Some(at) = slot.expired(tokio::time::Instant::now()) {
        tokio::select! {
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "proxy connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep_until(at) => {}
        }
    }
    // An upgrade took the slot along with the stream; otherwise the stream is closed now.
    slot.close();
}

/// A response body that gives its connection back to the tunnel's pool once it has been
/// read to its end.
struct Returning<B: http_body::Body> {
    inner: B,
    done: bool,
    conn: Option<(Arc<Tunnel>, String, String, Conn)>,
}

impl<B> http_body::Body for Returning<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.done = true,
            // A broken body leaves the connection in no state to be reused.
            Poll::Ready(Some(Err(_))) => {
                if let Some((.., conn)) = self.conn.take() {
                    conn.slot.close();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: http_body::Body> Drop for Returning<B> {
    fn drop(&mut self) {
        let Some((tunnel, service, target, conn)) = self.conn.take() else {
            return;
        };
        if self.done || self.inner.is_end_stream() {
            tunnel.pool().put(&service, &target, conn.sender, conn.slot);
        } else {
            // Not read to its end: the connection closes, and its slot is free at once.
            conn.slot.close();
        }
    }
}

#[cfg(test)]
mod tests;
