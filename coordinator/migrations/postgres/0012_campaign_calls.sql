-- Calls up per campaign on each appliance, as its latest `Uplink::CampaignCalls` said
-- (the live dashboard's per-campaign "calls in progress"). Replaced whole per appliance
-- on every report. Owned by coordinator/src/sync (apply) and read by the console.
CREATE TABLE appliance_campaign_calls (
    appliance   TEXT NOT NULL,
    campaign_id BIGINT NOT NULL,
    calls       BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (appliance, campaign_id)
);
