//! Health reports: a session's latest report and its history, and a system's roll-up over the
//! open sessions of its nodes (overall = most severe, PROTOCOL section 5 order).

use agent_core::document::Timestamp;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::sessions::find;
use super::{ApiPath, ts};
use crate::AppState;
use crate::auth::CurrentOperator;
use crate::diagnostics::worst_of;
use crate::error::AppError;
use crate::store::{Role, Session, SessionFilter};

/// One stored report.
#[derive(Debug, Serialize)]
struct HistoryEntry {
    overall_status: String,
    received_at: Timestamp,
    report: serde_json::Value,
}

/// `GET /api/v1/sessions/{id}/diagnostics` (viewer): the latest report and the history,
/// newest first.
pub(super) async fn for_session(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Viewer)?;
    let session = find(&state, &id).await?;
    let history: Vec<HistoryEntry> = state
        .store
        .diagnostics_history(&id)
        .await?
        .into_iter()
        .map(|e| HistoryEntry {
            overall_status: e.overall_status,
            received_at: ts(e.received_at),
            report: e.report,
        })
        .collect();
    let overall = overall_status(&session);
    Ok(Json(serde_json::json!({
        "session_id": session.id,
        "overall_status": overall,
        "diagnostics": session.diagnostics,
        "diagnostics_at": session.diagnostics_at.map(ts),
        "history": history,
    })))
}

/// The overall status of a session's latest report, `None` before its first.
pub(crate) fn overall_status(session: &Session) -> Option<String> {
    session
        .diagnostics
        .as_ref()
        .and_then(|d| d["overall_status"].as_str().map(str::to_owned))
}

/// One node of a system.
#[derive(Debug, Serialize)]
struct NodeView {
    node_id: Option<String>,
    session_id: String,
    session_status: crate::store::SessionStatus,
    overall_status: Option<String>,
    diagnostics: Option<serde_json::Value>,
    diagnostics_at: Option<Timestamp>,
}

/// `GET /api/v1/systems/{id}/diagnostics` (viewer): the latest report of each node's open
/// session; `overall_status` is the most severe of them (`null` when no node has reported).
pub(super) async fn for_system(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Viewer)?;
    let system = state.store.find_system(&id).await?.ok_or_else(|| {
        AppError::not_found("system_not_found", format!("there is no system {id:?}"))
    })?;
    let filter = SessionFilter {
        system: Some(system.id.clone()),
        ..SessionFilter::default()
    };
    let nodes: Vec<NodeView> = state
        .store
        .list_sessions(&filter)
        .await?
        .into_iter()
        .filter(|s| s.status.is_open())
        .map(|s| NodeView {
            overall_status: overall_status(&s),
            node_id: s.node_id,
            session_id: s.id,
            session_status: s.status,
            diagnostics: s.diagnostics,
            diagnostics_at: s.diagnostics_at.map(ts),
        })
        .collect();
    let reported: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.overall_status.as_deref())
        .collect();
    let overall = (!reported.is_empty()).then(|| worst_of(reported.iter().copied()).as_str());
    Ok(Json(serde_json::json!({
        "system_id": system.id,
        "system_name": system.name,
        "overall_status": overall,
        "nodes": nodes,
    })))
}
