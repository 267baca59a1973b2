//! TLS for a listener: a certificate chain and its private key from PEM
//! files, checked when loaded, so that a wrong path or a key that does not
//! fit the certificate stops the process at start, not at the first
//! client.
//!
//! rustls with the *ring* provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`. Client certificates are not asked for: callers are
//! authenticated by their bearer tokens.
//!
//! **Rotation without a restart.** While a listener serves, the files are
//! read again every [`RELOAD_EVERY`] and at once on SIGHUP; when their bytes
//! changed and the new pair is valid, new handshakes get the new
//! certificate (open connections keep theirs). A pair that cannot serve
//! (a certificate rotated before its key, a truncated file) is logged once
//! and the current certificate stays, so a half-done rotation never takes
//! the listener down; it is tried again when either file changes.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_rustls::TlsAcceptor;

/// How often a serving listener reads its certificate files again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// A loaded TLS configuration: clone it freely (`Arc`s).
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    keys: Arc<Reloading>,
    reload_every: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.keys.cert)
            .finish_non_exhaustive()
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

/// The certificate every handshake gets, swapped whole on a reload.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The files' bytes (certificate, then key) at the last attempt, good
    /// or not: unchanged files are neither parsed nor logged again.
    last_read: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Tls {
    /// Reads a PEM certificate chain (leaf first, then intermediates) and
    /// its PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_files(cert, key)?;
        let certified = certify(cert, key, &files, &provider)?;
        warn_if_readable_by_others(key);
        let keys = Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider: provider.clone(),
            current: ArcSwap::from_pointee(certified),
            last_read: Mutex::new(files),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(keys.clone());
        // Offered in this order: HTTP/2 where the client speaks it.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            keys,
            reload_every: RELOAD_EVERY,
        })
    }

    /// Rereads the files this often instead of [`RELOAD_EVERY`] (tests).
    #[must_use]
    pub fn with_reload_every(mut self, every: Duration) -> Self {
        self.reload_every = every;
        self
    }

    /// Reads the files again: `Ok(true)` when they changed and new
    /// handshakes now get the new certificate, `Ok(false)` when they are
    /// the bytes last tried, `Err` when the changed files cannot serve
    /// (the current certificate stays).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let keys = &*self.keys;
        let files = read_files(&keys.cert, &keys.key)?;
        let mut last = keys.last_read.lock();
        if *last == files {
            return Ok(false);
        }
        let certified = certify(&keys.cert, &keys.key, &files, &keys.provider);
        *last = files;
        drop(last);
        keys.current.store(Arc::new(certified?));
        Ok(true)
    }

    /// Reloads every `reload_every` and on SIGHUP, forever: spawned by
    /// `serve` beside the accept loop and aborted with it.
    pub(crate) async fn watch(self) {
        let mut tick = tokio::time::interval(self.reload_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still reread on a timer");
                None
            }
        };
        loop {
            #[cfg(unix)]
            {
                let hup = async {
                    match hangup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    () = hup => tracing::info!("SIGHUP: rereading the TLS certificate"),
                }
            }
            #[cfg(not(unix))]
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    cert = %self.keys.cert.display(),
                    "TLS certificate reloaded; new connections get it"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "the changed TLS files cannot serve; keeping the current certificate"
                ),
            }
        }
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

fn read_files(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert_bytes = std::fs::read(cert).map_err(|e| TlsError::Cert {
        path: cert.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
    })?;
    let key_bytes = std::fs::read(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
    })?;
    Ok((cert_bytes, key_bytes))
}

/// The chain and key parsed, and checked to fit each other.
fn certify(
    cert: &Path,
    key: &Path,
    (cert_bytes, key_bytes): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
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
    /// --tls-key. Without both, the listener speaks plain HTTP. Both files
    /// are reread every 10 s and on SIGHUP: a rotated pair reaches new
    /// connections without a restart.
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
