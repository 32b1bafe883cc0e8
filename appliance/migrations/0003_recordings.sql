-- Appliance schema, version 3: encrypted recording segments (issue 4).
-- One row per finished segment, written after the age file is synced and renamed into place,
-- so every listed segment is complete. The ciphertext's size and SHA-256 let an export prove
-- that the file compliance receives is the one the box wrote.
CREATE TABLE recording_segments (
    call_id          TEXT    NOT NULL,
    segment_index    INTEGER NOT NULL CHECK (segment_index >= 0),
    file_name        TEXT    NOT NULL UNIQUE,
    start_ms         INTEGER NOT NULL CHECK (start_ms >= 0),
    duration_ms      INTEGER NOT NULL CHECK (duration_ms > 0),
    ciphertext_bytes INTEGER NOT NULL CHECK (ciphertext_bytes > 0),
    sha256_hex       TEXT    NOT NULL CHECK (length(sha256_hex) = 64),
    finished_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (call_id, segment_index)
);
CREATE INDEX recording_segments_by_finish ON recording_segments (finished_at_ms);

-- Calls under legal hold: retention never deletes their segments while the hold stands.
CREATE TABLE recording_holds (
    call_id        TEXT    PRIMARY KEY NOT NULL,
    reason         TEXT    NOT NULL,
    placed_at_ms   INTEGER NOT NULL
);
