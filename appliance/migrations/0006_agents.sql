-- Agents (issue 7): the roster the coordinator sends, the routing policy in force, agent-page
-- sessions and the dispositions agents save. The roster and the policy are full replacements
-- (newest version wins); their version rows are written in the same transaction as the
-- downlink sequence number, so a replay is harmless.

-- One row per kind (`roster`, `routing_policy`): the version in force.
CREATE TABLE agent_versions (
    kind    TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);

CREATE TABLE agent_group (
    group_id INTEGER PRIMARY KEY NOT NULL,
    name     TEXT NOT NULL
);

CREATE TABLE agent (
    agent_id     INTEGER PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    login        TEXT NOT NULL UNIQUE,
    password_phc TEXT NOT NULL,            -- argon2 PHC string from the coordinator
    sip_username TEXT NOT NULL,
    skills       TEXT NOT NULL              -- JSON array of strings
);

CREATE TABLE agent_membership (
    agent_id INTEGER NOT NULL REFERENCES agent(agent_id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES agent_group(group_id) ON DELETE CASCADE,
    PRIMARY KEY (agent_id, group_id)
);

-- The routing policy in force, as JSON (`common::routing::RoutingPolicy`).
CREATE TABLE routing_policy (
    id     INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    policy TEXT NOT NULL
);

CREATE TABLE agent_session (
    token_hash    BLOB PRIMARY KEY NOT NULL, -- SHA-256 of the cookie value
    agent_id      INTEGER NOT NULL,
    csrf_token    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);

-- Dispositions as agents saved them (the dialer copies them into its call records).
CREATE TABLE agent_disposition (
    call_id     TEXT PRIMARY KEY NOT NULL,
    agent_id    INTEGER NOT NULL,
    campaign_id INTEGER,
    code        TEXT NOT NULL,
    saved_at_ms INTEGER NOT NULL
);
