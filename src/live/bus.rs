//! The change bus: carries every committed calendar change to this node's
//! live hub and, in scale-out mode, through Redis pub/sub to every other
//! node.
//!
//! Local watchers never depend on Redis: a change goes to the local hub
//! first, then to Redis. When Redis is away, booking goes on (PostgreSQL is
//! the arbiter), local watchers keep getting local changes, `/readyz` says
//! cross-node push is degraded, and both tasks reconnect with backoff. After
//! a reconnect every watcher gets a fresh snapshot and every calendar reloads,
//! because changes made elsewhere meanwhile were missed.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use actix::Addr;
use docspot_actors::{
    CalendarDirectory,
    events::{CalendarChange, ChangeSink},
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::hub::{Change, LiveHub, ResyncAll};

/// Health of cross-node push, for `/readyz`.
#[derive(Debug, Default)]
pub struct BusHealth {
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
}

const SINGLE: u8 = 0;
const OK: u8 = 1;
const DEGRADED: u8 = 2;

impl BusHealth {
    /// `single_node`, `ok` or `degraded: <why>`.
    pub fn describe(&self) -> String {
        match self.state.load(Ordering::Relaxed) {
            SINGLE => "single_node".into(),
            OK => "ok".into(),
            _ => {
                let why = self
                    .last_error
                    .lock()
                    .map(|e| e.clone().unwrap_or_default())
                    .unwrap_or_default();
                format!("degraded: {why}")
            }
        }
    }

    /// Whether cross-node push currently works (or is not needed).
    pub fn is_ok(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DEGRADED
    }

    fn set_ok(&self) {
        self.state.store(OK, Ordering::Relaxed);
    }

    fn set_degraded(&self, why: String) {
        if self.state.swap(DEGRADED, Ordering::Relaxed) != DEGRADED {
            tracing::warn!(error = %why, "cross-node push degraded: Redis unreachable");
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why);
        }
    }
}

/// What travels on Redis: the change and the node it came from. A message
/// without a change is a resync marker: the sender dropped changes while
/// Redis was away, so receivers reload calendars and resnapshot watchers.
#[derive(Debug, Serialize, Deserialize)]
struct BusMessage {
    origin: String,
    change: Option<CalendarChange>,
}

/// The node's change sink (see the module docs).
pub struct Bus {
    hub: OnceLock<Addr<LiveHub>>,
    outbox: Option<mpsc::Sender<CalendarChange>>,
    /// Cross-node push health.
    pub health: Arc<BusHealth>,
}

/// How many changes may wait for Redis before new ones are dropped (the
/// node is degraded by then; watchers elsewhere get a snapshot on recovery).
const OUTBOX: usize = 10_000;

impl Bus {
    /// A single-node bus.
    pub fn local() -> Arc<Self> {
        Arc::new(Bus {
            hub: OnceLock::new(),
            outbox: None,
            health: Arc::new(BusHealth::default()),
        })
    }

    /// A bus that also publishes to and listens on Redis. Spawns its two
    /// tasks on the current actix system.
    pub fn redis(
        url: &str,
        ca_file: Option<&std::path::Path>,
        prefix: String,
        node: String,
        calendars: Arc<CalendarDirectory>,
    ) -> Result<Arc<Self>, String> {
        let client = redis_client(url, ca_file)?;
        let (tx, rx) = mpsc::channel(OUTBOX);
        let health = Arc::new(BusHealth::default());
        health.set_ok();
        let bus = Arc::new(Bus {
            hub: OnceLock::new(),
            outbox: Some(tx),
            health: health.clone(),
        });
        actix_web::rt::spawn(publisher(
            client.clone(),
            prefix.clone(),
            node.clone(),
            rx,
            health.clone(),
        ));
        actix_web::rt::spawn(subscriber(client, prefix, node, calendars, bus.clone()));
        Ok(bus)
    }

    /// Connects the hub (once, right after it starts).
    pub fn attach(&self, hub: Addr<LiveHub>) {
        let _ = self.hub.set(hub);
    }

    /// The hub, once attached.
    pub fn hub(&self) -> Option<Addr<LiveHub>> {
        self.hub.get().cloned()
    }
}

impl ChangeSink for Bus {
    fn publish(&self, change: CalendarChange) {
        if let Some(hub) = self.hub.get() {
            hub.do_send(Change(change.clone()));
        }
        if let Some(tx) = &self.outbox
            && tx.try_send(change).is_err()
        {
            self.health
                .set_degraded("too many changes waiting for Redis".into());
        }
    }

    fn relay(&self, change: CalendarChange) {
        if let Some(hub) = self.hub.get() {
            hub.do_send(Change(change));
        }
    }
}

/// A Redis client for `url`. `rediss://` is TLS through rustls, which
/// the redis crate reaches through the process-wide crypto provider: ring,
/// the same as DocSpot's own HTTPS.
fn redis_client(url: &str, ca_file: Option<&std::path::Path>) -> Result<redis::Client, String> {
    // Err only means a provider is installed already (another node in the
    // same test process): that one is ring too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match ca_file {
        None => redis::Client::open(url).map_err(|e| e.to_string()),
        Some(path) => {
            if !url.starts_with("rediss://") {
                return Err("redis_ca_file is set but redis_url is not rediss://".into());
            }
            let pem = std::fs::read(path)
                .map_err(|e| format!("redis_ca_file {}: {e}", path.display()))?;
            // An empty trust store would only show later, as every
            // connection failing: refuse it at start-up.
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
                return Err(format!(
                    "redis_ca_file {}: no PEM certificate in the file",
                    path.display()
                ));
            }
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| format!("redis_ca_file {}: {e}", path.display()))
        }
    }
}

fn channel(prefix: &str, change: &CalendarChange) -> String {
    format!("{prefix}:doctor:{}", change.doctor_id)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// Publishes each local change once, MessagePack-encoded, on its doctor's
/// channel.
async fn publisher(
    client: redis::Client,
    prefix: String,
    node: String,
    mut rx: mpsc::Receiver<CalendarChange>,
    health: Arc<BusHealth>,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut attempt = 0;
    // Set when a change was dropped: the next successful publish is
    // preceded by a resync marker so other nodes catch up.
    let mut dropped = false;
    while let Some(change) = rx.recv().await {
        if dropped
            && let Some(c) = conn.as_mut()
            && let Ok(marker) = rmp_serde::to_vec_named(&BusMessage {
                origin: node.clone(),
                change: None,
            })
        {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(format!("{prefix}:doctor:resync"))
                .arg(marker)
                .query_async(c)
                .await;
            dropped = sent.is_err();
        }
        let payload = match rmp_serde::to_vec_named(&BusMessage {
            origin: node.clone(),
            change: Some(change.clone()),
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not encode a change");
                continue;
            }
        };
        loop {
            if conn.is_none() {
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        health.set_degraded(e.to_string());
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        // Do not hold changes forever: watchers on other
                        // nodes get a snapshot when the bus recovers.
                        if attempt > 3 {
                            dropped = true;
                            break;
                        }
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel(&prefix, &change))
                .arg(&payload)
                .query_async(c)
                .await;
            match sent {
                Ok(_) => {
                    attempt = 0;
                    health.set_ok();
                    break;
                }
                Err(e) => {
                    health.set_degraded(e.to_string());
                    conn = None;
                }
            }
        }
    }
}

/// Relays other nodes' changes to this node's calendars and watchers.
async fn subscriber(
    client: redis::Client,
    prefix: String,
    node: String,
    calendars: Arc<CalendarDirectory>,
    bus: Arc<Bus>,
) {
    let health = bus.health.clone();
    let pattern = format!("{prefix}:doctor:*");
    let mut attempt = 0;
    let mut first = true;
    loop {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                health.set_degraded(e.to_string());
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        if let Err(e) = pubsub.psubscribe(&pattern).await {
            health.set_degraded(e.to_string());
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        }
        attempt = 0;
        health.set_ok();
        if !first {
            tracing::info!("cross-node push restored; resynchronising watchers and calendars");
            calendars.refresh_all();
            if let Some(hub) = bus.hub() {
                hub.do_send(ResyncAll);
            }
        }
        first = false;
        let mut stream = pubsub.on_message();
        while let Some(msg) = stream.next().await {
            let Ok(m) = rmp_serde::from_slice::<BusMessage>(msg.get_payload_bytes()) else {
                tracing::warn!(channel = msg.get_channel_name(), "undecodable bus message");
                continue;
            };
            if m.origin == node {
                continue; // our own change, already delivered locally
            }
            let Some(change) = m.change else {
                // Another node lost changes while Redis was away.
                calendars.refresh_all();
                if let Some(hub) = bus.hub() {
                    hub.do_send(ResyncAll);
                }
                continue;
            };
            if !calendars.apply_remote(change.clone())
                && let Some(hub) = bus.hub()
            {
                hub.do_send(Change(change));
            }
        }
        health.set_degraded("Redis subscription lost".into());
    }
}
