//! `[capture]`: how events reach ClickHouse. Embedded by the gateway as a
//! table of its TOML config; every field has a default, so `[capture]` may
//! be empty.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    shipper::{BodiesPolicy, ShipperConfig},
    store::{Store, StoreConfig, StoreError},
    wal::{FsyncPolicy, Keyring, WalConfig},
};

/// The `[capture]` table. Defaults are listed per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// ClickHouse HTTP endpoint, `http://` or `https://` (TLS with the
    /// Mozilla roots). Default `http://127.0.0.1:8123`.
    pub clickhouse_url: String,
    /// Database for all tables (created by the migrations). Default `flywheel`.
    pub database: String,
    /// Default: none (ClickHouse's `default` user).
    pub user: Option<String>,
    /// Default: none. Prefer `password_env`: a config file is often more
    /// widely readable than the process's environment.
    pub password: Option<String>,
    /// Name of the environment variable holding the password, read by
    /// [`CaptureConfig::resolve_password`] (the gateway does so when it
    /// loads its config). Not with `password`. Default: none.
    pub password_env: Option<String>,
    /// Directory of the write-ahead log. Default `/var/tmp/flywheel/wal`.
    pub wal_dir: PathBuf,
    /// Encrypt the log at rest (AES-256-GCM, `flywheel_feedback::wal::seal`):
    /// a file holding the key as 64 hex digits (`openssl rand -hex 32`),
    /// readable by the gateway only. Default: none (the log is plain).
    pub encryption_key_file: Option<PathBuf>,
    /// Or the name of an environment variable holding the key. Not with
    /// `encryption_key_file`. Default: none.
    pub encryption_key_env: Option<String>,
    /// Earlier keys (files), still needed to read segments written with
    /// them: rotate by moving the old key here and the new one into
    /// `encryption_key_file`. Default: none.
    pub encryption_old_key_files: Vec<PathBuf>,
    /// A segment is sealed when it reaches this size. Default 8 MiB.
    pub segment_bytes: u64,
    /// The shipper seals a non-empty active segment older than this, so a
    /// quiet log still ships. Default 1000.
    pub max_segment_age_ms: u64,
    /// Default `{ interval_ms = 100 }`.
    pub fsync: FsyncPolicy,
    /// Disk quota of the log (all segments). When an append would exceed
    /// it, the append is refused (see [`crate::wal::WalError::Full`]).
    /// Default 1 GiB.
    pub max_bytes: u64,
    /// Most rows per INSERT; consecutive sealed segments are shipped
    /// together up to this (and 64 MiB of log). Default 100000.
    pub batch_rows: usize,
    /// Default `store`.
    pub bodies: BodiesPolicy,
    /// Run the schema migrations before the first shipment (retried with
    /// the shipper's backoff while ClickHouse is down). Default true.
    pub migrate: bool,
    /// Cap of the shipper's exponential backoff after a failure. Default 10000.
    pub max_backoff_ms: u64,
    /// What the gateway does with inference requests while the log refuses
    /// records (full, or its disk failing). Default `serve`.
    pub when_log_refuses: WhenLogRefuses,
}

/// `capture.when_log_refuses`: availability or a complete record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenLogRefuses {
    /// Answer anyway; each answer whose event is refused is counted
    /// (`flywheel_wal_dropped_full_total`, `flywheel_metering_events_dropped_total`)
    /// and logged. Feedback is answered 503 either way.
    #[default]
    Serve,
    /// Answer new inference requests 503 `not_recorded`, before any
    /// upstream call, until the log takes records again; a request in
    /// flight whose own event is refused gets 503 (or, streamed, an error
    /// event and no `[DONE]`) instead of its answer. Nothing is answered
    /// that is not recorded.
    Refuse,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            clickhouse_url: "http://127.0.0.1:8123".into(),
            database: "flywheel".into(),
            user: None,
            password: None,
            password_env: None,
            wal_dir: PathBuf::from("/var/tmp/flywheel/wal"),
            encryption_key_file: None,
            encryption_key_env: None,
            encryption_old_key_files: Vec::new(),
            segment_bytes: 8 << 20,
            max_segment_age_ms: 1000,
            fsync: FsyncPolicy::default(),
            max_bytes: 1 << 30,
            batch_rows: 100_000,
            bodies: BodiesPolicy::default(),
            migrate: true,
            max_backoff_ms: 10_000,
            when_log_refuses: WhenLogRefuses::Serve,
        }
    }
}

impl CaptureConfig {
    /// Reads `password_env` into `password`: an error naming the problem
    /// when both are set or the variable is unset (or not UTF-8).
    pub fn resolve_password(&mut self) -> Result<(), String> {
        self.resolve_password_with(|var| std::env::var(var))
    }

    /// [`Self::resolve_password`] reading variables through `lookup`.
    pub fn resolve_password_with(
        &mut self,
        lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<(), String> {
        let Some(var) = &self.password_env else {
            return Ok(());
        };
        if self.password.is_some() {
            return Err("set either capture.password or capture.password_env, not both".into());
        }
        self.password = Some(env_value(var, &lookup)?);
        Ok(())
    }

    /// The log's settings, its keyring read from the key files or variable:
    /// an error naming the problem when a key cannot be read or is not a key.
    pub fn wal_config(&self) -> Result<WalConfig, String> {
        Ok(WalConfig {
            segment_bytes: self.segment_bytes,
            fsync: self.fsync,
            max_bytes: self.max_bytes,
            keyring: self.keyring_with(|var| std::env::var(var))?,
        })
    }

    /// The `encryption_*` keys as a keyring (`None` when none is set),
    /// reading variables through `lookup`.
    pub fn keyring_with(
        &self,
        lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Option<Arc<Keyring>>, String> {
        let current = match (&self.encryption_key_file, &self.encryption_key_env) {
            (Some(_), Some(_)) => return Err(
                "set either capture.encryption_key_file or capture.encryption_key_env, not both"
                    .into(),
            ),
            (Some(file), None) => read_key_file(file)?,
            (None, Some(var)) => env_value(var, &lookup)?,
            (None, None) if self.encryption_old_key_files.is_empty() => return Ok(None),
            (None, None) => {
                return Err("capture.encryption_old_key_files needs a current key \
                            (capture.encryption_key_file or capture.encryption_key_env)"
                    .into())
            }
        };
        let old = self
            .encryption_old_key_files
            .iter()
            .map(|f| read_key_file(f))
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::from_hex(&current, &old)
            .map(|k| Some(Arc::new(k)))
            .map_err(|e| e.to_string())
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            url: self.clickhouse_url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }

    /// The store of this config; an error if `database` is not a plain
    /// identifier.
    pub fn store(&self) -> Result<Store, StoreError> {
        Store::try_new(&self.store_config())
    }

    pub fn shipper_config(&self) -> ShipperConfig {
        ShipperConfig {
            batch_rows: self.batch_rows.max(1),
            max_segment_age: Duration::from_millis(self.max_segment_age_ms),
            bodies: self.bodies,
            migrate: self.migrate,
            max_backoff: Duration::from_millis(self.max_backoff_ms.max(1)),
            ..ShipperConfig::default()
        }
    }
}

/// The value of environment variable `var` through `lookup`, or an error
/// that names it.
fn env_value(
    var: &str,
    lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<String, String> {
    lookup(var).map_err(|e| match e {
        std::env::VarError::NotPresent => format!("environment variable {var} is not set"),
        std::env::VarError::NotUnicode(_) => format!("environment variable {var} is not UTF-8"),
    })
}

/// A key file's contents (64 hex digits; checked by [`Keyring::from_hex`]).
/// A file that others can read is used, with a warning: the key protects
/// nothing from whoever can read it.
pub fn read_key_file(path: &Path) -> Result<String, String> {
    let key = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "key file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_env_is_read_and_checked() {
        let var = "FLYWHEEL_TEST_CAPTURE_PASSWORD";
        let env = |v: &str| {
            if v == var {
                Ok("hunter2".to_owned())
            } else {
                Err(std::env::VarError::NotPresent)
            }
        };
        let mut c: CaptureConfig = toml::from_str(&format!("password_env = \"{var}\"")).unwrap();
        c.resolve_password_with(env).unwrap();
        assert_eq!(c.store_config().password.as_deref(), Some("hunter2"));

        let mut both = c.clone();
        assert!(both
            .resolve_password_with(env)
            .unwrap_err()
            .contains("not both"));
        let mut unset: CaptureConfig =
            toml::from_str("password_env = \"FLYWHEEL_TEST_CAPTURE_UNSET\"").unwrap();
        assert!(unset.resolve_password().unwrap_err().contains("is not set"));
    }

    /// An `https://` URL speaks TLS: the first byte ClickHouse gets is a
    /// TLS handshake record (0x16), not an HTTP request line.
    #[tokio::test]
    async fn https_clickhouse_urls_use_tls() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let first = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            b[0]
        });
        let c = CaptureConfig {
            clickhouse_url: format!("https://127.0.0.1:{port}"),
            ..CaptureConfig::default()
        };
        let store = c.store().unwrap();
        let query = store.client().query("SELECT 1").fetch_all::<u8>();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), query).await;
        let byte = tokio::time::timeout(std::time::Duration::from_secs(5), first)
            .await
            .expect("the client never connected")
            .unwrap();
        assert_eq!(byte, 0x16);
    }
}
