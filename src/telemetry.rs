//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` or the `log`
//! setting.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
