//! Shared helpers of the integration tests. ClickHouse comes from
//! `scripts/services.sh start`; each test gets its own database so tests
//! run in parallel.

#![allow(dead_code)]
// Test setup: a failed step should fail the test loudly, so helpers may
// unwrap (clippy.toml only exempts #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

use flywheel_feedback::{
    feedback_source,
    store::{Store, StoreConfig},
    AttemptEvent, AttemptOutcome, FeedbackEvent, FeedbackTarget, FeedbackValue, InferenceEvent,
    Record, Validation,
};

pub fn clickhouse_url() -> String {
    std::env::var("FLYWHEEL_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A database name nobody else uses.
pub fn fresh_db(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "fbtest_{tag}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        flywheel_feedback::now_ms() % 1_000_000
    )
}

pub fn store_for(db: &str) -> Store {
    Store::try_new(&StoreConfig {
        url: clickhouse_url(),
        database: db.into(),
        user: None,
        password: None,
    })
    .unwrap()
}

/// A store on a fresh, migrated database.
pub async fn migrated_store(tag: &str) -> Store {
    let store = store_for(&fresh_db(tag));
    store.migrate().await.unwrap_or_else(|e| {
        panic!("migrations failed (is ClickHouse up? scripts/services.sh start): {e}")
    });
    store
}

/// Drops the test's database (left in place when the test fails earlier,
/// for inspection).
pub async fn drop_db(store: &Store) {
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

/// A store pointing at a closed port: every call fails fast.
pub fn unreachable_store(db: &str) -> Store {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    Store::try_new(&StoreConfig {
        url: format!("http://127.0.0.1:{port}"),
        database: db.into(),
        user: None,
        password: None,
    })
    .unwrap()
}

pub fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn attempt(
    target_index: u32,
    try_index: u32,
    outcome: AttemptOutcome,
    status: Option<u16>,
) -> AttemptEvent {
    AttemptEvent {
        provider: "mock".into(),
        model: "mock-model".into(),
        target_index,
        try_index,
        outcome,
        status,
        reason: (outcome != AttemptOutcome::Ok).then(|| format!("{outcome:?}")),
        started_ms: 1_700_000_000_000,
        latency_ms: 12.5,
        ttft_ms: None,
        prompt_tokens: 3,
        completion_tokens: 4,
        tokens_estimated: false,
        cost_usd: 0.001,
    }
}

/// An inference of `route`/`variant` at `ts_ms` with one successful attempt.
pub fn inference(id: &str, ts_ms: u64, route: &str, variant: &str) -> InferenceEvent {
    InferenceEvent {
        id: id.into(),
        ts_ms,
        tenant: "tenant-a".into(),
        endpoint: "chat_completions".into(),
        route: route.into(),
        variant: variant.into(),
        provider: "mock".into(),
        model: "mock-model".into(),
        episode_id: None,
        user: None,
        stream: false,
        status: 200,
        prompt_tokens: 10,
        completion_tokens: 5,
        tokens_estimated: false,
        ttft_ms: None,
        latency_ms: 10.0,
        overhead_ms: 0.5,
        retries: 0,
        fallback_depth: 0,
        failovers: 0,
        failover_diverged: false,
        validation: Validation::NotRequested,
        cost_usd: 0.1,
        attempts: vec![attempt(0, 0, AttemptOutcome::Ok, Some(200))],
        request_body: Some(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.into()),
        response_body: Some(
            r#"{"choices":[{"message":{"role":"assistant","content":"hello"}}]}"#.into(),
        ),
        shadow: false,
        pair_id: None,
    }
}

pub fn feedback(
    target: FeedbackTarget,
    ts_ms: u64,
    route: &str,
    variant: &str,
    metric: &str,
    value: FeedbackValue,
) -> FeedbackEvent {
    FeedbackEvent {
        id: FeedbackEvent::new_id(),
        ts_ms,
        tenant: "tenant-a".into(),
        target,
        route: route.into(),
        variant: variant.into(),
        metric: metric.into(),
        value,
        tags: BTreeMap::new(),
        idempotency_key: None,
        source: feedback_source::API.into(),
    }
}

pub fn records(n: usize, ts_ms: u64, route: &str, variant: &str) -> Vec<Record> {
    (0..n)
        .map(|i| Record::Inference(inference(&uuid(), ts_ms + i as u64, route, variant)))
        .collect()
}

/// How long a test waits for the shipper to reach a state: generous, since
/// a loaded 2-core CI box can stall a background task for seconds, and
/// free, since [`eventually`] returns as soon as the state is reached. A
/// state that never comes still fails the test.
pub const PATIENCE: f64 = 30.0;

/// Polls `f` every 20 ms until it returns true or `secs` pass.
pub async fn eventually(secs: f64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub async fn count(store: &Store, sql: &str) -> u64 {
    let sql = sql.replace("{db}", store.database());
    store
        .client()
        .query(&sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
