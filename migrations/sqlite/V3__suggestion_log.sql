-- What the suggestions endpoint showed a patient (the embedded counterpart
-- of migrations/postgres/V3__suggestion_log.sql): the alternatives offered at
-- booking time, for measuring ranking quality on DocSpot's own history.
-- `starts` is a JSON array of instants in microseconds since the epoch.
CREATE TABLE suggestion_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL REFERENCES users (id),
    doctor_id  TEXT NOT NULL REFERENCES doctors (id),
    shown_at   INTEGER NOT NULL,
    starts     TEXT NOT NULL CHECK (json_valid(starts) AND json_type(starts) = 'array')
) STRICT;
CREATE INDEX suggestion_log_lookup_idx ON suggestion_log (patient_id, doctor_id, shown_at);
