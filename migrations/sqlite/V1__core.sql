-- DocSpot core schema (SQLite): the embedded counterpart of
-- migrations/postgres/V1__core.sql, with the same tables, columns, CHECK
-- constraints and indexes wherever SQLite can express them.
--
-- Representation (every table is STRICT, so a wrongly typed value is refused):
-- - instants: INTEGER microseconds since the Unix epoch (UTC); they compare and
--   sort as numbers, with the same precision as PostgreSQL's timestamptz;
-- - UUIDs: TEXT, hyphenated lower case (sorts like PostgreSQL's uuid);
-- - arrays (specialties, languages): JSON TEXT;
-- - times of day: TEXT 'HH:MM:SS' (with '.ffffff' only if there are fractions);
-- - dates: TEXT 'YYYY-MM-DD';
-- - booleans: INTEGER 0 / 1.
-- The store always writes created_at / updated_at / at itself (one instant per
-- transaction, like PostgreSQL's now()); the column DEFAULTs (millisecond
-- precision, portable to older sqlite3 shells) only serve rows written by hand.
--
-- SQLite has no exclusion constraints. The no-overlap rule for active
-- appointments is enforced by the store inside each write transaction
-- (BEGIN IMMEDIATE: check, then write) and, as a second guard against any
-- other writer (a tool, a bug), by the appointments_no_overlap_* triggers.

CREATE TABLE clinics (
    id                          TEXT PRIMARY KEY NOT NULL,
    name                        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address                     TEXT NOT NULL DEFAULT '',
    latitude                    REAL CHECK (latitude BETWEEN -90 AND 90),
    longitude                   REAL CHECK (longitude BETWEEN -180 AND 180),
    time_zone                   TEXT NOT NULL,
    -- Patients may not cancel or reschedule later than this before the start.
    cancellation_cutoff_minutes INTEGER NOT NULL DEFAULT 1440 CHECK (cancellation_cutoff_minutes >= 0),
    -- How far ahead patients may book.
    booking_horizon_days        INTEGER NOT NULL DEFAULT 60 CHECK (booking_horizon_days BETWEEN 1 AND 730),
    created_at                  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
) STRICT;

CREATE TABLE doctors (
    id          TEXT PRIMARY KEY NOT NULL,
    clinic_id   TEXT NOT NULL REFERENCES clinics (id),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    specialties TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(specialties) AND json_type(specialties) = 'array'),
    languages   TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(languages) AND json_type(languages) = 'array'),
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
) STRICT;
CREATE INDEX doctors_clinic_idx ON doctors (clinic_id);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    -- Stored lower-cased; unique whatever the case.
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('patient', 'doctor', 'clinic_admin')),
    -- A doctor account is linked to its doctor; an admin to its clinic.
    doctor_id     TEXT REFERENCES doctors (id),
    clinic_id     TEXT REFERENCES clinics (id),
    created_at    INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    CHECK (role <> 'doctor' OR doctor_id IS NOT NULL)
) STRICT;
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE visit_types (
    id                    TEXT PRIMARY KEY NOT NULL,
    doctor_id             TEXT NOT NULL REFERENCES doctors (id),
    name                  TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    duration_minutes      INTEGER NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    buffer_before_minutes INTEGER NOT NULL DEFAULT 0 CHECK (buffer_before_minutes BETWEEN 0 AND 240),
    buffer_after_minutes  INTEGER NOT NULL DEFAULT 0 CHECK (buffer_after_minutes BETWEEN 0 AND 240),
    fee_cents             INTEGER NOT NULL DEFAULT 0 CHECK (fee_cents >= 0),
    currency              TEXT NOT NULL DEFAULT 'USD',
    is_default            INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at            INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
) STRICT;
CREATE INDEX visit_types_doctor_idx ON visit_types (doctor_id);
CREATE UNIQUE INDEX visit_types_one_default ON visit_types (doctor_id) WHERE is_default = 1;

-- Weekly opening hours in the clinic's local time. end_time <= start_time means
-- the window runs past midnight into the next day (night shifts).
CREATE TABLE availability_rules (
    id          TEXT PRIMARY KEY NOT NULL,
    doctor_id   TEXT NOT NULL REFERENCES doctors (id),
    weekday     INTEGER NOT NULL CHECK (weekday BETWEEN 1 AND 7), -- ISO: 1 = Monday
    start_time  TEXT NOT NULL CHECK (time(start_time) IS NOT NULL),
    end_time    TEXT NOT NULL CHECK (time(end_time) IS NOT NULL),
    valid_from  TEXT CHECK (valid_from IS NULL OR date(valid_from) IS NOT NULL),
    valid_until TEXT CHECK (valid_until IS NULL OR date(valid_until) IS NOT NULL),
    created_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
) STRICT;
CREATE INDEX availability_rules_doctor_idx ON availability_rules (doctor_id);

-- One-off changes: time off removes availability, extra hours add it.
CREATE TABLE availability_exceptions (
    id         TEXT PRIMARY KEY NOT NULL,
    doctor_id  TEXT NOT NULL REFERENCES doctors (id),
    kind       TEXT NOT NULL CHECK (kind IN ('time_off', 'extra_hours')),
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL CHECK (ends_at > starts_at),
    reason     TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
) STRICT;
CREATE INDEX availability_exceptions_doctor_idx ON availability_exceptions (doctor_id, starts_at);

CREATE TABLE appointments (
    id              TEXT PRIMARY KEY NOT NULL,
    doctor_id       TEXT NOT NULL REFERENCES doctors (id),
    patient_id      TEXT NOT NULL REFERENCES users (id),
    visit_type_id   TEXT NOT NULL REFERENCES visit_types (id),
    -- The visit itself.
    starts_at       INTEGER NOT NULL,
    ends_at         INTEGER NOT NULL,
    -- The time the doctor is busy: the visit plus the visit type's buffers.
    -- This is what may never overlap.
    block_start     INTEGER NOT NULL,
    block_end       INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('held', 'booked', 'cancelled', 'completed', 'no_show')),
    hold_expires_at INTEGER,
    idempotency_key TEXT,
    cancel_reason   TEXT,
    created_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    updated_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    CHECK (ends_at > starts_at),
    CHECK (block_start <= starts_at AND block_end >= ends_at),
    CHECK (status <> 'held' OR hold_expires_at IS NOT NULL)
) STRICT;
CREATE UNIQUE INDEX appointments_idempotency_key ON appointments (patient_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointments_patient_idx ON appointments (patient_id, starts_at DESC);
CREATE INDEX appointments_doctor_idx ON appointments (doctor_id, starts_at);
CREATE INDEX appointments_held_idx ON appointments (hold_expires_at) WHERE status = 'held';
-- Serves the overlap checks (the store's and the triggers'): only active rows,
-- so years of past appointments do not slow a booking down.
CREATE INDEX appointments_active_block_idx ON appointments (doctor_id, block_start)
    WHERE status IN ('held', 'booked');

-- The arbiter's second guard: no two active appointments of one doctor overlap
-- over [block_start, block_end), whoever writes them.
CREATE TRIGGER appointments_no_overlap_insert
    BEFORE INSERT ON appointments
    WHEN NEW.status IN ('held', 'booked')
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap')
    WHERE EXISTS (
        SELECT 1 FROM appointments o
        WHERE o.doctor_id = NEW.doctor_id
          AND o.status IN ('held', 'booked')
          AND o.id <> NEW.id
          AND o.block_start < NEW.block_end
          AND NEW.block_start < o.block_end
    );
END;

CREATE TRIGGER appointments_no_overlap_update
    BEFORE UPDATE OF doctor_id, block_start, block_end, status ON appointments
    WHEN NEW.status IN ('held', 'booked')
BEGIN
    SELECT RAISE(ABORT, 'appointments_no_overlap')
    WHERE EXISTS (
        SELECT 1 FROM appointments o
        WHERE o.doctor_id = NEW.doctor_id
          AND o.status IN ('held', 'booked')
          AND o.id <> NEW.id
          AND o.block_start < NEW.block_end
          AND NEW.block_start < o.block_end
    );
END;

-- Append-only history: every state change of an appointment.
CREATE TABLE appointment_history (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    appointment_id TEXT NOT NULL REFERENCES appointments (id),
    at             INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    actor_user_id  TEXT,
    action         TEXT NOT NULL,
    from_status    TEXT,
    to_status      TEXT NOT NULL,
    from_start     INTEGER,
    to_start       INTEGER NOT NULL,
    note           TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX appointment_history_appointment_idx ON appointment_history (appointment_id, id);

CREATE TRIGGER appointment_history_no_update
    BEFORE UPDATE ON appointment_history
BEGIN
    SELECT RAISE(ABORT, 'appointment_history is append-only');
END;

CREATE TRIGGER appointment_history_no_delete
    BEFORE DELETE ON appointment_history
BEGIN
    SELECT RAISE(ABORT, 'appointment_history is append-only');
END;

CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    -- Tokens are stored as SHA-256 digests: a database leak yields no usable token.
    token_hash BLOB NOT NULL UNIQUE,
    -- All tokens produced by rotating one login share a family; replaying a
    -- used token revokes the whole family.
    family_id  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
) STRICT;
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
