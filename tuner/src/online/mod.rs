//! Online grading: a grader (the same config `flywheel-tuner grade` and
//! training use) scores a sampled fraction of a route's live answers, and
//! each score becomes a feedback row, which the canary controller counts
//! as quality like any other metric.
//!
//! ```text
//! inferences (route, chat, 200, since now − lookback, sampled by id hash,
//!             no feedback of this metric from this grader yet)
//!   └─▶ captured::graded_pair (item + sample) ─▶ Grader::grade_batch ─▶ feedback rows
//! ```
//!
//! - **Sampling** is a function of the inference id alone ([`sampled`]):
//!   a restarted grader, or several of them, pick the same inferences, and
//!   served requests and shadow mirrors are sampled alike.
//! - **Idempotent**: a score's feedback id is a hash of (inference id,
//!   metric) ([`feedback_id`]); an inference that has one is not read
//!   again, ids already stored are dropped just before the insert, and a
//!   repeat that still got in is folded by the table's ReplacingMergeTree.
//!   (The per-minute rollup view counts a repeat twice, the same window
//!   the capture documents; the canary reads the base table with `FINAL`.)
//! - **No data is not a zero**: a grader error writes nothing, nor does an
//!   inference without captured bodies (capture's `bodies` policy); both
//!   are counted and reported with their ids, and not retried by this
//!   process while they are in the window (a restart tries them again).
//! - **Tenant isolation**: the row carries the inference's own tenant,
//!   route, variant, inference id and episode.
//!
//! [`OnlineGrader::tick`] is one pass (at most `batch` inferences);
//! [`OnlineGrader::run`] repeats it. The CLI (`flywheel-tuner
//! grade-online`) and a service host the same loop.

pub mod store;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use flywheel_feedback::{
    now_ms,
    store::{
        rows::{date_of, FeedbackRow, VALUE_FLOAT},
        StoreError,
    },
    Store,
};
use sha2::{Digest, Sha256};

use crate::{
    dataset::captured::{graded_pair, Row},
    grader::{Grade, Grader, GraderError},
    item::{Item, Sample},
};

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("invalid online grading settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that ran the grader panicked or was cancelled.
    #[error("grading task failed: {0}")]
    Task(String),
}

/// What to grade and how much.
#[derive(Debug, Clone)]
pub struct Settings {
    pub route: String,
    /// The feedback metric the scores are written as.
    pub metric: String,
    /// Share of inferences graded, in [0, 1].
    pub fraction: f64,
    /// How far back from now a pass looks for inferences to grade.
    pub lookback: Duration,
    /// Most inferences graded in one pass (one `grade_batch`).
    pub batch: usize,
}

impl Settings {
    /// The default metric of a grader: `grader_<name>`.
    pub fn default_metric(grader: &Grader) -> String {
        format!("grader_{}", grader.name())
    }

    pub fn validate(&self) -> Result<(), OnlineError> {
        let bad = |m: &str| Err(OnlineError::Settings(m.to_owned()));
        if self.route.is_empty() {
            return bad("the route is empty");
        }
        if self.metric.is_empty() {
            return bad("the metric is empty");
        }
        if !(0.0..=1.0).contains(&self.fraction) {
            return bad("the fraction must be in [0, 1]");
        }
        if self.batch == 0 {
            return bad("the batch must be at least 1");
        }
        if self.lookback.is_zero() {
            return bad("the lookback must be positive");
        }
        Ok(())
    }
}

/// The feedback `source` of a grader's scores.
pub fn source_of(grader_name: &str) -> String {
    format!("grader:{grader_name}")
}

/// Where an inference falls in [0, 2^64): the first 8 bytes of
/// SHA-256(id), little-endian. `store::pending` computes the same in SQL.
pub fn sample_point(inference_id: &str) -> u64 {
    let d: [u8; 32] = Sha256::digest(inference_id.as_bytes()).into();
    let [d0, d1, d2, d3, d4, d5, d6, d7, ..] = d;
    u64::from_le_bytes([d0, d1, d2, d3, d4, d5, d6, d7])
}

/// The sample point below which an inference is graded; `None` at a
/// fraction of 1 or more (every inference: no point is excluded).
pub fn threshold(fraction: f64) -> Option<u64> {
    if fraction >= 1.0 {
        return None;
    }
    // 2^64 · fraction, exact enough: the error is far below one inference
    // in a billion. `as` saturates, and NaN (refused by validate) gives 0.
    Some((fraction.max(0.0) * 18_446_744_073_709_551_616.0) as u64)
}

/// Whether the inference is in the graded sample at `fraction`.
pub fn sampled(inference_id: &str, fraction: f64) -> bool {
    threshold(fraction).is_none_or(|t| sample_point(inference_id) < t)
}

/// The id of the score of `metric` on an inference: a UUIDv8 of
/// SHA-256(domain, inference id, metric), so a repeat of the same score
/// has the same id and the feedback table folds it.
pub fn feedback_id(inference_id: &str, metric: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"flywheel-online-grade\0");
    h.update(inference_id.as_bytes());
    h.update([0u8]);
    h.update(metric.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid().to_string()
}

/// Why an inference was not graded.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    /// No captured request or answer (capture's `bodies` policy), or one
    /// that is not a chat request and answer.
    NoBody,
    /// The grader failed on it (its message).
    GraderError(String),
}

/// What one pass did. `graded` counts the scores written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    pub graded: usize,
    pub passed: usize,
    pub score_sum: f64,
    pub errors: usize,
    /// Left out for want of bodies.
    pub skipped: usize,
    /// Scored, but another worker's score was stored first.
    pub duplicates: usize,
    /// Sampled inferences still to grade after this pass (counted up to
    /// the pass's read limit).
    pub pending: usize,
    /// Every inference not graded, with why.
    pub not_graded: Vec<(String, Skip)>,
}

impl Pass {
    /// The one-line summary a pass prints.
    pub fn summary(&self, route: &str, metric: &str) -> String {
        let mean = if self.graded > 0 {
            format!("{:.3}", self.score_sum / self.graded as f64)
        } else {
            "-".into()
        };
        let mut line = format!(
            "grade-online route={route} metric={metric}: graded {}, passed {}, mean {mean}, errors {}, skipped {} (no body), pending {}",
            self.graded, self.passed, self.errors, self.skipped, self.pending
        );
        if self.duplicates > 0 {
            line.push_str(&format!(", {} already graded elsewhere", self.duplicates));
        }
        line
    }
}

/// Reads extra ids beyond the batch, to count what is still pending.
const PENDING_READ: u64 = 10_000;

/// The online grading loop of one route and one grader.
pub struct OnlineGrader {
    store: Store,
    grader: Arc<Grader>,
    settings: Settings,
    source: String,
    /// Inferences this process gave up on (no body, grader error), with
    /// their time, so a pass does not read them again; pruned as they
    /// leave the window.
    given_up: HashMap<String, u64>,
}

impl OnlineGrader {
    pub fn new(
        store: Store,
        grader: Arc<Grader>,
        settings: Settings,
    ) -> Result<OnlineGrader, OnlineError> {
        settings.validate()?;
        Ok(OnlineGrader {
            store,
            source: source_of(grader.name()),
            grader,
            settings,
            given_up: HashMap::new(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One pass: reads up to `batch` sampled, ungraded inferences, grades
    /// them and writes their scores. A ClickHouse failure fails the pass
    /// before anything is written, or leaves the insert to the next pass
    /// (nothing written is lost: the inferences stay ungraded).
    pub async fn tick(&mut self) -> Result<Pass, OnlineError> {
        let now = now_ms();
        let from_ms = now.saturating_sub(self.settings.lookback.as_millis() as u64);
        self.given_up.retain(|_, ts| *ts >= from_ms);
        let s = &self.settings;
        let limit = (s.batch as u64)
            .saturating_add(self.given_up.len() as u64)
            .saturating_add(PENDING_READ);
        let candidates = store::pending(
            &self.store,
            &store::PendingQuery {
                route: &s.route,
                metric: &s.metric,
                source: &self.source,
                from_ms,
                threshold: threshold(s.fraction),
                limit,
            },
        )
        .await?;
        let mut todo: Vec<store::Pending> = candidates
            .into_iter()
            .filter(|p| !self.given_up.contains_key(&p.id))
            .collect();
        let mut pass = Pass {
            pending: todo.len().saturating_sub(s.batch),
            ..Pass::default()
        };
        todo.truncate(s.batch);
        if todo.is_empty() {
            return Ok(pass);
        }
        let ids: Vec<&str> = todo.iter().map(|p| p.id.as_str()).collect();
        let rows = store::rows(&self.store, &ids).await?;

        let mut pairs: Vec<(Sample, Item)> = Vec::with_capacity(rows.len());
        let mut graded_rows = Vec::with_capacity(rows.len());
        for row in rows {
            match graded_pair(&row) {
                Ok((item, sample)) => {
                    pairs.push((sample, item));
                    graded_rows.push(row);
                }
                // Only `NoBody` for the successful rows read here.
                Err(_) => {
                    pass.skipped += 1;
                    self.given_up.insert(row.id.clone(), row.ts_ms);
                    pass.not_graded.push((row.id, Skip::NoBody));
                }
            }
        }
        let grades = self.grade(pairs).await?;

        let ts_ms = now_ms();
        let mut scores = Vec::with_capacity(grades.len());
        for (row, result) in graded_rows.into_iter().zip(grades) {
            match result {
                Ok(grade) => scores.push(self.feedback_row(row, &grade, ts_ms)),
                Err(e) => {
                    pass.errors += 1;
                    self.given_up.insert(row.id.clone(), row.ts_ms);
                    pass.not_graded
                        .push((row.id, Skip::GraderError(e.to_string())));
                }
            }
        }
        // Another worker (or a pass that crashed after its insert) may
        // have stored some since the read: inserting them again would count
        // twice in the rollup view.
        let fresh_ids: Vec<&str> = scores.iter().map(|(r, _)| r.id.as_str()).collect();
        let existing = store::existing(&self.store, &fresh_ids).await?;
        let (done, fresh): (Vec<_>, Vec<_>) = scores
            .into_iter()
            .partition(|(r, _)| existing.contains(&r.id));
        pass.duplicates = done.len();
        let (rows, passed): (Vec<FeedbackRow>, Vec<bool>) = fresh.into_iter().unzip();
        store::insert(&self.store, &rows).await?;
        pass.graded = rows.len();
        pass.passed = passed.iter().filter(|p| **p).count();
        pass.score_sum = rows.iter().map(|r| r.value_float).sum();
        Ok(pass)
    }

    /// Repeats [`OnlineGrader::tick`]: at once while inferences are
    /// pending, else every `interval`, until `shutdown` completes. Each
    /// pass, failed ones included, goes to `report`; a failed pass (e.g.
    /// ClickHouse down) is retried at the next interval.
    pub async fn run(
        &mut self,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
        mut report: impl FnMut(&Result<Pass, OnlineError>),
    ) {
        tokio::pin!(shutdown);
        loop {
            let result = self.tick().await;
            let again = matches!(&result, Ok(p) if p.pending > 0);
            report(&result);
            let wait = if again { Duration::ZERO } else { interval };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// Grades on a blocking thread: graders run subprocesses and HTTP
    /// requests synchronously.
    async fn grade(
        &self,
        pairs: Vec<(Sample, Item)>,
    ) -> Result<Vec<Result<Grade, GraderError>>, OnlineError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let grader = self.grader.clone();
        tokio::task::spawn_blocking(move || grader.grade_batch(&pairs))
            .await
            .map_err(|e| OnlineError::Task(e.to_string()))
    }

    /// The feedback row of a score, with whether it passed.
    fn feedback_row(&self, row: Row, grade: &Grade, ts_ms: u64) -> (FeedbackRow, bool) {
        let feedback = FeedbackRow {
            id: feedback_id(&row.id, &self.settings.metric),
            ts_ms,
            date: date_of(ts_ms),
            tenant: row.tenant,
            inference_id: Some(row.id),
            episode_id: row.episode_id,
            route: self.settings.route.clone(),
            variant: row.variant,
            metric: self.settings.metric.clone(),
            value_kind: VALUE_FLOAT,
            value_float: grade.score,
            value_text: String::new(),
            tag_keys: vec!["grader_type".into(), "passed".into(), "shadow".into()],
            tag_values: vec![
                self.grader.kind().to_owned(),
                grade.passed.to_string(),
                row.shadow.to_string(),
            ],
            idempotency_key: None,
            source: self.source.clone(),
        };
        (feedback, grade.passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_the_fraction() {
        let ids: Vec<String> = (0..4000).map(|i| format!("0190c0de-{i:04}")).collect();
        let picked: Vec<bool> = ids.iter().map(|id| sampled(id, 0.1)).collect();
        assert_eq!(
            picked,
            ids.iter().map(|id| sampled(id, 0.1)).collect::<Vec<_>>()
        );
        let n = picked.iter().filter(|p| **p).count();
        assert!((320..480).contains(&n), "{n} of 4000 at 0.1");
        // A larger fraction keeps every inference a smaller one picked.
        assert!(ids
            .iter()
            .filter(|id| sampled(id, 0.1))
            .all(|id| sampled(id, 0.3)));
        assert!(ids.iter().all(|id| sampled(id, 1.0)));
        assert!(!ids.iter().any(|id| sampled(id, 0.0)));
    }

    #[test]
    fn sample_point_is_sha256_little_endian() {
        // ClickHouse: reinterpretAsUInt64(substring(SHA256('abc'), 1, 8)).
        assert_eq!(sample_point("abc"), 16_919_744_041_952_114_874);
        assert_eq!(threshold(1.0), None);
        assert_eq!(threshold(0.0), Some(0));
        assert_eq!(threshold(0.5), Some(1 << 63));
    }

    #[test]
    fn feedback_ids_are_stable_per_inference_and_metric() {
        let a = feedback_id("i1", "grader_exact");
        assert_eq!(a, feedback_id("i1", "grader_exact"));
        assert_ne!(a, feedback_id("i1", "grader_other"));
        assert_ne!(a, feedback_id("i2", "grader_exact"));
        // No ambiguity between the parts.
        assert_ne!(feedback_id("i1g", "x"), feedback_id("i1", "gx"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 8);
    }

    #[test]
    fn settings_are_checked() {
        let ok = Settings {
            route: "chat".into(),
            metric: "grader_x".into(),
            fraction: 0.1,
            lookback: Duration::from_secs(3600),
            batch: 100,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            Settings {
                fraction: 1.5,
                ..ok.clone()
            },
            Settings {
                fraction: f64::NAN,
                ..ok.clone()
            },
            Settings {
                batch: 0,
                ..ok.clone()
            },
            Settings {
                route: String::new(),
                ..ok.clone()
            },
            Settings {
                lookback: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summary_names_every_count() {
        let p = Pass {
            graded: 4,
            passed: 3,
            score_sum: 3.5,
            errors: 1,
            skipped: 2,
            pending: 7,
            ..Pass::default()
        };
        assert_eq!(
            p.summary("chat", "grader_x"),
            "grade-online route=chat metric=grader_x: graded 4, passed 3, mean 0.875, errors 1, skipped 2 (no body), pending 7"
        );
    }
}
