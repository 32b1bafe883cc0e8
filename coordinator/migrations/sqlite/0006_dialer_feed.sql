-- Coordinator schema, version 6: what the coordinator feeds each appliance's dialer and
-- what it hears back. Kept in step with postgres/0006_dialer_feed.sql.

-- Per appliance and item ('campaign:<id>', 'grant:<id>', 'roster', 'routing'): the version
-- last stored in its downlink outbox and a digest of the content, so a change is sent once.
-- The row with appliance '' and item 'dnc' holds the do-not-call change feed's cursor.
CREATE TABLE sync_feed (
    appliance  TEXT NOT NULL,
    item       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    digest     TEXT NOT NULL,
    sent_at    BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (appliance, item)
);

-- Every do-not-call change (added or removed), in order: the feed that turns into
-- DncDelta messages for the appliances holding the number.
CREATE TABLE dnc_changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    number_index BLOB NOT NULL,
    change       TEXT NOT NULL,
    campaign_id  BIGINT,
    expires_at   BIGINT,
    created_at   BIGINT NOT NULL
);

-- A lease is stored in its appliance's downlink outbox once (NULL: not yet).
ALTER TABLE contact_leases ADD COLUMN sent_at BIGINT;
CREATE INDEX contact_leases_holder ON contact_leases (appliance, campaign_id, state);
CREATE INDEX contacts_lease ON contacts (lease_id);

-- From call records: who last spoke to the contact and the disposition they set.
ALTER TABLE contacts ADD COLUMN last_agent_id BIGINT;
ALTER TABLE contacts ADD COLUMN last_disposition TEXT;

-- Attempt results from the uplink are settled into the contact queue after they commit.
ALTER TABLE attempt_results ADD COLUMN settled_at BIGINT;

-- Agent state changes as the appliances report them (analytics read these).
CREATE TABLE agent_events (
    appliance  TEXT NOT NULL,
    uplink_seq BIGINT NOT NULL,
    agent_id   BIGINT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT,
    at         BIGINT NOT NULL,
    call_id    TEXT,
    campaign_id BIGINT,
    PRIMARY KEY (appliance, uplink_seq)
);
CREATE INDEX agent_events_agent ON agent_events (agent_id, at);

-- Presence: firmware from the last Hello, online/offline from status and Hello.
CREATE TABLE appliance_presence (
    appliance    TEXT PRIMARY KEY NOT NULL,
    firmware     TEXT,
    online       BIGINT NOT NULL,
    since        BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

-- A lease the coordinator ended early (campaign paused or stopped, share removed) is
-- 'revoked'; its LeaseRevoked is stored in the appliance's outbox once (NULL: not yet).
ALTER TABLE contact_leases ADD COLUMN revoke_sent_at BIGINT;
CREATE INDEX attempt_results_unsettled ON attempt_results (settled_at);
