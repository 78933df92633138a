//! The operator console: server-rendered pages behind a login, at `/`.
//!
//! Pages are askama templates (`relay/templates/`, checked at compile time) with htmx for the
//! partial updates (services, support users); the assets (`relay/assets/`, htmx vendored from
//! npm, see `relay/web/`) are embedded in the binary. [`auth`] owns console logins: the session
//! cookie, the CSRF token every state-changing request carries, the `Origin` check, and the
//! cookie login the API accepts beside Bearer tokens. [`login`] holds login, logout, lockout and
//! password change; [`systems`], [`sessions`], [`terminal`], [`audit`] and [`operators`] the
//! pages named so.
//! Every page checks the operator's role with [`crate::auth::CurrentOperator::require`], and
//! every action calls the same functions as the API handlers that do it.
//!
//! | method | path | role |
//! |---|---|---|
//! | GET | `/`, `/login` | none (redirects) |
//! | POST | `/login`, `/logout` | none, login |
//! | GET, POST | `/account`, `/account/password` | viewer |
//! | GET | `/systems`, `/sessions`, `/sessions/{id}` | viewer |
//! | GET | `/sessions/{id}/terminal` | operator |
//! | GET | `/sessions/{id}/services/{name}/open` (to the service's origin) | operator |
//! | POST | `/systems`, `/systems/{id}/support` | admin |
//! | POST | `/sessions/{id}/extend`, `/close`, `/services`, `/services/{name}/remove`, `/users` | operator |
//! | GET | `/audit`, `/audit/export`, `/operators` | admin |
//! | POST | `/operators`, `/operators/{id}/disable`, `/operators/{id}/enable` | admin |

mod assets;
mod audit;
pub mod auth;
mod login;
mod operators;
mod sessions;
mod systems;
mod terminal;
pub(crate) mod view;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::AppState;

/// Every console route; mount it beside the API with `Router::merge`.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/account", get(login::account))
        .route("/account/password", post(login::change_password))
        .route("/systems", get(systems::page).post(systems::create))
        .route("/systems/{id}/support", post(systems::support))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::show))
        .route("/sessions/{id}/terminal", get(terminal::page))
        .route("/sessions/{id}/extend", post(sessions::extend))
        .route("/sessions/{id}/close", post(sessions::close))
        .route("/sessions/{id}/services", post(sessions::add_service))
        .route(
            "/sessions/{id}/services/{name}/remove",
            post(sessions::remove_service),
        )
        .route("/sessions/{id}/users", post(sessions::reveal_users))
        .route(
            "/sessions/{id}/services/{name}/open",
            get(sessions::open_service),
        )
        .route("/audit", get(audit::page))
        .route("/audit/export", get(audit::export))
        .route("/operators", get(operators::page).post(operators::create))
        .route("/operators/{id}/disable", post(operators::disable))
        .route("/operators/{id}/enable", post(operators::enable))
        .route_layer(from_fn_with_state(state.clone(), auth::guard))
        .route("/assets/{file}", get(assets::serve))
        .layer(from_fn_with_state(state.clone(), auth::headers))
}

/// `GET /`: the systems page, or the login page for a stranger.
async fn root() -> Response {
    Redirect::to("/systems").into_response()
}
