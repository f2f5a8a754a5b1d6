//! Built-in HTTPS: a rustls server configuration from PEM files named by
//! `http.tls_cert` and `http.tls_key`.
//!
//! rustls with the `ring` provider is used explicitly (not the process-wide
//! default provider), so it does not matter which providers other crates
//! in the build enable.

use std::{path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// The HSTS policy sent on every response served over TLS: two years,
/// subdomains included (browsers then never try plain HTTP first).
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two settings is set.
    #[error("http.tls_cert and http.tls_key must be set together")]
    Incomplete,
    /// The certificate file is missing or not PEM.
    #[error("http.tls_cert {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file is missing or not PEM.
    #[error("http.tls_key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the
    /// certificate).
    #[error("TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS configuration the settings ask for: `None` for plain HTTP.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ServerConfig>, TlsError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => load(cert, key).map(Some),
        _ => Err(TlsError::Incomplete),
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/2 when the client offers it, else HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_bad_files_are_clear_errors() {
        assert!(server_config(None, None).unwrap().is_none());
        assert!(matches!(
            server_config(Some(Path::new("/x.pem")), None),
            Err(TlsError::Incomplete)
        ));
        let e = server_config(
            Some(Path::new("/nonexistent/cert.pem")),
            Some(Path::new("/nonexistent/key.pem")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("docspot-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = server_config(Some(&junk), Some(&junk)).unwrap_err();
        assert!(matches!(e, TlsError::Cert { .. }), "{e}");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_file = dir.join("cert.pem");
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        let e = server_config(Some(&cert_file), Some(&junk)).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
        // A key that does not belong to the certificate.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other_key = dir.join("other.key");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        let e = server_config(Some(&cert_file), Some(&other_key)).unwrap_err();
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
        let key_file = dir.join("key.pem");
        std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
        assert!(
            server_config(Some(&cert_file), Some(&key_file))
                .unwrap()
                .is_some()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
