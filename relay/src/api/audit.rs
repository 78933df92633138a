//! The audit trail, for admins.

use agent_core::document::Timestamp;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{ApiQuery, ts};
use crate::AppState;
use crate::auth::CurrentOperator;
use crate::error::AppError;
use crate::store::{AuditFilter, AuditRecord, Role};

/// Most records one request returns.
pub const MAX_AUDIT_LIMIT: i64 = 1000;
/// Records returned when the request does not say.
pub const DEFAULT_AUDIT_LIMIT: i64 = 100;

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    pub(crate) session: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) limit: Option<i64>,
}

impl AuditQuery {
    /// The store filter, with at most `max` records; 400 for a limit out of range.
    pub(crate) fn filter(self, max: i64) -> Result<AuditFilter, AppError> {
        let limit = self.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
        if !(1..=max).contains(&limit) {
            return Err(AppError::bad_request(
                "invalid_limit",
                format!("limit must be from 1 to {max}, not {limit}"),
            ));
        }
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(AuditFilter {
            session_id: nonempty(self.session),
            actor: nonempty(self.actor),
            action: nonempty(self.action),
            limit: Some(limit),
        })
    }
}

/// One audit record as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    id: i64,
    at: Timestamp,
    actor: String,
    action: String,
    system_id: Option<String>,
    session_id: Option<String>,
    service: Option<String>,
    remote_addr: Option<String>,
    detail: Option<serde_json::Value>,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> AuditView {
        AuditView {
            id: r.id,
            at: ts(r.at),
            actor: r.actor,
            action: r.action,
            system_id: r.system_id,
            session_id: r.session_id,
            service: r.service,
            remote_addr: r.remote_addr,
            detail: r.detail,
        }
    }
}

/// `GET /api/v1/audit?session=&actor=&action=&limit=` (admin): newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Admin)?;
    let filter = q.filter(MAX_AUDIT_LIMIT)?;
    let records: Vec<AuditView> = state
        .store
        .list_audit(&filter)
        .await?
        .into_iter()
        .map(AuditView::from)
        .collect();
    Ok(Json(serde_json::json!({ "audit": records })))
}
