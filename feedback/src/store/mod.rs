//! ClickHouse: connection, schema migrations, row types and the writes the
//! shipper needs. The analytics reads are in [`crate::queries`].
//!
//! ClickHouse 18.16.1 rules this code follows (measured, binding):
//! * every `fetch*` and `insert` runs with validation off (the client's
//!   default format and settings do not exist on 18.16), so a Rust field
//!   whose type differs from its column corrupts data silently: the row
//!   types in [`rows`] are pinned by the schema round-trip tests;
//! * no server-side query parameters: values go through the client's `?`
//!   binds, which escape them;
//! * no DateTime64/Map/JSON/Bool/TTL/LowCardinality/`ADD COLUMN IF NOT EXISTS`.

pub mod migrate;
pub mod rows;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use clickhouse::Client;
pub use migrate::{Migration, MIGRATIONS};
pub use rows::{
    AttemptRow, CanaryEvaluationRow, EvalResultRow, ExperimentRow, FeedbackRow, InferenceRow,
    TrainingStepRow, TrainingUsageRow,
};
use serde::{Deserialize, Serialize};

/// Ids per `id IN (...)` query: keeps the statement well under 18.16's
/// `max_query_size` (256 KiB) with 36-character UUIDs.
const IDS_PER_QUERY: usize = 2000;
/// Upper bound for one INSERT or query. A timed-out INSERT may still commit
/// on the server: every INSERT carries a `query_id` starting with
/// [`Store::insert_tag`], and the shipper waits until none is running
/// before it trusts an existence check ([`Store::await_inserts_in_flight`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse: {what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("migration {version} ({name}): {source}")]
    Migration {
        version: u32,
        name: &'static str,
        source: clickhouse::error::Error,
    },
    #[error("invalid identifier {0:?}: use letters, digits and underscores")]
    BadIdentifier(String),
    #[error(
        "clickhouse: {running} earlier INSERT(s) into {database} still running after {waited:?}; \
         an existence check now could miss their rows"
    )]
    InsertsInFlight {
        database: String,
        running: u64,
        waited: Duration,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where ClickHouse is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// A handle on the Flywheel database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    database: String,
    /// How long an INSERT may take before it is given up on (and may still
    /// commit on the server).
    insert_timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database)
            .finish()
    }
}

/// The base tables whose rows carry an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTable {
    Inferences,
    Feedback,
}

impl IdTable {
    fn name(self) -> &'static str {
        match self {
            Self::Inferences => "inferences",
            Self::Feedback => "feedback",
        }
    }
}

pub(crate) fn check_identifier(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadIdentifier(s.to_owned()))
    }
}

pub(crate) async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout {
            what,
            after: REQUEST_TIMEOUT,
        }),
    }
}

/// `(?, ?, ...)` with `n` placeholders, for `IN` lists bound value by value
/// (18.16 rejects an array literal on the right of `IN`).
pub fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(2 + n * 3);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s.push(')');
    s
}

impl Store {
    /// A store for `cfg`. Connects lazily: only the database name is
    /// checked here (it must be a plain identifier, since it is
    /// interpolated into DDL).
    pub fn try_new(cfg: &StoreConfig) -> Result<Store> {
        check_identifier(&cfg.database)?;
        let mut client = Client::default()
            .with_url(&cfg.url)
            .with_database(&cfg.database)
            // Loopback: compression only costs CPU.
            .with_compression(clickhouse::Compression::None)
            // Mandatory on 18.16 (see module docs).
            .with_validation(false);
        if let Some(u) = &cfg.user {
            client = client.with_user(u);
        }
        if let Some(p) = &cfg.password {
            client = client.with_password(p);
        }
        Ok(Store {
            client,
            database: cfg.database.clone(),
            insert_timeout: REQUEST_TIMEOUT,
        })
    }

    /// This store with another INSERT timeout (tests of the timeout path).
    pub fn with_insert_timeout(mut self, timeout: Duration) -> Self {
        self.insert_timeout = timeout;
        self
    }

    /// How long an INSERT may take before it is given up on.
    pub fn insert_timeout(&self) -> Duration {
        self.insert_timeout
    }

    /// The `query_id` prefix of this database's INSERTs:
    /// `flywheel-insert-{database}-`.
    pub fn insert_tag(&self) -> String {
        format!("flywheel-insert-{}-", self.database)
    }

    /// Waits until ClickHouse runs no INSERT of this database's
    /// ([`Store::insert_tag`]), from this process or an earlier one.
    ///
    /// Why: an INSERT the client gave up on (a timeout, a cut connection,
    /// a crash) may still be running on the server and commit later. An
    /// existence check that runs before it ends sees none of its rows, the
    /// rows are inserted again, and the rollups count them twice. Once no
    /// such INSERT runs, each one has either committed (the check sees it)
    /// or failed (nothing to see). Gives up after `patience` with
    /// [`StoreError::InsertsInFlight`]; the shipper then backs off and
    /// tries again, losing nothing.
    pub async fn await_inserts_in_flight(&self, patience: Duration) -> Result<()> {
        let system = self.client.clone().with_database("system");
        let tag = self.insert_tag();
        let start = Instant::now();
        loop {
            let running = timed(
                "inserts in flight",
                system
                    .query("SELECT count() FROM system.processes WHERE startsWith(query_id, ?)")
                    .bind(tag.as_str())
                    .fetch_one::<u64>(),
            )
            .await?;
            if running == 0 {
                return Ok(());
            }
            if start.elapsed() >= patience {
                return Err(StoreError::InsertsInFlight {
                    database: self.database.clone(),
                    running,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One INSERT into `table` with this store's tag and timeout.
    async fn insert_each<'r, T>(&self, table: &str, rows: impl Iterator<Item = &'r T>) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + 'r,
    {
        check_identifier(table)?;
        let query_id = format!("{}{}", self.insert_tag(), uuid::Uuid::now_v7());
        let insert = async {
            let mut insert = self
                .client
                .insert::<T>(table)
                .await?
                .with_setting("query_id", query_id);
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        };
        match tokio::time::timeout(self.insert_timeout, insert).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout {
                what: "insert",
                after: self.insert_timeout,
            }),
        }
    }

    /// The underlying client (database selected, validation off).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// `SELECT 1`; fails when ClickHouse is unreachable. Does not need the
    /// database to exist.
    pub async fn ping(&self) -> Result<()> {
        let c = self.client.clone().with_database("system");
        timed("ping", c.query("SELECT 1").fetch_one::<u8>()).await?;
        Ok(())
    }

    /// Which of `ids` already have a row in `table`. Used by the shipper to
    /// skip replayed events (see the crate docs, "Exactly once").
    pub async fn existing_ids(&self, table: IdTable, ids: &[&str]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT DISTINCT id FROM {}.{} WHERE id IN {}",
                self.database,
                table.name(),
                placeholders(chunk.len())
            );
            let mut q = self.client.query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            found.extend(timed("existing ids", q.fetch_all::<String>()).await?);
        }
        Ok(found)
    }

    /// Inserts rows into `table` in one INSERT statement (one block for up
    /// to a million rows: all or nothing on the server).
    pub async fn insert_rows<T>(&self, table: &str, rows: &[T]) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        self.insert_each(table, rows.iter()).await
    }

    /// [`Store::insert_rows`] of rows held by reference (the shipper keeps
    /// attempts next to their inference).
    pub async fn insert_refs<T>(&self, table: &str, rows: &[&T]) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        self.insert_each(table, rows.iter().copied()).await
    }

    /// Records that `inference_ids` were used in training dataset `dataset`;
    /// retention keeps those inferences forever.
    pub async fn record_training_usage(
        &self,
        dataset: &str,
        inference_ids: &[String],
    ) -> Result<()> {
        let ts_ms = crate::now_ms();
        let rows: Vec<TrainingUsageRow> = inference_ids
            .iter()
            .map(|id| TrainingUsageRow {
                inference_id: id.clone(),
                dataset: dataset.to_owned(),
                ts_ms,
            })
            .collect();
        self.insert_rows("training_usage", &rows).await
    }
}
