-- Provider alerts (SQLite): the embedded counterpart of
-- migrations/postgres/V2__provider_alerts.sql, with the representation of
-- V1__core.sql (instants as INTEGER microseconds, UUIDs as TEXT).
--
-- A transactional outbox: the store writes an alert in the same transaction
-- (and the same per-write savepoint) as the appointment change it reports, so
-- an alert exists if and only if its change was committed. AUTOINCREMENT ids
-- are strictly increasing and never reused, even after the newest row is
-- gone; SQLite has a single writer, so they are also committed in id order
-- and a reader paging by `id > last_seen` never skips one.

CREATE TABLE provider_alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    doctor_id      TEXT NOT NULL REFERENCES doctors (id),
    appointment_id TEXT NOT NULL REFERENCES appointments (id),
    -- Copied from the appointment (which holds the foreign key to users).
    patient_id     TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('booked', 'cancelled', 'rescheduled', 'hold_confirmed')),
    -- When the change happened.
    at             INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    -- The visit after the change.
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    -- For reschedules: the start before the move.
    previous_start INTEGER,
    -- The appointment's status after the change.
    status         TEXT NOT NULL CHECK (status IN ('held', 'booked', 'cancelled', 'completed', 'no_show')),
    CHECK (ends_at > starts_at),
    CHECK ((kind = 'rescheduled') = (previous_start IS NOT NULL))
) STRICT;
CREATE INDEX provider_alerts_doctor_idx ON provider_alerts (doctor_id, id);

CREATE TRIGGER provider_alerts_no_update
    BEFORE UPDATE ON provider_alerts
BEGIN
    SELECT RAISE(ABORT, 'provider_alerts is append-only');
END;

CREATE TRIGGER provider_alerts_no_delete
    BEFORE DELETE ON provider_alerts
BEGIN
    SELECT RAISE(ABORT, 'provider_alerts is append-only');
END;
