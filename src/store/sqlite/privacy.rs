//! SQLite side of [`PrivacyStore`], and the one-time encryption of accounts
//! written before encryption at rest existed.

use async_trait::async_trait;
use docspot_actors::{
    domain::{AppointmentId, DoctorId, UserId},
    store::StoreError,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{Id, Micros, SqliteStore, invalid_row, now_us, uid, unavailable};
use crate::{
    crypto::FieldCipher,
    store::{
        SuggestionLog,
        privacy::{
            AppointmentDetails, CANCEL_CODES, DetailsChange, EncryptedTable, Erasure,
            PatientProfile, PrivacyStore, RotateBatch, SealedProfile, SealedUser, columns,
            open_details, reencrypt_row, seal_cancel_reason, seal_text,
        },
    },
};

/// The sealed reason, notes and cancellation reason of a details row.
type Sealed3 = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

fn sealed3(r: &rusqlite::Row<'_>) -> rusqlite::Result<Sealed3> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn as_refs(s: &Sealed3) -> [Option<&[u8]>; 3] {
    [s.0.as_deref(), s.1.as_deref(), s.2.as_deref()]
}

/// Rows per transaction when encrypting a plaintext database.
pub(super) const LEGACY_BATCH: i64 = 500;

/// Encrypts accounts still stored in plaintext (a file from before V4),
/// `batch` rows per transaction, blanking their plaintext; when none is
/// left, drops the plaintext `email` and `name` columns. Resumable: an
/// interrupted run leaves whole batches done. Returns the rows encrypted.
pub(super) fn encrypt_legacy_users(
    conn: &mut Connection,
    cipher: &FieldCipher,
    batch: i64,
) -> Result<u64, StoreError> {
    let mut done = 0;
    let mut dropped = false;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let legacy: i64 = tx
            .query_row(
                "SELECT count(*) FROM pragma_table_info('users') WHERE name = 'email'",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if legacy == 0 {
            break;
        }
        let rows: Vec<(Uuid, String, String)> = tx
            .prepare(
                "SELECT id, email, name FROM users
                 WHERE email_enc IS NULL AND erased_at IS NULL ORDER BY id LIMIT ?1",
            )
            .and_then(|mut st| {
                st.query_map([batch.max(1)], |r| {
                    Ok((r.get::<_, Id>(0)?.0, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .map_err(unavailable)?;
        if rows.is_empty() {
            // Everything is encrypted: the plaintext columns go.
            tx.execute_batch(
                "ALTER TABLE users DROP COLUMN email; ALTER TABLE users DROP COLUMN name;",
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            dropped = true;
            break;
        }
        for (id, email, name) in &rows {
            let sealed = SealedUser::seal(cipher, UserId(*id), email, name).map_err(unavailable)?;
            tx.execute(
                "UPDATE users SET email_hash = ?2, email_enc = ?3, name_enc = ?4,
                    email = '', name = ''
                 WHERE id = ?1",
                params![uid(*id), sealed.email_hash, sealed.email, sealed.name],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        done += rows.len() as u64;
    }
    if dropped {
        // The old plaintext may survive in pages written before
        // secure_delete was on, and in the WAL: rebuild the file and empty
        // the WAL (once: the next opening finds no plaintext column).
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(unavailable)?;
    }
    if done > 0 {
        tracing::info!(rows = done, "encrypted accounts stored in plaintext");
    }
    Ok(done)
}

/// Seals the free-text cancellation reasons written before V7 and blanks
/// their plaintext in the appointment and its history, `batch` appointments
/// per transaction, from the list V7 made (`legacy_cancel_reasons`), which
/// it drops when done; an erased patient's reasons are only blanked. See
/// the PostgreSQL store's `seal_legacy_cancel_reasons`. Returns the
/// appointments done.
pub(super) fn seal_legacy_cancel_reasons(
    conn: &mut Connection,
    cipher: &FieldCipher,
    batch: i64,
) -> Result<u64, StoreError> {
    let codes = CANCEL_CODES.map(|c| format!("'{c}'")).join(", ");
    let mut done = 0;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let pending: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master
                 WHERE type = 'table' AND name = 'legacy_cancel_reasons'",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if pending == 0 {
            break;
        }
        type Legacy = (Uuid, bool, Option<String>, Option<String>);
        let rows: Vec<Legacy> = tx
            .prepare(&format!(
                "SELECT l.appointment_id, u.erased_at IS NOT NULL,
                    CASE WHEN a.cancel_reason NOT IN ({codes}) THEN a.cancel_reason END,
                    (SELECT h.note FROM appointment_history h
                     WHERE h.appointment_id = a.id AND h.action = 'cancel'
                       AND h.note <> '' AND h.note NOT IN ({codes})
                     ORDER BY h.id DESC LIMIT 1)
                 FROM legacy_cancel_reasons l
                 JOIN appointments a ON a.id = l.appointment_id
                 JOIN users u ON u.id = a.patient_id
                 ORDER BY l.appointment_id LIMIT ?1"
            ))
            .and_then(|mut st| {
                st.query_map([batch.max(1)], |r| {
                    Ok((r.get::<_, Id>(0)?.0, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(unavailable)?;
        if rows.is_empty() {
            tx.execute_batch("DROP TABLE legacy_cancel_reasons")
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            break;
        }
        // The history is append-only; its update trigger steps aside for
        // this transaction only.
        tx.execute_batch("DROP TRIGGER appointment_history_no_update")
            .map_err(unavailable)?;
        let now = now_us();
        for (id, erased, reason, note) in &rows {
            if let (Some(text), false) = (reason.as_ref().or(note.as_ref()), erased) {
                let sealed = seal_cancel_reason(cipher, AppointmentId(*id), text)?;
                tx.execute(
                    "INSERT INTO appointment_details (appointment_id, cancel_reason_enc, updated_at)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (appointment_id) DO UPDATE SET cancel_reason_enc =
                        coalesce(appointment_details.cancel_reason_enc, excluded.cancel_reason_enc)",
                    params![uid(*id), sealed, now],
                )
                .map_err(unavailable)?;
            }
            tx.execute(
                &format!(
                    "UPDATE appointments SET cancel_reason = NULL
                     WHERE id = ?1 AND cancel_reason NOT IN ({codes})"
                ),
                [uid(*id)],
            )
            .map_err(unavailable)?;
            tx.execute(
                &format!(
                    "UPDATE appointment_history SET note = ''
                     WHERE appointment_id = ?1 AND action = 'cancel'
                       AND note <> '' AND note NOT IN ({codes})"
                ),
                [uid(*id)],
            )
            .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM legacy_cancel_reasons WHERE appointment_id = ?1",
                [uid(*id)],
            )
            .map_err(unavailable)?;
        }
        tx.execute_batch(
            "CREATE TRIGGER appointment_history_no_update
                 BEFORE UPDATE ON appointment_history
             BEGIN
                 SELECT RAISE(ABORT, 'appointment_history is append-only');
             END;",
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        done += rows.len() as u64;
    }
    if done > 0 {
        // The plaintext may survive in free pages written before
        // secure_delete was on, and in the WAL: rebuild the file and empty
        // the WAL (as for accounts above).
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(unavailable)?;
        tracing::info!(
            appointments = done,
            "sealed cancellation reasons stored in plaintext"
        );
    }
    Ok(done)
}

#[async_trait]
impl PrivacyStore for SqliteStore {
    async fn profile(&self, user: UserId) -> Result<PatientProfile, StoreError> {
        let sealed = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT phone_enc, date_of_birth_enc FROM patient_profiles WHERE user_id = ?1",
                )?
                .query_row([uid(user.0)], |r| {
                    Ok(SealedProfile {
                        phone: r.get(0)?,
                        date_of_birth: r.get(1)?,
                    })
                })
                .optional()
            })
            .await?;
        match sealed {
            None => Ok(PatientProfile::default()),
            Some(s) => s.open(&self.inner.cipher, user).map_err(unavailable),
        }
    }

    async fn set_profile(&self, user: UserId, p: &PatientProfile) -> Result<(), StoreError> {
        let sealed = SealedProfile::seal(&self.inner.cipher, user, p).map_err(unavailable)?;
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO patient_profiles (user_id, phone_enc, date_of_birth_enc, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id) DO UPDATE SET phone_enc = excluded.phone_enc,
                    date_of_birth_enc = excluded.date_of_birth_enc,
                    updated_at = excluded.updated_at",
                params![uid(user.0), sealed.phone, sealed.date_of_birth, now_us()],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn appointment_details(
        &self,
        id: AppointmentId,
    ) -> Result<Option<AppointmentDetails>, StoreError> {
        let row: Option<Sealed3> = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT reason_enc, notes_enc, cancel_reason_enc FROM appointment_details
                     WHERE appointment_id = ?1",
                )?
                .query_row([uid(id.0)], sealed3)
                .optional()
            })
            .await?;
        row.map(|r| open_details(&self.inner.cipher, id, as_refs(&r)).map_err(unavailable))
            .transpose()
    }

    fn seal_cancel_reason(&self, id: AppointmentId, reason: &str) -> Result<Vec<u8>, StoreError> {
        seal_cancel_reason(&self.inner.cipher, id, reason)
    }

    async fn update_appointment_details(
        &self,
        id: AppointmentId,
        change: &DetailsChange,
    ) -> Result<AppointmentDetails, StoreError> {
        let cipher = &self.inner.cipher;
        let reason = seal_text(cipher, columns::REASON, id.0, change.reason.as_deref())
            .map_err(unavailable)?;
        let notes = seal_text(cipher, columns::NOTES, id.0, change.notes.as_deref())
            .map_err(unavailable)?;
        let (set_reason, set_notes) = (change.reason.is_some(), change.notes.is_some());
        let sealed: Sealed3 = self
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO appointment_details (appointment_id, reason_enc, notes_enc,
                        updated_at)
                     VALUES (?1, ?3, ?5, ?6)
                     ON CONFLICT (appointment_id) DO UPDATE SET
                        reason_enc = CASE WHEN ?2 THEN excluded.reason_enc
                                          ELSE appointment_details.reason_enc END,
                        notes_enc = CASE WHEN ?4 THEN excluded.notes_enc
                                         ELSE appointment_details.notes_enc END,
                        updated_at = excluded.updated_at
                     RETURNING reason_enc, notes_enc, cancel_reason_enc",
                )
                .and_then(|mut st| {
                    st.query_row(
                        params![uid(id.0), set_reason, reason, set_notes, notes, now_us()],
                        sealed3,
                    )
                })
                .map_err(unavailable)
            })
            .await?;
        open_details(cipher, id, as_refs(&sealed)).map_err(unavailable)
    }

    async fn suggestion_logs_of(&self, patient: UserId) -> Result<Vec<SuggestionLog>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT doctor_id, shown_at, starts FROM suggestion_log
                 WHERE patient_id = ?1 ORDER BY id",
            )?
            .query_map([uid(patient.0)], |r| {
                let starts: Vec<i64> =
                    serde_json::from_str(&r.get::<_, String>(2)?).map_err(invalid_row)?;
                Ok(SuggestionLog {
                    patient,
                    doctor: DoctorId(r.get::<_, Id>(0)?.0),
                    shown_at: r.get::<_, Micros>(1)?.0,
                    starts: starts
                        .into_iter()
                        .filter_map(chrono::DateTime::from_timestamp_micros)
                        .collect(),
                })
            })?
            .collect()
        })
        .await
    }

    async fn erase_patient(&self, patient: UserId) -> Result<Option<Erasure>, StoreError> {
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let now = now_us();
            let id = uid(patient.0);
            // The password hash becomes a value no PHC parser accepts, so no
            // password verifies against it.
            let n = tx
                .execute(
                    "UPDATE users SET email_hash = NULL, email_enc = NULL, name_enc = NULL,
                        password_hash = '!erased', erased_at = coalesce(erased_at, ?2)
                     WHERE id = ?1 AND role = 'patient'",
                    params![id, now],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute("DELETE FROM patient_profiles WHERE user_id = ?1", [&id])
                .map_err(unavailable)?;
            // Which slots were offered to the patient, and when: personal too.
            tx.execute("DELETE FROM suggestion_log WHERE patient_id = ?1", [&id])
                .map_err(unavailable)?;
            let details_deleted = tx
                .execute(
                    "DELETE FROM appointment_details WHERE appointment_id IN
                        (SELECT id FROM appointments WHERE patient_id = ?1)",
                    [&id],
                )
                .map_err(unavailable)? as u64;
            let tokens_revoked = tx
                .execute(
                    "UPDATE refresh_tokens SET revoked_at = ?2
                     WHERE user_id = ?1 AND revoked_at IS NULL",
                    params![id, now],
                )
                .map_err(unavailable)? as u64;
            tx.commit().map_err(unavailable)?;
            Ok(Some(Erasure {
                details_deleted,
                tokens_revoked,
            }))
        })
        .await
    }

    async fn rotate_batch(
        &self,
        table: EncryptedTable,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<RotateBatch, StoreError> {
        let cipher = self.inner.cipher.clone();
        self.write(move |conn| {
            let cols = table.columns();
            let (t, k) = (table.table(), table.key());
            let list = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
            let set = cols
                .iter()
                .enumerate()
                .map(|(i, (c, _))| format!("{c} = ?{}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            // The writer connection in an immediate transaction: no other
            // write of these rows can interleave.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            type Sealed = Option<Vec<u8>>;
            let rows: Vec<(Uuid, Vec<Sealed>)> = tx
                .prepare(&format!(
                    "SELECT {k}, {list} FROM {t} WHERE {k} > ?1 ORDER BY {k} LIMIT ?2"
                ))
                .and_then(|mut st| {
                    st.query_map(
                        params![after.map(uid).unwrap_or_default(), limit.max(1)],
                        |r| {
                            let values = (1..=cols.len())
                                .map(|i| r.get(i))
                                .collect::<rusqlite::Result<_>>()?;
                            Ok((r.get::<_, Id>(0)?.0, values))
                        },
                    )?
                    .collect()
                })
                .map_err(unavailable)?;
            let mut out = RotateBatch::default();
            let update = format!("UPDATE {t} SET {set} WHERE {k} = ?1");
            for (pk, values) in rows {
                out.scanned += 1;
                out.last = Some(pk);
                if let Some(values) = reencrypt_row(&cipher, table, pk, values)
                    .map_err(|e| StoreError(format!("{t} {pk}: {e}")))?
                {
                    let mut params: Vec<&dyn rusqlite::ToSql> =
                        Vec::with_capacity(1 + values.len());
                    let key = uid(pk);
                    params.push(&key);
                    params.extend(values.iter().map(|v| v as &dyn rusqlite::ToSql));
                    tx.execute(&update, params.as_slice())
                        .map_err(unavailable)?;
                    out.rewritten += 1;
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
    }
}
