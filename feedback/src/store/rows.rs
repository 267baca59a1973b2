//! Row types of the ClickHouse tables and their conversion from events.
//!
//! Field order is irrelevant for inserts (the client names the columns) but
//! each field's type must be exactly its column's: validation is off on
//! 18.16 and a mismatch corrupts silently. Mapping used here:
//! `String`↔String, `Option<String>`↔Nullable(String), `u16/u32/u64`↔
//! UInt16/32/64, `f64`↔Float64, `bool`↔UInt8, `i8`↔Enum8 (the numbers in
//! the migration), `u16`↔Date (days since 1970-01-01), `Vec<String>`↔
//! Array(String). The tests `schema_round_trip_*` pin every table.

use serde::{Deserialize, Serialize};

use crate::event::{AttemptOutcome, FeedbackEvent, FeedbackValue, InferenceEvent, Validation};

const MS_PER_DAY: u64 = 86_400_000;

/// ClickHouse `Date` (days since the Unix epoch) of a time in ms. `Date`
/// ends in 2149; later times saturate.
pub fn date_of(ts_ms: u64) -> u16 {
    (ts_ms / MS_PER_DAY).min(u16::MAX as u64) as u16
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct InferenceRow {
    pub id: String,
    pub ts_ms: u64,
    pub date: u16,
    pub tenant: String,
    pub endpoint: String,
    pub route: String,
    pub variant: String,
    pub provider: String,
    pub model: String,
    pub episode_id: Option<String>,
    pub user: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens_estimated: bool,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    pub overhead_ms: f64,
    pub retries: u32,
    pub fallback_depth: u32,
    pub failovers: u32,
    pub failover_diverged: bool,
    /// Enum8: 1 not_requested, 2 passed, 3 failed.
    pub validation: i8,
    pub cost_usd: f64,
    pub attempt_count: u32,
    pub request_body: String,
    pub response_body: String,
    /// A canary mirror (migration 0006), never returned nor billed.
    pub shadow: bool,
    /// The served request's id on both halves of a mirrored pair; empty
    /// otherwise.
    pub pair_id: String,
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct AttemptRow {
    pub inference_id: String,
    /// Position in the inference's attempt list.
    pub seq: u32,
    /// The inference's time (for partitioning with it).
    pub ts_ms: u64,
    pub date: u16,
    pub tenant: String,
    pub route: String,
    pub variant: String,
    pub provider: String,
    pub model: String,
    pub target_index: u32,
    pub try_index: u32,
    /// Enum8, see [`outcome_code`].
    pub outcome: i8,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub started_ms: u64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens_estimated: bool,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct FeedbackRow {
    pub id: String,
    pub ts_ms: u64,
    pub date: u16,
    pub tenant: String,
    pub inference_id: Option<String>,
    pub episode_id: Option<String>,
    pub route: String,
    pub variant: String,
    pub metric: String,
    /// Enum8: 1 boolean, 2 float, 3 comment, 4 demonstration.
    pub value_kind: i8,
    /// Booleans as 0/1, floats; 0 for text kinds.
    pub value_float: f64,
    /// Comment text, or the demonstration as JSON; empty for numbers.
    pub value_text: String,
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
    pub idempotency_key: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct TrainingUsageRow {
    pub inference_id: String,
    pub dataset: String,
    pub ts_ms: u64,
}

/// One evaluated configuration of an offline eval run (`eval_results`).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct EvalResultRow {
    pub run_id: String,
    pub ts_ms: u64,
    pub dataset: String,
    pub grader: String,
    pub config: String,
    pub model: String,
    pub requests: u64,
    pub request_errors: u64,
    pub grader_errors: u64,
    pub mean_score: f64,
    pub mean_score_low: f64,
    pub mean_score_high: f64,
    pub pass_rate: f64,
    pub pass_rate_low: f64,
    pub pass_rate_high: f64,
    pub tokens_per_request: f64,
    pub retries_per_request: f64,
    pub fallbacks_per_request: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub cost_per_request_usd: f64,
    pub quality_per_dollar: f64,
    pub report_json: String,
}

/// One optimizer step of a training run (`training_steps`).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct TrainingStepRow {
    pub run_id: String,
    pub step: u32,
    pub ts_ms: u64,
    pub loss: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    pub pass_rate: f64,
    pub kl: f64,
    pub entropy: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub response_len_mean: f64,
    pub step_secs: f64,
    pub tokens_per_sec: f64,
    pub heldout_reward: Option<f64>,
}

/// One version of a canary experiment (`experiments`, read with `FINAL`:
/// the highest `revision` wins).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct ExperimentRow {
    pub id: String,
    /// Version of the row; every change writes a higher one.
    pub revision: u64,
    pub route: String,
    pub incumbent: String,
    pub candidate: String,
    /// The definition (settings, quality metrics, ramp) as JSON.
    pub spec_json: String,
    /// Index of the current ramp step (the last one evaluated once ended).
    pub step: u32,
    pub step_name: String,
    pub candidate_percent: f64,
    pub step_started_ms: u64,
    /// Enum8, see [`experiment_status`].
    pub status: i8,
    pub status_reason: String,
    /// Who created it (`cli:USER`, `tuner:RUN`, …).
    pub origin: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Codes of `experiments.status` and `canary_evaluations.status_after`.
pub mod experiment_status {
    pub const RUNNING: i8 = 1;
    pub const PAUSED: i8 = 2;
    pub const COMPLETED: i8 = 3;
    pub const ROLLED_BACK: i8 = 4;
    pub const KEPT_INCUMBENT: i8 = 5;
}

/// Codes of `canary_evaluations.action`.
pub mod canary_action {
    pub const PROMOTE: i8 = 1;
    pub const HOLD: i8 = 2;
    pub const ROLLBACK: i8 = 3;
    pub const KEEP_INCUMBENT: i8 = 4;
    pub const PAUSE: i8 = 5;
    pub const RESUME: i8 = 6;
    pub const CREATE: i8 = 7;
    /// A model version unloaded from the engine pool (migration 0007).
    pub const UNLOAD: i8 = 8;
}

/// One evaluation of an experiment, or one manual action
/// (`canary_evaluations`). `None` is "no data", never a zero.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct CanaryEvaluationRow {
    pub id: String,
    pub experiment_id: String,
    pub ts_ms: u64,
    pub date: u16,
    /// The experiment revision this row produced (transitions) or saw.
    pub revision: u64,
    pub route: String,
    pub step: u32,
    pub step_name: String,
    pub candidate_percent: f64,
    pub elapsed_secs: u64,
    /// Enum8, see [`canary_action`].
    pub action: i8,
    pub manual: bool,
    pub actor: String,
    pub reason_kind: String,
    pub reason_json: String,
    /// The decision's `Evidence` as JSON; empty for manual actions taken
    /// without a look at the data.
    pub evidence_json: String,
    pub step_after: u32,
    /// Enum8, see [`experiment_status`].
    pub status_after: i8,
    /// Weights in force after the row (what was written to Redis).
    pub incumbent_weight: u32,
    pub candidate_weight: u32,
    pub incumbent_requests: u64,
    pub candidate_requests: u64,
    pub incumbent_graded: u64,
    pub candidate_graded: u64,
    pub incumbent_quality: Option<f64>,
    pub candidate_quality: Option<f64>,
    pub incumbent_cost_per_request: Option<f64>,
    pub candidate_cost_per_request: Option<f64>,
    pub incumbent_quality_per_dollar: Option<f64>,
    pub candidate_quality_per_dollar: Option<f64>,
    /// `R_C/R_I − 1` and its always-valid bounds and p-value.
    pub qpd_advantage: Option<f64>,
    pub qpd_lower: Option<f64>,
    pub qpd_upper: Option<f64>,
    pub qpd_p_value: Option<f64>,
    /// `q_C − q_I` and its always-valid bounds.
    pub quality_difference: Option<f64>,
    pub quality_lower: Option<f64>,
    pub quality_upper: Option<f64>,
    pub srm_p_value: Option<f64>,
    /// Guardrails whose verdict is not pass (`error_rate:critical`, …).
    pub guardrails_failing: Vec<String>,
}

pub fn validation_code(v: Validation) -> i8 {
    match v {
        Validation::NotRequested => 1,
        Validation::Passed => 2,
        Validation::Failed => 3,
    }
}

pub fn outcome_code(o: AttemptOutcome) -> i8 {
    match o {
        AttemptOutcome::Ok => 1,
        AttemptOutcome::ErrorStatus => 2,
        AttemptOutcome::ConnectError => 3,
        AttemptOutcome::Timeout => 4,
        AttemptOutcome::ValidationFailed => 5,
        AttemptOutcome::MidStreamFailover => 6,
        AttemptOutcome::CircuitOpen => 7,
        AttemptOutcome::BadResponse => 8,
        AttemptOutcome::ClientClosed => 9,
    }
}

pub const VALUE_BOOLEAN: i8 = 1;
pub const VALUE_FLOAT: i8 = 2;
pub const VALUE_COMMENT: i8 = 3;
pub const VALUE_DEMONSTRATION: i8 = 4;

impl InferenceRow {
    /// The inference row and the attempt rows of an event, taken by value:
    /// its strings move into the rows instead of being copied. The bodies
    /// are stored as the event holds them (a missing one as `""`): the
    /// shipper applies the `bodies` policy to the event first.
    pub fn from_owned(e: InferenceEvent) -> (InferenceRow, Vec<AttemptRow>) {
        let date = date_of(e.ts_ms);
        let attempts = e
            .attempts
            .into_iter()
            .enumerate()
            .map(|(seq, a)| AttemptRow {
                inference_id: e.id.clone(),
                seq: seq as u32,
                ts_ms: e.ts_ms,
                date,
                tenant: e.tenant.clone(),
                route: e.route.clone(),
                variant: e.variant.clone(),
                provider: a.provider,
                model: a.model,
                target_index: a.target_index,
                try_index: a.try_index,
                outcome: outcome_code(a.outcome),
                status: a.status,
                reason: a.reason,
                started_ms: a.started_ms,
                latency_ms: a.latency_ms,
                ttft_ms: a.ttft_ms,
                prompt_tokens: a.prompt_tokens,
                completion_tokens: a.completion_tokens,
                tokens_estimated: a.tokens_estimated,
                cost_usd: a.cost_usd,
            })
            .collect::<Vec<_>>();
        let row = Self {
            id: e.id,
            ts_ms: e.ts_ms,
            date,
            tenant: e.tenant,
            endpoint: e.endpoint,
            route: e.route,
            variant: e.variant,
            provider: e.provider,
            model: e.model,
            episode_id: e.episode_id,
            user: e.user,
            stream: e.stream,
            status: e.status,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            tokens_estimated: e.tokens_estimated,
            ttft_ms: e.ttft_ms,
            latency_ms: e.latency_ms,
            overhead_ms: e.overhead_ms,
            retries: e.retries,
            fallback_depth: e.fallback_depth,
            failovers: e.failovers,
            failover_diverged: e.failover_diverged,
            validation: validation_code(e.validation),
            cost_usd: e.cost_usd,
            attempt_count: attempts.len() as u32,
            request_body: e.request_body.unwrap_or_default(),
            response_body: e.response_body.unwrap_or_default(),
            shadow: e.shadow,
            pair_id: e.pair_id.unwrap_or_default(),
        };
        (row, attempts)
    }
}

impl FeedbackRow {
    pub fn from_event(e: &FeedbackEvent) -> Self {
        let (value_kind, value_float, value_text) = match &e.value {
            FeedbackValue::Boolean(b) => (VALUE_BOOLEAN, if *b { 1.0 } else { 0.0 }, String::new()),
            FeedbackValue::Float(f) => (VALUE_FLOAT, *f, String::new()),
            FeedbackValue::Comment(c) => (VALUE_COMMENT, 0.0, c.clone()),
            FeedbackValue::Demonstration(v) => (VALUE_DEMONSTRATION, 0.0, v.to_string()),
        };
        Self {
            id: e.id.clone(),
            ts_ms: e.ts_ms,
            date: date_of(e.ts_ms),
            tenant: e.tenant.clone(),
            inference_id: e.target.inference_id.clone(),
            episode_id: e.target.episode_id.clone(),
            route: e.route.clone(),
            variant: e.variant.clone(),
            metric: e.metric.clone(),
            value_kind,
            value_float,
            value_text,
            tag_keys: e.tags.keys().cloned().collect(),
            tag_values: e.tags.values().cloned().collect(),
            idempotency_key: e.idempotency_key.clone(),
            source: e.source.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AttemptEvent;

    #[test]
    fn event_maps_to_rows() {
        let a = AttemptEvent {
            provider: "p".into(),
            model: "m".into(),
            target_index: 1,
            try_index: 2,
            outcome: AttemptOutcome::Timeout,
            status: Some(504),
            reason: Some("slow".into()),
            started_ms: 5,
            latency_ms: 1.5,
            ttft_ms: Some(0.5),
            prompt_tokens: 3,
            completion_tokens: 4,
            tokens_estimated: true,
            cost_usd: 0.25,
        };
        let e = InferenceEvent {
            id: "id".into(),
            ts_ms: 1_700_000_000_123,
            tenant: "t".into(),
            endpoint: "e".into(),
            route: "r".into(),
            variant: "v".into(),
            provider: "p".into(),
            model: "m".into(),
            episode_id: Some("ep".into()),
            user: None,
            stream: true,
            status: 200,
            prompt_tokens: 1,
            completion_tokens: 2,
            tokens_estimated: false,
            ttft_ms: None,
            latency_ms: 3.0,
            overhead_ms: 0.1,
            retries: 1,
            fallback_depth: 0,
            failovers: 1,
            failover_diverged: true,
            validation: Validation::Passed,
            cost_usd: 0.5,
            attempts: vec![
                a.clone(),
                AttemptEvent {
                    outcome: AttemptOutcome::Ok,
                    status: Some(200),
                    ..a
                },
            ],
            request_body: Some(r#"{"messages":[{"role":"user","content":"x"}]}"#.into()),
            response_body: None,
            shadow: true,
            pair_id: Some("served".into()),
        };
        let (row, attempts) = InferenceRow::from_owned(e.clone());
        assert_eq!(
            (row.id.as_str(), row.ts_ms, row.date),
            ("id", e.ts_ms, date_of(e.ts_ms))
        );
        assert_eq!(
            (
                row.tenant.as_str(),
                row.route.as_str(),
                row.variant.as_str()
            ),
            ("t", "r", "v")
        );
        assert_eq!(
            (
                row.episode_id.as_deref(),
                row.user.as_deref(),
                row.stream,
                row.status
            ),
            (Some("ep"), None, true, 200)
        );
        assert_eq!(
            (
                row.retries,
                row.failovers,
                row.failover_diverged,
                row.attempt_count
            ),
            (1, 1, true, 2)
        );
        assert_eq!(row.validation, validation_code(Validation::Passed));
        assert_eq!((row.shadow, row.pair_id.as_str()), (true, "served"));
        assert_eq!(Some(row.request_body.as_str()), e.request_body.as_deref());
        assert_eq!(row.response_body, "");
        assert_eq!(attempts.len(), 2);
        for (seq, (r, a)) in attempts.iter().zip(&e.attempts).enumerate() {
            assert_eq!(
                (r.inference_id.as_str(), r.seq, r.ts_ms, r.date),
                ("id", seq as u32, e.ts_ms, row.date)
            );
            assert_eq!(
                (r.tenant.as_str(), r.route.as_str(), r.variant.as_str()),
                ("t", "r", "v")
            );
            assert_eq!(
                (
                    r.provider.as_str(),
                    r.model.as_str(),
                    r.target_index,
                    r.try_index
                ),
                ("p", "m", 1, 2)
            );
            assert_eq!(
                (r.outcome, r.status, r.reason.as_deref()),
                (outcome_code(a.outcome), a.status, Some("slow"))
            );
            assert_eq!(
                (r.started_ms, r.latency_ms, r.ttft_ms, r.cost_usd),
                (5, 1.5, Some(0.5), 0.25)
            );
            assert_eq!(
                (r.prompt_tokens, r.completion_tokens, r.tokens_estimated),
                (3, 4, true)
            );
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date_of(0), 0);
        assert_eq!(date_of(1_700_000_000_123), 19675);
    }
}
