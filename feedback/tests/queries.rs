//! Analytics queries against known events; expected numbers by hand.

// A test harness: setup failures should fail loudly, so helpers may
// unwrap outside #[test] functions (clippy.toml only exempts those).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use flywheel_feedback::{
    shipper::ship_batch, AttemptOutcome, BodiesPolicy, FeedbackTarget, FeedbackValue,
    InferenceEvent, Record, TimeWindow, Validation,
};

/// 2023-11-14 22:13:00 UTC, a minute boundary.
const T0: u64 = 1_699_999_980_000;

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

struct Fixture {
    a: Vec<InferenceEvent>,
    b: Vec<InferenceEvent>,
    records: Vec<Record>,
}

/// Variant a: 4 requests, latencies 10/20/30/40 ms, statuses 200/200/502/200,
/// retries 0/1/0/2, fallback depth 0/0/1/0, TTFT 5/-/15/-, one validation
/// failure, 10+5 tokens and $0.1 each; two in minute T0, two in T0+1min.
/// Variant b: 2 requests (100 ms 200, 200 ms 404) in minute T0.
/// Feedback thumbs: a true/false/true, b true; score on a 0.5 and 1.0;
/// a comment on a.
fn fixture() -> Fixture {
    let mk = |i: usize, ts: u64, variant: &str| {
        let mut e = inference(&uuid(), ts, "chat", variant);
        e.attempts = vec![attempt(0, 0, AttemptOutcome::Ok, Some(200))];
        e.episode_id = Some(format!("ep-{i}"));
        e
    };
    let mut a: Vec<InferenceEvent> = (0..4)
        .map(|i| mk(i, T0 + 1000 + (i as u64 / 2) * 60_000 + i as u64, "a"))
        .collect();
    for (i, e) in a.iter_mut().enumerate() {
        e.latency_ms = [10.0, 20.0, 30.0, 40.0][i];
        e.status = [200, 200, 502, 200][i];
        e.retries = [0, 1, 0, 2][i];
        e.fallback_depth = [0, 0, 1, 0][i];
        e.ttft_ms = [Some(5.0), None, Some(15.0), None][i];
        e.validation = if i == 3 {
            Validation::Failed
        } else {
            Validation::Passed
        };
    }
    let mut b: Vec<InferenceEvent> = (0..2)
        .map(|i| mk(10 + i, T0 + 2000 + i as u64, "b"))
        .collect();
    b[0].latency_ms = 100.0;
    b[1].latency_ms = 200.0;
    b[1].status = 404;

    let fb = |target: &InferenceEvent, variant: &str, metric: &str, value: FeedbackValue| {
        Record::Feedback(feedback(
            FeedbackTarget::inference(&target.id),
            T0 + 3000,
            "chat",
            variant,
            metric,
            value,
        ))
    };
    let mut records: Vec<Record> = a.iter().chain(&b).cloned().map(Record::Inference).collect();
    records.extend([
        fb(&a[0], "a", "thumbs", FeedbackValue::Boolean(true)),
        fb(&a[1], "a", "thumbs", FeedbackValue::Boolean(false)),
        fb(&a[2], "a", "thumbs", FeedbackValue::Boolean(true)),
        fb(&b[0], "b", "thumbs", FeedbackValue::Boolean(true)),
        fb(&a[0], "a", "score", FeedbackValue::Float(0.5)),
        fb(&a[1], "a", "score", FeedbackValue::Float(1.0)),
        fb(
            &a[3],
            "a",
            "thumbs_comment",
            FeedbackValue::Comment("meh".into()),
        ),
    ]);
    Fixture { a, b, records }
}

#[tokio::test]
async fn queries_on_known_data() {
    let store = migrated_store("queries").await;
    let f = fixture();
    ship_batch(&store, &f.records, BodiesPolicy::Skip)
        .await
        .unwrap();
    // A replay of everything: must change nothing below.
    let again = ship_batch(&store, &f.records, BodiesPolicy::Skip)
        .await
        .unwrap();
    assert_eq!(again.duplicates, f.records.len() as u64);

    let window = TimeWindow::new(T0, T0 + 10 * 60_000);
    let summary = store.variant_summary("chat", window).await.unwrap();
    assert_eq!(summary.len(), 2);
    let (sa, sb) = (&summary[0], &summary[1]);
    assert_eq!((sa.variant.as_str(), sa.requests), ("a", 4));
    assert_eq!(sa.error_rate, 0.25);
    assert_eq!(sa.client_error_rate, 0.0);
    assert_eq!(sa.validation_failure_rate, 0.25);
    assert_eq!(sa.retry_rate, 0.5);
    assert_eq!(sa.retries, 3);
    assert_eq!(sa.fallback_rate, 0.25);
    // Interpolated: p50 at position 1.5 of [10,20,30,40] = 25; p95 at 2.85
    // = 30 + 0.85*10 = 38.5.
    assert!(close(sa.p50_latency_ms, 25.0), "{:?}", sa.p50_latency_ms);
    assert!(close(sa.p95_latency_ms, 38.5), "{:?}", sa.p95_latency_ms);
    assert!(close(sa.mean_ttft_ms, 10.0));
    assert_eq!((sa.prompt_tokens, sa.completion_tokens), (40, 20));
    assert!((sa.cost_usd - 0.4).abs() < 1e-9);
    let fa: Vec<(&str, u64, u64, Option<f64>)> = sa
        .feedback
        .iter()
        .map(|m| (m.metric.as_str(), m.count, m.numeric_count, m.mean()))
        .collect();
    assert_eq!(fa.len(), 3);
    assert_eq!((fa[0].0, fa[0].1, fa[0].2), ("score", 2, 2));
    assert!(close(fa[0].3, 0.75));
    assert_eq!((fa[1].0, fa[1].1, fa[1].2), ("thumbs", 3, 3));
    assert!(close(fa[1].3, 2.0 / 3.0));
    assert_eq!(fa[2], ("thumbs_comment", 1, 0, None));

    assert_eq!((sb.variant.as_str(), sb.requests), ("b", 2));
    assert_eq!((sb.error_rate, sb.client_error_rate), (0.0, 0.5));
    assert!(close(sb.p50_latency_ms, 150.0));
    assert_eq!(sb.mean_ttft_ms, None);

    // Outside the window: nothing.
    assert!(store
        .variant_summary("chat", TimeWindow::new(T0 + 3_600_000, T0 + 7_200_000))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .variant_summary("other", window)
        .await
        .unwrap()
        .is_empty());

    // (b) rollup series: minute T0 has a0, a1, b0, b1; T0+1min has a2, a3.
    let series = store.minute_series("chat", window).await.unwrap();
    let rows: Vec<(u64, &str, u64, u64, u64, u64)> = series
        .iter()
        .map(|p| {
            (
                p.minute_ms,
                p.variant.as_str(),
                p.requests,
                p.errors,
                p.client_errors,
                p.retries,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (T0, "a", 2, 0, 0, 1),
            (T0, "b", 2, 0, 1, 0),
            (T0 + 60_000, "a", 2, 1, 0, 2)
        ]
    );
    let p = &series[0];
    assert!(close(p.latency_ms[0], 15.0));
    assert!(close(p.mean_ttft_ms, 5.0));
    assert_eq!(
        (p.prompt_tokens, p.completion_tokens, p.retried, p.fallbacks),
        (20, 10, 1, 0)
    );
    assert_eq!((series[2].fallbacks, series[2].validation_failures), (1, 1));
    assert_eq!(series[1].ttft_ms, [None, None, None]);
    let fseries = store
        .feedback_minute_series("chat", "thumbs", window)
        .await
        .unwrap();
    assert_eq!(fseries.len(), 2);
    assert_eq!(
        (
            fseries[0].variant.as_str(),
            fseries[0].count,
            fseries[0].numeric_count
        ),
        ("a", 3, 3)
    );
    assert!(close(fseries[0].mean, 2.0 / 3.0));
    assert!(close(fseries[1].mean, 1.0));

    // (c) owners.
    let owner = store.inference_owner(&f.b[1].id).await.unwrap().unwrap();
    assert_eq!(
        (
            owner.tenant.as_str(),
            owner.episode_id.as_deref(),
            owner.route.as_str(),
            owner.variant.as_str()
        ),
        ("tenant-a", Some("ep-11"), "chat", "b")
    );
    assert_eq!(
        store
            .inference_owner(&f.a[3].id)
            .await
            .unwrap()
            .unwrap()
            .variant,
        "a"
    );
    assert_eq!(store.inference_owner("no-such-id").await.unwrap(), None);
    assert_eq!(
        store
            .tenant_episode_owner("tenant-a", "ep-2")
            .await
            .unwrap()
            .unwrap()
            .variant,
        "a"
    );

    // (d) canary comparison.
    let cmp = store
        .compare_variants("chat", "thumbs", "b", "a", window)
        .await
        .unwrap();
    assert_eq!((cmp.baseline.count, cmp.candidate.count), (1, 3));
    assert!(close(cmp.baseline.mean(), 1.0));
    assert!(close(cmp.mean_delta(), 2.0 / 3.0 - 1.0));
    // Sample variance of [1, 0, 1]: mean 2/3, squares 1/9+4/9+1/9 over 2 = 1/3.
    assert!(close(cmp.candidate.variance(), 1.0 / 3.0));
    assert_eq!(cmp.baseline.variance(), None);
    assert_eq!(cmp.candidate_requests.as_ref().unwrap().requests, 4);
    let none = store
        .compare_variants("chat", "thumbs", "b", "zzz", window)
        .await
        .unwrap();
    assert_eq!((none.candidate.count, none.candidate.mean()), (0, None));
    assert!(none.candidate_requests.is_none());

    assert_eq!(store.event_counts().await.unwrap(), (6, 7));
    drop_db(&store).await;
}
