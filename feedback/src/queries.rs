//! The analytics reads used by dashboards, the feedback endpoint and the
//! canary, in one place, with typed rows.
//!
//! Deduplication: reads of base tables use `FINAL` (ReplacingMergeTree
//! collapses rows with the same id), so a replayed event that slipped
//! through counts once; the rollups are exact because the shipper never
//! inserts an existing id (crate docs, "Exactly once").
//!
//! Windows are `[from_ms, to_ms)` on the event's `ts_ms`: the inference's
//! arrival for request metrics, the feedback's arrival for feedback metrics
//! (attributed to the variant recorded on the feedback event). Each query
//! also bounds the `date` column so ClickHouse skips other partitions.

use serde::{Deserialize, Serialize};

use crate::store::{rows::date_of, timed, Result, Store};

/// `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl TimeWindow {
    pub fn new(from_ms: u64, to_ms: u64) -> Self {
        Self { from_ms, to_ms }
    }

    /// The last `ms` milliseconds up to now.
    pub fn last(ms: u64) -> Self {
        let now = crate::now_ms();
        Self {
            from_ms: now.saturating_sub(ms),
            to_ms: now,
        }
    }

    fn first_day(&self) -> u16 {
        date_of(self.from_ms)
    }

    fn last_day(&self) -> u16 {
        date_of(self.to_ms)
    }
}

/// Quantile levels of latency/TTFT figures: p50, p95, p99.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

fn quantile(q: &[f64], i: usize) -> Option<f64> {
    q.get(i).copied().and_then(finite)
}

/// Request metrics of one variant of a route over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantSummary {
    pub variant: String,
    pub requests: u64,
    /// Share of requests answered with a 5xx status.
    pub error_rate: f64,
    /// Share answered with a 4xx status.
    pub client_error_rate: f64,
    /// Share whose structured output failed validation on every attempt.
    pub validation_failure_rate: f64,
    /// Share of requests with at least one retry.
    pub retry_rate: f64,
    /// Retries in total.
    pub retries: u64,
    /// Share answered by a fallback target (depth > 0).
    pub fallback_rate: f64,
    /// Interpolated quantiles (ClickHouse `quantiles`, exact up to 8192
    /// values, reservoir-sampled beyond).
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    /// Mean TTFT of the requests that have one (streams); None if none do.
    pub mean_ttft_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Feedback on this variant in the window, per metric (sorted).
    pub feedback: Vec<MetricStats>,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct SummaryRow {
    variant: String,
    requests: u64,
    server_errors: u64,
    client_errors: u64,
    validation_failures: u64,
    retried: u64,
    retries: u64,
    fallbacks: u64,
    latency_q: Vec<f64>,
    ttft_avg: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
}

/// Feedback statistics of one metric for one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct MetricStats {
    pub variant: String,
    pub metric: String,
    /// Feedback events of any kind.
    pub count: u64,
    /// Boolean and float values (what `mean` averages; booleans as 0/1).
    pub numeric_count: u64,
    pub sum: f64,
    /// Sample variance of the numeric values (NaN below 2 values).
    pub variance: f64,
}

impl MetricStats {
    pub fn mean(&self) -> Option<f64> {
        (self.numeric_count > 0).then(|| self.sum / self.numeric_count as f64)
    }

    pub fn variance(&self) -> Option<f64> {
        finite(self.variance)
    }
}

/// One minute of one variant, from the rollup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinutePoint {
    /// Start of the minute, Unix ms.
    pub minute_ms: u64,
    pub variant: String,
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub validation_failures: u64,
    pub retried: u64,
    pub retries: u64,
    pub fallbacks: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// p50, p95, p99; None when no value.
    pub latency_ms: [Option<f64>; 3],
    pub ttft_ms: [Option<f64>; 3],
    pub mean_ttft_ms: Option<f64>,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct MinuteRow {
    minute: u32,
    variant: String,
    requests: u64,
    errors: u64,
    client_errors: u64,
    validation_failures: u64,
    retried: u64,
    retries: u64,
    fallbacks: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    latency_q: Vec<f64>,
    ttft_q: Vec<f64>,
    ttft_avg: f64,
}

/// Feedback of one metric, one variant, one minute, from the rollup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackMinutePoint {
    pub minute_ms: u64,
    pub variant: String,
    pub count: u64,
    pub numeric_count: u64,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct FeedbackMinuteRow {
    minute: u32,
    variant: String,
    count: u64,
    numeric_count: u64,
    sum: f64,
}

/// Who an inference belongs to: what the feedback endpoint checks before
/// accepting feedback, and what it copies onto the feedback event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct InferenceOwner {
    pub tenant: String,
    pub episode_id: Option<String>,
    pub route: String,
    pub variant: String,
}

/// A canary's view of two variants on one feedback metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantComparison {
    pub metric: String,
    pub baseline: MetricStats,
    pub candidate: MetricStats,
    /// Request metrics; None when the variant served nothing in the window.
    pub baseline_requests: Option<VariantSummary>,
    pub candidate_requests: Option<VariantSummary>,
}

impl VariantComparison {
    /// candidate mean - baseline mean, when both have values.
    pub fn mean_delta(&self) -> Option<f64> {
        Some(self.candidate.mean()? - self.baseline.mean()?)
    }
}

impl Store {
    /// (a) Per-variant request metrics of `route` over `window`, with
    /// feedback per metric. Sorted by variant.
    pub async fn variant_summary(
        &self,
        route: &str,
        window: TimeWindow,
    ) -> Result<Vec<VariantSummary>> {
        let sql = format!(
            "SELECT variant, count(), countIf(status >= 500), countIf(status >= 400 AND status < 500), \
                countIf(validation = 'failed'), countIf(retries > 0), sum(toUInt64(retries)), \
                countIf(fallback_depth > 0), quantiles(0.5, 0.95, 0.99)(latency_ms), \
                avgIf(assumeNotNull(ttft_ms), isNotNull(ttft_ms)), \
                sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) \
             FROM {db}.inferences FINAL \
             WHERE route = ? AND date >= toDate(?) AND date <= toDate(?) AND ts_ms >= ? AND ts_ms < ? \
             GROUP BY variant ORDER BY variant",
            db = self.database()
        );
        let rows = timed(
            "variant summary",
            self.client()
                .query(&sql)
                .bind(route)
                .bind(window.first_day())
                .bind(window.last_day())
                .bind(window.from_ms)
                .bind(window.to_ms)
                .fetch_all::<SummaryRow>(),
        )
        .await?;
        let feedback = self.metric_stats(route, None, window).await?;
        Ok(rows
            .into_iter()
            .map(|r| VariantSummary {
                error_rate: ratio(r.server_errors, r.requests),
                client_error_rate: ratio(r.client_errors, r.requests),
                validation_failure_rate: ratio(r.validation_failures, r.requests),
                retry_rate: ratio(r.retried, r.requests),
                retries: r.retries,
                fallback_rate: ratio(r.fallbacks, r.requests),
                p50_latency_ms: quantile(&r.latency_q, 0),
                p95_latency_ms: quantile(&r.latency_q, 1),
                p99_latency_ms: quantile(&r.latency_q, 2),
                mean_ttft_ms: finite(r.ttft_avg),
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                cost_usd: r.cost_usd,
                feedback: feedback
                    .iter()
                    .filter(|m| m.variant == r.variant)
                    .cloned()
                    .collect(),
                requests: r.requests,
                variant: r.variant,
            })
            .collect())
    }

    /// Feedback statistics per variant and metric of `route` over `window`
    /// (deduplicated); only `metric` when given. Sorted by variant, metric.
    pub async fn metric_stats(
        &self,
        route: &str,
        metric: Option<&str>,
        window: TimeWindow,
    ) -> Result<Vec<MetricStats>> {
        let sql = format!(
            "SELECT variant, metric, count(), countIf(value_kind IN ('boolean', 'float')), \
                sumIf(value_float, value_kind IN ('boolean', 'float')), \
                varSampIf(value_float, value_kind IN ('boolean', 'float')) \
             FROM {db}.feedback FINAL \
             WHERE route = ? AND date >= toDate(?) AND date <= toDate(?) AND ts_ms >= ? AND ts_ms < ? {filter} \
             GROUP BY variant, metric ORDER BY variant, metric",
            db = self.database(),
            filter = if metric.is_some() { "AND metric = ?" } else { "" }
        );
        let mut q = self
            .client()
            .query(&sql)
            .bind(route)
            .bind(window.first_day())
            .bind(window.last_day())
            .bind(window.from_ms)
            .bind(window.to_ms);
        if let Some(m) = metric {
            q = q.bind(m);
        }
        timed("metric stats", q.fetch_all::<MetricStats>()).await
    }

    /// (b) Per-minute series of `route` from the rollup, per variant,
    /// sorted by minute then variant. Minutes are whole: a window edge
    /// inside a minute includes that minute if it starts in the window.
    pub async fn minute_series(&self, route: &str, window: TimeWindow) -> Result<Vec<MinutePoint>> {
        let sql = format!(
            "SELECT toUInt32(minute), variant, countMerge(requests), sumMerge(server_errors), \
                sumMerge(client_errors), sumMerge(validation_failures), sumMerge(retried), \
                sumMerge(retries_total), sumMerge(fallbacks), sumMerge(prompt_tokens_total), \
                sumMerge(completion_tokens_total), sumMerge(cost_usd_total), \
                quantilesMerge(0.5, 0.95, 0.99)(latency_q), \
                quantilesIfMerge(0.5, 0.95, 0.99)(ttft_q), avgIfMerge(ttft_avg) \
             FROM {db}.inference_rollup_1m \
             WHERE route = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
             GROUP BY minute, variant ORDER BY minute, variant",
            db = self.database()
        );
        let rows = timed(
            "minute series",
            self.client()
                .query(&sql)
                .bind(route)
                .bind(secs(window.from_ms))
                .bind(secs(window.to_ms))
                .fetch_all::<MinuteRow>(),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| MinutePoint {
                minute_ms: r.minute as u64 * 1000,
                variant: r.variant,
                requests: r.requests,
                errors: r.errors,
                client_errors: r.client_errors,
                validation_failures: r.validation_failures,
                retried: r.retried,
                retries: r.retries,
                fallbacks: r.fallbacks,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                cost_usd: r.cost_usd,
                latency_ms: [0, 1, 2].map(|i| quantile(&r.latency_q, i)),
                ttft_ms: [0, 1, 2].map(|i| quantile(&r.ttft_q, i)),
                mean_ttft_ms: finite(r.ttft_avg),
            })
            .collect())
    }

    /// Per-minute feedback series of one metric of `route`, per variant.
    pub async fn feedback_minute_series(
        &self,
        route: &str,
        metric: &str,
        window: TimeWindow,
    ) -> Result<Vec<FeedbackMinutePoint>> {
        let sql = format!(
            "SELECT toUInt32(minute), variant, countMerge(n), sumMerge(numeric_n), sumMerge(value_sum) \
             FROM {db}.feedback_rollup_1m \
             WHERE route = ? AND metric = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
             GROUP BY minute, variant ORDER BY minute, variant",
            db = self.database()
        );
        let rows = timed(
            "feedback minute series",
            self.client()
                .query(&sql)
                .bind(route)
                .bind(metric)
                .bind(secs(window.from_ms))
                .bind(secs(window.to_ms))
                .fetch_all::<FeedbackMinuteRow>(),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| FeedbackMinutePoint {
                minute_ms: r.minute as u64 * 1000,
                variant: r.variant,
                count: r.count,
                numeric_count: r.numeric_count,
                mean: (r.numeric_count > 0).then(|| r.sum / r.numeric_count as f64),
            })
            .collect())
    }

    /// (c) Owner of an inference (also after retention moved it), or None
    /// if ClickHouse does not have it (yet: events reach ClickHouse about
    /// `max_segment_age_ms` after they are served).
    pub async fn inference_owner(&self, inference_id: &str) -> Result<Option<InferenceOwner>> {
        for table in ["inferences", "inferences_retained"] {
            let sql = format!(
                "SELECT tenant, episode_id, route, variant FROM {}.{table} WHERE id = ? LIMIT 1",
                self.database()
            );
            let owner = timed(
                "inference owner",
                self.client()
                    .query(&sql)
                    .bind(inference_id)
                    .fetch_optional::<InferenceOwner>(),
            )
            .await?;
            if owner.is_some() {
                return Ok(owner);
            }
        }
        Ok(None)
    }

    /// Owner of an inference of `tenant` (also after retention moved it),
    /// or None if ClickHouse does not have it, or has it for another
    /// tenant. `id` is the sorting key: one granule read per table.
    pub async fn tenant_inference_owner(
        &self,
        tenant: &str,
        inference_id: &str,
    ) -> Result<Option<InferenceOwner>> {
        for table in ["inferences", "inferences_retained"] {
            let sql = format!(
                "SELECT tenant, episode_id, route, variant FROM {}.{table} \
                 WHERE id = ? AND tenant = ? LIMIT 1",
                self.database()
            );
            let owner = timed(
                "inference owner",
                self.client()
                    .query(&sql)
                    .bind(inference_id)
                    .bind(tenant)
                    .fetch_optional::<InferenceOwner>(),
            )
            .await?;
            if owner.is_some() {
                return Ok(owner);
            }
        }
        Ok(None)
    }

    /// Owner of `tenant`'s episode `episode_id`: its latest inference's, or
    /// None if `tenant` has no inference in that episode (another tenant
    /// using the same client-chosen id does not count). Reads `episodes`
    /// (migration 0009), sorted by (tenant, episode_id): a lookup reads one
    /// granule, whatever the id, so random ids cannot force a scan.
    pub async fn tenant_episode_owner(
        &self,
        tenant: &str,
        episode_id: &str,
    ) -> Result<Option<InferenceOwner>> {
        let sql = format!(
            "SELECT tenant, toNullable(episode_id) AS ep, route, variant FROM {}.episodes \
             WHERE tenant = ? AND episode_id = ? ORDER BY ts_ms DESC LIMIT 1",
            self.database()
        );
        timed(
            "episode owner",
            self.client()
                .query(&sql)
                .bind(tenant)
                .bind(episode_id)
                .fetch_optional::<InferenceOwner>(),
        )
        .await
    }

    /// (d) What a canary compares: `metric` on `baseline` and `candidate`
    /// (counts, means, variances) plus their request metrics.
    pub async fn compare_variants(
        &self,
        route: &str,
        metric: &str,
        baseline: &str,
        candidate: &str,
        window: TimeWindow,
    ) -> Result<VariantComparison> {
        let stats = self.metric_stats(route, Some(metric), window).await?;
        let summaries = self.variant_summary(route, window).await?;
        let pick = |variant: &str| {
            stats
                .iter()
                .find(|s| s.variant == variant)
                .cloned()
                .unwrap_or_else(|| MetricStats {
                    variant: variant.to_owned(),
                    metric: metric.to_owned(),
                    variance: f64::NAN,
                    ..MetricStats::default()
                })
        };
        let summary = |variant: &str| summaries.iter().find(|s| s.variant == variant).cloned();
        Ok(VariantComparison {
            metric: metric.to_owned(),
            baseline: pick(baseline),
            candidate: pick(candidate),
            baseline_requests: summary(baseline),
            candidate_requests: summary(candidate),
        })
    }

    /// Distinct inferences and feedback events stored (deduplicated).
    pub async fn event_counts(&self) -> Result<(u64, u64)> {
        let db = self.database();
        let sql =
            format!("SELECT (SELECT uniqExact(id) FROM {db}.inferences), (SELECT uniqExact(id) FROM {db}.feedback)");
        timed(
            "event counts",
            self.client().query(&sql).fetch_one::<(u64, u64)>(),
        )
        .await
    }
}

fn secs(ms: u64) -> u32 {
    (ms / 1000).min(u32::MAX as u64) as u32
}
