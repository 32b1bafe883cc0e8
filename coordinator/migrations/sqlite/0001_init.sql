-- Coordinator schema, version 1: the instance's own facts.
CREATE TABLE coordinator_info (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
