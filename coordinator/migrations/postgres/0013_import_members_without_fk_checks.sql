-- Coordinator schema, version 13: the contact import's list membership without per-row
-- foreign-key checks (PostgreSQL).
--
-- Only the import writes `contact_list_members`, in the same transaction as the contacts
-- it links: a new contact's id comes from that INSERT's own RETURNING, an existing one's
-- from a lookup through the unique blind index, and the list is checked to exist when the
-- import begins. Contacts and lists are never deleted. The two foreign keys therefore held
-- by construction, and their triggers cost more than the rest of the membership insert:
-- EXPLAIN ANALYZE of a 1,000,000-row import spent 13.4 s of 29.6 s in them (two RI
-- lookups per row). The primary key (list_id, contact_id) stays.
ALTER TABLE contact_list_members
    DROP CONSTRAINT contact_list_members_contact_id_fkey,
    DROP CONSTRAINT contact_list_members_list_id_fkey;
