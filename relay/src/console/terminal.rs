//! The terminal page of a session: tabs of web terminals on the appliance, each a WebSocket of
//! the terminal API ([`crate::terminal`]) driven by `relay/assets/terminal.js` with xterm.js.
//! The page only decides whether a terminal can be opened now and says why not; tickets come
//! from the API, with the console's cookie and CSRF token.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::auth::Console;
use super::view::{Nav, PageError, render};
use crate::AppState;
use crate::api::ApiPath;
use crate::api::sessions::find;
use crate::store::{Role, Session};
use crate::tunnel::Tunnel;

/// Why no terminal can be opened on `session` now (a sentence for the page), or `None`.
pub(super) fn unavailable(session: &Session, tunnel: Option<&Tunnel>) -> Option<String> {
    if !session.status.is_open() {
        return Some(format!(
            "The session is {}: a terminal needs an open session.",
            session.status
        ));
    }
    match tunnel {
        None => Some(
            "The appliance is not connected now; a terminal can be opened when it reconnects."
                .to_owned(),
        ),
        Some(t) if !t.terminal_available() => Some(sentence(crate::terminal::DISABLED_MESSAGE)),
        Some(_) => None,
    }
}

/// `text` with a capital letter and a full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
    format!("{}{}.", first.unwrap_or_default(), chars.as_str())
}

#[derive(Template)]
#[template(path = "terminal.html")]
struct TerminalPage {
    nav: Nav,
    id: String,
    system: String,
    node: String,
    unavailable: Option<String>,
}

/// `GET /sessions/{id}/terminal` (operator).
pub(super) async fn page(
    State(state): State<AppState>,
    console: Console,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    console.require(Role::Operator)?;
    let session = find(&state, &id).await?;
    let tunnel = state.tunnels.by_session(&id);
    render(&TerminalPage {
        nav: console.nav("sessions"),
        unavailable: unavailable(&session, tunnel.as_deref()),
        system: session.system_name,
        node: session.node_id.unwrap_or_default(),
        id: session.id,
    })
}

#[cfg(test)]
mod tests {
    use super::sentence;

    #[test]
    fn a_message_becomes_a_sentence() {
        assert_eq!(sentence("the terminal is off"), "The terminal is off.");
    }
}
