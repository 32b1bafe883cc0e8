-- Appliance schema, version 7: per-leg media quality of each call (issue 4).
-- One row per leg (the customer's, then each agent-side leg in the order connected), written
-- when the call's media ends: what we measured receiving (loss, jitter), the RTCP round trip,
-- what the far end reported about our stream, and the E-model R-factor and MOS.
CREATE TABLE call_leg_quality (
    call_id          TEXT    NOT NULL,
    leg_index        INTEGER NOT NULL CHECK (leg_index >= 0),
    role             TEXT    NOT NULL CHECK (role IN ('customer', 'agent')),
    packets_received INTEGER NOT NULL CHECK (packets_received >= 0),
    packets_expected INTEGER NOT NULL CHECK (packets_expected >= 0),
    packets_lost     INTEGER NOT NULL,
    loss_ppm         INTEGER NOT NULL CHECK (loss_ppm BETWEEN 0 AND 1000000),
    jitter_us        INTEGER NOT NULL CHECK (jitter_us >= 0),
    rtt_us           INTEGER CHECK (rtt_us >= 0),
    remote_loss_ppm  INTEGER CHECK (remote_loss_ppm BETWEEN 0 AND 1000000),
    remote_jitter_us INTEGER CHECK (remote_jitter_us >= 0),
    r_factor         REAL    NOT NULL CHECK (r_factor BETWEEN 0 AND 100),
    mos              REAL    NOT NULL CHECK (mos BETWEEN 1 AND 5),
    recorded_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (call_id, leg_index)
);
