//! Counts HTTP requests and their duration by path and status. Paths are
//! bounded to the known routes so that scanners cannot blow up the label
//! cardinality.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

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

/// Counts every request by path label and status, and times it to the
/// response head (for streams, the full duration is in
/// `flywheel_request_latency_seconds`). Inserts [`RequestStart`].
pub async fn record_http_metrics(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = path_label(req.uri().path());
    let start = Instant::now();
    req.extensions_mut().insert(RequestStart(start));
    let response = next.run(req).await;
    metrics
        .http_duration
        .with_label_values(&[path])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[path, response.status().as_str()])
        .inc();
    response
}
