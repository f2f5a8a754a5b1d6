//! How DocSpot reaches PostgreSQL: the database URL says everything, as it
//! does for libpq.
//!
//! * `sslmode=require`: TLS (rustls, the server's ring provider), and the
//!   server's certificate is verified — against the public web roots, or
//!   against the CA in `sslrootcert=/path/ca.pem` (a private or cloud CA).
//!   The name checked is the URL's host. There is no "encrypt but trust
//!   anyone": that protects against nobody on an active network.
//! * `sslmode=disable`, `prefer` or no `sslmode`: plain TCP (a database on
//!   the same host or a private link). `prefer` would mean TLS without a
//!   verified certificate, which DocSpot does not do, so it is read as
//!   `disable`.

use std::{path::PathBuf, str::FromStr, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};
use tokio_postgres::{
    Client, Config, NoTls,
    config::SslMode,
    tls::{MakeTlsConnect, TlsConnect},
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A parsed database URL and the TLS it asks for.
#[derive(Clone)]
pub(crate) struct Target {
    /// What tokio-postgres connects to.
    pub config: Config,
    /// `Some` for `sslmode=require`.
    pub tls: Option<MakeRustlsConnect>,
}

/// Why a database URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Not a URL tokio-postgres understands.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// `sslrootcert` names a file that holds no usable certificate.
    #[error("sslrootcert {path}: {reason}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl Target {
    /// Parses `url` (`postgres://…`), taking out `sslrootcert`, which
    /// tokio-postgres does not know.
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let (url, root_cert) = take_root_cert(url)?;
        let mut config = Config::from_str(&url).map_err(|e| ConnectError::Url(describe(&e)))?;
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(MakeRustlsConnect::new(client_config(root_cert)?)),
            mode => {
                if mode == SslMode::Prefer && url.contains("sslmode=prefer") {
                    tracing::warn!(
                        "database_url: sslmode=prefer means plain TCP here (DocSpot does no \
                         unverified TLS); use sslmode=require for TLS"
                    );
                }
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Self { config, tls })
    }

    /// One connection, its I/O driven by a spawned task. The error names
    /// its causes too ("error performing TLS handshake" alone does not say
    /// that the certificate was not trusted).
    pub async fn connect(&self) -> Result<Client, String> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()).await.and_then(spawned),
            None => self.config.connect(NoTls).await.and_then(spawned),
        };
        client.map_err(|e| describe(&e))
    }

    /// A deadpool manager for this target.
    pub fn manager(&self, mc: deadpool_postgres::ManagerConfig) -> deadpool_postgres::Manager {
        match &self.tls {
            Some(tls) => {
                deadpool_postgres::Manager::from_config(self.config.clone(), tls.clone(), mc)
            }
            None => deadpool_postgres::Manager::from_config(self.config.clone(), NoTls, mc),
        }
    }
}

fn spawned<S, T>(
    (client, conn): (Client, tokio_postgres::Connection<S, T>),
) -> Result<Client, tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// An error with its causes, `e: cause: cause…`: tokio-postgres says only
/// "db error" or "error performing TLS handshake" and keeps the reason in
/// its source. Of PostgreSQL's own error only the severity, SQLSTATE and
/// message are kept: its DETAIL can quote a whole row ("Failing row
/// contains …"), which has no place in a log.
pub(super) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        if let Some(db) = cause.downcast_ref::<tokio_postgres::error::DbError>() {
            text.push_str(&format!(
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            ));
            break;
        }
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Takes `sslrootcert=…` out of the query string and reads libpq's
/// `sslmode=verify-ca` / `verify-full` as `require` (which verifies the
/// certificate and the host name already). The rest of the URL is kept byte
/// for byte: re-encoding it would turn `%20` into `+`, which tokio-postgres
/// reads literally.
fn take_root_cert(url: &str) -> Result<(String, Option<PathBuf>), ConnectError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslrootcert" => {
                let path = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| {
                        ConnectError::Url(format!("sslrootcert is not valid UTF-8: {value}"))
                    })?;
                root = Some(PathBuf::from(path.into_owned()));
            }
            "sslmode" if value == "verify-ca" || value == "verify-full" => {
                kept.push("sslmode=require".to_string());
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, root))
}

/// rustls client settings: ring, and the roots to trust.
fn client_config(root_cert: Option<PathBuf>) -> Result<ClientConfig, ConnectError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let bad = |reason: String| ConnectError::RootCert {
                path: path.clone(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Url(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

// Keep the trait bounds honest: the connector must work for deadpool's
// sockets.
const _: fn() = || {
    fn assert_make<T: MakeTlsConnect<tokio_postgres::Socket>>()
    where
        T::TlsConnect: TlsConnect<tokio_postgres::Socket>,
    {
    }
    assert_make::<MakeRustlsConnect>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_the_url_is_kept_byte_for_byte_and_verify_modes_mean_require() {
        let (url, root) = take_root_cert(
            "postgres://u@h/d?options=-c%20statement_timeout%3D5s&sslrootcert=/ca%20dir/ca.pem&sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(root, Some(PathBuf::from("/ca dir/ca.pem")));
        assert_eq!(
            url,
            "postgres://u@h/d?options=-c%20statement_timeout%3D5s&sslmode=require"
        );
        assert!(
            Target::parse("postgres://u@h/d?sslmode=verify-ca&sslrootcert=/x")
                .is_err_and(|e| e.to_string().contains("/x"))
        );
    }

    #[test]
    fn sslrootcert_is_taken_out_and_the_rest_kept() {
        let (url, root) =
            take_root_cert("postgres://u@db.example/docspot?sslmode=require&sslrootcert=%2Fetc%2Fca.pem&application_name=x")
                .unwrap();
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            url,
            "postgres://u@db.example/docspot?sslmode=require&application_name=x"
        );
        let (url, root) = take_root_cert("postgres://u@h/d").unwrap();
        assert_eq!((url.as_str(), root), ("postgres://u@h/d", None));
    }

    #[test]
    fn only_require_means_tls_and_prefer_means_plain() {
        for (url, tls) in [
            ("postgres://u@h/d", false),
            ("postgres://u@h/d?sslmode=disable", false),
            ("postgres://u@h/d?sslmode=prefer", false),
            ("postgres://u@h/d?sslmode=require", true),
        ] {
            let t = Target::parse(url).unwrap();
            assert_eq!(t.tls.is_some(), tls, "{url}");
            if !tls {
                assert_eq!(t.config.get_ssl_mode(), SslMode::Disable, "{url}");
            }
        }
    }

    #[test]
    fn an_unusable_root_certificate_file_is_an_error_that_names_it() {
        let e = Target::parse("postgres://u@h/d?sslmode=require&sslrootcert=/nonexistent/ca.pem")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("docspot_pgtls_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let e = Target::parse(&format!(
            "postgres://u@h/d?sslmode=require&sslrootcert={}",
            empty.display()
        ))
        .err()
        .expect("refused");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
