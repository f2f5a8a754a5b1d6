-- Free-text cancellation reasons are patient data: from now on they are
-- stored encrypted beside the reason for visit and the doctor's notes
-- (`appointment_details.cancel_reason_enc`, sealed by the server, see
-- src/store/privacy.rs), written in the cancellation's own transaction.
-- `appointments.cancel_reason` and the history keep only fixed codes
-- (`hold_expired`, `hold_released`, `patient data erased`) or nothing.
--
-- SQL cannot encrypt: reasons written before this migration are moved by the
-- server at start-up (src/store/postgres/privacy.rs, seal_legacy_cancel_reasons).
ALTER TABLE appointment_details ADD COLUMN cancel_reason_enc bytea;
