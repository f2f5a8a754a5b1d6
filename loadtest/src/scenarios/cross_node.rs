//! cross-node: two nodes on one database and one Redis; bookings always go
//! to node A. Three phases, each with its own bookings:
//!
//! 1. **Together:** W watchers on A and W on B at once. A delta's added
//!    latency is its receipt on B minus its median receipt on A, both on
//!    this process's monotonic clock.
//! 2. **A alone:** W watchers on A only.
//! 3. **B alone:** W watchers on B only.
//!
//! Commit → receipt is receipt wall clock minus the delta's `at`, the
//! instant node A committed the change (node B passes A's instant on); both
//! nodes and the generator share this machine's clock. The target is judged
//! on phases 2 and 3: B's commit→receipt quantiles minus A's. When both
//! nodes push at once (phase 1), one generator and two cores serve both
//! fan-outs, so B's frames wait behind A's: that measures the shared
//! machine as much as the crossing, and is reported beside it.

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

/// What one phase's watchers received.
struct Phase {
    ready: usize,
    failed: usize,
    bookings: usize,
    delivered: usize,
    commit_to_receipt: Vec<f64>,
    without_at: usize,
    received: Vec<Option<ws::Received>>,
}

/// Books `starts` on node A at `rate` while `specs` watch; waits for the
/// stragglers and collects what every watcher got.
#[allow(clippy::too_many_arguments)]
async fn phase(
    api: &Api,
    tokens: &[String],
    doctor: &str,
    plan: &PushPlan,
    specs: Vec<ws::WatchSpec>,
    args: &Args,
    setup_limit: Duration,
) -> Phase {
    let w = specs.len();
    let hard =
        tokio::time::Instant::now() + setup_limit + Duration::from_secs_f64(args.push_secs + 60.0);
    let watchers = Watchers::start(specs, args.connect_parallelism / 2, hard);
    let (ready, failed) = ws::wait_ready(&watchers.progress, w, setup_limit).await;
    let outcomes = paced_bookings(api, tokens, doctor, &plan.starts, args.rate).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = watchers.finish().await;
    let bookings = outcomes
        .iter()
        .flatten()
        .filter(|o| o.status == 201)
        .count();
    let (mut delivered, mut without_at, mut commit_to_receipt) = (0, 0, Vec::new());
    for d in received.iter().flatten().flat_map(|r| &r.deltas) {
        delivered += 1;
        match d.commit_to_receipt_ms {
            Some(c) => commit_to_receipt.push(c),
            None => without_at += 1,
        }
    }
    Phase {
        ready,
        failed,
        bookings,
        delivered,
        commit_to_receipt,
        without_at,
        received,
    }
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
    let doctor = vec![doctors[0].id.clone()];
    let setup_limit = Duration::from_secs(60 + (w / 100) as u64);
    // Each phase books its own slots, two days after the previous phase's.
    let first_base = api::grid_base(chrono::Utc::now());
    let plan_at = |n: i64| {
        PushPlan::new(
            first_base + chrono::Duration::days(2 * n),
            args.rate,
            args.push_secs,
        )
    };
    let watch = |node: usize, block: u8, plan: &PushPlan, base_days: i64| {
        specs(
            w,
            &target.nodes[node].host_port(),
            block,
            args.conns_per_source_ip,
            &doctor,
            &api::rfc3339(first_base + chrono::Duration::days(base_days)),
            &api::rfc3339(plan.to),
            plan.plan.clone(),
        )
    };

    // Phase 1: both nodes watched at once (specs: A's first, then B's).
    let plan = plan_at(0);
    let b = plan.starts.len();
    let mut both = watch(0, 3, &plan, 0);
    both.extend(watch(1, 4, &plan, 0));
    let cpu = CpuWindow::start(&target.pids());
    let together = phase(
        &api,
        &tokens,
        &doctors[0].id,
        &plan,
        both,
        args,
        setup_limit,
    )
    .await;
    let cpu = cpu.finish();
    let (got_a, got_b) = together.received.split_at(w.min(together.received.len()));
    // Per delta: receipts on A, sorted, for the median.
    let mut a_times: Vec<Vec<std::time::Instant>> = vec![Vec::new(); b];
    for d in got_a.iter().flatten().flat_map(|r| &r.deltas) {
        a_times[d.idx as usize].push(d.received);
    }
    let a_median: Vec<Option<std::time::Instant>> = a_times
        .iter_mut()
        .map(|v| {
            v.sort();
            v.get(v.len() / 2).copied()
        })
        .collect();
    let (mut added, mut a_commit, mut b_commit) = (Vec::new(), Vec::new(), Vec::new());
    let (mut delivered_a, mut delivered_b) = (0usize, 0usize);
    for d in got_a.iter().flatten().flat_map(|r| &r.deltas) {
        delivered_a += 1;
        a_commit.extend(d.commit_to_receipt_ms);
    }
    for d in got_b.iter().flatten().flat_map(|r| &r.deltas) {
        delivered_b += 1;
        if let Some(a) = a_median[d.idx as usize] {
            added.push(ms_between(a, d.received));
        }
        b_commit.extend(d.commit_to_receipt_ms);
    }
    let ready_a = got_a.iter().filter(|r| r.is_some()).count();
    let ready_b = got_b.iter().filter(|r| r.is_some()).count();
    let added = Latency::of(added);
    let la = Latency::of(a_commit);
    let lb = Latency::of(b_commit);
    let (exp_a, exp_b) = (ready_a * together.bookings, ready_b * together.bookings);
    eprintln!(
        "  together: ready {} ({} failed); added p50/p99 {}",
        together.ready,
        together.failed,
        added.short()
    );

    // Phases 2 and 3: one node watched at a time, the same number of
    // watchers, fresh slots each.
    let plan = plan_at(1);
    let alone_a = phase(
        &api,
        &tokens,
        &doctors[0].id,
        &plan,
        watch(0, 3, &plan, 2),
        args,
        setup_limit,
    )
    .await;
    let plan = plan_at(2);
    let alone_b = phase(
        &api,
        &tokens,
        &doctors[0].id,
        &plan,
        watch(1, 4, &plan, 4),
        args,
        setup_limit,
    )
    .await;
    let (sa, sb) = (
        Latency::of(alone_a.commit_to_receipt.clone()),
        Latency::of(alone_b.commit_to_receipt.clone()),
    );
    let (added_p50, added_p99) = (sb.p50_ms - sa.p50_ms, sb.p99_ms - sa.p99_ms);
    let complete = |p: &Phase| p.delivered == p.ready * p.bookings;
    let without_at = together.without_at + alone_a.without_at + alone_b.without_at;
    let created = together.bookings + alone_a.bookings + alone_b.bookings;

    let mut r = ScenarioResult {
        name: "cross-node".into(),
        size: format!(
            "2 nodes, {w} watchers per node, {} bookings/s × {} s per phase",
            args.rate, args.push_secs
        ),
        headline: format!(
            "nodes watched alone: added p50 {} / p99 {} ms; together: delivered A {delivered_a}/{exp_a}, B {delivered_b}/{exp_b}",
            fmt_ms(added_p50),
            fmt_ms(added_p99),
        ),
        latency: format!(
            "alone: A commit→receipt {} · B {} · together: added (B−A) {} · A {} · B {}",
            sa.short(),
            sb.short(),
            added.short(),
            la.short(),
            lb.short()
        ),
        cpu,
        targets: vec![
            TargetCheck {
                target: "cross-node ≤ 2 ms added p99 (B alone − A alone)".into(),
                measured: format!(
                    "{} ms (p50 {} ms); both watched at once: {} ms (p50 {} ms)",
                    fmt_ms(added_p99),
                    fmt_ms(added_p50),
                    fmt_ms(added.p99_ms),
                    fmt_ms(added.p50_ms)
                ),
                met: sa.n > 0 && sb.n > 0 && added_p99 <= 2.0 && complete(&alone_b),
            },
            TargetCheck {
                target: "every delta reaches every watcher on both nodes".into(),
                measured: format!(
                    "together A {delivered_a}/{exp_a}, B {delivered_b}/{exp_b}; alone A {}/{}, B {}/{}",
                    alone_a.delivered,
                    alone_a.ready * alone_a.bookings,
                    alone_b.delivered,
                    alone_b.ready * alone_b.bookings
                ),
                met: delivered_a == exp_a
                    && delivered_b == exp_b
                    && complete(&alone_a)
                    && complete(&alone_b)
                    && exp_b > 0,
            },
        ],
        details: json!({
            "watchers_per_node": w,
            "bookings_planned_per_phase": b, "bookings_201": created,
            "alone_a_commit_to_receipt": sa, "alone_b_commit_to_receipt": sb,
            "added_alone_p50_ms": added_p50, "added_alone_p99_ms": added_p99,
            "alone_a": {"ready": alone_a.ready, "failed": alone_a.failed, "delivered": alone_a.delivered, "bookings": alone_a.bookings},
            "alone_b": {"ready": alone_b.ready, "failed": alone_b.failed, "delivered": alone_b.delivered, "bookings": alone_b.bookings},
            "ready_a": ready_a, "ready_b": ready_b,
            "delivered_a": delivered_a, "expected_a": exp_a,
            "delivered_b": delivered_b, "expected_b": exp_b,
            "added_b_minus_a": added, "a_commit_to_receipt": la, "b_commit_to_receipt": lb,
            "deltas_without_commit_instant": without_at,
            "channel_prefix": prefix,
        }),
        notes: vec![
            format!(
                "nodes share one database and Redis with DOCSPOT_LIVE__CHANNEL_PREFIX={prefix}; server CPU is both nodes summed, over the phase with both nodes watched"
            ),
            "added latency is judged with one node watched at a time (B's commit→receipt quantile minus A's); with both watched at once, one generator and two cores serve both fan-outs, which B's receipts wait behind".into(),
        ],
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
