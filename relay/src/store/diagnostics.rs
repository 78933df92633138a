//! Diagnostics reports: the latest per session (in `sessions.diagnostics`) plus a pruned
//! history per session (`diagnostics_history`).

use sqlx::Row as _;

use super::{Millis, Store, StoreError};

/// Default number of reports kept per session.
pub const DEFAULT_DIAGNOSTICS_HISTORY: i64 = 50;

/// One stored report.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticsEntry {
    pub overall_status: String,
    pub report: serde_json::Value,
    pub received_at: Millis,
}

impl Store {
    /// Stores a validated report as the session's latest and appends it to its history (keeping
    /// the newest `keep`), unless the previous one is less than 30 s old (then `false`).
    pub async fn record_diagnostics(
        &self,
        session_id: &str,
        report: &serde_json::Value,
        overall_status: &str,
        keep: i64,
    ) -> Result<bool, StoreError> {
        // One transaction: a reader never sees a latest report that is not in the history.
        let now = Store::now();
        let body = report.to_string();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE sessions SET diagnostics = $2, diagnostics_at = $3, updated_at = $3 \
             WHERE id = $1 AND (diagnostics_at IS NULL OR diagnostics_at <= $4)",
        )
        .bind(session_id)
        .bind(&body)
        .bind(now)
        .bind(now - super::DIAGNOSTICS_MIN_INTERVAL_MS)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            // NotFound for an unknown session, else rate-limited
            self.session_status(session_id).await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO diagnostics_history (session_id, overall_status, report, received_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(session_id)
        .bind(overall_status)
        .bind(&body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM diagnostics_history WHERE session_id = $1 AND id NOT IN \
             (SELECT id FROM diagnostics_history WHERE session_id = $1 ORDER BY id DESC LIMIT $2)",
        )
        .bind(session_id)
        .bind(keep.max(1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The session's stored reports, newest first.
    pub async fn diagnostics_history(
        &self,
        session_id: &str,
    ) -> Result<Vec<DiagnosticsEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT overall_status, report, received_at FROM diagnostics_history \
             WHERE session_id = $1 ORDER BY id DESC",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("report")?;
                Ok(DiagnosticsEntry {
                    overall_status: row.try_get("overall_status")?,
                    report: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::tests::on_both_backends;

    const HOUR: Millis = 3_600_000;

    on_both_backends!(history_keeps_the_newest_and_respects_the_rate_limit);

    async fn history_keeps_the_newest_and_respects_the_rate_limit(store: Store) {
        let (system, _) = store.create_system("diag").await.unwrap();
        let s = store.create_session(&system.id, None, HOUR).await.unwrap();
        for i in 0..5 {
            let report = json!({ "overall_status": "ok", "n": i });
            assert!(
                store
                    .record_diagnostics(&s.id, &report, "ok", 3)
                    .await
                    .unwrap()
            );
            // within 30 s of the previous one: dropped, history untouched
            assert!(
                !store
                    .record_diagnostics(&s.id, &report, "ok", 3)
                    .await
                    .unwrap()
            );
            sqlx::query(
                "UPDATE sessions SET diagnostics_at = diagnostics_at - 30001 WHERE id = $1",
            )
            .bind(&s.id)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let history = store.diagnostics_history(&s.id).await.unwrap();
        let ns: Vec<_> = history
            .iter()
            .map(|e| e.report["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [4, 3, 2]);
        let latest = store.get_session(&s.id).await.unwrap().unwrap();
        assert_eq!(latest.diagnostics.unwrap()["n"], 4);
        // the history goes with its session
        store.delete_system(&system.id).await.unwrap();
        assert!(store.diagnostics_history(&s.id).await.unwrap().is_empty());
        assert!(matches!(
            store
                .record_diagnostics("missing", &json!({}), "ok", 3)
                .await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
