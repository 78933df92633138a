//! Console logins: the `tether_session` cookie (256 random bits; the store keeps only its
//! SHA-256), the per-login CSRF token, the `Origin` check, the security headers of every console
//! response, and the cookie login that the API accepts beside Bearer tokens.
//!
//! State-changing requests pass [`guard`]: a cross-origin `Origin` (or `Sec-Fetch-Site`) is
//! refused, then the request must carry the login's CSRF token, in the `X-CSRF-Token` header
//! (htmx and scripts) or the `csrf` form field (plain forms), compared in constant time. The
//! login form itself is protected the same way by a short-lived double-submit cookie.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use super::view::{Nav, PageError};
use crate::AppState;
use crate::auth::{ClientAddr, CurrentOperator, client_ip};
use crate::crypto::{self, CryptoError};
use crate::error::AppError;
use crate::store::{ConsoleSession, Operator, Role, Store};

/// The login cookie.
pub const COOKIE: &str = "tether_session";
/// The double-submit cookie of the login form.
pub const LOGIN_COOKIE: &str = "tether_login_csrf";
/// Header carrying the CSRF token (htmx sends it on every request).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Length of a cookie value or CSRF token: 32 random bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;
/// Largest form body read to find its CSRF field.
pub const MAX_FORM: usize = 64 * 1024;
/// Lifetime of the login form's double-submit cookie, in seconds.
const LOGIN_COOKIE_SECONDS: u64 = 3600;

/// Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' \
     data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// 32 random bytes as unpadded base64url (43 characters).
pub fn new_token() -> Result<String, CryptoError> {
    let bytes: [u8; 32] = crypto::random_bytes()?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The value of cookie `name`, if it is present and shaped like one of our tokens.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_value(headers, name).filter(|v| is_token(v))
}

/// The value of cookie `name`, if it is present.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_token(v: &str) -> bool {
    v.len() == TOKEN_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn token_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Whether the request came from a page of this relay: an `Origin` must name the host the
/// request was sent to; without one, `Sec-Fetch-Site` must not say another site sent it.
pub fn same_origin(headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
        }
        None => !matches!(
            headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
            Some("cross-site" | "same-site")
        ),
    }
}

/// Whether the operator reaches the relay over HTTPS: `--secure-cookies`, or a trusted proxy's
/// `X-Forwarded-Proto: https`.
pub fn https(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
    if state.config.secure_cookies {
        return true;
    }
    let Some(peer) = peer else { return false };
    state.config.is_trusted_proxy(peer.ip().to_canonical())
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn peer_of(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(p)| *p)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure over HTTPS.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{secure}")
}

/// The login form's double-submit cookie.
pub fn login_cookie(token: &str, secure: bool) -> String {
    set_cookie(LOGIN_COOKIE, token, "/login", LOGIN_COOKIE_SECONDS, secure)
}

/// The live console login the request's cookie names, if any.
pub async fn lookup(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<ConsoleSession>, AppError> {
    let Some(value) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let idle = millis(state.config.console_idle_timeout);
    Ok(state
        .store
        .console_session(&crypto::hash_token(value), idle, Store::now())
        .await?)
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Starts a console login for `operator`; returns its `Set-Cookie` value.
pub async fn start(
    state: &AppState,
    operator: &Operator,
    secure: bool,
) -> Result<String, AppError> {
    let value = new_token().map_err(|e| AppError::internal(format!("session id: {e}")))?;
    let csrf = new_token().map_err(|e| AppError::internal(format!("csrf token: {e}")))?;
    let lifetime = state.config.console_session_lifetime;
    state
        .store
        .create_console_session(
            &operator.id,
            &crypto::hash_token(&value),
            &csrf,
            Store::now().saturating_add(millis(lifetime)),
        )
        .await?;
    Ok(set_cookie(COOKIE, &value, "/", lifetime.as_secs(), secure))
}

/// The `Set-Cookie` value that deletes cookie `name` at `path`.
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    set_cookie(name, "", path, 0, secure)
}

/// The operator of a request that the API got without a Bearer token, from the console's
/// cookie; a state-changing request must also pass the `Origin` check and carry the login's
/// CSRF token in `X-CSRF-Token`. `None` when there is no console cookie.
pub async fn api_operator(parts: &Parts, state: &AppState) -> Result<Option<Operator>, AppError> {
    if cookie(&parts.headers, COOKIE).is_none() {
        return Ok(None);
    }
    let Some(session) = lookup(state, &parts.headers).await? else {
        return Err(AppError::unauthorized(
            "the console login has ended: log in again",
        ));
    };
    if !parts.method.is_safe() {
        if !same_origin(&parts.headers) {
            return Err(AppError::forbidden("cross-origin request refused"));
        }
        let given = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !token_matches(&session.csrf_token, given) {
            return Err(AppError::forbidden(
                "missing or wrong X-CSRF-Token: reload the console page and retry",
            ));
        }
    }
    Ok(Some(session.operator))
}

/// A logged-in console user; pages redirect strangers to the login page.
#[derive(Debug, Clone)]
pub struct Console {
    /// The login.
    pub session: ConsoleSession,
    /// The believed client address.
    pub from: ClientAddr,
}

impl Console {
    /// The operator, as the API's functions take it.
    pub fn who(&self) -> CurrentOperator {
        CurrentOperator(self.session.operator.clone())
    }

    /// Ok if the operator's role includes `need`; a 403 page otherwise.
    pub fn require(&self, need: Role) -> Result<(), PageError> {
        self.who().require(need).map_err(PageError::from)
    }

    /// The page header for this operator, with `current` marked.
    pub fn nav(&self, current: &'static str) -> Nav {
        Nav::new(&self.session, current)
    }
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Console, Response> {
        let from = match ClientAddr::from_request_parts(parts, state).await {
            Ok(from) => from,
            Err(never) => match never {},
        };
        if let Some(session) = parts.extensions.get::<ConsoleSession>() {
            return Ok(Console {
                session: session.clone(),
                from,
            });
        }
        match lookup(state, &parts.headers).await {
            Ok(Some(session)) => Ok(Console { session, from }),
            Ok(None) => Err(login_required(
                &parts.method,
                &parts.headers,
                parts.uri.path_and_query(),
            )),
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// The way to the login page: htmx is told to load it, a page GET comes back after login.
fn login_required(
    method: &Method,
    headers: &HeaderMap,
    here: Option<&axum::http::uri::PathAndQuery>,
) -> Response {
    if headers.contains_key("hx-request") {
        let mut resp = StatusCode::UNAUTHORIZED.into_response();
        resp.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
        return resp;
    }
    let target = match here {
        Some(pq) if *method == Method::GET && pq.as_str() != "/" => {
            format!("/login?next={}", urlencode(pq.as_str()))
        }
        _ => "/login".to_owned(),
    };
    axum::response::Redirect::to(&target).into_response()
}

/// Percent-encodes everything but unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Middleware on every console route: state-changing requests must come from a console page
/// (`Origin`) and carry the CSRF token of the login (of the login form, for `POST /login`).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method().is_safe() {
        return next.run(req).await;
    }
    if !same_origin(req.headers()) {
        return PageError::from(AppError::forbidden(
            "cross-origin request refused: use the console's own pages",
        ))
        .into_response();
    }
    let (mut parts, body) = req.into_parts();
    let expected = if parts.uri.path() == "/login" {
        cookie(&parts.headers, LOGIN_COOKIE).map(str::to_owned)
    } else {
        match lookup(&state, &parts.headers).await {
            Ok(Some(session)) => {
                let token = session.csrf_token.clone();
                parts.extensions.insert(session);
                Some(token)
            }
            Ok(None) => {
                return login_required(&parts.method, &parts.headers, None);
            }
            Err(e) => return PageError::from(e).into_response(),
        }
    };
    let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return PageError::from(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the form is larger than {MAX_FORM} bytes"),
            ))
            .into_response();
        }
    };
    let header = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let given = header.or_else(|| form_field(&bytes, CSRF_FIELD));
    let ok = match (&expected, &given) {
        (Some(e), Some(g)) => token_matches(e, g),
        _ => false,
    };
    if !ok {
        let message = if parts.uri.path() == "/login" {
            "the login form has expired: reload the page and log in again"
        } else {
            "missing or wrong CSRF token: reload the page and retry"
        };
        return PageError::from(AppError::forbidden(message)).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A field of a urlencoded form whose value needs no decoding (our tokens).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Middleware on every console response: CSP, nosniff, no framing, no caching of pages that
/// may show secrets, and HSTS over HTTPS.
pub async fn headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let secure = https(&state, req.headers(), peer_of(req.extensions()));
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    page_headers(h, CSP);
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// The headers of a relay page under `csp`: no sniffing, no framing, no referrer to others.
pub fn page_headers(h: &mut HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Whether the request came through htmx (answer with a fragment).
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// The client address of a login attempt, as the lockout counts it.
pub fn addr_key(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    peer.map(|p| client_ip(p, headers, &state.config.trusted_proxies).to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The peer address of a request (None when the router runs without connection info).
pub fn peer(parts_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    peer_of(parts_extensions)
}
