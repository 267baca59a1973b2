//! TLS for a listener: a certificate chain and its private key from PEM
//! files, checked when loaded, so that a wrong path or a key that does not
//! fit the certificate stops the process at start, not at the first
//! client.
//!
//! rustls with the *ring* provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`. Client certificates are not asked for: callers are
//! authenticated by their bearer tokens. The files are read once; rotating
//! a certificate takes a restart (the gateway drains in-flight requests on
//! SIGTERM).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A loaded TLS configuration: clone it freely (one `Arc`).
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate chain {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks, leaf first)", path.display())]
    NoCert { path: PathBuf },
    #[error(
        "cannot read the TLS private key {} (expected one PEM PKCS#8, PKCS#1 or SEC1 key): {source}",
        path.display()
    )]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS key {} cannot serve the certificate {}: {source}", key.display(), cert.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("--tls-cert and --tls-key go together: {0} was given alone")]
    Half(&'static str),
}

impl Tls {
    /// Reads a PEM certificate chain (leaf first, then intermediates) and
    /// its PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Cert {
                path: cert.to_owned(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert {
                path: cert.to_owned(),
            });
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
            path: key.to_owned(),
            source,
        })?;
        warn_if_readable_by_others(key);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
            .map_err(|source| TlsError::Config {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            })?;
        // Offered in this order: HTTP/2 where the client speaks it.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// A private key that other users may read is worth a line in the log,
/// not a refusal: containers often mount secrets 0644.
fn warn_if_readable_by_others(key: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(key) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    key = %key.display(),
                    "the TLS private key is readable by group or others; chmod 600 it"
                );
            }
        }
    }
}

/// `--tls-cert` and `--tls-key` for a binary's command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (leaf first). Needs
    /// --tls-key. Without both, the listener speaks plain HTTP.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// `None` when neither flag is given.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Tls::load(cert, key).map(Some),
            (Some(_), None) => Err(TlsError::Half("--tls-cert")),
            (None, Some(_)) => Err(TlsError::Half("--tls-key")),
        }
    }
}
