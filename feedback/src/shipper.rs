//! The background task that moves sealed WAL segments into ClickHouse.
//!
//! Loop: seal the active segment once it is `max_segment_age` old; take the
//! sealed segments oldest first, in groups of consecutive segments (up to
//! `batch_rows` records and `batch_bytes` bytes); for each group, mark its
//! segments "insert started", read them, insert their rows ([`ship_rows`])
//! and delete the segments only when every INSERT of the group succeeded.
//! The next group is prepared while the current one is inserted. On any
//! failure (ClickHouse down, a timeout, a rejected insert) it records the
//! error, sleeps a capped exponential backoff and starts over from the
//! oldest segment: forever, since losing events is not an option; the
//! log's quota bounds the disk. Replaying a partly shipped segment is
//! harmless: see "Exactly once" in the crate docs.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
};

use crate::{
    event::Record,
    store::{AttemptRow, FeedbackRow, IdTable, InferenceRow, Store, StoreError},
    wal::{self, SegmentMeta, Wal, WalError, WalStats},
};

/// What happens to request and response bodies on their way to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodiesPolicy {
    /// Store them verbatim (needed to build training datasets).
    #[default]
    Store,
    /// Keep the JSON structure and the non-content fields (role, model,
    /// type, finish_reason, numbers, booleans), replace every other string
    /// with `"[redacted]"`. A body that is not JSON becomes `"[redacted]"`.
    Redact,
    /// Store empty strings.
    Skip,
}

/// A body as the `bodies` policy wants it stored.
pub fn apply_bodies(body: Option<&str>, policy: BodiesPolicy) -> String {
    match (body, policy) {
        (None, _) | (_, BodiesPolicy::Skip) => String::new(),
        (Some(b), BodiesPolicy::Store) => b.to_owned(),
        (Some(b), BodiesPolicy::Redact) => redact(b),
    }
}

/// [`apply_bodies`] of an owned body (no copy when stored as is).
pub fn apply_bodies_owned(body: Option<String>, policy: BodiesPolicy) -> String {
    match (body, policy) {
        (Some(b), BodiesPolicy::Store) => b,
        (body, policy) => apply_bodies(body.as_deref(), policy),
    }
}

/// Keys whose string values describe structure, not content; kept by
/// `redact`.
pub const KEEP_KEYS: &[&str] = &[
    "role",
    "model",
    "type",
    "finish_reason",
    "object",
    "id",
    "stop_reason",
    "system_fingerprint",
    "service_tier",
];

pub const REDACTED: &str = "[redacted]";

/// Replaces every string in a JSON body with `[redacted]`, except the
/// values of [`KEEP_KEYS`]; numbers, booleans and the shape survive (token
/// counts, message count, tool-call structure). Non-JSON becomes
/// `[redacted]`.
pub fn redact(body: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = REDACTED.to_owned(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => {
                for (k, v) in o.iter_mut() {
                    if !(v.is_string() && KEEP_KEYS.contains(&k.as_str())) {
                        walk(v);
                    }
                }
            }
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => REDACTED.to_owned(),
    }
}

#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Most records per batch (one INSERT per table per batch); several
    /// sealed segments are shipped as one batch up to this. Default 100000.
    pub batch_rows: usize,
    /// Most segment bytes read into one batch (bounds the shipper's
    /// memory: about twice this, one batch inserting and the next being
    /// decoded). A segment larger than this still ships, alone. Default
    /// 64 MiB.
    pub batch_bytes: u64,
    /// Seal the active segment once its first record is this old. Default 1 s.
    pub max_segment_age: Duration,
    /// How often an idle shipper looks for work. Default 100 ms.
    pub poll_interval: Duration,
    /// First backoff after a failure, doubled per consecutive failure.
    /// Default 200 ms.
    pub min_backoff: Duration,
    /// Backoff cap. Default 10 s.
    pub max_backoff: Duration,
    pub bodies: BodiesPolicy,
    /// Run the migrations before the first shipment. Default true.
    pub migrate: bool,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            batch_rows: 100_000,
            batch_bytes: 64 << 20,
            max_segment_age: Duration::from_millis(1000),
            poll_interval: Duration::from_millis(100),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            bodies: BodiesPolicy::Store,
            migrate: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("blocking WAL task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    pub inferences: u64,
    pub attempts: u64,
    pub feedback: u64,
    /// Records skipped because their id was already in ClickHouse (a
    /// replay) or twice in the batch.
    pub duplicates: u64,
}

/// Which records [`ship_rows`] looks up in ClickHouse before inserting
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistenceCheck {
    /// Inferences and feedback: for records that an earlier attempt may
    /// have inserted (a segment with a shipping marker).
    All,
    /// Feedback only: for segments never inserted from before (no shipping
    /// marker). Inference ids are minted once per request and appended
    /// once, so they can only be in ClickHouse already if their segment
    /// was shipped from before; feedback ids derived from client
    /// idempotency keys can repeat across segments and are always checked.
    FeedbackOnly,
}

/// The rows of a batch, built from its records.
#[derive(Debug, Default)]
pub struct BatchRows {
    /// Each inference with its attempts.
    pub inferences: Vec<(InferenceRow, Vec<AttemptRow>)>,
    pub feedback: Vec<FeedbackRow>,
    /// Records already dropped by [`BatchRows::dedup`].
    pub duplicates: u64,
}

impl BatchRows {
    /// Adds a record's rows; its strings move into them.
    pub fn push(&mut self, record: Record, bodies: BodiesPolicy) {
        match record {
            Record::Inference(mut e) => {
                let request_body = apply_bodies_owned(e.request_body.take(), bodies);
                let response_body = apply_bodies_owned(e.response_body.take(), bodies);
                let (mut row, attempts) = InferenceRow::from_owned(e);
                row.request_body = request_body;
                row.response_body = response_body;
                self.inferences.push((row, attempts));
            }
            Record::Feedback(e) => self.feedback.push(FeedbackRow::from_event(&e)),
        }
    }

    pub fn from_records(records: impl IntoIterator<Item = Record>, bodies: BodiesPolicy) -> Self {
        let mut rows = Self::default();
        for r in records {
            rows.push(r, bodies);
        }
        rows
    }

    /// Appends `other` after these rows.
    pub fn extend(&mut self, other: BatchRows) {
        self.inferences.extend(other.inferences);
        self.feedback.extend(other.feedback);
        self.duplicates += other.duplicates;
    }

    /// Drops rows whose id came earlier in the batch (the first one stays),
    /// so an id repeated anywhere in the batch is inserted once.
    pub fn dedup(&mut self) {
        let (keep_i, keep_f) = {
            let mut seen = HashSet::with_capacity(self.inferences.len() + self.feedback.len());
            let keep_i: Vec<bool> = self
                .inferences
                .iter()
                .map(|(r, _)| seen.insert(r.id.as_str()))
                .collect();
            let keep_f: Vec<bool> = self
                .feedback
                .iter()
                .map(|r| seen.insert(r.id.as_str()))
                .collect();
            (keep_i, keep_f)
        };
        let before = self.inferences.len() + self.feedback.len();
        let mut k = keep_i.into_iter();
        self.inferences.retain(|_| k.next().unwrap_or(true));
        let mut k = keep_f.into_iter();
        self.feedback.retain(|_| k.next().unwrap_or(true));
        self.duplicates += (before - self.inferences.len() - self.feedback.len()) as u64;
    }
}

/// Ships one batch of records, exactly once per id (see the crate docs):
/// drops ids seen earlier in the batch, asks ClickHouse which ids already
/// exist and drops those, then inserts attempts, inferences and feedback.
/// Attempts go before their inferences, so an id present in `inferences`
/// implies its attempts are stored too.
pub async fn ship_batch(
    store: &Store,
    records: &[Record],
    bodies: BodiesPolicy,
) -> Result<BatchOutcome, StoreError> {
    ship_batch_with(store, records, bodies, ExistenceCheck::All).await
}

/// [`ship_batch`] with a choice of what to check in ClickHouse.
pub async fn ship_batch_with(
    store: &Store,
    records: &[Record],
    bodies: BodiesPolicy,
    check: ExistenceCheck,
) -> Result<BatchOutcome, StoreError> {
    let mut rows = BatchRows::from_records(records.iter().cloned(), bodies);
    rows.dedup();
    ship_rows(store, rows, check, usize::MAX).await
}

/// Inserts deduplicated ([`BatchRows::dedup`]) rows: drops those whose id
/// ClickHouse already has (per `check`), then, per chunk of `max_rows`
/// inferences, inserts their attempts and then them; then the feedback.
pub async fn ship_rows(
    store: &Store,
    mut rows: BatchRows,
    check: ExistenceCheck,
    max_rows: usize,
) -> Result<BatchOutcome, StoreError> {
    let mut out = BatchOutcome {
        duplicates: rows.duplicates,
        ..BatchOutcome::default()
    };
    if check == ExistenceCheck::All {
        // A replay after an ambiguous failure: an INSERT given up on may
        // still be running, and would commit after the check below.
        store
            .await_inserts_in_flight(store.insert_timeout())
            .await?;
    }
    if check == ExistenceCheck::All && !rows.inferences.is_empty() {
        let ids: Vec<&str> = rows.inferences.iter().map(|(r, _)| r.id.as_str()).collect();
        let existing = store.existing_ids(IdTable::Inferences, &ids).await?;
        let before = rows.inferences.len();
        rows.inferences.retain(|(r, _)| !existing.contains(&r.id));
        out.duplicates += (before - rows.inferences.len()) as u64;
    }
    if !rows.feedback.is_empty() {
        let ids: Vec<&str> = rows.feedback.iter().map(|r| r.id.as_str()).collect();
        let existing = store.existing_ids(IdTable::Feedback, &ids).await?;
        let before = rows.feedback.len();
        rows.feedback.retain(|r| !existing.contains(&r.id));
        out.duplicates += (before - rows.feedback.len()) as u64;
    }
    let max_rows = max_rows.max(1);
    for chunk in rows.inferences.chunks(max_rows) {
        // Attempts first: an inference row implies its attempts are stored.
        let attempts: Vec<&AttemptRow> = chunk.iter().flat_map(|(_, a)| a.iter()).collect();
        store.insert_refs("attempts", &attempts).await?;
        out.attempts += attempts.len() as u64;
        let inferences: Vec<&InferenceRow> = chunk.iter().map(|(r, _)| r).collect();
        store.insert_refs("inferences", &inferences).await?;
        out.inferences += inferences.len() as u64;
    }
    for chunk in rows.feedback.chunks(max_rows) {
        store.insert_rows("feedback", chunk).await?;
        out.feedback += chunk.len() as u64;
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Counters {
    inferences: AtomicU64,
    attempts: AtomicU64,
    feedback: AtomicU64,
    duplicates: AtomicU64,
    segments_shipped: AtomicU64,
    ship_failures: AtomicU64,
    last_success_ms: AtomicU64,
    /// In a streak of failures (for logging once per streak).
    failing: AtomicBool,
    last_error: Mutex<Option<(u64, String)>>,
}

/// Shipper counters, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShipperStats {
    /// Rows inserted since start, per table.
    pub inferences_shipped: u64,
    pub attempts_shipped: u64,
    pub feedback_shipped: u64,
    /// Records not inserted because ClickHouse already had them (replays).
    pub duplicates_skipped: u64,
    pub segments_shipped: u64,
    /// Failed shipping rounds (each followed by a backoff).
    pub ship_failures: u64,
    /// Sealed segments waiting to ship.
    pub segments_pending: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
}

/// What [`ShipperHandle::shutdown`] left behind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShutdownReport {
    /// Everything was shipped; the log is empty.
    pub drained: bool,
    /// The log after shutdown; whatever is left replays on next start.
    pub wal: WalStats,
}

pub struct Shipper;

impl Shipper {
    /// Starts the shipper on the current tokio runtime.
    pub fn spawn(wal: Arc<Wal>, store: Store, cfg: ShipperConfig) -> ShipperHandle {
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = watch::channel(None);
        let wake = Arc::new(Notify::new());
        let task = Task {
            wal: Arc::clone(&wal),
            store,
            cfg,
            counters: Arc::clone(&counters),
            stop: stop_rx,
            wake: Arc::clone(&wake),
        };
        let task = tokio::spawn(task.run());
        ShipperHandle {
            wal,
            counters,
            stop: stop_tx,
            wake,
            task: Some(task),
        }
    }
}

/// Owns the shipper task; dropping it without [`ShipperHandle::shutdown`]
/// aborts the task (unshipped segments stay on disk and replay later).
pub struct ShipperHandle {
    wal: Arc<Wal>,
    counters: Arc<Counters>,
    stop: watch::Sender<Option<Instant>>,
    wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl ShipperHandle {
    pub fn stats(&self) -> ShipperStats {
        let c = &self.counters;
        let last_error = c
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let last_success = c.last_success_ms.load(Ordering::Relaxed);
        ShipperStats {
            inferences_shipped: c.inferences.load(Ordering::Relaxed),
            attempts_shipped: c.attempts.load(Ordering::Relaxed),
            feedback_shipped: c.feedback.load(Ordering::Relaxed),
            duplicates_skipped: c.duplicates.load(Ordering::Relaxed),
            segments_shipped: c.segments_shipped.load(Ordering::Relaxed),
            ship_failures: c.ship_failures.load(Ordering::Relaxed),
            segments_pending: self.wal.stats().sealed_segments,
            last_error_ms: last_error.as_ref().map(|(t, _)| *t),
            last_error: last_error.map(|(_, e)| e),
            last_success_ms: (last_success > 0).then_some(last_success),
        }
    }

    /// Look for work now instead of at the next poll (a backoff in progress
    /// is cut short too).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Seals the active segment and ships everything it can until
    /// `deadline` has passed, then stops. What is left replays next start.
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let _ = self.stop.send(Some(Instant::now() + deadline));
        self.wake.notify_one();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "shipper task failed");
            }
        }
        let wal = self.wal.stats();
        ShutdownReport {
            drained: wal.records_pending == 0,
            wal,
        }
    }
}

impl Drop for ShipperHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Task {
    wal: Arc<Wal>,
    store: Store,
    cfg: ShipperConfig,
    counters: Arc<Counters>,
    stop: watch::Receiver<Option<Instant>>,
    wake: Arc<Notify>,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = self.cfg.min_backoff;
        let mut migrated = !self.cfg.migrate;
        loop {
            // Marks the value seen, so `pause` wakes only on a new request.
            let deadline = *self.stop.borrow_and_update();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            // When stopping, seal whatever is in the active segment.
            let age = if deadline.is_some() {
                Duration::ZERO
            } else {
                self.cfg.max_segment_age
            };
            let wal = Arc::clone(&self.wal);
            let sealed = tokio::task::spawn_blocking(move || wal.seal_if_older(age)).await;
            if let Err(e) = sealed
                .map_err(ShipError::from)
                .and_then(|r| r.map_err(ShipError::from))
            {
                self.failed(&e);
            }
            let segments = self.wal.sealed_segments();
            if segments.is_empty() {
                if deadline.is_some() {
                    return;
                }
                self.pause(self.cfg.poll_interval).await;
                continue;
            }
            let round = async {
                if !migrated {
                    self.store.migrate().await?;
                    migrated = true;
                }
                self.ship_segments(segments).await
            };
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), round).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => round.await,
            };
            match result {
                Ok(()) => backoff = self.cfg.min_backoff,
                Err(e) => {
                    self.failed(&e);
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    fn failed(&self, e: &ShipError) {
        let n = self.counters.ship_failures.fetch_add(1, Ordering::Relaxed) + 1;
        // Every failure is counted; the log line comes on the first failure
        // of a streak and then every 10th, so an outage does not flood.
        let first = !self.counters.failing.swap(true, Ordering::Relaxed);
        if first || n.is_multiple_of(10) {
            tracing::warn!(error = %e, failures = n, "shipping to ClickHouse failed; retrying with backoff");
        }
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((crate::now_ms(), e.to_string()));
    }

    /// Sleeps `d`, cut short by a nudge or a shutdown request (and never
    /// past the shutdown deadline).
    async fn pause(&mut self, d: Duration) {
        let until = match *self.stop.borrow() {
            Some(deadline) => deadline.min(Instant::now() + d),
            None => Instant::now() + d,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = self.wake.notified() => {}
            // Err (handle gone) disables this branch instead of spinning.
            Ok(()) = self.stop.changed() => {}
        }
    }

    /// Ships `segments` (oldest first) in groups of consecutive segments of
    /// up to `batch_rows` records and `batch_bytes` bytes, one INSERT per
    /// table per group. The next group is marked, read, decoded and turned
    /// into rows on blocking threads while the current one is inserted.
    async fn ship_segments(&self, segments: Vec<SegmentMeta>) -> Result<(), ShipError> {
        let groups = group_segments(
            segments,
            self.cfg.batch_rows.max(1) as u64,
            self.cfg.batch_bytes,
        );
        let prepare = |group: &[SegmentMeta]| {
            AbortOnDrop(tokio::spawn(prepare_group(
                Arc::clone(&self.wal),
                group.to_vec(),
                self.cfg.bodies,
            )))
        };
        let mut groups = groups.iter();
        let mut next = groups.next().map(|g| (g, prepare(g)));
        while let Some((group, mut pending)) = next.take() {
            let prepared = (&mut pending.0).await??;
            next = groups.next().map(|g| (g, prepare(g)));
            self.ship_group(group, prepared).await?;
        }
        Ok(())
    }

    async fn ship_group(&self, group: &[SegmentMeta], prepared: Prepared) -> Result<(), ShipError> {
        let Prepared {
            rows,
            damage,
            replay,
            took: prepare_time,
        } = prepared;
        let check = if replay {
            ExistenceCheck::All
        } else {
            ExistenceCheck::FeedbackOnly
        };
        let t = Instant::now();
        let total = ship_rows(&self.store, rows, check, self.cfg.batch_rows).await?;
        let insert_time = t.elapsed();
        // Counted as soon as the rows are in ClickHouse (and before the
        // segments go, so `records_pending == 0` implies the counts are in).
        let c = &self.counters;
        c.inferences.fetch_add(total.inferences, Ordering::Relaxed);
        c.attempts.fetch_add(total.attempts, Ordering::Relaxed);
        c.feedback.fetch_add(total.feedback, Ordering::Relaxed);
        c.duplicates.fetch_add(total.duplicates, Ordering::Relaxed);
        let seqs: Vec<u64> = group.iter().map(|s| s.seq).collect();
        let wal = Arc::clone(&self.wal);
        tokio::task::spawn_blocking(move || {
            for (seq, d) in seqs.into_iter().zip(damage) {
                match d {
                    None => wal.remove_segment(seq)?,
                    Some((corrupt_bytes, undecodable)) => {
                        tracing::error!(
                            seq,
                            corrupt_bytes,
                            undecodable,
                            "WAL segment had unreadable regions; shipped the readable records, quarantining it"
                        );
                        wal.quarantine_segment(seq)?;
                    }
                }
            }
            Ok::<_, WalError>(())
        })
        .await??;
        c.segments_shipped
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        c.last_success_ms.store(crate::now_ms(), Ordering::Relaxed);
        let (first, last) = (group[0].seq, group[group.len() - 1].seq);
        if c.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(first, last, "shipping to ClickHouse recovered");
        }
        tracing::debug!(
            first,
            last,
            replay,
            ?total,
            ?prepare_time,
            ?insert_time,
            "WAL segments shipped"
        );
        Ok(())
    }
}

/// Aborts the task when dropped (a failed or cancelled round does not
/// leave a read-ahead running).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Consecutive runs of segments holding at most `max_rows` records and
/// `max_bytes` bytes together (a larger segment forms a group alone).
fn group_segments(
    segments: Vec<SegmentMeta>,
    max_rows: u64,
    max_bytes: u64,
) -> Vec<Vec<SegmentMeta>> {
    let mut groups: Vec<Vec<SegmentMeta>> = Vec::new();
    let (mut rows, mut bytes) = (0, 0);
    for seg in segments {
        match groups.last_mut() {
            Some(g) if rows + seg.records <= max_rows && bytes + seg.bytes <= max_bytes => {
                rows += seg.records;
                bytes += seg.bytes;
                g.push(seg);
            }
            _ => {
                (rows, bytes) = (seg.records, seg.bytes);
                groups.push(vec![seg]);
            }
        }
    }
    groups
}

/// A group of segments ready to insert: marked, read, decoded, as rows.
struct Prepared {
    rows: BatchRows,
    /// Per segment of the group: `(corrupt bytes, undecodable frames)` when
    /// part of it could not be read (it is quarantined after shipping).
    damage: Vec<Option<(u64, u64)>>,
    /// A marker was there already: an earlier attempt may have inserted
    /// some of these records.
    replay: bool,
    took: Duration,
}

/// Marks every segment of `group` (durably, before any of it is inserted:
/// crate docs, "Exactly once"), then reads them and builds their rows, on
/// up to one blocking thread per core. Marking before the previous group
/// is done is conservative: at worst a retry checks a group it did not
/// need to.
async fn prepare_group(
    wal: Arc<Wal>,
    group: Vec<SegmentMeta>,
    bodies: BodiesPolicy,
) -> Result<Prepared, ShipError> {
    let t = Instant::now();
    let seqs: Vec<u64> = group.iter().map(|s| s.seq).collect();
    let w = Arc::clone(&wal);
    let replay = tokio::task::spawn_blocking(move || w.mark_shipping(&seqs)).await??;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(group.len())
        .max(1);
    let per_thread = group.len().div_ceil(threads);
    let tasks: Vec<_> = group
        .chunks(per_thread)
        .map(|segs| {
            let paths: Vec<_> = segs.iter().map(|s| s.path.clone()).collect();
            let keys = wal.config().keyring.clone();
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(paths.len());
                for path in paths {
                    let contents = wal::read_segment(&path, keys.as_deref())?;
                    let damage = contents
                        .is_damaged()
                        .then_some((contents.corrupt_bytes, contents.undecodable));
                    out.push((damage, BatchRows::from_records(contents.records, bodies)));
                }
                Ok::<_, WalError>(out)
            })
        })
        .collect();
    let mut rows = BatchRows::default();
    let mut damage = Vec::with_capacity(group.len());
    for task in tasks {
        for (d, r) in task.await?? {
            damage.push(d);
            rows.extend(r);
        }
    }
    rows.dedup();
    Ok(Prepared {
        rows,
        damage,
        replay,
        took: t.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{InferenceEvent, Validation};

    #[test]
    fn redact_keeps_structure_and_roles() {
        let body =
            r#"{"model":"m","messages":[{"role":"user","content":"secret"}],"n":2,"stream":true}"#;
        let v: serde_json::Value = serde_json::from_str(&redact(body)).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["messages"][0]["content"], REDACTED);
        assert_eq!(v["n"], 2);
        assert_eq!(v["stream"], true);
        assert_eq!(redact("not json"), REDACTED);
    }

    #[test]
    fn bodies_policy() {
        assert_eq!(apply_bodies(Some("{}"), BodiesPolicy::Store), "{}");
        assert_eq!(apply_bodies(Some("{}"), BodiesPolicy::Skip), "");
        assert_eq!(apply_bodies(None, BodiesPolicy::Store), "");
    }

    #[test]
    fn batch_rows_apply_the_bodies_policy() {
        let body = r#"{"messages":[{"role":"user","content":"x"}]}"#;
        let event = InferenceEvent {
            id: "id".into(),
            ts_ms: 1_700_000_000_123,
            tenant: "t".into(),
            endpoint: "e".into(),
            route: "r".into(),
            variant: "v".into(),
            provider: "p".into(),
            model: "m".into(),
            episode_id: None,
            user: None,
            stream: false,
            status: 200,
            prompt_tokens: 1,
            completion_tokens: 2,
            tokens_estimated: false,
            ttft_ms: None,
            latency_ms: 3.0,
            overhead_ms: 0.1,
            retries: 0,
            fallback_depth: 0,
            failovers: 0,
            failover_diverged: false,
            validation: Validation::Passed,
            cost_usd: 0.5,
            attempts: vec![],
            request_body: Some(body.into()),
            response_body: None,
            shadow: false,
            pair_id: None,
        };
        for bodies in [
            BodiesPolicy::Store,
            BodiesPolicy::Redact,
            BodiesPolicy::Skip,
        ] {
            let rows = BatchRows::from_records([Record::Inference(event.clone())], bodies);
            let (row, _) = &rows.inferences[0];
            assert_eq!(row.request_body, apply_bodies(Some(body), bodies));
            assert_eq!(row.response_body, "");
        }
    }
}
