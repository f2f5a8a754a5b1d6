//! WebSocket watchers of `/api/v1/live`, connected from chosen `127.0.0.x`
//! source addresses, on tokio's multi-thread runtime.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::watch};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{
        Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
    },
};

/// A live connection.
pub type Conn = WebSocketStream<TcpStream>;

/// Source address number `i` of a set: `127.0.<block>.<10 + i>`. Each
/// scenario uses its own block so sockets of an earlier one lingering in
/// TIME_WAIT never hold ports it needs.
pub fn source_ip(block: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, block, 10 + (i % 200) as u8))
}

/// How many source addresses `conns` connections need.
pub fn source_ips_for(conns: usize, per_ip: usize) -> usize {
    conns.div_ceil(per_ip.max(1)).clamp(1, 200)
}

fn config() -> WebSocketConfig {
    // Small buffers: tungstenite's default read buffer is 128 KiB per
    // connection, 6 GiB for 50k watchers.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

/// Opens `/api/v1/live` on `host_port` from `src` (JSON subprotocol).
pub async fn connect(host_port: &str, src: IpAddr) -> anyhow::Result<Conn> {
    let server: SocketAddr = host_port.parse().context("server address")?;
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(SocketAddr::new(src, 0))
        .with_context(|| format!("bind {src}"))?;
    let stream = sock.connect(server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut req = format!("ws://{host_port}/api/v1/live").into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("docspot.json.v1"),
    );
    let (ws, _) = client_async_with_config(req, stream, Some(config()))
        .await
        .context("websocket handshake")?;
    Ok(ws)
}

/// Subscribes to a `doctor:` topic over `[from, to)` and waits for the
/// snapshot (at most 30 s).
pub async fn subscribe(ws: &mut Conn, doctor: &str, from: &str, to: &str) -> anyhow::Result<()> {
    let msg =
        format!(r#"{{"type":"subscribe","topic":"doctor:{doctor}","from":"{from}","to":"{to}"}}"#);
    ws.send(Message::text(msg)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no snapshot within 30 s")?
            .context("closed before the snapshot")??;
        if let Message::Text(t) = m {
            if t.starts_with(r#"{"type":"snapshot""#) || t.contains(r#""type":"snapshot""#) {
                return Ok(());
            }
            if t.contains(r#""type":"error""#) {
                bail!("subscribe refused: {t}");
            }
        }
    }
}

/// The `start` of a delta frame, as Unix seconds; `None` for other frames.
/// A substring scan, not a JSON parse: 10k watchers × 20 deltas/s is 200k
/// frames/s, and the generator must not be the bottleneck.
pub fn delta_start(text: &str) -> Option<i64> {
    if !text.contains(r#""type":"delta""#) {
        return None;
    }
    let i = text.find(r#""start":""#)? + 9;
    let end = text[i..].find('"')? + i;
    chrono::DateTime::parse_from_rfc3339(&text[i..end])
        .ok()
        .map(|t| t.timestamp())
}

/// The commit instant `at` of a delta frame; `None` for other frames and
/// for deltas without one (a server from before the field). Scanned like
/// [`delta_start`].
pub fn delta_at(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if !text.contains(r#""type":"delta""#) {
        return None;
    }
    let i = text.find(r#""at":""#)? + 6;
    let end = text[i..].find('"')? + i;
    chrono::DateTime::parse_from_rfc3339(&text[i..end])
        .ok()
        .map(|t| t.to_utc())
}

/// Milliseconds from the server's commit instant `at` to a receipt at wall
/// clock `now` (negative if the clocks disagree).
pub fn commit_to_receipt_ms(
    at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    (now - at).num_nanoseconds().map(|ns| ns as f64 / 1e6)
}

/// One planned delta as a watcher first received it.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    /// Index of the booking in the scenario's plan.
    pub idx: u32,
    /// When it arrived (monotonic clock, for comparing with request times).
    pub received: Instant,
    /// Receipt wall clock minus the delta's commit instant `at`, in ms;
    /// `None` when the frame carried no `at`.
    pub commit_to_receipt_ms: Option<f64>,
}

/// What one watcher saw.
#[derive(Debug, Default)]
pub struct Received {
    /// The first receipt of each planned delta.
    pub deltas: Vec<Receipt>,
    /// Delta frames that matched no planned booking.
    pub unknown: usize,
    /// Frames of any kind.
    pub frames: usize,
    /// The connection ended before it was told to stop.
    pub dropped: bool,
}

/// Counters shared by a set of watchers while they come up.
#[derive(Debug, Default)]
pub struct Progress {
    /// Connected and subscribed.
    pub ready: AtomicUsize,
    /// Failed to connect or subscribe.
    pub failed: AtomicUsize,
}

/// Plan of one watcher.
#[derive(Clone)]
pub struct WatchSpec {
    /// Server `host:port`.
    pub host_port: String,
    /// Source address.
    pub src: IpAddr,
    /// Doctor to watch.
    pub doctor: String,
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end (RFC 3339).
    pub to: String,
    /// Slot start (Unix seconds) → booking index.
    pub plan: Arc<HashMap<i64, u32>>,
}

/// Connects, subscribes (holding a setup permit meanwhile), then reads and
/// timestamps deltas until `stop` turns true or `hard_deadline` passes.
/// Pings are answered by tungstenite on the next read.
pub async fn watch(
    spec: WatchSpec,
    setup: Arc<tokio::sync::Semaphore>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    hard_deadline: tokio::time::Instant,
) -> Option<Received> {
    let conn = {
        let _permit = setup.acquire().await.ok()?;
        let r = async {
            let mut ws = connect(&spec.host_port, spec.src).await?;
            subscribe(&mut ws, &spec.doctor, &spec.from, &spec.to).await?;
            Ok::<_, anyhow::Error>(ws)
        };
        match tokio::time::timeout_at(hard_deadline, r).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                if progress.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("watcher from {}: {e:#}", spec.src);
                }
                return None;
            }
            Err(_) => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    };
    progress.ready.fetch_add(1, Ordering::Relaxed);
    let mut ws = conn;
    let mut got = Received::default();
    let mut seen = std::collections::HashSet::new();
    loop {
        tokio::select! {
            biased;
            m = ws.next() => {
                // Both clocks at once: the monotonic one for request times,
                // the wall clock for the server's commit instant `at` (the
                // server runs on this machine, so it is the same clock).
                let now = Instant::now();
                let wall = chrono::Utc::now();
                match m {
                    Some(Ok(Message::Text(t))) => {
                        got.frames += 1;
                        if let Some(ts) = delta_start(&t) {
                            match spec.plan.get(&ts) {
                                Some(&idx) if seen.insert(idx) => got.deltas.push(Receipt {
                                    idx,
                                    received: now,
                                    commit_to_receipt_ms: delta_at(&t)
                                        .and_then(|at| commit_to_receipt_ms(at, wall)),
                                }),
                                Some(_) => {}
                                None => got.unknown += 1,
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        got.dropped = !*stop.borrow();
                        break;
                    }
                    Some(Ok(_)) => got.frames += 1,
                }
            }
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(hard_deadline) => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    // Closing handshake is not needed: the socket just goes.
    Some(got)
}

/// Waits until `want` watchers are ready (or failed), at most `limit`.
/// Returns (ready, failed).
pub async fn wait_ready(progress: &Progress, want: usize, limit: Duration) -> (usize, usize) {
    let deadline = Instant::now() + limit;
    let mut last = (usize::MAX, Instant::now());
    loop {
        let ready = progress.ready.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        if ready + failed >= want || Instant::now() > deadline {
            return (ready, failed);
        }
        if ready != last.0 && last.1.elapsed() > Duration::from_secs(5) {
            eprintln!("  watchers: {ready} ready, {failed} failed of {want}");
            last = (ready, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_of_a_delta() {
        let f = r#"{"type":"delta","topic":"doctor:x","seq":42,"data":{"kind":"booked","start":"2026-11-26T08:00:00Z","end":"2026-11-26T08:30:00Z","status":"booked"}}"#;
        assert_eq!(delta_start(f), Some(1_795_680_000));
        assert_eq!(
            delta_start(r#"{"type":"snapshot","data":{"start":"2026-11-26T08:00:00Z"}}"#),
            None
        );
    }

    #[test]
    fn reads_the_commit_instant_of_a_delta() {
        let f = r#"{"type":"delta","topic":"doctor:x","seq":43,"data":{"kind":"rescheduled","start":"2026-11-26T10:00:00Z","end":"2026-11-26T10:30:00Z","status":"booked","previous_start":"2026-11-26T08:00:00Z","previous_end":"2026-11-26T08:30:00Z","at":"2026-11-25T14:03:12.481207Z"}}"#;
        let at = delta_at(f).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-25T14:03:12.481207+00:00");
        assert_eq!(delta_start(f), Some(1_795_687_200), "not previous_start");
        let later = at + chrono::Duration::microseconds(2_500);
        assert_eq!(commit_to_receipt_ms(at, later), Some(2.5));
        assert_eq!(commit_to_receipt_ms(later, at), Some(-2.5));
        // Older servers: no `at`; other frames: none either.
        assert_eq!(
            delta_at(r#"{"type":"delta","data":{"kind":"booked","start":"2026-11-26T08:00:00Z"}}"#),
            None
        );
        assert_eq!(
            delta_at(r#"{"type":"snapshot","data":{"at":"2026-11-25T14:03:12Z"}}"#),
            None
        );
    }
}
