-- Free-text cancellation reasons are stored encrypted
-- (`appointment_details.cancel_reason_enc`). See
-- migrations/postgres/V7__cancel_reason_encrypted.sql.
ALTER TABLE appointment_details ADD COLUMN cancel_reason_enc BLOB;
