//! The background task that moves sealed WAL segments into ClickHouse.
//!
//! Loop: seal the active segment once it is `max_segment_age` old; take the
//! sealed segments oldest first; for each, read its records, ship them in
//! batches of `batch_rows` ([`ship_batch`]) and delete the segment only
//! when every batch of it succeeded. On any failure (ClickHouse down, a
//! timeout, a rejected insert) it records the error, sleeps a capped
//! exponential backoff and starts over from the oldest segment: forever,
//! since losing events is not an option; the log's quota bounds the disk.
//! Replaying a partly shipped segment is harmless: see "Exactly once" in
//! the crate docs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::BodiesPolicy;
use crate::event::{FeedbackEvent, InferenceEvent, Record};
use crate::store::{AttemptRow, FeedbackRow, IdTable, InferenceRow, Store, StoreError};
use crate::wal::{self, SegmentMeta, Wal, WalError, WalStats};

#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Records per batch (one INSERT per table per batch). Default 10000.
    pub batch_rows: usize,
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
            batch_rows: 10_000,
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

/// Ships one batch of records, exactly once per id (see the crate docs):
/// drops ids seen earlier in the batch, asks ClickHouse which ids already
/// exist and drops those, then inserts attempts, inferences and feedback.
/// Attempts go before their inferences, so an id present in `inferences`
/// implies its attempts are stored too.
pub async fn ship_batch(store: &Store, records: &[Record], bodies: BodiesPolicy) -> Result<BatchOutcome, StoreError> {
    let mut out = BatchOutcome::default();
    let mut seen = HashSet::with_capacity(records.len());
    let mut inferences: Vec<&InferenceEvent> = Vec::new();
    let mut feedback: Vec<&FeedbackEvent> = Vec::new();
    for r in records {
        if !seen.insert(r.id()) {
            out.duplicates += 1;
            continue;
        }
        match r {
            Record::Inference(e) => inferences.push(e),
            Record::Feedback(e) => feedback.push(e),
        }
    }

    let t0 = Instant::now();
    if !inferences.is_empty() {
        let ids: Vec<&str> = inferences.iter().map(|e| e.id.as_str()).collect();
        let existing = store.existing_ids(IdTable::Inferences, &ids).await?;
        inferences.retain(|e| !existing.contains(&e.id));
        out.duplicates += existing.len() as u64;
    }
    if !feedback.is_empty() {
        let ids: Vec<&str> = feedback.iter().map(|e| e.id.as_str()).collect();
        let existing = store.existing_ids(IdTable::Feedback, &ids).await?;
        feedback.retain(|e| !existing.contains(&e.id));
        out.duplicates += existing.len() as u64;
    }

    let t1 = Instant::now();
    let attempts: Vec<AttemptRow> = inferences.iter().flat_map(|e| AttemptRow::all_of(e)).collect();
    let t2 = Instant::now();
    store.insert_rows("attempts", &attempts).await?;
    out.attempts = attempts.len() as u64;
    let t3 = Instant::now();
    let rows: Vec<InferenceRow> = inferences.iter().map(|e| InferenceRow::from_event(e, bodies)).collect();
    let t4 = Instant::now();
    store.insert_rows("inferences", &rows).await?;
    let t5 = Instant::now();
    if std::env::var_os("SHIP_TIMING").is_some() { eprintln!("batch {}: check {:?} arows {:?} ains {:?} irows {:?} iins {:?}", records.len(), t1-t0, t2-t1, t3-t2, t4-t3, t5-t4); }
    out.inferences = rows.len() as u64;
    let rows: Vec<FeedbackRow> = feedback.iter().map(|e| FeedbackRow::from_event(e)).collect();
    store.insert_rows("feedback", &rows).await?;
    out.feedback = rows.len() as u64;
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
        ShipperHandle { wal, counters, stop: stop_tx, wake, task: Some(task) }
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
        let last_error = c.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
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
        ShutdownReport { drained: wal.records_pending == 0, wal }
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
            let age = if deadline.is_some() { Duration::ZERO } else { self.cfg.max_segment_age };
            let wal = Arc::clone(&self.wal);
            let sealed = tokio::task::spawn_blocking(move || wal.seal_if_older(age)).await;
            if let Err(e) = sealed.map_err(ShipError::from).and_then(|r| r.map_err(ShipError::from)) {
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
                for seg in segments {
                    self.ship_segment(seg).await?;
                }
                Ok::<_, ShipError>(())
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
        *self.counters.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((crate::now_ms(), e.to_string()));
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

    async fn ship_segment(&self, seg: SegmentMeta) -> Result<(), ShipError> {
        let path = seg.path.clone();
        let tr = Instant::now();
        let contents = tokio::task::spawn_blocking(move || wal::read_segment(&path)).await??;
        if std::env::var_os("SHIP_TIMING").is_some() { eprintln!("read segment {} recs {:?}", contents.records.len(), tr.elapsed()); }
        let mut total = BatchOutcome::default();
        for batch in contents.records.chunks(self.cfg.batch_rows.max(1)) {
            let o = ship_batch(&self.store, batch, self.cfg.bodies).await?;
            total.inferences += o.inferences;
            total.attempts += o.attempts;
            total.feedback += o.feedback;
            total.duplicates += o.duplicates;
        }
        let wal = Arc::clone(&self.wal);
        let seq = seg.seq;
        if contents.is_damaged() {
            tracing::error!(
                seq,
                corrupt_bytes = contents.corrupt_bytes,
                undecodable = contents.undecodable,
                shipped = contents.records.len(),
                "WAL segment had unreadable regions; shipped the readable records, quarantining it"
            );
            tokio::task::spawn_blocking(move || wal.quarantine_segment(seq)).await??;
        } else {
            tokio::task::spawn_blocking(move || wal.remove_segment(seq)).await??;
        }
        let c = &self.counters;
        c.inferences.fetch_add(total.inferences, Ordering::Relaxed);
        c.attempts.fetch_add(total.attempts, Ordering::Relaxed);
        c.feedback.fetch_add(total.feedback, Ordering::Relaxed);
        c.duplicates.fetch_add(total.duplicates, Ordering::Relaxed);
        c.segments_shipped.fetch_add(1, Ordering::Relaxed);
        c.last_success_ms.store(crate::now_ms(), Ordering::Relaxed);
        if c.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(seq, "shipping to ClickHouse recovered");
        }
        tracing::debug!(seq, ?total, "WAL segment shipped");
        Ok(())
    }
}
