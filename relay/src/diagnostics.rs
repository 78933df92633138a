//! Diagnostics reports from agents: validated against PROTOCOL section 5 and the limits of
//! `agent_core::plugin_output` (over-long strings are cut and unknown status words read as
//! `unknown`, each with a logged reason), then kept as the session's latest plus a history.

use agent_core::document::{DiagnosticsReport, DocumentError, Status};
use agent_core::plugin_output;

use crate::AppState;
use crate::store::StoreError;

/// A report that passed validation.
#[derive(Debug)]
pub struct Accepted {
    /// The report as it is stored (unknown fields dropped, limits applied).
    pub report: DiagnosticsReport,
    /// What had to be corrected, for the log.
    pub notes: Vec<String>,
}

/// Status words a report may use.
fn known_status(text: &str) -> bool {
    ["ok", "warning", "critical", "unknown", "error", "timeout"].contains(&text)
}

/// Notes every `status`/`overall_status` value that is not a protocol status word.
fn odd_statuses(value: &serde_json::Value, path: &str, notes: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}.{key}");
                if key == "status" || key == "overall_status" {
                    match v.as_str() {
                        Some(s) if known_status(s) => {}
                        _ => notes.push(format!("{here} {v} is not a status, read as unknown")),
                    }
                } else if key == "plugins" || key == "checks" {
                    odd_statuses(v, &here, notes);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                odd_statuses(item, &format!("{path}[{i}]"), notes);
            }
        }
        _ => {}
    }
}

/// Parses and checks a `DIAGNOSTICS 1` body (the JSON line).
pub fn validate(body: &[u8]) -> Result<Accepted, DocumentError> {
    let mut report = DiagnosticsReport::parse_json(body)?;
    let mut notes = Vec::new();
    if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(body) {
        odd_statuses(&raw, "", &mut notes);
    }
    notes.extend(plugin_output::clamp_report(&mut report));
    Ok(Accepted { report, notes })
}

/// Stores an accepted report for `session_id`; `false` when the store's 30 s limit dropped it.
pub async fn store(
    state: &AppState,
    session_id: &str,
    accepted: &Accepted,
) -> Result<bool, StoreError> {
    for note in &accepted.notes {
        tracing::warn!(session = %session_id, "diagnostics report corrected: {note}");
    }
    let value = serde_json::to_value(&accepted.report).unwrap_or(serde_json::Value::Null);
    state
        .store
        .record_diagnostics(
            session_id,
            &value,
            accepted.report.overall_status.as_str(),
            state.config.diagnostics_history,
        )
        .await
}

/// The most severe of some statuses given as text (unknown words count as `unknown`).
pub fn worst_of<'a>(statuses: impl IntoIterator<Item = &'a str>) -> Status {
    Status::worst(statuses.into_iter().map(Status::from_text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_report_and_corrects_what_it_must() {
        let long = "x".repeat(plugin_output::MAX_TEXT_LEN + 10);
        let body = format!(
            r#"{{"collected_at":"2026-01-01T00:00:00Z","duration_ms":5,"overall_status":"ok",
               "plugins":[{{"id":"a","name":"A","status":"bogus","summary":"{long}",
               "checks":[{{"name":"c","status":"critical"}}]}}],"extra":1}}"#
        );
        let accepted = validate(body.as_bytes()).unwrap();
        let plugin = &accepted.report.plugins[0];
        assert_eq!(plugin.status, Status::Unknown);
        assert_eq!(
            plugin.summary.as_ref().unwrap().len(),
            plugin_output::MAX_TEXT_LEN
        );
        assert_eq!(accepted.report.overall_status, Status::Unknown);
        let notes = accepted.notes.join("; ");
        assert!(notes.contains("\"bogus\" is not a status"), "{notes}");
        assert!(notes.contains("summary of"), "{notes}");
        assert!(
            notes.contains("overall_status ok corrected to unknown"),
            "{notes}"
        );
    }

    #[test]
    fn rejects_what_is_not_a_report() {
        assert!(validate(b"[1,2]").is_err());
        assert!(validate(br#"{"collected_at":"yesterday"}"#).is_err());
        let huge = format!(r#"{{"x":"{}"}}"#, "a".repeat(600 * 1024));
        assert!(matches!(
            validate(huge.as_bytes()),
            Err(DocumentError::TooLarge { .. })
        ));
    }

    #[test]
    fn worst_uses_the_protocol_order() {
        assert_eq!(worst_of(["ok", "timeout", "warning"]), Status::Timeout);
        assert_eq!(worst_of(["error", "critical"]), Status::Critical);
        assert_eq!(worst_of([]), Status::Ok);
    }
}
