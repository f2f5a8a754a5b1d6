//! cross-node: two nodes on one database and one Redis. Bookings go to node
//! A; watchers sit on A and on B. The added latency of a delta is its
//! receipt on B minus its (median) receipt on A, both on this process's
//! monotonic clock.
//!
//! Commit → receipt is reported per node as well: receipt wall clock minus
//! the delta's `at`, the instant node A committed the change (node B passes
//! A's instant on). Both nodes and the generator share this machine's clock.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    Args,
    api::{self, Api},
    procfs::CpuWindow,
    report::{ScenarioResult, TargetCheck},
    scenarios::{PushPlan, Watchers, ms_between, paced_bookings, specs},
    server::{SpawnOpts, Target},
    stats::{Latency, fmt_ms},
    ws,
};

/// Fails loudly when Redis does not answer PING.
pub async fn check_redis(url: &str) -> anyhow::Result<()> {
    let hostport = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(hostport),
    )
    .await
    .context("Redis: connect timed out")?
    .with_context(|| format!("Redis at {hostport} is unreachable"))?;
    s.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .context("Redis: no answer to PING")??;
    if !buf[..n].starts_with(b"+PONG") {
        bail!(
            "Redis at {hostport} answered {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    Ok(())
}

/// Runs the scenario.
pub async fn run(args: &Args) -> anyhow::Result<ScenarioResult> {
    check_redis(&args.redis_url).await?;
    let w = args.cross_watchers.max(1);
    let prefix = format!("docspot_bench_{}", uuid::Uuid::new_v4().simple());
    let target = Target::for_args(
        args,
        SpawnOpts {
            nodes: 2,
            redis: Some((args.redis_url.clone(), prefix.clone())),
            ..Default::default()
        },
    )
    .await?;
    let api = Api::new(&target.nodes[0].base, 32)?;
    let admin = api.admin().await?;
    let doctors = api.seed_doctors(&admin, 1).await?;
    let tokens = api.seed_patients(args.patients.min(8)).await?;
    let base = api::grid_base(chrono::Utc::now());
    let PushPlan { starts, plan, to } = PushPlan::new(base, args.rate, args.push_secs);
    let b = starts.len();
    let (from, to) = (api::rfc3339(base), api::rfc3339(to));
    let setup_limit = Duration::from_secs(60 + (w / 100) as u64);
    let hard =
        tokio::time::Instant::now() + setup_limit + Duration::from_secs_f64(args.push_secs + 60.0);
    let doctor = vec![doctors[0].id.clone()];
    let on_a = Watchers::start(
        specs(
            w,
            &target.nodes[0].host_port(),
            3,
            args.conns_per_source_ip,
            &doctor,
            &from,
            &to,
            plan.clone(),
        ),
        args.connect_parallelism / 2,
        hard,
    );
    let on_b = Watchers::start(
        specs(
            w,
            &target.nodes[1].host_port(),
            4,
            args.conns_per_source_ip,
            &doctor,
            &from,
            &to,
            plan.clone(),
        ),
        args.connect_parallelism / 2,
        hard,
    );
    let (ra, fa) = ws::wait_ready(&on_a.progress, w, setup_limit).await;
    let (rb, fb) = ws::wait_ready(&on_b.progress, w, setup_limit).await;
    eprintln!("  watchers ready: A {ra} ({fa} failed), B {rb} ({fb} failed)");
    let cpu = CpuWindow::start(&target.pids());
    let t0 = std::time::Instant::now();
    let outcomes = paced_bookings(&api, &tokens, &doctors[0].id, &starts, args.rate).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu.finish();
    let got_a = on_a.finish().await;
    let got_b = on_b.finish().await;

    let created = outcomes
        .iter()
        .flatten()
        .filter(|o| o.status == 201)
        .count();
    // Per delta: receipts on A, sorted, for the median.
    let mut a_times: Vec<Vec<std::time::Instant>> = vec![Vec::new(); b];
    for r in got_a.iter().flatten() {
        for d in &r.deltas {
            a_times[d.idx as usize].push(d.received);
        }
    }
    let a_median: Vec<Option<std::time::Instant>> = a_times
        .iter_mut()
        .map(|v| {
            v.sort();
            v.get(v.len() / 2).copied()
        })
        .collect();
    let (mut added, mut a_commit, mut b_commit) = (Vec::new(), Vec::new(), Vec::new());
    let (mut delivered_a, mut delivered_b, mut without_at) = (0usize, 0usize, 0usize);
    for r in got_a.iter().flatten() {
        for d in &r.deltas {
            delivered_a += 1;
            match d.commit_to_receipt_ms {
                Some(c) => a_commit.push(c),
                None => without_at += 1,
            }
        }
    }
    for r in got_b.iter().flatten() {
        for d in &r.deltas {
            delivered_b += 1;
            if let Some(a) = a_median[d.idx as usize] {
                added.push(ms_between(a, d.received));
            }
            match d.commit_to_receipt_ms {
                Some(c) => b_commit.push(c),
                None => without_at += 1,
            }
        }
    }
    let _ = t0;
    let added = Latency::of(added);
    let la = Latency::of(a_commit);
    let lb = Latency::of(b_commit);
    let (exp_a, exp_b) = (ra * created, rb * created);
    let mut r = ScenarioResult {
        name: "cross-node".into(),
        size: format!(
            "2 nodes, {w}+{w} watchers, {} bookings/s × {} s",
            args.rate, args.push_secs
        ),
        headline: format!(
            "delivered A {delivered_a}/{exp_a}, B {delivered_b}/{exp_b}; added p50 {} ms",
            fmt_ms(added.p50_ms)
        ),
        latency: format!(
            "added (B−A) {} · A commit→receipt {} · B commit→receipt {}",
            added.short(),
            la.short(),
            lb.short()
        ),
        cpu,
        targets: vec![TargetCheck {
            target: "cross-node ≤ 2 ms added p99".into(),
            measured: format!(
                "{} ms (p50 {} ms)",
                fmt_ms(added.p99_ms),
                fmt_ms(added.p50_ms)
            ),
            met: added.n > 0 && added.p99_ms <= 2.0 && delivered_b == exp_b,
        }],
        details: json!({
            "watchers_per_node": w, "ready_a": ra, "ready_b": rb, "failed_a": fa, "failed_b": fb,
            "bookings_planned": b, "bookings_201": created,
            "delivered_a": delivered_a, "expected_a": exp_a,
            "delivered_b": delivered_b, "expected_b": exp_b,
            "added_b_minus_a": added, "a_commit_to_receipt": la, "b_commit_to_receipt": lb,
            "deltas_without_commit_instant": without_at,
            "channel_prefix": prefix,
        }),
        notes: vec![format!(
            "nodes share one database and Redis with DOCSPOT_LIVE__CHANNEL_PREFIX={prefix}; server CPU is both nodes summed"
        )],
    };
    if without_at > 0 {
        r.notes.push(format!(
            "{without_at} deltas carried no commit instant `at` (a server from before it): \
             commit→receipt covers the rest only"
        ));
    }
    r.warn_if_generator_busy();
    target.finish().await?;
    Ok(r)
}
