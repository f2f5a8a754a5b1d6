-- Audit outbox (issue #6): the audit record of a calendar change, written in
-- the change's own transaction.
--
-- A booking, cancellation or move commits in a calendar batch; its audit
-- record lands here in that same transaction, so a committed change always
-- has its record (no crash window) and the request does not wait for a
-- second, separate audit commit. The audit writer (src/audit/mod.rs) then
-- moves the rows into the hash chain (`audit_log`) in order of arrival and
-- deletes them here, under the chain-head lock, so every node drains the
-- one outbox without double entries. Rows here are not yet chained: they
-- carry the same fields as an `audit_log` entry minus seq and hashes.
CREATE TABLE audit_outbox (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL,
    actor_id      uuid,
    actor_role    text NOT NULL,
    action        text NOT NULL,
    patient_id    uuid,
    resource_type text,
    resource_id   uuid,
    clinic_id     uuid,
    client_ip     text,
    request_id    text,
    outcome       text NOT NULL
);
