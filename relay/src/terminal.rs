//! Web terminals: one-time tickets, the browser WebSocket bridged to the agent's
//! `CONNECT terminal` stream, recordings, and revocation (REFERENCE 1.9, 2.12, 4.4; B-23, S-1).
//!
//! | method | path | role |
//! |---|---|---|
//! | POST | `/api/v1/sessions/{id}/terminal-ticket` → `{"ticket","expires_in"}` | operator |
//! | GET | `/api/v1/sessions/{id}/terminal?ticket=…` (WebSocket) | the ticket |
//! | GET | `/api/v1/sessions/{id}/recordings` | admin |
//! | GET | `/api/v1/recordings/{rid}` (the `.cast` file) | admin |
//!
//! A ticket is 256 random bits, lives `--terminal-ticket-ttl`, is used once, is bound to the
//! operator and the session, and is looked up by its SHA-256 then compared in constant time.
//! The WebSocket carries the browser-leg frames of PROTOCOL section 7, one `[type][payload]`
//! per binary message, at most [`MAX_BROWSER_MESSAGE`] bytes either way. One task owns the
//! socket, so only it ever writes to it (B-23). Every [`REVALIDATE_EVERY`] the terminal checks
//! that the session is open, the operator enabled and the system enabled, and that it has not
//! been idle for `--terminal-idle-timeout`; it ends with a type-3 message otherwise.

pub mod recording;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::wire::{MAX_TERMINAL_FRAME_RELAY, TerminalFrame};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::AppState;
use crate::api::{ApiPath, ApiQuery};
use crate::auth::{ClientAddr, CurrentOperator};
use crate::error::AppError;
use crate::store::{AuditEntry, Recording, Role, Store};
use crate::ticket::{OneTime, Refusal};
use crate::tunnel::{StreamPermit, Tunnel, TunnelError};

use self::recording::Recorder;

/// Largest browser-leg message (type byte + payload), both directions.
pub const MAX_BROWSER_MESSAGE: usize = MAX_TERMINAL_FRAME_RELAY;
/// How often a live terminal re-checks session, operator and system, and its idle time.
pub const REVALIDATE_EVERY: Duration = Duration::from_millis(500);
/// Most tickets outstanding at once (each lives seconds; this only bounds memory).
pub const MAX_OUTSTANDING_TICKETS: usize = crate::ticket::MAX_OUTSTANDING;
/// How often old recordings are swept.
pub const RECORDING_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Type-3 text of an idle terminal (the reference's words).
pub const IDLE_MESSAGE: &str = "session closed due to inactivity";

/// Routes of the web terminal and its recordings.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions/{id}/terminal-ticket", post(issue_ticket))
        .route("/api/v1/sessions/{id}/terminal", get(open))
        .route("/api/v1/sessions/{id}/recordings", get(list_recordings))
        .route("/api/v1/recordings/{rid}", get(download))
}

/// Who a ticket lets in, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub operator_id: String,
    pub operator_name: String,
    pub session_id: String,
}

/// Why a ticket does not open a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Unknown, malformed or already used.
    #[error("the terminal ticket is not valid (unknown or already used); ask for a new one")]
    Unknown,
    /// Older than the ticket lifetime.
    #[error("the terminal ticket has expired; ask for a new one")]
    Expired,
    /// Issued for another session.
    #[error("the terminal ticket was issued for another session")]
    WrongSession,
    /// Too many tickets outstanding.
    #[error("too many terminal tickets outstanding, retry in a few seconds")]
    Full,
    /// No randomness.
    #[error("cannot generate a ticket")]
    Random,
}

/// One-time terminal tickets, in memory (they live seconds; a relay restart voids them).
pub struct Tickets {
    inner: OneTime<Grant>,
}

impl Tickets {
    /// Tickets that live `ttl`.
    pub fn new(ttl: Duration) -> Tickets {
        Tickets {
            inner: OneTime::new(ttl),
        }
    }

    /// A new ticket (64 hex digits) for `grant`, valid from `now` for the lifetime.
    pub fn issue(&self, grant: Grant, now: Instant) -> Result<String, TicketError> {
        self.inner.issue(grant, now).map_err(TicketError::from)
    }

    /// Uses up `ticket` for `session_id` at `now`. A ticket is gone after any attempt to use
    /// it, successful or not.
    pub fn redeem(
        &self,
        ticket: &str,
        session_id: &str,
        now: Instant,
    ) -> Result<Grant, TicketError> {
        let grant = self.inner.redeem(ticket, now)?;
        if grant.session_id != session_id {
            return Err(TicketError::WrongSession);
        }
        Ok(grant)
    }
}

impl From<Refusal> for TicketError {
    fn from(r: Refusal) -> TicketError {
        match r {
            Refusal::Unknown => TicketError::Unknown,
            Refusal::Expired => TicketError::Expired,
            Refusal::Full => TicketError::Full,
            Refusal::Random => TicketError::Random,
        }
    }
}

/// `POST /api/v1/sessions/{id}/terminal-ticket`.
async fn issue_ticket(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    who.require(Role::Operator)?;
    let (_, tunnel) = crate::api::connected(&state, &id).await?;
    if !tunnel.terminal_available() {
        return Err(terminal_disabled());
    }
    let grant = Grant {
        operator_id: who.0.id.clone(),
        operator_name: who.0.name.clone(),
        session_id: id,
    };
    let ticket = state
        .terminals
        .issue(grant, Instant::now())
        .map_err(|e| match e {
            TicketError::Full => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
            _ => AppError::internal(e.to_string()),
        })?;
    let body = serde_json::json!({
        "ticket": ticket,
        "expires_in": state.config.terminal_ticket_ttl.as_secs_f64(),
    });
    Ok(axum::Json(body).into_response())
}

/// Why an appliance gives no terminal, in the words the API and the console show.
pub const DISABLED_MESSAGE: &str =
    "the web terminal is disabled on this appliance (tether-agent --no-terminal)";

fn terminal_disabled() -> AppError {
    AppError::conflict("terminal_disabled", DISABLED_MESSAGE)
}

/// Query of the terminal WebSocket.
#[derive(serde::Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

/// Whether a browser's `Origin` names this relay (the `Host` it was reached by). Clients that
/// send no `Origin` (not browsers) are let through: the ticket is their credential.
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    let authority = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// `GET /api/v1/sessions/{id}/terminal?ticket=…`: everything is checked before the upgrade
/// (HTTP errors); after it, failures are type-3 messages.
async fn open(
    State(state): State<AppState>,
    from: ClientAddr,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TicketQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    if !origin_allowed(&headers) {
        return Err(AppError::forbidden(
            "the terminal can only be opened from the relay's own origin",
        ));
    }
    let ticket = query
        .ticket
        .ok_or_else(|| AppError::unauthorized("a terminal ticket is required (?ticket=…)"))?;
    let grant = state
        .terminals
        .redeem(&ticket, &id, Instant::now())
        .map_err(|e| match e {
            TicketError::WrongSession => AppError::forbidden(e.to_string()),
            _ => AppError::unauthorized(e.to_string()),
        })?;
    if let Some(why) = state
        .store
        .terminal_revoked(&id, &grant.operator_id)
        .await?
    {
        return Err(AppError::forbidden(format!(
            "terminal refused: {}",
            why.as_str()
        )));
    }
    let (session, tunnel) = crate::api::connected(&state, &id).await?;
    if !tunnel.terminal_available() {
        return Err(terminal_disabled());
    }
    let ws = ws.map_err(|e| {
        AppError::bad_request(
            "not_websocket",
            format!("expected a WebSocket upgrade: {e}"),
        )
    })?;
    let permit = tunnel.acquire_stream_evicting()?;
    let started_at = Store::now();
    let index = Recording {
        id: uuid::Uuid::new_v4().to_string(),
        session_id: session.id.clone(),
        system_id: session.system_id.clone(),
        operator_id: grant.operator_id.clone(),
        operator_name: grant.operator_name.clone(),
        file_name: String::new(),
        input_recorded: state.config.record_input,
        started_at,
        ended_at: None,
        size_bytes: None,
    };
    let index = Recording {
        file_name: format!("{}.cast", index.id),
        ..index
    };
    // No recording, no terminal.
    let recorder = Recorder::create(
        &state.config.recordings_dir,
        &index.file_name,
        format!(
            "{} (session {}) by {}",
            session.system_name, session.id, grant.operator_name
        ),
        state.config.record_input,
        started_at,
    )
    .await
    .map_err(|e| AppError::internal(format!("cannot create the terminal recording: {e}")))?;
    state.store.create_recording(&index).await?;
    let live = Live {
        state,
        grant,
        system_id: session.system_id,
        tunnel,
        remote: from.audit_text(),
        recording: index,
        _permit: permit,
    };
    Ok(ws
        .max_message_size(MAX_BROWSER_MESSAGE)
        .max_frame_size(MAX_BROWSER_MESSAGE)
        .on_upgrade(move |socket| bridge(socket, live, recorder))
        .into_response())
}

/// A terminal between its upgrade and its end.
struct Live {
    state: AppState,
    grant: Grant,
    system_id: String,
    tunnel: Arc<Tunnel>,
    remote: Option<String>,
    recording: Recording,
    _permit: StreamPermit,
}

impl Live {
    async fn audit(&self, action: &str, detail: serde_json::Value) {
        let entry = AuditEntry {
            actor: self.grant.operator_name.clone(),
            action: action.to_owned(),
            system_id: Some(self.system_id.clone()),
            session_id: Some(self.grant.session_id.clone()),
            service: Some("terminal".into()),
            remote_addr: self.remote.clone(),
            detail: Some(detail),
        };
        if let Err(e) = self.state.store.audit(entry).await {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }
}

/// Why a terminal ended, for the audit trail and the operator's screen.
enum End {
    /// The browser closed the socket.
    Operator,
    /// The agent closed the stream (the shell exited) or the tunnel went away.
    Agent,
    /// Type-3 text already sent to the browser.
    Closed(String),
}

async fn bridge(socket: WebSocket, live: Live, mut recorder: Recorder) {
    let started = Instant::now();
    let session = live.grant.session_id.clone();
    live.audit(
        "terminal_open",
        serde_json::json!({
            "recording": live.recording.id,
            "operator_id": live.grant.operator_id,
            "protocol": if live.tunnel.speaks_v2() { 2 } else { 1 },
        }),
    )
    .await;
    tracing::info!(%session, operator = %live.grant.operator_name, "terminal opened");
    let _present = live
        .state
        .presence
        .terminal(&session, &live.grant.operator_name);
    let (mut sink, mut source) = socket.split();
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let end = match live.tunnel.open_terminal(&live.grant.operator_name).await {
        Err(e) => {
            if let TunnelError::Agent(text) = &e
                && text.contains("disabled")
            {
                live.tunnel.mark_terminal_disabled();
            }
            let text = match &e {
                TunnelError::Agent(text) => format!("terminal not available: {text}"),
                _ => "tunnel connect failed".to_owned(),
            };
            let _ = sink.send(error_message(&text)).await;
            End::Closed(text)
        }
        Ok(stream) => {
            let (mut from_agent, mut to_agent) = tokio::io::split(stream);
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16 * 1024];
            let mut tick = tokio::time::interval(REVALIDATE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let idle_after = live.state.config.terminal_idle_timeout;
            let mut last_frame = Instant::now();
            let end = 'bridge: loop {
                tokio::select! {
                    msg = source.next() => {
                        let data = match msg {
                            Some(Ok(Message::Binary(data))) => data,
                            Some(Ok(Message::Close(_))) | None => break End::Operator,
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => {
                                tracing::debug!(%session, "terminal socket failed: {e}");
                                break End::Operator;
                            }
                        };
                        last_frame = Instant::now();
                        let frame = TerminalFrame::from_message(&data);
                        let written = match &frame {
                            TerminalFrame::Data(d) => {
                                bytes_in += d.len() as u64;
                                recorder.input(d).await
                            }
                            TerminalFrame::Resize { cols, rows } => recorder.resize(*cols, *rows).await,
                            // type 3 is relay-to-browser only; unknown types are dropped
                            _ => continue,
                        };
                        if let Err(e) = written {
                            let text = format!("terminal closed: the recording failed ({e})");
                            let _ = sink.send(error_message(&text)).await;
                            break End::Closed(text);
                        }
                        let mut out = Vec::with_capacity(data.len() + 4);
                        frame.encode(&mut out);
                        if to_agent.write_all(&out).await.is_err() {
                            break End::Agent;
                        }
                    }
                    read = from_agent.read(&mut chunk) => {
                        let n = match read {
                            Ok(0) | Err(_) => break End::Agent,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        loop {
                            let (frame, used) = match TerminalFrame::decode(&buf, MAX_TERMINAL_FRAME_RELAY) {
                                Ok(Some(f)) => f,
                                Ok(None) => break,
                                Err(e) => {
                                    let text = format!("terminal closed: {e}");
                                    let _ = sink.send(error_message(&text)).await;
                                    break 'bridge End::Closed(text);
                                }
                            };
                            buf.drain(..used);
                            let TerminalFrame::Data(d) = &frame else { continue };
                            last_frame = Instant::now();
                            bytes_out += d.len() as u64;
                            if let Err(e) = recorder.output(d).await {
                                let text = format!("terminal closed: the recording failed ({e})");
                                let _ = sink.send(error_message(&text)).await;
                                break 'bridge End::Closed(text);
                            }
                            if sink.send(Message::Binary(frame.to_message().into())).await.is_err() {
                                break 'bridge End::Operator;
                            }
                        }
                    }
                    _ = tick.tick() => {
                        if last_frame.elapsed() >= idle_after {
                            let _ = sink.send(error_message(IDLE_MESSAGE)).await;
                            break End::Closed(IDLE_MESSAGE.to_owned());
                        }
                        match live.state.store.terminal_revoked(&session, &live.grant.operator_id).await {
                            Ok(None) => {}
                            Ok(Some(why)) => {
                                let text = format!("terminal closed: {}", why.as_str());
                                let _ = sink.send(error_message(&text)).await;
                                break End::Closed(text);
                            }
                            // a database hiccup does not end the terminal; the next tick retries
                            Err(e) => tracing::warn!(%session, error = %e, "cannot re-check the terminal"),
                        }
                        let _ = recorder.flush().await;
                    }
                }
            };
            let _ = to_agent.shutdown().await;
            end
        }
    };
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
    let size = match recorder.finish().await {
        Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Err(e) => {
            tracing::error!(%session, error = %e, "terminal recording incomplete");
            -1
        }
    };
    if let Err(e) = live
        .state
        .store
        .finish_recording(&live.recording.id, Store::now(), size)
        .await
    {
        tracing::error!(%session, error = %e, "cannot finish the recording index");
    }
    let reason = match &end {
        End::Operator => "the operator closed the terminal".to_owned(),
        End::Agent => "the appliance ended the terminal".to_owned(),
        End::Closed(text) => text.clone(),
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(%session, operator = %live.grant.operator_name, %reason, duration_ms, bytes_in, bytes_out, "terminal closed");
    live.audit(
        "terminal_close",
        serde_json::json!({
            "recording": live.recording.id,
            "reason": reason,
            "duration_ms": duration_ms,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
        }),
    )
    .await;
}

/// A type-3 message for the browser.
fn error_message(text: &str) -> Message {
    Message::Binary(TerminalFrame::Error(text.to_owned()).to_message().into())
}

/// A recording as the API shows it.
#[derive(serde::Serialize)]
struct RecordingView {
    id: String,
    session_id: String,
    system_id: String,
    operator: String,
    input_recorded: bool,
    started_at: agent_core::document::Timestamp,
    ended_at: Option<agent_core::document::Timestamp>,
    size_bytes: Option<i64>,
    download: String,
}

impl From<Recording> for RecordingView {
    fn from(r: Recording) -> Self {
        RecordingView {
            download: format!("/api/v1/recordings/{}", r.id),
            id: r.id,
            session_id: r.session_id,
            system_id: r.system_id,
            operator: r.operator_name,
            input_recorded: r.input_recorded,
            started_at: agent_core::document::Timestamp::from_unix_millis(r.started_at),
            ended_at: r
                .ended_at
                .map(agent_core::document::Timestamp::from_unix_millis),
            size_bytes: r.size_bytes,
        }
    }
}

/// `GET /api/v1/sessions/{id}/recordings`.
async fn list_recordings(
    State(state): State<AppState>,
    who: CurrentOperator,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    who.require(Role::Admin)?;
    let list: Vec<RecordingView> = state
        .store
        .list_recordings(&id)
        .await?
        .into_iter()
        .map(RecordingView::from)
        .collect();
    Ok(axum::Json(serde_json::json!({ "recordings": list })).into_response())
}

/// `GET /api/v1/recordings/{rid}`: the `.cast` file, streamed; every download is audited.
async fn download(
    State(state): State<AppState>,
    who: CurrentOperator,
    from: ClientAddr,
    ApiPath(rid): ApiPath<String>,
) -> Result<Response, AppError> {
    who.require(Role::Admin)?;
    let r = state.store.get_recording(&rid).await.map_err(|e| match e {
        crate::store::StoreError::NotFound { .. } => AppError::not_found(
            "recording_not_found",
            format!("there is no recording {rid:?}"),
        ),
        other => AppError::from(other),
    })?;
    if r.file_name.contains(['/', '\\']) || r.file_name.starts_with('.') {
        return Err(AppError::internal(format!(
            "odd recording file name {:?}",
            r.file_name
        )));
    }
    let file = tokio::fs::File::open(state.config.recordings_dir.join(&r.file_name))
        .await
        .map_err(|e| {
            AppError::new(
                StatusCode::GONE,
                "recording_missing",
                format!("the recording file is gone: {e}"),
            )
        })?;
    crate::api::audit(
        &state,
        &who,
        from,
        AuditEntry {
            action: "recording_download".into(),
            system_id: Some(r.system_id.clone()),
            session_id: Some(r.session_id.clone()),
            service: Some("terminal".into()),
            detail: Some(serde_json::json!({ "recording": r.id, "operator": r.operator_name })),
            ..AuditEntry::default()
        },
    )
    .await;
    let body = futures::stream::unfold(file, |mut file| async move {
        let mut chunk = vec![0u8; 64 * 1024];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-asciicast".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", r.file_name),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Deletes recordings older than `--recordings-retention`, now and every
/// [`RECORDING_SWEEP_EVERY`], until the process ends.
pub fn spawn_recording_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECORDING_SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep_recordings(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(recordings = n, "old terminal recordings deleted"),
                Err(e) => tracing::error!(error = %e, "terminal recording sweep failed"),
            }
        }
    });
}

/// One retention sweep; the number of recordings deleted.
pub async fn sweep_recordings(state: &AppState) -> Result<usize, crate::store::StoreError> {
    let retention =
        i64::try_from(state.config.recordings_retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = Store::now().saturating_sub(retention);
    let old = state.store.recordings_started_before(cutoff).await?;
    let mut n = 0;
    for r in old {
        if !r.file_name.contains(['/', '\\']) {
            let path = state.config.recordings_dir.join(&r.file_name);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete an old recording");
                    continue;
                }
            }
        }
        state.store.delete_recording(&r.id).await?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
