-- The console's agent occupancy reads agent events by time.
CREATE INDEX console_agent_events_at ON agent_events (at);
