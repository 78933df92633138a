//! The systems page: each system's health dot (the most severe latest report of its open
//! sessions), its nodes, when it was last seen, and support on or off; admins create systems
//! (key and secret shown once, with the agent's command line) and switch support.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::Console;
use super::view::{Nav, PageError, dot, dot_label, render, when};
use crate::AppState;
use crate::api::diagnostics::overall_status;
use crate::api::systems::connected_systems;
use crate::api::{ApiPath, audit};
use crate::diagnostics::worst_of;
use crate::error::AppError;
use crate::store::{AuditEntry, Role, Session, SessionFilter};

/// One node (open session) of a system.
pub struct NodeRow {
    pub label: String,
    pub session_id: String,
    pub dot: &'static str,
    pub status: String,
}

/// One row of the systems table.
pub struct SystemRow {
    pub id: String,
    pub name: String,
    pub dot: &'static str,
    pub status: String,
    pub nodes: Vec<NodeRow>,
    pub connected: bool,
    pub last_seen: String,
    pub support: bool,
}

/// A system just created: its secret is shown this once.
pub struct Created {
    pub name: String,
    pub key: String,
    pub secret: String,
    pub command: String,
}

#[derive(Template)]
#[template(path = "systems.html")]
struct SystemsPage {
    nav: Nav,
    systems: Vec<SystemRow>,
    created: Option<Created>,
}

/// The rows of the systems table.
async fn rows(state: &AppState) -> Result<Vec<SystemRow>, PageError> {
    let live = connected_systems(state);
    let mut by_system: BTreeMap<String, Vec<Session>> = BTreeMap::new();
    for s in state.store.list_sessions(&SessionFilter::default()).await? {
        by_system.entry(s.system_id.clone()).or_default().push(s);
    }
    let mut rows = Vec::new();
    for system in state.store.list_systems().await? {
        let sessions = by_system.remove(&system.id).unwrap_or_default();
        let nodes: Vec<NodeRow> = sessions
            .iter()
            .filter(|s| s.status.is_open())
            .map(|s| {
                let status = overall_status(s);
                NodeRow {
                    label: s
                        .node_id
                        .clone()
                        .unwrap_or_else(|| "single node".to_owned()),
                    session_id: s.id.clone(),
                    dot: dot(status.as_deref()),
                    status: dot_label(status.as_deref()),
                }
            })
            .collect();
        let reported: Vec<String> = sessions
            .iter()
            .filter(|s| s.status.is_open())
            .filter_map(overall_status)
            .collect();
        let overall = (!reported.is_empty()).then(|| {
            worst_of(reported.iter().map(String::as_str))
                .as_str()
                .to_owned()
        });
        let connected = live.contains(&system.id);
        let last_seen = if connected {
            "connected now".to_owned()
        } else {
            sessions
                .iter()
                .map(|s| s.updated_at)
                .max()
                .map(when)
                .unwrap_or_else(|| "never".to_owned())
        };
        rows.push(SystemRow {
            dot: dot(overall.as_deref()),
            status: dot_label(overall.as_deref()),
            id: system.id,
            name: system.name,
            nodes,
            connected,
            last_seen,
            support: system.support_enabled,
        });
    }
    Ok(rows)
}

/// `GET /systems` (viewer).
pub(super) async fn page(
    State(state): State<AppState>,
    console: Console,
) -> Result<Response, PageError> {
    console.require(Role::Viewer)?;
    let page = SystemsPage {
        nav: console.nav("systems"),
        systems: rows(&state).await?,
        created: None,
    };
    render(&page)
}

/// The create-system form.
#[derive(Deserialize)]
pub(super) struct CreateForm {
    name: String,
}

/// The agent's tunnel URL on this relay, as the operator's browser reached it.
fn tunnel_url(state: &AppState, headers: &HeaderMap, secure: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.listen.to_string());
    let scheme = if secure { "wss" } else { "ws" };
    format!("{scheme}://{host}/api/tunnel")
}

/// `POST /systems` (admin): creates a system and shows its key and secret once.
pub(super) async fn create(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    Form(form): Form<CreateForm>,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    let name = form.name.trim();
    let (system, credentials) = state.store.create_system(name).await?;
    let who = console.who();
    let entry = AuditEntry {
        action: "system.create".into(),
        system_id: Some(system.id.clone()),
        detail: Some(serde_json::json!({ "name": system.name })),
        ..AuditEntry::default()
    };
    audit(&state, &who, console.from, entry).await;
    let secure = state.config.secure_cookies;
    let url = tunnel_url(&state, &headers, secure);
    let secret = credentials.secret.expose().to_owned();
    let created = Created {
        command: format!(
            "tether-agent --url {url} --key {} --secret {secret}",
            credentials.key
        ),
        name: system.name,
        key: credentials.key,
        secret,
    };
    let page = SystemsPage {
        nav: console.nav("systems"),
        systems: rows(&state).await?,
        created: Some(created),
    };
    render(&page)
}

/// The support switch.
#[derive(Deserialize)]
pub(super) struct SupportForm {
    enabled: bool,
}

/// `POST /systems/{id}/support` (admin): `enabled=true|false`; disabling closes the system's
/// open sessions.
pub(super) async fn support(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
    Form(form): Form<SupportForm>,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    let system = state.store.find_system(&id).await?.ok_or_else(|| {
        AppError::not_found("system_not_found", format!("there is no system {id:?}"))
    })?;
    let (action, detail) = if form.enabled {
        state.store.set_system_enabled(&system.id, true).await?;
        ("system.enable", serde_json::json!({ "name": system.name }))
    } else {
        let closed = crate::admin::disable_system(&state.store, &system.id).await?;
        (
            "system.disable",
            serde_json::json!({ "name": system.name, "closed_sessions": closed }),
        )
    };
    let entry = AuditEntry {
        action: action.into(),
        system_id: Some(system.id.clone()),
        detail: Some(detail),
        ..AuditEntry::default()
    };
    audit(&state, &console.who(), console.from, entry).await;
    Ok(Redirect::to("/systems").into_response())
}
