//! The HTTP proxy from operators to the appliances' web services (REFERENCE 2.10).
//!
//! One yamux stream per request (fixing B-11): take a slot of the tunnel's stream cap, open
//! `CONNECT <service>`, run one HTTP/1.1 exchange over it with hyper's client connection, and
//! stream both bodies through without buffering. The slot is held until the response body has
//! been delivered (or the upgraded connection has ended), so the cap counts real streams.
//! WebSocket and other `Upgrade` requests are passed through: on `101` both upgraded
//! connections are joined byte for byte. Paths and headers are rewritten by [`Route`].

pub mod body;
mod rewrite;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agent_core::document::ServiceInfo;
use agent_core::policy;
use agent_core::wire::TERMINAL_SERVICE;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

pub use self::rewrite::{Route, merge_frame_ancestors, split_proxy_path};
use crate::AppState;
use crate::api::{self, ApiPath};
use crate::auth::{ClientAddr, CurrentOperator};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Role, SessionBrief};
use crate::tunnel::{StreamPermit, Tunnel, TunnelError};

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
        ..
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

    let permit = tunnel.acquire_stream()?;
    let (stream, outcome) = tunnel
        .connect(&service)
        .await
        .map_err(|e| AppError::connect_failed(&service, e))?;
    // With a v2 agent the request goes out before its reply: a refusal shows up as a failed
    // exchange, and the outcome says what the agent said.
    let failed = |what: &str, e: &hyper::Error| match outcome.take() {
        Some(refused) => AppError::connect_failed(&service, refused),
        None => upstream_failed(&service, what, e),
    };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| failed("cannot start HTTP", &e))?;
    tokio::spawn(async move {
        // Ends when the exchange is over (the stream is then shut down) or hands the stream
        // to the upgrade.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxy connection ended with an error");
        }
    });

    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let metrics = state.metrics.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            metrics.bytes_to_agent.inc_by(data.len() as u64);
        }
        frame
    });
    let mut upstream_req = hyper::Request::new(Body::new(body));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = headers;

    let mut resp =
        match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(upstream_req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(failed("gave no answer", &e)),
            Err(_) => {
                return Err(AppError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "service {service:?} did not answer within {} s",
                        RESPONSE_TIMEOUT.as_secs()
                    ),
                ));
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
        // The permit lives as long as the body: the slot is free once the body is delivered
        // or dropped by a client that went away.
        let _slot: &StreamPermit = &permit;
        if let Some(data) = frame.data_ref() {
            metrics.bytes_from_agent.inc_by(data.len() as u64);
        }
        frame
    });
    let mut body = Body::new(body);
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
    permit: StreamPermit,
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

#[cfg(test)]
mod tests;
