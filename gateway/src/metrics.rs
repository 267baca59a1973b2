//! Prometheus metrics. Inference metrics are derived from metering events
//! (see `MetricsSink`); HTTP-level metrics come from the metrics layer.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::metering::{AttemptOutcome, InferenceEvent};

/// Buckets in seconds, fine at the low end where gateway overhead lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    latency: HistogramVec,
    ttft: HistogramVec,
    overhead: HistogramVec,
    attempts: IntCounterVec,
    retries: IntCounterVec,
    fallbacks: IntCounterVec,
    failovers: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub redis_up: prometheus::IntGauge,
    pub rate_limit_fallbacks: prometheus::IntCounter,
    pub rate_limited: IntCounterVec,
    /// Events left out of the JSONL file because its queue was full.
    pub metering_dropped: prometheus::IntCounter,
    pub feedback: IntCounterVec,
    capture: CaptureMetrics,
}

/// The write-ahead log and shipper, read from their stats at scrape time.
struct CaptureMetrics {
    wal_bytes: prometheus::IntGauge,
    wal_records_pending: prometheus::IntGauge,
    oldest_unshipped_age: prometheus::Gauge,
    dropped_full: prometheus::IntGauge,
    rows_shipped: IntGaugeVec,
    ship_failures: prometheus::IntGauge,
    duplicates_skipped: prometheus::IntGauge,
}

impl CaptureMetrics {
    #[expect(
        clippy::expect_used,
        reason = "static metric names and labels: a failure is a programming error that every test hits at start"
    )]
    fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).expect("metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric names");
            g
        };
        let age = prometheus::Gauge::new(
            "flywheel_wal_oldest_unshipped_age_seconds",
            "Age of the oldest event not yet in ClickHouse (0 when caught up)",
        )
        .expect("metric");
        registry
            .register(Box::new(age.clone()))
            .expect("unique metric names");
        let rows = IntGaugeVec::new(
            Opts::new(
                "flywheel_capture_rows_shipped_total",
                "Rows inserted into ClickHouse since start, by table",
            ),
            &["table"],
        )
        .expect("metric");
        registry
            .register(Box::new(rows.clone()))
            .expect("unique metric names");
        Self {
            wal_bytes: gauge(
                "flywheel_wal_bytes",
                "Bytes of write-ahead log segments on disk",
            ),
            wal_records_pending: gauge(
                "flywheel_wal_records_pending",
                "Events in the log not yet shipped",
            ),
            oldest_unshipped_age: age,
            dropped_full: gauge(
                "flywheel_wal_dropped_full_total",
                "Events refused since start because the log reached capture.max_bytes",
            ),
            rows_shipped: rows,
            ship_failures: gauge(
                "flywheel_capture_ship_failures_total",
                "Failed shipping rounds since start",
            ),
            duplicates_skipped: gauge(
                "flywheel_capture_duplicates_skipped_total",
                "Replayed events not inserted because ClickHouse already had them",
            ),
        }
    }
}

#[expect(
    clippy::expect_used,
    reason = "static metric names and labels: a failure is a programming error that every test hits at start"
)]
fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("metric")
}

impl Metrics {
    #[expect(
        clippy::expect_used,
        reason = "static metric names and labels: a failure is a programming error that every test hits at start"
    )]
    pub fn new() -> Self {
        let rv = &["route", "variant"];
        let registry = Registry::new();
        let capture = CaptureMetrics::new(&registry);
        let m = Self {
            registry,
            capture,
            http_requests: IntCounterVec::new(
                Opts::new(
                    "flywheel_http_requests_total",
                    "HTTP requests by path and status",
                ),
                &["path", "status"],
            )
            .expect("metric"),
            http_duration: histogram(
                "flywheel_http_request_duration_seconds",
                "HTTP request duration by path",
                &["path"],
            ),
            requests: IntCounterVec::new(
                Opts::new(
                    "flywheel_requests_total",
                    "Inference requests by route, variant and status",
                ),
                &["route", "variant", "status"],
            )
            .expect("metric"),
            tokens: IntCounterVec::new(
                Opts::new(
                    "flywheel_tokens_total",
                    "Tokens by route, variant and kind (prompt, completion)",
                ),
                &["route", "variant", "kind"],
            )
            .expect("metric"),
            cost: CounterVec::new(
                Opts::new(
                    "flywheel_cost_usd_total",
                    "Upstream cost in USD, all attempts",
                ),
                rv,
            )
            .expect("metric"),
            latency: histogram(
                "flywheel_request_latency_seconds",
                "Total request latency",
                rv,
            ),
            ttft: histogram(
                "flywheel_ttft_seconds",
                "Time to first token of streamed answers",
                rv,
            ),
            overhead: histogram(
                "flywheel_gateway_overhead_seconds",
                "Latency added by the gateway itself",
                rv,
            ),
            attempts: IntCounterVec::new(
                Opts::new(
                    "flywheel_attempts_total",
                    "Upstream attempts by provider and outcome",
                ),
                &["provider", "outcome"],
            )
            .expect("metric"),
            retries: IntCounterVec::new(
                Opts::new("flywheel_retries_total", "Attempts after the first one"),
                rv,
            )
            .expect("metric"),
            fallbacks: IntCounterVec::new(
                Opts::new(
                    "flywheel_fallbacks_total",
                    "Requests answered by a fallback target",
                ),
                rv,
            )
            .expect("metric"),
            failovers: IntCounterVec::new(
                Opts::new(
                    "flywheel_stream_failovers_total",
                    "Streams continued on another attempt",
                ),
                rv,
            )
            .expect("metric"),
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "flywheel_circuit_state",
                    "Circuit breaker per provider: 0 closed, 1 open, 2 half-open",
                ),
                &["provider"],
            )
            .expect("metric"),
            redis_up: prometheus::IntGauge::new(
                "flywheel_redis_up",
                "1 while Redis answers; 0 = per-process limits, last known weights",
            )
            .expect("metric"),
            rate_limit_fallbacks: prometheus::IntCounter::new(
                "flywheel_rate_limit_local_fallbacks_total",
                "Rate-limit decisions taken per process because Redis was unavailable",
            )
            .expect("metric"),
            metering_dropped: prometheus::IntCounter::new(
                "flywheel_metering_events_dropped_total",
                "Events left out of the JSONL file because metering.max_queued_bytes were waiting for the disk",
            )
            .expect("metric"),
            feedback: IntCounterVec::new(
                Opts::new(
                    "flywheel_feedback_total",
                    "Feedback recorded, by metric and source (api, implicit:*)",
                ),
                &["metric", "source"],
            )
            .expect("metric"),
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "flywheel_rate_limited_total",
                    "Requests refused with 429 by tenant",
                ),
                &["tenant"],
            )
            .expect("metric"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.requests.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.cost.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.ttft.clone()),
            Box::new(m.overhead.clone()),
            Box::new(m.attempts.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.fallbacks.clone()),
            Box::new(m.failovers.clone()),
            Box::new(m.circuit_state.clone()),
            Box::new(m.redis_up.clone()),
            Box::new(m.rate_limit_fallbacks.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.feedback.clone()),
            Box::new(m.metering_dropped.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("unique metric names");
        }
        m
    }

    /// Copies the capture stats into the metrics (called at scrape time).
    pub fn observe_capture(&self, stats: &flywheel_feedback::CaptureStats, now_ms: u64) {
        let c = &self.capture;
        let (w, s) = (&stats.wal, &stats.shipper);
        c.wal_bytes.set(w.bytes_on_disk as i64);
        c.wal_records_pending.set(w.records_pending as i64);
        c.oldest_unshipped_age.set(
            w.oldest_unshipped_ts_ms
                .map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0),
        );
        c.dropped_full.set(w.dropped_full as i64);
        c.rows_shipped
            .with_label_values(&["inferences"])
            .set(s.inferences_shipped as i64);
        c.rows_shipped
            .with_label_values(&["attempts"])
            .set(s.attempts_shipped as i64);
        c.rows_shipped
            .with_label_values(&["feedback"])
            .set(s.feedback_shipped as i64);
        c.ship_failures.set(s.ship_failures as i64);
        c.duplicates_skipped.set(s.duplicates_skipped as i64);
    }

    pub fn observe(&self, e: &InferenceEvent) {
        let rv = [e.route.as_str(), e.variant.as_str()];
        self.requests
            .with_label_values(&[&e.route, &e.variant, &e.status.to_string()])
            .inc();
        self.tokens
            .with_label_values(&[&e.route, &e.variant, "prompt"])
            .inc_by(e.prompt_tokens);
        self.tokens
            .with_label_values(&[&e.route, &e.variant, "completion"])
            .inc_by(e.completion_tokens);
        self.cost.with_label_values(&rv).inc_by(e.cost_usd);
        self.latency
            .with_label_values(&rv)
            .observe(e.latency_ms / 1000.0);
        self.overhead
            .with_label_values(&rv)
            .observe(e.overhead_ms / 1000.0);
        if let Some(t) = e.ttft_ms {
            self.ttft.with_label_values(&rv).observe(t / 1000.0);
        }
        if e.retries > 0 {
            self.retries
                .with_label_values(&rv)
                .inc_by(u64::from(e.retries));
        }
        if e.fallback_depth > 0 {
            self.fallbacks.with_label_values(&rv).inc();
        }
        if e.failovers > 0 {
            self.failovers
                .with_label_values(&rv)
                .inc_by(u64::from(e.failovers));
        }
        for a in &e.attempts {
            self.attempts
                .with_label_values(&[&a.provider, outcome_label(a.outcome)])
                .inc();
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn outcome_label(o: AttemptOutcome) -> &'static str {
    match o {
        AttemptOutcome::Ok => "ok",
        AttemptOutcome::ErrorStatus => "error_status",
        AttemptOutcome::ConnectError => "connect_error",
        AttemptOutcome::Timeout => "timeout",
        AttemptOutcome::ValidationFailed => "validation_failed",
        AttemptOutcome::MidStreamFailover => "mid_stream_failover",
        AttemptOutcome::CircuitOpen => "circuit_open",
        AttemptOutcome::BadResponse => "bad_response",
        AttemptOutcome::ClientClosed => "client_closed",
    }
}
