//! The online grader's SQL, all of it: which inferences are still to
//! grade, their rows, and the feedback rows it writes.
//!
//! Only the live tables are read (`inferences`, `feedback`): online
//! grading looks back hours, and retention moves rows to `*_retained`
//! months later.

use std::collections::HashSet;

use flywheel_feedback::{
    store::{placeholders, rows::FeedbackRow, IdTable, StoreError},
    Store,
};
use serde::Deserialize;

use crate::dataset::captured::Row;

/// Upper bound of one read: a query runs this long at most, and a
/// ClickHouse that does not answer fails the pass instead of hanging it.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Ids per `id IN (...)`: keeps the statement far under 18.16's
/// `max_query_size` (256 KiB).
const IDS_PER_QUERY: usize = 1000;

/// What [`pending`] looks for.
pub struct PendingQuery<'a> {
    pub route: &'a str,
    pub metric: &'a str,
    pub source: &'a str,
    /// Inferences that arrived at or after this time, ms since the epoch.
    pub from_ms: u64,
    /// Keep an inference when the first 8 bytes of SHA-256(id), read as a
    /// little-endian integer, are below this; `None`: every inference.
    /// Same rule as [`super::sampled`].
    pub threshold: Option<u64>,
    pub limit: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct Pending {
    pub id: String,
    pub ts_ms: u64,
}

/// The sampled, successful chat inferences of the route since `from_ms`
/// without feedback of this metric from this grader, oldest first.
///
/// The sampling rule runs in ClickHouse (`SHA256` is on 18.16), so the
/// ids of the unsampled majority never leave the server; a test checks it
/// against [`super::sampled`]. Duplicates of a replayed row are folded
/// by `LIMIT 1 BY` rather than `FINAL`, which would merge the whole
/// window's bodies on every pass.
pub async fn pending(store: &Store, q: &PendingQuery<'_>) -> Result<Vec<Pending>, StoreError> {
    let db = store.database();
    let sample = if q.threshold.is_some() {
        " AND reinterpretAsUInt64(substring(SHA256(id), 1, 8)) < ?"
    } else {
        ""
    };
    let sql = format!(
        "SELECT id, ts_ms FROM {db}.inferences \
         WHERE route = ? AND endpoint = 'chat' AND status = 200 AND ts_ms >= ?{sample} \
         AND id NOT IN (SELECT assumeNotNull(inference_id) FROM {db}.feedback \
             WHERE isNotNull(inference_id) AND metric = ? AND source = ? AND ts_ms >= ?) \
         ORDER BY ts_ms, id LIMIT 1 BY id LIMIT ?"
    );
    let mut query = store.client().query(&sql).bind(q.route).bind(q.from_ms);
    if let Some(t) = q.threshold {
        query = query.bind(t);
    }
    // Feedback comes after its inference, so the window bounds it too.
    let query = query
        .bind(q.metric)
        .bind(q.source)
        .bind(q.from_ms)
        .bind(q.limit);
    timed("pending inferences", query.fetch_all::<Pending>()).await
}

/// The rows of `ids` with their bodies, in the shape the dataset code
/// turns into items (the columns in [`Row`]'s field order: validation is
/// off on 18.16, so the order is the mapping).
pub async fn rows(store: &Store, ids: &[&str]) -> Result<Vec<Row>, StoreError> {
    let db = store.database();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        // `upstream_failures` only tells outages from validation failures
        // among errors; these rows all succeeded.
        let sql = format!(
            "SELECT id, ts_ms, variant, episode_id, status, toInt8(validation) AS validation, \
             request_body, response_body, toUInt64(0) AS upstream_failures, tenant, shadow \
             FROM {db}.inferences WHERE id IN {} LIMIT 1 BY id",
            placeholders(chunk.len())
        );
        let mut query = store.client().query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        out.extend(timed("inference rows", query.fetch_all::<Row>()).await?);
    }
    Ok(out)
}

/// Which of these feedback ids are stored already (another worker, or a
/// pass that crashed after its insert).
pub async fn existing(store: &Store, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
    store.existing_ids(IdTable::Feedback, ids).await
}

/// One INSERT of the pass's scores.
pub async fn insert(store: &Store, rows: &[FeedbackRow]) -> Result<(), StoreError> {
    store.insert_rows("feedback", rows).await
}

async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout {
            what,
            after: TIMEOUT,
        }),
    }
}
