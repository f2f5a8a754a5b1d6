-- Free-text cancellation reasons are patient data: from now on they are
-- stored encrypted beside the reason for visit and the doctor's notes
-- (`appointment_details.cancel_reason_enc`, sealed by the server, see
-- src/store/privacy.rs), written in the cancellation's own transaction.
-- `appointments.cancel_reason` and the history keep only fixed codes
-- (`hold_expired`, `hold_released`, `patient data erased`) or nothing.
ALTER TABLE appointment_details ADD COLUMN cancel_reason_enc bytea;

-- From now on the plaintext columns hold only those codes, so a node of an
-- older release still running during an upgrade cannot write free text
-- there (its cancellation fails instead). NOT VALID: the rows from before
-- are sealed and blanked by the pass below, which then validates.
ALTER TABLE appointments ADD CONSTRAINT appointments_cancel_reason_is_a_code
    CHECK (cancel_reason IS NULL
           OR cancel_reason IN ('hold_expired', 'hold_released', 'patient data erased'))
    NOT VALID;
ALTER TABLE appointment_history ADD CONSTRAINT appointment_history_cancel_note_is_a_code
    CHECK (action <> 'cancel'
           OR note IN ('', 'hold_expired', 'hold_released', 'patient data erased'))
    NOT VALID;

-- The calendar file of one appointment (.ics) counts its changes.
CREATE INDEX provider_alerts_appointment_idx ON provider_alerts (appointment_id);

-- SQL cannot encrypt: the reasons written before this migration are sealed
-- by the server at start-up (and by `docspot migrate`), in batches, and their
-- plaintext blanked in the appointment and its history
-- (src/store/postgres/privacy.rs, seal_legacy_cancel_reasons). This table
-- lists the appointments left to do; the server drops it when it is empty.
CREATE TABLE legacy_cancel_reasons (appointment_id uuid PRIMARY KEY);
INSERT INTO legacy_cancel_reasons (appointment_id)
SELECT id FROM appointments
WHERE cancel_reason NOT IN ('hold_expired', 'hold_released', 'patient data erased')
UNION
SELECT appointment_id FROM appointment_history
WHERE action = 'cancel'
  AND note NOT IN ('', 'hold_expired', 'hold_released', 'patient data erased');

-- The history stays append-only, with one exception for that pass only:
-- blanking a note (and changing nothing else) in a transaction that sets
-- `docspot.blank_history_notes`. The pass puts V1's strict function back
-- when it drops the list.
CREATE OR REPLACE FUNCTION appointment_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('docspot.blank_history_notes', true) = 'on'
       AND NEW.note = ''
       AND (to_jsonb(NEW) - 'note') = (to_jsonb(OLD) - 'note') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'appointment_history is append-only';
END;
$$;
