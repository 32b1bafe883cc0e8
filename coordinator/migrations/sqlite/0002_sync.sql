-- Coordinator schema, version 2: appliances, their identity and the sync link (issue 5).
-- Kept in step with the other backend's 0002; only the blob type differs.

-- An appliance HQ registered. state: 'registered' (claim code issued), 'enrolled'
-- (certificate issued), 'revoked' (refused by the coordinator, left out of the broker ACL).
CREATE TABLE appliances (
    name           TEXT PRIMARY KEY NOT NULL,
    site           TEXT NOT NULL,
    state          TEXT NOT NULL,
    cert_serial    TEXT,
    cert_not_after BIGINT,
    created_at     BIGINT NOT NULL
);

-- One-time enrollment codes; only a hash is kept.
CREATE TABLE claim_codes (
    code_hash  TEXT PRIMARY KEY NOT NULL,
    appliance  TEXT NOT NULL REFERENCES appliances (name),
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

-- Per appliance: the highest uplink sequence number applied, advanced in the same
-- transaction as the message's effect, so a replay is harmless.
CREATE TABLE sync_uplink_state (
    appliance     TEXT PRIMARY KEY NOT NULL,
    high_water    BIGINT NOT NULL,
    applied_count BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    clock_skew_ms BIGINT NOT NULL
);

-- Finished calls as the appliances report them; `record` is the postcard-encoded CallRecord.
CREATE TABLE call_records (
    call_id     TEXT PRIMARY KEY NOT NULL,
    appliance   TEXT NOT NULL,
    uplink_seq  BIGINT NOT NULL,
    campaign_id BIGINT,
    outcome     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL,
    disposition TEXT,
    record      BLOB NOT NULL
);
CREATE INDEX call_records_by_appliance ON call_records (appliance, started_at);

-- Dial attempt outcomes; `record` is the postcard-encoded AttemptResult.
CREATE TABLE attempt_results (
    attempt_id  TEXT PRIMARY KEY NOT NULL,
    appliance   TEXT NOT NULL,
    uplink_seq  BIGINT NOT NULL,
    campaign_id BIGINT NOT NULL,
    contact_id  BIGINT NOT NULL,
    lease_id    BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    ended_at    BIGINT NOT NULL,
    record      BLOB NOT NULL
);

-- The latest telemetry per appliance (latest wins, as on the wire).
CREATE TABLE appliance_telemetry (
    appliance    TEXT PRIMARY KEY NOT NULL,
    received_at  BIGINT NOT NULL,
    active_calls BIGINT NOT NULL,
    outbox_depth BIGINT NOT NULL,
    record       BLOB NOT NULL
);

-- The downlink outbox: one row per message to an appliance not yet acknowledged by it.
-- `seq` is NULL until the message is first sent; `body` is the postcard-encoded Downlink.
CREATE TABLE sync_downlink (
    appliance  TEXT NOT NULL,
    id         BIGINT NOT NULL,
    seq        BIGINT,
    body       BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (appliance, id)
);

-- Per appliance: the cumulative ack of downlink messages.
CREATE TABLE sync_downlink_state (
    appliance TEXT PRIMARY KEY NOT NULL,
    acked     BIGINT NOT NULL
);
