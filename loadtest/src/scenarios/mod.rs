//! The scenarios, and what several of them share: warmed per-client
//! connections, paced bookings, and sets of watchers.

pub mod cross_node;
pub mod fanout;
pub mod hot_slot;
pub mod idle;
pub mod throughput;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    api::{Api, BookOutcome},
    ws::{self, Progress, Received, WatchSpec},
};

/// One client per virtual user, each with its own connection, opened (by a
/// `GET /healthz`) before the measured phase so it measures bookings, not
/// TCP handshakes. At most 128 connects at a time.
pub async fn warmed_clients(base: &str, n: usize) -> anyhow::Result<Vec<Api>> {
    let clients: Vec<Api> = (0..n)
        .map(|_| Api::new(base, 1))
        .collect::<anyhow::Result<_>>()?;
    let failures = stream::iter(clients.iter())
        .map(|c| async move {
            match c.http.get(c.url("/healthz")).send().await {
                Ok(r) => r.bytes().await.is_err(),
                Err(_) => true,
            }
        })
        .buffer_unordered(128)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failures > 0 {
        eprintln!("  warm-up: {failures} of {n} connections failed (they connect on first use)");
    }
    Ok(clients)
}

/// Books `starts[i]` with `doctor` at `rate` per second (each booking its
/// own task, so a slow answer does not delay the schedule). Bounded by
/// `starts.len()`.
pub async fn paced_bookings(
    api: &Api,
    tokens: &[String],
    doctor: &str,
    starts: &[String],
    rate: f64,
) -> Vec<Option<BookOutcome>> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.01)));
    let mut handles: Vec<JoinHandle<BookOutcome>> = Vec::with_capacity(starts.len());
    for (i, s) in starts.iter().enumerate() {
        tick.tick().await;
        let (api, token, doctor, s) = (
            api.clone(),
            tokens[i % tokens.len()].clone(),
            doctor.to_string(),
            s.clone(),
        );
        handles.push(tokio::spawn(
            async move { api.book(&token, &doctor, &s).await },
        ));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.ok());
    }
    out
}

/// A running set of watchers.
pub struct Watchers {
    handles: Vec<JoinHandle<Option<Received>>>,
    /// Setup counters.
    pub progress: Arc<Progress>,
    stop: watch::Sender<bool>,
}

impl Watchers {
    /// Starts one task per spec; `parallelism` connect at a time. Every
    /// task ends by `hard_deadline` at the latest.
    pub fn start(
        specs: Vec<WatchSpec>,
        parallelism: usize,
        hard_deadline: tokio::time::Instant,
    ) -> Self {
        let setup = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
        let progress = Arc::new(Progress::default());
        let (stop, stop_rx) = watch::channel(false);
        let handles = specs
            .into_iter()
            .map(|spec| {
                tokio::spawn(ws::watch(
                    spec,
                    setup.clone(),
                    progress.clone(),
                    stop_rx.clone(),
                    hard_deadline,
                ))
            })
            .collect();
        Self {
            handles,
            progress,
            stop,
        }
    }

    /// Tells every watcher to stop and collects what each saw (`None`: it
    /// never came up).
    pub async fn finish(self) -> Vec<Option<Received>> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            out.push(h.await.ok().flatten());
        }
        out
    }
}

/// Watch specs for `n` watchers of `doctor` on `host_port`, spread over
/// source addresses of `block`.
#[allow(clippy::too_many_arguments)]
pub fn specs(
    n: usize,
    host_port: &str,
    block: u8,
    per_ip: usize,
    doctors: &[String],
    from: &str,
    to: &str,
    plan: Arc<HashMap<i64, u32>>,
) -> Vec<WatchSpec> {
    let ips = ws::source_ips_for(n, per_ip);
    (0..n)
        .map(|i| WatchSpec {
            host_port: host_port.to_string(),
            src: ws::source_ip(block, i % ips),
            doctor: doctors[i % doctors.len()].clone(),
            from: from.to_string(),
            to: to.to_string(),
            plan: plan.clone(),
        })
        .collect()
}

/// The bookings a push scenario makes: `rate × secs` consecutive slots from
/// `base`, as request starts, plus the map watchers use to number what they
/// receive (slot start → booking index).
pub struct PushPlan {
    /// Slot starts to book, in order (RFC 3339).
    pub starts: Vec<String>,
    /// Slot start (unix seconds) → booking index.
    pub plan: Arc<HashMap<i64, u32>>,
    /// End of the watched range: the booked slots, at least an hour.
    pub to: chrono::DateTime<chrono::Utc>,
}

impl PushPlan {
    /// The plan for `rate` bookings a second over `secs` seconds.
    pub fn new(base: chrono::DateTime<chrono::Utc>, rate: f64, secs: f64) -> Self {
        let b = ((rate * secs).ceil() as usize).max(1) as i64;
        PushPlan {
            starts: (0..b)
                .map(|k| crate::api::rfc3339(crate::api::slot_start(base, k)))
                .collect(),
            plan: Arc::new(
                (0..b)
                    .map(|k| (crate::api::slot_start(base, k).timestamp(), k as u32))
                    .collect(),
            ),
            to: crate::api::slot_start(base, b).max(base + chrono::Duration::hours(1)),
        }
    }
}

/// Milliseconds from `a` to `b` (negative when `b` is earlier).
pub fn ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a {
        (b - a).as_secs_f64() * 1e3
    } else {
        -((a - b).as_secs_f64() * 1e3)
    }
}
