//! Layered configuration: `config/base.toml`, an optional environment file,
//! then `DOCSPOT_…` variables. See `config/base.toml` for every setting.

use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, compiled in so the binary runs from any directory.
const BASE: &str = include_str!("../config/base.toml");

/// All settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: String,
    /// PostgreSQL URL (a secret: it may hold a password).
    pub database_url: SecretString,
    /// Redis URL; empty for single-node mode (a secret: it may hold a
    /// password).
    pub redis_url: SecretString,
    /// PEM CA certificate(s) to verify a `rediss://` server against, instead
    /// of the system's trust store.
    #[serde(default)]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Log filter.
    pub log: String,
    /// Connection pool and migrations.
    pub database: DatabaseSettings,
    /// HTTP server.
    pub http: HttpSettings,
    /// Tokens.
    pub auth: AuthSettings,
    /// Calendar actors.
    pub calendar: CalendarSettings,
    /// Request limits.
    pub limits: LimitSettings,
    /// Demo data.
    pub demo: DemoSettings,
    /// Live push.
    pub live: LiveSettings,
    /// Suggestions.
    pub ml: MlSettings,
    /// Browser and abuse protections.
    pub security: SecuritySettings,
    /// Request rate limits and failed-login lock-outs.
    pub rate_limit: crate::ratelimit::RateLimitSettings,
}

/// `[security]`
#[derive(Debug, Clone, Deserialize)]
pub struct SecuritySettings {
    /// CORS allow-list.
    pub cors_origins: Vec<String>,
    /// Concurrent holds per patient.
    pub max_holds_per_patient: usize,
    /// Field encryption keys: key id → base64 of 32 random bytes.
    #[serde(default)]
    pub encryption_keys: std::collections::BTreeMap<String, SecretString>,
    /// The key id new ciphertexts are sealed under.
    #[serde(default)]
    pub active_encryption_key: String,
    /// HMAC key (base64, ≥ 32 bytes) of the e-mail blind index.
    #[serde(default = "empty_secret")]
    pub blind_index_key: SecretString,
}

fn empty_secret() -> SecretString {
    String::new().into()
}

/// `[ml]`
#[derive(Debug, Clone, Deserialize)]
pub struct MlSettings {
    /// Model file.
    pub model_path: std::path::PathBuf,
    /// Retrain interval in seconds (0: never).
    pub retrain_interval_secs: u64,
    /// Most rows to train on.
    pub max_training_rows: i64,
    /// Fewest rows worth training on.
    pub min_training_rows: usize,
}

/// `[live]`
#[derive(Debug, Clone, Deserialize)]
pub struct LiveSettings {
    /// Redis channel prefix.
    pub channel_prefix: String,
    /// Deltas kept per topic for resumes.
    pub replay_buffer: usize,
    /// Ping interval.
    pub heartbeat_secs: u64,
    /// Idle timeout.
    pub idle_timeout_secs: u64,
    /// Largest client frame.
    pub max_frame_bytes: usize,
    /// Topics per connection.
    pub max_subscriptions: usize,
    /// Outgoing queue per connection.
    pub session_queue: usize,
    /// Longest doctor: range, in days.
    pub max_range_days: i64,
}

/// `[demo]`
#[derive(Debug, Clone, Deserialize)]
pub struct DemoSettings {
    /// Seed the demo clinic into an empty store at start-up; `None`: only
    /// for the embedded store.
    pub seed_on_start: Option<bool>,
    /// Past appointments to generate.
    pub past_appointments: usize,
}

/// Which storage backend a database URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite(std::path::PathBuf),
    /// PostgreSQL server (the URL itself).
    Postgres(String),
}

impl Backend {
    /// Parses `sqlite://relative/path`, `sqlite:///absolute/path` or a
    /// `postgres://` / `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err("sqlite URL names no file (e.g. sqlite://data/docspot.db)".into());
            }
            return Ok(Backend::Sqlite(rest.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(url.to_string()));
        }
        Err("database_url must start with sqlite:// or postgres://".into())
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// Connections in the pool.
    pub pool_size: usize,
    /// PostgreSQL: group-commit transactions in flight at once (each takes
    /// the waiting batches of many doctors). See `config/base.toml`.
    pub commit_lanes: usize,
    /// Create the database if missing.
    pub create_if_missing: bool,
    /// Apply migrations when serving.
    pub migrate_on_start: bool,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Largest JSON or form body.
    pub max_body_bytes: usize,
    /// Most open connections per worker; beyond it new ones wait in the
    /// listen backlog. Live watchers hold a connection each.
    pub max_connections_per_worker: usize,
    /// PEM certificate chain for built-in HTTPS (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for built-in HTTPS (with `tls_cert`).
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// HMAC key for access tokens; empty for a random per-process key.
    pub jwt_secret: SecretString,
    /// Key id of `jwt_secret` in token headers.
    pub jwt_kid: String,
    /// More keys (rotation): each `{ kid, secret }`.
    #[serde(default)]
    pub jwt_keys: Vec<JwtKey>,
    /// The key that signs new tokens (empty: `jwt_kid`).
    #[serde(default)]
    pub active_kid: String,
    /// Token issuer.
    pub issuer: String,
    /// Access token lifetime in seconds.
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_token_ttl_secs: u64,
}

/// One token signing key of `auth.jwt_keys`.
#[derive(Debug, Clone, Deserialize)]
pub struct JwtKey {
    /// Key id, written in the header of tokens it signs.
    pub kid: String,
    /// HMAC secret (never logged).
    pub secret: SecretString,
}

/// `[calendar]`
#[derive(Debug, Clone, Deserialize)]
pub struct CalendarSettings {
    /// Hold lifetime.
    pub hold_ttl_secs: u64,
    /// Idle actors stop after this long.
    pub idle_timeout_secs: u64,
    /// Re-read interval.
    pub refresh_interval_secs: u64,
    /// Largest group commit.
    pub batch_max: usize,
    /// Minimum notice for a booking, in minutes.
    pub min_notice_minutes: i64,
    /// Actor threads (0: one per core).
    pub threads: usize,
    /// Longest wait for a calendar answer.
    pub request_timeout_ms: u64,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    /// Longest slot query range, in days.
    pub max_slot_query_days: i64,
}

impl Settings {
    /// Loads the layers from `config/` under the working directory (when
    /// present) and the process environment.
    pub fn load() -> Result<Self, config::ConfigError> {
        let dir = std::env::var("DOCSPOT_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        let mut builder = Config::builder().add_source(File::from_str(BASE, FileFormat::Toml));
        if let Ok(env) = std::env::var("DOCSPOT_ENV") {
            builder = builder.add_source(File::with_name(&format!("{dir}/{env}")).required(true));
        }
        builder
            .add_source(
                Environment::with_prefix("DOCSPOT")
                    .prefix_separator("_")
                    .separator("__"),
            )
            .build()?
            .try_deserialize()
    }

    /// The compiled-in defaults alone, ignoring files and environment.
    pub fn defaults() -> Result<Self, config::ConfigError> {
        Config::builder()
            .add_source(File::from_str(BASE, FileFormat::Toml))
            .build()?
            .try_deserialize()
    }

    /// The database URL, for the one place that connects.
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    /// The storage backend the database URL names.
    pub fn backend(&self) -> Result<Backend, String> {
        Backend::parse(self.database_url())
    }

    /// Calendar actor settings in the actors crate's terms.
    pub fn calendar_config(&self) -> docspot_actors::CalendarConfig {
        let c = &self.calendar;
        docspot_actors::CalendarConfig {
            hold_ttl: Duration::from_secs(c.hold_ttl_secs.max(1)),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs.max(1)),
            refresh_interval: Duration::from_secs(c.refresh_interval_secs.max(1)),
            batch_max: c.batch_max.max(1),
            min_notice: chrono::Duration::minutes(c.min_notice_minutes.max(0)),
            ..Default::default()
        }
    }

    /// Number of threads for `n` configured (0: one per core).
    pub fn threads(n: usize) -> usize {
        if n == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_a_backend() {
        assert_eq!(
            Backend::parse("sqlite://data/x.db"),
            Ok(Backend::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            Backend::parse("sqlite:///var/x.db"),
            Ok(Backend::Sqlite("/var/x.db".into()))
        );
        assert!(matches!(
            Backend::parse("postgres://u@h/db"),
            Ok(Backend::Postgres(_))
        ));
        assert!(matches!(
            Backend::parse("postgresql://u@h/db"),
            Ok(Backend::Postgres(_))
        ));
        assert!(Backend::parse("mysql://x").is_err());
        assert!(Backend::parse("sqlite://").is_err());
    }

    #[test]
    fn defaults_load_and_are_embedded() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.backend(), Ok(Backend::Sqlite("data/docspot.db".into())));
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert!(s.demo.seed_on_start.is_none());
        // Secrets never reach logs.
        assert!(!format!("{s:?}").contains("data/docspot.db"));
    }
}
