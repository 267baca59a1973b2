//! Where events go. Recording never blocks the request path: sinks hand the
//! event to a background writer.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::InferenceEvent;
use crate::config::{MeteringConfig, SinkKind};
use crate::metrics::Metrics;

pub trait EventSink: Send + Sync + 'static {
    fn record(&self, event: InferenceEvent);
    /// Writes out everything recorded so far; called on shutdown.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

pub struct NullSink;

impl EventSink for NullSink {
    fn record(&self, _event: InferenceEvent) {}
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Appends one JSON object per line. A background thread owns the file so
/// that disk latency never reaches a request.
pub struct JsonlSink {
    tx: Mutex<Option<mpsc::UnboundedSender<InferenceEvent>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl JsonlSink {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<InferenceEvent>();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            while let Some(event) = rx.blocking_recv() {
                let mut write = |e: &InferenceEvent| -> std::io::Result<()> {
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
        Ok(Self { tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) })
    }
}

impl EventSink for JsonlSink {
    fn record(&self, event: InferenceEvent) {
        if let Some(tx) = self.tx.lock().expect("sink lock").as_ref() {
            let _ = tx.send(event);
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Dropping the sender ends the writer loop after it drained the queue.
        self.tx.lock().expect("sink lock").take();
        let writer = self.writer.lock().expect("sink lock").take();
        Box::pin(async move {
            if let Some(w) = writer {
                let _ = w.await;
            }
        })
    }
}

/// Updates the Prometheus metrics from each event, then passes it on.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    inner: Box<dyn EventSink>,
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>, inner: Box<dyn EventSink>) -> Self {
        Self { metrics, inner }
    }
}

impl EventSink for MetricsSink {
    fn record(&self, event: InferenceEvent) {
        self.metrics.observe(&event);
        self.inner.record(event);
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown()
    }
}

pub fn build_sink(config: &MeteringConfig, metrics: Arc<Metrics>) -> std::io::Result<Arc<dyn EventSink>> {
    let inner: Box<dyn EventSink> = match config.sink {
        SinkKind::None => Box::new(NullSink),
        SinkKind::Jsonl => Box::new(JsonlSink::open(&config.path)?),
    };
    Ok(Arc::new(MetricsSink::new(metrics, inner)))
}
