-- Appliance schema, version 5: the dialer's holdings (issue 7).
-- What the coordinator gave this box to dial, applied from the downlink in the same
-- transaction that records `downlink_applied`, so a replayed message is harmless.

-- Campaign briefs: the newest version wins. `brief` is the JSON of `CampaignBrief`.
CREATE TABLE dialer_campaigns (
    campaign INTEGER PRIMARY KEY NOT NULL,
    version  INTEGER NOT NULL,
    brief    TEXT NOT NULL
);

-- Pacing grants: one per campaign, each replacing the previous.
CREATE TABLE dialer_grants (
    campaign                INTEGER PRIMARY KEY NOT NULL,
    max_concurrent          INTEGER NOT NULL,
    max_attempts_per_minute INTEGER NOT NULL,
    abandon_budget          INTEGER NOT NULL,
    expires_at              INTEGER NOT NULL
);

-- Contact leases. `revoked` holds the coordinator's reason once revoked; `closed` is set
-- when the box has handed back what was left of it (expiry, revocation, stop).
CREATE TABLE dialer_leases (
    lease      INTEGER PRIMARY KEY NOT NULL,
    campaign   INTEGER NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked    TEXT,
    closed     INTEGER NOT NULL DEFAULT 0
);

-- The contacts of each lease and their dial state:
--   'pending'   not dialled yet;
--   'dialling'  an attempt was started (committed before the INVITE left);
--   'done'      its attempt result is in the outbox;
--   'refused'   the compliance gate refused it (reason kept) and it was handed back;
--   'returned'  handed back undialled (lease expired or revoked, campaign stopped).
-- A contact leaves 'pending' once and never comes back: no contact is dialled twice.
-- `result` holds the attempt result (JSON) between the call record and the attempt result
-- commits, so a restart in between reports the real outcome.
CREATE TABLE dialer_contacts (
    lease      INTEGER NOT NULL,
    contact    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    campaign   INTEGER NOT NULL,
    number     TEXT NOT NULL,
    body       TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    attempt    TEXT,
    started_at INTEGER,
    outcome    TEXT,
    reason     TEXT,
    result     TEXT,
    PRIMARY KEY (lease, contact)
);
CREATE INDEX dialer_contacts_number ON dialer_contacts (number);

-- Do-not-call entries received as deltas, per E.164 number. `entry` is the JSON of
-- `DncEntry` (its scope and expiry), so the same entry is stored once.
CREATE TABLE dialer_dnc (
    number TEXT NOT NULL,
    entry  TEXT NOT NULL,
    PRIMARY KEY (number, entry)
);

-- Calls answered by a person, per campaign, for the abandon tally of the profile's window.
CREATE TABLE dialer_live_answers (
    campaign  INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    abandoned INTEGER NOT NULL
);
CREATE INDEX dialer_live_answers_campaign ON dialer_live_answers (campaign, at);
