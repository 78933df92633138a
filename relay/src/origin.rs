//! Service origins (issue 6, "Opening a service"): with `--proxy-domain D`, every service of
//! every session is served at its own origin `http(s)://<id>.D[:port]/`, so a device's web UI
//! runs at its root with its own cookies and storage, apart from the relay's console and from
//! every other service.
//!
//! * The id is a DNS label of [`SHORT_ID_LEN`] lowercase base32 characters: a keyed hash
//!   (HMAC-SHA256 under a key derived from the data key) of the session id and service name. It
//!   is opaque and valid for any service name, the same for the same service of the same session
//!   (also across relay restarts), and the relay maps it back from memory, or after a restart
//!   by recomputing it over the connected sessions' services (only for a request whose cookie
//!   the relay signed for that label, so strangers cannot make it do that work).
//! * Opening a service ([`open`]: the console's Open link, or
//!   `POST /api/v1/sessions/{id}/services/{name}/open`) issues a one-time token (256 random
//!   bits, `--origin-link-ttl` (60 s), used once, bound to the operator, session and service, kept in
//!   memory as its SHA-256 and compared in constant time) and sends the browser to
//!   `<origin>/__tether/auth?token=…&path=/`. That endpoint trades it for the origin cookie
//!   [`COOKIE`]: host-only, HttpOnly, SameSite=Lax (the first page is a navigation from the
//!   console), Secure under TLS, signed with a derived key (operator id, origin, expiry), so it
//!   also outlives a relay restart. It lasts `--console-session-lifetime`.
//! * Every other request to the origin needs that cookie, and then passes the checks of the
//!   path proxy: the operator exists, is enabled and has the operator role; the session is
//!   open and connected; the service exists. The relay's cookies and any `Authorization` never
//!   go upstream; the service's cookies are host-only on its origin.
//! * Logging out of the console does not end origin cookies: the cookie names the operator, not
//!   the console login (an origin opened through the API with a Bearer token has none). To end
//!   them with the login, the token's grant would carry the console session's id hash, the
//!   cookie would sign it, and `serve` would look the console session up in place of the
//!   operator (one query either way). Closing the support session cuts every origin at once.
//!
//! A refusal on an origin is the API's JSON error, or, to a browser navigating (`Accept:
//! text/html`), a small page with the same message that loads nothing.
//!
//! [`route`] runs before the router: a request whose `Host` is `<id>.D` never reaches the
//! relay's own routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use sha2::Sha256;

use crate::AppState;
use crate::auth::{ClientAddr, CurrentOperator};
use crate::console::auth as console_auth;
use crate::console::view;
use crate::crypto::hmac_sha256 as mac;
use crate::error::AppError;
use crate::proxy::{self, OriginBase, Route};
use crate::store::{Role, Store};
use crate::ticket::{OneTime, Refusal};
use crate::tunnel::Registry;

/// Path on every service origin that trades a token for the origin cookie.
pub const AUTH_PATH: &str = "/__tether/auth";
/// The cookie that lets an operator into one service origin.
pub const COOKIE: &str = "tether_origin";
/// Length of a service origin's DNS label: 128 bits of keyed hash in base32.
pub const SHORT_ID_LEN: usize = 26;
/// Most short ids remembered; past it the map starts again (ids are recomputed on demand).
const MAX_KNOWN: usize = 100_000;
/// Longest token or cookie looked at.
const MAX_CREDENTIAL: usize = 256;
/// The refusal page of a service origin loads nothing, runs nothing and is framed nowhere.
const ERROR_PAGE_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

type HmacSha256 = Hmac<Sha256>;

/// What a token lets in: one operator to one service of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The operator's id.
    pub operator_id: String,
    /// The session.
    pub session_id: String,
    /// The service.
    pub service: String,
    /// Where to go after the login on the origin (an absolute path).
    pub path: String,
}

/// A token's grant and the origin it was issued for.
struct Pending {
    short_id: String,
    grant: Grant,
}

/// Why a token or an origin cookie lets nobody in.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The token is unknown, malformed or already used.
    #[error(
        "this link to the service is not valid (unknown or already used): open the service again from the Tether console"
    )]
    UnknownToken,
    /// The token is older than its lifetime.
    #[error("this link to the service has expired: open the service again from the Tether console")]
    ExpiredToken,
    /// The token was issued for another service origin.
    #[error(
        "this link was issued for another service: open the service again from the Tether console"
    )]
    WrongOrigin,
    /// No origin cookie.
    #[error(
        "no access to this service yet: open it from the Tether console (its Open link logs you in here)"
    )]
    NoCookie,
    /// The cookie is malformed, forged, or for another origin.
    #[error(
        "the access cookie of this service is not valid: open the service again from the Tether console"
    )]
    BadCookie,
    /// The cookie has expired.
    #[error("access to this service has expired: open the service again from the Tether console")]
    ExpiredCookie,
    /// Too many tokens outstanding.
    #[error("too many service links outstanding, retry in a few seconds")]
    Full,
    /// No randomness.
    #[error("cannot generate a token")]
    Random,
}

impl From<Refusal> for OriginError {
    fn from(r: Refusal) -> OriginError {
        match r {
            Refusal::Unknown => OriginError::UnknownToken,
            Refusal::Expired => OriginError::ExpiredToken,
            Refusal::Full => OriginError::Full,
            Refusal::Random => OriginError::Random,
        }
    }
}

impl From<OriginError> for AppError {
    fn from(e: OriginError) -> AppError {
        let status = match e {
            OriginError::Full => StatusCode::SERVICE_UNAVAILABLE,
            OriginError::Random => return AppError::internal(e.to_string()),
            OriginError::NoCookie | OriginError::BadCookie | OriginError::ExpiredCookie => {
                StatusCode::UNAUTHORIZED
            }
            _ => StatusCode::FORBIDDEN,
        };
        let code = match e {
            OriginError::UnknownToken => "token_invalid",
            OriginError::ExpiredToken => "token_expired",
            OriginError::WrongOrigin => "token_wrong_origin",
            OriginError::NoCookie => "origin_login_required",
            OriginError::BadCookie => "origin_cookie_invalid",
            OriginError::ExpiredCookie => "origin_cookie_expired",
            _ => "busy",
        };
        AppError::new(status, code, e.to_string())
    }
}

/// Short ids, tokens and cookies of the service origins.
pub struct Origins {
    id_key: [u8; 32],
    cookie_key: [u8; 32],
    tokens: OneTime<Pending>,
    known: Mutex<HashMap<String, (String, String)>>,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origins").finish_non_exhaustive()
    }
}

impl Origins {
    /// Origins whose ids and cookies are keyed by `key` (derive it from the data key so that
    /// they survive restarts), with tokens that live `ttl`.
    pub fn new(key: [u8; 32], ttl: Duration) -> Origins {
        let derive = |purpose: &[u8]| -> [u8; 32] {
            let mut m = mac(&key);
            m.update(purpose);
            m.finalize().into_bytes().into()
        };
        Origins {
            id_key: derive(b"short id"),
            cookie_key: derive(b"origin cookie"),
            tokens: OneTime::new(ttl),
            known: Mutex::default(),
        }
    }

    fn compute_id(&self, session_id: &str, service: &str) -> String {
        let mut m = mac(&self.id_key);
        m.update(session_id.as_bytes());
        m.update(&[0]);
        m.update(service.as_bytes());
        let digest = m.finalize().into_bytes();
        data_encoding::BASE32_DNSSEC.encode(&digest[..16])
    }

    /// The DNS label of `service` of `session_id` (remembered for [`Origins::resolve`]).
    pub fn short_id(&self, session_id: &str, service: &str) -> String {
        let id = self.compute_id(session_id, service);
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(id.clone(), (session_id.to_owned(), service.to_owned()));
        id
    }

    /// The (session, service) whose label is `short_id`: remembered, or found among the
    /// services of the connected sessions.
    pub fn resolve(&self, short_id: &str, tunnels: &Registry) -> Option<(String, String)> {
        if let Some(found) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(short_id)
        {
            return Some(found.clone());
        }
        for tunnel in tunnels.all() {
            for name in tunnel.services().into_keys() {
                if self.compute_id(tunnel.session_id(), &name) == short_id {
                    self.short_id(tunnel.session_id(), &name);
                    return Some((tunnel.session_id().to_owned(), name));
                }
            }
        }
        None
    }

    /// A new token (64 hex digits) for `grant`, valid from `now` for the lifetime.
    pub fn issue(&self, grant: Grant, now: Instant) -> Result<String, OriginError> {
        let short_id = self.short_id(&grant.session_id, &grant.service);
        Ok(self.tokens.issue(Pending { short_id, grant }, now)?)
    }

    /// Uses up `token` on the origin `short_id` at `now`. A token is gone after any attempt
    /// to use it, successful or not.
    pub fn redeem(&self, token: &str, short_id: &str, now: Instant) -> Result<Grant, OriginError> {
        let found = self.tokens.redeem(token, now)?;
        if found.short_id != short_id {
            return Err(OriginError::WrongOrigin);
        }
        Ok(found.grant)
    }

    fn cookie_mac(&self, operator_id: &str, short_id: &str, expires_ms: i64) -> HmacSha256 {
        let mut m = mac(&self.cookie_key);
        for part in [operator_id, short_id, &expires_ms.to_string()] {
            m.update(part.as_bytes());
            m.update(&[0]);
        }
        m
    }

    /// The origin cookie's value: `<operator id>.<expiry ms>.<MAC>`.
    pub fn cookie_value(&self, operator_id: &str, short_id: &str, expires_ms: i64) -> String {
        let tag = self
            .cookie_mac(operator_id, short_id, expires_ms)
            .finalize()
            .into_bytes();
        format!("{operator_id}.{expires_ms}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The operator id an origin cookie of `short_id` vouches for at `now_ms`.
    pub fn check_cookie(
        &self,
        value: &str,
        short_id: &str,
        now_ms: i64,
    ) -> Result<String, OriginError> {
        if value.len() > MAX_CREDENTIAL {
            return Err(OriginError::BadCookie);
        }
        let mut parts = value.rsplitn(3, '.');
        let (Some(tag), Some(expires), Some(operator_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(OriginError::BadCookie);
        };
        let expires_ms: i64 = expires.parse().map_err(|_| OriginError::BadCookie)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| OriginError::BadCookie)?;
        self.cookie_mac(operator_id, short_id, expires_ms)
            .verify_slice(&tag)
            .map_err(|_| OriginError::BadCookie)?;
        if now_ms >= expires_ms {
            return Err(OriginError::ExpiredCookie);
        }
        Ok(operator_id.to_owned())
    }
}

/// The short id of a `Host` under `domain`, when it names a service origin: the host (port
/// dropped) is `<label>.<domain>` and the label is shaped like a short id. Other hosts under
/// the domain (the relay's own, say) are not service origins.
pub fn origin_label(host: &str, domain: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label = name.strip_suffix(domain)?.strip_suffix('.')?;
    let shaped = label.len() == SHORT_ID_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
    shaped.then(|| label.to_owned())
}

/// The authority a request was sent to (`Host`, or the URI's for HTTP/2).
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

/// The port of an authority (`host:port`, `[v6]:port`), if it names one.
fn port_of(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    (!host.ends_with(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .then_some(port)
}

/// A path to go to after the origin login: an absolute path on the origin, `/` otherwise (never
/// `//host`, which would leave it).
pub fn safe_path(path: Option<&str>) -> String {
    match path {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.bytes().any(|b| b.is_ascii_control()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A service opened for an operator: where to send the browser.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The one-time login URL on the service origin.
    pub url: String,
    /// The service origin (`http(s)://<id>.<domain>[:port]`).
    pub origin: String,
    /// How long the URL works.
    pub expires_in: Duration,
}

/// Opens `service` of session `id` for `who`: a one-time login URL on the service's origin.
/// The scheme and port are those the operator used to reach the relay (`headers`, `peer`).
pub async fn open(
    state: &AppState,
    who: &CurrentOperator,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    id: &str,
    service: &str,
    path: Option<&str>,
) -> Result<Opened, AppError> {
    who.require(Role::Operator)?;
    let Some(domain) = state.config.proxy_domain.as_deref() else {
        return Err(AppError::conflict(
            "no_proxy_domain",
            format!(
                "this relay runs without --proxy-domain, so services have no origins of their own: \
                 use /api/v1/sessions/{id}/proxy/{service}/ instead"
            ),
        ));
    };
    proxy::resolve(state, id, service).await?;
    let grant = Grant {
        operator_id: who.0.id.clone(),
        session_id: id.to_owned(),
        service: service.to_owned(),
        path: safe_path(path),
    };
    let short_id = state.origins.short_id(id, service);
    let token = state.origins.issue(grant, Instant::now())?;
    let scheme = if console_auth::https(state, headers, peer) {
        "https"
    } else {
        "http"
    };
    let port = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(port_of)
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let origin = format!("{scheme}://{short_id}.{domain}{port}");
    Ok(Opened {
        url: format!("{origin}{AUTH_PATH}?token={token}"),
        origin,
        expires_in: state.config.origin_link_ttl,
    })
}

/// Query of [`AUTH_PATH`].
#[derive(Debug, Deserialize)]
struct AuthQuery {
    token: Option<String>,
}

/// Middleware before the router: a request to a service origin is served here, every other
/// request goes on to the relay's routes.
pub async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(domain) = state.config.proxy_domain.as_deref() else {
        return next.run(req).await;
    };
    let host = request_host(req.headers(), req.uri());
    let Some(short_id) = host.as_deref().and_then(|h| origin_label(h, domain)) else {
        return next.run(req).await;
    };
    let secure = console_auth::https(&state, req.headers(), console_auth::peer(req.extensions()));
    let authority = host.unwrap_or_default();
    let page = wants_page(req.headers());
    let mut resp = match serve(&state, &short_id, &authority, secure, req).await {
        Ok(r) => r,
        Err(e) if page => {
            let mut resp = view::error_page(e, true);
            let h = resp.headers_mut();
            console_auth::page_headers(h, ERROR_PAGE_CSP);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => e.into_response(),
    };
    if secure {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// Whether a refusal should be a page: the browser navigates (it takes HTML). Scripts of the
/// service (`fetch`, XHR) get the API's JSON body.
fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

async fn serve(
    state: &AppState,
    short_id: &str,
    authority: &str,
    secure: bool,
    req: Request,
) -> Result<Response, AppError> {
    if req.uri().path() == AUTH_PATH {
        return login(state, short_id, secure, &req);
    }
    let (mut parts, body) = req.into_parts();
    let from = match ClientAddr::from_request_parts(&mut parts, state).await {
        Ok(from) => from,
        Err(never) => match never {},
    };
    let value = console_auth::cookie_value(&parts.headers, COOKIE).ok_or(OriginError::NoCookie)?;
    let operator_id = state.origins.check_cookie(value, short_id, Store::now())?;
    let operator = state
        .store
        .find_operator(&operator_id)
        .await?
        .filter(|o| o.id == operator_id)
        .ok_or(OriginError::BadCookie)?;
    if operator.disabled {
        return Err(AppError::forbidden(format!(
            "operator {:?} is disabled",
            operator.name
        )));
    }
    let who = CurrentOperator(operator);
    who.require(Role::Operator)?;
    // Only now, with a cookie the relay signed for this label: finding an unknown label may
    // take a pass over every connected service, which strangers must not be able to cause.
    let Some((session_id, service)) = state.origins.resolve(short_id, &state.tunnels) else {
        return Err(AppError::not_found(
            "unknown_origin",
            "no service of a connected session has this address: open the service again from \
             the Tether console",
        ));
    };
    let target = proxy::resolve(state, &session_id, &service).await?;
    let route = Route::new("", &target.info);
    let origin = OriginBase {
        scheme: if secure { "https" } else { "http" },
        authority: authority.to_owned(),
    };
    let req = Request::from_parts(parts, body);
    let rest = req.uri().path().to_owned();
    proxy::forward(state, &who, from, target, route, &rest, Some(origin), req).await
}

/// `GET /__tether/auth?token=…` on a service origin: the token becomes the origin cookie and
/// the browser goes on to the page it asked for.
fn login(
    state: &AppState,
    short_id: &str,
    secure: bool,
    req: &Request,
) -> Result<Response, AppError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(AppError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{AUTH_PATH} takes GET"),
        ));
    }
    let query = axum::extract::Query::<AuthQuery>::try_from_uri(req.uri())
        .map_err(|e| AppError::bad_request("bad_query", e.body_text()))?;
    let token = query.0.token.unwrap_or_default();
    if token.is_empty() || token.len() > MAX_CREDENTIAL {
        return Err(OriginError::UnknownToken.into());
    }
    let grant = state.origins.redeem(&token, short_id, Instant::now())?;
    let lifetime = state.config.console_session_lifetime;
    let expires = Store::now().saturating_add(console_auth::millis(lifetime));
    let value = state
        .origins
        .cookie_value(&grant.operator_id, short_id, expires);
    let secure_attr = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure_attr}",
        lifetime.as_secs()
    );
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    let location = HeaderValue::from_str(&grant.path)
        .map_err(|_| AppError::internal("an unchecked path in an origin token"))?;
    h.insert(header::LOCATION, location);
    let cookie = HeaderValue::from_str(&cookie)
        .map_err(|_| AppError::internal("an origin cookie that is no header value"))?;
    h.insert(header::SET_COOKIE, cookie);
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests;
