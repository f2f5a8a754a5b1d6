//! Builds the application from settings and a bound listener, and runs it
//! until a shutdown future resolves. Tests bind port 0 and read the port.

use std::{future::Future, net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpRequest, HttpServer, dev::Server, web};
use docspot_actors::{CalendarDirectory, store::CalendarStore};
use tracing_actix_web::TracingLogger;

use crate::{
    auth::TokenKeys,
    config::Settings,
    error::{self, ApiError},
    routes::{self, AppState},
    store::{
        Store,
        postgres::{self, PgStore},
    },
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding or serving failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be prepared.
    #[error(transparent)]
    Store(#[from] docspot_actors::store::StoreError),
}

/// A built, not yet running, DocSpot server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

/// Opens the store named in the settings: creates the database if asked,
/// applies migrations if asked, connects the pool.
pub async fn open_store(settings: &Settings, migrate: bool) -> Result<Arc<PgStore>, StartupError> {
    let url = settings.database_url();
    if settings.database.create_if_missing {
        postgres::create_database_if_missing(url).await?;
    }
    if migrate {
        let n = postgres::migrate(url).await?;
        if n > 0 {
            tracing::info!(applied = n, "migrations applied");
        }
    }
    Ok(Arc::new(PgStore::connect(
        url,
        settings.database.pool_size,
    )?))
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
        let store = open_store(&settings, settings.database.migrate_on_start).await?;
        // Holds left behind by a crashed process must not block their slots.
        let swept = store.sweep_expired_holds().await?;
        if swept > 0 {
            tracing::info!(swept, "cancelled holds that lapsed while no server ran");
        }
        let calendar_store: Arc<dyn CalendarStore> = store.clone();
        let calendars = Arc::new(CalendarDirectory::new(
            calendar_store,
            settings.calendar_config(),
            Settings::threads(settings.calendar.threads),
            Duration::from_millis(settings.calendar.request_timeout_ms),
        ));
        let keys = Arc::new(TokenKeys::from_settings(&settings.auth));
        let store: Arc<dyn Store> = store;
        let state = web::Data::new(AppState {
            store,
            calendars,
            keys: keys.clone(),
            settings: settings.clone(),
        });
        let keys = web::Data::new(keys);
        let max_body = settings.http.max_body_bytes;
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .app_data(app_state.clone())
                .app_data(keys.clone())
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
                .configure(routes::configure)
                .default_service(web::to(not_found))
        })
        .workers(Settings::threads(settings.http.workers))
        .disable_signals()
        .listen(listener)?
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

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
