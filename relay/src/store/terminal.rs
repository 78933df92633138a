//! Web terminal rows: the recording index and the cheap check that keeps a live terminal
//! allowed (session open, operator enabled with the operator role, system enabled).

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Millis, OPEN, Store, StoreError, flag, not_found, one_row};

/// One recorded terminal session (the asciicast file is `file_name` under the recordings dir).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recording {
    pub id: String,
    pub session_id: String,
    pub system_id: String,
    pub operator_id: String,
    pub operator_name: String,
    pub file_name: String,
    /// Whether the operator's keystrokes are in the file (`--record-input`).
    pub input_recorded: bool,
    pub started_at: Millis,
    /// `None` while the terminal is open (or when the relay stopped during it).
    pub ended_at: Option<Millis>,
    pub size_bytes: Option<i64>,
}

/// Why a live terminal may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalRevoked {
    /// The session is closed, expired or gone.
    SessionClosed,
    /// The operator is disabled, deleted or no longer has the operator role.
    OperatorDisabled,
    /// Support was disabled for the system (or it was deleted).
    SystemDisabled,
}

impl TerminalRevoked {
    /// Words for the operator's terminal and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalRevoked::SessionClosed => "the support session was closed",
            TerminalRevoked::OperatorDisabled => "the operator was disabled",
            TerminalRevoked::SystemDisabled => "support was disabled for the system",
        }
    }
}

const RECORDING_COLUMNS: &str = "id, session_id, system_id, operator_id, operator_name, \
     file_name, input_recorded, started_at, ended_at, size_bytes";

fn recording_from_row(row: &AnyRow) -> Result<Recording, StoreError> {
    Ok(Recording {
        id: row.try_get("id")?,
        session_id: row.try_get("session_id")?,
        system_id: row.try_get("system_id")?,
        operator_id: row.try_get("operator_id")?,
        operator_name: row.try_get("operator_name")?,
        file_name: row.try_get("file_name")?,
        input_recorded: flag(row, "input_recorded")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        size_bytes: row.try_get("size_bytes")?,
    })
}

impl Store {
    /// Indexes a recording that starts now (`ended_at` and `size_bytes` unset).
    pub async fn create_recording(&self, r: &Recording) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO recordings ({RECORDING_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&r.id)
        .bind(&r.session_id)
        .bind(&r.system_id)
        .bind(&r.operator_id)
        .bind(&r.operator_name)
        .bind(&r.file_name)
        .bind(r.input_recorded)
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.size_bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a recording finished with its final size.
    pub async fn finish_recording(
        &self,
        id: &str,
        ended_at: Millis,
        size_bytes: i64,
    ) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE recordings SET ended_at = $2, size_bytes = $3 WHERE id = $1")
                .bind(id)
                .bind(ended_at)
                .bind(size_bytes)
                .execute(&self.pool)
                .await?;
        one_row(done, "recording", id)
    }

    /// The recordings of a session, oldest first.
    pub async fn list_recordings(&self, session_id: &str) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE session_id = $1 \
             ORDER BY started_at, id"
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// One recording, `NotFound` if there is none.
    pub async fn get_recording(&self, id: &str) -> Result<Recording, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found("recording", id))?;
        recording_from_row(&row)
    }

    /// Recordings that started before `cutoff` (for the retention sweeper).
    pub async fn recordings_started_before(
        &self,
        cutoff: Millis,
    ) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE started_at < $1 ORDER BY started_at"
        ))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Forgets a recording (its file is the caller's to delete).
    pub async fn delete_recording(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        one_row(done, "recording", id)
    }

    /// Whether a terminal of `operator_id` on `session_id` may go on: one indexed query, cheap
    /// enough to run twice a second per live terminal. `None` when it may.
    pub async fn terminal_revoked(
        &self,
        session_id: &str,
        operator_id: &str,
    ) -> Result<Option<TerminalRevoked>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT s.status IN {OPEN} AS session_open, y.support_enabled, \
             (SELECT COUNT(*) FROM operators o WHERE o.id = $2 AND o.disabled = $3 \
              AND o.role IN ('admin', 'operator')) AS operator_ok \
             FROM sessions s JOIN systems y ON y.id = s.system_id WHERE s.id = $1"
        ))
        .bind(session_id)
        .bind(operator_id)
        .bind(false)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Some(TerminalRevoked::SessionClosed));
        };
        if !flag(&row, "session_open")? {
            return Ok(Some(TerminalRevoked::SessionClosed));
        }
        if !flag(&row, "support_enabled")? {
            return Ok(Some(TerminalRevoked::SystemDisabled));
        }
        if row.try_get::<i64, _>("operator_ok")? == 0 {
            return Ok(Some(TerminalRevoked::OperatorDisabled));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;
    use crate::store::tests::on_both_backends;

    on_both_backends!(
        recordings_are_indexed_listed_finished_and_swept,
        terminals_are_revoked_by_session_operator_and_system
    );

    fn recording(id: &str, session: &str, started_at: Millis) -> Recording {
        Recording {
            id: id.into(),
            session_id: session.into(),
            system_id: "sys".into(),
            operator_id: "op".into(),
            operator_name: "alice".into(),
            file_name: format!("{id}.cast"),
            input_recorded: true,
            started_at,
            ended_at: None,
            size_bytes: None,
        }
    }

    async fn recordings_are_indexed_listed_finished_and_swept(store: Store) {
        store
            .create_recording(&recording("r1", "s1", 1_000))
            .await
            .unwrap();
        store
            .create_recording(&recording("r2", "s1", 2_000))
            .await
            .unwrap();
        store
            .create_recording(&recording("r3", "s2", 3_000))
            .await
            .unwrap();
        store.finish_recording("r1", 1_500, 42).await.unwrap();
        let listed = store.list_recordings("s1").await.unwrap();
        assert_eq!(
            listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(listed[0].ended_at, Some(1_500));
        assert_eq!(listed[0].size_bytes, Some(42));
        assert!(listed[0].input_recorded);
        assert_eq!(listed[1].ended_at, None);
        assert_eq!(store.get_recording("r3").await.unwrap().session_id, "s2");
        assert!(matches!(
            store.get_recording("nope").await,
            Err(StoreError::NotFound { .. })
        ));
        let old = store.recordings_started_before(2_500).await.unwrap();
        assert_eq!(old.len(), 2);
        for r in old {
            store.delete_recording(&r.id).await.unwrap();
        }
        assert!(store.list_recordings("s1").await.unwrap().is_empty());
        assert_eq!(store.list_recordings("s2").await.unwrap().len(), 1);
        assert!(store.finish_recording("r1", 1, 1).await.is_err());
    }

    async fn terminals_are_revoked_by_session_operator_and_system(store: Store) {
        let (system, _) = store.create_system("device").await.unwrap();
        let (op, _) = store.create_operator("bob", Role::Operator).await.unwrap();
        let (viewer, _) = store.create_operator("eve", Role::Viewer).await.unwrap();
        let session = store
            .create_session(&system.id, None, 3_600_000)
            .await
            .unwrap();
        assert_eq!(
            store.terminal_revoked(&session.id, &op.id).await.unwrap(),
            None
        );
        assert_eq!(
            store
                .terminal_revoked(&session.id, &viewer.id)
                .await
                .unwrap(),
            Some(TerminalRevoked::OperatorDisabled)
        );
        assert_eq!(
            store.terminal_revoked("no-session", &op.id).await.unwrap(),
            Some(TerminalRevoked::SessionClosed)
        );
        store.set_operator_disabled(&op.id, true).await.unwrap();
        assert_eq!(
            store.terminal_revoked(&session.id, &op.id).await.unwrap(),
            Some(TerminalRevoked::OperatorDisabled)
        );
        store.set_operator_disabled(&op.id, false).await.unwrap();
        store.set_system_enabled(&system.id, false).await.unwrap();
        assert_eq!(
            store.terminal_revoked(&session.id, &op.id).await.unwrap(),
            Some(TerminalRevoked::SystemDisabled)
        );
        store.set_system_enabled(&system.id, true).await.unwrap();
        store
            .close_session(&session.id, crate::store::CloseReason::Operator)
            .await
            .unwrap();
        assert_eq!(
            store.terminal_revoked(&session.id, &op.id).await.unwrap(),
            Some(TerminalRevoked::SessionClosed)
        );
    }
}
