-- Appliance schema, version 10: the registrar's bindings of the branch's phones (issue 3),
-- kept so that a restarted box can call its agents' phones at once instead of waiting up
-- to a registration interval for each phone to register again. Only UDP bindings are kept
-- (a TCP/TLS binding ends with its connection). `expires_at_ms` is wall-clock (Unix ms).
CREATE TABLE phone_bindings (
    account       TEXT NOT NULL,
    contact       TEXT NOT NULL,
    source        TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    call_id       TEXT NOT NULL,
    cseq          INTEGER NOT NULL,
    PRIMARY KEY (account, contact)
);
