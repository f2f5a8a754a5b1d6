//! The servers under test: spawned `docspot` children with a fresh database,
//! or a running server given by `--url`.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{Args, db};

/// The fixed token signing key of spawned servers (both nodes of a cluster
/// share it, so a token from one works on the other).
pub const JWT_SECRET: &str = "docspot-loadtest-secret";
/// The platform admin created in every bench database.
pub const ADMIN_EMAIL: &str = "bench-admin@loadtest.example";
/// Its password.
pub const ADMIN_PASSWORD: &str = "bench admin password";

/// One DocSpot node.
pub struct Node {
    child: Option<Child>,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// Where a spawned node's stderr goes.
    pub log: Option<PathBuf>,
}

impl Node {
    /// `host:port` of the node.
    pub fn host_port(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// Stops a spawned node (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    /// Never leave a server behind, even when a scenario fails.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The system under test for one scenario: node(s) and their database.
pub struct Target {
    /// The nodes (one, or two for cross-node).
    pub nodes: Vec<Node>,
    /// The database the nodes use.
    pub db_url: String,
    /// Database name to drop at the end (spawned mode only).
    owned_db: Option<String>,
    pg: String,
    keep_db: bool,
}

/// Extra settings for spawned nodes.
#[derive(Debug, Clone, Default)]
pub struct SpawnOpts {
    /// Nodes to start on the same database.
    pub nodes: usize,
    /// Redis URL and channel prefix (cross-node).
    pub redis: Option<(String, String)>,
    /// More DOCSPOT_* variables.
    pub env: Vec<(String, String)>,
}

/// Field encryption key of benchmark servers (base64 of 32 bytes; never a
/// production key).
const FIELD_KEY: &str = "YmVuY2gtb25seS1maWVsZC1rZXktMzItYnl0ZXMhISE=";
/// Blind-index key of benchmark servers (base64 of 32 bytes).
const BLIND_INDEX_KEY: &str = "YmVuY2gtb25seS1ibGluZC1pbmRleC1rZXktMzJieXQ=";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn docspot(bin: &Path, db_url: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("DOCSPOT_DATABASE_URL", db_url)
        .env("DOCSPOT_AUTH__JWT_SECRET", JWT_SECRET)
        // A PostgreSQL server refuses to start without field encryption
        // keys; every node of a run must share them (fixed bench-only keys).
        .env("DOCSPOT_SECURITY__ENCRYPTION_KEYS__BENCH", FIELD_KEY)
        .env("DOCSPOT_SECURITY__ACTIVE_ENCRYPTION_KEY", "bench")
        .env("DOCSPOT_SECURITY__BLIND_INDEX_KEY", BLIND_INDEX_KEY)
        // Tokens must outlive the whole run.
        .env("DOCSPOT_AUTH__ACCESS_TOKEN_TTL_SECS", "86400")
        .env("DOCSPOT_ML__RETRAIN_INTERVAL_SECS", "0")
        .env(
            "DOCSPOT_ML__MODEL_PATH",
            std::env::temp_dir().join("docspot_loadtest_absent.model"),
        )
        // Thousands of clients from one address: abuse limits would
        // measure themselves, not the server.
        .env("DOCSPOT_RATE_LIMIT__ENABLED", "false")
        // Per-request logging would measure the terminal, not the server.
        .env("DOCSPOT_LOG", "warn")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

impl Target {
    /// Starts `opts.nodes` servers on a fresh database, with a platform admin.
    pub async fn spawn(args: &Args, opts: SpawnOpts) -> anyhow::Result<Self> {
        let bin = args.server_bin()?;
        let name = format!("docspot_bench_{}", uuid::Uuid::new_v4().simple());
        let db_url = format!("{}/{name}", args.pg.trim_end_matches('/'));
        let mut target = Target {
            nodes: Vec::new(),
            db_url: db_url.clone(),
            owned_db: Some(name.clone()),
            pg: args.pg.clone(),
            keep_db: args.keep_db,
        };
        // Creates the database, migrates it and adds the admin.
        let out = docspot(&bin, &db_url)
            .args([
                "admin",
                "create",
                "--email",
                ADMIN_EMAIL,
                "--password",
                ADMIN_PASSWORD,
            ])
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {} admin create", bin.display()))?;
        if !out.status.success() {
            bail!(
                "docspot admin create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for i in 0..opts.nodes.max(1) {
            let port = free_port()?;
            let log = std::env::temp_dir().join(format!("{name}-node{i}.log"));
            let mut cmd = docspot(&bin, &db_url);
            cmd.env("DOCSPOT_LISTEN", format!("127.0.0.1:{port}"))
                .stderr(File::create(&log)?);
            if let Some((url, prefix)) = &opts.redis {
                cmd.env("DOCSPOT_REDIS_URL", url)
                    .env("DOCSPOT_LIVE__CHANNEL_PREFIX", prefix);
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd.args(["serve", "--no-demo"]).spawn()?;
            let pid = child.id();
            target.nodes.push(Node {
                child: Some(child),
                base: format!("http://127.0.0.1:{port}"),
                pid: Some(pid),
                log: Some(log),
            });
        }
        for n in &mut target.nodes {
            wait_healthy(n).await?;
        }
        Ok(target)
    }

    /// A running server (and, for cross-node, its second node).
    pub async fn existing(args: &Args, nodes: usize) -> anyhow::Result<Self> {
        let db_url = args
            .database_url
            .clone()
            .context("--url needs --database-url")?;
        let mut urls = vec![args.url.clone().context("--url")?];
        if nodes > 1 {
            urls.push(
                args.url_b
                    .clone()
                    .context("cross-node with --url needs --url-b (the second node)")?,
            );
        }
        let bin = args.server_bin()?;
        // Best effort: the admin may exist from an earlier run.
        let _ = docspot(&bin, &db_url)
            .args([
                "admin",
                "create",
                "--email",
                ADMIN_EMAIL,
                "--password",
                ADMIN_PASSWORD,
            ])
            .stderr(Stdio::null())
            .status();
        let mut target = Target {
            nodes: urls
                .into_iter()
                .enumerate()
                .map(|(i, base)| Node {
                    child: None,
                    base: base.trim_end_matches('/').to_string(),
                    pid: if i == 0 { args.server_pid } else { None },
                    log: None,
                })
                .collect(),
            db_url,
            owned_db: None,
            pg: args.pg.clone(),
            keep_db: true,
        };
        for n in &mut target.nodes {
            wait_healthy(n).await?;
        }
        Ok(target)
    }

    /// Spawned or existing, as the arguments say.
    pub async fn for_args(args: &Args, opts: SpawnOpts) -> anyhow::Result<Self> {
        if args.spawn {
            Self::spawn(args, opts).await
        } else {
            Self::existing(args, opts.nodes.max(1)).await
        }
    }

    /// Process ids of the nodes that have one.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.pid).collect()
    }

    /// Stops spawned nodes and drops the bench database.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.stop();
            // A clean finish needs no server log (a failed one keeps it).
            if let Some(log) = n.log.take() {
                let _ = std::fs::remove_file(log);
            }
        }
        if let Some(name) = self.owned_db.take()
            && !self.keep_db
        {
            db::drop_database(&self.pg, &name).await?;
        }
        Ok(())
    }
}

impl Drop for Target {
    /// A failed scenario still drops its database (best effort, blocking).
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        if let Some(name) = self.owned_db.take()
            && !self.keep_db
        {
            let _ = Command::new("psql")
                .args([
                    &self.pg.replace("postgres://", "postgresql://"),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn wait_healthy(node: &mut Node) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", node.base)).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        if let Some(c) = node.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            let log = node
                .log
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            bail!("docspot exited with {status} before it was healthy:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("docspot at {} not healthy within 60 s", node.base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
