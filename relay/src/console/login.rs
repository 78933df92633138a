//! Logging in and out, the lockout, and the operator's own password change.
//!
//! Five failed logins for one operator name within 15 minutes lock that name for 15 minutes;
//! twenty from one client address within 15 minutes refuse that address for the rest of the
//! window. Both are counted in the store, so they hold across restarts and relays. Every login,
//! failed login, logout and password change is audited.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{self, Console, LOGIN_COOKIE};
use super::view::{Nav, PageError, render_status, when};
use crate::AppState;
use crate::auth::ClientAddr;
use crate::crypto::Secret;
use crate::error::AppError;
use crate::store::{AuditEntry, MAX_NAME_LEN, Millis, Role, Store};

/// Failed logins for one name that lock it.
pub const LOCKOUT_FAILURES: usize = 5;
/// Window in which those failures must fall.
pub const LOCKOUT_WINDOW_MS: Millis = 15 * 60_000;
/// How long a name stays locked.
pub const LOCKOUT_MS: Millis = 15 * 60_000;
/// Failed logins from one address, per [`LOCKOUT_WINDOW_MS`], before it is refused.
pub const ADDR_FAILURES: usize = 20;
/// Shortest new password.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (argon2 work is bounded by the input too).
pub const MAX_PASSWORD: usize = 1024;

/// Until when a name with these failure times (oldest first) is locked, if it is.
pub fn locked_until(failures: &[Millis]) -> Option<Millis> {
    failures
        .windows(LOCKOUT_FAILURES)
        .filter(|w| w[LOCKOUT_FAILURES - 1] - w[0] <= LOCKOUT_WINDOW_MS)
        .map(|w| w[LOCKOUT_FAILURES - 1] + LOCKOUT_MS)
        .max()
}

/// Minutes from `now` to `until`, rounded up, at least 1.
fn minutes_until(until: Millis, now: Millis) -> i64 {
    ((until - now + 59_999) / 60_000).max(1)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    name: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// A local path to return to after login (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/systems".to_owned(),
    }
}

/// Renders the login form with a fresh double-submit token.
fn login_page(
    state: &AppState,
    parts_headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
    status: StatusCode,
    page: LoginPage,
) -> Result<Response, PageError> {
    let secure = auth::https(state, parts_headers, peer);
    let mut resp = render_status(status, &page)?;
    let cookie = auth::login_cookie(&page.csrf, secure);
    let value = HeaderValue::from_str(&cookie)
        .map_err(|e| AppError::internal(format!("login cookie: {e}")))?;
    resp.headers_mut().append(header::SET_COOKIE, value);
    Ok(resp)
}

/// `GET /login`: the form, or the systems page when already logged in.
pub(super) async fn form(
    State(state): State<AppState>,
    parts: Parts,
    Query(q): Query<NextQuery>,
) -> Result<Response, PageError> {
    if auth::lookup(&state, &parts.headers).await?.is_some() {
        return Ok(Redirect::to(&safe_next(q.next.as_deref())).into_response());
    }
    let csrf = auth::new_token().map_err(|e| AppError::internal(format!("csrf token: {e}")))?;
    let page = LoginPage {
        csrf,
        next: safe_next(q.next.as_deref()),
        name: String::new(),
        error: None,
    };
    login_page(
        &state,
        &parts.headers,
        auth::peer(&parts.extensions),
        StatusCode::OK,
        page,
    )
}

/// The login form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// `POST /login`.
pub(super) async fn submit(
    State(state): State<AppState>,
    parts: Parts,
    from: ClientAddr,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let peer = auth::peer(&parts.extensions);
    let secure = auth::https(&state, &parts.headers, peer);
    let name: String = form.name.trim().chars().take(MAX_NAME_LEN).collect();
    let password = Secret::new(form.password);
    let next = safe_next(form.next.as_deref());
    let refuse = |status: StatusCode, message: String| -> Result<Response, PageError> {
        let csrf = auth::new_token().map_err(|e| AppError::internal(format!("csrf token: {e}")))?;
        let page = LoginPage {
            csrf,
            next: next.clone(),
            name: name.clone(),
            error: Some(message),
        };
        login_page(&state, &parts.headers, peer, status, page)
    };
    let addr = auth::addr_key(&state, &parts.headers, peer);
    let now = Store::now();
    let from_addr = state
        .store
        .login_failures_from(&addr, now - LOCKOUT_WINDOW_MS)
        .await?;
    if from_addr.len() >= ADDR_FAILURES {
        let until = from_addr[from_addr.len() - ADDR_FAILURES] + LOCKOUT_WINDOW_MS;
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed logins from your address. Try again in {} minutes.",
                minutes_until(until, now)
            ),
        );
    }
    let since = now - LOCKOUT_WINDOW_MS - LOCKOUT_MS;
    let failures = state.store.login_failures_for_name(&name, since).await?;
    if let Some(until) = locked_until(&failures).filter(|u| *u > now) {
        failed(&state, &name, from, "locked").await;
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "This account is locked after {LOCKOUT_FAILURES} failed logins. Try again in {} minutes (at {}), or ask an admin.",
                minutes_until(until, now),
                when(until)
            ),
        );
    }
    if password.expose().len() > MAX_PASSWORD {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong name or password.".to_owned(),
        );
    }
    let operator = state
        .store
        .verify_operator_password(&name, password.expose())
        .await?;
    let Some(operator) = operator else {
        state
            .store
            .record_login_failure(&name, &addr, since)
            .await?;
        failed(&state, &name, from, "wrong name or password").await;
        let mut failures = failures;
        failures.push(Store::now());
        if let Some(until) = locked_until(&failures) {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Wrong name or password. After {LOCKOUT_FAILURES} failed logins this account is locked for {} minutes (until {}).",
                    LOCKOUT_MS / 60_000,
                    when(until)
                ),
            );
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong name or password (or the operator is disabled).".to_owned(),
        );
    };
    state.store.clear_login_failures(&operator.name).await?;
    let cookie = auth::start(&state, &operator, secure).await?;
    record(&state, &operator.name, from, "login", None).await;
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    for value in [cookie, auth::clear_cookie(LOGIN_COOKIE, "/login", secure)] {
        let value = HeaderValue::from_str(&value)
            .map_err(|e| AppError::internal(format!("session cookie: {e}")))?;
        h.append(header::SET_COOKIE, value);
    }
    Ok(resp)
}

/// Audits a failed login; the name is what was typed (cut to the longest operator name).
async fn failed(state: &AppState, name: &str, from: ClientAddr, reason: &str) {
    let detail = serde_json::json!({ "name": name, "reason": reason });
    record(state, name, from, "login_failed", Some(detail)).await;
}

/// Writes an audit record of the console; a failure is logged (the action happened).
pub(super) async fn record(
    state: &AppState,
    actor: &str,
    from: ClientAddr,
    action: &str,
    detail: Option<serde_json::Value>,
) {
    let entry = AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        remote_addr: from.audit_text(),
        detail,
        ..AuditEntry::default()
    };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!(error = %e, "cannot write audit record");
    }
}

/// `POST /logout`.
pub(super) async fn logout(
    State(state): State<AppState>,
    parts: Parts,
    console: Console,
) -> Result<Response, PageError> {
    state
        .store
        .end_console_session(&console.session.id_hash)
        .await?;
    record(
        &state,
        &console.session.operator.name,
        console.from,
        "logout",
        None,
    )
    .await;
    let secure = auth::https(&state, &parts.headers, auth::peer(&parts.extensions));
    let mut resp = Redirect::to("/login").into_response();
    let value = HeaderValue::from_str(&auth::clear_cookie(auth::COOKIE, "/", secure))
        .map_err(|e| AppError::internal(format!("session cookie: {e}")))?;
    resp.headers_mut().append(header::SET_COOKIE, value);
    Ok(resp)
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    since: String,
    expires: String,
    message: Option<String>,
    error: Option<String>,
}

fn account_page(
    console: &Console,
    status: StatusCode,
    message: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let page = AccountPage {
        nav: console.nav("account"),
        since: when(console.session.created_at),
        expires: when(console.session.expires_at),
        message,
        error,
    };
    render_status(status, &page)
}

/// `GET /account` (viewer).
pub(super) async fn account(console: Console) -> Result<Response, PageError> {
    console.require(Role::Viewer)?;
    account_page(&console, StatusCode::OK, None, None)
}

/// The password change form.
#[derive(Deserialize)]
pub(super) struct PasswordForm {
    current: String,
    new: String,
    confirm: String,
}

/// What is wrong with a new password, if anything.
pub fn check_new_password(current: &str, new: &str, confirm: &str) -> Result<(), String> {
    let len = new.chars().count();
    if new != confirm {
        return Err("The new password and its confirmation differ.".into());
    }
    if len < MIN_PASSWORD {
        return Err(format!(
            "The new password must have at least {MIN_PASSWORD} characters."
        ));
    }
    if new.len() > MAX_PASSWORD {
        return Err(format!(
            "The new password must be at most {MAX_PASSWORD} bytes."
        ));
    }
    if new == current {
        return Err("The new password must differ from the current one.".into());
    }
    Ok(())
}

/// `POST /account/password` (viewer): the current password, then the new one twice. Other
/// logins of the operator end.
pub(super) async fn change_password(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    console.require(Role::Viewer)?;
    let operator = &console.session.operator;
    let current = Secret::new(form.current);
    let new = Secret::new(form.new);
    let confirm = Secret::new(form.confirm);
    let ok = current.expose().len() <= MAX_PASSWORD
        && state
            .store
            .verify_operator_password(&operator.name, current.expose())
            .await?
            .is_some();
    if !ok {
        return account_page(
            &console,
            StatusCode::BAD_REQUEST,
            None,
            Some("The current password is wrong.".into()),
        );
    }
    if let Err(e) = check_new_password(current.expose(), new.expose(), confirm.expose()) {
        return account_page(&console, StatusCode::BAD_REQUEST, None, Some(e));
    }
    state
        .store
        .set_operator_password(&operator.id, &new)
        .await?;
    let ended = state
        .store
        .end_console_sessions_of(&operator.id, Some(&console.session.id_hash))
        .await?;
    record(
        &state,
        &operator.name,
        console.from,
        "password_change",
        Some(serde_json::json!({ "other_logins_ended": ended })),
    )
    .await;
    account_page(
        &console,
        StatusCode::OK,
        Some("Password changed. Your other logins were ended.".into()),
        None,
    )
}
