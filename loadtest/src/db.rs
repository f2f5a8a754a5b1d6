//! PostgreSQL: reachability, dropping bench databases, the checks after a
//! scenario, and the `pgbench` baseline.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

use crate::{
    api::{Doctor, SLOT_MINUTES, SLOTS_PER_DAY},
    stats::Latency,
};

/// Connects (the connection task runs in the background).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
            .await
            .context("PostgreSQL: connect timed out")?
            .with_context(|| format!("PostgreSQL at {} is unreachable", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn redact(url: &str) -> String {
    url.rsplit('@').next().unwrap_or(url).to_string()
}

/// Fails loudly when PostgreSQL does not answer.
pub async fn check_postgres(pg: &str) -> anyhow::Result<String> {
    let c = connect(&format!("{}/postgres", pg.trim_end_matches('/'))).await?;
    Ok(c.query_one("SHOW server_version", &[]).await?.get(0))
}

/// `DROP DATABASE … WITH (FORCE)`.
pub async fn drop_database(pg: &str, name: &str) -> anyhow::Result<()> {
    if !name.starts_with("docspot_bench_")
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("refusing to drop {name:?}: not a bench database");
    }
    let c = connect(&format!("{}/postgres", pg.trim_end_matches('/'))).await?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// Pairs of active appointments of one doctor whose busy times overlap
/// (the exclusion constraint says there are none).
pub async fn overlaps(db: &Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM appointments a JOIN appointments b
               ON a.doctor_id = b.doctor_id AND a.id < b.id
              AND tstzrange(a.block_start, a.block_end, '[)') && tstzrange(b.block_start, b.block_end, '[)')
             WHERE a.status IN ('held','booked') AND b.status IN ('held','booked')",
            &[],
        )
        .await?
        .get(0))
}

/// Booked appointments (all of them, or of the given doctors).
pub async fn booked(db: &Client, doctors: Option<&[Doctor]>) -> anyhow::Result<i64> {
    let row = match doctors {
        None => {
            db.query_one(
                "SELECT count(*) FROM appointments WHERE status = 'booked'",
                &[],
            )
            .await?
        }
        Some(ds) => {
            let ids: Vec<String> = ds.iter().map(|d| d.id.clone()).collect();
            db.query_one(
                "SELECT count(*) FROM appointments WHERE status = 'booked'
                   AND doctor_id::text = ANY($1)",
                &[&ids],
            )
            .await?
        }
    };
    Ok(row.get(0))
}

/// A pgbench run's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchResult {
    /// Clients (`-c`).
    pub clients: usize,
    /// Why fewer clients than the scenario's, if so.
    pub clients_note: Option<String>,
    /// Transactions per second (pgbench's figure, without connection time).
    pub tps: f64,
    /// Transactions run.
    pub transactions: u64,
    /// Appointments actually inserted (a conflicting transaction inserts none).
    pub inserted: i64,
    /// Inserted appointments per second of the run.
    pub inserted_per_sec: f64,
    /// Per-transaction latency from pgbench's log.
    pub latency: Latency,
    /// Failed transactions.
    pub failed: u64,
    /// The command line.
    pub command: String,
}

/// How long or how many pgbench transactions to run.
#[derive(Debug, Clone, Copy)]
pub enum PgbenchLength {
    /// `-T secs`.
    Secs(u64),
    /// `-t n` per client.
    PerClient(u64),
}

/// The pgbench baseline: the server's booking statement (appointment,
/// history row and provider alert with the doctor-row lock, `ON CONFLICT DO
/// NOTHING`), one booking per transaction, into a random slot
/// (`slot_choices` slots of the grid from `base`) of a random doctor of
/// `doctors`.
#[allow(clippy::too_many_arguments)]
pub async fn pgbench(
    bin: &Path,
    db_url: &str,
    doctors: &[Doctor],
    base: DateTime<Utc>,
    slot_choices: i64,
    clients: usize,
    clients_note: Option<String>,
    length: PgbenchLength,
) -> anyhow::Result<PgbenchResult> {
    let db = connect(db_url).await?;
    db.batch_execute(
        "DROP TABLE IF EXISTS loadtest_pgbench;
         CREATE TABLE loadtest_pgbench (idx int PRIMARY KEY, doctor_id uuid NOT NULL,
             visit_type_id uuid NOT NULL, patient_id uuid NOT NULL, clinic_id uuid);
         -- The baseline's audit records: the shape of DocSpot's outbox, but a
         -- table of their own, so the server under test does not chain them.
         DROP TABLE IF EXISTS loadtest_pgbench_audit;
         CREATE TABLE loadtest_pgbench_audit (LIKE audit_outbox INCLUDING DEFAULTS);
         ALTER TABLE loadtest_pgbench_audit ADD PRIMARY KEY (id);",
    )
    .await?;
    let patient: uuid::Uuid = db
        .query_one(
            "SELECT id FROM users WHERE role = 'patient' ORDER BY created_at LIMIT 1",
            &[],
        )
        .await
        .context("pgbench needs a registered patient")?
        .get(0);
    for (i, d) in doctors.iter().enumerate() {
        db.execute(
            "INSERT INTO loadtest_pgbench
             SELECT $1::int, d.id, $3::text::uuid, $4::uuid, d.clinic_id FROM doctors d
             WHERE d.id = $2::text::uuid",
            &[&(i as i32), &d.id, &d.visit_type, &patient],
        )
        .await?;
    }
    let before = booked(&db, Some(doctors)).await?;
    let dir =
        std::env::temp_dir().join(format!("docspot_pgbench_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("book.sql");
    std::fs::write(&script, script_text(doctors.len(), base, slot_choices))?;
    let dbname = db_url.rsplit('/').next().unwrap_or_default().to_string();
    let mut cmd = Command::new(bin);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
        "-U",
        "postgres",
        "-n",
        "-M",
        "prepared",
    ])
    .arg("-c")
    .arg(clients.to_string())
    .arg("-j")
    .arg(clients.clamp(1, 2).to_string());
    match length {
        PgbenchLength::Secs(s) => cmd.arg("-T").arg(s.to_string()),
        PgbenchLength::PerClient(t) => cmd.arg("-t").arg(t.to_string()),
    };
    cmd.arg("-f")
        .arg(&script)
        .arg("-l")
        .arg(format!("--log-prefix={}", dir.join("log").display()))
        .arg(&dbname)
        .current_dir(&dir);
    let command = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))?
            .split_once('=')?
            .1
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let tps = field("tps").context("pgbench printed no tps")?;
    let transactions = text
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Log lines: client_id transaction_no time_us script_no time_epoch time_us
    let mut lat = Vec::new();
    let mut first_last: Option<(f64, f64)> = None;
    for e in std::fs::read_dir(&dir)?.flatten() {
        if !e.file_name().to_string_lossy().starts_with("log") {
            continue;
        }
        for line in std::fs::read_to_string(e.path())?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(us), Some(sec), Some(usec)) = (f.get(2), f.get(4), f.get(5))
                && let (Ok(us), Ok(sec), Ok(usec)) =
                    (us.parse::<f64>(), sec.parse::<f64>(), usec.parse::<f64>())
            {
                lat.push(us / 1e3);
                let end = sec + usec / 1e6;
                let start = end - us / 1e6;
                first_last = Some(match first_last {
                    None => (start, end),
                    Some((a, b)) => (a.min(start), b.max(end)),
                });
            }
        }
    }
    let inserted = booked(&db, Some(doctors)).await? - before;
    let span = first_last.map_or(1.0, |(a, b)| (b - a).max(1e-3));
    let _ = std::fs::remove_dir_all(&dir);
    db.batch_execute("DROP TABLE IF EXISTS loadtest_pgbench, loadtest_pgbench_audit")
        .await?;
    Ok(PgbenchResult {
        clients,
        clients_note,
        tps,
        transactions,
        inserted,
        inserted_per_sec: inserted as f64 / span,
        latency: Latency::of(lat),
        failed,
        command,
    })
}

/// The pgbench script: the statement of `src/store/postgres.rs` `insert`,
/// with a random doctor and slot, plus the booking's audit record (a row
/// shaped like the outbox row DocSpot writes in the same transaction): the
/// same rows an audited booking writes, in one plain transaction each.
fn script_text(doctors: usize, base: DateTime<Utc>, slot_choices: i64) -> String {
    let base = crate::api::rfc3339(base);
    format!(
        r#"\set d random(0, {last_doctor})
\set k random(0, {last_slot})
\set day :k / {SLOTS_PER_DAY}
\set mins (:k % {SLOTS_PER_DAY}) * {SLOT_MINUTES}
BEGIN;
WITH t AS (
    SELECT b.doctor_id, b.visit_type_id, b.patient_id, b.clinic_id,
           '{base}'::timestamptz + make_interval(days => :day, mins => :mins) AS ts
    FROM loadtest_pgbench b WHERE b.idx = :d
), ins AS (
    INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at, ends_at,
        block_start, block_end, status, hold_expires_at, idempotency_key, created_at, updated_at)
    SELECT gen_random_uuid(), doctor_id, patient_id, visit_type_id, ts, ts + interval '{SLOT_MINUTES} minutes',
        ts, ts + interval '{SLOT_MINUTES} minutes', 'booked', NULL, NULL, now(), now() FROM t
    ON CONFLICT DO NOTHING
    RETURNING id, doctor_id, patient_id, starts_at, ends_at, status, created_at
), hist AS (
    INSERT INTO appointment_history (appointment_id, at, actor_user_id, action, to_status, to_start)
    SELECT id, created_at, patient_id, 'book', status, starts_at FROM ins
), alert AS (
    INSERT INTO provider_alerts (doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at, status)
    SELECT ins.doctor_id, ins.id, ins.patient_id, 'booked', ins.created_at, ins.starts_at, ins.ends_at, ins.status
    FROM ins CROSS JOIN LATERAL (SELECT 1 FROM doctors d WHERE d.id = ins.doctor_id FOR NO KEY UPDATE) AS alert_lock
    WHERE ins.status = 'booked'
), audit AS (
    INSERT INTO loadtest_pgbench_audit (at, actor_id, actor_role, action, patient_id, resource_type,
        resource_id, clinic_id, client_ip, request_id, outcome)
    SELECT ins.created_at, ins.patient_id, 'patient', 'appointment.create', ins.patient_id,
        'appointment', ins.id, t.clinic_id, '127.0.0.1', 'pgbench', 'success'
    FROM ins CROSS JOIN t
)
SELECT id FROM ins;
END;
"#,
        last_doctor = doctors.saturating_sub(1),
        last_slot = (slot_choices - 1).max(0),
    )
}
