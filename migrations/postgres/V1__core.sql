-- DocSpot core schema (PostgreSQL).
--
-- Every instant is a `timestamptz` (stored as UTC). Local wall-clock data
-- (weekly opening hours) is stored as `time` plus the clinic's IANA zone and is
-- only turned into instants by the scheduling code, so DST changes are handled
-- in one place.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE clinics (
    id                          uuid PRIMARY KEY,
    name                        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address                     text NOT NULL DEFAULT '',
    latitude                    double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude                   double precision CHECK (longitude BETWEEN -180 AND 180),
    time_zone                   text NOT NULL,
    -- Patients may not cancel or reschedule later than this before the start.
    cancellation_cutoff_minutes integer NOT NULL DEFAULT 1440 CHECK (cancellation_cutoff_minutes >= 0),
    -- How far ahead patients may book.
    booking_horizon_days        integer NOT NULL DEFAULT 60 CHECK (booking_horizon_days BETWEEN 1 AND 730),
    created_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE doctors (
    id          uuid PRIMARY KEY,
    clinic_id   uuid NOT NULL REFERENCES clinics (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    specialties text[] NOT NULL DEFAULT '{}',
    languages   text[] NOT NULL DEFAULT '{}',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX doctors_clinic_idx ON doctors (clinic_id);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('patient', 'doctor', 'clinic_admin')),
    -- A doctor account is linked to its doctor; an admin to its clinic.
    doctor_id     uuid REFERENCES doctors (id),
    clinic_id     uuid REFERENCES clinics (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'doctor' OR doctor_id IS NOT NULL)
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE visit_types (
    id                    uuid PRIMARY KEY,
    doctor_id             uuid NOT NULL REFERENCES doctors (id),
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    duration_minutes      integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
    buffer_before_minutes integer NOT NULL DEFAULT 0 CHECK (buffer_before_minutes BETWEEN 0 AND 240),
    buffer_after_minutes  integer NOT NULL DEFAULT 0 CHECK (buffer_after_minutes BETWEEN 0 AND 240),
    fee_cents             bigint NOT NULL DEFAULT 0 CHECK (fee_cents >= 0),
    currency              text NOT NULL DEFAULT 'USD',
    is_default            boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX visit_types_doctor_idx ON visit_types (doctor_id);
CREATE UNIQUE INDEX visit_types_one_default ON visit_types (doctor_id) WHERE is_default;

-- Weekly opening hours in the clinic's local time. end_time <= start_time means
-- the window runs past midnight into the next day (night shifts).
CREATE TABLE availability_rules (
    id          uuid PRIMARY KEY,
    doctor_id   uuid NOT NULL REFERENCES doctors (id),
    weekday     smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7), -- ISO: 1 = Monday
    start_time  time NOT NULL,
    end_time    time NOT NULL,
    valid_from  date,
    valid_until date,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX availability_rules_doctor_idx ON availability_rules (doctor_id);

-- One-off changes: time off removes availability, extra hours add it.
CREATE TABLE availability_exceptions (
    id         uuid PRIMARY KEY,
    doctor_id  uuid NOT NULL REFERENCES doctors (id),
    kind       text NOT NULL CHECK (kind IN ('time_off', 'extra_hours')),
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at > starts_at),
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX availability_exceptions_doctor_idx ON availability_exceptions (doctor_id, starts_at);

CREATE TABLE appointments (
    id              uuid PRIMARY KEY,
    doctor_id       uuid NOT NULL REFERENCES doctors (id),
    patient_id      uuid NOT NULL REFERENCES users (id),
    visit_type_id   uuid NOT NULL REFERENCES visit_types (id),
    -- The visit itself.
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    -- The time the doctor is busy: the visit plus the visit type's buffers.
    -- This is what may never overlap.
    block_start     timestamptz NOT NULL,
    block_end       timestamptz NOT NULL,
    status          text NOT NULL CHECK (status IN ('held', 'booked', 'cancelled', 'completed', 'no_show')),
    hold_expires_at timestamptz,
    idempotency_key text,
    cancel_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (block_start <= starts_at AND block_end >= ends_at),
    CHECK (status <> 'held' OR hold_expires_at IS NOT NULL),
    -- The arbiter: no two active appointments of one doctor overlap, whichever
    -- server node (or tool) writes them.
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        doctor_id WITH =,
        tstzrange(block_start, block_end, '[)') WITH &&
    ) WHERE (status IN ('held', 'booked'))
);
CREATE UNIQUE INDEX appointments_idempotency_key ON appointments (patient_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointments_patient_idx ON appointments (patient_id, starts_at DESC);
CREATE INDEX appointments_doctor_idx ON appointments (doctor_id, starts_at);
CREATE INDEX appointments_held_idx ON appointments (hold_expires_at) WHERE status = 'held';

-- Append-only history: every state change of an appointment.
CREATE TABLE appointment_history (
    id             bigserial PRIMARY KEY,
    appointment_id uuid NOT NULL REFERENCES appointments (id),
    at             timestamptz NOT NULL DEFAULT now(),
    actor_user_id  uuid,
    action         text NOT NULL,
    from_status    text,
    to_status      text NOT NULL,
    from_start     timestamptz,
    to_start       timestamptz NOT NULL,
    note           text NOT NULL DEFAULT ''
);
CREATE INDEX appointment_history_appointment_idx ON appointment_history (appointment_id, id);

CREATE FUNCTION appointment_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'appointment_history is append-only';
END;
$$;
CREATE TRIGGER appointment_history_append_only
    BEFORE UPDATE OR DELETE ON appointment_history
    FOR EACH ROW EXECUTE FUNCTION appointment_history_is_append_only();

CREATE TABLE refresh_tokens (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    -- Tokens are stored as SHA-256 digests: a database leak yields no usable token.
    token_hash bytea NOT NULL UNIQUE,
    -- All tokens produced by rotating one login share a family; replaying a
    -- used token revokes the whole family.
    family_id  uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
