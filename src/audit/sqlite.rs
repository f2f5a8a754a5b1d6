//! The audit chain in the embedded SQLite file.
//!
//! Its own two connections to the store's file (WAL mode, so they share it
//! safely with the store's): one appends, one reads. Appends take the
//! database write lock with `BEGIN IMMEDIATE`, which serializes them with
//! every other writer, so seq and `prev_hash` follow the head row exactly.

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::DateTime;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use uuid::Uuid;

use super::{AuditEntry, AuditError, AuditFilter, AuditStore, Hash, Head, NewEntry, OUTBOX_BATCH};

/// As long as the store waits for the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

const COLS: &str = "seq, at, actor_id, actor_role, action, patient_id, resource_type, \
    resource_id, clinic_id, client_ip, request_id, outcome, prev_hash, hash";

/// The SQLite audit store.
#[derive(Clone)]
pub struct SqliteAudit {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The store switched the file to WAL; FULL makes each audit commit durable.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    Ok(conn)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    let conn = m.lock().unwrap_or_else(PoisonError::into_inner);
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    conn
}

impl SqliteAudit {
    /// Opens the file at `path` (already migrated by the store).
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let writer = connect(path).map_err(AuditError::from)?;
        let reader = connect(path).map_err(AuditError::from)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(AuditError::from)?;
        Ok(SqliteAudit {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    async fn run<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AuditError> + Send + 'static,
    {
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .unwrap_or_else(|e| Err(AuditError(format!("audit task failed: {e}"))))
    }
}

fn uuid_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| {
        Uuid::parse_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

/// A stored entry (columns as in `COLS`), with its raw hashes.
fn entry(r: &Row<'_>) -> rusqlite::Result<(AuditEntry, Vec<u8>, Vec<u8>)> {
    let e = AuditEntry {
        seq: r.get(0)?,
        ..recorded(r)?
    };
    Ok((e, r.get(12)?, r.get(13)?))
}

/// The recorded fields of an entry or outbox row, in columns 1 to 11 (both
/// queries put seq or id first); seq and hashes unset.
fn recorded(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let at: i64 = r.get(1)?;
    Ok(AuditEntry {
        seq: 0,
        at: DateTime::from_timestamp_micros(at)
            .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(1, at))?,
        actor_id: uuid_col(r, 2)?,
        actor_role: r.get(3)?,
        action: r.get(4)?,
        patient_id: uuid_col(r, 5)?,
        resource_type: r.get(6)?,
        resource_id: uuid_col(r, 7)?,
        clinic_id: uuid_col(r, 8)?,
        client_ip: r.get(9)?,
        request_id: r.get(10)?,
        outcome: r.get(11)?,
        prev_hash: Hash::default(),
        hash: Hash::default(),
    })
}

/// Rows into entries, checking the stored hashes are 32 bytes.
fn entries(rows: Vec<(AuditEntry, Vec<u8>, Vec<u8>)>) -> Result<Vec<AuditEntry>, AuditError> {
    rows.into_iter()
        .map(|(mut e, prev, hash)| {
            e.prev_hash = Hash::from_slice(&prev)?;
            e.hash = Hash::from_slice(&hash)?;
            Ok(e)
        })
        .collect()
}

fn text(u: Option<Uuid>) -> Option<String> {
    u.map(|u| u.to_string())
}

/// An outbox row: its id, and the entry not yet in the chain.
fn outbox_row(r: &Row<'_>) -> rusqlite::Result<(i64, AuditEntry)> {
    Ok((r.get(0)?, recorded(r)?))
}

/// In one write transaction (`BEGIN IMMEDIATE` keeps every other writer
/// out meanwhile): takes what `take` returns — entries with seq and hashes
/// unset, and outbox ids to delete — links the entries after the head,
/// inserts them, deletes the ids and moves the head. Returns the chained
/// entries and the number of ids deleted.
fn link_and_commit(
    conn: &mut Connection,
    take: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(Vec<AuditEntry>, Vec<i64>), AuditError>,
) -> Result<(Vec<AuditEntry>, usize), AuditError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(AuditError::from)?;
    let (mut seq, prev): (i64, Vec<u8>) = tx
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(AuditError::from)?;
    let mut hash = Hash::from_slice(&prev)?.0;
    let (entries, outbox_ids) = take(&tx)?;
    if entries.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut chained = Vec::with_capacity(entries.len());
    {
        let mut delete = tx
            .prepare_cached("DELETE FROM audit_outbox WHERE id = ?1")
            .map_err(AuditError::from)?;
        for id in &outbox_ids {
            delete.execute([id]).map_err(AuditError::from)?;
        }
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT INTO audit_log ({COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))
            .map_err(AuditError::from)?;
        for e in entries {
            let c = e.link(seq, hash);
            insert
                .execute(params![
                    c.seq,
                    c.at.timestamp_micros(),
                    text(c.actor_id),
                    c.actor_role,
                    c.action,
                    text(c.patient_id),
                    c.resource_type,
                    text(c.resource_id),
                    text(c.clinic_id),
                    c.client_ip,
                    c.request_id,
                    c.outcome,
                    &c.prev_hash.0[..],
                    &c.hash.0[..],
                ])
                .map_err(AuditError::from)?;
            seq = c.seq;
            hash = c.hash.0;
            chained.push(c);
        }
    }
    tx.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![seq, &hash[..]],
    )
    .map_err(AuditError::from)?;
    tx.commit().map_err(AuditError::from)?;
    Ok((chained, outbox_ids.len()))
}

#[async_trait]
impl AuditStore for SqliteAudit {
    async fn append(&self, batch: Vec<NewEntry>) -> Result<Vec<AuditEntry>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        Self::run(self.writer.clone(), move |conn| {
            let entries = batch.into_iter().map(NewEntry::unlinked).collect();
            link_and_commit(conn, |_| Ok((entries, Vec::new()))).map(|(chained, _)| chained)
        })
        .await
    }

    async fn drain_batch(&self, _durable: bool) -> Result<usize, AuditError> {
        // A look from the reader first: an idle sweep does not take the
        // database's write lock from the store's writer.
        let any = Self::run(self.reader.clone(), |conn| {
            conn.query_row("SELECT EXISTS (SELECT 1 FROM audit_outbox)", [], |r| {
                r.get::<_, bool>(0)
            })
            .map_err(AuditError::from)
        })
        .await?;
        if !any {
            return Ok(0);
        }
        Self::run(self.writer.clone(), |conn| {
            link_and_commit(conn, |tx| {
                // The records of committed calendar changes, oldest first.
                let waiting: Vec<(i64, AuditEntry)> = tx
                    .prepare_cached(
                        "SELECT id, at, actor_id, actor_role, action, patient_id, resource_type,
                            resource_id, clinic_id, client_ip, request_id, outcome
                         FROM audit_outbox ORDER BY id LIMIT ?1",
                    )
                    .map_err(AuditError::from)?
                    .query_map([OUTBOX_BATCH as i64], outbox_row)
                    .map_err(AuditError::from)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(AuditError::from)?;
                Ok(waiting.into_iter().map(|(id, e)| (e, id)).unzip())
            })
            .map(|(_, moved)| moved)
        })
        .await
    }

    async fn query(&self, f: AuditFilter) -> Result<Vec<AuditEntry>, AuditError> {
        Self::run(self.reader.clone(), move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM audit_log
                     WHERE seq > ?1
                       AND (?2 IS NULL OR clinic_id = ?2)
                       AND (?3 IS NULL OR patient_id = ?3)
                       AND (?4 IS NULL OR actor_id = ?4)
                       AND (?5 IS NULL OR action = ?5)
                       AND (?6 IS NULL OR at >= ?6)
                       AND (?7 IS NULL OR at < ?7)
                     ORDER BY seq LIMIT ?8"
                ))
                .map_err(AuditError::from)?;
            let rows = stmt
                .query_map(
                    params![
                        f.after_seq,
                        text(f.clinic_id),
                        text(f.patient_id),
                        text(f.actor_id),
                        f.action.map(|a| a.as_str()),
                        f.from.map(|t| t.timestamp_micros()),
                        f.to.map(|t| t.timestamp_micros()),
                        f.limit as i64,
                    ],
                    entry,
                )
                .map_err(AuditError::from)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(AuditError::from)?;
            entries(rows)
        })
        .await
    }

    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        Self::run(self.reader.clone(), move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))
                .map_err(AuditError::from)?;
            let rows = stmt
                .query_map(params![after, limit as i64], entry)
                .map_err(AuditError::from)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(AuditError::from)?;
            entries(rows)
        })
        .await
    }

    async fn pending(&self) -> Result<i64, AuditError> {
        Self::run(self.reader.clone(), |conn| {
            conn.query_row("SELECT count(*) FROM audit_outbox", [], |r| r.get(0))
                .map_err(AuditError::from)
        })
        .await
    }

    async fn head(&self) -> Result<Head, AuditError> {
        Self::run(self.reader.clone(), |conn| {
            let row: Option<(i64, Vec<u8>)> = conn
                .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(AuditError::from)?;
            let (seq, hash) =
                row.ok_or_else(|| AuditError("the audit_head row is missing".into()))?;
            Ok(Head {
                seq,
                hash: Hash::from_slice(&hash)?,
            })
        })
        .await
    }
}
