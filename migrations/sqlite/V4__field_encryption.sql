-- Encryption at rest of patient data (the embedded counterpart of
-- migrations/postgres/V4__field_encryption.sql; see src/crypto.rs).
--
-- Encrypted columns (`*_enc`) hold AES-256-GCM envelopes (BLOB) that name
-- their key; the keys live in configuration or the key file beside the
-- database, never here. `email_hash` is the blind index (HMAC-SHA256 of the
-- lower-cased address) that login looks up and that keeps addresses unique.
--
-- SQL cannot encrypt: this migration only adds the new columns. On opening,
-- the store encrypts existing rows in batches, blanks their plaintext, and
-- once no plaintext row is left drops the old `email` and `name` columns
-- (src/store/sqlite.rs, encrypt_legacy_users).
ALTER TABLE users ADD COLUMN email_hash BLOB;
ALTER TABLE users ADD COLUMN email_enc BLOB;
ALTER TABLE users ADD COLUMN name_enc BLOB;
-- Set when the patient's personal data was erased (microseconds since the epoch).
ALTER TABLE users ADD COLUMN erased_at INTEGER;
DROP INDEX users_email_key;
-- NULLs (erased accounts) do not collide, so an erased address can register again.
CREATE UNIQUE INDEX users_email_hash_key ON users (email_hash);

-- A patient's contact details and date of birth, both encrypted.
CREATE TABLE patient_profiles (
    user_id           TEXT PRIMARY KEY NOT NULL REFERENCES users (id),
    phone_enc         BLOB,
    date_of_birth_enc BLOB,
    updated_at        INTEGER NOT NULL
) STRICT;

-- Reason for visit (written by the patient) and the doctor's notes, both
-- encrypted. Kept apart from `appointments` so the booking commit path and
-- the calendar actors never see or write them.
CREATE TABLE appointment_details (
    appointment_id TEXT PRIMARY KEY NOT NULL REFERENCES appointments (id),
    reason_enc     BLOB,
    notes_enc      BLOB,
    updated_at     INTEGER NOT NULL
) STRICT;
