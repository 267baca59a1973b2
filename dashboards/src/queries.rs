//! Every SQL query of the dashboards, with its typed rows.
//!
//! Speed: the time series and the per-model tables read the rollups of
//! migration 0008, whose size does not grow with traffic (one row per
//! bucket and dimension tuple): `inference_rollup_dims_1m` and
//! `feedback_rollup_dims_1m` per minute, and `inference_rollup_dims_1h`
//! when a page's buckets are whole hours ([`Grain`]; long windows). The raw
//! tables are read only where a rollup cannot answer (the failed attempts,
//! the feedback histograms, the join of graded feedback with its inference
//! for success rates), and every such read is bounded by the `date`
//! partition column as well as by `ts_ms`, so ClickHouse skips the other
//! months' partitions and the other days' granules.
//!
//! Safety: user input never becomes SQL text. [`Sql`] appends each filter
//! as a `?` placeholder with its value bound by the `clickhouse` client,
//! which quotes and escapes it (ClickHouse 18.16 has no server-side query
//! parameters). Identifiers in the text are fixed or the database name,
//! which [`flywheel_feedback::store::Store`] checked to be a plain
//! identifier.
//!
//! Served traffic only: rollup reads keep `shadow = 0` (the canary's mirrored
//! requests were never answered to anyone). Replays: like the rollups, the
//! raw reads here do not use `FINAL` (the shipper never inserts an existing
//! id, crate docs of `flywheel-feedback`, "Exactly once"), so a chart and
//! its table always agree.

use clickhouse::Client;
use flywheel_feedback::store::{
    rows::{date_of, EvalResultRow, TrainingStepRow},
    Store, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::stats::finite;

/// Upper bound of one dashboard query: past it the page gets a 500 rather
/// than hanging.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Feedback arrives after its inference; when joining the two, feedback up
/// to a day after the window's end still counts for the window's requests.
const FEEDBACK_LAG_MS: u64 = 86_400_000;
/// Rows of the failed-attempts table.
pub const ERRORS_LIMIT: u64 = 50;
/// Bins of each feedback histogram.
pub const HISTOGRAM_BINS: u64 = 10;
/// Values per filter menu.
const MENU_LIMIT: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("clickhouse: {0} timed out after {QUERY_TIMEOUT:?}")]
    Timeout(&'static str),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// `[from_ms, to_ms)`, Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl Window {
    /// The part of the window a rollup of `grain` covers: its buckets that
    /// start in the window, i.e. both edges rounded up to the grain. Raw
    /// reads joined to rollup figures use it so that both count the same
    /// requests.
    pub fn aligned(&self, grain: Grain) -> Window {
        let g = grain.ms();
        Window {
            from_ms: self.from_ms.div_ceil(g) * g,
            to_ms: self.to_ms.div_ceil(g) * g,
        }
    }

    /// The window of the same length just before this one.
    pub fn previous(&self) -> Window {
        let len = self.to_ms.saturating_sub(self.from_ms);
        Window {
            from_ms: self.from_ms.saturating_sub(len),
            to_ms: self.from_ms,
        }
    }
}

/// The exact-match filters of a request (None or empty: all). For a
/// tenant's call `tenant` is always that tenant (see `auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub tenant: Option<String>,
    pub route: Option<String>,
    pub variant: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
}

/// What every read is about: the window, the series' bucket and the
/// filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub window: Window,
    /// A whole number of minutes (the rollups' resolution), in ms.
    pub step_ms: u64,
    pub filters: Filters,
}

impl Scope {
    /// The inference rollup this scope's figures read.
    pub fn grain(&self) -> Grain {
        Grain::of_step(self.step_ms)
    }
}

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Str(String),
    U64(u64),
    U16(u16),
    F64(f64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Str(s.to_owned())
    }
}
impl From<u64> for Arg {
    fn from(x: u64) -> Self {
        Arg::U64(x)
    }
}
impl From<u16> for Arg {
    fn from(x: u16) -> Self {
        Arg::U16(x)
    }
}
impl From<f64> for Arg {
    fn from(x: f64) -> Self {
        Arg::F64(x)
    }
}

/// SQL text with its bound values, built left to right so that the `?`
/// placeholders and the values stay in the same order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends fixed text (no placeholder, no user input).
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends text holding one `?` and the value it stands for.
    fn bind(&mut self, text: &str, arg: impl Into<Arg>) -> &mut Self {
        debug_assert_eq!(text.matches('?').count(), 1, "{text}");
        self.text.push_str(text);
        self.args.push(arg.into());
        self
    }

    /// The text (for tests and logs; values are not in it).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn query(&self, client: &Client) -> clickhouse::query::Query {
        let mut q = client.query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Str(s) => q.bind(s.as_str()),
                Arg::U64(x) => q.bind(*x),
                Arg::U16(x) => q.bind(*x),
                Arg::F64(x) => q.bind(*x),
            };
        }
        q
    }
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

/// Which columns a table has, so a filter is applied only where its column
/// exists (feedback has no model or provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dims {
    /// tenant, route, variant, model, provider.
    Inference,
    /// tenant, route, variant.
    Feedback,
}

/// ` AND col = ?` for each filter that is set and applies.
fn push_filters(sql: &mut Sql, f: &Filters, dims: Dims) {
    let mut each = |col: &str, v: &Option<String>| {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            sql.bind(&format!(" AND {col} = ?"), v);
        }
    };
    each("tenant", &f.tenant);
    each("route", &f.route);
    each("variant", &f.variant);
    if dims == Dims::Inference {
        each("model", &f.model);
        each("provider", &f.provider);
    }
}

/// ` WHERE` of a rollup read: whole minutes of the window, the filters,
/// and served traffic only for the inference rollup.
fn push_rollup_where(sql: &mut Sql, w: Window, f: &Filters, dims: Dims) {
    push_grain_where(sql, Grain::Minute, w, f, dims);
}

/// The time grain of a rollup: its table's time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Minute,
    Hour,
}

impl Grain {
    fn column(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
        }
    }

    fn inference_table(self) -> &'static str {
        match self {
            Grain::Minute => "inference_rollup_dims_1m",
            Grain::Hour => "inference_rollup_dims_1h",
        }
    }

    fn ms(self) -> u64 {
        match self {
            Grain::Minute => 60_000,
            Grain::Hour => 3_600_000,
        }
    }

    /// The inference rollup to read for a step: the hourly one when the
    /// buckets are whole hours (up to 60 times fewer rows and quantile
    /// states to merge), else the per-minute one.
    pub fn of_step(step_ms: u64) -> Grain {
        if step_ms.is_multiple_of(3_600_000) {
            Grain::Hour
        } else {
            Grain::Minute
        }
    }
}

/// [`push_rollup_where`] on a rollup of `grain`: the buckets that start in
/// the window.
fn push_grain_where(sql: &mut Sql, grain: Grain, w: Window, f: &Filters, dims: Dims) {
    let col = grain.column();
    sql.bind(&format!(" WHERE {col} >= toDateTime(?)"), secs(w.from_ms))
        .bind(&format!(" AND {col} < toDateTime(?)"), secs(w.to_ms));
    if dims == Dims::Inference {
        sql.push(" AND shadow = 0");
    }
    push_filters(sql, f, dims);
}

/// ` WHERE` of a raw read: the `date` partition column first (partition
/// and granule pruning), then `ts_ms` exactly, then the filters.
fn push_raw_where(sql: &mut Sql, w: Window, f: &Filters, dims: Dims) {
    sql.bind(" WHERE date >= toDate(?)", date_of(w.from_ms))
        .bind(" AND date <= toDate(?)", date_of(w.to_ms))
        .bind(" AND ts_ms >= ?", w.from_ms)
        .bind(" AND ts_ms < ?", w.to_ms);
    push_filters(sql, f, dims);
}

/// `toUInt64(intDiv(toUInt32(minute), step) * step) AS t` in seconds.
fn push_bucket(sql: &mut Sql, step_ms: u64) {
    push_grain_bucket(sql, Grain::Minute, step_ms);
}

fn push_grain_bucket(sql: &mut Sql, grain: Grain, step_ms: u64) {
    let step = secs(step_ms).max(60);
    sql.bind(
        &format!("toUInt64(intDiv(toUInt32({}), ?)", grain.column()),
        step,
    )
    .bind(" * ?) AS t", step);
}

fn q(v: &[f64], i: usize) -> Option<f64> {
    v.get(i).copied().and_then(finite)
}

async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T> {
    match tokio::time::timeout(QUERY_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(QueryError::Timeout(what)),
    }
}

// ---------------------------------------------------------------- rows

/// Request totals of a window (from the inference rollup).
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct TotalsRow {
    pub requests: u64,
    /// Status ≥ 400.
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Status < 400 and validation not failed.
    pub ok_requests: u64,
}

/// One bucket of the overview's series.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct OverviewPoint {
    /// Bucket start, Unix seconds (the API answers `t_ms`).
    #[serde(skip_serializing)]
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// Requests and cost of one model version on a route.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct VersionRow {
    pub route: String,
    pub variant: String,
    pub model: String,
    pub requests: u64,
    pub cost_usd: f64,
    pub ok_requests: u64,
}

/// Graded answers of one model version: answers with the metric, the
/// successes among them, and the sums of the metric's per-answer value.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct GradedRow {
    pub route: String,
    pub variant: String,
    pub model: String,
    pub graded: u64,
    pub successes: u64,
    pub value_sum: f64,
    pub value_sq_sum: f64,
}

/// One bucket of latency per model and provider. Quantiles are `None`
/// where there is no value (no stream: no TTFT).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyPoint {
    pub t_ms: u64,
    pub model: String,
    pub provider: String,
    pub requests: u64,
    /// p50, p90, p95, p99 of latency, TTFT and overhead.
    pub latency: [Option<f64>; 4],
    pub ttft: [Option<f64>; 4],
    pub overhead: [Option<f64>; 4],
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct LatencyRow {
    t: u64,
    model: String,
    provider: String,
    requests: u64,
    latency_q: Vec<f64>,
    ttft_q: Vec<f64>,
    overhead_q: Vec<f64>,
}

impl From<LatencyRow> for LatencyPoint {
    fn from(r: LatencyRow) -> Self {
        let four = |v: &[f64]| [q(v, 0), q(v, 1), q(v, 2), q(v, 3)];
        LatencyPoint {
            t_ms: r.t * 1000,
            latency: four(&r.latency_q),
            ttft: four(&r.ttft_q),
            overhead: four(&r.overhead_q),
            model: r.model,
            provider: r.provider,
            requests: r.requests,
        }
    }
}

/// One bucket of the reliability series.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct ReliabilityPoint {
    /// Bucket start, Unix seconds (the API answers `t_ms`).
    #[serde(skip_serializing)]
    pub t: u64,
    pub requests: u64,
    pub retries: u64,
    pub fallbacks: u64,
    pub failovers: u64,
    pub validation_failures: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
}

/// Failed attempts of one kind.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct ErrorRow {
    pub outcome: String,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub attempts: u64,
    /// Requests with at least one such attempt.
    pub requests: u64,
}

/// Feedback sums of a metric, from the feedback rollup.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct MetricRow {
    pub metric: String,
    pub source: String,
    pub variant: String,
    pub n: u64,
    pub numeric_n: u64,
    pub value_sum: f64,
    pub value_sq_sum: f64,
}

/// One bucket of one metric on one variant.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct MetricPointRow {
    pub t: u64,
    pub metric: String,
    pub variant: String,
    pub n: u64,
    pub numeric_n: u64,
    pub value_sum: f64,
}

/// One bin of a metric's histogram (`[lo, hi)`, the last bin closed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramBin {
    pub metric: String,
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct BinRow {
    metric: String,
    lo: f64,
    hi: f64,
    bin: u64,
    count: u64,
}

/// The values present in a window, for the filter menus.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Menus {
    pub routes: Vec<String>,
    pub variants: Vec<String>,
    pub models: Vec<String>,
    pub providers: Vec<String>,
    pub tenants: Vec<String>,
    pub metrics: Vec<String>,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct MenuRow {
    routes: Vec<String>,
    variants: Vec<String>,
    models: Vec<String>,
    providers: Vec<String>,
    tenants: Vec<String>,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------- queries

/// The dashboards' reads, over one database.
#[derive(Debug, Clone)]
pub struct Queries {
    store: Store,
}

impl Queries {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn db(&self) -> &str {
        self.store.database()
    }

    fn client(&self) -> &Client {
        self.store.client()
    }

    /// Totals of requests in `w` (series' filters, served traffic), from
    /// the rollup of `grain`.
    pub fn totals_sql(&self, w: Window, f: &Filters, grain: Grain) -> Sql {
        let mut sql = Sql::new(&format!(
            "SELECT countMerge(requests) AS requests, \
             toUInt64(sumMerge(errors_4xx) + sumMerge(errors_5xx)) AS errors, \
             sumMerge(prompt_tokens_total) AS prompt_tokens, \
             sumMerge(completion_tokens_total) AS completion_tokens, \
             sumMerge(cost_usd_total) AS cost_usd, sumMerge(ok_requests) AS ok \
             FROM {}.{}",
            self.db(),
            grain.inference_table()
        ));
        push_grain_where(&mut sql, grain, w, f, Dims::Inference);
        sql
    }

    pub async fn totals(&self, w: Window, f: &Filters, grain: Grain) -> Result<TotalsRow> {
        let sql = self.totals_sql(w, f, grain);
        let rows = timed("totals", sql.query(self.client()).fetch_all::<TotalsRow>()).await?;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    pub async fn overview_series(&self, s: &Scope) -> Result<Vec<OverviewPoint>> {
        let grain = s.grain();
        let mut sql = Sql::new("SELECT ");
        push_grain_bucket(&mut sql, grain, s.step_ms);
        sql.push(&format!(
            ", countMerge(requests), toUInt64(sumMerge(errors_4xx) + sumMerge(errors_5xx)), \
             sumMerge(prompt_tokens_total), sumMerge(completion_tokens_total), \
             sumMerge(cost_usd_total) FROM {}.{}",
            self.db(),
            grain.inference_table()
        ));
        push_grain_where(&mut sql, grain, s.window, &s.filters, Dims::Inference);
        sql.push(" GROUP BY t ORDER BY t");
        timed(
            "overview series",
            sql.query(self.client()).fetch_all::<OverviewPoint>(),
        )
        .await
    }

    /// Requests and cost per (route, variant, model), most requests first.
    pub async fn versions(&self, s: &Scope) -> Result<Vec<VersionRow>> {
        let mut sql = Sql::new(&format!(
            "SELECT route, variant, model, countMerge(requests) AS n, \
             sumMerge(cost_usd_total), sumMerge(ok_requests) \
             FROM {}.{}",
            self.db(),
            s.grain().inference_table()
        ));
        push_grain_where(&mut sql, s.grain(), s.window, &s.filters, Dims::Inference);
        sql.push(" GROUP BY route, variant, model ORDER BY n DESC, route, variant, model");
        timed(
            "versions",
            sql.query(self.client()).fetch_all::<VersionRow>(),
        )
        .await
    }

    /// The graded answers of the window per (route, variant, model): each
    /// served request of the window that has numeric feedback of `metric`
    /// (the mean of its values when it has several), and whether it was a
    /// success (status < 400, validation not failed, value ≥ `threshold`).
    /// A join of raw tables: feedback is per inference, and a variant's
    /// fallback chain spans several models, which no rollup tells apart.
    pub fn graded_sql(&self, s: &Scope, metric: &str, threshold: f64) -> Sql {
        // The requests that the rollup figures of the same scope count.
        let w = s.window.aligned(s.grain());
        let mut sql = Sql::new("SELECT route, variant, model, count(), ");
        sql.bind(
            "toUInt64(countIf(status < 400 AND validation != 'failed' AND v >= ?)), ",
            threshold,
        )
        .push(
            "sum(v), sum(v * v) FROM (SELECT id AS iid, route, variant, model, status, validation",
        );
        sql.push(&format!(" FROM {}.inferences", self.db()));
        push_raw_where(&mut sql, w, &s.filters, Dims::Inference);
        sql.push(" AND shadow = 0) ANY INNER JOIN (SELECT assumeNotNull(inference_id) AS iid, avg(value_float) AS v");
        sql.push(&format!(" FROM {}.feedback", self.db()));
        let feedback_window = Window {
            from_ms: w.from_ms,
            to_ms: w.to_ms.saturating_add(FEEDBACK_LAG_MS),
        };
        let tenant_only = Filters {
            tenant: s.filters.tenant.clone(),
            ..Filters::default()
        };
        push_raw_where(&mut sql, feedback_window, &tenant_only, Dims::Feedback);
        sql.bind(" AND metric = ?", metric)
            .push(" AND value_kind IN ('boolean', 'float') AND isNotNull(inference_id) GROUP BY iid) USING iid")
            .push(" GROUP BY route, variant, model ORDER BY route, variant, model");
        sql
    }

    pub async fn graded(&self, s: &Scope, metric: &str, threshold: f64) -> Result<Vec<GradedRow>> {
        let sql = self.graded_sql(s, metric, threshold);
        timed("graded", sql.query(self.client()).fetch_all::<GradedRow>()).await
    }

    /// The metrics with feedback in the window, sorted.
    pub async fn metrics_present(&self, s: &Scope) -> Result<Vec<String>> {
        let mut sql = Sql::new(&format!(
            "SELECT DISTINCT metric FROM {}.feedback_rollup_dims_1m",
            self.db()
        ));
        push_rollup_where(&mut sql, s.window, &s.filters, Dims::Feedback);
        sql.push(" ORDER BY metric");
        sql.bind(" LIMIT ?", MENU_LIMIT);
        timed(
            "metrics present",
            sql.query(self.client()).fetch_all::<String>(),
        )
        .await
    }

    /// Latency per bucket, model and provider: whole hours from the hourly
    /// rollup when the step is whole hours ([`Grain::of_step`]).
    pub async fn latency_series(&self, s: &Scope) -> Result<Vec<LatencyPoint>> {
        let grain = Grain::of_step(s.step_ms);
        let mut sql = Sql::new("SELECT ");
        push_grain_bucket(&mut sql, grain, s.step_ms);
        sql.push(", model, provider");
        self.push_latency_aggregates(&mut sql, grain);
        push_grain_where(&mut sql, grain, s.window, &s.filters, Dims::Inference);
        sql.push(" GROUP BY t, model, provider ORDER BY t, model, provider");
        let rows = timed(
            "latency series",
            sql.query(self.client()).fetch_all::<LatencyRow>(),
        )
        .await?;
        Ok(rows.into_iter().map(LatencyPoint::from).collect())
    }

    /// Latency per model and provider over the whole window (`t_ms` 0),
    /// on the same grain as [`Queries::latency_series`].
    pub async fn latency_table(&self, s: &Scope) -> Result<Vec<LatencyPoint>> {
        let grain = Grain::of_step(s.step_ms);
        let mut sql = Sql::new("SELECT toUInt64(0) AS t, model, provider");
        self.push_latency_aggregates(&mut sql, grain);
        push_grain_where(&mut sql, grain, s.window, &s.filters, Dims::Inference);
        sql.push(" GROUP BY model, provider ORDER BY model, provider");
        let rows = timed(
            "latency table",
            sql.query(self.client()).fetch_all::<LatencyRow>(),
        )
        .await?;
        Ok(rows.into_iter().map(LatencyPoint::from).collect())
    }

    fn push_latency_aggregates(&self, sql: &mut Sql, grain: Grain) {
        let table = grain.inference_table();
        sql.push(&format!(
            ", countMerge(requests), quantilesMerge(0.5, 0.9, 0.95, 0.99)(latency_q), \
             quantilesIfMerge(0.5, 0.9, 0.95, 0.99)(ttft_q), \
             quantilesMerge(0.5, 0.9, 0.95, 0.99)(overhead_q) \
             FROM {}.{table}",
            self.db()
        ));
    }

    pub async fn reliability_series(&self, s: &Scope) -> Result<Vec<ReliabilityPoint>> {
        let grain = s.grain();
        let mut sql = Sql::new("SELECT ");
        push_grain_bucket(&mut sql, grain, s.step_ms);
        sql.push(&format!(
            ", countMerge(requests), sumMerge(retries_total), sumMerge(fallbacks), \
             sumMerge(failovers_total), sumMerge(validation_failures), sumMerge(errors_4xx), \
             sumMerge(errors_5xx) FROM {}.{}",
            self.db(),
            grain.inference_table()
        ));
        push_grain_where(&mut sql, grain, s.window, &s.filters, Dims::Inference);
        sql.push(" GROUP BY t ORDER BY t");
        timed(
            "reliability series",
            sql.query(self.client()).fetch_all::<ReliabilityPoint>(),
        )
        .await
    }

    /// Failed attempts of served requests by outcome, status and reason,
    /// most frequent first (raw `attempts`: the rollups have no reasons).
    pub fn errors_sql(&self, s: &Scope) -> Sql {
        let mut sql = Sql::new(&format!(
            "SELECT toString(outcome), status, reason, count() AS n, uniqExact(inference_id) \
             FROM {}.attempts",
            self.db()
        ));
        push_raw_where(&mut sql, s.window, &s.filters, Dims::Inference);
        // Attempts carry no shadow flag: leave out those of mirrored requests.
        sql.push(&format!(
            " AND outcome != 'ok' AND inference_id NOT IN (SELECT id FROM {}.inferences",
            self.db()
        ));
        push_raw_where(&mut sql, s.window, &Filters::default(), Dims::Inference);
        sql.push(
            " AND shadow = 1) GROUP BY outcome, status, reason ORDER BY n DESC, outcome, status",
        );
        sql.bind(" LIMIT ?", ERRORS_LIMIT);
        sql
    }

    pub async fn errors(&self, s: &Scope) -> Result<Vec<ErrorRow>> {
        let sql = self.errors_sql(s);
        timed("errors", sql.query(self.client()).fetch_all::<ErrorRow>()).await
    }

    /// Feedback per metric, source and variant over the window.
    pub async fn metric_table(&self, s: &Scope) -> Result<Vec<MetricRow>> {
        let mut sql = Sql::new(&format!(
            "SELECT metric, source, variant, countMerge(n), sumMerge(numeric_n), \
             sumMerge(value_sum), sumMerge(value_sq_sum) FROM {}.feedback_rollup_dims_1m",
            self.db()
        ));
        push_rollup_where(&mut sql, s.window, &s.filters, Dims::Feedback);
        sql.push(" GROUP BY metric, source, variant ORDER BY metric, source, variant");
        timed(
            "metric table",
            sql.query(self.client()).fetch_all::<MetricRow>(),
        )
        .await
    }

    pub async fn metric_series(&self, s: &Scope) -> Result<Vec<MetricPointRow>> {
        let mut sql = Sql::new("SELECT ");
        push_bucket(&mut sql, s.step_ms);
        sql.push(&format!(
            ", metric, variant, countMerge(n), sumMerge(numeric_n), sumMerge(value_sum) \
             FROM {}.feedback_rollup_dims_1m",
            self.db()
        ));
        push_rollup_where(&mut sql, s.window, &s.filters, Dims::Feedback);
        sql.push(" GROUP BY t, metric, variant ORDER BY t, metric, variant");
        timed(
            "metric series",
            sql.query(self.client()).fetch_all::<MetricPointRow>(),
        )
        .await
    }

    /// [`HISTOGRAM_BINS`] equal bins between each numeric metric's minimum
    /// and maximum in the window (raw `feedback`: a rollup keeps no
    /// values). Empty bins are included, so each metric has all its bins;
    /// a metric with a single value has one bin.
    pub async fn histograms(&self, s: &Scope) -> Result<Vec<HistogramBin>> {
        let db = self.db();
        let mut sql = Sql::new("SELECT metric, lo, hi, ");
        sql.bind(
            "toUInt64(if(hi > lo, least(?, floor((value_float - lo) / (hi - lo) * ",
            HISTOGRAM_BINS - 1,
        )
        .bind("?)), 0)) AS bin, ", HISTOGRAM_BINS)
        .push(&format!(
            "count() FROM (SELECT metric, value_float FROM {db}.feedback"
        ));
        push_raw_where(&mut sql, s.window, &s.filters, Dims::Feedback);
        sql.push(" AND value_kind IN ('boolean', 'float'))");
        sql.push(&format!(
            " ANY INNER JOIN (SELECT metric, min(value_float) AS lo, max(value_float) AS hi FROM {db}.feedback"
        ));
        push_raw_where(&mut sql, s.window, &s.filters, Dims::Feedback);
        sql.push(" AND value_kind IN ('boolean', 'float') GROUP BY metric) USING metric")
            .push(" GROUP BY metric, lo, hi, bin ORDER BY metric, bin");
        let rows = timed("histograms", sql.query(self.client()).fetch_all::<BinRow>()).await?;
        Ok(bins(rows))
    }

    /// The filter menus: values present in the window for the caller's
    /// tenant scope (other filters are not applied, so a menu never hides
    /// the way back).
    pub async fn menus(&self, s: &Scope) -> Result<Menus> {
        let tenant_only = Filters {
            tenant: s.filters.tenant.clone(),
            ..Filters::default()
        };
        // 18.16's groupUniqArray takes no size limit; these dimensions are
        // the config's routes, variants, models, providers and tenants.
        let mut sql = Sql::new(&format!(
            "SELECT groupUniqArray(route), groupUniqArray(variant), groupUniqArray(model), \
             groupUniqArray(provider), groupUniqArray(tenant) FROM {}.{}",
            self.db(),
            s.grain().inference_table()
        ));
        push_grain_where(&mut sql, s.grain(), s.window, &tenant_only, Dims::Inference);
        let row = timed("menus", sql.query(self.client()).fetch_all::<MenuRow>())
            .await?
            .into_iter()
            .next();
        let metrics = self
            .metrics_present(&Scope {
                filters: tenant_only,
                ..s.clone()
            })
            .await?;
        Ok(match row {
            Some(r) => Menus {
                routes: sorted(r.routes),
                variants: sorted(r.variants),
                models: sorted(r.models),
                providers: sorted(r.providers),
                tenants: sorted(r.tenants),
                metrics,
            },
            None => Menus {
                metrics,
                ..Menus::default()
            },
        })
    }

    /// The cost of inference `id` (a primary-key read), within `tenant`
    /// when given; `None` until its event is in ClickHouse.
    pub async fn answer_cost(&self, id: &str, tenant: Option<&str>) -> Result<Option<AnswerCost>> {
        let mut sql = Sql::new(&format!(
            "SELECT cost_usd, prompt_tokens, completion_tokens FROM {}.inferences",
            self.db()
        ));
        sql.bind(" WHERE id = ?", id);
        if let Some(t) = tenant {
            sql.bind(" AND tenant = ?", t);
        }
        sql.push(" LIMIT 1");
        let rows = timed(
            "answer cost",
            sql.query(self.client()).fetch_all::<AnswerCost>(),
        )
        .await?;
        Ok(rows.into_iter().next())
    }

    /// A training run's steps (`training_steps.run_id` is the tuner
    /// service's run id), by step.
    pub async fn training_steps(&self, run: &str) -> Result<Vec<TrainingStepRow>> {
        let mut sql = Sql::new(&format!(
            "SELECT ?fields FROM {}.training_steps FINAL",
            self.db()
        ));
        sql.bind(" WHERE run_id = ? ORDER BY step", run);
        timed(
            "training steps",
            sql.query(self.client()).fetch_all::<TrainingStepRow>(),
        )
        .await
    }

    /// The offline evaluations stored under `run` (`eval_results`), by
    /// configuration.
    pub async fn eval_results(&self, run: &str) -> Result<Vec<EvalResultRow>> {
        let mut sql = Sql::new(&format!(
            "SELECT ?fields FROM {}.eval_results FINAL",
            self.db()
        ));
        sql.bind(" WHERE run_id = ? ORDER BY config", run);
        timed(
            "eval results",
            sql.query(self.client()).fetch_all::<EvalResultRow>(),
        )
        .await
    }
}

/// What one answer cost, from its event: known once its attempts have ended
/// and the event has shipped (a streamed answer's cost is not in its
/// stream).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct AnswerCost {
    pub cost_usd: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Fills in the empty bins of each metric's histogram.
fn bins(rows: Vec<BinRow>) -> Vec<HistogramBin> {
    let mut out: Vec<HistogramBin> = Vec::new();
    let mut i = 0;
    while let Some(first) = rows.get(i) {
        let (metric, lo, hi) = (first.metric.clone(), first.lo, first.hi);
        let mut counts = vec![0u64; HISTOGRAM_BINS as usize];
        while let Some(r) = rows.get(i).filter(|r| r.metric == metric) {
            if let Some(c) = counts.get_mut(r.bin as usize) {
                *c += r.count;
            }
            i += 1;
        }
        if hi > lo {
            let width = (hi - lo) / HISTOGRAM_BINS as f64;
            for (b, count) in counts.into_iter().enumerate() {
                out.push(HistogramBin {
                    metric: metric.clone(),
                    lo: lo + width * b as f64,
                    hi: if b + 1 == HISTOGRAM_BINS as usize {
                        hi
                    } else {
                        lo + width * (b + 1) as f64
                    },
                    count,
                });
            }
        } else {
            out.push(HistogramBin {
                metric,
                lo,
                hi,
                count: counts.iter().sum(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use flywheel_feedback::store::StoreConfig;

    use super::*;

    fn queries() -> Queries {
        Queries::new(
            Store::try_new(&StoreConfig {
                url: "http://127.0.0.1:1".into(),
                database: "db".into(),
                user: None,
                password: None,
            })
            .unwrap(),
        )
    }

    fn scope(f: Filters) -> Scope {
        Scope {
            window: Window {
                from_ms: 1_700_000_000_000,
                to_ms: 1_700_086_400_000,
            },
            step_ms: 600_000,
            filters: f,
        }
    }

    #[test]
    fn filter_values_are_bound_never_pasted() {
        let evil = "a' OR 1=1 --";
        let f = Filters {
            tenant: Some(evil.into()),
            route: Some(evil.into()),
            variant: Some(String::new()),
            model: Some(evil.into()),
            provider: None,
        };
        let s = scope(f);
        let q = queries();
        for sql in [
            q.totals_sql(s.window, &s.filters, Grain::Minute),
            q.graded_sql(&s, evil, 0.5),
            q.errors_sql(&s),
        ] {
            assert!(!sql.text().contains("OR 1=1"), "{}", sql.text());
            assert_eq!(
                sql.text().matches('?').count(),
                sql.args.len(),
                "one value per placeholder: {}",
                sql.text()
            );
            assert!(sql.args.contains(&Arg::Str(evil.into())));
        }
        // An empty filter is no filter.
        assert!(!q
            .totals_sql(s.window, &s.filters, Grain::Minute)
            .text()
            .contains("variant ="));
    }

    #[test]
    fn feedback_reads_skip_model_and_provider() {
        let mut sql = Sql::new("SELECT 1");
        push_filters(
            &mut sql,
            &Filters {
                model: Some("m".into()),
                provider: Some("p".into()),
                route: Some("r".into()),
                ..Filters::default()
            },
            Dims::Feedback,
        );
        assert_eq!(sql.text(), "SELECT 1 AND route = ?");
    }

    #[test]
    fn raw_reads_bound_the_partition_column() {
        let s = scope(Filters::default());
        let sql = queries().errors_sql(&s);
        assert!(sql.text().contains("date >= toDate(?)"));
        assert!(sql.args.contains(&Arg::U16(date_of(s.window.from_ms))));
    }

    #[test]
    fn histogram_bins_are_filled_in() {
        let rows = vec![
            BinRow {
                metric: "a".into(),
                lo: 0.0,
                hi: 1.0,
                bin: 0,
                count: 2,
            },
            BinRow {
                metric: "a".into(),
                lo: 0.0,
                hi: 1.0,
                bin: 9,
                count: 3,
            },
            BinRow {
                metric: "b".into(),
                lo: 2.0,
                hi: 2.0,
                bin: 0,
                count: 4,
            },
        ];
        let out = bins(rows);
        assert_eq!(out.len(), 11);
        assert_eq!(out[0].count, 2);
        assert_eq!(out[9].count, 3);
        assert!((out[9].hi - 1.0).abs() < 1e-12 && (out[1].lo - 0.1).abs() < 1e-12);
        assert_eq!(
            (out[10].metric.as_str(), out[10].lo, out[10].count),
            ("b", 2.0, 4)
        );
    }

    #[test]
    fn whole_hours_read_the_hourly_rollup() {
        assert_eq!(Grain::of_step(7_200_000), Grain::Hour);
        assert_eq!(Grain::of_step(720_000), Grain::Minute);
        let mut sql = Sql::new("SELECT ");
        push_grain_bucket(&mut sql, Grain::Hour, 7_200_000);
        push_grain_where(
            &mut sql,
            Grain::Hour,
            Window {
                from_ms: 0,
                to_ms: 1,
            },
            &Filters::default(),
            Dims::Inference,
        );
        assert!(
            sql.text().contains("toUInt32(hour)") && sql.text().contains("WHERE hour >= "),
            "{}",
            sql.text()
        );
        assert_eq!(sql.args[0], Arg::U64(7200));
    }

    #[test]
    fn aligned_windows_start_on_whole_buckets() {
        let w = Window {
            from_ms: 3_600_001,
            to_ms: 7_200_000,
        };
        assert_eq!(
            w.aligned(Grain::Hour),
            Window {
                from_ms: 7_200_000,
                to_ms: 7_200_000
            }
        );
        assert_eq!(w.aligned(Grain::Minute).from_ms, 3_660_000);
    }

    #[test]
    fn previous_window_has_the_same_length() {
        let w = Window {
            from_ms: 1000,
            to_ms: 3000,
        };
        assert_eq!(
            w.previous(),
            Window {
                from_ms: 0,
                to_ms: 1000
            }
        );
    }
}
