-- Appliance schema, version 2: the sync outbox (issue 5).
-- One row per uplink message not yet acknowledged by the coordinator. `seq` is NULL until
-- the message is first handed out; then it is fixed for good. `body` is the postcard-encoded
-- `Uplink` (the envelope is built at send time).
CREATE TABLE sync_outbox (
    id           INTEGER PRIMARY KEY NOT NULL,
    class        INTEGER NOT NULL,
    coalesce_key TEXT,
    seq          INTEGER UNIQUE,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);

-- Link counters: `uplink_acked` (cumulative ack from the coordinator) and
-- `downlink_applied` (high-water mark of applied downlink messages).
CREATE TABLE sync_state (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
