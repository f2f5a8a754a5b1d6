//! hot-slot: N clients claim the same M slots at once. Exactly M must win
//! (201), the rest must get `409 slot_taken`, nothing may fail with 5xx, and
//! the database must hold no overlapping pair.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use tokio::sync::watch;

use crate::{
    Args,
    api::{self, Api},
    db::{self, PgbenchLength},
    procfs::CpuWindow,
    report::{ScenarioResult, TargetCheck},
    scenarios::warmed_clients,
    server::{SpawnOpts, Target},
    stats::{Latency, fmt_ms},
};

/// First contested slot: 09:00 tomorrow.
const FIRST_SLOT: i64 = 9 * 12;

/// Runs the scenario.
pub async fn run(args: &Args) -> anyhow::Result<ScenarioResult> {
    let (n, m) = (args.clients.max(1), args.slots.max(1));
    let target = Target::for_args(
        args,
        SpawnOpts {
            nodes: 1,
            ..Default::default()
        },
    )
    .await?;
    let api = Api::new(&target.nodes[0].base, 16)?;
    let admin = api.admin().await?;
    // Doctor 0 for the server, doctor 1 for the pgbench baseline.
    let doctors = api.seed_doctors(&admin, 2).await?;
    let tokens = api.seed_patients(args.patients).await?;
    let base = api::grid_base(chrono::Utc::now());
    let starts: Vec<String> = (0..m as i64)
        .map(|i| api::rfc3339(api::slot_start(base, FIRST_SLOT + i)))
        .collect();
    let doctor = doctors[0].id.clone();
    // Touch the calendar once so its actor is loaded, as for a doctor in use.
    api.http
        .get(api.url(&format!("/api/v1/doctors/{doctor}/slots")))
        .send()
        .await?;
    let clients = warmed_clients(&api.base, n).await?;
    let (go_tx, go_rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(n);
    for (i, c) in clients.into_iter().enumerate() {
        let mut go = go_rx.clone();
        let token = tokens[i % tokens.len()].clone();
        let (doctor, start) = (doctor.clone(), starts[i % m].clone());
        handles.push(tokio::spawn(async move {
            let _ = go.wait_for(|g| *g).await;
            c.book(&token, &doctor, &start).await
        }));
    }
    tokio::task::yield_now().await;
    let cpu = CpuWindow::start(&target.pids());
    let t0 = Instant::now();
    go_tx.send(true)?;
    let mut outcomes = Vec::with_capacity(n);
    for h in handles {
        outcomes.push(h.await?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu.finish();

    let winners: Vec<_> = outcomes.iter().filter(|o| o.status == 201).collect();
    let losers: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == 409 && o.code.as_deref() == Some("slot_taken"))
        .collect();
    let server_errors = outcomes.iter().filter(|o| o.status >= 500).count();
    let other: Vec<String> = outcomes
        .iter()
        .filter(|o| {
            o.status != 201 && !(o.status == 409 && o.code.as_deref() == Some("slot_taken"))
        })
        .take(5)
        .map(|o| format!("{} {:?}", o.status, o.code))
        .collect();
    let win_lat = Latency::of(winners.iter().map(|o| o.latency_ms()).collect());
    let lose_lat = Latency::of(losers.iter().map(|o| o.latency_ms()).collect());
    let all_lat = Latency::of(outcomes.iter().map(|o| o.latency_ms()).collect());
    let claims_per_sec = n as f64 / wall.max(1e-6);

    let pg = db::connect(&target.db_url).await?;
    let overlaps = db::overlaps(&pg).await?;
    let rows = db::booked(&pg, Some(&doctors[..1])).await?;

    let mut notes = vec![format!(
        "{} patients registered through the API; their tokens are shared round-robin by the {n} clients. \
         Each client has its own HTTP connection, opened before the claims start.",
        tokens.len()
    )];
    let pgbench = if args.no_pgbench {
        None
    } else {
        let clients = n.min(args.pgbench_max_clients);
        let note = (clients < n).then(|| {
            format!(
                "pgbench capped at {clients} clients (PostgreSQL max_connections = 100; the server itself uses a pool of 16)"
            )
        });
        if let Some(note) = &note {
            notes.push(note.clone());
        }
        Some(
            db::pgbench(
                &args.pgbench_bin,
                &target.db_url,
                &doctors[1..2],
                api::slot_start(base, FIRST_SLOT),
                m as i64,
                clients,
                note,
                PgbenchLength::PerClient(n.div_ceil(clients) as u64),
            )
            .await
            .context("pgbench baseline")?,
        )
    };
    let ratio = pgbench.as_ref().map(|p| claims_per_sec / p.tps.max(1e-9));
    let exact = winners.len() == m
        && losers.len() == n - m
        && server_errors == 0
        && overlaps == 0
        && rows == m as i64;
    let mut targets = vec![
        TargetCheck {
            target: format!(
                "exactly {m} winners, {} × 409 slot_taken, 0 × 5xx, 0 overlaps",
                n - m
            ),
            measured: format!(
                "{} winners, {} slot_taken, {server_errors} × 5xx, {overlaps} overlaps, {rows} rows",
                winners.len(),
                losers.len()
            ),
            met: exact,
        },
        TargetCheck {
            target: "loser p99 ≤ 5 ms".into(),
            measured: format!("{} ms", fmt_ms(lose_lat.p99_ms)),
            met: lose_lat.n > 0 && lose_lat.p99_ms <= 5.0,
        },
    ];
    if let Some(p) = &pgbench {
        targets.push(TargetCheck {
            target: "(info) claims/s vs pgbench TPS, same contention".into(),
            measured: format!(
                "{claims_per_sec:.0} / {:.0} = {:.2}×",
                p.tps,
                ratio.unwrap_or(0.0)
            ),
            met: true,
        });
    }
    let mut r = ScenarioResult {
        name: "hot-slot".into(),
        size: format!("N={n} clients, M={m} slots"),
        headline: format!(
            "{} winners / {} slot_taken / {server_errors} 5xx / {overlaps} overlaps; {claims_per_sec:.0} claims/s{}",
            winners.len(),
            losers.len(),
            pgbench
                .as_ref()
                .map(|p| format!("; pgbench {:.0} TPS ({} clients)", p.tps, p.clients))
                .unwrap_or_default()
        ),
        latency: format!("win {} · lose {}", win_lat.short(), lose_lat.short()),
        cpu,
        targets,
        details: json!({
            "clients": n, "slots": m, "winners": winners.len(), "slot_taken": losers.len(),
            "server_errors": server_errors, "other_statuses": other, "overlaps": overlaps,
            "rows_booked": rows, "wall_secs": wall, "claims_per_sec": claims_per_sec,
            "winner_latency": win_lat, "loser_latency": lose_lat, "all_latency": all_lat,
            "pgbench": pgbench, "server_claims_per_sec_over_pgbench_tps": ratio,
            "patients": tokens.len(),
        }),
        notes,
    };
    r.warn_if_generator_busy();
    target.finish().await?;
    Ok(r)
}
