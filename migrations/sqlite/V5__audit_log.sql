-- Audit log (the embedded counterpart of migrations/postgres/V5__audit_log.sql;
-- see there for why it looks like this). Times are microseconds since the
-- epoch, ids are UUID text, hashes 32-byte blobs.
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY CHECK (seq > 0),
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
    outcome       TEXT NOT NULL,
    prev_hash     BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash          BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
CREATE INDEX audit_log_clinic_idx ON audit_log (clinic_id, seq);
CREATE INDEX audit_log_patient_idx ON audit_log (patient_id, seq) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, seq) WHERE actor_id IS NOT NULL;

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (UPDATE refused)');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (DELETE refused)');
END;
