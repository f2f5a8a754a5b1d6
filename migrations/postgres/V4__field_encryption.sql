-- Encryption at rest of patient data (see src/crypto.rs).
--
-- Encrypted columns (`*_enc`) hold AES-256-GCM envelopes that name their key;
-- the keys live in configuration, never here. `email_hash` is the blind index
-- (HMAC-SHA256 of the lower-cased address) that login looks up and that keeps
-- addresses unique.
--
-- SQL cannot encrypt: this migration only adds the new columns. At start-up
-- (and in `docspot migrate`) the server encrypts existing rows in batches,
-- clears their plaintext, and once no plaintext row is left drops the old
-- `email` and `name` columns (src/store/postgres.rs, encrypt_legacy_users).
ALTER TABLE users
    ADD COLUMN email_hash bytea,
    ADD COLUMN email_enc  bytea,
    ADD COLUMN name_enc   bytea,
    -- Set when the patient's personal data was erased (the row stays so past
    -- appointments keep their statistics).
    ADD COLUMN erased_at  timestamptz;
DROP INDEX users_email_key;
-- NULLs (erased accounts) do not collide, so an erased address can register again.
CREATE UNIQUE INDEX users_email_hash_key ON users (email_hash);

-- A patient's contact details and date of birth, both encrypted.
CREATE TABLE patient_profiles (
    user_id           uuid PRIMARY KEY REFERENCES users (id),
    phone_enc         bytea,
    date_of_birth_enc bytea,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Reason for visit (written by the patient) and the doctor's notes, both
-- encrypted. Kept apart from `appointments` so the booking commit path and
-- the calendar actors never see or write them.
CREATE TABLE appointment_details (
    appointment_id uuid PRIMARY KEY REFERENCES appointments (id),
    reason_enc     bytea,
    notes_enc      bytea,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
