-- Web terminal recordings, PostgreSQL flavour (paired with migrations/sqlite/0003_terminal.sql).
-- One row per terminal session; the asciicast file itself lives under --recordings-dir. No
-- foreign keys: like the audit trail, recordings outlive the sessions they belong to until the
-- retention sweeper deletes them.
CREATE TABLE recordings (
    id             TEXT    NOT NULL PRIMARY KEY,
    session_id     TEXT    NOT NULL,
    system_id      TEXT    NOT NULL,
    operator_id    TEXT    NOT NULL,
    operator_name  TEXT    NOT NULL,
    file_name      TEXT    NOT NULL,
    input_recorded BOOLEAN NOT NULL DEFAULT FALSE,
    started_at     BIGINT  NOT NULL,
    ended_at       BIGINT,
    size_bytes     BIGINT
);
CREATE INDEX recordings_session ON recordings (session_id, started_at);
CREATE INDEX recordings_started ON recordings (started_at);
