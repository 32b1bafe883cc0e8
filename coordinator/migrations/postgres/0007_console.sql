-- Coordinator schema, version 7: the HQ web console's users, sessions and audit log.
-- Kept in step with sqlite/0007_console.sql (integer types are the only difference).

-- role: 'admin', 'supervisor', 'compliance', 'viewer'. enabled: 0 or 1.
CREATE TABLE console_users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    enabled       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A session is stored under the SHA-256 (hex) of its cookie value; csrf_token is the
-- token every form of the session must return.
CREATE TABLE console_sessions (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    user_id      BIGINT NOT NULL REFERENCES console_users(id),
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Every change made through the console: who, what, when, and the object before and after
-- (JSON text; NULL when the object did not exist before or no longer exists after).
CREATE TABLE console_audit (
    id        BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX console_audit_at ON console_audit (at);

-- The console's live figures and analytics read the sync's uplink tables by time.
CREATE INDEX console_attempt_results_ended ON attempt_results (ended_at);
CREATE INDEX console_call_records_ended ON call_records (ended_at);
