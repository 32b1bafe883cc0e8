-- Appliance schema, version 1: the box's own facts.
CREATE TABLE appliance_info (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
