-- Coordinator schema, version 13 (kept in step with PostgreSQL's numbering).
--
-- PostgreSQL drops the two foreign keys of `contact_list_members` at this version: their
-- per-row triggers were the largest cost of a bulk import, and the import alone writes the
-- table, from ids it has just inserted or looked up. SQLite keeps them: its checks are
-- index probes inside the single writer, a small part of its import time, and dropping a
-- foreign key there means rebuilding the table.
SELECT 1;
