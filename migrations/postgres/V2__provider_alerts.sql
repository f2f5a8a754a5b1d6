-- Provider alerts: a transactional outbox of what a doctor needs to be told
-- about (a booking, a confirmed hold, a cancellation, a reschedule).
--
-- The store writes an alert in the same transaction (indeed the same
-- statement) as the appointment change it reports, so an alert exists if and
-- only if its change was committed: none is lost when a node dies, none is
-- written twice when a batch is retried. A doctor who was offline fetches
-- every alert after the last id they saw (`provider_alerts_after`).
--
-- Ids come from a sequence: strictly increasing, never reused, but with gaps
-- (a rolled-back transaction burns its numbers). So that a reader paging by
-- `id > last_seen` never skips one, the store takes a lock on the doctor's
-- row (FOR NO KEY UPDATE) before it draws an alert id and holds it until
-- commit: one doctor's alert ids are therefore committed in id order, even
-- when several nodes write for that doctor at once.

CREATE TABLE provider_alerts (
    id             bigserial PRIMARY KEY,
    doctor_id      uuid NOT NULL REFERENCES doctors (id),
    appointment_id uuid NOT NULL REFERENCES appointments (id),
    -- Copied from the appointment (which holds the foreign key to users).
    patient_id     uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('booked', 'cancelled', 'rescheduled', 'hold_confirmed')),
    -- When the change happened.
    at             timestamptz NOT NULL DEFAULT now(),
    -- The visit after the change.
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    -- For reschedules: the start before the move.
    previous_start timestamptz,
    -- The appointment's status after the change.
    status         text NOT NULL CHECK (status IN ('held', 'booked', 'cancelled', 'completed', 'no_show')),
    CHECK (ends_at > starts_at),
    CHECK ((kind = 'rescheduled') = (previous_start IS NOT NULL))
);
CREATE INDEX provider_alerts_doctor_idx ON provider_alerts (doctor_id, id);

CREATE FUNCTION provider_alerts_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'provider_alerts is append-only';
END;
$$;
CREATE TRIGGER provider_alerts_append_only
    BEFORE UPDATE OR DELETE ON provider_alerts
    FOR EACH ROW EXECUTE FUNCTION provider_alerts_is_append_only();
