-- Coordinator schema, version 8: scheduler leadership across replicas, per-appliance pacing
-- limits, and a cheaper lease index. Kept in step across both
-- dialects. Times are Unix milliseconds.

-- Only leased contacts are looked up by lease: a million unleased rows need no index entry
-- (every import paid for one).
DROP INDEX contacts_lease;
CREATE INDEX contacts_lease ON contacts (lease_id) WHERE lease_id IS NOT NULL;

-- The scheduler's leader lease: one row per role; a replica acts only while it holds the
-- row (holder = its id, expires_at in the future). `term` grows on every change of holder.
CREATE TABLE scheduler_leader (
    role       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- An appliance's trunk limits, shared by the campaigns it dials (NULL row: the defaults of
-- `[sync.dialer]`).
CREATE TABLE appliance_limits (
    appliance               TEXT PRIMARY KEY,
    max_concurrent          BIGINT NOT NULL,
    max_attempts_per_minute BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
