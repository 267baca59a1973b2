//! Retention keeps inferences with feedback or training usage.

// A test harness: setup failures should fail loudly, so helpers may
// unwrap outside #[test] functions (clippy.toml only exempts those).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use flywheel_feedback::{
    retention::run_retention_at, shipper::ship_batch, BodiesPolicy, FeedbackTarget, FeedbackValue,
    Record,
};

/// 2023-01-15 and 2023-11-14 (UTC); "now" is 2023-11-20.
const OLD: u64 = 1_673_740_800_000;
const RECENT: u64 = 1_699_999_980_000;
const NOW: u64 = 1_700_438_400_000;

#[tokio::test]
async fn retention_keeps_feedback_and_training_rows() {
    let store = migrated_store("retention").await;
    let mk = |ts: u64, ep: Option<&str>| {
        let mut e = inference(&uuid(), ts, "chat", "a");
        e.episode_id = ep.map(str::to_owned);
        e.attempts.push(attempt(
            1,
            0,
            flywheel_feedback::AttemptOutcome::Ok,
            Some(200),
        ));
        e
    };
    // In the episode of `plain`: its feedback (an online grader's score
    // names its inference and the episode) keeps it, not `plain`.
    let with_feedback = mk(OLD, Some("ep-y"));
    let in_training = mk(OLD + 1, None);
    let in_episode = mk(OLD + 2, Some("ep-x"));
    let plain = mk(OLD + 3, Some("ep-y"));
    let recent = mk(RECENT, None);
    let fb_inference = feedback(
        FeedbackTarget {
            inference_id: Some(with_feedback.id.clone()),
            episode_id: Some("ep-y".into()),
        },
        OLD + 10,
        "chat",
        "a",
        "thumbs",
        FeedbackValue::Boolean(true),
    );
    let fb_episode = feedback(
        FeedbackTarget::episode("ep-x"),
        RECENT,
        "chat",
        "a",
        "solved",
        FeedbackValue::Float(1.0),
    );
    let recs: Vec<Record> = [&with_feedback, &in_training, &in_episode, &plain, &recent]
        .into_iter()
        .cloned()
        .map(Record::Inference)
        .chain([
            Record::Feedback(fb_inference.clone()),
            Record::Feedback(fb_episode),
        ])
        .collect();
    ship_batch(&store, &recs, BodiesPolicy::Store)
        .await
        .unwrap();
    store
        .record_training_usage("ds-1", std::slice::from_ref(&in_training.id))
        .await
        .unwrap();

    // Dry run: a plan, no change.
    let plan = run_retention_at(&store, NOW, 30, true).await.unwrap();
    assert_eq!(plan.partitions.len(), 1);
    let p = &plan.partitions[0];
    assert_eq!(
        (p.partition, p.inferences, p.inferences_kept),
        (202301, 4, 3)
    );
    assert_eq!((p.attempts, p.attempts_kept, p.feedback), (8, 6, 1));
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences").await,
        5
    );
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences_retained").await,
        0
    );

    let done = run_retention_at(&store, NOW, 30, false).await.unwrap();
    assert_eq!(done.partitions, plan.partitions);
    let ids = |table: &'static str| {
        let store = store.clone();
        async move {
            let db = store.database().to_owned();
            let mut v: Vec<String> = store
                .client()
                .query(&format!("SELECT id FROM {db}.{table}"))
                .fetch_all()
                .await
                .unwrap();
            v.sort();
            v
        }
    };
    let mut kept = vec![
        with_feedback.id.clone(),
        in_training.id.clone(),
        in_episode.id.clone(),
    ];
    kept.sort();
    assert_eq!(ids("inferences").await, vec![recent.id.clone()]);
    assert_eq!(ids("inferences_retained").await, kept);
    assert_eq!(count(&store, "SELECT count() FROM {db}.attempts").await, 2);
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.attempts_retained").await,
        6
    );
    assert_eq!(
        ids("feedback_retained").await,
        vec![fb_inference.id.clone()]
    );
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.feedback").await,
        1,
        "the recent feedback stays"
    );
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.training_usage").await,
        1
    );
    // Feedback authorization still finds a retained inference.
    assert!(store
        .inference_owner(&with_feedback.id)
        .await
        .unwrap()
        .is_some());
    assert!(store.inference_owner(&plain.id).await.unwrap().is_none());

    // Running again: nothing left to drop, nothing copied twice.
    let again = run_retention_at(&store, NOW, 30, false).await.unwrap();
    assert!(again.partitions.is_empty());
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences_retained").await,
        3
    );

    // The recent month goes only once it is old enough.
    let later = run_retention_at(&store, NOW + 400 * 86_400_000, 30, false)
        .await
        .unwrap();
    assert_eq!(
        later
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        vec![202311]
    );
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences").await,
        0
    );
    // `recent` has no feedback: gone. `in_episode` was already retained.
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences_retained").await,
        3
    );
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.feedback_retained").await,
        2
    );
    drop_db(&store).await;
}

/// Retention is not steered from outside a tenant's own explicit feedback:
/// another tenant's feedback on the same (client-chosen) episode id keeps
/// nothing, and neither does an implicit signal (the gateway's "valid on
/// the first try" on every structured answer kept nearly all structured
/// traffic before). The tenant's own explicit feedback still keeps its
/// inference.
#[tokio::test]
async fn retention_is_not_steered_by_another_tenant_or_by_implicit_signals() {
    let store = migrated_store("retention_steer").await;
    let mk = |ts: u64, ep: Option<&str>| {
        let mut e = inference(&uuid(), ts, "chat", "a");
        e.episode_id = ep.map(str::to_owned);
        e
    };
    let episode_of_a = mk(OLD, Some("shared-ep"));
    let validated = mk(OLD + 1, None);
    let thumbed = mk(OLD + 2, None);
    let mut other_tenant = feedback(
        FeedbackTarget::episode("shared-ep"),
        OLD + 10,
        "chat",
        "a",
        "solved",
        FeedbackValue::Float(1.0),
    );
    other_tenant.tenant = "tenant-b".into();
    let mut implicit = feedback(
        FeedbackTarget::inference(validated.id.clone()),
        OLD + 11,
        "chat",
        "a",
        "valid",
        FeedbackValue::Boolean(true),
    );
    implicit.source = flywheel_feedback::event::feedback_source::IMPLICIT_VALIDATION.into();
    let explicit = feedback(
        FeedbackTarget::inference(thumbed.id.clone()),
        OLD + 12,
        "chat",
        "a",
        "thumbs",
        FeedbackValue::Boolean(true),
    );
    let recs: Vec<Record> = [&episode_of_a, &validated, &thumbed]
        .into_iter()
        .cloned()
        .map(Record::Inference)
        .chain([other_tenant, implicit, explicit].map(Record::Feedback))
        .collect();
    ship_batch(&store, &recs, BodiesPolicy::Store)
        .await
        .unwrap();

    let done = run_retention_at(&store, NOW, 30, false).await.unwrap();
    assert_eq!(
        (
            done.partitions[0].inferences,
            done.partitions[0].inferences_kept
        ),
        (3, 1)
    );
    let db = store.database().to_owned();
    let kept: Vec<String> = store
        .client()
        .query(&format!("SELECT id FROM {db}.inferences_retained"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(kept, vec![thumbed.id.clone()]);
    drop_db(&store).await;
}
