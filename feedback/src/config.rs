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
    /// ClickHouse HTTP endpoint. Default `http://127.0.0.1:8123`.
    pub clickhouse_url: String,
    /// Database for all tables (created by the migrations). Default `flywheel`.
    pub database: String,
    /// Default: none (ClickHouse's `default` user).
    pub user: Option<String>,
    /// Default: none.
    pub password: Option<String>,
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
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            clickhouse_url: "http://127.0.0.1:8123".into(),
            database: "flywheel".into(),
            user: None,
            password: None,
            wal_dir: PathBuf::from("/var/tmp/flywheel/wal"),
            segment_bytes: 8 << 20,
            max_segment_age_ms: 1000,
            fsync: FsyncPolicy::default(),
            max_bytes: 1 << 30,
            batch_rows: 100_000,
            bodies: BodiesPolicy::default(),
            migrate: true,
            max_backoff_ms: 10_000,
        }
    }
}

impl CaptureConfig {
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
