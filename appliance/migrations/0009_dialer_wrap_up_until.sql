-- Appliance schema, version 9: when each kept call record's wrap-up ends (issue 7). A record
-- left in `dialer_wrap_ups` by a stop is completed at the next start: with the code the agent
-- saves (`agent_disposition`; the desk puts the agent back into that wrap-up at login), or
-- without one once this time has passed. NULL: not known (sent at the next start as it is).
ALTER TABLE dialer_wrap_ups ADD COLUMN wrap_up_until_ms INTEGER;
