-- Coordinator schema, version 4: agents and groups, routing policy versions, one-off call
-- tasks and their webhook deliveries. Kept in step with sqlite/0004_agents_routing_tasks.sql.

CREATE TABLE agent_groups (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- updated_at only grows: appliances fetch the agents of their branch changed since the
-- last value they saw (a disabled agent is such a change).
CREATE TABLE agents (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    branch        TEXT NOT NULL,
    skills        TEXT NOT NULL,
    sip_username  TEXT NOT NULL UNIQUE,
    login         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    enabled       BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX agents_branch ON agents (branch, updated_at);

CREATE TABLE agent_group_members (
    group_id BIGINT NOT NULL REFERENCES agent_groups(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    PRIMARY KEY (group_id, agent_id)
);

-- Every saved policy is a new version; the newest is in force.
CREATE TABLE routing_policies (
    version    BIGSERIAL PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE call_tasks (
    id              BIGSERIAL PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    script_id       TEXT NOT NULL,
    callback_url    TEXT NOT NULL,
    callback_secret TEXT NOT NULL,
    max_retries     BIGINT NOT NULL,
    preferred_time  BIGINT,
    state           TEXT NOT NULL,
    result          TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    task_id         BIGINT NOT NULL UNIQUE REFERENCES call_tasks(id),
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
