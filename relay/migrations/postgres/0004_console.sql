-- Operator console logins, PostgreSQL flavour (paired with migrations/sqlite/0004_console.sql).
-- A console session is found by the SHA-256 of its cookie value (the value itself is never
-- stored); it ends when idle too long, at its absolute expiry, at logout, or with its operator.
CREATE TABLE console_sessions (
    id_hash      TEXT   NOT NULL PRIMARY KEY,
    operator_id  TEXT   NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    csrf_token   TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_operator ON console_sessions (operator_id);

-- Failed console logins, for the lockout per operator name and the limit per client address.
-- Rows older than the lockout windows are deleted as new failures arrive.
CREATE TABLE login_failures (
    name        TEXT   NOT NULL,
    remote_addr TEXT   NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX login_failures_name ON login_failures (name, at);
CREATE INDEX login_failures_addr ON login_failures (remote_addr, at);
