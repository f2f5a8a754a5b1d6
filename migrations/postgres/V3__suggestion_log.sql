-- What the suggestions endpoint showed a patient, so DocSpot's own history
-- records the alternatives offered at booking time and ranking quality
-- (hit@3, NDCG@5) can be measured on it.
CREATE TABLE suggestion_log (
    id         bigserial PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES users (id),
    doctor_id  uuid NOT NULL REFERENCES doctors (id),
    shown_at   timestamptz NOT NULL DEFAULT now(),
    starts     timestamptz[] NOT NULL
);
CREATE INDEX suggestion_log_lookup_idx ON suggestion_log (patient_id, doctor_id, shown_at);
