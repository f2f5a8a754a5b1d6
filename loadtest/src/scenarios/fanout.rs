//! fanout: W watchers of one doctor while that doctor is booked at R/s;
//! latency from the commit to each watcher's receipt, frames delivered/s.
//!
//! Two figures, on two clocks:
//! * commit → receipt, the one the target is judged by: every delta carries
//!   `at`, the instant the server's calendar committed the change (its wall
//!   clock, RFC 3339 UTC). A watcher reads the wall clock
//!   (`chrono::Utc::now()`) as the frame arrives and takes the difference.
//!   The server runs on this machine (`--url` too only takes loopback
//!   addresses), so both readings come from the same system clock.
//! * request sent → receipt, on this process's monotonic clock: an upper
//!   bound that needs no server clock at all. It includes the request's way
//!   in and everything the server does before it commits.
//!
//! The 201's arrival says nothing about the commit instant (the answer also
//! waits for the audit record, and a delta may overtake it), so it is not
//! used. As a check on the clocks, deltas whose commit → receipt is negative
//! or exceeds sent → receipt are counted (`clock_anomalies`); a sound run
//! has none.

use std::time::Duration;

use serde_json::json;

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

/// Runs the scenario.
pub async fn run(args: &Args) -> anyhow::Result<ScenarioResult> {
    let mut w = args.watchers.max(1);
    let mut notes = Vec::new();
    let fd_cap = (crate::procfs::nofile() as usize)
        .saturating_sub(1000)
        .max(1);
    if w > fd_cap {
        notes.push(crate::procfs::nofile_note(w));
        w = fd_cap;
    }
    let target = Target::for_args(
        args,
        SpawnOpts {
            nodes: 1,
            ..Default::default()
        },
    )
    .await?;
    let api = Api::new(&target.nodes[0].base, 64)?;
    let admin = api.admin().await?;
    let doctors = api.seed_doctors(&admin, 1).await?;
    let tokens = api.seed_patients(args.patients.min(8)).await?;
    let base = api::grid_base(chrono::Utc::now());
    // Watch just the booked part of the calendar: a smaller snapshot each.
    let PushPlan { starts, plan, to } = PushPlan::new(base, args.rate, args.push_secs);
    let b = starts.len();
    let setup_limit = Duration::from_secs((60 + w / 100) as u64);
    let hard =
        tokio::time::Instant::now() + setup_limit + Duration::from_secs_f64(args.push_secs + 60.0);
    let t_setup = std::time::Instant::now();
    let watchers = Watchers::start(
        specs(
            w,
            &target.nodes[0].host_port(),
            2,
            args.conns_per_source_ip,
            &[doctors[0].id.clone()],
            &api::rfc3339(base),
            &api::rfc3339(to),
            plan.clone(),
        ),
        args.connect_parallelism,
        hard,
    );
    let (ready, failed) = ws::wait_ready(&watchers.progress, w, setup_limit).await;
    let setup_secs = t_setup.elapsed().as_secs_f64();
    eprintln!("  {ready} watchers ready ({failed} failed) in {setup_secs:.1} s");
    let rss_before = target.nodes[0].pid.and_then(crate::procfs::vm_rss_kib);
    let cpu = CpuWindow::start(&target.pids());
    let t0 = std::time::Instant::now();
    let outcomes = paced_bookings(&api, &tokens, &doctors[0].id, &starts, args.rate).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu.finish();
    let rss_after = target.nodes[0].pid.and_then(crate::procfs::vm_rss_kib);
    let received = watchers.finish().await;

    let booked: Vec<bool> = outcomes
        .iter()
        .map(|o| o.as_ref().is_some_and(|o| o.status == 201))
        .collect();
    let created = booked.iter().filter(|b| **b).count();
    let book_lat = Latency::of(
        outcomes
            .iter()
            .flatten()
            .filter(|o| o.status == 201)
            .map(|o| o.latency_ms())
            .collect(),
    );
    let (mut after_sent, mut after_commit) = (Vec::new(), Vec::new());
    let (mut delivered, mut unknown, mut dropped, mut last) = (0usize, 0usize, 0usize, t0);
    let (mut without_at, mut anomalies) = (0usize, 0usize);
    for r in received.iter().flatten() {
        unknown += r.unknown;
        dropped += usize::from(r.dropped);
        for d in &r.deltas {
            delivered += 1;
            last = last.max(d.received);
            let sent = match outcomes.get(d.idx as usize) {
                Some(Some(o)) if o.status == 201 => Some(ms_between(o.sent, d.received)),
                _ => None,
            };
            if let Some(s) = sent {
                after_sent.push(s);
            }
            match d.commit_to_receipt_ms {
                Some(c) => {
                    // The commit lies between the request and the receipt.
                    if c < 0.0 || sent.is_some_and(|s| c > s) {
                        anomalies += 1;
                    }
                    after_commit.push(c);
                }
                None => without_at += 1,
            }
        }
    }
    let expected = ready * created;
    let window = ms_between(t0, last).max(1.0) / 1e3;
    let frames_per_sec = delivered as f64 / window;
    let lsent = Latency::of(after_sent);
    let lcommit = Latency::of(after_commit);
    notes.push(format!(
        "watchers on {} source addresses (127.0.2.x), {} connecting at a time; JSON subprotocol; \
         range {} – {} ({} slots per snapshot); setup took {setup_secs:.1} s",
        ws::source_ips_for(w, args.conns_per_source_ip),
        args.connect_parallelism,
        api::rfc3339(base),
        api::rfc3339(to),
        b
    ));
    if ready < w {
        notes.push(format!(
            "only {ready} of {w} watchers came up ({failed} failed)"
        ));
    }
    if without_at > 0 {
        notes.push(format!(
            "{without_at} deltas carried no commit instant `at` (a server from before it): \
             commit→receipt covers the rest only"
        ));
    }
    if anomalies > 0 {
        notes.push(format!(
            "{anomalies} deltas had commit→receipt < 0 or > sent→receipt: the wall clock \
             stepped, or the server's clock is not this machine's"
        ));
    }
    let mut r = ScenarioResult {
        name: "fanout".into(),
        size: format!(
            "W={w} watchers, {} bookings/s × {} s",
            args.rate, args.push_secs
        ),
        headline: format!(
            "{delivered} of {expected} deltas delivered ({frames_per_sec:.0} frames/s); {created}/{b} booked; {dropped} dropped"
        ),
        latency: format!(
            "commit→receipt {} · sent→receipt {}",
            lcommit.short(),
            lsent.short()
        ),
        cpu,
        targets: vec![
            TargetCheck {
                target: format!("fan-out to {w} watchers: p99 commit→receipt ≤ 50 ms"),
                measured: format!(
                    "p99 {} ms (sent→receipt p99 {} ms)",
                    fmt_ms(lcommit.p99_ms),
                    fmt_ms(lsent.p99_ms)
                ),
                met: lcommit.n > 0
                    && without_at == 0
                    && lcommit.p99_ms <= 50.0
                    && delivered == expected,
            },
            TargetCheck {
                target: "every delta reaches every watcher".into(),
                measured: format!("{delivered} of {expected}"),
                met: delivered == expected && expected > 0,
            },
        ],
        details: json!({
            "watchers": w, "ready": ready, "failed": failed, "setup_secs": setup_secs,
            "bookings_planned": b, "bookings_201": created, "booking_latency": book_lat,
            "deltas_expected": expected, "deltas_delivered": delivered,
            "unknown_deltas": unknown, "dropped_connections": dropped,
            "frames_per_sec": frames_per_sec, "delivery_window_secs": window,
            "commit_to_receipt": lcommit, "sent_to_receipt": lsent,
            "deltas_without_commit_instant": without_at, "clock_anomalies": anomalies,
            "server_rss_kib_before_push": rss_before, "server_rss_kib_after_push": rss_after,
        }),
        notes,
    };
    r.warn_if_generator_busy();
    target.finish().await?;
    Ok(r)
}
