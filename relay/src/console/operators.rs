//! The operators page (admin): list, create (the generated password is shown once), disable
//! (which also ends their console logins) and enable.

use askama::Template;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::Console;
use super::login::record;
use super::view::{Nav, PageError, render, when};
use crate::AppState;
use crate::api::ApiPath;
use crate::error::AppError;
use crate::store::{Operator, Role};

/// One row of the operators table.
pub struct OperatorRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created: String,
    pub me: bool,
}

/// An operator just created: the password is shown this once.
pub struct Created {
    pub name: String,
    pub role: String,
    pub password: String,
}

#[derive(Template)]
#[template(path = "operators.html")]
struct OperatorsPage {
    nav: Nav,
    operators: Vec<OperatorRow>,
    created: Option<Created>,
}

async fn page_with(
    state: &AppState,
    console: &Console,
    created: Option<Created>,
) -> Result<Response, PageError> {
    let me = &console.session.operator.id;
    let operators = state
        .store
        .list_operators()
        .await?
        .into_iter()
        .map(|o: Operator| OperatorRow {
            me: &o.id == me,
            id: o.id,
            name: o.name,
            role: o.role.to_string(),
            disabled: o.disabled,
            created: when(o.created_at),
        })
        .collect();
    render(&OperatorsPage {
        nav: console.nav("operators"),
        operators,
        created,
    })
}

/// `GET /operators` (admin).
pub(super) async fn page(
    State(state): State<AppState>,
    console: Console,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    page_with(&state, &console, None).await
}

/// The create-operator form.
#[derive(Deserialize)]
pub(super) struct CreateForm {
    name: String,
    role: String,
}

/// `POST /operators` (admin).
pub(super) async fn create(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<CreateForm>,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    let role: Role = form
        .role
        .parse()
        .map_err(|e| AppError::bad_request("invalid_role", format!("{e}")))?;
    let (operator, password) = state.store.create_operator(form.name.trim(), role).await?;
    record(
        &state,
        &console.session.operator.name,
        console.from,
        "operator.create",
        Some(serde_json::json!({ "name": operator.name, "role": role })),
    )
    .await;
    let created = Created {
        name: operator.name,
        role: role.to_string(),
        password: password.expose().to_owned(),
    };
    page_with(&state, &console, Some(created)).await
}

async fn set_disabled(
    state: &AppState,
    console: &Console,
    id: &str,
    disabled: bool,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    let operator = state.store.find_operator(id).await?.ok_or_else(|| {
        AppError::not_found("operator_not_found", format!("there is no operator {id:?}"))
    })?;
    if disabled && operator.id == console.session.operator.id {
        return Err(AppError::conflict(
            "self_disable",
            "you cannot disable yourself: ask another admin",
        )
        .into());
    }
    state
        .store
        .set_operator_disabled(&operator.id, disabled)
        .await?;
    let mut detail = serde_json::json!({ "name": operator.name });
    let action = if disabled {
        let ended = state
            .store
            .end_console_sessions_of(&operator.id, None)
            .await?;
        detail["console_logins_ended"] = ended.into();
        "operator.disable"
    } else {
        "operator.enable"
    };
    record(
        state,
        &console.session.operator.name,
        console.from,
        action,
        Some(detail),
    )
    .await;
    Ok(Redirect::to("/operators").into_response())
}

/// `POST /operators/{id}/disable` (admin).
pub(super) async fn disable(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    set_disabled(&state, &console, &id, true).await
}

/// `POST /operators/{id}/enable` (admin).
pub(super) async fn enable(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    set_disabled(&state, &console, &id, false).await
}
