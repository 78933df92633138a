//! Sessions: list, show, extend, close; and the lookups every session-scoped endpoint shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_core::document::{Manifest, ServiceInfo, Timestamp};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiPath, ApiQuery, audit, ts};
use crate::AppState;
use crate::auth::{ClientAddr, CurrentOperator};
use crate::error::AppError;
use crate::store::{
    AuditEntry, CloseReason, Role, Session, SessionBrief, SessionFilter, SessionStatus,
};
use crate::tunnel::Tunnel;

/// A session as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    id: String,
    system_id: String,
    system_name: String,
    node_id: Option<String>,
    status: SessionStatus,
    /// Whether the appliance's tunnel is up now.
    connected: bool,
    connected_at: Option<Timestamp>,
    /// Whether the connected agent offers a terminal (false while disconnected).
    terminal_available: bool,
    started_at: Timestamp,
    expires_at: Timestamp,
    closed_at: Option<Timestamp>,
    closed_by: Option<CloseReason>,
    services_at: Option<Timestamp>,
    diagnostics_at: Option<Timestamp>,
    has_users: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl SessionView {
    pub(crate) fn new(s: &Session, tunnel: Option<&Tunnel>) -> SessionView {
        SessionView {
            id: s.id.clone(),
            system_id: s.system_id.clone(),
            system_name: s.system_name.clone(),
            node_id: s.node_id.clone(),
            status: s.status,
            connected: tunnel.is_some(),
            connected_at: tunnel.map(|t| ts(t.connected_at())),
            terminal_available: tunnel.is_some_and(Tunnel::terminal_available),
            started_at: ts(s.started_at),
            expires_at: ts(s.expires_at),
            closed_at: s.closed_at.map(ts),
            closed_by: s.closed_by,
            services_at: s.services_at.map(ts),
            diagnostics_at: s.diagnostics_at.map(ts),
            has_users: s.has_users,
            created_at: ts(s.created_at),
            updated_at: ts(s.updated_at),
        }
    }
}

/// A session with its services and last diagnostics report.
#[derive(Debug, Serialize)]
struct SessionDetail {
    #[serde(flatten)]
    session: SessionView,
    services: BTreeMap<String, ServiceInfo>,
    diagnostics: Option<serde_json::Value>,
}

/// The session `id`, 404 if there is none.
pub(crate) async fn find(state: &AppState, id: &str) -> Result<Session, AppError> {
    state
        .store
        .get_session(id)
        .await?
        .ok_or_else(|| no_session(id))
}

fn no_session(id: &str) -> AppError {
    AppError::not_found("session_not_found", format!("there is no session {id:?}"))
}

/// The open session `id` and its live tunnel: 404 unknown, 409 ended or not connected.
pub(crate) async fn connected(
    state: &AppState,
    id: &str,
) -> Result<(SessionBrief, Arc<Tunnel>), AppError> {
    let session = state
        .store
        .session_brief(id)
        .await?
        .ok_or_else(|| no_session(id))?;
    if !session.status.is_open() {
        return Err(AppError::conflict(
            "session_closed",
            format!("session {id} is {}", session.status),
        ));
    }
    match state.tunnels.by_session(id) {
        Some(tunnel) => Ok((session, tunnel)),
        None => Err(AppError::conflict(
            "not_connected",
            format!(
                "the appliance of session {id} is not connected now; retry when it has reconnected"
            ),
        )),
    }
}

/// The session's services: live from the tunnel when connected, else the last stored manifest.
pub(crate) fn services_of(
    session: &Session,
    tunnel: Option<&Tunnel>,
) -> BTreeMap<String, ServiceInfo> {
    if let Some(t) = tunnel {
        return t.services();
    }
    session
        .services
        .as_ref()
        .and_then(|v| serde_json::from_value::<Manifest>(v.clone()).ok())
        .map(|m| m.services)
        .unwrap_or_default()
}

/// Query of `GET /sessions`, as pairs so that `status` may repeat.
pub(crate) type Pairs = Vec<(String, String)>;

/// The filter of `GET /sessions`: `status` (repeated or comma-separated) and `system` (id or
/// name).
pub(crate) fn parse_list_query(
    pairs: &Pairs,
) -> Result<(Vec<SessionStatus>, Option<String>), AppError> {
    let mut statuses = Vec::new();
    let mut system = None;
    for (key, value) in pairs {
        match key.as_str() {
            "status" => {
                for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    let status: SessionStatus = word
                        .parse()
                        .map_err(|e| AppError::bad_request("invalid_status", format!("{e}")))?;
                    if !statuses.contains(&status) {
                        statuses.push(status);
                    }
                }
            }
            "system" if !value.is_empty() => system = Some(value.clone()),
            _ => {}
        }
    }
    Ok((statuses, system))
}

/// `GET /api/v1/sessions?status=&system=` (viewer): newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Viewer)?;
    let (statuses, system) = parse_list_query(&pairs)?;
    let sessions = list_filtered(&state, &statuses, system).await?;
    let views: Vec<SessionView> = sessions
        .iter()
        .map(|s| SessionView::new(s, state.tunnels.by_session(&s.id).as_deref()))
        .collect();
    Ok(Json(serde_json::json!({ "sessions": views })))
}

/// The sessions with any of `statuses` (all when empty) of `system` (id or name), newest first.
pub(crate) async fn list_filtered(
    state: &AppState,
    statuses: &[SessionStatus],
    system: Option<String>,
) -> Result<Vec<Session>, AppError> {
    let mut sessions = if statuses.len() <= 1 {
        let filter = SessionFilter {
            status: statuses.first().copied(),
            system,
        };
        state.store.list_sessions(&filter).await?
    } else {
        let mut all = Vec::new();
        for status in statuses {
            let filter = SessionFilter {
                status: Some(*status),
                system: system.clone(),
            };
            all.extend(state.store.list_sessions(&filter).await?);
        }
        all
    };
    sessions.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    Ok(sessions)
}

/// `GET /api/v1/sessions/{id}` (viewer).
pub(super) async fn show(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Viewer)?;
    let session = find(&state, &id).await?;
    let tunnel = state.tunnels.by_session(&id);
    let detail = SessionDetail {
        session: SessionView::new(&session, tunnel.as_deref()),
        services: services_of(&session, tunnel.as_deref()),
        diagnostics: session.diagnostics.clone(),
    };
    Ok(Json(serde_json::to_value(detail).map_err(|e| {
        AppError::internal(format!("cannot serialise session {id}: {e}"))
    })?))
}

/// Body of `PATCH /api/v1/sessions/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Patch {
    extend_hours: i64,
}

/// `PATCH /api/v1/sessions/{id}` `{"extend_hours": n}` (operator).
pub(super) async fn extend(
    State(state): State<AppState>,
    who: CurrentOperator,
    from: ClientAddr,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<Patch>,
) -> Result<Json<SessionView>, AppError> {
    let session = extend_session(&state, &who, from, &id, patch.extend_hours).await?;
    let tunnel = state.tunnels.by_session(&id);
    Ok(Json(SessionView::new(&session, tunnel.as_deref())))
}

/// Extends the open session `id` by `hours` (operator role) and audits it.
pub(crate) async fn extend_session(
    state: &AppState,
    who: &CurrentOperator,
    from: ClientAddr,
    id: &str,
    hours: i64,
) -> Result<Session, AppError> {
    who.require(Role::Operator)?;
    let before = find(state, id).await?;
    if !before.status.is_open() {
        return Err(AppError::conflict(
            "session_closed",
            format!(
                "session {id} is {} and can no longer be extended",
                before.status
            ),
        ));
    }
    let session = state.store.extend_session(id, hours).await?;
    let entry = AuditEntry {
        action: "session_extend".into(),
        system_id: Some(session.system_id.clone()),
        session_id: Some(id.to_owned()),
        detail: Some(serde_json::json!({
            "hours": hours,
            "expires_at": ts(session.expires_at),
        })),
        ..AuditEntry::default()
    };
    audit(state, who, from, entry).await;
    Ok(session)
}

/// `DELETE /api/v1/sessions/{id}` (operator): close it; the agent is told to stop (code 4000)
/// and the close is sticky. 409 if it had already ended.
pub(super) async fn close(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let after = close_session(&state, &who, &id).await?;
    Ok(Json(serde_json::json!({
        "ok": true,
        "session": SessionView::new(&after, None),
    })))
}

/// Closes the open session `id` (operator role; [`crate::session::Sessions::close`] audits
/// it) and returns it as closed; 409 if it had already ended.
pub(crate) async fn close_session(
    state: &AppState,
    who: &CurrentOperator,
    id: &str,
) -> Result<Session, AppError> {
    who.require(Role::Operator)?;
    let before = find(state, id).await?;
    let closed = state
        .sessions
        .close(id, CloseReason::Operator, who.name())
        .await?;
    if !closed {
        return Err(AppError::conflict(
            "session_closed",
            format!("session {id} is already {}", before.status),
        ));
    }
    find(state, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn status_filter_may_repeat_or_be_comma_separated() {
        let (s, sys) = parse_list_query(&pairs(&[
            ("status", "active,pending"),
            ("status", "active"),
        ]))
        .unwrap();
        assert_eq!(s, vec![SessionStatus::Active, SessionStatus::Pending]);
        assert_eq!(sys, None);
        let (s, sys) = parse_list_query(&pairs(&[("system", "fw1")])).unwrap();
        assert!(s.is_empty());
        assert_eq!(sys.as_deref(), Some("fw1"));
    }

    #[test]
    fn bad_status_names_the_allowed_values() {
        let e = parse_list_query(&pairs(&[("status", "open")])).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "invalid_status");
        assert!(
            e.message().contains("pending, active, closed, expired"),
            "{}",
            e.message()
        );
    }
}
