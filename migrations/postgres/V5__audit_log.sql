-- Audit log (issue #7): who read or changed whose data, when, from where.
--
-- Append-only and tamper-evident: every entry carries the SHA-256 of the
-- previous entry (`prev_hash`) and its own hash over a canonical encoding of
-- all its fields plus `prev_hash` (computed by the application, see
-- src/audit/mod.rs). Triggers below refuse UPDATE, DELETE and TRUNCATE; a
-- superuser who drops them still cannot alter or remove an entry without
-- breaking the chain, which `docspot audit verify` detects.
--
-- No personal data: ids only (no names, e-mails or free text), so erasing a
-- patient never needs to touch — and so never breaks — the chain. Hence also
-- no foreign keys: an entry outlives the rows it names.
CREATE TABLE audit_log (
    seq           bigint PRIMARY KEY CHECK (seq > 0),
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
    outcome       text NOT NULL,
    prev_hash     bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash          bytea NOT NULL CHECK (octet_length(hash) = 32)
);
CREATE INDEX audit_log_clinic_idx ON audit_log (clinic_id, seq);
CREATE INDEX audit_log_patient_idx ON audit_log (patient_id, seq) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, seq) WHERE actor_id IS NOT NULL;

-- The chain head: one row, locked FOR UPDATE by every appending transaction,
-- so appends from all nodes serialize (gapless seq, correct prev_hash). It
-- also lets `verify` notice entries cut off the end of the chain.
CREATE TABLE audit_head (
    id   smallint PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
