-- Coordinator schema, version 3: contacts, campaigns, compliance, leases, API tokens.
-- Kept in step with sqlite/0003_contacts_campaigns.sql. Times are Unix milliseconds.

CREATE TABLE contact_lists (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    default_region TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- One row per phone number: the blind index makes a number unique across every import.
CREATE TABLE contacts (
    id               BIGSERIAL PRIMARY KEY,
    number_index     BYTEA NOT NULL UNIQUE,
    number_cipher    BYTEA NOT NULL,
    number_masked    TEXT NOT NULL,
    time_zones       TEXT NOT NULL,
    external_id      TEXT,
    urgency          DOUBLE PRECISION NOT NULL DEFAULT 0,
    customer_value   DOUBLE PRECISION NOT NULL DEFAULT 0,
    fields           TEXT NOT NULL DEFAULT '{}',
    tags             TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    lease_id         BIGINT,
    lease_expires_at BIGINT
);

CREATE TABLE contact_list_members (
    list_id    BIGINT NOT NULL REFERENCES contact_lists(id),
    contact_id BIGINT NOT NULL REFERENCES contacts(id),
    PRIMARY KEY (list_id, contact_id)
);

CREATE TABLE contact_imports (
    id             BIGSERIAL PRIMARY KEY,
    list_id        BIGINT NOT NULL REFERENCES contact_lists(id),
    state          TEXT NOT NULL,
    bytes_total    BIGINT,
    bytes_read     BIGINT NOT NULL DEFAULT 0,
    rows_seen      BIGINT NOT NULL DEFAULT 0,
    rows_imported  BIGINT NOT NULL DEFAULT 0,
    rows_duplicate BIGINT NOT NULL DEFAULT 0,
    rows_rejected  BIGINT NOT NULL DEFAULT 0,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    failure        TEXT
);

CREATE TABLE contact_import_errors (
    import_id BIGINT NOT NULL REFERENCES contact_imports(id),
    line      BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (import_id, line)
);

CREATE TABLE compliance_profiles (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    body       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- campaign_id NULL: the global list. expires_at NULL: permanent.
CREATE TABLE dnc_entries (
    id           BIGSERIAL PRIMARY KEY,
    number_index BYTEA NOT NULL,
    number_masked TEXT NOT NULL,
    campaign_id  BIGINT,
    expires_at   BIGINT,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX dnc_entries_number ON dnc_entries (number_index);

CREATE TABLE campaigns (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    state      TEXT NOT NULL,
    profile_id BIGINT NOT NULL REFERENCES compliance_profiles(id),
    body       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE campaign_lists (
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id),
    list_id     BIGINT NOT NULL REFERENCES contact_lists(id),
    PRIMARY KEY (campaign_id, list_id)
);

-- Each contact's progress in each campaign that works it.
CREATE TABLE campaign_contacts (
    campaign_id     BIGINT NOT NULL REFERENCES campaigns(id),
    contact_id      BIGINT NOT NULL REFERENCES contacts(id),
    state           TEXT NOT NULL,
    priority        DOUBLE PRECISION NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_outcome    TEXT,
    lease_id        BIGINT,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX campaign_contacts_ready ON campaign_contacts (campaign_id, state, priority DESC, next_attempt_at);

CREATE TABLE contact_leases (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id),
    appliance   TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       TEXT NOT NULL
);
CREATE INDEX contact_leases_expiry ON contact_leases (state, expires_at);

-- Every dial attempt reported by an appliance; attempt_uuid makes replays harmless.
CREATE TABLE attempts (
    id           BIGSERIAL PRIMARY KEY,
    attempt_uuid TEXT NOT NULL UNIQUE,
    campaign_id  BIGINT NOT NULL,
    contact_id   BIGINT NOT NULL,
    number_index BYTEA NOT NULL,
    appliance    TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    live         BIGINT NOT NULL,
    abandoned    BIGINT NOT NULL,
    started_at   BIGINT NOT NULL
);
CREATE INDEX attempts_number ON attempts (number_index, started_at);
CREATE INDEX attempts_campaign ON attempts (campaign_id, started_at);

CREATE TABLE api_tokens (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
