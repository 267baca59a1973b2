//! The controller against the real ClickHouse and Redis of
//! `scripts/services.sh` (each test: its own database and Redis key
//! prefix): the arms' SQL against sums computed by hand, a look that
//! promotes and writes weights, a transition a crash cut short, and both
//! outages.

// A test harness: setup failures should fail loudly, so helpers may
// unwrap outside #[test] functions (clippy.toml only exempts those).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use flywheel_canary::{ArmSummary, Request};
use flywheel_canary_controller::{
    experiment::{evaluation_row, Record},
    ops, Action, CanaryStore, Controller, ControllerConfig, Experiment, QualityMetric, Spec,
    Status, Weights,
};
use flywheel_feedback::{
    now_ms,
    store::rows::{date_of, FeedbackRow, InferenceRow, VALUE_BOOLEAN, VALUE_FLOAT},
    Store, StoreConfig,
};
use serde::Serialize;

fn clickhouse_url() -> String {
    std::env::var("FLYWHEEL_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn redis_url() -> String {
    std::env::var("FLYWHEEL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        now_ms() % 1_000_000
    )
}

async fn fresh_store(tag: &str) -> Store {
    let store = Store::try_new(&StoreConfig {
        url: clickhouse_url(),
        database: unique(&format!("canarytest_{tag}")),
        user: None,
        password: None,
    })
    .unwrap();
    store.migrate().await.unwrap_or_else(|e| {
        panic!("migrations (is ClickHouse up? scripts/services.sh start): {e}")
    });
    store
}

async fn drop_db(store: &Store) {
    store
        .client()
        .clone()
        .with_database("system")
        .query(&format!("DROP DATABASE IF EXISTS {}", store.database()))
        .execute()
        .await
        .unwrap();
}

fn weights(prefix: &str) -> Weights {
    Weights::connect(&redis_url(), prefix).unwrap()
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn inference(id: &str, ts_ms: u64, variant: &str, cost: f64) -> InferenceRow {
    InferenceRow {
        id: id.into(),
        ts_ms,
        date: date_of(ts_ms),
        tenant: "acme".into(),
        endpoint: "chat_completions".into(),
        route: "chat".into(),
        variant: variant.into(),
        provider: "mock".into(),
        model: "m".into(),
        episode_id: None,
        user: None,
        stream: false,
        status: 200,
        prompt_tokens: 10,
        completion_tokens: 10,
        tokens_estimated: false,
        ttft_ms: None,
        latency_ms: 100.0,
        overhead_ms: 1.0,
        retries: 0,
        fallback_depth: 0,
        failovers: 0,
        failover_diverged: false,
        validation: 1,
        cost_usd: cost,
        attempt_count: 1,
        request_body: String::new(),
        response_body: String::new(),
        shadow: false,
        pair_id: String::new(),
    }
}

fn feedback(
    id: &str,
    ts_ms: u64,
    inference_id: Option<&str>,
    episode_id: Option<&str>,
    metric: &str,
    value: f64,
) -> FeedbackRow {
    FeedbackRow {
        id: id.into(),
        ts_ms,
        date: date_of(ts_ms),
        tenant: "acme".into(),
        inference_id: inference_id.map(Into::into),
        episode_id: episode_id.map(Into::into),
        route: "chat".into(),
        variant: String::new(),
        metric: metric.into(),
        value_kind: if value == 0.0 || value == 1.0 {
            VALUE_BOOLEAN
        } else {
            VALUE_FLOAT
        },
        value_float: value,
        value_text: String::new(),
        tag_keys: vec![],
        tag_values: vec![],
        idempotency_key: None,
        source: "api".into(),
    }
}

/// The shadow columns of migration 0006, inserted by name.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
struct ShadowInference {
    id: String,
    ts_ms: u64,
    date: u16,
    route: String,
    variant: String,
    status: u16,
    latency_ms: f64,
    cost_usd: f64,
    shadow: u8,
    pair_id: String,
}

fn test_spec(steps: &str) -> Spec {
    let mut spec = Spec {
        quality: vec![
            QualityMetric::parse("thumbs_up").unwrap(),
            QualityMetric::parse("task").unwrap(),
            QualityMetric::parse("reask:0.5:invert").unwrap(),
        ],
        steps: Spec::parse_steps(steps).unwrap(),
        ..Spec::default()
    };
    spec.settings.min_samples_per_arm = 5;
    spec.settings.min_step_secs = 0;
    spec
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn assert_summary(got: &ArmSummary, want: &ArmSummary) {
    assert_eq!(
        (
            got.requests,
            got.errors,
            got.fallbacks,
            got.cost.n,
            got.graded.n
        ),
        (
            want.requests,
            want.errors,
            want.fallbacks,
            want.cost.n,
            want.graded.n
        ),
        "{got:?} vs {want:?}"
    );
    for (g, w) in [
        (got.cost.sum, want.cost.sum),
        (got.cost.sum_sq, want.cost.sum_sq),
        (got.graded.sum_quality, want.graded.sum_quality),
        (got.graded.sum_quality_sq, want.graded.sum_quality_sq),
        (got.graded.sum_cost, want.graded.sum_cost),
        (got.graded.sum_cost_sq, want.graded.sum_cost_sq),
        (got.graded.sum_quality_cost, want.graded.sum_quality_cost),
    ] {
        assert!(close(g, w), "{g} vs {w}: {got:?} vs {want:?}");
    }
}

/// Inference-level feedback (latest value wins), episode-level feedback on
/// every inference of the episode, an inverted metric with a weight, errors,
/// fallbacks, requests without feedback (no data, not zeros), and rows
/// outside the arms (another variant, before the window, shadow) left out.
#[tokio::test]
async fn arms_are_summed_as_the_statistics_expect() {
    let store = fresh_store("arms").await;
    let cs = CanaryStore::new(store.clone());
    let t0 = now_ms() - 60_000;
    let mut rows = vec![];
    let mut want_inc = ArmSummary::default();
    let mut want_cand = ArmSummary::default();
    let mut fb = vec![];
    // Incumbent: 10 requests at $0.002, thumbs on 6 of them.
    let thumbs = [
        Some(1.0),
        Some(1.0),
        Some(0.0),
        Some(1.0),
        None,
        Some(0.0),
        None,
        Some(1.0),
        None,
        None,
    ];
    for (i, q) in thumbs.iter().enumerate() {
        let id = format!("inc-{i}");
        rows.push(inference(&id, t0 + i as u64, "base", 0.002));
        if let Some(v) = q {
            fb.push(feedback(
                &format!("fb-inc-{i}"),
                t0 + 1000,
                Some(&id),
                None,
                "thumbs_up",
                *v,
            ));
        }
        want_inc.record(&Request {
            cost_usd: 0.002,
            quality: *q,
            error: false,
            fallback: false,
        });
    }
    // An older opposite value on inc-0: the latest (1.0) counts.
    fb.push(feedback(
        "fb-inc-0-old",
        t0 + 500,
        Some("inc-0"),
        None,
        "thumbs_up",
        0.0,
    ));
    // A metric the experiment does not name: ignored.
    fb.push(feedback(
        "fb-other",
        t0 + 1000,
        Some("inc-4"),
        None,
        "other",
        1.0,
    ));

    // Candidate: 8 requests at $0.001..; cand-0..2 in episode ep-1 with
    // episode-level task = 0.8; cand-3 has thumbs 1 and reask 1 (inverted,
    // weight 0.5): (1·1 + 0.5·0) / 1.5; cand-4 errored, cand-5 fell back.
    let mut cand_q: Vec<Option<f64>> = vec![None; 8];
    #[allow(clippy::needless_range_loop)]
    for i in 0..8 {
        let id = format!("cand-{i}");
        let cost = 0.001 + 0.0001 * i as f64;
        let mut row = inference(&id, t0 + 10 + i as u64, "tuned", cost);
        if i < 3 {
            row.episode_id = Some("ep-1".into());
            cand_q[i] = Some(0.8);
        }
        if i == 4 {
            row.status = 500;
        }
        if i == 5 {
            row.fallback_depth = 1;
        }
        rows.push(row);
    }
    fb.push(feedback(
        "fb-ep",
        t0 + 2000,
        None,
        Some("ep-1"),
        "task",
        0.8,
    ));
    fb.push(feedback(
        "fb-c3a",
        t0 + 2000,
        Some("cand-3"),
        None,
        "thumbs_up",
        1.0,
    ));
    fb.push(feedback(
        "fb-c3b",
        t0 + 2000,
        Some("cand-3"),
        None,
        "reask",
        1.0,
    ));
    cand_q[3] = Some(1.0 / 1.5);
    // cand-6: thumbs 0 and task 1 (inference-level): (0 + 1) / 2.
    fb.push(feedback(
        "fb-c6a",
        t0 + 2000,
        Some("cand-6"),
        None,
        "thumbs_up",
        0.0,
    ));
    fb.push(feedback(
        "fb-c6b",
        t0 + 2000,
        Some("cand-6"),
        None,
        "task",
        1.0,
    ));
    cand_q[6] = Some(0.5);
    for (i, q) in cand_q.iter().enumerate() {
        want_cand.record(&Request {
            cost_usd: 0.001 + 0.0001 * i as f64,
            quality: *q,
            error: i == 4,
            fallback: i == 5,
        });
    }
    // Outside the arms: another variant, before the window.
    rows.push(inference("other-variant", t0 + 5, "legacy", 0.5));
    rows.push(inference("too-early", t0 - 10_000, "base", 0.5));
    fb.push(feedback(
        "fb-early",
        t0 + 100,
        Some("too-early"),
        None,
        "thumbs_up",
        1.0,
    ));
    store.insert_rows("inferences", &rows).await.unwrap();
    store.insert_rows("feedback", &fb).await.unwrap();
    // A mirrored pair: shadow rows stay out of live steps.
    let shadow_rows = vec![
        ShadowInference {
            id: "mirror-1".into(),
            ts_ms: t0 + 30,
            date: date_of(t0),
            route: "chat".into(),
            variant: "tuned".into(),
            status: 200,
            latency_ms: 50.0,
            cost_usd: 0.001,
            shadow: 1,
            pair_id: "pair-1".into(),
        },
        ShadowInference {
            id: "served-1".into(),
            ts_ms: t0 + 30,
            date: date_of(t0),
            route: "chat".into(),
            variant: "base".into(),
            status: 200,
            latency_ms: 80.0,
            cost_usd: 0.002,
            shadow: 0,
            pair_id: "pair-1".into(),
        },
    ];
    store.insert_rows("inferences", &shadow_rows).await.unwrap();

    let spec = test_spec("10,100");
    let query = |shadow| flywheel_canary_controller::store::ArmQuery {
        route: "chat",
        incumbent: "base",
        candidate: "tuned",
        from_ms: t0,
        to_ms: now_ms() + 1,
        shadow,
        quality: &spec.quality,
        latency_samples: 100,
    };
    let (inc, cand) = cs.arms(&query(false)).await.unwrap();
    // The served half of the pair is a plain incumbent request in a live step.
    want_inc.record(&Request {
        cost_usd: 0.002,
        quality: None,
        error: false,
        fallback: false,
    });
    assert_summary(&inc.summary, &want_inc);
    assert_summary(&cand.summary, &want_cand);
    assert_eq!(inc.latency_ms.len(), 11);
    assert_eq!(cand.latency_ms.len(), 7, "successful requests only");
    assert!(cand.ttft_ms.is_empty());

    // Shadow step: the mirror against the request it mirrored.
    let (inc, cand) = cs.arms(&query(true)).await.unwrap();
    assert_eq!((inc.summary.requests, cand.summary.requests), (1, 1));
    assert_eq!(
        (inc.latency_ms.clone(), cand.latency_ms.clone()),
        (vec![80.0], vec![50.0])
    );
    drop_db(&store).await;
}

/// Writes `n` graded requests per arm with fixed quality and cost.
async fn traffic(store: &Store, t0: u64, tag: &str, n: usize, inc: (f64, f64), cand: (f64, f64)) {
    let mut rows = vec![];
    let mut fb = vec![];
    for i in 0..n {
        for (variant, (pass, cost)) in [("base", inc), ("tuned", cand)] {
            let id = format!("{tag}-{variant}-{i}");
            rows.push(inference(&id, t0 + i as u64, variant, cost));
            let v = if (i as f64 + 0.5) / n as f64 <= pass {
                1.0
            } else {
                0.0
            };
            fb.push(feedback(
                &format!("fb-{id}"),
                t0 + i as u64,
                Some(&id),
                None,
                "thumbs_up",
                v,
            ));
        }
    }
    store.insert_rows("inferences", &rows).await.unwrap();
    store.insert_rows("feedback", &fb).await.unwrap();
    // The look reads up to its own now: let the last row be in the past.
    while now_ms() <= t0 + n as u64 + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn controller(store: &Store, w: Weights) -> Controller {
    Controller::new(
        CanaryStore::new(store.clone()),
        w,
        ControllerConfig {
            interval: Duration::from_millis(100),
            settle: Duration::ZERO,
            latency_samples: 100,
            actor: "controller".into(),
        },
    )
}

/// A clearly better and cheaper candidate at a 50/50 step is promoted to
/// completion: the experiment row, the evaluation row and Redis agree.
/// Then the same on a fresh experiment whose transition a crash cut off
/// after the evaluation row: the next look finishes it.
#[tokio::test]
async fn a_look_promotes_records_and_moves_the_weights() {
    let store = fresh_store("promote").await;
    let prefix = format!("{}:", unique("fwtest"));
    let w = weights(&prefix);
    let cs = CanaryStore::new(store.clone());
    let mut spec = test_spec("50,100");
    spec.quality.truncate(1);
    let (exp, _) = ops::create(
        &cs,
        &w,
        ops::NewExperiment {
            route: "chat",
            incumbent: "base",
            candidate: "tuned",
            spec: spec.clone(),
            origin: "test",
            actor: "test",
        },
    )
    .await
    .unwrap();
    let hash = w.get("chat").await.unwrap();
    assert_eq!((hash["base"], hash["tuned"]), (5_000, 5_000));
    // A second active experiment on the route is refused.
    assert!(ops::create(
        &cs,
        &w,
        ops::NewExperiment {
            route: "chat",
            incumbent: "base",
            candidate: "other",
            spec: spec.clone(),
            origin: "test",
            actor: "test",
        },
    )
    .await
    .is_err());

    traffic(
        &store,
        exp.step_started_ms + 1,
        "a",
        300,
        (0.6, 0.002),
        (0.9, 0.001),
    )
    .await;
    let c = controller(&store, w.clone());
    let report = c.tick().await;
    assert_eq!(
        report.looks,
        vec![(exp.id.clone(), Action::Promote, "promote".to_owned())],
        "{report:?}"
    );
    let done = cs.experiment(&exp.id).await.unwrap();
    assert_eq!((done.status, done.step), (Status::Completed, 1));
    let hash = w.get("chat").await.unwrap();
    assert_eq!((hash["base"], hash["tuned"]), (0, 10_000));
    assert_eq!(w.incumbent("chat").await.unwrap().as_deref(), Some("tuned"));
    let evals = cs.evaluations(&exp.id, 10).await.unwrap();
    assert_eq!(evals.len(), 2, "create + promote");
    let promote = &evals[0];
    assert_eq!(
        (
            promote.action,
            promote.manual,
            promote.step_after,
            promote.candidate_weight
        ),
        (Action::Promote.code(), false, 1, 10_000)
    );
    assert_eq!(promote.incumbent_requests, 300);
    assert!(promote.qpd_lower.unwrap() > 0.0 && promote.quality_lower.unwrap() > 0.0);
    // Nothing more happens to an ended experiment.
    assert!(c.tick().await.looks.is_empty());

    // Later manual weight changes are not undone by the ended experiment.
    w.set("chat", &[("base", 1), ("tuned", 1)]).await.unwrap();
    c.tick().await;
    assert_eq!(w.get("chat").await.unwrap()["base"], 1);

    // A transition recorded (evaluation row) whose experiment row never
    // made it: the next look finishes it and writes its weights.
    let (exp2, _) = ops::create(
        &cs,
        &w,
        ops::NewExperiment {
            route: "chat",
            incumbent: "tuned",
            candidate: "base",
            spec: test_spec("10,50,100"),
            origin: "test",
            actor: "test",
        },
    )
    .await
    .unwrap();
    let after = exp2.after(Action::Promote, "promote", now_ms()).unwrap();
    let row = evaluation_row(
        &exp2,
        &after,
        &Record {
            action: Action::Promote,
            manual: false,
            actor: "controller",
            reason_kind: "promote",
            reason_json: String::new(),
            decision: None,
        },
        now_ms(),
    );
    cs.record(&row, None).await.unwrap();
    assert_eq!(cs.experiment(&exp2.id).await.unwrap().step, 0);
    c.tick().await;
    let resumed = cs.experiment(&exp2.id).await.unwrap();
    assert_eq!((resumed.step, resumed.status), (1, Status::Running));
    assert_eq!(resumed.revision, after.revision);
    let hash = w.get("chat").await.unwrap();
    assert_eq!((hash["tuned"], hash["base"]), (5_000, 5_000));
    drop_db(&store).await;
}

/// Redis down: the look is recorded as a hold (redis_unavailable) even when
/// the data would promote. ClickHouse down: nothing is decided or recorded,
/// and the controller keeps going.
#[tokio::test]
async fn outages_hold() {
    let store = fresh_store("outage").await;
    let prefix = format!("{}:", unique("fwtest"));
    let w = weights(&prefix);
    let cs = CanaryStore::new(store.clone());
    let mut spec = test_spec("50,100");
    spec.quality.truncate(1);
    let (exp, _) = ops::create(
        &cs,
        &w,
        ops::NewExperiment {
            route: "chat",
            incumbent: "base",
            candidate: "tuned",
            spec,
            origin: "test",
            actor: "test",
        },
    )
    .await
    .unwrap();
    traffic(
        &store,
        exp.step_started_ms + 1,
        "o",
        300,
        (0.6, 0.002),
        (0.9, 0.001),
    )
    .await;

    let dead_redis =
        Weights::connect(&format!("redis://127.0.0.1:{}/0", closed_port()), &prefix).unwrap();
    let report = controller(&store, dead_redis).tick().await;
    assert!(report.redis_down);
    assert_eq!(
        report.looks,
        vec![(exp.id.clone(), Action::Hold, "redis_unavailable".to_owned())]
    );
    let now = cs.experiment(&exp.id).await.unwrap();
    assert_eq!((now.step, now.status), (0, Status::Running));
    let row = &cs.evaluations(&exp.id, 1).await.unwrap()[0];
    assert!(
        row.reason_json.contains("\"decision\":\"promote\""),
        "{}",
        row.reason_json
    );

    let dead_ch = Store::try_new(&StoreConfig {
        url: format!("http://127.0.0.1:{}", closed_port()),
        database: store.database().into(),
        user: None,
        password: None,
    })
    .unwrap();
    let report = controller(&dead_ch, w.clone()).tick().await;
    assert!(report.clickhouse_down && report.looks.is_empty());
    assert_eq!(cs.evaluations(&exp.id, 10).await.unwrap().len(), 2);

    // Both back: it promotes.
    let report = controller(&store, w.clone()).tick().await;
    assert_eq!(report.looks[0].1, Action::Promote);
    drop_db(&store).await;
}

/// Manual actions are recorded as manual with the operator, and move the
/// weights; an ended experiment refuses them.
#[tokio::test]
async fn manual_actions_are_recorded_as_manual() {
    let store = fresh_store("manual").await;
    let prefix = format!("{}:", unique("fwtest"));
    let w = weights(&prefix);
    let cs = CanaryStore::new(store.clone());
    let (exp, _) = ops::create(
        &cs,
        &w,
        ops::NewExperiment {
            route: "chat",
            incumbent: "base",
            candidate: "tuned",
            spec: test_spec("shadow,5,100"),
            origin: "tuner:run-1",
            actor: "cli:ops",
        },
    )
    .await
    .unwrap();
    assert_eq!(
        w.shadow("chat").await.unwrap(),
        Some(("tuned".to_owned(), 1.0))
    );
    let short = &exp.id[..exp.id.len() - 4];
    let (e, _) = ops::manual(&cs, &w, short, Action::Promote, "cli:ops", "looks fine")
        .await
        .unwrap();
    assert_eq!((e.step, e.weights()), (1, (9_500, 500)));
    assert_eq!(w.shadow("chat").await.unwrap(), None);
    let (e, _) = ops::manual(&cs, &w, &exp.id, Action::Pause, "cli:ops", "")
        .await
        .unwrap();
    assert_eq!(e.status, Status::Paused);
    // A paused experiment is not looked at.
    let c = controller(&store, w.clone());
    assert!(c.tick().await.looks.is_empty());
    ops::manual(&cs, &w, &exp.id, Action::Resume, "cli:ops", "")
        .await
        .unwrap();
    let (e, _) = ops::manual(&cs, &w, &exp.id, Action::Rollback, "cli:ops", "bad answers")
        .await
        .unwrap();
    assert_eq!((e.status, e.weights()), (Status::RolledBack, (10_000, 0)));
    let hash = w.get("chat").await.unwrap();
    assert_eq!((hash["base"], hash["tuned"]), (10_000, 0));
    assert!(ops::manual(&cs, &w, &exp.id, Action::Resume, "cli:ops", "")
        .await
        .is_err());
    let evals = cs.evaluations(&exp.id, 10).await.unwrap();
    let actions: Vec<(i8, bool, &str)> = evals
        .iter()
        .rev()
        .map(|r| (r.action, r.manual, r.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (Action::Create.code(), true, "cli:ops"),
            (Action::Promote.code(), true, "cli:ops"),
            (Action::Pause.code(), true, "cli:ops"),
            (Action::Resume.code(), true, "cli:ops"),
            (Action::Rollback.code(), true, "cli:ops"),
        ]
    );
    assert!(evals[0].reason_json.contains("bad answers"));
    let back = Experiment::from_row(cs.experiment(&exp.id).await.unwrap().to_row()).unwrap();
    assert_eq!(back.origin, "tuner:run-1");
    drop_db(&store).await;
}
