//! The relay's persistent state: systems, operators, API tokens, support sessions, sticky
//! operator closes and the audit trail. All SQL of the relay lives here.
//!
//! One [`Store`] runs the same statements on SQLite and PostgreSQL through sqlx's `Any` driver;
//! the paired schemas live in `relay/migrations/{sqlite,postgres}` and are applied on
//! [`Store::connect`]. Portable column types only: TEXT (ids are UUID v4 strings, JSON documents
//! are text), BIGINT (times are unix milliseconds) and booleans (BOOLEAN on PostgreSQL, INTEGER
//! 0/1 on SQLite, read back through [`flag`]).

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::{AnyPool, Row as _};
use uuid::Uuid;

use crate::crypto::{self, CryptoError, DataKey, Secret};

#[cfg(test)]
pub(crate) mod tests;

mod cache;
pub use cache::SessionBrief;
mod diagnostics;
pub use diagnostics::{DEFAULT_DIAGNOSTICS_HISTORY, DiagnosticsEntry};
mod terminal;
pub use terminal::{Recording, TerminalRevoked};
mod console;
pub use console::ConsoleSession;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Longest system or operator name.
pub const MAX_NAME_LEN: usize = 64;
/// Diagnostics reports of one session are kept at most once per this interval.
pub const DIAGNOSTICS_MIN_INTERVAL_MS: Millis = 30_000;
/// Longest single extension of a session, in hours.
pub const MAX_EXTEND_HOURS: i64 = 168;
/// Longest total session lifetime, counted from its start, in hours.
pub const MAX_SESSION_HOURS: i64 = 720;
/// A token's `last_used_at` is written at most this often.
const TOKEN_TOUCH_INTERVAL_MS: Millis = 60_000;
/// Default and largest number of rows [`Store::list_audit`] returns.
const DEFAULT_AUDIT_LIMIT: i64 = 100;
const MAX_AUDIT_LIMIT: i64 = 10_000;
/// Connection pool sizes: SQLite serialises writers anyway, PostgreSQL is shared with others.
const SQLITE_POOL_SIZE: u32 = 4;
const POSTGRES_POOL_SIZE: u32 = 10;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const HOUR_MS: Millis = 3_600_000;

/// Operator permission level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Role, UnknownValue> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            _ => Err(UnknownValue::new("role", s, "admin, operator, viewer")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session is in its life: `pending` → `active` → `closed` | `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Pending,
    Active,
    Closed,
    Expired,
}

impl SessionStatus {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Active => "active",
            SessionStatus::Closed => "closed",
            SessionStatus::Expired => "expired",
        }
    }

    /// Whether the session is still a support window (`pending` or `active`).
    pub fn is_open(self) -> bool {
        matches!(self, SessionStatus::Pending | SessionStatus::Active)
    }
}

impl FromStr for SessionStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<SessionStatus, UnknownValue> {
        match s {
            "pending" => Ok(SessionStatus::Pending),
            "active" => Ok(SessionStatus::Active),
            "closed" => Ok(SessionStatus::Closed),
            "expired" => Ok(SessionStatus::Expired),
            _ => Err(UnknownValue::new(
                "session status",
                s,
                "pending, active, closed, expired",
            )),
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// A newer session of the same (system, node) took over.
    Replaced,
    /// The tunnel stayed down past the grace period.
    Disconnect,
    /// An operator closed it.
    Operator,
    /// It reached `expires_at`.
    Timeout,
    /// Support was disabled for the system.
    SystemDisabled,
    /// The relay restarted and the agent did not come back.
    RelayRestart,
}

impl CloseReason {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Replaced => "replaced",
            CloseReason::Disconnect => "disconnect",
            CloseReason::Operator => "operator",
            CloseReason::Timeout => "timeout",
            CloseReason::SystemDisabled => "system_disabled",
            CloseReason::RelayRestart => "relay_restart",
        }
    }

    /// The status a session ends in for this reason.
    fn final_status(self) -> SessionStatus {
        match self {
            CloseReason::Timeout => SessionStatus::Expired,
            _ => SessionStatus::Closed,
        }
    }
}

impl FromStr for CloseReason {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<CloseReason, UnknownValue> {
        match s {
            "replaced" => Ok(CloseReason::Replaced),
            "disconnect" => Ok(CloseReason::Disconnect),
            "operator" => Ok(CloseReason::Operator),
            "timeout" => Ok(CloseReason::Timeout),
            "system_disabled" => Ok(CloseReason::SystemDisabled),
            "relay_restart" => Ok(CloseReason::RelayRestart),
            _ => Err(UnknownValue::new(
                "close reason",
                s,
                "replaced, disconnect, operator, timeout, system_disabled, relay_restart",
            )),
        }
    }
}

/// A string that is not one of an enumeration's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

impl UnknownValue {
    fn new(kind: &'static str, value: &str, expected: &'static str) -> UnknownValue {
        UnknownValue {
            kind,
            value: value.to_owned(),
            expected,
        }
    }
}

/// An appliance allowed to open tunnels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct System {
    pub id: String,
    pub name: String,
    pub system_key: String,
    pub support_enabled: bool,
    pub created_at: Millis,
}

/// Credentials of a new system; the secret exists nowhere else, so show it once and drop it.
pub struct SystemCredentials {
    pub key: String,
    pub secret: Secret,
}

/// A person (or program) using the operator API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Operator {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: Millis,
}

/// One support window for one (system, node).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub id: String,
    pub system_id: String,
    pub system_name: String,
    /// `None` for a single-node system.
    pub node_id: Option<String>,
    pub status: SessionStatus,
    pub started_at: Millis,
    pub expires_at: Millis,
    pub closed_at: Option<Millis>,
    pub closed_by: Option<CloseReason>,
    pub services: Option<serde_json::Value>,
    pub services_at: Option<Millis>,
    pub diagnostics: Option<serde_json::Value>,
    pub diagnostics_at: Option<Millis>,
    /// Whether an (encrypted) users report is stored; fetch it with [`Store::users_for_session`].
    pub has_users: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Result of checking a system's tunnel credentials.
pub enum AuthOutcome {
    /// Right key and secret, support enabled.
    Valid(System),
    /// Unknown key or wrong secret (indistinguishable on purpose).
    Invalid,
    /// Right key and secret, but support is disabled for the system.
    Disabled(System),
}

/// Which sessions [`Store::list_sessions`] returns.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub status: Option<SessionStatus>,
    /// System id or name.
    pub system: Option<String>,
}

/// One audit event to record.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub system_id: Option<String>,
    pub session_id: Option<String>,
    pub service: Option<String>,
    pub remote_addr: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// One recorded audit event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub system_id: Option<String>,
    pub session_id: Option<String>,
    pub service: Option<String>,
    pub remote_addr: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Which audit events [`Store::list_audit`] returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub session_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// At most this many (default 100, capped at 10 000).
    pub limit: Option<i64>,
}

/// What went wrong in the store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller named something that does not exist.
    #[error("{what} {key:?} not found")]
    NotFound { what: &'static str, key: String },
    /// The request clashes with the current state (name taken, session already closed).
    #[error("{0}")]
    Conflict(String),
    /// The caller passed an unacceptable value; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be opened (the URL is shown without its password).
    #[error("cannot open database {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The schema migrations could not be applied.
    #[error("cannot apply schema migrations to database {url}")]
    MigrateDatabase {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("schema migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cryptography failed")]
    Crypto(#[from] CryptoError),
    /// A stored value is not what this relay writes (manual edit or a newer schema).
    #[error("unexpected stored value: {0}")]
    Corrupt(String),
    /// A blocking helper task (password hashing) panicked or was cancelled.
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the relay database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    key: Arc<DataKey>,
    cache: Arc<cache::Caches>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

const SYSTEM_COLUMNS: &str = "id, name, system_key, support_enabled, created_at";
const OPERATOR_COLUMNS: &str = "id, name, role, disabled, created_at";
const SESSION_SELECT: &str = "SELECT s.id, s.system_id, y.name AS system_name, s.node_id, \
     s.status, s.started_at, s.expires_at, s.closed_at, s.closed_by, s.services, s.services_at, \
     s.diagnostics, s.diagnostics_at, s.users_enc IS NOT NULL AS has_users, s.created_at, \
     s.updated_at FROM sessions s JOIN systems y ON y.id = s.system_id";
const OPEN: &str = "('pending', 'active')";

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`
    /// (`sqlite://path`, `sqlite::memory:`, `postgres://…`).
    /// A key for `purpose` derived from the data key (see [`DataKey::derive`]).
    pub fn derived_key(&self, purpose: &[u8]) -> [u8; 32] {
        self.key.derive(purpose)
    }

    pub async fn connect(url: &str, data_key: DataKey) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let connect_err = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL {shown}: expected sqlite://<path>, sqlite::memory: \
                 or postgres://…"
            )));
        };
        let pool = match backend {
            Backend::Sqlite if is_sqlite_memory(url) => {
                // Every connection to `:memory:` is a separate database: keep exactly one,
                // forever.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await
                    .map_err(connect_err)?
            }
            Backend::Sqlite => {
                let file_url = prepare_sqlite_file(url).await.map_err(connect_err)?;
                AnyPoolOptions::new()
                    .max_connections(SQLITE_POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(&file_url)
                    .await
                    .map_err(connect_err)?
            }
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(POSTGRES_POOL_SIZE)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await
                .map_err(connect_err)?,
        };
        let migrated = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await,
        };
        migrated.map_err(|source| StoreError::MigrateDatabase {
            url: shown.clone(),
            source,
        })?;
        Ok(Store {
            pool,
            backend,
            key: Arc::new(data_key),
            cache: Arc::new(cache::Caches::new(cache::TTL)),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Wall-clock time in unix milliseconds.
    pub fn now() -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
            .unwrap_or(0)
    }

    // ----- systems -----

    /// Registers a system and returns its credentials (the secret is not stored, only its hash).
    pub async fn create_system(
        &self,
        name: &str,
    ) -> Result<(System, SystemCredentials), StoreError> {
        validate_name("system", name)?;
        let key = crypto::generate_system_key()?;
        let secret = crypto::generate_system_secret()?;
        let secret_hash = crypto::hash_system_secret(secret.expose())?;
        let id = Uuid::new_v4().to_string();
        let now = Store::now();
        sqlx::query(
            "INSERT INTO systems (id, name, system_key, secret_hash, support_enabled, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(&key)
        .bind(&secret_hash)
        .bind(true)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("system {name:?} already exists")))?;
        let system = System {
            id,
            name: name.to_owned(),
            system_key: key.clone(),
            support_enabled: true,
            created_at: now,
        };
        Ok((system, SystemCredentials { key, secret }))
    }

    /// Every system, by name.
    pub async fn list_systems(&self) -> Result<Vec<System>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SYSTEM_COLUMNS} FROM systems ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(system_from_row).collect()
    }

    /// The system whose id, key or name (in that order of preference) is `name_key_or_id`.
    pub async fn find_system(&self, name_key_or_id: &str) -> Result<Option<System>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = $1 OR system_key = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 WHEN system_key = $1 THEN 1 ELSE 2 END LIMIT 1"
        ))
        .bind(name_key_or_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(system_from_row).transpose()
    }

    /// Enables or disables support for a system. Enabling also lifts every sticky operator close
    /// of the system.
    pub async fn set_system_enabled(&self, id: &str, enabled: bool) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE systems SET support_enabled = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(enabled)
                .bind(Store::now())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("system", id));
        }
        if enabled {
            sqlx::query("DELETE FROM reopen_blocks WHERE system_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.cache.sessions.clear();
        Ok(())
    }

    /// Deletes a system with its sessions and reopen blocks (audit rows stay).
    pub async fn delete_system(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM systems WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.cache.sessions.clear();
        one_row(done, "system", id)
    }

    /// Checks tunnel credentials. Unknown keys cost the same hash work as known ones.
    pub async fn verify_system(&self, key: &str, secret: &str) -> Result<AuthOutcome, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SYSTEM_COLUMNS}, secret_hash FROM systems WHERE system_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            crypto::burn_system_secret_check(secret);
            return Ok(AuthOutcome::Invalid);
        };
        let stored: String = row.try_get("secret_hash")?;
        if !crypto::verify_system_secret(&stored, secret) {
            return Ok(AuthOutcome::Invalid);
        }
        let system = system_from_row(&row)?;
        Ok(if system.support_enabled {
            AuthOutcome::Valid(system)
        } else {
            AuthOutcome::Disabled(system)
        })
    }

    // ----- operators and API tokens -----

    /// Creates an operator with a generated password (returned once, stored as argon2id).
    pub async fn create_operator(
        &self,
        name: &str,
        role: Role,
    ) -> Result<(Operator, Secret), StoreError> {
        validate_name("operator", name)?;
        let password = crypto::generate_password()?;
        let hash = {
            let password = password.clone();
            tokio::task::spawn_blocking(move || crypto::hash_password(password.expose())).await??
        };
        let id = Uuid::new_v4().to_string();
        let now = Store::now();
        sqlx::query(
            "INSERT INTO operators (id, name, role, password_hash, disabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(role.as_str())
        .bind(&hash)
        .bind(false)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("operator {name:?} already exists")))?;
        let operator = Operator {
            id,
            name: name.to_owned(),
            role,
            disabled: false,
            created_at: now,
        };
        Ok((operator, password))
    }

    /// The operator whose id or name (id preferred) is `name_or_id`.
    pub async fn find_operator(&self, name_or_id: &str) -> Result<Option<Operator>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(operator_from_row).transpose()
    }

    /// Every operator, by name.
    pub async fn list_operators(&self) -> Result<Vec<Operator>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(operator_from_row).collect()
    }

    /// Disables (or re-enables) an operator: a disabled one can neither log in nor use tokens.
    pub async fn set_operator_disabled(&self, id: &str, disabled: bool) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE operators SET disabled = $2 WHERE id = $1")
            .bind(id)
            .bind(disabled)
            .execute(&self.pool)
            .await?;
        self.cache.tokens.clear();
        one_row(done, "operator", id)
    }

    /// The enabled operator `name` if `password` is theirs. Unknown names cost the same argon2
    /// work as known ones.
    pub async fn verify_operator_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<Operator>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS}, password_hash FROM operators WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let (operator, phc) = match row {
            Some(row) => (
                Some(operator_from_row(&row)?),
                Some(row.try_get::<String, _>("password_hash")?),
            ),
            None => (None, None),
        };
        let password = Secret::new(password);
        let matches = tokio::task::spawn_blocking(move || {
            let phc = phc.unwrap_or_else(|| dummy_password_hash().to_owned());
            crypto::verify_password(&phc, password.expose())
        })
        .await?;
        Ok(operator.filter(|op| matches && !op.disabled))
    }

    /// Issues an API token for an enabled operator (returned once, stored as its SHA-256).
    pub async fn create_token(&self, operator_name_or_id: &str) -> Result<Secret, StoreError> {
        let operator = self
            .find_operator(operator_name_or_id)
            .await?
            .ok_or_else(|| not_found("operator", operator_name_or_id))?;
        if operator.disabled {
            return Err(StoreError::Conflict(format!(
                "operator {:?} is disabled",
                operator.name
            )));
        }
        let token = crypto::generate_token()?;
        sqlx::query(
            "INSERT INTO api_tokens (id, operator_id, token_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(&operator.id)
        .bind(crypto::hash_token(token.expose()))
        .bind(Store::now())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The enabled operator owning `token`; `None` for an unknown token or a disabled operator.
    ///
    /// A valid token is remembered for [`cache::TTL`]: disabling an operator through this store
    /// takes effect at once, through another process within that time.
    pub async fn operator_for_token(&self, token: &str) -> Result<Option<Operator>, StoreError> {
        let hash = crypto::hash_token(token);
        let started = Instant::now();
        if let Some(operator) = self.cache.tokens.get(&hash, started) {
            return Ok(Some(operator));
        }
        let epoch = self.cache.tokens.epoch();
        let row = sqlx::query(
            "SELECT o.id, o.name, o.role, o.disabled, o.created_at, t.id AS token_id, \
             t.last_used_at FROM api_tokens t JOIN operators o ON o.id = t.operator_id \
             WHERE t.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let operator = operator_from_row(&row)?;
        if operator.disabled {
            return Ok(None);
        }
        // Aged from before the read, so no answer outlives the TTL counted from the database.
        self.cache
            .tokens
            .insert(hash, operator.clone(), started, epoch);
        let now = Store::now();
        let last_used: Option<Millis> = row.try_get("last_used_at")?;
        if last_used.is_none_or(|t| t <= now - TOKEN_TOUCH_INTERVAL_MS) {
            let token_id: String = row.try_get("token_id")?;
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(token_id)
            .bind(now)
            .bind(now - TOKEN_TOUCH_INTERVAL_MS)
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(operator))
    }

    // ----- sessions -----

    /// The open (pending or active) session of `(system, node)`, if any.
    pub async fn open_session_for(
        &self,
        system_id: &str,
        node_id: Option<&str>,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(&format!(
            "{SESSION_SELECT} WHERE s.system_id = $1 AND s.node_id = $2 AND s.status IN {OPEN} \
             ORDER BY s.created_at DESC, s.id LIMIT 1"
        ))
        .bind(system_id)
        .bind(node_key(node_id))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Starts a new pending session for `(system, node)`, closing any open one as `replaced`,
    /// atomically.
    pub async fn create_session(
        &self,
        system_id: &str,
        node_id: Option<&str>,
        lifetime_ms: Millis,
    ) -> Result<Session, StoreError> {
        if lifetime_ms <= 0 {
            return Err(StoreError::Invalid(format!(
                "session lifetime must be positive, got {lifetime_ms} ms"
            )));
        }
        let node = node_key(node_id);
        let now = Store::now();
        let id = Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await?;
        // Serialises creators for this system (a row lock on PostgreSQL, the write lock on
        // SQLite) so two concurrent connects cannot both insert; also proves the system exists.
        let locked = sqlx::query("UPDATE systems SET updated_at = updated_at WHERE id = $1")
            .bind(system_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(not_found("system", system_id));
        }
        let replaced = sqlx::query(&format!(
            "UPDATE sessions SET status = 'closed', closed_at = $3, closed_by = 'replaced', \
             users_enc = NULL, users_at = NULL, updated_at = $3 \
             WHERE system_id = $1 AND node_id = $2 AND status IN {OPEN} RETURNING id"
        ))
        .bind(system_id)
        .bind(node)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sessions (id, system_id, node_id, status, started_at, expires_at, \
             created_at, updated_at) VALUES ($1, $2, $3, 'pending', $4, $5, $4, $4)",
        )
        .bind(&id)
        .bind(system_id)
        .bind(node)
        .bind(now)
        .bind(now.saturating_add(lifetime_ms))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("{SESSION_SELECT} WHERE s.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let session = session_from_row(&row)?;
        tx.commit().await?;
        for row in &replaced {
            self.cache.sessions.remove(&row.try_get::<String, _>("id")?);
        }
        Ok(session)
    }

    /// Marks a pending session active; a no-op if it already is. `Conflict` if it has ended.
    pub async fn activate_session(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = 'active', updated_at = $2 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(Store::now())
        .execute(&self.pool)
        .await?;
        self.cache.sessions.remove(id);
        if done.rows_affected() > 0 {
            return Ok(());
        }
        match self.session_status(id).await? {
            SessionStatus::Active => Ok(()),
            status => Err(StoreError::Conflict(format!(
                "session {id} is {status} and cannot be activated"
            ))),
        }
    }

    /// Ends an open session for `reason` (`expired` for [`CloseReason::Timeout`], else `closed`)
    /// and erases its users report. Returns whether the session was open.
    pub async fn close_session(&self, id: &str, reason: CloseReason) -> Result<bool, StoreError> {
        let now = Store::now();
        let done = sqlx::query(&format!(
            "UPDATE sessions SET status = $2, closed_at = $3, closed_by = $4, users_enc = NULL, \
             users_at = NULL, updated_at = $3 WHERE id = $1 AND status IN {OPEN}"
        ))
        .bind(id)
        .bind(reason.final_status().as_str())
        .bind(now)
        .bind(reason.as_str())
        .execute(&self.pool)
        .await?;
        self.cache.sessions.remove(id);
        Ok(done.rows_affected() > 0)
    }

    /// Expires every open session whose `expires_at` is before `now`, in one statement, and
    /// returns their ids (so exactly those tunnels get closed, fixing reference B-14).
    pub async fn expire_due_sessions(&self, now: Millis) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE sessions SET status = 'expired', closed_at = $1, closed_by = 'timeout', \
             users_enc = NULL, users_at = NULL, updated_at = $1 \
             WHERE expires_at < $1 AND status IN {OPEN} RETURNING id"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            self.cache.sessions.remove(id);
        }
        Ok(ids)
    }

    /// Pushes an open session's expiry back by `hours` (1..=168), never past 720 h after its
    /// start.
    pub async fn extend_session(&self, id: &str, hours: i64) -> Result<Session, StoreError> {
        if !(1..=MAX_EXTEND_HOURS).contains(&hours) {
            return Err(StoreError::Invalid(format!(
                "a session can be extended by 1 to {MAX_EXTEND_HOURS} hours at a time, not {hours}"
            )));
        }
        let add = hours * HOUR_MS;
        let done = sqlx::query(&format!(
            "UPDATE sessions SET expires_at = expires_at + $2, updated_at = $3 \
             WHERE id = $1 AND status IN {OPEN} AND expires_at + $2 - started_at <= $4"
        ))
        .bind(id)
        .bind(add)
        .bind(Store::now())
        .bind(MAX_SESSION_HOURS * HOUR_MS)
        .execute(&self.pool)
        .await?;
        self.cache.sessions.remove(id);
        let session = self
            .get_session(id)
            .await?
            .ok_or_else(|| not_found("session", id))?;
        if done.rows_affected() > 0 {
            return Ok(session);
        }
        if !session.status.is_open() {
            return Err(StoreError::Invalid(format!(
                "session {id} is {} and can no longer be extended",
                session.status
            )));
        }
        let total_ms = session.expires_at + add - session.started_at;
        Err(StoreError::Invalid(format!(
            "a session lasts at most {MAX_SESSION_HOURS} hours from its start; {hours} more hours \
             would make it {} hours",
            total_ms.div_euclid(HOUR_MS) + i64::from(total_ms.rem_euclid(HOUR_MS) != 0)
        )))
    }

    /// The few facts operator requests need of session `id`. An open session is remembered
    /// for [`cache::TTL`]: every change of it through this store takes effect at once, changes
    /// through another process within that time.
    pub async fn session_brief(&self, id: &str) -> Result<Option<SessionBrief>, StoreError> {
        let started = Instant::now();
        if let Some(brief) = self.cache.sessions.get(id, started) {
            return Ok(Some(brief));
        }
        let epoch = self.cache.sessions.epoch();
        let row = sqlx::query(
            "SELECT s.id, s.system_id, y.name AS system_name, s.status \
             FROM sessions s JOIN systems y ON y.id = s.system_id WHERE s.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let brief = SessionBrief {
            id: row.try_get("id")?,
            system_id: row.try_get("system_id")?,
            system_name: row.try_get("system_name")?,
            status: parse_column(&row, "status")?,
        };
        if brief.status.is_open() {
            self.cache
                .sessions
                .insert(id.to_owned(), brief.clone(), started, epoch);
        }
        Ok(Some(brief))
    }

    /// The session with this id.
    pub async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(&format!("{SESSION_SELECT} WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Sessions matching `filter`, newest first.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(status) = filter.status {
            binds.push(status.as_str().to_owned());
            conditions.push(format!("s.status = ${}", binds.len()));
        }
        if let Some(system) = &filter.system {
            binds.push(system.clone());
            let n = binds.len();
            conditions.push(format!("(y.id = ${n} OR y.name = ${n})"));
        }
        let sql = format!(
            "{SESSION_SELECT}{} ORDER BY s.created_at DESC, s.id DESC",
            where_clause(&conditions)
        );
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Every open session, oldest first (to reconcile with live tunnels after a restart).
    pub async fn open_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SESSION_SELECT} WHERE s.status IN {OPEN} ORDER BY s.created_at, s.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Stores the session's service manifest (replacing the previous one).
    pub async fn save_services(
        &self,
        id: &str,
        manifest: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let now = Store::now();
        let done = sqlx::query(
            "UPDATE sessions SET services = $2, services_at = $3, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(manifest.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        one_row(done, "session", id)
    }

    /// Stores a diagnostics report unless the previous one is less than 30 s old (then `false`).
    pub async fn save_diagnostics(
        &self,
        id: &str,
        report: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let now = Store::now();
        let done = sqlx::query(
            "UPDATE sessions SET diagnostics = $2, diagnostics_at = $3, updated_at = $3 \
             WHERE id = $1 AND (diagnostics_at IS NULL OR diagnostics_at <= $4)",
        )
        .bind(id)
        .bind(report.to_string())
        .bind(now)
        .bind(now - DIAGNOSTICS_MIN_INTERVAL_MS)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        self.session_status(id).await?;
        Ok(false)
    }

    /// Stores an open session's users report, encrypted; a later report replaces it.
    pub async fn save_users(&self, id: &str, report_json: &[u8]) -> Result<(), StoreError> {
        let sealed = self.key.encrypt(report_json, id.as_bytes())?;
        let now = Store::now();
        let done = sqlx::query(&format!(
            "UPDATE sessions SET users_enc = $2, users_at = $3, updated_at = $3 \
             WHERE id = $1 AND status IN {OPEN}"
        ))
        .bind(id)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        let status = self.session_status(id).await?;
        Err(StoreError::Conflict(format!(
            "session {id} is {status}: users reports are kept only while a session is open"
        )))
    }

    /// The decrypted users report of a session, if one is stored.
    pub async fn users_for_session(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT users_enc FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("session", id))?;
        let sealed: Option<String> = row.try_get("users_enc")?;
        sealed
            .map(|s| self.key.decrypt(&s, id.as_bytes()))
            .transpose()
            .map_err(StoreError::from)
    }

    /// The newest users report of any open session of the system (for `USERS_FETCH`).
    pub async fn users_for_system(&self, system_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT id, users_enc FROM sessions WHERE system_id = $1 AND status IN {OPEN} \
             AND users_enc IS NOT NULL ORDER BY users_at DESC, id LIMIT 1"
        ))
        .bind(system_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let sealed: String = row.try_get("users_enc")?;
        Ok(Some(self.key.decrypt(&sealed, id.as_bytes())?))
    }

    /// Makes an operator's close sticky: `(system, node)` gets no new session until
    /// [`Store::unblock_reopen`] or the system is (re-)enabled.
    pub async fn block_reopen(
        &self,
        system_id: &str,
        node_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reopen_blocks (system_id, node_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (system_id, node_id) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(system_id)
        .bind(node_key(node_id))
        .bind(Store::now())
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                not_found("system", system_id)
            }
            _ => StoreError::Database(e),
        })?;
        Ok(())
    }

    /// Lifts the sticky close of `(system, node)`; returns whether one existed.
    pub async fn unblock_reopen(
        &self,
        system_id: &str,
        node_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM reopen_blocks WHERE system_id = $1 AND node_id = $2")
            .bind(system_id)
            .bind(node_key(node_id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether an operator's close of `(system, node)` is still in force.
    pub async fn is_reopen_blocked(
        &self,
        system_id: &str,
        node_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM reopen_blocks WHERE system_id = $1 AND node_id = $2")
            .bind(system_id)
            .bind(node_key(node_id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    // ----- audit -----

    /// Records an audit event now.
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, system_id, session_id, service, remote_addr, \
             detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Store::now())
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.system_id)
        .bind(entry.session_id)
        .bind(entry.service)
        .bind(entry.remote_addr)
        .bind(entry.detail.map(|d| d.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit events matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<&str> = Vec::new();
        for (column, value) in [
            ("session_id", &filter.session_id),
            ("actor", &filter.actor),
            ("action", &filter.action),
        ] {
            if let Some(value) = value {
                binds.push(value);
                conditions.push(format!("{column} = ${}", binds.len()));
            }
        }
        let limit = filter
            .limit
            .unwrap_or(DEFAULT_AUDIT_LIMIT)
            .clamp(0, MAX_AUDIT_LIMIT);
        let sql = format!(
            "SELECT id, at, actor, action, system_id, session_id, service, remote_addr, detail \
             FROM audit{} ORDER BY id DESC LIMIT {limit}",
            where_clause(&conditions)
        );
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    system_id: row.try_get("system_id")?,
                    session_id: row.try_get("session_id")?,
                    service: row.try_get("service")?,
                    remote_addr: row.try_get("remote_addr")?,
                    detail: json_column(row, "detail")?,
                })
            })
            .collect()
    }

    /// The status of a session, `NotFound` if there is none.
    async fn session_status(&self, id: &str) -> Result<SessionStatus, StoreError> {
        let row = sqlx::query("SELECT status FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("session", id))?;
        parse_column(&row, "status")
    }
}

fn not_found(what: &'static str, key: &str) -> StoreError {
    StoreError::NotFound {
        what,
        key: key.to_owned(),
    }
}

/// `NotFound` unless the statement touched a row.
fn one_row(done: AnyQueryResult, what: &'static str, id: &str) -> Result<(), StoreError> {
    if done.rows_affected() == 0 {
        return Err(not_found(what, id));
    }
    Ok(())
}

fn unique_to_conflict(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Database(e),
    }
}

/// Names of systems and operators: 1..=64 of `[A-Za-z0-9._-]`.
fn validate_name(what: &str, name: &str) -> Result<(), StoreError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return Err(StoreError::Invalid(format!(
            "{what} name {name:?} is invalid: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' \
             or '-'"
        )));
    }
    Ok(())
}

/// The stored form of a node id: the empty string for a single-node system.
fn node_key(node_id: Option<&str>) -> &str {
    node_id.unwrap_or("")
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// Reads a boolean: PostgreSQL returns BOOLEAN, SQLite an INTEGER 0/1.
fn flag(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

fn parse_column<T>(row: &AnyRow, column: &str) -> Result<T, StoreError>
where
    T: FromStr<Err = UnknownValue>,
{
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e: UnknownValue| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn json_column(row: &AnyRow, column: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("column {column} is not JSON: {e}")))
    })
    .transpose()
}

fn system_from_row(row: &AnyRow) -> Result<System, StoreError> {
    Ok(System {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        system_key: row.try_get("system_key")?,
        support_enabled: flag(row, "support_enabled")?,
        created_at: row.try_get("created_at")?,
    })
}

fn operator_from_row(row: &AnyRow) -> Result<Operator, StoreError> {
    Ok(Operator {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: parse_column(row, "role")?,
        disabled: flag(row, "disabled")?,
        created_at: row.try_get("created_at")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<Session, StoreError> {
    let node_id: String = row.try_get("node_id")?;
    let closed_by: Option<String> = row.try_get("closed_by")?;
    Ok(Session {
        id: row.try_get("id")?,
        system_id: row.try_get("system_id")?,
        system_name: row.try_get("system_name")?,
        node_id: (!node_id.is_empty()).then_some(node_id),
        status: parse_column(row, "status")?,
        started_at: row.try_get("started_at")?,
        expires_at: row.try_get("expires_at")?,
        closed_at: row.try_get("closed_at")?,
        closed_by: closed_by
            .map(|c| {
                c.parse().map_err(|e: UnknownValue| {
                    StoreError::Corrupt(format!("column closed_by: {e}"))
                })
            })
            .transpose()?,
        services: json_column(row, "services")?,
        services_at: row.try_get("services_at")?,
        diagnostics: json_column(row, "diagnostics")?,
        diagnostics_at: row.try_get("diagnostics_at")?,
        has_users: flag(row, "has_users")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// An argon2id hash of a random password, verified against when the operator name is unknown
/// so that lookups of unknown names take as long as real ones.
fn dummy_password_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        crypto::generate_password()
            .and_then(|p| crypto::hash_password(p.expose()))
            .unwrap_or_default()
    })
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Creates the SQLite file if missing and switches it to WAL (a property of the file, so every
/// later connection inherits it); returns the URL of the file by its canonical path. Foreign
/// keys and the busy timeout are sqlx defaults applied to every connection.
///
/// The `Any` driver re-parses the URL as a generic URL for every connection, which rewrites
/// relative paths lexically (`sqlite://./../x.db` becomes `sqlite://./x.db`); an absolute
/// path survives that.
async fn prepare_sqlite_file(url: &str) -> Result<String, sqlx::Error> {
    use sqlx::ConnectOptions as _;
    use sqlx::Connection as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    options.connect().await?.close().await?;
    let canonical = std::fs::canonicalize(options.get_filename()).map_err(sqlx::Error::Io)?;
    Ok(options.filename(canonical).to_url_lossy().to_string())
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = url[..rest_start].to_owned();
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(userinfo),
            }
            out.push_str(&rest[at..authority_end]);
        }
        None => out.push_str(&rest[..authority_end]),
    }
    let tail = &rest[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}
