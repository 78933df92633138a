//! The sessions list and one session's page: diagnostics with every plugin's checks and their
//! history, services grouped by module and node (add and remove by command, showing the
//! agent's answer), support users revealed on request (audited), extend, close, access log.

use std::collections::BTreeMap;

use agent_core::document::{DiagnosticsReport, ServiceInfo};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{Console, is_htmx, same_origin, urlencode};
use super::view::{Nav, PageError, dot, dot_label, render, when, when_opt};
use crate::AppState;
use crate::api::diagnostics::overall_status;
use crate::api::services::{AddBody, add_services, remove_service as remove_one};
use crate::api::sessions::{
    Pairs, close_session, extend_session, find, list_filtered, parse_list_query, services_of,
};
use crate::api::{ApiPath, ApiQuery, audit};
use crate::error::AppError;
use crate::store::{AuditEntry, AuditFilter, Role, Session};

/// Audit records shown in a session's access log.
const ACCESS_LOG_LIMIT: i64 = 100;
/// Hours an operator may pick when extending.
const EXTEND_CHOICES: [i64; 6] = [1, 4, 8, 24, 72, 168];

/// One row of the sessions table.
pub struct SessionRow {
    pub id: String,
    pub system: String,
    pub node: String,
    pub started: String,
    pub expires: String,
    pub status: String,
    pub connected: bool,
    pub dot: &'static str,
    pub health: String,
    pub operators: String,
}

/// A choice in a filter.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    nav: Nav,
    sessions: Vec<SessionRow>,
    statuses: Vec<Choice>,
    systems: Vec<Choice>,
}

/// `GET /sessions?status=&system=` (viewer).
pub(super) async fn list(
    State(state): State<AppState>,
    console: Console,
    ApiQuery(pairs): ApiQuery<Pairs>,
) -> Result<Response, PageError> {
    console.require(Role::Viewer)?;
    let (statuses, system) = parse_list_query(&pairs)?;
    let sessions = list_filtered(&state, &statuses, system.clone()).await?;
    let now = std::time::Instant::now();
    let rows = sessions
        .iter()
        .map(|s| {
            let status = overall_status(s);
            SessionRow {
                id: s.id.clone(),
                system: s.system_name.clone(),
                node: s.node_id.clone().unwrap_or_else(|| "—".to_owned()),
                started: when(s.started_at),
                expires: when(s.expires_at),
                status: s.status.to_string(),
                connected: state.tunnels.by_session(&s.id).is_some(),
                dot: dot(status.as_deref()),
                health: dot_label(status.as_deref()),
                operators: state.presence.of(&s.id, now).join(", "),
            }
        })
        .collect();
    let chosen: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
    let statuses = ["pending", "active", "closed", "expired"]
        .iter()
        .map(|s| Choice {
            value: (*s).to_owned(),
            label: (*s).to_owned(),
            selected: chosen.iter().any(|c| c == s),
        })
        .collect();
    let systems = state
        .store
        .list_systems()
        .await?
        .into_iter()
        .map(|y| Choice {
            selected: system.as_deref() == Some(y.id.as_str())
                || system.as_deref() == Some(y.name.as_str()),
            value: y.id,
            label: y.name,
        })
        .collect();
    let page = SessionsPage {
        nav: console.nav("sessions"),
        sessions: rows,
        statuses,
        systems,
    };
    render(&page)
}

/// One check of a plugin.
pub struct CheckView {
    pub name: String,
    pub dot: &'static str,
    pub status: String,
    pub value: String,
}

/// One plugin's result.
pub struct PluginView {
    pub id: String,
    pub name: String,
    pub dot: &'static str,
    pub status: String,
    pub summary: String,
    pub checks: Vec<CheckView>,
}

/// One stored report.
pub struct ReportView {
    pub received: String,
    pub dot: &'static str,
    pub status: String,
    pub plugins: Vec<PluginView>,
}

fn plugins_of(report: &serde_json::Value) -> Vec<PluginView> {
    let Ok(report) = serde_json::from_value::<DiagnosticsReport>(report.clone()) else {
        return Vec::new();
    };
    report
        .plugins
        .into_iter()
        .map(|p| PluginView {
            dot: dot(Some(p.status.as_str())),
            status: p.status.as_str().to_owned(),
            id: p.id,
            name: p.name,
            summary: p.summary.unwrap_or_default(),
            checks: p
                .checks
                .into_iter()
                .map(|c| CheckView {
                    dot: dot(Some(c.status.as_str())),
                    status: c.status.as_str().to_owned(),
                    name: c.name,
                    value: c.value.unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// One service, for the services table.
pub struct ServiceRow {
    pub name: String,
    pub label: String,
    pub target: String,
    pub tls: bool,
    pub open: String,
}

/// Services of one module on one node.
pub struct ServiceGroup {
    pub module: String,
    pub node: String,
    pub services: Vec<ServiceRow>,
}

/// Services grouped by (module, node), the appliance's own first. Open goes to the service's
/// own origin with `--proxy-domain`, to the path proxy without.
fn grouped(
    state: &AppState,
    session_id: &str,
    services: BTreeMap<String, ServiceInfo>,
) -> Vec<ServiceGroup> {
    let mut groups: BTreeMap<(String, String), Vec<ServiceRow>> = BTreeMap::new();
    for (name, s) in services {
        let open = if state.config.proxy_domain.is_some() {
            format!("/sessions/{session_id}/services/{}/open", urlencode(&name))
        } else {
            format!("/api/v1/sessions/{session_id}/proxy/{name}/")
        };
        let row = ServiceRow {
            open,
            label: s.label,
            target: s.target,
            tls: s.tls,
            name,
        };
        groups
            .entry((s.module_id, s.node_id))
            .or_default()
            .push(row);
    }
    groups
        .into_iter()
        .map(|((module, node), services)| ServiceGroup {
            module: if module.is_empty() {
                "appliance".to_owned()
            } else {
                module
            },
            node,
            services,
        })
        .collect()
}

/// The services block (a fragment htmx swaps after add and remove).
#[derive(Template)]
#[template(path = "services.html")]
struct ServicesBlock {
    nav: Nav,
    session_id: String,
    groups: Vec<ServiceGroup>,
    connected: bool,
    open: bool,
    answer: Option<Answer>,
}

/// The agent's answer to an add or remove.
pub struct Answer {
    pub ok: bool,
    pub text: String,
}

/// One audit record, as a table row.
pub struct AuditRow {
    pub at: String,
    pub session: String,
    pub actor: String,
    pub action: String,
    pub service: String,
    pub from: String,
    pub detail: String,
}

impl AuditRow {
    /// The start of the session id, enough to tell sessions apart in a table.
    pub fn session_short(&self) -> &str {
        self.session.get(..8).unwrap_or(&self.session)
    }
}

impl From<crate::store::AuditRecord> for AuditRow {
    fn from(r: crate::store::AuditRecord) -> AuditRow {
        AuditRow {
            at: when(r.at),
            session: r.session_id.unwrap_or_default(),
            actor: r.actor,
            action: r.action,
            service: r.service.unwrap_or_default(),
            from: r.remote_addr.unwrap_or_default(),
            detail: r.detail.map(|d| d.to_string()).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage {
    nav: Nav,
    id: String,
    system: String,
    node: String,
    status: String,
    open: bool,
    connected: bool,
    started: String,
    expires: String,
    closed: String,
    dot: &'static str,
    health: String,
    diagnostics_at: String,
    plugins: Vec<PluginView>,
    history: Vec<ReportView>,
    /// The services block, rendered (htmx swaps it alone later).
    services_html: String,
    has_users: bool,
    /// Why no terminal can be opened now, if so.
    terminal_unavailable: Option<String>,
    extend_choices: Vec<i64>,
    access: Vec<AuditRow>,
    message: Option<String>,
}

/// `GET /sessions/{id}` (viewer).
pub(super) async fn show(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    console.require(Role::Viewer)?;
    render(&session_page(&state, &console, &id, None).await?)
}

async fn session_page(
    state: &AppState,
    console: &Console,
    id: &str,
    message: Option<String>,
) -> Result<SessionPage, PageError> {
    let session = find(state, id).await?;
    let tunnel = state.tunnels.by_session(id);
    let status = overall_status(&session);
    let history = state
        .store
        .diagnostics_history(id)
        .await?
        .into_iter()
        .map(|e| ReportView {
            received: when(e.received_at),
            dot: dot(Some(e.overall_status.as_str())),
            plugins: plugins_of(&e.report),
            status: e.overall_status,
        })
        .collect();
    let access = state
        .store
        .list_audit(&AuditFilter {
            session_id: Some(id.to_owned()),
            limit: Some(ACCESS_LOG_LIMIT),
            ..AuditFilter::default()
        })
        .await?
        .into_iter()
        .map(AuditRow::from)
        .collect();
    let services = ServicesBlock {
        nav: console.nav("sessions"),
        session_id: id.to_owned(),
        groups: grouped(state, id, services_of(&session, tunnel.as_deref())),
        connected: tunnel.is_some(),
        open: session.status.is_open(),
        answer: None,
    };
    Ok(SessionPage {
        nav: console.nav("sessions"),
        id: session.id.clone(),
        system: session.system_name.clone(),
        node: session.node_id.clone().unwrap_or_default(),
        status: session.status.to_string(),
        open: session.status.is_open(),
        connected: tunnel.is_some(),
        started: when(session.started_at),
        expires: when(session.expires_at),
        closed: when_opt(session.closed_at),
        dot: dot(status.as_deref()),
        health: dot_label(status.as_deref()),
        diagnostics_at: when_opt(session.diagnostics_at),
        plugins: session
            .diagnostics
            .as_ref()
            .map(plugins_of)
            .unwrap_or_default(),
        history,
        services_html: services
            .render()
            .map_err(|e| AppError::internal(format!("cannot render the services block: {e}")))?,
        has_users: session.has_users,
        terminal_unavailable: super::terminal::unavailable(&session, tunnel.as_deref()),
        extend_choices: EXTEND_CHOICES.to_vec(),
        access,
        message,
    })
}

/// The extend form.
#[derive(Deserialize)]
pub(super) struct ExtendForm {
    hours: i64,
}

/// `POST /sessions/{id}/extend` (operator).
pub(super) async fn extend(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
    Form(form): Form<ExtendForm>,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    let session = extend_session(&state, &console.who(), console.from, &id, form.hours).await?;
    let message = format!(
        "Extended by {} h: the session now expires at {}.",
        form.hours,
        when(session.expires_at)
    );
    render(&session_page(&state, &console, &id, Some(message)).await?)
}

/// `POST /sessions/{id}/close` (operator).
pub(super) async fn close(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    close_session(&state, &console.who(), &id).await?;
    let message = "Session closed: the appliance was told to stop and stays closed until support is re-enabled.".to_owned();
    render(&session_page(&state, &console, &id, Some(message)).await?)
}

/// The add-service form.
#[derive(Deserialize)]
pub(super) struct AddForm {
    name: String,
    target: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    tls: Option<String>,
}

/// The services block after an add or remove, with the agent's answer; a page reload without
/// htmx.
async fn services_answer(
    state: &AppState,
    console: &Console,
    headers: &HeaderMap,
    id: &str,
    result: Result<String, AppError>,
) -> Result<Response, PageError> {
    let answer = match result {
        Ok(text) => Answer { ok: true, text },
        // What the appliance or the relay refused is the answer; a relay fault is an error.
        Err(e) if e.status().is_server_error() && e.code() == "internal" => return Err(e.into()),
        Err(e) => Answer {
            ok: false,
            text: e.message().to_owned(),
        },
    };
    if !is_htmx(headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}")).into_response());
    }
    let session = find(state, id).await?;
    let tunnel = state.tunnels.by_session(id);
    let block = ServicesBlock {
        nav: console.nav("sessions"),
        session_id: id.to_owned(),
        groups: grouped(state, id, services_of(&session, tunnel.as_deref())),
        connected: tunnel.is_some(),
        open: session.status.is_open(),
        answer: Some(answer),
    };
    render(&block)
}

/// `POST /sessions/{id}/services` (operator): add one service by command.
pub(super) async fn add_service(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    Form(form): Form<AddForm>,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    let name = form.name.trim().to_owned();
    let body = AddBody::one(
        name.clone(),
        form.target.trim().to_owned(),
        form.label.trim().to_owned(),
        form.tls.is_some(),
    );
    let result = add_services(&state, &console.who(), console.from, &id, body)
        .await
        .map(|_| format!("The appliance answered OK: service {name:?} added."));
    services_answer(&state, &console, &headers, &id, result).await
}

/// `POST /sessions/{id}/services/{name}/remove` (operator).
pub(super) async fn remove_service(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    let result = remove_one(&state, &console.who(), console.from, &id, &name)
        .await
        .map(|_| format!("The appliance answered OK: service {name:?} removed."));
    services_answer(&state, &console, &headers, &id, result).await
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersBlock {
    users: String,
}

/// `POST /sessions/{id}/users` (operator): the support users the appliance created, shown on
/// request and audited.
pub(super) async fn reveal_users(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    let session: Session = find(&state, &id).await?;
    let report = state.store.users_for_session(&id).await?;
    let users = match report {
        Some(bytes) => {
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| AppError::internal(format!("stored users report of {id}: {e}")))?;
            serde_json::to_string_pretty(&value["users"])
                .map_err(|e| AppError::internal(format!("users report of {id}: {e}")))?
        }
        None => "The appliance has not reported support users for this session.".to_owned(),
    };
    let entry = AuditEntry {
        action: "users_reveal".into(),
        system_id: Some(session.system_id.clone()),
        session_id: Some(id.clone()),
        ..AuditEntry::default()
    };
    audit(&state, &console.who(), console.from, entry).await;
    render(&UsersBlock { users })
}

/// `GET /sessions/{id}/services/{name}/open` (operator): to the service's own origin, logged
/// in there by a one-time token. A GET so that the Open link can open a new tab; the console
/// cookie is SameSite=Strict and a request another site started is refused, so no other page
/// can make an operator open a service.
pub(super) async fn open_service(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    ApiPath((id, name)): ApiPath<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    if !same_origin(&headers) {
        return Err(AppError::forbidden(
            "cross-origin request refused: open services from the console's own pages",
        )
        .into());
    }
    let peer = super::auth::peer(request.extensions());
    let opened =
        crate::origin::open(&state, &console.who(), &headers, peer, &id, &name, None).await?;
    // 303; the console's Referrer-Policy (same-origin) keeps the console's URL from the
    // service.
    Ok(Redirect::to(&opened.url).into_response())
}
