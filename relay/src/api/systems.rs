//! Systems (appliances) and whether they are connected now.

use std::collections::HashSet;

use agent_core::document::Timestamp;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::ts;
use crate::AppState;
use crate::auth::CurrentOperator;
use crate::error::AppError;
use crate::store::Role;

/// A system as the API shows it (never its secret).
#[derive(Debug, Serialize)]
struct SystemView {
    id: String,
    name: String,
    key: String,
    support_enabled: bool,
    /// Whether any tunnel of the system (any node) is up now.
    connected: bool,
    created_at: Timestamp,
}

/// Ids of the systems with a tunnel (any node) up now.
pub(crate) fn connected_systems(state: &AppState) -> HashSet<String> {
    state
        .tunnels
        .all()
        .iter()
        .map(|t| t.system_id().to_owned())
        .collect()
}

/// `GET /api/v1/systems` (viewer): every system, by name.
pub(super) async fn list(
    State(state): State<AppState>,
    who: CurrentOperator,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Viewer)?;
    let live = connected_systems(&state);
    let systems: Vec<SystemView> = state
        .store
        .list_systems()
        .await?
        .into_iter()
        .map(|s| SystemView {
            connected: live.contains(&s.id),
            id: s.id,
            name: s.name,
            key: s.system_key,
            support_enabled: s.support_enabled,
            created_at: ts(s.created_at),
        })
        .collect();
    Ok(Json(serde_json::json!({ "systems": systems })))
}
