//! Test harness: each test gets a fresh database (PostgreSQL, or an SQLite
//! file when `DOCSPOT_TEST_BACKEND=sqlite`) and its own server on a random
//! port, talking over real HTTP.

use std::{net::TcpListener, path::PathBuf, sync::OnceLock};

use chrono::{DateTime, Duration, NaiveTime, Utc};
use docspot::{
    auth::hash_password,
    config::Settings,
    domain::{Email, Role},
    routes::AppState,
    startup::Application,
    store::{ClinicFields, Doctor, DoctorFields, NewUser, RuleRecord, UserRecord, VisitTypeRecord},
};
use docspot_actors::domain::{ClinicId, VisitTypeId};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// A storage backend the suite can run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

/// The backend under test: `DOCSPOT_TEST_BACKEND=postgres` (default) or
/// `sqlite`. `scripts/test` runs the suite once for each.
pub fn backend_under_test() -> Kind {
    match std::env::var("DOCSPOT_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("postgres") => Kind::Postgres,
        Ok("sqlite") => Kind::Sqlite,
        Ok(other) => panic!("DOCSPOT_TEST_BACKEND={other:?}: use postgres or sqlite"),
    }
}

/// One test's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestDb {
    Postgres(String),
    Sqlite(PathBuf),
}

impl TestDb {
    fn fresh(kind: Kind) -> Self {
        let name = format!("docspot_test_{}", Uuid::new_v4().simple());
        match kind {
            Kind::Postgres => TestDb::Postgres(name),
            Kind::Sqlite => TestDb::Sqlite(std::env::temp_dir().join(format!("{name}.db"))),
        }
    }

    /// The `database_url` setting that opens this database.
    pub fn url(&self) -> String {
        match self {
            TestDb::Postgres(name) => format!("{PG}/{name}"),
            TestDb::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

/// A change to a test app's settings, applied last.
pub type SettingsHook = std::sync::Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// Options for [`spawn_app_with`].
#[derive(Clone)]
pub struct Options {
    pub hold_ttl_secs: u64,
    pub idle_timeout_secs: u64,
    /// Share this database (a second node, or a restarted one).
    pub database: Option<TestDb>,
    /// Force a backend (multi-node tests need PostgreSQL).
    pub backend: Option<Kind>,
    /// Cross-node push through this Redis (with a channel prefix of its own).
    pub redis: Option<(String, String)>,
    /// Deltas kept per topic for resumes.
    pub replay_buffer: usize,
    /// Last word on the settings (e.g. tight rate limits, TLS, keys).
    pub settings: Option<SettingsHook>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hold_ttl_secs: 300,
            idle_timeout_secs: 600,
            database: None,
            backend: None,
            redis: None,
            replay_buffer: 1024,
            settings: None,
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub database: TestDb,
    pub state: actix_web::web::Data<AppState>,
    pub client: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// Two nodes on one fresh PostgreSQL database (several nodes share
/// PostgreSQL; the embedded store is single-node).
pub async fn spawn_two_nodes() -> (TestApp, TestApp) {
    let a = spawn_app_with(Options {
        backend: Some(Kind::Postgres),
        ..Default::default()
    })
    .await;
    let b = spawn_app_with(Options {
        database: Some(a.database.clone()),
        ..Default::default()
    })
    .await;
    (a, b)
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let database = opts
        .database
        .clone()
        .unwrap_or_else(|| TestDb::fresh(opts.backend.unwrap_or_else(backend_under_test)));
    let mut settings = Settings::load().expect("config loads");
    settings.database_url = database.url().into();
    settings.listen = "127.0.0.1:0".into();
    settings.auth.jwt_secret = "integration-test-secret".to_string().into();
    set_test_keys(&mut settings, &[TEST_KEY_A], TEST_KEY_A.0);
    settings.calendar.hold_ttl_secs = opts.hold_ttl_secs;
    settings.calendar.idle_timeout_secs = opts.idle_timeout_secs;
    settings.calendar.threads = 1;
    settings.http.workers = 2;
    settings.database.pool_size = 8;
    settings.demo.seed_on_start = Some(false);
    settings.live.replay_buffer = opts.replay_buffer;
    // Each app its own (absent) model file; no background retraining.
    settings.ml.model_path =
        std::env::temp_dir().join(format!("docspot_test_{}.model", Uuid::new_v4().simple()));
    settings.ml.retrain_interval_secs = 0;
    settings.security.cors_origins = vec!["https://allowed.example".into()];
    if let Some((url, prefix)) = &opts.redis {
        settings.redis_url = url.clone().into();
        settings.live.channel_prefix = prefix.clone();
    }
    // Tests make many requests from 127.0.0.1: limits stay on (the code
    // path runs) but far out of reach, unless a test sets tight ones.
    for r in [
        &mut settings.rate_limit.auth_per_ip,
        &mut settings.rate_limit.auth_per_account,
        &mut settings.rate_limit.booking_per_ip,
        &mut settings.rate_limit.booking_per_account,
    ] {
        r.per_minute = 1_000_000;
        r.burst = 100_000;
    }
    settings.rate_limit.login_failures.max_per_account = 10_000;
    settings.rate_limit.login_failures.max_per_ip = 10_000;
    if let Some(f) = &opts.settings {
        f(&mut settings);
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = Application::from_listener(settings, listener)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "DocSpot could not start on {database:?}: {e}. \
                 Is PostgreSQL running on 127.0.0.1:5432? (scripts/test starts it)"
            )
        });
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address,
        database,
        state,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    }
}

/// Field encryption keys of the tests: (key id, base64 of 32 bytes).
pub const TEST_KEY_A: (&str, &str) = ("test-a", "dGVzdC1rZXktYS0zMi1ieXRlcy1vZi1rZXktbWF0ZXI=");
pub const TEST_KEY_B: (&str, &str) = ("test-b", "dGVzdC1rZXktYi0zMi1ieXRlcy1vZi1rZXktbWF0ZXI=");
pub const TEST_BLIND_INDEX_KEY: &str = "dGVzdC1ibGluZC1pbmRleC1rZXktMzItYnl0ZXMtISE=";

/// Configures these field encryption keys, `active` sealing new data (a
/// PostgreSQL server refuses to start without keys).
pub fn set_test_keys(settings: &mut Settings, keys: &[(&str, &str)], active: &str) {
    settings.security.encryption_keys = keys
        .iter()
        .map(|(id, k)| (id.to_string(), k.to_string().into()))
        .collect();
    settings.security.active_encryption_key = active.into();
    settings.security.blind_index_key = TEST_BLIND_INDEX_KEY.to_string().into();
}

/// A row written behind the server's back (history, or a crashed node's hold).
pub struct RawAppointment {
    pub id: Uuid,
    pub doctor: Uuid,
    pub patient: Uuid,
    pub visit_type: Uuid,
    pub start: DateTime<Utc>,
    pub minutes: i64,
    pub status: &'static str,
    pub hold_expires_at: Option<DateTime<Utc>>,
}

fn shared_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("password-123").unwrap())
}

/// A clinic with one doctor and a 30-minute default visit type.
pub struct Fixture {
    pub clinic: ClinicId,
    pub doctor: Doctor,
    pub visit_type: VisitTypeId,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A direct PostgreSQL connection (PostgreSQL-only tests).
    pub async fn pg(&self) -> tokio_postgres::Client {
        let TestDb::Postgres(name) = &self.database else {
            panic!("this test needs PostgreSQL");
        };
        let (c, conn) = tokio_postgres::connect(&format!("{PG}/{name}"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        actix_web::rt::spawn(conn);
        c
    }

    fn lite(&self) -> rusqlite::Connection {
        let TestDb::Sqlite(path) = &self.database else {
            panic!("not an SQLite test database");
        };
        let c = rusqlite::Connection::open(path).expect("open the test database");
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c
    }

    /// Writes an appointment row directly, bypassing the calendar.
    pub async fn insert_raw(&self, a: RawAppointment) {
        let end = a.start + Duration::minutes(a.minutes);
        match &self.database {
            TestDb::Postgres(_) => {
                self.pg()
                    .await
                    .execute(
                        "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at, ends_at,
                            block_start, block_end, status, hold_expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $5, $6, $7, $8)",
                        &[&a.id, &a.doctor, &a.patient, &a.visit_type, &a.start, &end, &a.status, &a.hold_expires_at],
                    )
                    .await
                    .unwrap();
            }
            TestDb::Sqlite(_) => {
                self.lite()
                    .execute(
                        "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at, ends_at,
                            block_start, block_end, status, hold_expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6, ?7, ?8)",
                        rusqlite::params![
                            a.id.to_string(),
                            a.doctor.to_string(),
                            a.patient.to_string(),
                            a.visit_type.to_string(),
                            a.start.timestamp_micros(),
                            end.timestamp_micros(),
                            a.status,
                            a.hold_expires_at.map(|t| t.timestamp_micros()),
                        ],
                    )
                    .unwrap();
            }
        }
    }

    /// An appointment's status and cancel reason, read directly.
    pub async fn raw_status(&self, id: Uuid) -> (String, Option<String>) {
        match &self.database {
            TestDb::Postgres(_) => {
                let row = self
                    .pg()
                    .await
                    .query_one(
                        "SELECT status, cancel_reason FROM appointments WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .unwrap();
                (row.get(0), row.get(1))
            }
            TestDb::Sqlite(_) => self
                .lite()
                .query_row(
                    "SELECT status, cancel_reason FROM appointments WHERE id = ?1",
                    [id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap(),
        }
    }

    pub async fn clinic(&self, tz: &str, cutoff_minutes: i32) -> ClinicId {
        self.state
            .store
            .create_clinic(ClinicFields {
                name: "Test Clinic".into(),
                address: "1 Test Road".into(),
                latitude: None,
                longitude: None,
                time_zone: tz.into(),
                cancellation_cutoff_minutes: cutoff_minutes,
                booking_horizon_days: 730,
            })
            .await
            .expect("clinic")
            .id
    }

    /// A doctor with a 30-minute visit type, open every day `from`–`to` local.
    pub async fn doctor_in(&self, clinic: ClinicId, name: &str, from: &str, to: &str) -> Fixture {
        self.doctor_with(clinic, name, "general practice", from, to)
            .await
    }

    /// [`TestApp::doctor_in`] with another specialty.
    pub async fn doctor_with(
        &self,
        clinic: ClinicId,
        name: &str,
        specialty: &str,
        from: &str,
        to: &str,
    ) -> Fixture {
        let store = &self.state.store;
        let doctor = store
            .create_doctor(
                clinic,
                DoctorFields {
                    name: name.into(),
                    specialties: vec![specialty.into()],
                    languages: vec!["en".into()],
                    active: true,
                },
            )
            .await
            .expect("doctor");
        let vt = store
            .create_visit_type(
                doctor.id,
                VisitTypeRecord {
                    id: VisitTypeId::new(),
                    doctor_id: doctor.id,
                    name: "Consultation".into(),
                    duration_minutes: 30,
                    buffer_before_minutes: 0,
                    buffer_after_minutes: 0,
                    fee_cents: 5000,
                    currency: "EUR".into(),
                    is_default: true,
                },
            )
            .await
            .expect("visit type");
        for weekday in 1..=7 {
            store
                .create_rule(
                    doctor.id,
                    RuleRecord {
                        id: Uuid::now_v7(),
                        weekday,
                        start_time: NaiveTime::parse_from_str(from, "%H:%M").unwrap(),
                        end_time: NaiveTime::parse_from_str(to, "%H:%M").unwrap(),
                        valid_from: None,
                        valid_until: None,
                    },
                )
                .await
                .expect("rule");
        }
        Fixture {
            clinic,
            doctor,
            visit_type: vt.id,
        }
    }

    /// UTC clinic, cut-off 24 h, one doctor open 08:00–18:00 every day.
    /// A UTC clinic with one doctor, open 08:00–18:00 every day. Patients
    /// may change a visit until an hour before it, so a visit booked for
    /// tomorrow stays changeable whatever the time of day the tests run
    /// (with a 24-hour cut-off, tomorrow at 09:30 is past it from 09:30 on).
    pub async fn fixture(&self) -> Fixture {
        let clinic = self.clinic("UTC", 60).await;
        self.doctor_in(clinic, "Dr. Test", "08:00", "18:00").await
    }

    pub async fn user(
        &self,
        role: Role,
        doctor: Option<&Doctor>,
        clinic: Option<ClinicId>,
    ) -> (UserRecord, String) {
        let u = self
            .state
            .store
            .create_user(NewUser {
                email: Email::parse(&format!("{}@test.example", Uuid::new_v4().simple())).unwrap(),
                name: "Someone".into(),
                role,
                doctor_id: doctor.map(|d| d.id),
                clinic_id: clinic.or(doctor.map(|d| d.clinic_id)),
                password_hash: shared_hash().to_string(),
            })
            .await
            .expect("user");
        let token = self.state.keys.issue(&u).expect("token");
        (u, token)
    }

    /// The served OpenAPI document (must answer 200).
    pub async fn openapi(&self) -> serde_json::Value {
        let r = self
            .client
            .get(self.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        expect(r, 200).await
    }

    pub async fn patient(&self) -> (UserRecord, String) {
        self.user(Role::Patient, None, None).await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": name}))
            .send()
            .await
            .unwrap()
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url("/api/v1/auth/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn slots(
        &self,
        doctor: impl std::fmt::Display,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let r = self
            .client
            .get(self.url(&format!("/api/v1/doctors/{doctor}/slots")))
            .query(&[("from", from.to_rfc3339()), ("to", to.to_rfc3339())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "slots: {}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        v["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["start"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    pub async fn book(
        &self,
        token: &str,
        doctor: impl std::fmt::Display,
        start: DateTime<Utc>,
        key: Option<&str>,
    ) -> Response {
        let mut req = self
            .client
            .post(self.url("/api/v1/appointments"))
            .bearer_auth(token)
            .json(&json!({"doctor_id": doctor.to_string(), "start": start.to_rfc3339()}));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.unwrap()
    }

    pub async fn hold(
        &self,
        token: &str,
        doctor: impl std::fmt::Display,
        start: DateTime<Utc>,
    ) -> Response {
        self.client
            .post(self.url("/api/v1/holds"))
            .bearer_auth(token)
            .json(&json!({"doctor_id": doctor.to_string(), "start": start.to_rfc3339()}))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Rows of the doctor's active appointments in the database.
    pub async fn active_rows(&self, doctor: impl std::fmt::Display) -> i64 {
        let q = "SELECT count(*) FROM appointments WHERE doctor_id = {} AND status IN ('held','booked')";
        match &self.database {
            TestDb::Postgres(_) => self
                .pg()
                .await
                .query_one(&q.replace("{}", "$1::text::uuid"), &[&doctor.to_string()])
                .await
                .unwrap()
                .get(0),
            TestDb::Sqlite(_) => self
                .lite()
                .query_row(&q.replace("{}", "?1"), [doctor.to_string()], |r| r.get(0))
                .unwrap(),
        }
    }
}

/// Tomorrow (UTC) at `hh:mm`.
pub fn tomorrow_at(h: u32, m: u32) -> DateTime<Utc> {
    let d = (Utc::now() + Duration::days(1)).date_naive();
    d.and_hms_opt(h, m, 0).unwrap().and_utc()
}

/// Reads a JSON body, asserting the status first.
pub async fn expect(r: Response, status: u16) -> Value {
    let got = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    assert_eq!(got, StatusCode::from_u16(status).unwrap(), "body: {body}");
    if got.is_client_error() || got.is_server_error() {
        assert_eq!(
            ct.as_deref(),
            Some("application/problem+json"),
            "errors are problem+json: {body}"
        );
    }
    if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    }
}

pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Options for a node of a two-node cluster sharing `db` and Redis.
pub fn cluster_node(db: Option<TestDb>, redis_url: &str, prefix: &str) -> Options {
    Options {
        backend: Some(Kind::Postgres),
        database: db,
        redis: Some((redis_url.to_string(), prefix.to_string())),
        ..Default::default()
    }
}

/// A WebSocket watcher speaking the live protocol.
pub struct Ws {
    framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    pub msgpack: bool,
}

impl TestApp {
    /// Opens `/api/v1/live` (JSON unless `msgpack`), optionally signed in.
    pub async fn ws_connect(&self, token: Option<&str>, msgpack: bool) -> Ws {
        let mut url = self.url("/api/v1/live").replace("http://", "ws://");
        if let Some(t) = token {
            url = format!("{url}?access_token={t}");
        }
        let proto = if msgpack {
            "docspot.msgpack.v1"
        } else {
            "docspot.json.v1"
        };
        let (resp, framed) = awc::Client::new()
            .ws(url)
            .protocols([proto])
            .max_frame_size(1 << 22)
            .connect()
            .await
            .expect("websocket upgrade");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(proto),
            "the server speaks the requested subprotocol"
        );
        Ws { framed, msgpack }
    }
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        use futures::SinkExt;
        let msg = if self.msgpack {
            let m: docspot::live::protocol::ClientMsg = serde_json::from_value(v).unwrap();
            awc::ws::Message::Binary(rmp_serde::to_vec_named(&m).unwrap().into())
        } else {
            awc::ws::Message::Text(v.to_string().into())
        };
        self.framed.send(msg).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: String) {
        use futures::SinkExt;
        self.framed
            .send(awc::ws::Message::Text(text.into()))
            .await
            .unwrap();
    }

    /// The next protocol message as JSON (MessagePack is converted), within
    /// `secs` seconds.
    pub async fn recv_within(&mut self, secs: u64) -> Option<Value> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .ok()??;
            match next.unwrap() {
                awc::ws::Frame::Text(t) => return Some(serde_json::from_slice(&t).unwrap()),
                awc::ws::Frame::Binary(b) => {
                    assert!(self.msgpack, "binary frame on a JSON connection");
                    let m: docspot::live::protocol::ServerMsg = rmp_serde::from_slice(&b).unwrap();
                    return Some(serde_json::to_value(m).unwrap());
                }
                awc::ws::Frame::Ping(p) => {
                    use futures::SinkExt;
                    self.framed.send(awc::ws::Message::Pong(p)).await.unwrap();
                }
                awc::ws::Frame::Close(_) => return None,
                _ => {}
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(10).await.expect("a message within 10 s")
    }

    /// Subscribes and returns the snapshot.
    pub async fn subscribe(&mut self, body: Value) -> Value {
        self.send(body).await;
        let m = self.recv().await;
        assert_eq!(m["type"], "snapshot", "{m}");
        m
    }
}
