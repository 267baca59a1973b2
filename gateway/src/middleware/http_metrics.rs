//! Counts HTTP requests and their duration by path and status. Paths are
//! bounded to the known routes so that scanners cannot blow up the label
//! cardinality.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, response::Response};
use futures_util::future::BoxFuture;
use http::Request;
use tower::{Layer, Service};

use crate::metrics::Metrics;

const KNOWN_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/metrics",
    "/health",
    "/admin/routes",
];

fn path_label(path: &str) -> &'static str {
    KNOWN_PATHS
        .iter()
        .find(|p| **p == path)
        .copied()
        .unwrap_or(if path.starts_with("/admin/") {
            "/admin/*"
        } else {
            "other"
        })
}

/// When the request reached the gateway; the metering clock starts here so
/// that body parsing and auth count as gateway overhead.
#[derive(Clone, Copy, Debug)]
pub struct RequestStart(pub Instant);

#[derive(Clone)]
pub struct HttpMetricsLayer {
    metrics: Arc<Metrics>,
}

impl HttpMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    metrics: Arc<Metrics>,
    inner: S,
}

impl<S> Service<Request<Body>> for HttpMetrics<S>
where
    S: Service<Request<Body>, Response = Response> + Send,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let path = path_label(req.uri().path());
        let start = Instant::now();
        req.extensions_mut().insert(RequestStart(start));
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            // For streams this is the time to the response head; the full
            // duration is in flywheel_request_latency_seconds.
            metrics
                .http_duration
                .with_label_values(&[path])
                .observe(start.elapsed().as_secs_f64());
            metrics
                .http_requests
                .with_label_values(&[path, response.status().as_str()])
                .inc();
            Ok(response)
        })
    }
}
