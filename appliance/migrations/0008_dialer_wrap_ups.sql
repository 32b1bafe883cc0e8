-- Appliance schema, version 8: call records waiting for an agent's disposition (issue 7).
-- A call an agent talked on is released at the hang-up: its attempt result goes to the
-- outbox then, in the same transaction that keeps its call record here. The record goes to
-- the outbox when the agent saves a disposition or the wrap-up ends, in the transaction that
-- deletes its row; a restart sends the rows a previous run left, with the disposition the
-- desk saved for the call (`agent_disposition`), if any. `record` is the JSON of
-- `CallRecord` as at the hang-up.
CREATE TABLE dialer_wrap_ups (
    call_id TEXT PRIMARY KEY NOT NULL,
    record  TEXT NOT NULL
);
