//! Where events go. Recording never blocks a runtime thread: sinks hand the
//! event to a background writer (the metering file), or to the write-ahead
//! log's writer thread and await its group commit.
//!
//! A sink that cannot take an event says so ([`NotRecorded`]). What happens
//! then is the caller's policy: an answered inference is served and the
//! loss counted (`flywheel_wal_dropped_full_total`,
//! `flywheel_metering_events_dropped_total`); explicit feedback is refused
//! with 503, so the client knows to send it again. With
//! `capture.when_log_refuses = "refuse"`, new inference requests are
//! answered 503 while [`EventSink::accepting`] says no, and an answer whose
//! own event was refused is withheld ([`crate::metering::Recorded`]): a
//! client never holds an answer that the log lost.

use std::{
    io::Write,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use flywheel_feedback::{Capture, Record, WalError};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    config::{MeteringConfig, SinkKind},
    metrics::Metrics,
};

/// A sink refused an event (a full or failing log, a writer too far
/// behind); the reason is for the log, not for tenants.
#[derive(Debug, thiserror::Error)]
#[error("event not recorded: {0}")]
pub struct NotRecorded(pub String);

pub trait EventSink: Send + Sync + 'static {
    /// Takes the event; resolves once the sink holds it as durably as it
    /// promises (the write-ahead log: written, per its fsync policy).
    fn record(&self, record: Record) -> BoxFuture<'_, Result<(), NotRecorded>>;
    /// Whether a record now would likely be taken: false while the log is
    /// full or failing (`capture.when_log_refuses = "refuse"` asks this
    /// before serving). Cheap while it is taking records.
    fn accepting(&self) -> bool {
        true
    }
    /// Writes out everything recorded so far; called on shutdown.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

pub struct NullSink;

impl EventSink for NullSink {
    fn record(&self, _record: Record) -> BoxFuture<'_, Result<(), NotRecorded>> {
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Appends one JSON object per line (`{"inference": …}` or
/// `{"feedback": …}`). A background thread owns the file so that disk
/// latency never reaches a request. Nothing here survives a crash: the
/// write-ahead log (`[capture]`) is the lossless path.
///
/// Lines waiting for the writer hold at most `max_queued_bytes`: when the
/// disk falls that far behind, a new event is left out of the file
/// (counted in `flywheel_metering_events_dropped_total`, logged) instead of
/// growing memory or blocking the request that recorded it.
pub struct JsonlSink {
    tx: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// Bytes of the lines sent and not yet written.
    queued: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    dropped: prometheus::IntCounter,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl JsonlSink {
    pub fn open(
        path: &Path,
        max_queued_bytes: usize,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // Unbounded as a channel; bounded in bytes by `queued`.
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            while let Some(line) = rx.blocking_recv() {
                if let Err(e) = out.write_all(&line) {
                    tracing::error!(error = %e, "cannot write metering event");
                }
                written.fetch_sub(line.len(), Ordering::AcqRel);
                // Flush once the burst is written, not per event.
                if rx.is_empty() {
                    if let Err(e) = out.flush() {
                        tracing::error!(error = %e, "cannot flush metering events");
                    }
                }
            }
            let _ = out.flush();
        });
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            queued,
            max_queued_bytes,
            dropped,
            writer: Mutex::new(Some(writer)),
        })
    }
}

impl JsonlSink {
    fn queue(&self, record: &Record) -> Result<(), NotRecorded> {
        // Serialised here, so that the queue's bytes are known exactly.
        let mut line = serde_json::to_vec(&record).map_err(|e| {
            tracing::error!(error = %e, "cannot serialise metering event");
            NotRecorded(format!("cannot serialise: {e}"))
        })?;
        line.push(b'\n');
        let len = line.len();
        // Take the room before sending, so that concurrent records cannot
        // overshoot the limit together.
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > self.max_queued_bytes {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.dropped.inc();
            tracing::warn!(
                id = record.id(),
                queued = before,
                "metering file behind by metering.max_queued_bytes: event left out"
            );
            return Err(NotRecorded(
                "the metering file is behind by metering.max_queued_bytes".into(),
            ));
        }
        let sent = self.tx.lock().as_ref().map(|tx| tx.send(line).is_ok());
        if sent != Some(true) {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(NotRecorded("the metering file is closed".into()));
        }
        Ok(())
    }
}

impl EventSink for JsonlSink {
    fn record(&self, record: Record) -> BoxFuture<'_, Result<(), NotRecorded>> {
        let queued = self.queue(&record);
        Box::pin(async move { queued })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Dropping the sender ends the writer loop after it drained the queue.
        self.tx.lock().take();
        let writer = self.writer.lock().take();
        Box::pin(async move {
            if let Some(w) = writer {
                let _ = w.await;
            }
        })
    }
}

/// Appends each record to the write-ahead log: when `record` resolves, the
/// record is in the log file (in the page cache, and on disk per the fsync
/// policy), so an answered request survives a SIGKILL of the gateway. The
/// log's writer thread does the I/O for a whole group of requests at once
/// (`flywheel_feedback::wal::GroupCommit`); the request only awaits it.
pub struct WalSink {
    capture: Arc<Capture>,
    /// Set by a refused record, cleared by a taken one, or when the log has
    /// room again (the shipper emptied it).
    refusing: AtomicBool,
    /// When the last record failed on the disk itself (a full file system,
    /// an I/O error) rather than on the log's quota, in ms since the Unix
    /// epoch; 0 when the last refusal was the quota's, or none.
    failed_at_ms: AtomicU64,
}

impl WalSink {
    /// Free quota taken to mean "a record would fit": more than a large
    /// event with its bodies (an eighth of a smaller quota).
    const ROOM: u64 = 256 * 1024;
    /// After the disk refused a record, how long `accepting` says no before
    /// it lets requests through to try the disk again. The quota can be
    /// read; a failing disk can only be tried, and each try costs an
    /// upstream call whose answer is withheld if its record fails.
    const PROBE_MS: u64 = 1_000;

    pub fn new(capture: Arc<Capture>) -> Self {
        Self {
            capture,
            refusing: AtomicBool::new(false),
            failed_at_ms: AtomicU64::new(0),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventSink for WalSink {
    fn record(&self, record: Record) -> BoxFuture<'_, Result<(), NotRecorded>> {
        Box::pin(async move {
            let appended = self.capture.append(std::slice::from_ref(&record)).await;
            self.refusing.store(appended.is_err(), Ordering::Relaxed);
            let on_disk = matches!(appended, Err(ref e) if !matches!(e, WalError::Full { .. }));
            self.failed_at_ms
                .store(if on_disk { now_ms().max(1) } else { 0 }, Ordering::Relaxed);
            appended.map_err(|e| {
                // Full log: counted in the WAL stats (documented policy: new
                // records are refused, unshipped ones are never dropped).
                tracing::error!(error = %e, id = record.id(), "event not captured");
                NotRecorded(e.to_string())
            })
        })
    }
    fn accepting(&self) -> bool {
        if !self.refusing.load(Ordering::Relaxed) {
            return true;
        }
        let failed_at = self.failed_at_ms.load(Ordering::Relaxed);
        if failed_at != 0 && now_ms().saturating_sub(failed_at) < Self::PROBE_MS {
            return false;
        }
        // A failing disk with quota left passes here once a probe interval
        // has gone by: the next record tells.
        let wal = self.capture.wal();
        let room = wal.room() >= Self::ROOM.min(wal.config().max_bytes / 8);
        if room && failed_at == 0 {
            self.refusing.store(false, Ordering::Relaxed);
        }
        room
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Updates the Prometheus metrics from each event, then passes it to every
/// configured sink.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    sinks: Vec<Box<dyn EventSink>>,
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>, sinks: Vec<Box<dyn EventSink>>) -> Self {
        Self { metrics, sinks }
    }
}

impl EventSink for MetricsSink {
    fn record(&self, record: Record) -> BoxFuture<'_, Result<(), NotRecorded>> {
        match &record {
            Record::Inference(e) => self.metrics.observe(e),
            Record::Feedback(f) => self
                .metrics
                .feedback
                .with_label_values(&[&f.metric, &f.source])
                .inc(),
        }
        Box::pin(async move {
            // Every sink gets the event; the first refusal is reported.
            let mut recorded = Ok(());
            if let Some((last, rest)) = self.sinks.split_last() {
                for sink in rest {
                    let r = sink.record(record.clone()).await;
                    recorded = recorded.and(r);
                }
                let r = last.record(record).await;
                recorded = recorded.and(r);
            }
            recorded
        })
    }
    fn accepting(&self) -> bool {
        self.sinks.iter().all(|sink| sink.accepting())
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for sink in &self.sinks {
                sink.shutdown().await;
            }
        })
    }
}

/// The sinks of a config: the capture log (if any) first, so that a record
/// is durable before anything else sees it, then the metering file.
pub fn build_sink(
    config: &MeteringConfig,
    capture: Option<Arc<Capture>>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Arc<dyn EventSink>> {
    let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
    if let Some(capture) = capture {
        sinks.push(Box::new(WalSink::new(capture)));
    }
    match config.sink {
        SinkKind::None => {}
        SinkKind::Jsonl => sinks.push(Box::new(JsonlSink::open(
            &config.path,
            config.max_queued_bytes,
            metrics.metering_dropped.clone(),
        )?)),
    }
    Ok(Arc::new(MetricsSink::new(metrics, sinks)))
}

#[cfg(test)]
mod tests {
    use flywheel_feedback::event::{FeedbackEvent, FeedbackTarget, FeedbackValue};

    use super::*;

    fn feedback(n: usize) -> Record {
        Record::Feedback(FeedbackEvent {
            id: format!("f{n}"),
            ts_ms: 0,
            tenant: "t".into(),
            target: FeedbackTarget::inference("i"),
            route: "r".into(),
            variant: "v".into(),
            metric: "m".into(),
            value: FeedbackValue::Boolean(true),
            tags: Default::default(),
            idempotency_key: None,
            source: "api".into(),
        })
    }

    async fn lines(sink: JsonlSink, path: &Path) -> usize {
        sink.shutdown().await;
        std::fs::read_to_string(path).unwrap().lines().count()
    }

    #[tokio::test]
    async fn events_past_the_queued_bytes_are_left_out_and_counted() {
        let dir = std::env::temp_dir().join(format!("flywheel-sink-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        // Smaller than one event: nothing can be queued.
        let sink = JsonlSink::open(&path, 16, dropped.clone()).unwrap();
        for n in 0..100 {
            assert!(
                sink.record(feedback(n)).await.is_err(),
                "a left-out event is reported"
            );
        }
        assert_eq!(lines(sink, &path).await, 0);
        assert_eq!(dropped.get(), 100);

        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let sink = JsonlSink::open(&path, 1 << 20, dropped.clone()).unwrap();
        for n in 0..100 {
            sink.record(feedback(n)).await.unwrap();
        }
        assert!(sink.queued.load(Ordering::Acquire) <= 1 << 20);
        assert_eq!(lines(sink, &path).await, 100);
        assert_eq!(dropped.get(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
