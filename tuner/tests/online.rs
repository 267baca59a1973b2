//! Online grading against a real ClickHouse (`scripts/services.sh start`;
//! `FLYWHEEL_CLICKHOUSE_URL` to point elsewhere). Each test uses its own
//! database, dropped when it passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use flywheel_feedback::{
    now_ms,
    store::rows::{FeedbackRow, InferenceRow},
    AttemptEvent, AttemptOutcome, InferenceEvent, Store, StoreConfig, Validation,
};
use flywheel_tuner::{
    dataset::{captured, pii},
    grader::Grader,
    online::{feedback_id, sampled, OnlineGrader, Settings, Skip},
};
use serde_json::json;

async fn migrated_store(tag: &str) -> Store {
    static N: AtomicU32 = AtomicU32::new(0);
    let database = format!(
        "tunertest_{tag}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        now_ms() % 1_000_000
    );
    let store = Store::try_new(&StoreConfig {
        url: std::env::var("FLYWHEEL_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
        database,
        user: None,
        password: None,
    })
    .unwrap();
    store.migrate().await.unwrap_or_else(|e| {
        panic!("migrations failed (is ClickHouse up? scripts/services.sh start): {e}")
    });
    store
}

async fn drop_db(store: &Store) {
    let sql = format!("DROP DATABASE IF EXISTS {}", store.database());
    store
        .client()
        .clone()
        .with_database("system")
        .query(&sql)
        .execute()
        .await
        .unwrap();
}

/// What the test sends and what the model answered.
struct Spec {
    route: &'static str,
    tenant: &'static str,
    variant: &'static str,
    status: u16,
    shadow: bool,
    episode: Option<String>,
    /// `metadata.reference` of the request; `None`: no metadata.
    reference: Option<&'static str>,
    answer: &'static str,
    bodies: bool,
    prompt: String,
}

fn event(id: &str, ts_ms: u64, s: &Spec) -> InferenceEvent {
    let mut request =
        json!({"model": s.route, "messages": [{"role": "user", "content": s.prompt}]});
    if let Some(r) = s.reference {
        request["metadata"] = json!({"reference": r});
    }
    let answer = json!({"choices": [{"message": {"role": "assistant", "content": s.answer}}]});
    InferenceEvent {
        id: id.into(),
        ts_ms,
        tenant: s.tenant.into(),
        endpoint: "chat".into(),
        route: s.route.into(),
        variant: s.variant.into(),
        provider: "mock".into(),
        model: "m".into(),
        episode_id: s.episode.clone(),
        user: None,
        stream: false,
        status: s.status,
        prompt_tokens: 3,
        completion_tokens: 2,
        tokens_estimated: false,
        ttft_ms: None,
        latency_ms: 5.0,
        overhead_ms: 0.1,
        retries: 0,
        fallback_depth: 0,
        failovers: 0,
        failover_diverged: false,
        validation: Validation::NotRequested,
        cost_usd: 0.001,
        attempts: vec![AttemptEvent {
            provider: "mock".into(),
            model: "m".into(),
            target_index: 0,
            try_index: 0,
            outcome: if s.status == 200 {
                AttemptOutcome::Ok
            } else {
                AttemptOutcome::ErrorStatus
            },
            status: Some(s.status),
            reason: None,
            started_ms: ts_ms,
            latency_ms: 5.0,
            ttft_ms: None,
            prompt_tokens: 3,
            completion_tokens: 2,
            tokens_estimated: false,
            cost_usd: 0.001,
        }],
        request_body: s.bodies.then(|| request.to_string()),
        response_body: s.bodies.then(|| answer.to_string()),
        shadow: s.shadow,
        pair_id: None,
    }
}

async fn insert(store: &Store, events: Vec<InferenceEvent>) {
    let rows: Vec<InferenceRow> = events
        .into_iter()
        .map(|e| InferenceRow::from_owned(e).0)
        .collect();
    store.insert_rows("inferences", &rows).await.unwrap();
}

/// Feedback rows of `metric`, by inference id (`FINAL`: as readers see them).
async fn scores(store: &Store, metric: &str) -> BTreeMap<String, FeedbackRow> {
    let sql = format!(
        "SELECT id, ts_ms, date, tenant, inference_id, episode_id, route, variant, metric, \
         toInt8(value_kind) AS value_kind, value_float, value_text, tag_keys, tag_values, \
         idempotency_key, source FROM {}.feedback FINAL WHERE metric = ?",
        store.database()
    );
    store
        .client()
        .query(&sql)
        .bind(metric)
        .fetch_all::<FeedbackRow>()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.inference_id.clone().unwrap(), r))
        .collect()
}

async fn raw_feedback_rows(store: &Store) -> u64 {
    let sql = format!("SELECT count() FROM {}.feedback", store.database());
    store.client().query(&sql).fetch_one::<u64>().await.unwrap()
}

fn capital_grader() -> Arc<Grader> {
    Arc::new(
        Grader::from_config(&json!({
            "type": "string_check",
            "name": "capital",
            "input": "{{sample.output_text}}",
            "reference": "{{item.metadata.reference}}",
            "operation": "eq"
        }))
        .unwrap(),
    )
}

fn settings(fraction: f64, batch: usize) -> Settings {
    Settings {
        route: "chat".into(),
        metric: "grader_capital".into(),
        fraction,
        lookback: Duration::from_secs(3600),
        batch,
    }
}

#[tokio::test]
async fn one_pass_grades_the_sample_and_a_second_grades_nothing() {
    let store = migrated_store("online").await;
    let now = now_ms();
    let mut specs: Vec<(String, Spec)> = Vec::new();
    for i in 0..300 {
        let id = uuid::Uuid::now_v7().to_string();
        let spec = Spec {
            route: if i % 10 == 9 { "other" } else { "chat" },
            tenant: if i % 2 == 0 { "acme" } else { "globex" },
            variant: if i % 3 == 0 { "good" } else { "base" },
            status: if i % 17 == 0 { 502 } else { 200 },
            shadow: i % 3 == 0,
            episode: (i % 4 == 0).then(|| format!("ep-{i}")),
            // Every 11th asks with no reference: the grader fails on it.
            reference: (i % 11 != 5).then_some("Paris"),
            answer: if i % 5 == 0 { "London" } else { "Paris" },
            // Every 13th was captured with the bodies policy off.
            bodies: i % 13 != 7,
            prompt: format!("capital of France? #{i}"),
        };
        specs.push((id, spec));
    }
    // Spread over the last minutes, and one far older than the lookback.
    let events: Vec<InferenceEvent> = specs
        .iter()
        .enumerate()
        .map(|(i, (id, s))| event(id, now - 200_000 + i as u64 * 100, s))
        .collect();
    insert(&store, events).await;
    let old_id = uuid::Uuid::now_v7().to_string();
    let old = Spec {
        route: "chat",
        tenant: "acme",
        variant: "base",
        status: 200,
        shadow: false,
        episode: None,
        reference: Some("Paris"),
        answer: "Paris",
        bodies: true,
        prompt: "old".into(),
    };
    insert(&store, vec![event(&old_id, now - 7_200_000, &old)]).await;

    let fraction = 0.5;
    let eligible = |s: &Spec| s.route == "chat" && s.status == 200;
    let picked: Vec<&(String, Spec)> = specs
        .iter()
        .filter(|(id, s)| eligible(s) && sampled(id, fraction))
        .collect();
    let expect_scored: BTreeMap<&str, &Spec> = picked
        .iter()
        .filter(|(_, s)| s.bodies && s.reference.is_some())
        .map(|(id, s)| (id.as_str(), s))
        .collect();
    let expect_errors: BTreeSet<&str> = picked
        .iter()
        .filter(|(_, s)| s.bodies && s.reference.is_none())
        .map(|(id, _)| id.as_str())
        .collect();
    let expect_skipped: BTreeSet<&str> = picked
        .iter()
        .filter(|(_, s)| !s.bodies)
        .map(|(id, _)| id.as_str())
        .collect();
    let all_eligible = specs.iter().filter(|(_, s)| eligible(s)).count();
    assert!(
        picked.len() * 3 > all_eligible && picked.len() * 3 < all_eligible * 2,
        "{} of {all_eligible} sampled at 0.5",
        picked.len()
    );
    assert!(!expect_errors.is_empty() && !expect_skipped.is_empty());

    let mut online =
        OnlineGrader::new(store.clone(), capital_grader(), settings(fraction, 1000)).unwrap();
    let pass = online.tick().await.unwrap();
    assert_eq!(pass.graded, expect_scored.len(), "{pass:?}");
    assert_eq!(pass.errors, expect_errors.len());
    assert_eq!(pass.skipped, expect_skipped.len());
    assert_eq!(pass.pending, 0);
    assert_eq!(
        pass.passed,
        expect_scored
            .values()
            .filter(|s| s.answer == "Paris")
            .count()
    );
    let errors: BTreeSet<&str> = pass
        .not_graded
        .iter()
        .filter(|(_, why)| matches!(why, Skip::GraderError(_)))
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(errors, expect_errors);

    let stored = scores(&store, "grader_capital").await;
    assert_eq!(
        stored.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expect_scored.keys().copied().collect::<BTreeSet<_>>(),
        "exactly the sampled, gradable inferences have a score (none for errors, no bodies, \
         other routes, failures, or the inference older than the lookback)"
    );
    for (id, row) in &stored {
        let s = expect_scored[id.as_str()];
        let expected = if s.answer == "Paris" { 1.0 } else { 0.0 };
        assert_eq!(row.value_float, expected, "{id}");
        assert_eq!(row.value_kind, 2, "a float");
        assert_eq!(
            (
                row.tenant.as_str(),
                row.variant.as_str(),
                row.route.as_str()
            ),
            (s.tenant, s.variant, "chat")
        );
        assert_eq!(row.episode_id, s.episode);
        assert_eq!(row.source, "grader:capital");
        assert_eq!(row.id, feedback_id(id, "grader_capital"));
        let tags: BTreeMap<&str, &str> = row
            .tag_keys
            .iter()
            .map(String::as_str)
            .zip(row.tag_values.iter().map(String::as_str))
            .collect();
        assert_eq!(tags["shadow"], s.shadow.to_string());
        assert_eq!(tags["passed"], (expected == 1.0).to_string());
    }
    // Shadow mirrors are graded like served answers.
    assert!(stored.keys().any(|id| expect_scored[id.as_str()].shadow));
    let rows_after_first = raw_feedback_rows(&store).await;

    // No regrade: the same grader again, and a restarted one.
    let again = online.tick().await.unwrap();
    assert_eq!(
        (again.graded, again.errors, again.skipped),
        (0, 0, 0),
        "{again:?}"
    );
    let mut restarted =
        OnlineGrader::new(store.clone(), capital_grader(), settings(fraction, 1000)).unwrap();
    let after_restart = restarted.tick().await.unwrap();
    assert_eq!(after_restart.graded, 0);
    // A restart tries the failures again: still no score, never a zero.
    assert_eq!(after_restart.errors, expect_errors.len());
    assert_eq!(raw_feedback_rows(&store).await, rows_after_first);

    drop_db(&store).await;
}

#[tokio::test]
async fn batches_leave_the_rest_pending_and_workers_agree() {
    let store = migrated_store("online_batch").await;
    let now = now_ms();
    let ids: Vec<String> = (0..40).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let events = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let s = Spec {
                route: "chat",
                tenant: "acme",
                variant: "base",
                status: 200,
                shadow: false,
                episode: None,
                reference: Some("Paris"),
                answer: "Paris",
                bodies: true,
                prompt: format!("q{i}"),
            };
            event(id, now - 1000 + i as u64, &s)
        })
        .collect();
    insert(&store, events).await;
    // Two workers at fraction 1, batches of 15: together they grade each
    // inference once, and the second pass of either finds nothing new.
    let mut a = OnlineGrader::new(store.clone(), capital_grader(), settings(1.0, 15)).unwrap();
    let mut b = OnlineGrader::new(store.clone(), capital_grader(), settings(1.0, 15)).unwrap();
    let first = a.tick().await.unwrap();
    assert_eq!((first.graded, first.pending), (15, 25));
    let second = b.tick().await.unwrap();
    assert_eq!((second.graded, second.pending), (15, 10));
    let third = a.tick().await.unwrap();
    assert_eq!((third.graded, third.pending), (10, 0));
    assert_eq!(b.tick().await.unwrap().graded, 0);
    let stored = scores(&store, "grader_capital").await;
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(raw_feedback_rows(&store).await, 40);
    drop_db(&store).await;
}

#[tokio::test]
async fn datasets_leave_shadow_mirrors_out_unless_asked() {
    let store = migrated_store("dataset_shadow").await;
    let now = now_ms();
    let served = Spec {
        route: "chat",
        tenant: "acme",
        variant: "base",
        status: 200,
        shadow: false,
        episode: None,
        reference: None,
        answer: "Paris",
        bodies: true,
        prompt: "capital of France?".into(),
    };
    let mirror = Spec {
        variant: "good",
        shadow: true,
        // A mirror repeats its served prompt; a different one here keeps
        // dedupe out of what this test checks.
        prompt: "capital of France? (mirror)".into(),
        ..served
    };
    let served = Spec {
        route: "chat",
        tenant: "acme",
        variant: "base",
        status: 200,
        shadow: false,
        episode: None,
        reference: None,
        answer: "Paris",
        bodies: true,
        prompt: "capital of France?".into(),
    };
    insert(
        &store,
        vec![
            event(&uuid::Uuid::now_v7().to_string(), now - 10, &served),
            event(&uuid::Uuid::now_v7().to_string(), now - 5, &mirror),
        ],
    )
    .await;
    let query = |include_shadow| captured::Query {
        route: "chat".into(),
        variant: None,
        from_ms: 0,
        to_ms: now + 1,
        keep_validation_failures: true,
        include_shadow,
        pii: pii::PiiAction::Drop,
        seed: 1,
        heldout_fraction: 0.0,
        limit: 100,
    };
    let filter = pii::PiiFilter::new(&[]).unwrap();
    let without = captured::build(&store, &query(false), &filter)
        .await
        .unwrap();
    assert_eq!((without.counts.dropped_shadow, without.train.len()), (1, 1));
    assert_eq!(without.train[0].get_str("variant"), Some("base"));
    let with = captured::build(&store, &query(true), &filter)
        .await
        .unwrap();
    assert_eq!((with.counts.dropped_shadow, with.train.len()), (0, 2));
    drop_db(&store).await;
}
