//! The audit log page (admin): filter by session, actor and action; export as CSV or JSON lines.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Console, urlencode};
use super::sessions::AuditRow;
use super::view::{Nav, PageError, render};
use crate::AppState;
use crate::api::ApiQuery;
use crate::api::audit::{AuditQuery, AuditView};
use crate::error::AppError;
use crate::store::Role;

/// Most records the page shows.
const PAGE_MAX: i64 = 1000;
/// Most records one export holds.
const EXPORT_MAX: i64 = 10_000;

/// Query of the page and the export.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    session: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    limit: Option<i64>,
    format: Option<String>,
}

impl Filter {
    fn query(&self, default_limit: i64) -> AuditQuery {
        AuditQuery {
            session: Some(self.session.clone()),
            actor: Some(self.actor.clone()),
            action: Some(self.action.clone()),
            limit: Some(self.limit.unwrap_or(default_limit)),
        }
    }

    /// The filter as a query string (for the export links).
    fn query_string(&self) -> String {
        format!(
            "session={}&actor={}&action={}",
            urlencode(&self.session),
            urlencode(&self.actor),
            urlencode(&self.action)
        )
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    session: String,
    actor: String,
    action: String,
    limit: i64,
    rows: Vec<AuditRow>,
    export: String,
}

/// `GET /audit?session=&actor=&action=&limit=` (admin).
pub(super) async fn page(
    State(state): State<AppState>,
    console: Console,
    ApiQuery(f): ApiQuery<Filter>,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    let filter = f.query(100).filter(PAGE_MAX)?;
    let records = state.store.list_audit(&filter).await?;
    let page = AuditPage {
        nav: console.nav("audit"),
        limit: filter.limit.unwrap_or(100),
        rows: records.into_iter().map(AuditRow::from).collect(),
        export: f.query_string(),
        session: f.session,
        actor: f.actor,
        action: f.action,
    };
    render(&page)
}

/// `GET /audit/export?format=csv|jsonl&session=&actor=&action=` (admin): newest first, at most
/// 10,000 records.
pub(super) async fn export(
    State(state): State<AppState>,
    console: Console,
    ApiQuery(f): ApiQuery<Filter>,
) -> Result<Response, PageError> {
    console.require(Role::Admin)?;
    let filter = f.query(EXPORT_MAX).filter(EXPORT_MAX)?;
    let records = state.store.list_audit(&filter).await?;
    let (body, content_type, ext) = match f.format.as_deref().unwrap_or("csv") {
        "csv" => (csv(records), "text/csv; charset=utf-8", "csv"),
        "jsonl" => {
            let mut out = String::new();
            for r in records {
                let line = serde_json::to_string(&AuditView::from(r))
                    .map_err(|e| AppError::internal(format!("audit export: {e}")))?;
                out.push_str(&line);
                out.push('\n');
            }
            (out, "application/jsonl; charset=utf-8", "jsonl")
        }
        other => {
            return Err(AppError::bad_request(
                "invalid_format",
                format!("format must be csv or jsonl, not {other:?}"),
            )
            .into());
        }
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = format!("attachment; filename=\"tether-audit.{ext}\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// One CSV field (RFC 4180 quoting; a leading `=`, `+`, `-` or `@` is prefixed with `'` so that
/// spreadsheets do not run it as a formula).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The records as CSV with a header line.
pub fn csv(records: Vec<crate::store::AuditRecord>) -> String {
    let mut out =
        String::from("id,at,actor,action,system_id,session_id,service,remote_addr,detail\r\n");
    for r in records {
        let at = agent_core::document::Timestamp::from_unix_millis(r.at).to_string();
        let fields = [
            r.id.to_string(),
            at,
            r.actor,
            r.action,
            r.system_id.unwrap_or_default(),
            r.session_id.unwrap_or_default(),
            r.service.unwrap_or_default(),
            r.remote_addr.unwrap_or_default(),
            r.detail.map(|d| d.to_string()).unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}
