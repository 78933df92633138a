-- Diagnostics reports as they arrived, newest kept (the relay prunes to --diagnostics-history
-- per session); sessions.diagnostics still holds the latest one.
CREATE TABLE diagnostics_history (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    session_id     TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    overall_status TEXT    NOT NULL,
    report         TEXT    NOT NULL,
    received_at    BIGINT  NOT NULL
);
CREATE INDEX diagnostics_history_session ON diagnostics_history (session_id, id);
