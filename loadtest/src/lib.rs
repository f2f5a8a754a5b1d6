//! `docspot-loadtest`: the load generator and benchmark report for DocSpot.
//!
//! It drives a DocSpot server over its public HTTP API (`reqwest`) and its
//! live WebSocket (`tokio-tungstenite`), checks the outcome in PostgreSQL
//! (`tokio-postgres`) and compares bookings with a plain-SQL baseline run by
//! `pgbench` against the same database. It can start the servers itself
//! (`--spawn`: the real `docspot` binary as a child process, a fresh
//! `docspot_bench_<random>` database per scenario, dropped afterwards) or use
//! a running one (`--url`).
//!
//! Why `tokio-tungstenite` and not `awc`: the watchers must bind several
//! `127.0.0.x` source addresses (one address has only ~28k ephemeral ports)
//! and 10k–50k sockets must be read by every core. `tokio-tungstenite` takes
//! any `AsyncRead + AsyncWrite` stream, so a `tokio::net::TcpSocket` bound to a
//! chosen source address works as is, and its streams are `Send`, so they run
//! on tokio's multi-thread scheduler. `awc` connections are `!Send` and tied to
//! actix's one-thread-per-arbiter runtime, and it does not let the caller pick
//! the source address.
//!
//! Every loop is bounded in count and in time, and all traffic stays on
//! loopback (`127.0.0.0/8`): [`Args::check_loopback`] refuses anything else.
//!
//! # Layout
//!
//! | module | what |
//! | --- | --- |
//! | [`server`] | spawns `docspot` children (env, fd limits, health wait), `docspot admin create`, creates and drops bench databases |
//! | [`api`] | the HTTP client side: seeding clinics, doctors, visit types, rules and patients through the public API; the slot grid; one booking |
//! | [`ws`] | WebSocket watchers: connect from a chosen source address, subscribe, read deltas with receipt times |
//! | [`db`] | checks in PostgreSQL (overlaps, durable rows) and the `pgbench` baseline |
//! | [`procfs`] | CPU time (generator, server, PostgreSQL), `VmRSS`, `/proc/net/sockstat`, `RLIMIT_NOFILE` |
//! | [`stats`] | latency percentiles |
//! | [`scenarios`] | `hot-slot`, `throughput`, `fanout`, `idle`, `cross-node` |
//! | [`report`] | the JSON results and the markdown table |

pub mod api;
pub mod db;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod stats;
pub mod ws;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N clients claim the same M slots at once.
    HotSlot,
    /// Many doctors, clients booking distinct free slots for T seconds.
    Throughput,
    /// W watchers of one doctor while bookings happen at R/s.
    Fanout,
    /// C idle watcher connections: server memory per connection.
    Idle,
    /// Two nodes sharing PostgreSQL and Redis: added cross-node latency.
    CrossNode,
    /// All of the above, in that order.
    All,
}

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "docspot-loadtest",
    version,
    about = "Load generator and benchmark report for DocSpot"
)]
pub struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Start the server(s) as child processes (a fresh database per scenario).
    #[arg(long, conflicts_with = "url")]
    pub spawn: bool,
    /// Use a running server at this base URL (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub url: Option<String>,
    /// With --url: the second node for cross-node (same database and Redis).
    #[arg(long)]
    pub url_b: Option<String>,
    /// With --url: the server's database (checks, seeding the admin, pgbench).
    #[arg(long)]
    pub database_url: Option<String>,
    /// With --url: the server's process id, for its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The `docspot` binary (default: `docspot` next to this executable).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// PostgreSQL server for the bench databases (no database name).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub pg: String,
    /// Redis for cross-node.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// hot-slot: clients.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// hot-slot: distinct contested slots.
    #[arg(long, default_value_t = 10)]
    pub slots: usize,

    /// throughput: doctors.
    #[arg(long, default_value_t = 50)]
    pub doctors: usize,
    /// throughput: seconds of booking.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// throughput: concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// fanout: watchers of the booked doctor.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// fanout and cross-node: bookings per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// fanout and cross-node: seconds of booking.
    #[arg(long, default_value_t = 10.0)]
    pub push_secs: f64,

    /// idle: idle watcher connections.
    #[arg(long, default_value_t = 50_000)]
    pub idle: usize,
    /// idle: seconds to hold the connections after all are up.
    #[arg(long, default_value_t = 5.0)]
    pub idle_hold_secs: f64,

    /// cross-node: watchers on each node.
    #[arg(long, default_value_t = 200)]
    pub cross_watchers: usize,

    /// Patients registered through the API (their tokens are shared by the
    /// virtual clients; password hashing is slow by design).
    #[arg(long, default_value_t = 32)]
    pub patients: usize,
    /// WebSocket connections opened at once while setting up watchers.
    #[arg(long, default_value_t = 256)]
    pub connect_parallelism: usize,
    /// Connections per 127.0.0.x source address (one address has ~28k ports).
    #[arg(long, default_value_t = 12_000)]
    pub conns_per_source_ip: usize,

    /// Skip the pgbench baseline.
    #[arg(long)]
    pub no_pgbench: bool,
    /// The pgbench binary.
    #[arg(long, default_value = "/usr/bin/pgbench")]
    pub pgbench_bin: PathBuf,
    /// Most pgbench clients (PostgreSQL's max_connections is 100 here).
    #[arg(long, default_value_t = 64)]
    pub pgbench_max_clients: usize,

    /// Write all results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the results table as markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Keep the bench databases (default: dropped after each scenario).
    #[arg(long)]
    pub keep_db: bool,
}

impl Args {
    /// Refuses any target outside loopback.
    pub fn check_loopback(&self) -> anyhow::Result<()> {
        for u in [&self.url, &self.url_b, &self.database_url]
            .into_iter()
            .flatten()
            .chain([&self.pg, &self.redis_url])
        {
            let host = u
                .split("://")
                .nth(1)
                .unwrap_or(u)
                .rsplit('@')
                .next()
                .unwrap_or("")
                .split(['/', ':', '?'])
                .next()
                .unwrap_or("");
            let ok = host == "localhost"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !ok {
                bail!("{u}: only loopback targets (127.0.0.0/8, localhost) are allowed");
            }
        }
        Ok(())
    }

    /// The scenarios to run, in order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        match self.scenario {
            Scenario::All => vec![
                Scenario::HotSlot,
                Scenario::Throughput,
                Scenario::Fanout,
                Scenario::Idle,
                Scenario::CrossNode,
            ],
            s => vec![s],
        }
    }

    /// The server binary for --spawn and `admin create`.
    pub fn server_bin(&self) -> anyhow::Result<PathBuf> {
        let p = match &self.server_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("locating this executable")?
                .parent()
                .context("executable has no directory")?
                .join("docspot"),
        };
        if !p.is_file() {
            bail!(
                "server binary {} not found (build it: cargo build --release -p docspot, or pass --server-bin)",
                p.display()
            );
        }
        Ok(p)
    }
}

/// Runs the chosen scenarios and writes the reports.
pub async fn run(args: Args) -> anyhow::Result<Vec<report::ScenarioResult>> {
    args.check_loopback()?;
    if !args.spawn && args.url.is_none() {
        bail!("pass --spawn (start the server) or --url URL (use a running one)");
    }
    if args.url.is_some() && args.database_url.is_none() {
        bail!("--url needs --database-url (the checks count rows in the server's database)");
    }
    let want = (args.idle + args.watchers).max(args.cross_watchers * 2) as u64 + 10_000;
    let nofile = procfs::raise_nofile(want.max(100_000));
    eprintln!("RLIMIT_NOFILE raised to {nofile} (inherited by spawned servers)");
    db::check_postgres(&args.pg).await?;
    let mut results = Vec::new();
    for s in args.scenarios() {
        eprintln!("== {s:?} ==");
        let started = std::time::Instant::now();
        let r = match s {
            Scenario::HotSlot => scenarios::hot_slot::run(&args).await,
            Scenario::Throughput => scenarios::throughput::run(&args).await,
            Scenario::Fanout => scenarios::fanout::run(&args).await,
            Scenario::Idle => scenarios::idle::run(&args).await,
            Scenario::CrossNode => scenarios::cross_node::run(&args).await,
            Scenario::All => unreachable!("expanded by scenarios()"),
        };
        let r = r.with_context(|| format!("scenario {s:?}"))?;
        eprintln!(
            "{s:?} done in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            r.headline
        );
        results.push(r);
        // Reports are rewritten after every scenario: a later failure keeps
        // the earlier numbers.
        report::write(&args, &results)?;
    }
    print!("{}", report::markdown(&results));
    Ok(results)
}
