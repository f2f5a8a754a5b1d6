//! The audit chain in PostgreSQL.
//!
//! Its own small pool, apart from the booking store's: an audit append
//! waiting on the chain-head lock never holds a connection the calendars
//! need to commit bookings.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use super::{AuditEntry, AuditError, AuditFilter, AuditStore, Hash, Head, NewEntry, OUTBOX_BATCH};

/// Connections in the audit pool: the writer needs one, queries and
/// verification the rest.
const POOL: usize = 4;

const COLS: &str = "seq, at, actor_id, actor_role, action, patient_id, resource_type, \
    resource_id, clinic_id, client_ip, request_id, outcome, prev_hash, hash";

/// The PostgreSQL audit store.
pub struct PgAudit {
    pool: Pool,
}

impl PgAudit {
    /// A pool on `url` (connections open lazily).
    pub fn connect(url: &str) -> Result<Self, AuditError> {
        let pool = crate::store::postgres::pool(url, POOL).map_err(AuditError)?;
        Ok(PgAudit { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, AuditError> {
        self.pool.get().await.map_err(AuditError::from)
    }
}

/// A stored entry.
fn entry(r: &Row) -> Result<AuditEntry, AuditError> {
    Ok(AuditEntry {
        seq: r.get("seq"),
        prev_hash: Hash::from_slice(r.get("prev_hash"))?,
        hash: Hash::from_slice(r.get("hash"))?,
        ..outbox_entry(r)
    })
}

/// The recorded fields of an entry or outbox row; seq and hashes unset
/// (an outbox row is not in the chain yet).
fn outbox_entry(r: &Row) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: r.get("at"),
        actor_id: r.get("actor_id"),
        actor_role: r.get("actor_role"),
        action: r.get("action"),
        patient_id: r.get("patient_id"),
        resource_type: r.get("resource_type"),
        resource_id: r.get("resource_id"),
        clinic_id: r.get("clinic_id"),
        client_ip: r.get("client_ip"),
        request_id: r.get("request_id"),
        outcome: r.get("outcome"),
        prev_hash: Hash::default(),
        hash: Hash::default(),
    }
}

/// Locks the chain head and returns it: the lock serializes every node's
/// appends (and outbox drains) until commit.
async fn lock_head(tx: &deadpool_postgres::Transaction<'_>) -> Result<(i64, [u8; 32]), AuditError> {
    let head = tx
        .query_one(
            "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(AuditError::from)?;
    Ok((head.get(0), Hash::from_slice(head.get(1))?.0))
}

/// Links `entries` (seq and hashes unset) into the chain after `head`,
/// inserts them in one statement, deletes `outbox_ids` from the outbox,
/// moves the head and commits. Returns the chained entries.
async fn link_and_commit(
    tx: deadpool_postgres::Transaction<'_>,
    head: (i64, [u8; 32]),
    entries: Vec<AuditEntry>,
    outbox_ids: &[i64],
) -> Result<Vec<AuditEntry>, AuditError> {
    let (mut seq, mut hash) = head;
    let chained: Vec<AuditEntry> = entries
        .into_iter()
        .map(|e| {
            let c = e.link(seq, hash);
            seq = c.seq;
            hash = c.hash.0;
            c
        })
        .collect();
    // One statement for the whole batch: columns as arrays, unnested.
    let seqs: Vec<i64> = chained.iter().map(|e| e.seq).collect();
    let ats: Vec<DateTime<Utc>> = chained.iter().map(|e| e.at).collect();
    let actors: Vec<Option<Uuid>> = chained.iter().map(|e| e.actor_id).collect();
    let roles: Vec<&str> = chained.iter().map(|e| e.actor_role.as_str()).collect();
    let actions: Vec<&str> = chained.iter().map(|e| e.action.as_str()).collect();
    let patients: Vec<Option<Uuid>> = chained.iter().map(|e| e.patient_id).collect();
    let rtypes: Vec<Option<&str>> = chained.iter().map(|e| e.resource_type.as_deref()).collect();
    let rids: Vec<Option<Uuid>> = chained.iter().map(|e| e.resource_id).collect();
    let clinics: Vec<Option<Uuid>> = chained.iter().map(|e| e.clinic_id).collect();
    let ips: Vec<Option<&str>> = chained.iter().map(|e| e.client_ip.as_deref()).collect();
    let reqs: Vec<Option<&str>> = chained.iter().map(|e| e.request_id.as_deref()).collect();
    let outcomes: Vec<&str> = chained.iter().map(|e| e.outcome.as_str()).collect();
    let prevs: Vec<&[u8]> = chained.iter().map(|e| &e.prev_hash.0[..]).collect();
    let hashes: Vec<&[u8]> = chained.iter().map(|e| &e.hash.0[..]).collect();
    tx.execute(
        &format!(
            "INSERT INTO audit_log ({COLS})
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::uuid[], $4::text[],
                $5::text[], $6::uuid[], $7::text[], $8::uuid[], $9::uuid[], $10::text[],
                $11::text[], $12::text[], $13::bytea[], $14::bytea[])"
        ),
        &[
            &seqs, &ats, &actors, &roles, &actions, &patients, &rtypes, &rids, &clinics, &ips,
            &reqs, &outcomes, &prevs, &hashes,
        ],
    )
    .await
    .map_err(AuditError::from)?;
    if !outbox_ids.is_empty() {
        tx.execute(
            "DELETE FROM audit_outbox WHERE id = ANY($1)",
            &[&outbox_ids],
        )
        .await
        .map_err(AuditError::from)?;
    }
    tx.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &&hash[..]],
    )
    .await
    .map_err(AuditError::from)?;
    tx.commit().await.map_err(AuditError::from)?;
    Ok(chained)
}

#[async_trait]
impl AuditStore for PgAudit {
    async fn append(&self, batch: Vec<NewEntry>) -> Result<Vec<AuditEntry>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(AuditError::from)?;
        let head = lock_head(&tx).await?;
        let entries = batch.into_iter().map(NewEntry::unlinked).collect();
        link_and_commit(tx, head, entries, &[]).await
    }

    async fn drain_batch(&self, durable: bool) -> Result<usize, AuditError> {
        let mut client = self.client().await?;
        // A look without the head lock first: an idle node's sweep costs one
        // index probe, not a lock every other node's appends wait for.
        let any: bool = client
            .query_one("SELECT EXISTS (SELECT 1 FROM audit_outbox)", &[])
            .await
            .map_err(AuditError::from)?
            .get(0);
        if !any {
            return Ok(0);
        }
        let tx = client.transaction().await.map_err(AuditError::from)?;
        if !durable {
            // This commit need not wait for its WAL flush: should it be lost
            // in a crash, the outbox rows it deleted are back with it (one
            // transaction) and are chained again. Nobody is told they were
            // chained, and any later synchronous commit (every recorded read)
            // flushes it too.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(AuditError::from)?;
        }
        let head = lock_head(&tx).await?;
        // The records of committed calendar changes, oldest first. Under the
        // head lock no other node drains at the same time, so each row is
        // chained exactly once; rows still uncommitted are not visible and
        // wait for the next drain.
        let waiting = tx
            .query(
                "SELECT id, at, actor_id, actor_role, action, patient_id, resource_type,
                    resource_id, clinic_id, client_ip, request_id, outcome
                 FROM audit_outbox ORDER BY id LIMIT $1",
                &[&(OUTBOX_BATCH as i64)],
            )
            .await
            .map_err(AuditError::from)?;
        if waiting.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = waiting.iter().map(|r| r.get("id")).collect();
        let entries = waiting.iter().map(outbox_entry).collect();
        link_and_commit(tx, head, entries, &ids).await?;
        Ok(ids.len())
    }

    async fn query(&self, f: AuditFilter) -> Result<Vec<AuditEntry>, AuditError> {
        let action = f.action.map(|a| a.as_str());
        let limit = f.limit as i64;
        let params: [&(dyn ToSql + Sync); 8] = [
            &f.after_seq,
            &f.clinic_id,
            &f.patient_id,
            &f.actor_id,
            &action,
            &f.from,
            &f.to,
            &limit,
        ];
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {COLS} FROM audit_log
                     WHERE seq > $1
                       AND ($2::uuid IS NULL OR clinic_id = $2)
                       AND ($3::uuid IS NULL OR patient_id = $3)
                       AND ($4::uuid IS NULL OR actor_id = $4)
                       AND ($5::text IS NULL OR action = $5)
                       AND ($6::timestamptz IS NULL OR at >= $6)
                       AND ($7::timestamptz IS NULL OR at < $7)
                     ORDER BY seq LIMIT $8"
                ),
                &params,
            )
            .await
            .map_err(AuditError::from)?;
        rows.iter().map(entry).collect()
    }

    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after, &(limit as i64)],
            )
            .await
            .map_err(AuditError::from)?;
        rows.iter().map(entry).collect()
    }

    async fn pending(&self) -> Result<i64, AuditError> {
        let r = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM audit_outbox", &[])
            .await
            .map_err(AuditError::from)?;
        Ok(r.get(0))
    }

    async fn head(&self) -> Result<Head, AuditError> {
        let r = self
            .client()
            .await?
            .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
            .await
            .map_err(AuditError::from)?;
        Ok(Head {
            seq: r.get(0),
            hash: Hash::from_slice(r.get(1))?,
        })
    }
}
