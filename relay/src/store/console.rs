//! Operator console rows: login sessions (found by the hash of their cookie value), failed
//! logins for the lockout, password changes, and who acted on which support session lately.

use sqlx::Row as _;

use super::{Millis, Operator, Store, StoreError, one_row, operator_from_row};
use crate::crypto::{self, Secret};

/// `last_seen_at` of a console session is written at most this often.
const TOUCH_INTERVAL_MS: Millis = 15_000;

/// A live console login.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// SHA-256 (hex) of the cookie value.
    pub id_hash: String,
    /// Who is logged in (enabled).
    pub operator: Operator,
    /// The token every state-changing request must carry.
    pub csrf_token: String,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
}

impl Store {
    /// Stores a new console session for `operator_id` ending at `expires_at` at the latest.
    pub async fn create_console_session(
        &self,
        operator_id: &str,
        id_hash: &str,
        csrf_token: &str,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        let now = Store::now();
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, operator_id, csrf_token, created_at, \
             last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(id_hash)
        .bind(operator_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The console session `id_hash` if it is still good at `now`: not past its absolute
    /// expiry, used within `idle_ms`, its operator enabled. A session that is no longer good is
    /// deleted; a good one has its last use recorded.
    pub async fn console_session(
        &self,
        id_hash: &str,
        idle_ms: Millis,
        now: Millis,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let row = sqlx::query(
            "SELECT o.id, o.name, o.role, o.disabled, o.created_at, c.id_hash, c.csrf_token, \
             c.created_at AS session_created_at, c.last_seen_at, c.expires_at \
             FROM console_sessions c JOIN operators o ON o.id = c.operator_id \
             WHERE c.id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let operator = operator_from_row(&row)?;
        let session = ConsoleSession {
            id_hash: row.try_get("id_hash")?,
            csrf_token: row.try_get("csrf_token")?,
            created_at: row.try_get("session_created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            operator,
        };
        if session.operator.disabled
            || now >= session.expires_at
            || now - session.last_seen_at >= idle_ms
        {
            self.end_console_session(id_hash).await?;
            return Ok(None);
        }
        if now - session.last_seen_at >= TOUCH_INTERVAL_MS {
            sqlx::query("UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1")
                .bind(id_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(session))
    }

    /// Ends one console session (logout); ending an unknown one is not an error.
    pub async fn end_console_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every console session of an operator, but `keep` (the caller's own, if any);
    /// returns how many ended.
    pub async fn end_console_sessions_of(
        &self,
        operator_id: &str,
        keep: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE operator_id = $1 AND id_hash <> $2")
                .bind(operator_id)
                .bind(keep.unwrap_or(""))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Replaces an operator's password (stored as argon2id).
    pub async fn set_operator_password(
        &self,
        operator_id: &str,
        password: &Secret,
    ) -> Result<(), StoreError> {
        let hash = {
            let password = password.clone();
            tokio::task::spawn_blocking(move || crypto::hash_password(password.expose())).await??
        };
        let done = sqlx::query("UPDATE operators SET password_hash = $2 WHERE id = $1")
            .bind(operator_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        one_row(done, "operator", operator_id)
    }

    /// Records a failed login for `name` from `remote_addr` and forgets failures before
    /// `forget_before`.
    pub async fn record_login_failure(
        &self,
        name: &str,
        remote_addr: &str,
        forget_before: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE at < $1")
            .bind(forget_before)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO login_failures (name, remote_addr, at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(remote_addr)
            .bind(Store::now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Times of the failed logins for `name` since `since`, oldest first.
    pub async fn login_failures_for_name(
        &self,
        name: &str,
        since: Millis,
    ) -> Result<Vec<Millis>, StoreError> {
        self.failure_times("name", name, since).await
    }

    /// Times of the failed logins from `remote_addr` since `since`, oldest first.
    pub async fn login_failures_from(
        &self,
        remote_addr: &str,
        since: Millis,
    ) -> Result<Vec<Millis>, StoreError> {
        self.failure_times("remote_addr", remote_addr, since).await
    }

    /// Times of the failed logins whose `column` (a fixed column name) is `value`.
    async fn failure_times(
        &self,
        column: &'static str,
        value: &str,
        since: Millis,
    ) -> Result<Vec<Millis>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT at FROM login_failures WHERE {column} = $1 AND at >= $2 ORDER BY at"
        ))
        .bind(value)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<Millis, _>("at").map_err(StoreError::from))
            .collect()
    }

    /// Forgets the failed logins for `name` (after a successful login).
    pub async fn clear_login_failures(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;
    use crate::store::tests::on_both_backends;

    on_both_backends!(
        console_sessions_end_idle_expired_disabled_or_logged_out,
        login_failures_are_counted_per_name_and_address_and_forgotten,
        passwords_change
    );

    async fn console_sessions_end_idle_expired_disabled_or_logged_out(store: Store) {
        let (op, _) = store.create_operator("ada", Role::Admin).await.unwrap();
        let now = Store::now();
        store
            .create_console_session(&op.id, "h1", "csrf1", now + 60_000)
            .await
            .unwrap();
        let s = store
            .console_session("h1", 10_000, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.operator.name.as_str(), s.csrf_token.as_str()),
            ("ada", "csrf1")
        );
        assert!(
            store
                .console_session("nope", 10_000, now)
                .await
                .unwrap()
                .is_none()
        );
        // used 20 s later: the last use moves on, so it is not idle 15 s after that
        assert!(
            store
                .console_session("h1", 30_000, now + 20_000)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .console_session("h1", 30_000, now + 35_000)
                .await
                .unwrap()
                .is_some()
        );
        // past its absolute end: gone for good
        assert!(
            store
                .console_session("h1", i64::MAX, now + 60_000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .console_session("h1", i64::MAX, now)
                .await
                .unwrap()
                .is_none()
        );
        // a disabled operator's logins end; logout and end-all delete
        for h in ["h2", "h3", "h4"] {
            store
                .create_console_session(&op.id, h, "c", now + 60_000)
                .await
                .unwrap();
        }
        store.end_console_session("h2").await.unwrap();
        assert!(
            store
                .console_session("h2", i64::MAX, now)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store
                .end_console_sessions_of(&op.id, Some("h3"))
                .await
                .unwrap(),
            1
        );
        assert!(
            store
                .console_session("h3", i64::MAX, now)
                .await
                .unwrap()
                .is_some()
        );
        store.set_operator_disabled(&op.id, true).await.unwrap();
        assert!(
            store
                .console_session("h3", i64::MAX, now)
                .await
                .unwrap()
                .is_none()
        );
    }

    async fn login_failures_are_counted_per_name_and_address_and_forgotten(store: Store) {
        let start = Store::now();
        store
            .record_login_failure("ada", "10.0.0.1", 0)
            .await
            .unwrap();
        store
            .record_login_failure("ada", "10.0.0.2", 0)
            .await
            .unwrap();
        store
            .record_login_failure("bob", "10.0.0.1", 0)
            .await
            .unwrap();
        assert_eq!(
            store
                .login_failures_for_name("ada", start)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store
                .login_failures_from("10.0.0.1", start)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(
            store
                .login_failures_for_name("ada", Store::now() + 1)
                .await
                .unwrap()
                .is_empty()
        );
        store.clear_login_failures("ada").await.unwrap();
        assert!(
            store
                .login_failures_for_name("ada", 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.login_failures_for_name("bob", 0).await.unwrap().len(),
            1
        );
        // a new failure forgets those before the cut-off
        store
            .record_login_failure("carl", "10.0.0.3", Store::now() + 1)
            .await
            .unwrap();
        assert!(
            store
                .login_failures_for_name("bob", 0)
                .await
                .unwrap()
                .is_empty()
        );
    }

    async fn passwords_change(store: Store) {
        let (op, old) = store.create_operator("otto", Role::Operator).await.unwrap();
        let new = Secret::new("a much better password");
        store.set_operator_password(&op.id, &new).await.unwrap();
        assert!(
            store
                .verify_operator_password("otto", old.expose())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_operator_password("otto", new.expose())
                .await
                .unwrap()
                .is_some()
        );
        assert!(store.set_operator_password("missing", &new).await.is_err());
    }
}
