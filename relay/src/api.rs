//! The operator REST API under `/api/v1`, plus `/healthz` and `/metrics`.
//!
//! Every `/api/v1` route needs `Authorization: Bearer <API token>` and a role (viewer reads,
//! operator acts, admin reads the audit trail). Bodies are JSON; errors are
//! `{"error":{"code","message","request_id"}}` ([`crate::error`]). **Every timestamp is an RFC
//! 3339 UTC string** (`2026-11-22T21:47:19.123Z`), `null` when absent. Service lists are always
//! an object keyed by service name.
//!
//! | method | path | role |
//! |---|---|---|
//! | GET | `/api/v1/systems` | viewer |
//! | GET | `/api/v1/sessions?status=&system=` | viewer |
//! | GET | `/api/v1/sessions/{id}` | viewer |
//! | PATCH | `/api/v1/sessions/{id}` `{"extend_hours": n}` | operator |
//! | DELETE | `/api/v1/sessions/{id}` | operator |
//! | GET | `/api/v1/sessions/{id}/services` | viewer |
//! | POST | `/api/v1/sessions/{id}/services` | operator |
//! | DELETE | `/api/v1/sessions/{id}/services/{name}` | operator |
//! | POST | `/api/v1/sessions/{id}/services/{name}/open` → `{"url","origin","expires_in"}` | operator |
//! | ANY | `/api/v1/sessions/{id}/proxy/{service}[/{path}]` | operator |
//! | GET | `/api/v1/audit?session=&actor=&action=&limit=` | admin |
//! | GET | `/api/v1/sessions/{id}/diagnostics`, `/api/v1/systems/{id}/diagnostics` | viewer |
//! | GET | `/healthz`, `/metrics` | none |

pub(crate) mod audit;
pub(crate) mod diagnostics;
pub(crate) mod services;
pub(crate) mod sessions;
pub(crate) mod systems;

pub(crate) use self::sessions::connected;

use agent_core::document::Timestamp;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Json, Path, Query, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::{ClientAddr, CurrentOperator};
use crate::error::AppError;
use crate::proxy;
use crate::store::{AuditEntry, Millis};

/// Every operator route, `/healthz` and `/metrics`.
pub fn router() -> Router<AppState> {
    let proxied = any(proxy::handle);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/systems", get(systems::list))
        .route("/api/v1/sessions", get(sessions::list))
        .route(
            "/api/v1/sessions/{id}",
            get(sessions::show)
                .patch(sessions::extend)
                .delete(sessions::close),
        )
        .route(
            "/api/v1/sessions/{id}/services",
            get(services::list).post(services::add),
        )
        .route(
            "/api/v1/sessions/{id}/services/{name}",
            delete(services::remove),
        )
        .route(
            "/api/v1/sessions/{id}/services/{name}/open",
            post(services::open),
        )
        .route("/api/v1/sessions/{id}/proxy/{service}", proxied.clone())
        .route("/api/v1/sessions/{id}/proxy/{service}/", proxied.clone())
        .route("/api/v1/sessions/{id}/proxy/{service}/{*path}", proxied)
        .route("/api/v1/audit", get(audit::list))
        .route(
            "/api/v1/sessions/{id}/diagnostics",
            get(diagnostics::for_session),
        )
        .route(
            "/api/v1/systems/{id}/diagnostics",
            get(diagnostics::for_system),
        )
}

/// Fallback for unknown paths, in the API's error format (the lead may mount it with
/// `Router::fallback`).
pub async fn not_found() -> AppError {
    AppError::not_found("no_route", "no such API endpoint")
}

/// `GET /healthz`: ok when the database answers.
async fn healthz(State(state): State<AppState>) -> Result<Response, AppError> {
    let probe = crate::store::AuditFilter {
        limit: Some(0),
        ..Default::default()
    };
    if let Err(e) = state.store.list_audit(&probe).await {
        tracing::error!(error = %e, "health check: the database does not answer");
        return Err(AppError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the relay's database does not answer",
        ));
    }
    Ok(Json(serde_json::json!({ "status": "ok", "tunnels": state.tunnels.len() })).into_response())
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.store).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// RFC 3339 text of a stored time.
fn ts(ms: Millis) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

/// Write an audit record; a failure is logged, never shown (the action itself happened).
pub(crate) async fn audit(
    state: &AppState,
    who: &CurrentOperator,
    from: ClientAddr,
    entry: AuditEntry,
) {
    let entry = AuditEntry {
        actor: who.name().to_owned(),
        remote_addr: from.audit_text(),
        ..entry
    };
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!(error = %e, "cannot write audit record");
    }
}

/// `Json` whose rejections are [`AppError`]s.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<T>::from_request(req, state)
            .await
            .map_err(|e: JsonRejection| AppError::from(e))?;
        Ok(ApiJson(value))
    }
}

/// `Path` whose rejections are [`AppError`]s.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| AppError::from(e))?;
        Ok(ApiPath(value))
    }
}

/// `Query` whose rejections are [`AppError`]s.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| AppError::from(e))?;
        Ok(ApiQuery(value))
    }
}

#[cfg(test)]
pub(crate) mod tests;
