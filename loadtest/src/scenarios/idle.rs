//! idle: C watcher connections, each subscribed to a doctor (an hour of
//! calendar) and then quiet but for heartbeats. Reports the server's memory
//! per connection (VmRSS delta ÷ C) and, separately, the kernel's TCP
//! buffer memory from `/proc/net/sockstat`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::json;

use crate::{
    Args,
    api::{self, Api},
    procfs::{self, CpuWindow},
    report::{ScenarioResult, TargetCheck},
    scenarios::{Watchers, specs},
    server::{SpawnOpts, Target},
    ws,
};

/// Connections one actix worker accepts at most (actix-server's default
/// `max_connections`, which DocSpot does not change): a worker at the cap
/// stops accepting.
const ACTIX_MAX_CONN_PER_WORKER: usize = 25_000;

/// Runs the scenario.
pub async fn run(args: &Args) -> anyhow::Result<ScenarioResult> {
    let mut c = args.idle.max(1);
    let mut notes = Vec::new();
    // One descriptor per connection in each process, plus headroom for the
    // pool, listeners and the HTTP clients.
    let fd_cap = (procfs::nofile() as usize).saturating_sub(1000).max(1);
    if c > fd_cap {
        notes.push(procfs::nofile_note(c));
        eprintln!("  idle: {}", notes[0]);
        c = fd_cap;
    }
    let mut opts = SpawnOpts {
        nodes: 1,
        ..Default::default()
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Leave 20 % headroom below actix's per-worker cap.
    let workers = c.div_ceil(ACTIX_MAX_CONN_PER_WORKER * 4 / 5).max(cores);
    if workers > cores && args.spawn {
        opts.env
            .push(("DOCSPOT_HTTP__WORKERS".into(), workers.to_string()));
        notes.push(format!(
            "server started with DOCSPOT_HTTP__WORKERS={workers} (default: {cores}, one per core): actix accepts at most \
             {ACTIX_MAX_CONN_PER_WORKER} connections per worker and DocSpot has no setting for that cap"
        ));
    }
    let target = Target::for_args(args, opts).await?;
    let pid = target.nodes[0].pid;
    let api = Api::new(&target.nodes[0].base, 4)?;
    let admin = api.admin().await?;
    let doctors: Vec<String> = api
        .seed_doctors(&admin, 10)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    let base = api::grid_base(chrono::Utc::now());
    // Load each calendar so the "before" figure already holds the actors.
    for d in &doctors {
        api.http
            .get(api.url(&format!("/api/v1/doctors/{d}/slots")))
            .send()
            .await?;
    }
    drop(api);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = pid.and_then(procfs::vm_rss_kib);
    let sock_before = procfs::sockstat();
    let setup_limit = Duration::from_secs((60 + c / 200) as u64);
    let hard = tokio::time::Instant::now()
        + setup_limit
        + Duration::from_secs_f64(args.idle_hold_secs + 60.0);
    let t_setup = std::time::Instant::now();
    let watchers = Watchers::start(
        specs(
            c,
            &target.nodes[0].host_port(),
            1,
            args.conns_per_source_ip,
            &doctors,
            &api::rfc3339(base),
            &api::rfc3339(base + chrono::Duration::hours(1)),
            Arc::new(HashMap::new()),
        ),
        args.connect_parallelism,
        hard,
    );
    let (ready, failed) = ws::wait_ready(&watchers.progress, c, setup_limit).await;
    let setup_secs = t_setup.elapsed().as_secs_f64();
    eprintln!("  {ready} idle connections ready ({failed} failed) in {setup_secs:.1} s");
    // Let the last snapshots drain, then measure while everything is quiet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = CpuWindow::start(&target.pids());
    let rss_after = pid.and_then(procfs::vm_rss_kib);
    let sock_after = procfs::sockstat();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_hold_secs)).await;
    let rss_end = pid.and_then(procfs::vm_rss_kib);
    let cpu = cpu.finish();
    let received = watchers.finish().await;
    let dropped = received.iter().flatten().filter(|r| r.dropped).count();

    let per_conn_kib = match (rss_before, rss_after) {
        (Some(b), Some(a)) if ready > 0 => Some((a as f64 - b as f64) / ready as f64),
        _ => None,
    };
    let page = procfs::page_size();
    let kernel_kib_total =
        (sock_after.tcp_mem_pages as f64 - sock_before.tcp_mem_pages as f64) * page as f64 / 1024.0;
    let kernel_per_conn = (ready > 0).then(|| kernel_kib_total / ready as f64);
    notes.push(format!(
        "{} source addresses (127.0.1.x), {} connecting at a time; setup took {setup_secs:.1} s; \
         kernel TCP memory counts both ends of each loopback connection (client and server socket)",
        ws::source_ips_for(c, args.conns_per_source_ip),
        args.connect_parallelism
    ));
    if ready < c {
        notes.push(format!(
            "only {ready} of {c} connections came up ({failed} failed)"
        ));
    }
    let mut r = ScenarioResult {
        name: "idle".into(),
        size: format!("C={c} connections"),
        headline: format!(
            "{ready} up, {dropped} dropped; server {} KiB/conn (VmRSS {} → {} MiB); kernel TCP {} KiB/conn",
            per_conn_kib.map_or("n/a".into(), |v| format!("{v:.1}")),
            rss_before.map_or("?".into(), |v| format!("{:.0}", v as f64 / 1024.0)),
            rss_after.map_or("?".into(), |v| format!("{:.0}", v as f64 / 1024.0)),
            kernel_per_conn.map_or("n/a".into(), |v| format!("{v:.2}")),
        ),
        latency: "–".into(),
        cpu,
        targets: vec![TargetCheck {
            target: "idle watchers ≤ 16 KiB server memory each".into(),
            measured: per_conn_kib.map_or("n/a".into(), |v| format!("{v:.1} KiB")),
            met: per_conn_kib.is_some_and(|v| v <= 16.0) && ready == c,
        }],
        details: json!({
            "connections": c, "ready": ready, "failed": failed, "dropped": dropped,
            "setup_secs": setup_secs,
            "server_rss_kib_before": rss_before, "server_rss_kib_after": rss_after,
            "server_rss_kib_after_hold": rss_end,
            "server_kib_per_connection": per_conn_kib,
            "sockstat_before": sock_before, "sockstat_after": sock_after,
            "page_size": page, "kernel_tcp_kib_total": kernel_kib_total,
            "kernel_tcp_kib_per_connection": kernel_per_conn,
            "hold_secs": args.idle_hold_secs,
        }),
        notes,
    };
    r.warn_if_generator_busy();
    target.finish().await?;
    Ok(r)
}
