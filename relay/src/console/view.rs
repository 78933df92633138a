//! What every page shares: the header ([`Nav`]), rendering a template into a response, the
//! error page ([`PageError`]), and how times and statuses are shown.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::auth::role_allows;
use crate::error::AppError;
use crate::store::{ConsoleSession, Millis, Role};

/// The page header: who is logged in, what they may do, the CSRF token for forms.
#[derive(Debug, Clone)]
pub struct Nav {
    pub name: String,
    pub role: String,
    /// May act on sessions (operator role or above).
    pub operator: bool,
    /// Admin pages are shown.
    pub admin: bool,
    pub csrf: String,
    /// The current page, marked in the navigation.
    pub current: &'static str,
}

impl Nav {
    /// The header for a login.
    pub fn new(session: &ConsoleSession, current: &'static str) -> Nav {
        let role = session.operator.role;
        Nav {
            name: session.operator.name.clone(),
            role: role.to_string(),
            operator: role_allows(role, Role::Operator),
            admin: role_allows(role, Role::Admin),
            csrf: session.csrf_token.clone(),
            current,
        }
    }

    /// The `hx-headers` attribute value that sends the CSRF token with every htmx request.
    pub fn hx_headers(&self) -> String {
        format!("{{\"X-CSRF-Token\":\"{}\"}}", self.csrf)
    }
}

/// Renders a template as an HTML response.
pub fn render(template: &impl Template) -> Result<Response, PageError> {
    render_status(StatusCode::OK, template)
}

/// Renders a template as an HTML response with `status`.
pub fn render_status(status: StatusCode, template: &impl Template) -> Result<Response, PageError> {
    let html = template
        .render()
        .map_err(|e| AppError::internal(format!("cannot render a console page: {e}")))?;
    Ok((status, Html(html)).into_response())
}

/// An error shown as a page (or, to htmx, a fragment that `console.js` shows).
#[derive(Debug)]
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> PageError {
        PageError(e)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> PageError {
        PageError(AppError::from(e))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
    /// Loads nothing and links nowhere: for a service origin, whose `/assets/` and `/systems`
    /// are the service's own paths.
    bare: bool,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(self.0, false)
    }
}

/// `error` as an HTML page with its status; `bare` for a page on a service origin.
pub fn error_page(error: AppError, bare: bool) -> Response {
    let status = error.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        // The API's error response logs the detail with the request id; show the same
        // generic words in a page.
        let logged = error.into_response();
        let page = ErrorPage {
            status: 500,
            reason: "Internal error",
            message: "internal error, see the relay log",
            bare,
        };
        return page
            .render()
            .map(|html| (logged.status(), Html(html)).into_response())
            .unwrap_or_else(|_| logged);
    }
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message: error.message(),
        bare,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => error.into_response(),
    }
}

/// A stored time as `2026-12-02 05:19:41 UTC`.
pub fn when(ms: Millis) -> String {
    let text = agent_core::document::Timestamp::from_unix_millis(ms).to_string();
    let mut s = text.replacen('T', " ", 1);
    if let Some(dot) = s.find('.') {
        s.truncate(dot);
    }
    s.trim_end_matches('Z').to_owned() + " UTC"
}

/// An optional stored time, `—` when absent.
pub fn when_opt(ms: Option<Millis>) -> String {
    ms.map(when).unwrap_or_else(|| "—".to_owned())
}

/// The CSS class of a status dot: green ok, amber warning, red critical/error/timeout, grey
/// unknown or no report.
pub fn dot(status: Option<&str>) -> &'static str {
    match status {
        Some("ok") => "ok",
        Some("warning") => "warn",
        Some("critical" | "error" | "timeout") => "bad",
        _ => "none",
    }
}

/// Words for a status dot (its accessible label).
pub fn dot_label(status: Option<&str>) -> String {
    match status {
        Some(s) => s.to_owned(),
        None => "no report".to_owned(),
    }
}
