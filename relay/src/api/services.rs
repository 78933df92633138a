//! A session's services: list them, and add or remove services on the appliance by command
//! (`add_services` / `remove_services`), answering with the agent's verdict.

use std::collections::BTreeMap;

use agent_core::document::{Command, ServiceInfo};
use agent_core::policy;
use agent_core::wire::TERMINAL_SERVICE;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::sessions::{connected, find, services_of};
use super::{ApiJson, ApiPath, audit};
use crate::AppState;
use crate::auth::{ClientAddr, CurrentOperator};
use crate::error::AppError;
use crate::store::{AuditEntry, Role};
use crate::tunnel::TunnelError;

/// Longest service label accepted from an operator.
pub const MAX_LABEL: usize = 128;

/// `GET /api/v1/sessions/{id}/services` (viewer): `{"services":{name: ServiceInfo}, "connected"}`.
pub(super) async fn list(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    who.require(Role::Viewer)?;
    let session = find(&state, &id).await?;
    let tunnel = state.tunnels.by_session(&id);
    Ok(Json(serde_json::json!({
        "services": services_of(&session, tunnel.as_deref()),
        "connected": tunnel.is_some(),
    })))
}

/// One service in `POST /api/v1/sessions/{id}/services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewService {
    target: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    host: String,
}

/// Body of `POST /api/v1/sessions/{id}/services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddBody {
    services: BTreeMap<String, NewService>,
}

impl AddBody {
    /// A request to add one service (the console's form).
    pub(crate) fn one(name: String, target: String, label: String, tls: bool) -> AddBody {
        let service = NewService {
            target,
            label,
            tls,
            host: String::new(),
        };
        AddBody {
            services: BTreeMap::from([(name, service)]),
        }
    }
}

/// The `add_services` command for an operator's request, checked as the agent will check it
/// (counts, names, target syntax and literal addresses; names are never resolved here).
fn add_command(body: AddBody) -> Result<Command, AppError> {
    let invalid = |m: String| AppError::bad_request("invalid_services", m);
    let mut services = BTreeMap::new();
    for (name, s) in body.services {
        if name == TERMINAL_SERVICE {
            return Err(invalid(format!(
                "{TERMINAL_SERVICE:?} is reserved for the terminal, choose another service name"
            )));
        }
        if s.label.chars().count() > MAX_LABEL || s.label.chars().any(char::is_control) {
            return Err(invalid(format!(
                "label of {name:?} must be at most {MAX_LABEL} characters without control characters"
            )));
        }
        let info = ServiceInfo {
            target: s.target,
            host: s.host,
            tls: s.tls,
            label: s.label,
            ..ServiceInfo::default()
        };
        services.insert(name, info);
    }
    let command = Command::AddServices { services };
    command.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(command)
}

/// Outcome of a command, as the audit trail records it.
fn outcome(result: &Result<(), TunnelError>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(TunnelError::Agent(text)) => format!("refused: {text}"),
        Err(e) => format!("failed: {e}"),
    }
}

/// `POST /api/v1/sessions/{id}/services` (operator): 200 `{"ok":true,"services":{…}}` with the
/// services after the agent applied the command, 422 `agent_refused` with the agent's reason,
/// 409 `not_connected` without a tunnel.
pub(super) async fn add(
    State(state): State<AppState>,
    who: CurrentOperator,
    from: ClientAddr,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    let services = add_services(&state, &who, from, &id, body).await?;
    Ok(Json(
        serde_json::json!({ "ok": true, "services": services }),
    ))
}

/// Adds services to session `id` by command (operator role), audits each, and answers with the
/// services after the agent applied it, or the agent's refusal.
pub(crate) async fn add_services(
    state: &AppState,
    who: &CurrentOperator,
    from: ClientAddr,
    id: &str,
    body: AddBody,
) -> Result<BTreeMap<String, ServiceInfo>, AppError> {
    who.require(Role::Operator)?;
    let command = add_command(body)?;
    let (session, tunnel) = connected(state, id).await?;
    let result = tunnel.command(&command).await;
    if let Command::AddServices { services } = &command {
        for (name, info) in services {
            let entry = AuditEntry {
                action: "service_add".into(),
                system_id: Some(session.system_id.clone()),
                session_id: Some(id.to_owned()),
                service: Some(name.clone()),
                detail: Some(serde_json::json!({
                    "target": info.target,
                    "host": info.host,
                    "tls": info.tls,
                    "label": info.label,
                    "outcome": outcome(&result),
                })),
                ..AuditEntry::default()
            };
            audit(state, who, from, entry).await;
        }
    }
    result?;
    Ok(tunnel.services())
}

/// `DELETE /api/v1/sessions/{id}/services/{name}` (operator): only services added by command
/// can be removed; a service the appliance publishes itself answers 409 `not_removable`.
pub(super) async fn remove(
    State(state): State<AppState>,
    who: CurrentOperator,
    from: ClientAddr,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let services = remove_service(&state, &who, from, &id, &name).await?;
    Ok(Json(
        serde_json::json!({ "ok": true, "services": services }),
    ))
}

/// Removes a service added by command from session `id` (operator role), audits it, and
/// answers with the services left, or why it could not be removed.
pub(crate) async fn remove_service(
    state: &AppState,
    who: &CurrentOperator,
    from: ClientAddr,
    id: &str,
    name: &str,
) -> Result<BTreeMap<String, ServiceInfo>, AppError> {
    who.require(Role::Operator)?;
    if let Err(e) = policy::validate_connect_name(name) {
        return Err(AppError::bad_request(
            "invalid_service_name",
            format!("{name:?} is not a service name: {e}"),
        ));
    }
    let (session, tunnel) = connected(state, id).await?;
    if tunnel.service(name).is_none() {
        return Err(TunnelError::ServiceNotFound(name.to_owned()).into());
    }
    let command = Command::RemoveServices {
        service_names: vec![name.to_owned()],
    };
    let result = tunnel.command(&command).await;
    let entry = AuditEntry {
        action: "service_remove".into(),
        system_id: Some(session.system_id.clone()),
        session_id: Some(id.to_owned()),
        service: Some(name.to_owned()),
        detail: Some(serde_json::json!({ "outcome": outcome(&result) })),
        ..AuditEntry::default()
    };
    audit(state, who, from, entry).await;
    result?;
    // The agent answers OK for a name it did not add, and keeps publishing it.
    if tunnel.service(name).is_some() {
        return Err(AppError::conflict(
            "not_removable",
            format!(
                "service {name:?} is published by the appliance itself; only services added through the API can be removed"
            ),
        ));
    }
    Ok(tunnel.services())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Result<AddBody, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn add_command_fills_defaults_and_validates() {
        let b = body(
            serde_json::json!({"services": {"web": {"target": "192.168.1.10:443", "tls": true}}}),
        )
        .unwrap();
        let Command::AddServices { services } = add_command(b).unwrap() else {
            panic!("wrong command");
        };
        let web = &services["web"];
        assert_eq!(web.target, "192.168.1.10:443");
        assert!(web.tls);
        assert_eq!(web.host, "");
    }

    #[test]
    fn add_command_refuses_what_the_agent_would_refuse() {
        let cases = [
            serde_json::json!({"services": {}}),
            serde_json::json!({"services": {"Web": {"target": "10.0.0.1:80"}}}),
            serde_json::json!({"services": {"web": {"target": "169.254.169.254:80"}}}),
            serde_json::json!({"services": {"web": {"target": "metadata.google.internal:80"}}}),
            serde_json::json!({"services": {"web": {"target": "10.0.0.1"}}}),
            serde_json::json!({"services": {"terminal": {"target": "10.0.0.1:22"}}}),
            serde_json::json!({"services": {"web": {"target": "10.0.0.1:80", "label": "a\nb"}}}),
        ];
        for case in cases {
            let e = add_command(body(case.clone()).unwrap()).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{case}");
            assert_eq!(e.code(), "invalid_services");
        }
        let eleven: serde_json::Map<String, serde_json::Value> = (0..11)
            .map(|i| {
                (
                    format!("s{i}"),
                    serde_json::json!({"target": "10.0.0.1:80"}),
                )
            })
            .collect();
        let e = add_command(body(serde_json::json!({ "services": eleven })).unwrap()).unwrap_err();
        assert!(e.message().contains("too many"), "{}", e.message());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e =
            body(serde_json::json!({"services": {"web": {"target": "10.0.0.1:80", "path": "/x"}}}))
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `path`"), "{e}");
    }
}

/// Body of `POST /api/v1/sessions/{id}/services/{name}/open` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    /// The page to land on (an absolute path on the service), `/` by default.
    #[serde(default)]
    path: Option<String>,
}

/// `POST /api/v1/sessions/{id}/services/{name}/open` (operator): a one-time login URL on the
/// service's own origin, `{"url","origin","expires_in"}` (needs `--proxy-domain`).
pub(super) async fn open(
    State(state): State<AppState>,
    who: CurrentOperator,
    headers: axum::http::HeaderMap,
    extensions: axum::http::Extensions,
    ApiPath((id, name)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    let body: OpenBody = if body.iter().all(u8::is_ascii_whitespace) {
        OpenBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError::bad_request(
                "invalid_json",
                format!("the body must be {{\"path\": \"/page\"}} or empty: {e}"),
            )
        })?
    };
    let peer = crate::console::auth::peer(&extensions);
    let opened = crate::origin::open(
        &state,
        &who,
        &headers,
        peer,
        &id,
        &name,
        body.path.as_deref(),
    )
    .await?;
    Ok(Json(serde_json::json!({
        "url": opened.url,
        "origin": opened.origin,
        "expires_in": opened.expires_in.as_secs_f64(),
    })))
}
