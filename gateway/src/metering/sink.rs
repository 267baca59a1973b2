//! Where events go. Recording never blocks the request path: sinks hand the
//! event to a background writer.

use std::{io::Write, path::Path, sync::Arc};

use flywheel_feedback::{Capture, Record};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    config::{MeteringConfig, SinkKind},
    metrics::Metrics,
};

pub trait EventSink: Send + Sync + 'static {
    fn record(&self, record: Record);
    /// Writes out everything recorded so far; called on shutdown.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

pub struct NullSink;

impl EventSink for NullSink {
    fn record(&self, _record: Record) {}
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Appends one JSON object per line (`{"inference": …}` or
/// `{"feedback": …}`). A background thread owns the file so that disk
/// latency never reaches a request. Nothing here survives a crash: the
/// write-ahead log (`[capture]`) is the lossless path.
pub struct JsonlSink {
    tx: Mutex<Option<mpsc::UnboundedSender<Record>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl JsonlSink {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            while let Some(event) = rx.blocking_recv() {
                let mut write = |e: &Record| -> std::io::Result<()> {
                    serde_json::to_writer(&mut out, e)?;
                    out.write_all(b"\n")
                };
                if let Err(e) = write(&event) {
                    tracing::error!(error = %e, "cannot write metering event");
                }
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
            writer: Mutex::new(Some(writer)),
        })
    }
}

impl EventSink for JsonlSink {
    fn record(&self, record: Record) {
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send(record);
        }
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

/// Appends each record to the write-ahead log, synchronously: when
/// `record` returns, the record is in the log file (in the page cache, and
/// on disk per the fsync policy), so an answered request survives a SIGKILL
/// of the gateway. A write costs microseconds; with `fsync = "always"` it
/// also waits for the disk.
pub struct WalSink {
    capture: Arc<Capture>,
}

impl WalSink {
    pub fn new(capture: Arc<Capture>) -> Self {
        Self { capture }
    }
}

impl EventSink for WalSink {
    fn record(&self, record: Record) {
        if let Err(e) = self.capture.append(std::slice::from_ref(&record)) {
            // Full log: counted in the WAL stats (documented policy: new
            // records are refused, unshipped ones are never dropped).
            tracing::error!(error = %e, id = record.id(), "event not captured");
        }
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
    fn record(&self, record: Record) {
        match &record {
            Record::Inference(e) => self.metrics.observe(e),
            Record::Feedback(f) => self
                .metrics
                .feedback
                .with_label_values(&[&f.metric, &f.source])
                .inc(),
        }
        if let Some((last, rest)) = self.sinks.split_last() {
            for sink in rest {
                sink.record(record.clone());
            }
            last.record(record);
        }
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
        SinkKind::Jsonl => sinks.push(Box::new(JsonlSink::open(&config.path)?)),
    }
    Ok(Arc::new(MetricsSink::new(metrics, sinks)))
}
