//! Schema tests against a real ClickHouse: every table round-trips a row
//! with every column set (validation is off on 18.16, so a Rust/ClickHouse
//! type mismatch would corrupt silently), and migrations are idempotent.

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use flywheel_feedback::store::{
    rows::{
        canary_action, experiment_status, AttemptRow, CanaryEvaluationRow, EvalResultRow,
        ExperimentRow, FeedbackRow, InferenceRow, TrainingStepRow, TrainingUsageRow,
    },
    Migration, MIGRATIONS,
};

async fn round_trip<T>(store: &flywheel_feedback::Store, table: &str, row: T)
where
    T: clickhouse::RowOwned
        + clickhouse::RowWrite
        + clickhouse::RowRead
        + PartialEq
        + std::fmt::Debug
        + Clone,
{
    store
        .insert_rows(table, std::slice::from_ref(&row))
        .await
        .unwrap();
    let sql = format!("SELECT ?fields FROM {}.{table}", store.database());
    let back: Vec<T> = store.client().query(&sql).fetch_all::<T>().await.unwrap();
    assert_eq!(back, vec![row], "{table}");
}

fn inference_row() -> InferenceRow {
    InferenceRow {
        id: "0190c0de-0000-7000-8000-000000000001".into(),
        ts_ms: 1_700_000_000_123,
        date: 19675,
        tenant: "t1".into(),
        endpoint: "chat_completions".into(),
        route: "chat".into(),
        variant: "v2".into(),
        provider: "openai".into(),
        model: "gpt-x".into(),
        episode_id: Some("ep-1".into()),
        user: Some("u'ser\\x".into()),
        stream: true,
        status: 502,
        prompt_tokens: 1_234_567_890_123,
        completion_tokens: 77,
        tokens_estimated: true,
        ttft_ms: Some(12.25),
        latency_ms: 345.5,
        overhead_ms: 1.75,
        retries: 3,
        fallback_depth: 2,
        failovers: 1,
        failover_diverged: true,
        validation: 3,
        cost_usd: 0.012345,
        attempt_count: 4,
        request_body: "{\"messages\":[\"héllo\\n\"]}".into(),
        response_body: "{\"a\":1}".into(),
        shadow: true,
        pair_id: "0190c0de-0000-7000-8000-000000000000".into(),
    }
}

fn attempt_row() -> AttemptRow {
    AttemptRow {
        inference_id: "0190c0de-0000-7000-8000-000000000001".into(),
        seq: 3,
        ts_ms: 1_700_000_000_123,
        date: 19675,
        tenant: "t1".into(),
        route: "chat".into(),
        variant: "v2".into(),
        provider: "anthropic".into(),
        model: "claude".into(),
        target_index: 1,
        try_index: 2,
        outcome: 9,
        status: Some(599),
        reason: Some("client went away".into()),
        started_ms: 1_700_000_000_200,
        latency_ms: 99.5,
        ttft_ms: Some(4.5),
        prompt_tokens: 11,
        completion_tokens: 22,
        tokens_estimated: true,
        cost_usd: 0.5,
    }
}

fn feedback_row() -> FeedbackRow {
    FeedbackRow {
        id: "0190c0de-0000-7000-8000-0000000000f1".into(),
        ts_ms: 1_700_000_000_999,
        date: 19675,
        tenant: "t1".into(),
        inference_id: Some("0190c0de-0000-7000-8000-000000000001".into()),
        episode_id: Some("ep-1".into()),
        route: "chat".into(),
        variant: "v2".into(),
        metric: "thumbs".into(),
        value_kind: 4,
        value_float: 0.75,
        value_text: "{\"role\":\"assistant\",\"content\":\"x\"}".into(),
        tag_keys: vec!["k1".into(), "k2".into()],
        tag_values: vec!["v1".into(), "".into()],
        idempotency_key: Some("idem-1".into()),
        source: "implicit:reask".into(),
    }
}

#[tokio::test]
async fn schema_round_trip_every_table() {
    let store = migrated_store("roundtrip").await;
    round_trip(&store, "inferences", inference_row()).await;
    round_trip(&store, "inferences_retained", inference_row()).await;
    round_trip(&store, "attempts", attempt_row()).await;
    round_trip(&store, "attempts_retained", attempt_row()).await;
    round_trip(&store, "feedback", feedback_row()).await;
    round_trip(&store, "feedback_retained", feedback_row()).await;
    round_trip(
        &store,
        "training_usage",
        TrainingUsageRow {
            inference_id: "i-1".into(),
            dataset: "ds-2026-11".into(),
            ts_ms: 1_700_000_000_555,
        },
    )
    .await;
    round_trip(
        &store,
        "eval_results",
        EvalResultRow {
            run_id: "run-1".into(),
            ts_ms: 1_700_000_000_777,
            dataset: "arithmetic.heldout.jsonl".into(),
            grader: "arithmetic".into(),
            config: "chain".into(),
            model: "tasks".into(),
            requests: 40,
            request_errors: 2,
            grader_errors: 1,
            mean_score: 0.375,
            mean_score_low: 0.25,
            mean_score_high: 0.5,
            pass_rate: 0.3,
            pass_rate_low: 0.18,
            pass_rate_high: 0.45,
            tokens_per_request: 123.5,
            retries_per_request: 0.75,
            fallbacks_per_request: 0.25,
            latency_p50_ms: 812.0,
            latency_p95_ms: 2400.5,
            cost_per_request_usd: 0.000_012_5,
            quality_per_dollar: 30_000.0,
            report_json: "{\"configs\":[]}".into(),
        },
    )
    .await;
    round_trip(
        &store,
        "training_steps",
        TrainingStepRow {
            run_id: "run-2".into(),
            step: 17,
            ts_ms: 1_700_000_000_888,
            loss: -0.125,
            reward_mean: 0.5,
            reward_std: 0.25,
            pass_rate: 0.375,
            kl: 0.0625,
            entropy: 1.5,
            grad_norm: 0.875,
            learning_rate: 1e-4,
            response_len_mean: 21.5,
            step_secs: 9.25,
            tokens_per_sec: 18.5,
            heldout_reward: Some(0.4375),
        },
    )
    .await;

    // The server reads the values as meant, not only the client: Date,
    // Enum8 numbering and Nullable as ClickHouse sees them.
    let db = store.database();
    let (date, validation, ttft): (String, String, String) = store
        .client()
        .query(&format!(
            "SELECT toString(date), toString(validation), toString(assumeNotNull(ttft_ms)) FROM {db}.inferences"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (date.as_str(), validation.as_str(), ttft.as_str()),
        ("2023-11-14", "failed", "12.25")
    );
    let (outcome, status): (String, String) = store
        .client()
        .query(&format!(
            "SELECT toString(outcome), toString(assumeNotNull(status)) FROM {db}.attempts"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (outcome.as_str(), status.as_str()),
        ("client_closed", "599")
    );
    let (kind, tags): (String, String) = store
        .client()
        .query(&format!(
            "SELECT toString(value_kind), toString(tag_keys) FROM {db}.feedback"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (kind.as_str(), tags.as_str()),
        ("demonstration", "['k1','k2']")
    );

    // Nones as NULLs.
    let mut row = inference_row();
    row.id = "none-row".into();
    row.episode_id = None;
    row.user = None;
    row.ttft_ms = None;
    row.shadow = false;
    row.pair_id = String::new();
    store
        .insert_rows("inferences", &[row.clone()])
        .await
        .unwrap();
    let back: InferenceRow = store
        .client()
        .query(&format!(
            "SELECT ?fields FROM {db}.inferences WHERE id = 'none-row'"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(back, row);
    drop_db(&store).await;
}

#[tokio::test]
async fn every_enum_value_maps_to_its_name() {
    use flywheel_feedback::{
        store::rows::{outcome_code, validation_code},
        AttemptOutcome as O, Validation as V,
    };
    let store = migrated_store("enums").await;
    let outcomes = [
        (O::Ok, "ok"),
        (O::ErrorStatus, "error_status"),
        (O::ConnectError, "connect_error"),
        (O::Timeout, "timeout"),
        (O::ValidationFailed, "validation_failed"),
        (O::MidStreamFailover, "mid_stream_failover"),
        (O::CircuitOpen, "circuit_open"),
        (O::BadResponse, "bad_response"),
        (O::ClientClosed, "client_closed"),
    ];
    let rows: Vec<AttemptRow> = outcomes
        .iter()
        .enumerate()
        .map(|(i, (o, _))| AttemptRow {
            seq: i as u32,
            outcome: outcome_code(*o),
            ..attempt_row()
        })
        .collect();
    store.insert_rows("attempts", &rows).await.unwrap();
    let names: Vec<String> = store
        .client()
        .query(&format!(
            "SELECT toString(outcome) FROM {}.attempts ORDER BY seq",
            store.database()
        ))
        .fetch_all()
        .await
        .unwrap();
    // The serde names of the Rust enum are the ClickHouse names.
    for ((o, name), got) in outcomes.iter().zip(&names) {
        assert_eq!(name, got);
        assert_eq!(serde_json::to_value(o).unwrap(), *name);
    }
    for (v, name) in [
        (V::NotRequested, "not_requested"),
        (V::Passed, "passed"),
        (V::Failed, "failed"),
    ] {
        let got: String = store
            .client()
            .query(&format!(
                "SELECT toString(CAST({} AS Enum8('not_requested' = 1, 'passed' = 2, 'failed' = 3)))",
                validation_code(v)
            ))
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(got, name);
        assert_eq!(serde_json::to_value(v).unwrap(), name);
    }
    drop_db(&store).await;
}

#[tokio::test]
async fn migrations_twice_on_empty_database() {
    let store = store_for(&fresh_db("migrate"));
    let first = store.migrate().await.unwrap();
    assert_eq!(
        first,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let second = store.migrate().await.unwrap();
    assert!(second.is_empty(), "second run applied {second:?}");
    let applied = store.applied_migrations().await.unwrap();
    let expected: Vec<(u32, String)> = MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect();
    assert_eq!(applied, expected);
    let raw = count(&store, "SELECT count() FROM {db}.schema_migrations").await;
    assert_eq!(raw, MIGRATIONS.len() as u64, "each migration recorded once");
    drop_db(&store).await;
}

#[tokio::test]
async fn add_column_migration_is_idempotent() {
    let store = migrated_store("addcol").await;
    // A migration whose ALTER already ran (e.g. a run that died before
    // recording it) must not fail on the second attempt.
    let extra = [Migration {
        version: 9001,
        name: "test_add_column",
        sql: "ALTER TABLE {db}.training_usage ADD COLUMN note String DEFAULT 'x';\n\
              ALTER TABLE {db}.training_usage ADD COLUMN note String DEFAULT 'x';",
    }];
    assert_eq!(store.migrate_with(&extra).await.unwrap(), vec![9001]);
    assert!(store.migrate_with(&extra).await.unwrap().is_empty());
    let n = count(
        &store,
        "SELECT count() FROM system.columns WHERE database = '{db}' AND table = 'training_usage' AND name = 'note'",
    )
    .await;
    assert_eq!(n, 1);
    drop_db(&store).await;
}

fn experiment_row() -> ExperimentRow {
    ExperimentRow {
        id: "exp-0190c0de".into(),
        revision: 1_700_000_000_123_456,
        route: "chat".into(),
        incumbent: "base".into(),
        candidate: "tuned-v3".into(),
        spec_json: "{\"settings\":{\"alpha\":0.05},\"steps\":[\"shadow\",\"1%\"]}".into(),
        step: 2,
        step_name: "5%".into(),
        candidate_percent: 5.0,
        step_started_ms: 1_700_000_000_500,
        status: experiment_status::KEPT_INCUMBENT,
        status_reason: "inconclusive at the maximum duration".into(),
        origin: "tuner:run-7".into(),
        created_ms: 1_700_000_000_100,
        updated_ms: 1_700_000_000_900,
    }
}

fn evaluation_row() -> CanaryEvaluationRow {
    CanaryEvaluationRow {
        id: "0190c0de-0000-7000-8000-0000000000e1".into(),
        experiment_id: "exp-0190c0de".into(),
        ts_ms: 1_700_000_000_999,
        date: 19675,
        revision: 1_700_000_000_123_457,
        route: "chat".into(),
        step: 2,
        step_name: "5%".into(),
        candidate_percent: 5.0,
        elapsed_secs: 3_601,
        action: canary_action::CREATE,
        manual: true,
        actor: "cli:o'perator".into(),
        reason_kind: "guardrail_critical".into(),
        reason_json: "{\"kind\":\"guardrail_critical\",\"guardrails\":[\"error_rate\"]}".into(),
        evidence_json: "{\"step\":\"5%\"}".into(),
        step_after: 3,
        status_after: experiment_status::ROLLED_BACK,
        incumbent_weight: 9_500,
        candidate_weight: 500,
        incumbent_requests: 12_345_678_901,
        candidate_requests: 650,
        incumbent_graded: 6_000,
        candidate_graded: 321,
        incumbent_quality: Some(0.875),
        candidate_quality: Some(0.5),
        incumbent_cost_per_request: Some(0.000_125),
        candidate_cost_per_request: Some(0.25),
        incumbent_quality_per_dollar: Some(7000.0),
        candidate_quality_per_dollar: Some(2.0),
        qpd_advantage: Some(-0.75),
        qpd_lower: Some(-0.875),
        qpd_upper: Some(-0.625),
        qpd_p_value: Some(1.0),
        quality_difference: Some(-0.375),
        quality_lower: Some(-0.5),
        quality_upper: Some(-0.25),
        srm_p_value: Some(0.0625),
        guardrails_failing: vec!["error_rate:critical".into(), "ttft:no_data".into()],
    }
}

/// The canary controller's tables: every column round-trips, the Enum8
/// codes are the names the migration gives them, and `FINAL` keeps the
/// highest revision of an experiment.
#[tokio::test]
async fn canary_tables_round_trip() {
    let store = migrated_store("canary").await;
    round_trip(&store, "experiments", experiment_row()).await;
    round_trip(&store, "canary_evaluations", evaluation_row()).await;
    let db = store.database();

    // Nones as NULLs, no guardrails as an empty array.
    let empty = CanaryEvaluationRow {
        id: "none-row".into(),
        incumbent_quality: None,
        candidate_quality: None,
        incumbent_cost_per_request: None,
        candidate_cost_per_request: None,
        incumbent_quality_per_dollar: None,
        candidate_quality_per_dollar: None,
        qpd_advantage: None,
        qpd_lower: None,
        qpd_upper: None,
        qpd_p_value: None,
        quality_difference: None,
        quality_lower: None,
        quality_upper: None,
        srm_p_value: None,
        guardrails_failing: vec![],
        ..evaluation_row()
    };
    store
        .insert_rows("canary_evaluations", std::slice::from_ref(&empty))
        .await
        .unwrap();
    let back: CanaryEvaluationRow = store
        .client()
        .query(&format!(
            "SELECT ?fields FROM {db}.canary_evaluations WHERE id = 'none-row'"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(back, empty);
    let nulls: u64 = count(
        &store,
        "SELECT count() FROM {db}.canary_evaluations WHERE isNull(incumbent_quality) AND isNull(srm_p_value)",
    )
    .await;
    assert_eq!(nulls, 1);

    // Every status and action code is the name the migration gives it.
    let statuses = [
        (experiment_status::RUNNING, "running"),
        (experiment_status::PAUSED, "paused"),
        (experiment_status::COMPLETED, "completed"),
        (experiment_status::ROLLED_BACK, "rolled_back"),
        (experiment_status::KEPT_INCUMBENT, "kept_incumbent"),
    ];
    let rows: Vec<ExperimentRow> = statuses
        .iter()
        .enumerate()
        .map(|(i, (code, _))| ExperimentRow {
            id: format!("status-{i}"),
            status: *code,
            ..experiment_row()
        })
        .collect();
    store.insert_rows("experiments", &rows).await.unwrap();
    let names: Vec<String> = store
        .client()
        .query(&format!(
            "SELECT toString(status) FROM {db}.experiments WHERE id LIKE 'status-%' ORDER BY id"
        ))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        names,
        statuses
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
    );
    let actions = [
        (canary_action::PROMOTE, "promote"),
        (canary_action::HOLD, "hold"),
        (canary_action::ROLLBACK, "rollback"),
        (canary_action::KEEP_INCUMBENT, "keep_incumbent"),
        (canary_action::PAUSE, "pause"),
        (canary_action::RESUME, "resume"),
        (canary_action::CREATE, "create"),
        (canary_action::UNLOAD, "unload"),
    ];
    let rows: Vec<CanaryEvaluationRow> = actions
        .iter()
        .enumerate()
        .map(|(i, (code, _))| CanaryEvaluationRow {
            id: format!("action-{i}"),
            action: *code,
            status_after: statuses[i % statuses.len()].0,
            ..evaluation_row()
        })
        .collect();
    store
        .insert_rows("canary_evaluations", &rows)
        .await
        .unwrap();
    let got: Vec<(String, String)> = store
        .client()
        .query(&format!(
            "SELECT toString(action), toString(status_after) FROM {db}.canary_evaluations \
             WHERE id LIKE 'action-%' ORDER BY id"
        ))
        .fetch_all()
        .await
        .unwrap();
    for (i, ((_, action), (got_action, got_status))) in actions.iter().zip(&got).enumerate() {
        assert_eq!(action, got_action);
        assert_eq!(statuses[i % statuses.len()].1, got_status);
    }
    assert_eq!(got.len(), actions.len());

    // Later revisions replace earlier ones under FINAL, whatever the
    // insertion order.
    let v = |revision, step| ExperimentRow {
        id: "versioned".into(),
        revision,
        step,
        ..experiment_row()
    };
    store
        .insert_rows("experiments", &[v(3, 3), v(1, 1)])
        .await
        .unwrap();
    store.insert_rows("experiments", &[v(2, 2)]).await.unwrap();
    let latest: ExperimentRow = store
        .client()
        .query(&format!(
            "SELECT ?fields FROM {db}.experiments FINAL WHERE id = 'versioned'"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((latest.revision, latest.step), (3, 3));
    drop_db(&store).await;
}
