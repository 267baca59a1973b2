//! `[capture]`: how events reach ClickHouse. Embedded by the gateway as a
//! table of its TOML config; every field has a default, so `[capture]` may
//! be empty.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    shipper::{BodiesPolicy, ShipperConfig},
    store::{Store, StoreConfig, StoreError},
    wal::{FsyncPolicy, WalConfig},
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
    /// upstream call, until the log takes records again: nothing is
    /// answered that is not recorded, except requests already in flight
    /// when it filled (counted as above).
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
        match lookup(var) {
            Ok(p) => {
                self.password = Some(p);
                Ok(())
            }
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {var} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {var} is not UTF-8"))
            }
        }
    }

    pub fn wal_config(&self) -> WalConfig {
        WalConfig {
            segment_bytes: self.segment_bytes,
            fsync: self.fsync,
            max_bytes: self.max_bytes,
        }
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
