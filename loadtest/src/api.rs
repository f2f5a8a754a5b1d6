//! The HTTP side: seeding through the public API, the slot grid, bookings.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use crate::server::{ADMIN_EMAIL, ADMIN_PASSWORD};

/// Visit length of seeded doctors: the shortest the API allows, so one day
/// holds many slots.
pub const SLOT_MINUTES: i64 = 5;
/// Slots per day: doctors are open 00:00–23:59 UTC, so the last 5-minute
/// slot starts at 23:50.
pub const SLOTS_PER_DAY: i64 = 287;
/// Bookings may be made this far ahead (clinic setting; the API's maximum).
pub const HORIZON_DAYS: i64 = 730;

/// An HTTP client for one base URL. Never uses a proxy: all traffic stays on
/// loopback.
#[derive(Clone)]
pub struct Api {
    /// The client (its own connection pool).
    pub http: reqwest::Client,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

/// A seeded doctor.
#[derive(Debug, Clone)]
pub struct Doctor {
    /// Doctor id.
    pub id: String,
    /// Its 5-minute default visit type.
    pub visit_type: String,
}

/// What one booking got.
#[derive(Debug, Clone)]
pub struct BookOutcome {
    /// HTTP status (0: transport error).
    pub status: u16,
    /// The problem `code` of an error answer.
    pub code: Option<String>,
    /// When the request was handed to the client.
    pub sent: Instant,
    /// When the full answer had arrived.
    pub done: Instant,
}

impl BookOutcome {
    /// Request → answer, in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        (self.done - self.sent).as_secs_f64() * 1e3
    }
}

/// Midnight UTC of the day after `now`: slot 0 of the grid.
pub fn grid_base(now: DateTime<Utc>) -> DateTime<Utc> {
    (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// Start of slot `k` of the grid (287 slots a day from `base`).
pub fn slot_start(base: DateTime<Utc>, k: i64) -> DateTime<Utc> {
    base + chrono::Duration::days(k / SLOTS_PER_DAY)
        + chrono::Duration::minutes((k % SLOTS_PER_DAY) * SLOT_MINUTES)
}

/// RFC 3339 as the server writes it (`…T08:00:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Api {
    /// A client with up to `pool` idle connections.
    pub fn new(base: &str, pool: usize) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(pool)
                .timeout(Duration::from_secs(60))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON, requiring a 2xx answer.
    pub async fn post(&self, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An access token (OAuth 2.0 password grant).
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(self.url("/api/v1/auth/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
            ])
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        v["access_token"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("login {email}: {status} {v}"))
    }

    /// The platform admin's token.
    pub async fn admin(&self) -> anyhow::Result<String> {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// One clinic (UTC, no cancellation cut-off, the longest horizon) with
    /// `n` doctors, each with a default 5-minute visit type and open
    /// 00:00–23:59 every day.
    pub async fn seed_doctors(&self, admin: &str, n: usize) -> anyhow::Result<Vec<Doctor>> {
        let clinic = self
            .post(
                admin,
                "/api/v1/clinics",
                json!({"name": format!("Bench clinic {}", uuid::Uuid::new_v4().simple()),
                       "time_zone": "UTC", "cancellation_cutoff_minutes": 0,
                       "booking_horizon_days": HORIZON_DAYS}),
            )
            .await?;
        let clinic = clinic["id"].as_str().context("clinic id")?.to_string();
        stream::iter(0..n)
            .map(|i| {
                let clinic = clinic.clone();
                async move {
                    let d = self
                        .post(
                            admin,
                            &format!("/api/v1/clinics/{clinic}/doctors"),
                            json!({"name": format!("Dr. Bench {i}"), "specialties": ["general practice"]}),
                        )
                        .await?;
                    let id = d["id"].as_str().context("doctor id")?.to_string();
                    let vt = self
                        .post(
                            admin,
                            &format!("/api/v1/doctors/{id}/visit-types"),
                            json!({"name": "Quick visit", "duration_minutes": SLOT_MINUTES, "is_default": true}),
                        )
                        .await?;
                    for weekday in 1..=7 {
                        self.post(
                            admin,
                            &format!("/api/v1/doctors/{id}/rules"),
                            json!({"weekday": weekday, "start_time": "00:00", "end_time": "23:59"}),
                        )
                        .await?;
                    }
                    Ok::<_, anyhow::Error>(Doctor {
                        id,
                        visit_type: vt["id"].as_str().context("visit type id")?.to_string(),
                    })
                }
            })
            .buffered(8)
            .try_collect()
            .await
    }

    /// Registers `n` patients through the API and signs each in. Hashing is
    /// slow by design, so this is kept small and the tokens are shared.
    pub async fn seed_patients(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        stream::iter(0..n.max(1))
            .map(|i| {
                let email = format!("patient{i}.{run}@loadtest.example");
                async move {
                    let r = self
                        .http
                        .post(self.url("/api/v1/auth/register"))
                        .json(&json!({"email": email, "password": "bench patient pw", "name": format!("Patient {i}")}))
                        .send()
                        .await?;
                    if r.status() != 201 {
                        bail!("register: {} {}", r.status(), r.text().await?);
                    }
                    self.login(&email, "bench patient pw").await
                }
            })
            .buffer_unordered(4)
            .try_collect()
            .await
    }

    /// Books `start` with `doctor` as the token's patient.
    pub async fn book(&self, token: &str, doctor: &str, start: &str) -> BookOutcome {
        let body = format!(r#"{{"doctor_id":"{doctor}","start":"{start}"}}"#);
        let sent = Instant::now();
        let r = self
            .http
            .post(self.url("/api/v1/appointments"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let bytes = r.bytes().await.unwrap_or_default();
                let done = Instant::now();
                let code = (status >= 400)
                    .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                    .flatten()
                    .and_then(|v| v["code"].as_str().map(str::to_string));
                BookOutcome {
                    status,
                    code,
                    sent,
                    done,
                }
            }
            Err(e) => BookOutcome {
                status: 0,
                code: Some(format!("transport: {e}")),
                sent,
                done: Instant::now(),
            },
        }
    }
}
