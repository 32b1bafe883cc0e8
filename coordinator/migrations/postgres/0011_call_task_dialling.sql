-- Call tasks dialled through a campaign's lease path: which queue entry a task was
-- enrolled as, and the attempts made for it. Owned by coordinator/src/call_tasks.
CREATE TABLE call_task_contacts (
    task_id     BIGINT PRIMARY KEY NOT NULL REFERENCES call_tasks (id),
    campaign_id BIGINT NOT NULL,
    contact_id  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    settled     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX call_task_contacts_entry ON call_task_contacts (campaign_id, contact_id, settled);
