-- Free-text cancellation reasons are stored encrypted
-- (`appointment_details.cancel_reason_enc`); the reasons written before
-- this migration are sealed when the file is opened (listed here until
-- then). See migrations/postgres/V7__cancel_reason_encrypted.sql.
ALTER TABLE appointment_details ADD COLUMN cancel_reason_enc BLOB;

CREATE TABLE legacy_cancel_reasons (appointment_id TEXT PRIMARY KEY NOT NULL) STRICT;
INSERT INTO legacy_cancel_reasons (appointment_id)
SELECT id FROM appointments
WHERE cancel_reason NOT IN ('hold_expired', 'hold_released', 'patient data erased')
UNION
SELECT appointment_id FROM appointment_history
WHERE action = 'cancel'
  AND note NOT IN ('', 'hold_expired', 'hold_released', 'patient data erased');

-- The calendar file of one appointment (.ics) counts its changes.
CREATE INDEX provider_alerts_appointment_idx ON provider_alerts (appointment_id);
