//! [`Capture`]: the write-ahead log and its shipper, started from a
//! [`CaptureConfig`]. This is what the gateway holds.

use std::{sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    config::CaptureConfig,
    event::Record,
    shipper::{Shipper, ShipperHandle, ShipperStats, ShutdownReport},
    store::{Store, StoreError},
    wal::{GroupCommit, Wal, WalError, WalStats},
};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log's encryption keys (`capture.encryption_*`).
    #[error("capture.encryption: {0}")]
    Keys(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptureStats {
    pub wal: WalStats,
    pub shipper: ShipperStats,
}

pub struct Capture {
    wal: Arc<Wal>,
    writer: GroupCommit,
    store: Store,
    shipper: ShipperHandle,
}

impl Capture {
    /// Opens the log (replaying what a previous run left) and starts the
    /// shipper on the current tokio runtime. Does not contact ClickHouse:
    /// serving starts even when it is down; the shipper migrates and ships
    /// once it is reachable.
    pub fn start(cfg: &CaptureConfig) -> Result<Capture, CaptureError> {
        let wal = Arc::new(Wal::open(
            &cfg.wal_dir,
            cfg.wal_config().map_err(CaptureError::Keys)?,
        )?);
        let writer = GroupCommit::start(Arc::clone(&wal)).map_err(|source| WalError::Io {
            path: cfg.wal_dir.clone(),
            source,
        })?;
        let store = Store::try_new(&cfg.store_config())?;
        let shipper = Shipper::spawn(Arc::clone(&wal), store.clone(), cfg.shipper_config());
        Ok(Capture {
            wal,
            writer,
            store,
            shipper,
        })
    }

    /// Appends records to the log through its writer thread (group commit,
    /// [`GroupCommit`]): returns once they are written, and synced with
    /// `fsync = "always"`, without blocking the calling thread. On
    /// [`WalError::Full`] the records are dropped and counted.
    pub async fn append(&self, records: &[Record]) -> Result<(), WalError> {
        self.writer.append(records).await
    }

    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// The store the shipper writes to (for queries).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            wal: self.wal.stats(),
            shipper: self.shipper.stats(),
        }
    }

    /// Look for work now (tests; after a burst).
    pub fn nudge(&self) {
        self.shipper.nudge();
    }

    /// Writes what was handed to the writer, then seals the log and ships
    /// what it can within `deadline`.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let Capture {
            mut writer,
            shipper,
            ..
        } = self;
        // Joining the writer blocks until its last group is written.
        if tokio::task::spawn_blocking(move || writer.close())
            .await
            .is_err()
        {
            tracing::error!("closing the WAL writer panicked");
        }
        shipper.shutdown(deadline).await
    }
}
