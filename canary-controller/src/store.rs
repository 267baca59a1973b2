//! The controller's ClickHouse reads and writes: experiments, evaluation
//! rows, and each arm's data for a step.
//!
//! # What an arm is
//!
//! The requests of the route served by the arm's variant, in the step's
//! window `[from_ms, to_ms)` (by arrival). The incumbent arm is its whole
//! served chain: retries and fallbacks are in the event's cost, latency
//! and status. During a shadow step the candidate arm is the mirrored
//! requests (`shadow = 1`) and the incumbent arm the served requests that
//! were mirrored (`pair_id` set); live steps leave shadow rows out.
//!
//! # Quality per request
//!
//! Joined by inference id (inference-level feedback) and by episode id
//! (episode-level feedback, on every inference of the episode): the
//! weighted mean of the latest value of each named metric
//! ([`crate::spec::QualityMetric`]). A request without any is not graded:
//! it counts as traffic and cost, never as a zero. Feedback is read up to
//! now, so late feedback on the step's requests counts when it arrives.
//!
//! Every read uses `FINAL` on the ReplacingMergeTree tables, and
//! `experiments` is read whole (a handful of rows) and filtered here: a
//! `WHERE` on a non-key column next to `FINAL` could be applied before the
//! versions collapse.

use flywheel_canary::ArmSummary;
use flywheel_feedback::{
    store::{
        rows::{date_of, CanaryEvaluationRow, ExperimentRow},
        StoreError,
    },
    Store,
};
use serde::Deserialize;

use crate::{
    experiment::{Experiment, ExperimentError},
    spec::QualityMetric,
    unload::UnloadRecord,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse: {0} timed out")]
    Timeout(&'static str),
    #[error(transparent)]
    Experiment(#[from] ExperimentError),
    #[error("no experiment matches {0:?}")]
    NotFound(String),
    #[error("{0:?} matches several experiments: {1}")]
    Ambiguous(String, String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = std::result::Result<T, clickhouse::error::Error>>,
) -> Result<T> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Timeout(what)),
    }
}

/// One arm's data for a decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmWindow {
    pub summary: ArmSummary,
    /// Latency of successful requests (ms), a pseudo-random sample.
    pub latency_ms: Vec<f64>,
    /// TTFT of the sampled streamed requests (ms).
    pub ttft_ms: Vec<f64>,
}

/// A SQL text and the values of its `?` placeholders, in order.
#[derive(Default)]
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

enum Bind {
    Str(String),
    U64(u64),
}

impl Sql {
    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn s(&mut self, v: &str) -> &mut Self {
        self.text.push('?');
        self.binds.push(Bind::Str(v.to_owned()));
        self
    }

    fn n(&mut self, v: u64) -> &mut Self {
        self.text.push('?');
        self.binds.push(Bind::U64(v));
        self
    }

    fn query(&self, store: &Store) -> clickhouse::query::Query {
        let mut q = store.client().query(&self.text);
        for b in &self.binds {
            q = match b {
                Bind::Str(s) => q.bind(s.as_str()),
                Bind::U64(n) => q.bind(*n),
            };
        }
        q
    }
}

/// Which requests form the arms.
#[derive(Debug, Clone)]
pub struct ArmQuery<'a> {
    pub route: &'a str,
    pub incumbent: &'a str,
    pub candidate: &'a str,
    pub from_ms: u64,
    pub to_ms: u64,
    pub shadow: bool,
    pub quality: &'a [QualityMetric],
    pub latency_samples: u64,
}

impl ArmQuery<'_> {
    /// `route = ? AND variant IN (?, ?) AND <window> AND <shadow>`.
    fn filter(&self, sql: &mut Sql) {
        sql.push("route = ")
            .s(self.route)
            .push(" AND variant IN (")
            .s(self.incumbent)
            .push(", ")
            .s(self.candidate)
            .push(") AND date >= toDate(")
            .n(u64::from(date_of(self.from_ms)))
            .push(") AND date <= toDate(")
            .n(u64::from(date_of(self.to_ms)))
            .push(") AND ts_ms >= ")
            .n(self.from_ms)
            .push(" AND ts_ms < ")
            .n(self.to_ms);
        if self.shadow {
            // Mirrors on the candidate, the mirrored served requests on the
            // incumbent.
            sql.push(" AND ((variant = ")
                .s(self.candidate)
                .push(" AND shadow = 1) OR (variant = ")
                .s(self.incumbent)
                .push(" AND shadow = 0 AND pair_id != ''))");
        } else {
            sql.push(" AND shadow = 0");
        }
    }

    /// Feedback rows of the named metrics on the route since the window
    /// began.
    fn feedback_filter(&self, sql: &mut Sql) {
        sql.push("route = ").s(self.route).push(" AND metric IN (");
        for (i, q) in self.quality.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.s(&q.metric);
        }
        sql.push(") AND value_kind IN ('boolean', 'float') AND date >= toDate(")
            .n(u64::from(date_of(self.from_ms)))
            .push(") AND ts_ms >= ")
            .n(self.from_ms);
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TrafficRow {
    variant: String,
    requests: u64,
    errors: u64,
    fallbacks: u64,
    cost_n: u64,
    cost_sum: f64,
    cost_sum_sq: f64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct GradedRow {
    variant: String,
    n: u64,
    q: f64,
    q2: f64,
    c: f64,
    c2: f64,
    qc: f64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct LatencyRow {
    variant: String,
    latency_ms: f64,
    ttft_ms: Option<f64>,
}

/// The controller's view of the Flywheel database.
#[derive(Clone, Debug)]
pub struct CanaryStore {
    store: Store,
}

impl CanaryStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn inner(&self) -> &Store {
        &self.store
    }

    pub async fn ping(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// Every experiment, latest revision, oldest first. Rows that no longer
    /// parse are logged and skipped.
    pub async fn experiments(&self) -> Result<Vec<Experiment>> {
        let sql = format!(
            "SELECT ?fields FROM {}.experiments FINAL ORDER BY created_ms, id",
            self.store.database()
        );
        let rows = timed(
            "experiments",
            self.store.client().query(&sql).fetch_all::<ExperimentRow>(),
        )
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match Experiment::from_row(r) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::error!(error = %e, "skipping an experiment that does not parse");
                    None
                }
            })
            .collect())
    }

    /// The experiment whose id is or starts with `id`.
    pub async fn experiment(&self, id: &str) -> Result<Experiment> {
        let sql = format!(
            "SELECT ?fields FROM {}.experiments FINAL WHERE startsWith(id, ?) ORDER BY id",
            self.store.database()
        );
        let rows = timed(
            "experiment",
            self.store
                .client()
                .query(&sql)
                .bind(id)
                .fetch_all::<ExperimentRow>(),
        )
        .await?;
        let exact = rows.iter().position(|r| r.id == id);
        let row = match (exact, rows.len()) {
            (Some(i), _) => rows.into_iter().nth(i),
            (None, 1) => rows.into_iter().next(),
            (None, 0) => None,
            (None, _) => {
                let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                return Err(Error::Ambiguous(id.to_owned(), ids.join(", ")));
            }
        };
        let row = row.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        Ok(Experiment::from_row(row)?)
    }

    /// Records a look or an action: the evaluation row first, then the
    /// experiment's new revision (if it changed). A crash in between leaves
    /// an evaluation newer than the experiment, which
    /// [`CanaryStore::latest_transition`] and [`Experiment::replay`] finish.
    pub async fn record(
        &self,
        evaluation: &CanaryEvaluationRow,
        experiment: Option<&Experiment>,
    ) -> Result<()> {
        self.store
            .insert_rows("canary_evaluations", std::slice::from_ref(evaluation))
            .await?;
        if let Some(e) = experiment {
            self.store.insert_rows("experiments", &[e.to_row()]).await?;
        }
        Ok(())
    }

    /// The latest evaluation row of `experiment_id` that changed its state
    /// (any action but hold and unload).
    pub async fn latest_transition(
        &self,
        experiment_id: &str,
    ) -> Result<Option<CanaryEvaluationRow>> {
        let sql = format!(
            "SELECT ?fields FROM {}.canary_evaluations \
             WHERE experiment_id = ? AND action NOT IN ('hold', 'unload') \
             ORDER BY revision DESC, ts_ms DESC LIMIT 1",
            self.store.database()
        );
        timed(
            "latest transition",
            self.store
                .client()
                .query(&sql)
                .bind(experiment_id)
                .fetch_optional::<CanaryEvaluationRow>(),
        )
        .await
    }

    /// The last `limit` evaluation rows of an experiment, newest first.
    pub async fn evaluations(
        &self,
        experiment_id: &str,
        limit: u64,
    ) -> Result<Vec<CanaryEvaluationRow>> {
        let sql = format!(
            "SELECT ?fields FROM {}.canary_evaluations WHERE experiment_id = ? \
             ORDER BY ts_ms DESC, revision DESC LIMIT ?",
            self.store.database()
        );
        timed(
            "evaluations",
            self.store
                .client()
                .query(&sql)
                .bind(experiment_id)
                .bind(limit)
                .fetch_all::<CanaryEvaluationRow>(),
        )
        .await
    }

    /// The unload attempts of an experiment ([`crate::unload`]), oldest
    /// first. A row whose JSON does not parse is logged and skipped (it
    /// then counts as not done: the unload is tried again, which is safe).
    pub async fn unload_records(&self, experiment_id: &str) -> Result<Vec<UnloadRecord>> {
        #[derive(Debug, clickhouse::Row, Deserialize)]
        struct R {
            ts_ms: u64,
            reason_json: String,
        }
        let sql = format!(
            "SELECT ts_ms, reason_json FROM {}.canary_evaluations \
             WHERE experiment_id = ? AND action = 'unload' ORDER BY ts_ms, id",
            self.store.database()
        );
        let rows = timed(
            "unload records",
            self.store
                .client()
                .query(&sql)
                .bind(experiment_id)
                .fetch_all::<R>(),
        )
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match serde_json::from_str::<UnloadRecord>(&r.reason_json) {
                Ok(mut u) => {
                    u.ts_ms = r.ts_ms;
                    Some(u)
                }
                Err(e) => {
                    tracing::error!(experiment = experiment_id, error = %e, "skipping an unload row that does not parse");
                    None
                }
            })
            .collect())
    }

    /// Both arms' data for a step (module docs). Returns (incumbent,
    /// candidate).
    pub async fn arms(&self, q: &ArmQuery<'_>) -> Result<(ArmWindow, ArmWindow)> {
        let db = self.store.database();
        let mut arms = Arms::default();

        // Traffic, errors, fallbacks, cost per request.
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT variant, count() AS requests, countIf(status >= 500) AS errors, \
             countIf(fallback_depth > 0) AS fallbacks, countIf(isFinite(cost_usd)) AS cost_n, \
             sumIf(cost_usd, isFinite(cost_usd)) AS cost_sum, \
             sumIf(cost_usd * cost_usd, isFinite(cost_usd)) AS cost_sum_sq \
             FROM {db}.inferences FINAL WHERE "
        ));
        q.filter(&mut sql);
        sql.push(" GROUP BY variant");
        let rows = timed(
            "arm traffic",
            sql.query(&self.store).fetch_all::<TrafficRow>(),
        )
        .await?;
        for r in rows {
            let a = arms.of(&r.variant, q.candidate);
            a.summary.requests = r.requests;
            a.summary.errors = r.errors;
            a.summary.fallbacks = r.fallbacks;
            a.summary.cost.n = r.cost_n;
            a.summary.cost.sum = r.cost_sum;
            a.summary.cost.sum_sq = r.cost_sum_sq;
        }

        // Graded requests: quality joined by inference and by episode.
        if !q.quality.is_empty() {
            let sql = graded_sql(db, q);
            let rows = timed(
                "arm quality",
                sql.query(&self.store).fetch_all::<GradedRow>(),
            )
            .await?;
            for r in rows {
                let a = arms.of(&r.variant, q.candidate);
                let g = &mut a.summary.graded;
                g.n = r.n;
                g.sum_quality = r.q;
                g.sum_quality_sq = r.q2;
                g.sum_cost = r.c;
                g.sum_cost_sq = r.c2;
                g.sum_quality_cost = r.qc;
            }
        }

        // Latency and TTFT samples of successful requests.
        if q.latency_samples > 0 {
            let mut sql = Sql::default();
            sql.push(&format!(
                "SELECT variant, latency_ms, ttft_ms FROM {db}.inferences FINAL WHERE "
            ));
            q.filter(&mut sql);
            sql.push(&format!(
                " AND status < 400 ORDER BY sipHash64(id) LIMIT {} BY variant",
                q.latency_samples
            ));
            let rows = timed(
                "arm latency",
                sql.query(&self.store).fetch_all::<LatencyRow>(),
            )
            .await?;
            for r in rows {
                let a = arms.of(&r.variant, q.candidate);
                if r.latency_ms.is_finite() {
                    a.latency_ms.push(r.latency_ms);
                }
                if let Some(t) = r.ttft_ms.filter(|t| t.is_finite()) {
                    a.ttft_ms.push(t);
                }
            }
        }
        Ok((arms.incumbent, arms.candidate))
    }
}

/// The two arms being filled from rows labelled by variant.
#[derive(Default)]
struct Arms {
    incumbent: ArmWindow,
    candidate: ArmWindow,
}

impl Arms {
    /// The candidate's arm for its variant's rows; every other row belongs to
    /// the incumbent (the query selects only the two variants).
    fn of(&mut self, variant: &str, candidate: &str) -> &mut ArmWindow {
        if variant == candidate {
            &mut self.candidate
        } else {
            &mut self.incumbent
        }
    }
}

/// Per-arm sums over the graded requests (module docs, "Quality per
/// request").
fn graded_sql(db: &str, q: &ArmQuery<'_>) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT variant, count() AS n, sum(quality) AS q, sum(quality * quality) AS q2, \
         sum(cost_usd) AS c, sum(cost_usd * cost_usd) AS c2, sum(quality * cost_usd) AS qc FROM (",
    );
    sql.push(&format!(
        "SELECT id AS iid, variant, cost_usd FROM {db}.inferences FINAL WHERE "
    ));
    q.filter(&mut sql);
    sql.push(" AND isFinite(cost_usd)) ANY INNER JOIN (");
    // Per inference: Σ w·v / Σ w over the metrics it has.
    sql.push("SELECT iid, sum(mw * mv) / sum(mw) AS quality FROM (SELECT iid, ");
    weight_expr(&mut sql, q.quality);
    sql.push(" AS mw, ");
    value_expr(&mut sql, q.quality);
    sql.push(" AS mv FROM (");
    // Inference-level feedback: the latest value per (inference, metric).
    sql.push(&format!(
        "SELECT assumeNotNull(inference_id) AS iid, metric, argMax(value_float, ts_ms) AS v \
         FROM {db}.feedback FINAL WHERE isNotNull(inference_id) AND "
    ));
    q.feedback_filter(&mut sql);
    sql.push(" GROUP BY iid, metric UNION ALL ");
    // Episode-level feedback on every inference of the episode.
    sql.push(&format!(
        "SELECT iid, metric, v FROM (SELECT id AS iid, assumeNotNull(episode_id) AS ek \
         FROM {db}.inferences FINAL WHERE isNotNull(episode_id) AND "
    ));
    q.filter(&mut sql);
    sql.push(&format!(
        ") ALL INNER JOIN (SELECT assumeNotNull(episode_id) AS ek, metric, \
         argMax(value_float, ts_ms) AS v FROM {db}.feedback FINAL \
         WHERE isNull(inference_id) AND isNotNull(episode_id) AND "
    ));
    q.feedback_filter(&mut sql);
    sql.push(" GROUP BY ek, metric) USING ek)) GROUP BY iid HAVING sum(mw) > 0");
    sql.push(") USING iid GROUP BY variant");
    sql
}

/// `multiIf(metric = ?, w1, metric = ?, w2, 0.)`.
fn weight_expr(sql: &mut Sql, quality: &[QualityMetric]) {
    sql.push("multiIf(");
    for m in quality {
        sql.push("metric = ")
            .s(&m.metric)
            .push(&format!(", {}, ", float_literal(m.weight)));
    }
    sql.push("0.)");
}

/// `multiIf(metric = ?, 1. - v, …, v)` for inverted metrics, else `v`.
fn value_expr(sql: &mut Sql, quality: &[QualityMetric]) {
    let inverted: Vec<&QualityMetric> = quality.iter().filter(|m| m.invert).collect();
    if inverted.is_empty() {
        sql.push("v");
        return;
    }
    sql.push("multiIf(");
    for m in inverted {
        sql.push("metric = ").s(&m.metric).push(", 1. - v, ");
    }
    sql.push("v)");
}

/// A finite f64 as a ClickHouse Float64 literal (validated weights only).
fn float_literal(x: f64) -> String {
    let x = if x.is_finite() { x } else { 0.0 };
    format!("toFloat64({x:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_binds_match_placeholders() {
        let quality = vec![
            QualityMetric::parse("thumbs_up").unwrap(),
            QualityMetric::parse("implicit_reask:0.5:invert").unwrap(),
        ];
        for shadow in [false, true] {
            let q = ArmQuery {
                route: "chat",
                incumbent: "base",
                candidate: "tuned",
                from_ms: 1_700_000_000_000,
                to_ms: 1_700_000_100_000,
                shadow,
                quality: &quality,
                latency_samples: 100,
            };
            let sql = graded_sql("db", &q);
            assert_eq!(sql.text.matches('?').count(), sql.binds.len());
            assert!(sql.text.contains("toFloat64(0.5)"), "{}", sql.text);
            assert!(sql.text.contains("1. - v"));
        }
        assert_eq!(float_literal(1.0), "toFloat64(1.0)");
        assert_eq!(float_literal(f64::NAN), "toFloat64(0.0)");
    }
}
