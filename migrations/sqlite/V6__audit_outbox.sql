-- Audit outbox: the audit record of a calendar change, written in the
-- change's own transaction and moved into the hash chain (audit_log) by the
-- audit writer afterwards. See migrations/postgres/V6__audit_outbox.sql.
CREATE TABLE audit_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    actor_id      TEXT,
    actor_role    TEXT NOT NULL,
    action        TEXT NOT NULL,
    patient_id    TEXT,
    resource_type TEXT,
    resource_id   TEXT,
    clinic_id     TEXT,
    client_ip     TEXT,
    request_id    TEXT,
    outcome       TEXT NOT NULL
) STRICT;
