//! PostgreSQL side of [`PrivacyStore`], and the one-time encryption of
//! accounts written before encryption at rest existed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use docspot_actors::{
    domain::{AppointmentId, DoctorId, UserId},
    store::StoreError,
};
use uuid::Uuid;

use super::{PgStore, unavailable};
use crate::store::{
    SuggestionLog,
    privacy::{
        AppointmentDetails, CANCEL_CODES, DetailsChange, EncryptedTable, Erasure, PatientProfile,
        PrivacyStore, RotateBatch, SealedProfile, SealedUser, columns, open_details, reencrypt_row,
        seal_cancel_reason, seal_text,
    },
};

/// Advisory lock key of the one-time cancellation-reason pass (the
/// migrations use 7243110).
const LEGACY_REASONS_LOCK: i64 = 7_243_112;

impl PgStore {
    /// Encrypts accounts still stored in plaintext (a database from before
    /// V4), `batch` rows per transaction, blanking their plaintext; when none
    /// is left, drops the plaintext `email` and `name` columns. Resumable:
    /// an interrupted run leaves whole batches done and the rest as they
    /// were. Returns the rows encrypted.
    /// `max_batches` stops early, leaving the columns (tests of resuming).
    pub async fn encrypt_legacy_users(
        &self,
        batch: i64,
        max_batches: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let legacy = client
            .query_opt(
                "SELECT 1 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'users'
                   AND column_name = 'email'",
                &[],
            )
            .await
            .map_err(unavailable)?
            .is_some();
        if !legacy {
            return Ok(0);
        }
        let mut done = 0;
        let mut batches = 0;
        loop {
            if max_batches.is_some_and(|m| batches >= m) {
                return Ok(done);
            }
            batches += 1;
            let tx = client.transaction().await.map_err(unavailable)?;
            let rows = tx
                .query(
                    "SELECT id, email, name FROM users
                     WHERE email_enc IS NULL AND erased_at IS NULL
                     ORDER BY id LIMIT $1 FOR UPDATE",
                    &[&batch.max(1)],
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let id: Uuid = row.get("id");
                let email: Option<String> = row.get("email");
                let name: Option<String> = row.get("name");
                let sealed = SealedUser::seal(
                    &self.cipher,
                    UserId(id),
                    email.as_deref().unwrap_or_default(),
                    name.as_deref().unwrap_or_default(),
                )
                .map_err(unavailable)?;
                tx.execute(
                    "UPDATE users SET email_hash = $2, email_enc = $3, name_enc = $4,
                        email = '', name = ''
                     WHERE id = $1",
                    &[&id, &sealed.email_hash, &sealed.email, &sealed.name],
                )
                .await
                .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            done += rows.len() as u64;
        }
        // IF EXISTS: another node starting at the same time may have won.
        client
            .batch_execute(
                "ALTER TABLE users DROP COLUMN IF EXISTS email, DROP COLUMN IF EXISTS name",
            )
            .await
            .map_err(unavailable)?;
        // Rewrite the table so the old row versions, which still hold the
        // plaintext, do not linger in its files until reused (this runs
        // once: the next start finds no plaintext column).
        client
            .batch_execute("VACUUM FULL users")
            .await
            .map_err(unavailable)?;
        if done > 0 {
            tracing::info!(rows = done, "encrypted accounts stored in plaintext");
        }
        Ok(done)
    }
}

/// The sealed reason, notes and cancellation reason of a details row.
fn sealed_details(r: &tokio_postgres::Row) -> [Option<&[u8]>; 3] {
    [
        r.get("reason_enc"),
        r.get("notes_enc"),
        r.get("cancel_reason_enc"),
    ]
}

impl PgStore {
    /// Seals the free-text cancellation reasons written before V7 into
    /// `appointment_details.cancel_reason_enc` and blanks their plaintext in
    /// the appointment and its history, `batch` appointments per
    /// transaction, from the list V7 made (`legacy_cancel_reasons`), which
    /// it drops when done. An erased patient's reasons are only blanked.
    /// Resumable; a no-op once the list is gone. Returns the appointments
    /// done.
    pub async fn seal_legacy_cancel_reasons(&self, batch: i64) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        // Nodes starting together take turns: the first does the work and
        // drops the list, the others then find nothing to do. (A session
        // lock: released below, or by the server if the connection dies.)
        client
            .execute("SELECT pg_advisory_lock($1)", &[&LEGACY_REASONS_LOCK])
            .await
            .map_err(unavailable)?;
        let result = self
            .seal_legacy_cancel_reasons_locked(&mut client, batch)
            .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&LEGACY_REASONS_LOCK])
            .await
            .map_err(unavailable);
        let done = result?;
        unlocked?;
        Ok(done)
    }

    async fn seal_legacy_cancel_reasons_locked(
        &self,
        client: &mut deadpool_postgres::Object,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let pending: bool = client
            .query_one(
                "SELECT to_regclass('legacy_cancel_reasons') IS NOT NULL",
                &[],
            )
            .await
            .map_err(unavailable)?
            .get(0);
        if !pending {
            return Ok(0);
        }
        let codes: Vec<&str> = CANCEL_CODES.to_vec();
        let mut done = 0;
        loop {
            let tx = client.transaction().await.map_err(unavailable)?;
            let rows = tx
                .query(
                    "SELECT l.appointment_id AS id, u.erased_at IS NOT NULL AS erased,
                        CASE WHEN a.cancel_reason <> ALL($2) THEN a.cancel_reason END AS reason,
                        (SELECT h.note FROM appointment_history h
                         WHERE h.appointment_id = a.id AND h.action = 'cancel'
                           AND h.note <> '' AND h.note <> ALL($2)
                         ORDER BY h.id DESC LIMIT 1) AS note
                     FROM legacy_cancel_reasons l
                     JOIN appointments a ON a.id = l.appointment_id
                     JOIN users u ON u.id = a.patient_id
                     ORDER BY l.appointment_id LIMIT $1 FOR UPDATE OF l, a",
                    &[&batch.max(1), &codes],
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                tx.commit().await.map_err(unavailable)?;
                break;
            }
            let mut ids = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: Uuid = r.get("id");
                ids.push(id);
                let text: Option<String> = r.get::<_, Option<String>>("reason").or(r.get("note"));
                let (Some(text), false) = (text, r.get::<_, bool>("erased")) else {
                    continue;
                };
                let sealed = seal_cancel_reason(&self.cipher, AppointmentId(id), &text)?;
                tx.execute(
                    "INSERT INTO appointment_details (appointment_id, cancel_reason_enc)
                     VALUES ($1, $2)
                     ON CONFLICT (appointment_id) DO UPDATE SET cancel_reason_enc =
                        coalesce(appointment_details.cancel_reason_enc, EXCLUDED.cancel_reason_enc)",
                    &[&id, &sealed],
                )
                .await
                .map_err(unavailable)?;
            }
            tx.execute(
                "UPDATE appointments SET cancel_reason = NULL
                 WHERE id = ANY($1) AND cancel_reason <> ALL($2)",
                &[&ids, &codes],
            )
            .await
            .map_err(unavailable)?;
            // The one change the append-only history allows (see V7).
            tx.batch_execute("SET LOCAL docspot.blank_history_notes = 'on'")
                .await
                .map_err(unavailable)?;
            tx.execute(
                "UPDATE appointment_history SET note = ''
                 WHERE appointment_id = ANY($1) AND action = 'cancel'
                   AND note <> '' AND note <> ALL($2)",
                &[&ids, &codes],
            )
            .await
            .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM legacy_cancel_reasons WHERE appointment_id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            done += ids.len() as u64;
        }
        // Rewrite both tables so the old row versions, which still hold the
        // plaintext, do not linger in their files. Before the list goes: if
        // this fails, the next start finds the list and does it again.
        // (Skipped on a new, empty database.)
        let rows: bool = client
            .query_one("SELECT EXISTS (SELECT 1 FROM appointments)", &[])
            .await
            .map_err(unavailable)?
            .get(0);
        if rows {
            client
                .batch_execute("VACUUM FULL appointments, appointment_history")
                .await
                .map_err(unavailable)?;
        }
        // Done: V7's checks (only codes in the plaintext columns) now hold
        // for every row; the list goes, and with it V7's one exception to
        // the append-only history (blanking a note): V1's strict trigger is
        // back, in the same transaction. (One simple-query message without
        // BEGIN/COMMIT is one implicit transaction, and an error in it
        // leaves no aborted transaction behind on the pooled connection.)
        client
            .batch_execute(
                "ALTER TABLE appointments VALIDATE CONSTRAINT appointments_cancel_reason_is_a_code;
                 ALTER TABLE appointment_history VALIDATE CONSTRAINT appointment_history_cancel_note_is_a_code;
                 DROP TABLE IF EXISTS legacy_cancel_reasons;
                 CREATE OR REPLACE FUNCTION appointment_history_is_append_only()
                 RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     RAISE EXCEPTION 'appointment_history is append-only';
                 END;
                 $$;",
            )
            .await
            .map_err(unavailable)?;
        if done > 0 {
            tracing::info!(
                appointments = done,
                "sealed cancellation reasons stored in plaintext"
            );
        }
        Ok(done)
    }
}

#[async_trait]
impl PrivacyStore for PgStore {
    async fn profile(&self, user: UserId) -> Result<PatientProfile, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT phone_enc, date_of_birth_enc FROM patient_profiles WHERE user_id = $1",
                &[&user.0],
            )
            .await
            .map_err(unavailable)?;
        match row {
            None => Ok(PatientProfile::default()),
            Some(r) => SealedProfile {
                phone: r.get("phone_enc"),
                date_of_birth: r.get("date_of_birth_enc"),
            }
            .open(&self.cipher, user)
            .map_err(unavailable),
        }
    }

    async fn set_profile(&self, user: UserId, p: &PatientProfile) -> Result<(), StoreError> {
        let sealed = SealedProfile::seal(&self.cipher, user, p).map_err(unavailable)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO patient_profiles (user_id, phone_enc, date_of_birth_enc)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET phone_enc = EXCLUDED.phone_enc,
                    date_of_birth_enc = EXCLUDED.date_of_birth_enc, updated_at = now()",
                &[&user.0, &sealed.phone, &sealed.date_of_birth],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn appointment_details(
        &self,
        id: AppointmentId,
    ) -> Result<Option<AppointmentDetails>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT reason_enc, notes_enc, cancel_reason_enc FROM appointment_details
                 WHERE appointment_id = $1",
                &[&id.0],
            )
            .await
            .map_err(unavailable)?;
        row.map(|r| open_details(&self.cipher, id, sealed_details(&r)).map_err(unavailable))
            .transpose()
    }

    fn seal_cancel_reason(&self, id: AppointmentId, reason: &str) -> Result<Vec<u8>, StoreError> {
        seal_cancel_reason(&self.cipher, id, reason)
    }

    async fn update_appointment_details(
        &self,
        id: AppointmentId,
        change: &DetailsChange,
    ) -> Result<AppointmentDetails, StoreError> {
        let reason = seal_text(
            &self.cipher,
            columns::REASON,
            id.0,
            change.reason.as_deref(),
        )
        .map_err(unavailable)?;
        let notes = seal_text(&self.cipher, columns::NOTES, id.0, change.notes.as_deref())
            .map_err(unavailable)?;
        let client = self.client().await?;
        // One statement: concurrent writers of the two fields cannot lose
        // each other's change.
        let row = client
            .query_one(
                "INSERT INTO appointment_details (appointment_id, reason_enc, notes_enc)
                 VALUES ($1, $3, $5)
                 ON CONFLICT (appointment_id) DO UPDATE SET
                    reason_enc = CASE WHEN $2 THEN EXCLUDED.reason_enc
                                      ELSE appointment_details.reason_enc END,
                    notes_enc = CASE WHEN $4 THEN EXCLUDED.notes_enc
                                     ELSE appointment_details.notes_enc END,
                    updated_at = now()
                 RETURNING reason_enc, notes_enc, cancel_reason_enc",
                &[
                    &id.0,
                    &change.reason.is_some(),
                    &reason,
                    &change.notes.is_some(),
                    &notes,
                ],
            )
            .await
            .map_err(unavailable)?;
        open_details(&self.cipher, id, sealed_details(&row)).map_err(unavailable)
    }

    async fn suggestion_logs_of(&self, patient: UserId) -> Result<Vec<SuggestionLog>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT doctor_id, shown_at, starts FROM suggestion_log
                 WHERE patient_id = $1 ORDER BY id",
                &[&patient.0],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| SuggestionLog {
                patient,
                doctor: DoctorId(r.get("doctor_id")),
                shown_at: r.get("shown_at"),
                starts: r.get::<_, Vec<DateTime<Utc>>>("starts"),
            })
            .collect())
    }

    async fn erase_patient(&self, patient: UserId) -> Result<Option<Erasure>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // The password hash becomes a value no PHC parser accepts, so no
        // password verifies against it.
        let n = tx
            .execute(
                "UPDATE users SET email_hash = NULL, email_enc = NULL, name_enc = NULL,
                    password_hash = '!erased', erased_at = coalesce(erased_at, now())
                 WHERE id = $1 AND role = 'patient'",
                &[&patient.0],
            )
            .await
            .map_err(unavailable)?;
        if n == 0 {
            return Ok(None);
        }
        tx.execute(
            "DELETE FROM patient_profiles WHERE user_id = $1",
            &[&patient.0],
        )
        .await
        .map_err(unavailable)?;
        // Which slots were offered to the patient, and when: personal too.
        tx.execute(
            "DELETE FROM suggestion_log WHERE patient_id = $1",
            &[&patient.0],
        )
        .await
        .map_err(unavailable)?;
        let details_deleted = tx
            .execute(
                "DELETE FROM appointment_details WHERE appointment_id IN
                    (SELECT id FROM appointments WHERE patient_id = $1)",
                &[&patient.0],
            )
            .await
            .map_err(unavailable)?;
        let tokens_revoked = tx
            .execute(
                "UPDATE refresh_tokens SET revoked_at = now()
                 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&patient.0],
            )
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(Erasure {
            details_deleted,
            tokens_revoked,
        }))
    }

    async fn rotate_batch(
        &self,
        table: EncryptedTable,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<RotateBatch, StoreError> {
        let cols = table.columns();
        let (t, k) = (table.table(), table.key());
        let list = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        let set = cols
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("{c} = ${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Row locks: a concurrent write of the same row waits for this batch
        // instead of being overwritten with the old value.
        let rows = tx
            .query(
                &format!(
                    "SELECT {k} AS pk, {list} FROM {t}
                     WHERE $1::uuid IS NULL OR {k} > $1 ORDER BY {k} LIMIT $2 FOR UPDATE"
                ),
                &[&after, &limit.max(1)],
            )
            .await
            .map_err(unavailable)?;
        let update = format!("UPDATE {t} SET {set} WHERE {k} = $1");
        let mut out = RotateBatch::default();
        for r in &rows {
            let pk: Uuid = r.get("pk");
            out.scanned += 1;
            out.last = Some(pk);
            let values = (1..=cols.len()).map(|i| r.get(i)).collect();
            if let Some(values) = reencrypt_row(&self.cipher, table, pk, values)
                .map_err(|e| StoreError(format!("{t} {pk}: {e}")))?
            {
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&pk];
                params.extend(
                    values
                        .iter()
                        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)),
                );
                tx.execute(&update, &params).await.map_err(unavailable)?;
                out.rewritten += 1;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(out)
    }
}
