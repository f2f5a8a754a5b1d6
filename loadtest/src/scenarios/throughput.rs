//! throughput: clients book distinct free slots of many doctors as fast as
//! they can for T seconds; durable bookings/s are counted in the database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::json;

use crate::{
    Args,
    api::{self, SLOTS_PER_DAY},
    db::{self, PgbenchLength},
    procfs::CpuWindow,
    report::{ScenarioResult, TargetCheck},
    scenarios::warmed_clients,
    server::{SpawnOpts, Target},
    stats::{Latency, fmt_ms},
};

/// Runs the scenario.
pub async fn run(args: &Args) -> anyhow::Result<ScenarioResult> {
    let (d, c) = (args.doctors.max(1), args.concurrency.max(1));
    let secs = args.duration.max(0.1);
    let target = Target::for_args(
        args,
        SpawnOpts {
            nodes: 1,
            ..Default::default()
        },
    )
    .await?;
    let api = api::Api::new(&target.nodes[0].base, 16)?;
    let admin = api.admin().await?;
    let doctors = Arc::new(api.seed_doctors(&admin, d).await?);
    let tokens = Arc::new(api.seed_patients(args.patients).await?);
    let base = api::grid_base(chrono::Utc::now());
    // Load every calendar once, as for doctors in use.
    for doc in doctors.iter() {
        api.http
            .get(api.url(&format!("/api/v1/doctors/{}/slots", doc.id)))
            .send()
            .await?;
    }
    let clients = warmed_clients(&api.base, c).await?;
    // Slot k of the run: doctor k % D, grid slot k / D. Bounded by the
    // booking horizon.
    let max_k = (d as i64) * (api::HORIZON_DAYS - 2) * SLOTS_PER_DAY;
    let next = Arc::new(AtomicI64::new(0));
    let cpu = CpuWindow::start(&target.pids());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let mut handles = Vec::with_capacity(c);
    for (w, client) in clients.into_iter().enumerate() {
        let (next, doctors, tokens) = (next.clone(), doctors.clone(), tokens.clone());
        handles.push(tokio::spawn(async move {
            let token = &tokens[w % tokens.len()];
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= max_k {
                    break;
                }
                let doc = &doctors[(k % doctors.len() as i64) as usize];
                let start = api::rfc3339(api::slot_start(base, k / doctors.len() as i64));
                out.push(client.book(token, &doc.id, &start).await);
            }
            out
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.extend(h.await?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu.finish();

    let created = outcomes.iter().filter(|o| o.status == 201).count();
    let server_errors = outcomes
        .iter()
        .filter(|o| o.status >= 500 || o.status == 0)
        .count();
    let mut other: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != 201)
        .take(5)
        .map(|o| format!("{} {:?}", o.status, o.code))
        .collect();
    other.dedup();
    let lat = Latency::of(
        outcomes
            .iter()
            .filter(|o| o.status == 201)
            .map(|o| o.latency_ms())
            .collect(),
    );
    let pg = db::connect(&target.db_url).await?;
    let rows = db::booked(&pg, None).await?;
    let overlaps = db::overlaps(&pg).await?;
    let per_sec = rows as f64 / wall;

    let mut notes = vec![format!(
        "{} patients registered through the API; their tokens are shared by the {c} clients (one HTTP connection each)",
        tokens.len()
    )];
    let pgbench = if args.no_pgbench {
        None
    } else {
        let clients = c.min(args.pgbench_max_clients);
        let note = (clients < c).then(|| format!("pgbench capped at {clients} clients"));
        if let Some(n) = &note {
            notes.push(n.clone());
        }
        // Same doctors, a disjoint part of their calendars (from day 400 on).
        Some(
            db::pgbench(
                &args.pgbench_bin,
                &target.db_url,
                &doctors,
                base + chrono::Duration::days(400),
                300 * SLOTS_PER_DAY,
                clients,
                note,
                PgbenchLength::Secs(secs.ceil() as u64),
            )
            .await
            .context("pgbench baseline")?,
        )
    };
    let ratio = pgbench.as_ref().map(|p| per_sec / p.tps.max(1e-9));
    let mut targets = vec![TargetCheck {
        target: "p99 booking latency ≤ 20 ms".into(),
        measured: format!("{} ms", fmt_ms(lat.p99_ms)),
        met: lat.n > 0 && lat.p99_ms <= 20.0,
    }];
    if let (Some(p), Some(ratio)) = (&pgbench, ratio) {
        targets.insert(
            0,
            TargetCheck {
                target: "bookings/s ≥ 1.5 × pgbench TPS".into(),
                measured: format!("{per_sec:.0} / {:.0} = {ratio:.2}×", p.tps),
                met: ratio >= 1.5,
            },
        );
    }
    targets.push(TargetCheck {
        target: "every 201 durable, 0 × 5xx, 0 overlaps".into(),
        measured: format!(
            "{created} × 201, {rows} rows, {server_errors} errors, {overlaps} overlaps"
        ),
        met: rows == created as i64 && server_errors == 0 && overlaps == 0,
    });
    let mut r = ScenarioResult {
        name: "throughput".into(),
        size: format!("{d} doctors, {c} clients, {secs} s"),
        headline: format!(
            "{per_sec:.0} durable bookings/s ({rows} rows, {created} × 201){}",
            pgbench
                .as_ref()
                .map(|p| format!(
                    "; pgbench {:.0} TPS ({} clients) → {:.2}×",
                    p.tps,
                    p.clients,
                    ratio.unwrap_or(0.0)
                ))
                .unwrap_or_default()
        ),
        latency: format!("{} (p95 {} ms)", lat.short(), fmt_ms(lat.p95_ms)),
        cpu,
        targets,
        details: json!({
            "doctors": d, "concurrency": c, "secs": secs, "wall_secs": wall,
            "requests": outcomes.len(), "created": created, "rows_booked": rows,
            "durable_bookings_per_sec": per_sec, "server_errors": server_errors,
            "non_201_examples": other, "overlaps": overlaps, "latency": lat,
            "pgbench": pgbench, "server_over_pgbench": ratio, "patients": tokens.len(),
        }),
        notes,
    };
    r.warn_if_generator_busy();
    target.finish().await?;
    Ok(r)
}
