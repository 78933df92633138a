//! The operator API's one error type, [`AppError`], and the one place where errors of the
//! store, the tunnels and request parsing become HTTP statuses; plus the request-id middleware
//! whose id every error body and every 5xx log line carries.
//!
//! Bodies are `{"error":{"code":"...","message":"...","request_id":"..."}}`. A 4xx message says
//! what was wrong in words the caller can act on. A 500 body is generic and the detail goes to
//! the log with the request id. 502, 503 and 504 are about the appliance behind the tunnel, not
//! about the relay, so their messages (which service, what the agent answered) are shown.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::store::StoreError;
use crate::tunnel::TunnelError;

/// Header carrying the request id, in both directions.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest incoming `X-Request-Id` that is reused rather than replaced.
pub const MAX_REQUEST_ID: usize = 128;

/// An error answered to an operator.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    /// An error with a status, a stable machine-readable code and a message for the caller.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 (with `WWW-Authenticate: Bearer`): no valid API token.
    pub fn unauthorized(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409: the request clashes with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::CONFLICT, code, message)
    }

    /// 500: a fault of the relay; `detail` is logged, never shown.
    pub fn internal(detail: impl Into<String>) -> AppError {
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// A failure to open `service` through the tunnel for the HTTP proxy: the agent's refusal
    /// (`ERROR <text>` to `CONNECT`) is a bad gateway naming the service, not a client error.
    pub fn connect_failed(service: &str, e: TunnelError) -> AppError {
        match e {
            TunnelError::Agent(text) => AppError::new(
                StatusCode::BAD_GATEWAY,
                "connect_failed",
                format!("the appliance cannot reach service {service:?}: {text}"),
            ),
            TunnelError::Timeout(what) => AppError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "agent_timeout",
                format!("opening service {service:?} timed out: {what}"),
            ),
            other => AppError::from(other),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message (for a 500, the logged detail).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let shown = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                request_id = request_id.as_deref().unwrap_or("-"),
                code = self.code,
                detail = %self.message,
                "request failed"
            );
            match &request_id {
                Some(id) => format!("internal error, see the relay log for request {id}"),
                None => "internal error, see the relay log".to_owned(),
            }
        } else {
            if self.status.is_server_error() {
                tracing::warn!(
                    request_id = request_id.as_deref().unwrap_or("-"),
                    status = self.status.as_u16(),
                    code = self.code,
                    message = %self.message,
                    "request failed at the appliance"
                );
            } else {
                tracing::debug!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
            }
            self.message
        };
        let body = serde_json::json!({
            "error": { "code": self.code, "message": shown, "request_id": request_id }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tether\""),
            );
        }
        resp
    }
}

/// An error and its causes, for the log.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        match e {
            StoreError::NotFound { .. } => AppError::not_found("not_found", e.to_string()),
            StoreError::Conflict(message) => AppError::conflict("conflict", message),
            StoreError::Invalid(message) => AppError::bad_request("invalid_request", message),
            other => AppError::internal(chain(&other)),
        }
    }
}

impl From<TunnelError> for AppError {
    fn from(e: TunnelError) -> AppError {
        match e {
            TunnelError::TooManyStreams { max } => AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "the tunnel already carries {max} streams; close a terminal or a proxied page and retry"
                ),
            ),
            TunnelError::ServiceNotFound(name) => AppError::not_found(
                "service_not_found",
                format!("the appliance does not publish a service named {name:?}"),
            ),
            TunnelError::Agent(text) => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_refused",
                format!("the appliance refused: {text}"),
            ),
            TunnelError::Timeout(what) => {
                AppError::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", what)
            }
            TunnelError::Closed => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "tunnel_closed",
                "the appliance's tunnel closed; retry when it has reconnected",
            ),
            TunnelError::Io(detail) => AppError::new(
                StatusCode::BAD_GATEWAY,
                "tunnel_error",
                format!("the stream to the appliance failed: {detail}"),
            ),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(e: JsonRejection) -> AppError {
        let code = match e.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "invalid_json",
        };
        AppError::new(e.status(), code, e.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(e: QueryRejection) -> AppError {
        AppError::bad_request("invalid_query", e.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(e: PathRejection) -> AppError {
        AppError::bad_request("invalid_path", e.body_text())
    }
}

/// The id of one HTTP request, in the request's extensions and in the handling task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A caller's id if it is short printable token text, else a fresh one.
    fn from_header(value: Option<&HeaderValue>) -> RequestId {
        let sane = value.and_then(|v| v.to_str().ok()).filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_REQUEST_ID
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        });
        match sane {
            Some(s) => RequestId(Arc::from(s)),
            // From the thread's RNG: `Uuid::new_v4` asks the kernel (a system call) each time.
            None => {
                let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                RequestId(Arc::from(uuid.simple().to_string()))
            }
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// The id of the request being handled by this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.0.to_string()).ok()
}

/// Middleware: reuse a sane incoming `X-Request-Id` or make one, expose it to handlers (request
/// extension and task-local, so error bodies carry it) and to logs (span), and echo it in the
/// response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = RequestId::from_header(req.headers().get(&X_REQUEST_ID));
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    resp
}

#[cfg(test)]
mod tests;
