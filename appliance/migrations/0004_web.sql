-- The local web UI: the technician's admin account and login sessions.
CREATE TABLE web_admin (
    username      TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,          -- argon2id PHC string
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE web_session (
    token_hash    BLOB PRIMARY KEY NOT NULL, -- SHA-256 of the cookie value; the value is never stored
    username      TEXT NOT NULL REFERENCES web_admin(username) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);
