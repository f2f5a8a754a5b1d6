//! Builds the application from settings and a bound listener, and runs it
//! until a shutdown future resolves. Tests bind port 0 and read the port.

use std::{future::Future, net::TcpListener, sync::Arc, time::Duration};

use actix::Actor;
use actix_web::{App, HttpRequest, HttpServer, dev::Server, web};
use docspot_actors::{
    CalendarDirectory,
    events::{CalendarChange, ChangeSink},
    store::{CalendarStore, StoreError},
};
use secrecy::ExposeSecret;
use tracing_actix_web::TracingLogger;

use crate::{
    audit::{self, AuditLog},
    auth::TokenKeys,
    config::{Backend, Settings},
    demo,
    error::{self, ApiError},
    live::{bus::Bus, hub::LiveHub, session::SessionLimits},
    routes::{self, AppState},
    store::{
        Store,
        postgres::{self, PgStore},
        sqlite::SqliteStore,
    },
    suggest::{self, Suggester},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding or serving failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be prepared.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The field encryption keys are missing or unusable.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// A built, not yet running, DocSpot server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

/// Opens the store the settings name: for PostgreSQL creates the database if
/// asked and applies migrations if asked; for SQLite opens (and migrates) the
/// file.
pub async fn open_store(
    settings: &Settings,
    migrate: bool,
) -> Result<Arc<dyn Store>, StartupError> {
    let backend = settings.backend().map_err(StartupError::Config)?;
    // The embedded mode keeps generated field keys beside the database when
    // none are configured; PostgreSQL refuses to start without keys.
    let key_file = match &backend {
        Backend::Sqlite(db) => Some(db.with_extension("keys")),
        Backend::Postgres(_) => None,
    };
    let cipher = Arc::new(crate::crypto::FieldCipher::from_settings(
        &settings.security,
        key_file.as_deref(),
    )?);
    match backend {
        Backend::Postgres(url) => {
            if settings.database.create_if_missing {
                postgres::create_database_if_missing(&url).await?;
            }
            if migrate {
                let n = postgres::migrate(&url).await?;
                if n > 0 {
                    tracing::info!(applied = n, "migrations applied");
                }
            }
            let store = PgStore::connect(
                &url,
                settings.database.pool_size,
                settings.database.commit_lanes,
                cipher,
            )?;
            // Accounts from before encryption at rest: encrypt, drop plaintext.
            store.encrypt_legacy_users(500, None).await?;
            // Cancellation reasons from before V7: seal, blank plaintext.
            store.seal_legacy_cancel_reasons(500).await?;
            Ok(Arc::new(store))
        }
        Backend::Sqlite(path) => {
            // Opening runs migrations: an embedded store is always current.
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, cipher))
                .await
                .map_err(|e| StoreError(e.to_string()))??;
            Ok(Arc::new(store))
        }
    }
}

/// Seeds the demo clinic into an empty store when the settings ask for it
/// (by default: embedded store only).
async fn seed_demo_if_wanted(settings: &Settings, store: &dyn Store) -> Result<(), StartupError> {
    let embedded = matches!(settings.backend(), Ok(Backend::Sqlite(_)));
    if !settings.demo.seed_on_start.unwrap_or(embedded) || !store.clinics().await?.is_empty() {
        return Ok(());
    }
    let report = demo::seed(store, settings.demo.past_appointments)
        .await
        .map_err(|e| StoreError(e.to_string()))?;
    tracing::info!(
        doctors = report.doctors,
        patients = report.patients,
        past = report.past_appointments,
        "seeded the demo clinic; sign in as patient1@demo.docspot.test / {}",
        demo::DEMO_PASSWORD
    );
    Ok(())
}

impl Application {
    /// Binds `settings.listen` and builds the server.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(&settings.listen)?;
        Self::from_listener(settings, listener).await
    }

    /// Builds the server on an already bound listener. Must run inside an
    /// actix `System` (calendar actors get their own arbiters).
    pub async fn from_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let port = listener.local_addr()?.port();
        // Bad TLS files or limits stop start-up before anything is opened.
        let tls = crate::tls::server_config(
            settings.http.tls_cert.as_deref(),
            settings.http.tls_key.as_deref(),
        )
        .map_err(|e| StartupError::Config(e.to_string()))?;
        let rate_limits = Arc::new(
            crate::ratelimit::RateLimits::from_settings(&settings.rate_limit)
                .map_err(|e| StartupError::Config(e.to_string()))?,
        );
        rate_limits.spawn_cleanup();
        let rate_limits = web::Data::from(rate_limits);
        let store = open_store(&settings, settings.database.migrate_on_start).await?;
        seed_demo_if_wanted(&settings, store.as_ref()).await?;
        // Holds left behind by a crashed process must not block their slots.
        let swept = store.sweep_expired_holds().await?;
        if swept > 0 {
            tracing::info!(swept, "cancelled holds that lapsed while no server ran");
        }
        let calendar_store: Arc<dyn CalendarStore> = store.clone();
        let calendar_config = settings.calendar_config();
        let threads = Settings::threads(settings.calendar.threads);
        let timeout = Duration::from_millis(settings.calendar.request_timeout_ms);
        // The calendars publish into the bus; the bus needs the calendars
        // (remote changes update them): build the bus around a slot for the
        // hub, then the calendars, then the hub.
        let node = uuid::Uuid::new_v4().to_string();
        let (bus, calendars) = if settings.redis_url.expose_secret().trim().is_empty() {
            let bus = Bus::local();
            let sink: Arc<dyn ChangeSink> = bus.clone();
            let calendars = Arc::new(CalendarDirectory::new(
                calendar_store,
                sink,
                calendar_config,
                threads,
                timeout,
            ));
            (bus, calendars)
        } else {
            let slot = Arc::new(SinkSlot::default());
            let sink: Arc<dyn ChangeSink> = slot.clone();
            let calendars = Arc::new(CalendarDirectory::new(
                calendar_store,
                sink,
                calendar_config,
                threads,
                timeout,
            ));
            let bus = Bus::redis(
                settings.redis_url.expose_secret().trim(),
                settings.redis_ca_file.as_deref(),
                settings.live.channel_prefix.clone(),
                node.clone(),
                calendars.clone(),
            )
            .map_err(|e| StartupError::Config(format!("redis_url: {e}")))?;
            slot.fill(bus.clone());
            (bus, calendars)
        };
        let suggester = Arc::new(Suggester::load(&settings.ml.model_path));
        spawn_retraining(&settings, store.clone(), suggester.clone());
        let hub = LiveHub::new(
            node,
            calendars.clone(),
            store.clone(),
            settings.live.replay_buffer,
        )
        .start();
        bus.attach(hub.clone());
        let limits = SessionLimits {
            heartbeat: Duration::from_secs(settings.live.heartbeat_secs.max(1)),
            idle_timeout: Duration::from_secs(settings.live.idle_timeout_secs.max(2)),
            max_frame: settings.live.max_frame_bytes.max(256),
            max_subscriptions: settings.live.max_subscriptions.max(1),
            queue: settings.live.session_queue.max(2),
            max_range_days: settings.live.max_range_days.max(1),
        };
        // The embedded mode keeps its signing key beside the database file.
        let key_file = match settings.backend() {
            Ok(Backend::Sqlite(db)) => Some(db.with_extension("jwt-key")),
            _ => None,
        };
        let keys = Arc::new(
            TokenKeys::from_settings(&settings.auth, key_file.as_deref())
                .map_err(|e| StartupError::Config(e.to_string()))?,
        );
        let state = web::Data::new(AppState {
            store,
            calendars,
            keys: keys.clone(),
            settings: settings.clone(),
            bus,
            suggester: suggester.clone(),
        });
        // The store opened (and migrated) the database: the audit chain's
        // tables exist.
        let audit_log = web::Data::new(AuditLog::start(
            audit::open(&settings.backend().map_err(StartupError::Config)?)
                .map_err(|e| StoreError(e.to_string()))?,
        ));
        let hub = web::Data::new(hub);
        let limits = web::Data::new(limits);
        let keys = web::Data::new(keys);
        let max_body = settings.http.max_body_bytes;
        let app_state = state.clone();
        let cors_origins = settings.security.cors_origins.clone();
        let hsts = tls.is_some();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&cors_origins))
                .wrap(security_headers(hsts))
                .wrap(TracingLogger::<crate::telemetry::RedactedRootSpan>::new())
                .app_data(app_state.clone())
                .app_data(audit_log.clone())
                .app_data(keys.clone())
                .app_data(hub.clone())
                .app_data(limits.clone())
                .app_data(rate_limits.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(error::json_error),
                )
                .app_data(
                    web::FormConfig::default()
                        .limit(max_body)
                        .error_handler(error::form_error),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .configure(crate::web::configure)
                .configure(routes::configure)
                .default_service(web::to(not_found))
        })
        .workers(Settings::threads(settings.http.workers))
        .max_connections(settings.http.max_connections_per_worker.max(1))
        .disable_signals();
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shared state (tests use it to reach the store).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + 'static,
    ) -> std::io::Result<()> {
        let handle = self.server.handle();
        actix_web::rt::spawn(async move {
            shutdown.await;
            handle.stop(true).await;
        });
        self.server.await
    }
}

/// No route: 404, or 405 with `Allow` when the path exists with other
/// methods (RFC 9110 §15.5.6).
async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    use actix_web::{
        ResponseError,
        http::{StatusCode, header},
    };
    let Some(pattern) = req.resource_map().match_pattern(req.path()) else {
        return ApiError::not_found(
            "not_found",
            format!("no route for {} {}", req.method(), req.path()),
        )
        .error_response();
    };
    let allow = routes::apidoc::documented_methods(&pattern).unwrap_or("GET");
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {}; use {allow}",
            req.path(),
            req.method()
        ),
    )
    .error_response();
    if let Ok(v) = header::HeaderValue::from_str(allow) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

/// Breaks the calendars ↔ Redis bus construction cycle: the calendars get
/// this sink first, the bus is put in once it exists (before any calendar
/// can have committed anything).
#[derive(Default)]
struct SinkSlot(std::sync::OnceLock<Arc<Bus>>);

impl SinkSlot {
    fn fill(&self, bus: Arc<Bus>) {
        let _ = self.0.set(bus);
    }
}

impl ChangeSink for SinkSlot {
    fn publish(&self, change: CalendarChange) {
        if let Some(b) = self.0.get() {
            b.publish(change);
        }
    }

    fn relay(&self, change: CalendarChange) {
        if let Some(b) = self.0.get() {
            b.relay(change);
        }
    }
}

/// Retrains the suggestion model every `ml.retrain_interval_secs` (the first
/// time after one interval), keeping the old model if the new one validates
/// worse.
fn spawn_retraining(settings: &Settings, store: Arc<dyn Store>, suggester: Arc<Suggester>) {
    let every = settings.ml.retrain_interval_secs;
    if every == 0 {
        return;
    }
    let (max_rows, min_rows) = (settings.ml.max_training_rows, settings.ml.min_training_rows);
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await; // the first tick is immediate: skip it
        loop {
            tick.tick().await;
            match suggest::train(store.as_ref(), &suggester, max_rows, min_rows).await {
                Ok(r) => {
                    tracing::info!(rows = r.rows, installed = r.installed, candidate = ?r.candidate, current = ?r.current, "suggestion model retrained")
                }
                Err(e) => tracing::warn!(error = %e, "suggestion model not retrained"),
            }
        }
    });
}

/// Headers on every response: no sniffing, no framing, no referrer, nothing
/// cached (responses carry patient data), and a content security policy that
/// allows nothing (the API serves no pages). Over TLS also HSTS, so browsers
/// keep to HTTPS; never over plain HTTP, where it would be meaningless (and
/// would wrongly pin a deployment behind a proxy that does not terminate TLS).
fn security_headers(hsts: bool) -> actix_web::middleware::DefaultHeaders {
    let headers = actix_web::middleware::DefaultHeaders::new();
    let headers = if hsts {
        headers.add(("Strict-Transport-Security", crate::tls::HSTS))
    } else {
        headers
    };
    headers
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add(("Cache-Control", "no-store"))
}

/// Cross-origin access only for the configured origins.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderName::from_static("idempotency-key"),
        ])
        .max_age(3600);
    for o in origins {
        c = c.allowed_origin(o);
    }
    c
}
