-- Tether relay schema, SQLite flavour (paired with migrations/postgres/0001_init.sql).
-- Times are unix milliseconds. Booleans are INTEGER 0/1: sqlx's Any driver cannot map a column
-- declared BOOLEAN on SQLite.

CREATE TABLE systems (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    system_key      TEXT    NOT NULL UNIQUE,
    secret_hash     TEXT    NOT NULL,
    support_enabled INTEGER NOT NULL DEFAULT 1 CHECK (support_enabled IN (0, 1)),
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

CREATE TABLE operators (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    BIGINT  NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT   NOT NULL PRIMARY KEY,
    operator_id  TEXT   NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    token_hash   TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_tokens_operator ON api_tokens (operator_id);

CREATE TABLE sessions (
    id             TEXT   NOT NULL PRIMARY KEY,
    system_id      TEXT   NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
    node_id        TEXT   NOT NULL DEFAULT '',
    status         TEXT   NOT NULL CHECK (status IN ('pending', 'active', 'closed', 'expired')),
    started_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    closed_at      BIGINT,
    closed_by      TEXT CHECK (closed_by IN ('replaced', 'disconnect', 'operator', 'timeout',
                                             'system_disabled', 'relay_restart')),
    services       TEXT,
    services_at    BIGINT,
    diagnostics    TEXT,
    diagnostics_at BIGINT,
    users_enc      TEXT,
    users_at       BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
-- One support window per (system, node): enforced, not just hoped for (the reference relies on an
-- advisory lock alone).
CREATE UNIQUE INDEX sessions_one_open_per_node ON sessions (system_id, node_id)
    WHERE status IN ('pending', 'active');
CREATE INDEX sessions_system ON sessions (system_id, created_at);
CREATE INDEX sessions_open_expiry ON sessions (expires_at) WHERE status IN ('pending', 'active');
CREATE INDEX sessions_created ON sessions (created_at);

-- An operator's close is sticky (reference B-21): the agent of a blocked (system, node) does not
-- get a new session until the block is lifted.
CREATE TABLE reopen_blocks (
    system_id  TEXT   NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
    node_id    TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (system_id, node_id)
);

-- No foreign keys: the audit trail outlives the systems and sessions it mentions.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    system_id   TEXT,
    session_id  TEXT,
    service     TEXT,
    remote_addr TEXT,
    detail      TEXT
);
CREATE INDEX audit_session ON audit (session_id);
CREATE INDEX audit_actor ON audit (actor);
CREATE INDEX audit_action ON audit (action);
