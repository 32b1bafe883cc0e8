-- Coordinator schema, version 3: contacts, campaigns, compliance, leases, API tokens.
-- Kept in step with postgres/0003_contacts_campaigns.sql. Times are Unix milliseconds.

CREATE TABLE contact_lists (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    default_region TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

-- One row per phone number: the blind index makes a number unique across every import.
CREATE TABLE contacts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    number_index     BLOB NOT NULL UNIQUE,
    number_cipher    BLOB NOT NULL,
    number_masked    TEXT NOT NULL,
    time_zones       TEXT NOT NULL,
    external_id      TEXT,
    urgency          REAL NOT NULL DEFAULT 0,
    customer_value   REAL NOT NULL DEFAULT 0,
    fields           TEXT NOT NULL DEFAULT '{}',
    tags             TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    lease_id         INTEGER,
    lease_expires_at INTEGER
);

CREATE TABLE contact_list_members (
    list_id    INTEGER NOT NULL REFERENCES contact_lists(id),
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    PRIMARY KEY (list_id, contact_id)
);

CREATE TABLE contact_imports (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id        INTEGER NOT NULL REFERENCES contact_lists(id),
    state          TEXT NOT NULL,
    bytes_total    INTEGER,
    bytes_read     INTEGER NOT NULL DEFAULT 0,
    rows_seen      INTEGER NOT NULL DEFAULT 0,
    rows_imported  INTEGER NOT NULL DEFAULT 0,
    rows_duplicate INTEGER NOT NULL DEFAULT 0,
    rows_rejected  INTEGER NOT NULL DEFAULT 0,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    failure        TEXT
);

CREATE TABLE contact_import_errors (
    import_id INTEGER NOT NULL REFERENCES contact_imports(id),
    line      INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (import_id, line)
);

CREATE TABLE compliance_profiles (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    body       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- campaign_id NULL: the global list. expires_at NULL: permanent.
CREATE TABLE dnc_entries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    number_index BLOB NOT NULL,
    number_masked TEXT NOT NULL,
    campaign_id  INTEGER,
    expires_at   INTEGER,
    reason       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX dnc_entries_number ON dnc_entries (number_index);

CREATE TABLE campaigns (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    state      TEXT NOT NULL,
    profile_id INTEGER NOT NULL REFERENCES compliance_profiles(id),
    body       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE campaign_lists (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    list_id     INTEGER NOT NULL REFERENCES contact_lists(id),
    PRIMARY KEY (campaign_id, list_id)
);

-- Each contact's progress in each campaign that works it.
CREATE TABLE campaign_contacts (
    campaign_id     INTEGER NOT NULL REFERENCES campaigns(id),
    contact_id      INTEGER NOT NULL REFERENCES contacts(id),
    state           TEXT NOT NULL,
    priority        REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_outcome    TEXT,
    lease_id        INTEGER,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX campaign_contacts_ready ON campaign_contacts (campaign_id, state, priority DESC, next_attempt_at);

CREATE TABLE contact_leases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    appliance   TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    state       TEXT NOT NULL
);
CREATE INDEX contact_leases_expiry ON contact_leases (state, expires_at);

-- Every dial attempt reported by an appliance; attempt_uuid makes replays harmless.
CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_uuid TEXT NOT NULL UNIQUE,
    campaign_id  INTEGER NOT NULL,
    contact_id   INTEGER NOT NULL,
    number_index BLOB NOT NULL,
    appliance    TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    live         INTEGER NOT NULL,
    abandoned    INTEGER NOT NULL,
    started_at   INTEGER NOT NULL
);
CREATE INDEX attempts_number ON attempts (number_index, started_at);
CREATE INDEX attempts_campaign ON attempts (campaign_id, started_at);

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
