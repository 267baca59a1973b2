//! Shipper tests against a real ClickHouse: outage, recovery, replays.

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, sync::Arc, time::Duration};

use common::*;
use flywheel_feedback::{
    shipper::{ship_batch, Shipper, ShipperConfig},
    wal::{self, Wal, WalConfig},
    BodiesPolicy, FeedbackTarget, FeedbackValue, FsyncPolicy, Record, Store, TimeWindow,
};

const TS: u64 = 1_700_000_000_000;

fn fast() -> ShipperConfig {
    ShipperConfig {
        batch_rows: 7,
        max_segment_age: Duration::from_millis(50),
        poll_interval: Duration::from_millis(20),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..ShipperConfig::default()
    }
}

fn wal_cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        fsync: FsyncPolicy::IntervalMs(10),
        max_bytes: 1 << 30,
        keyring: None,
    }
}

/// Inferences of variant a, one with two attempts, plus feedback on one.
fn events(n: usize) -> Vec<Record> {
    let mut v = records(n, TS, "chat", "a");
    if let Record::Inference(e) = &mut v[0] {
        e.attempts.insert(
            0,
            attempt(0, 0, flywheel_feedback::AttemptOutcome::Timeout, None),
        );
        e.retries = 1;
    }
    let target = FeedbackTarget::inference(v[1].id());
    v.push(Record::Feedback(feedback(
        target,
        TS + 5,
        "chat",
        "a",
        "thumbs",
        FeedbackValue::Boolean(true),
    )));
    v
}

/// Raw row counts (no dedup) and rollup totals: what double counting would
/// inflate.
async fn totals(store: &Store) -> [u64; 6] {
    [
        count(store, "SELECT count() FROM {db}.inferences").await,
        count(store, "SELECT count() FROM {db}.attempts").await,
        count(store, "SELECT count() FROM {db}.feedback").await,
        count(
            store,
            "SELECT countMerge(requests) FROM {db}.inference_rollup_1m",
        )
        .await,
        count(store, "SELECT countMerge(n) FROM {db}.feedback_rollup_1m").await,
        store
            .variant_summary("chat", TimeWindow::new(TS - 60_000, TS + 60_000))
            .await
            .unwrap()[0]
            .requests,
    ]
}

#[tokio::test]
async fn outage_accumulates_then_ships_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), wal_cfg()).unwrap());
    let db = fresh_db("outage");

    // ClickHouse unreachable: serving goes on, the log grows.
    let down = Shipper::spawn(Arc::clone(&wal), unreachable_store(&db), fast());
    let recs = events(30);
    for chunk in recs.chunks(4) {
        wal.append(chunk).unwrap();
    }
    assert!(
        eventually(PATIENCE, async || down.stats().ship_failures >= 2
            && wal.stats().sealed_segments >= 1)
        .await
    );
    let st = down.stats();
    assert!(st.last_error.is_some(), "{st:?}");
    assert_eq!(st.inferences_shipped, 0);
    let t = std::time::Instant::now();
    let report = down.shutdown(Duration::from_millis(300)).await;
    // ClickHouse never answers, so only the 300 ms deadline can end the
    // shutdown; the bound leaves room for a loaded machine.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown honours its deadline: {:?}",
        t.elapsed()
    );
    assert!(!report.drained);
    assert_eq!(report.wal.records_pending, 31, "nothing lost");
    assert!(report.wal.oldest_unshipped_ts_ms == Some(TS));

    // Back up: everything ships, exactly once, and the segments go.
    let store = store_for(&db);
    let up = Shipper::spawn(Arc::clone(&wal), store.clone(), fast());
    assert!(
        eventually(PATIENCE, async || wal.stats().records_pending == 0).await,
        "{:?}",
        up.stats()
    );
    let st = up.stats();
    assert_eq!(
        (
            st.inferences_shipped,
            st.attempts_shipped,
            st.feedback_shipped
        ),
        (30, 31, 1)
    );
    assert_eq!(st.duplicates_skipped, 0);
    assert!(wal::list_segments(dir.path()).unwrap().is_empty());
    assert_eq!(totals(&store).await, [30, 31, 1, 30, 1, 30]);
    let shut = up.shutdown(Duration::from_secs(1)).await;
    assert!(shut.drained);
    drop_db(&store).await;
}

#[tokio::test]
async fn replaying_a_shipped_segment_does_not_double_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated_store("replay").await;
    let recs = events(25);

    // Write one segment and keep a copy of it: the state "inserted but the
    // delete never happened" (a crash between the two).
    let wal = Arc::new(
        Wal::open(
            dir.path(),
            WalConfig {
                segment_bytes: 1 << 20,
                ..wal_cfg()
            },
        )
        .unwrap(),
    );
    wal.append(&recs).unwrap();
    wal.seal().unwrap();
    let seg = wal.sealed_segments().remove(0);
    let copy = fs::read(&seg.path).unwrap();

    let s = Shipper::spawn(
        Arc::clone(&wal),
        store.clone(),
        ShipperConfig {
            migrate: false,
            ..fast()
        },
    );
    assert!(eventually(PATIENCE, async || wal.stats().records_pending == 0).await);
    assert!(s.shutdown(Duration::from_secs(1)).await.drained);
    drop(wal);
    let once = totals(&store).await;
    assert_eq!(once, [25, 26, 1, 25, 1, 25]);

    // Restart with the segment back on disk, with the "insert started"
    // marker that such a crash leaves (written before the first INSERT,
    // removed only after the segment): it replays, checked.
    fs::write(&seg.path, &copy).unwrap();
    fs::write(wal::marker_path(dir.path(), seg.seq), b"").unwrap();
    let wal = Arc::new(Wal::open(dir.path(), wal_cfg()).unwrap());
    assert_eq!(wal.stats().records_pending, 26);
    let s = Shipper::spawn(
        Arc::clone(&wal),
        store.clone(),
        ShipperConfig {
            migrate: false,
            ..fast()
        },
    );
    assert!(eventually(PATIENCE, async || wal.stats().records_pending == 0).await);
    let st = s.stats();
    assert_eq!(st.duplicates_skipped, 26);
    assert_eq!(st.inferences_shipped + st.feedback_shipped, 0);
    s.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        totals(&store).await,
        once,
        "tables, rollups and queries unchanged"
    );
    drop_db(&store).await;
}

fn markers(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".shipping"))
        .collect();
    v.sort();
    v
}

/// The existence check runs exactly for segments with an "insert started"
/// marker from an earlier attempt; fresh segments ship without it, once.
#[tokio::test]
async fn marker_decides_the_existence_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated_store("marker").await;
    let cfg = || ShipperConfig {
        migrate: false,
        ..fast()
    };
    let wal_cfg = || WalConfig {
        segment_bytes: 1 << 20,
        ..wal_cfg()
    };

    // A fresh segment: shipped exactly once, no duplicates looked for or
    // found, marker gone with the segment.
    let wal = Arc::new(Wal::open(dir.path(), wal_cfg()).unwrap());
    wal.append(&events(20)).unwrap();
    wal.seal().unwrap();
    let s = Shipper::spawn(Arc::clone(&wal), store.clone(), cfg());
    assert!(eventually(PATIENCE, async || wal.stats().records_pending == 0).await);
    let st = s.stats();
    assert_eq!(
        (
            st.inferences_shipped,
            st.attempts_shipped,
            st.feedback_shipped,
            st.duplicates_skipped
        ),
        (20, 21, 1, 0)
    );
    s.shutdown(Duration::from_secs(1)).await;
    assert_eq!(totals(&store).await, [20, 21, 1, 20, 1, 20]);
    assert!(markers(dir.path()).is_empty() && wal::list_segments(dir.path()).unwrap().is_empty());

    // A segment whose first 6 inferences an earlier attempt inserted (the
    // attempt died after the INSERT): its marker is on disk, so the replay
    // checks and inserts only the rest.
    let recs = events(12);
    let inferences_only: Vec<Record> = recs
        .iter()
        .filter(|r| matches!(r, Record::Inference(_)))
        .cloned()
        .collect();
    ship_batch(&store, &inferences_only[..6], BodiesPolicy::Store)
        .await
        .unwrap();
    wal.append(&recs).unwrap();
    wal.seal().unwrap();
    let seq = wal.sealed_segments()[0].seq;
    assert!(!wal.mark_shipping(&[seq]).unwrap(), "first mark: fresh");
    assert!(
        wal.mark_shipping(&[seq]).unwrap(),
        "second mark: an earlier attempt"
    );
    drop(wal);
    let wal = Arc::new(Wal::open(dir.path(), wal_cfg()).unwrap());
    assert_eq!(
        markers(dir.path()).len(),
        1,
        "open keeps the marker of a pending segment"
    );
    let s = Shipper::spawn(Arc::clone(&wal), store.clone(), cfg());
    assert!(eventually(PATIENCE, async || wal.stats().records_pending == 0).await);
    let st = s.stats();
    assert_eq!(
        (
            st.inferences_shipped,
            st.feedback_shipped,
            st.duplicates_skipped
        ),
        (6, 1, 6)
    );
    s.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        totals(&store).await,
        [32, 34, 2, 32, 2, 32],
        "tables, rollups and queries: each event once"
    );
    assert!(markers(dir.path()).is_empty());

    // Feedback ids (idempotency keys) are checked even in fresh segments.
    let again = events(3).pop().unwrap();
    wal.append(std::slice::from_ref(&again)).unwrap();
    wal.append(std::slice::from_ref(&again)).unwrap();
    wal.seal().unwrap();
    let s = Shipper::spawn(Arc::clone(&wal), store.clone(), cfg());
    assert!(eventually(PATIENCE, async || wal.stats().records_pending == 0).await);
    assert_eq!(s.stats().feedback_shipped, 1);
    wal.append(std::slice::from_ref(&again)).unwrap();
    wal.seal().unwrap();
    s.nudge();
    assert!(eventually(PATIENCE, async || wal.stats().records_pending == 0).await);
    let st = s.stats();
    assert_eq!(
        (st.feedback_shipped, st.duplicates_skipped),
        (1, 2),
        "{st:?}"
    );
    s.shutdown(Duration::from_secs(1)).await;
    assert_eq!(count(&store, "SELECT count() FROM {db}.feedback").await, 3);
    drop_db(&store).await;
}

/// A marker whose segment is gone (crash between the segment's delete and
/// the marker's) is removed when the log is opened.
#[test]
fn orphan_markers_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(wal::marker_path(dir.path(), 7), b"").unwrap();
    let wal = Wal::open(dir.path(), wal_cfg()).unwrap();
    assert!(markers(dir.path()).is_empty());
    wal.append(&events(2)).unwrap();
    wal.seal().unwrap();
    let seq = wal.sealed_segments()[0].seq;
    assert!(!wal.mark_shipping(&[seq]).unwrap());
    assert_eq!(markers(dir.path()).len(), 1);
    wal.remove_segment(seq).unwrap();
    assert!(markers(dir.path()).is_empty());
    assert!(
        wal.mark_shipping(&[seq]).is_err(),
        "only sealed segments are marked"
    );
}

#[tokio::test]
async fn partly_shipped_batch_ships_the_rest_once() {
    let store = migrated_store("partial").await;
    let recs = events(10);
    // A crash after the first half was inserted...
    let first = ship_batch(&store, &recs[..5], BodiesPolicy::Store)
        .await
        .unwrap();
    assert_eq!((first.inferences, first.duplicates), (5, 0));
    // ...then the whole batch again, with an id repeated inside it.
    let mut again = recs.clone();
    again.push(recs[7].clone());
    let second = ship_batch(&store, &again, BodiesPolicy::Store)
        .await
        .unwrap();
    assert_eq!(
        (second.inferences, second.feedback, second.duplicates),
        (5, 1, 6)
    );
    assert_eq!(totals(&store).await, [10, 11, 1, 10, 1, 10]);
    drop_db(&store).await;
}

#[tokio::test]
async fn shutdown_seals_and_ships_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated_store("shutdown").await;
    let wal = Arc::new(Wal::open(dir.path(), wal_cfg()).unwrap());
    // A long max age: only the shutdown seals the active segment.
    let s = Shipper::spawn(
        Arc::clone(&wal),
        store.clone(),
        ShipperConfig {
            max_segment_age: Duration::from_secs(3600),
            migrate: false,
            ..fast()
        },
    );
    wal.append(&events(3)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wal.stats().records_pending, 4);
    let report = s.shutdown(Duration::from_secs(2)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences").await,
        3
    );
    drop_db(&store).await;
}

#[tokio::test]
async fn bodies_policy_applies_on_the_way() {
    let store = migrated_store("bodies").await;
    let mut recs = records(3, TS, "chat", "a");
    ship_batch(&store, &recs[..1], BodiesPolicy::Store)
        .await
        .unwrap();
    ship_batch(&store, &recs[1..2], BodiesPolicy::Redact)
        .await
        .unwrap();
    ship_batch(&store, &recs[2..], BodiesPolicy::Skip)
        .await
        .unwrap();
    let db = store.database();
    let mut bodies = Vec::new();
    for r in &mut recs {
        let b: (String, String) = store
            .client()
            .query(&format!(
                "SELECT request_body, response_body FROM {db}.inferences WHERE id = ?"
            ))
            .bind(r.id())
            .fetch_one()
            .await
            .unwrap();
        bodies.push(b);
    }
    assert!(bodies[0].0.contains("\"content\":\"hi\""));
    assert!(
        bodies[1].0.contains("\"content\":\"[redacted]\"")
            && bodies[1].0.contains("\"role\":\"user\"")
    );
    assert!(!bodies[1].1.contains("hello"));
    assert_eq!(bodies[2], (String::new(), String::new()));
    drop_db(&store).await;
}

#[tokio::test]
async fn capture_from_config_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db("capture");
    let toml_cfg = format!(
        "clickhouse_url = \"{}\"\ndatabase = \"{db}\"\nwal_dir = \"{}\"\nmax_segment_age_ms = 50\nfsync = {{ interval_ms = 20 }}\nbodies = \"redact\"\n",
        clickhouse_url(),
        dir.path().display()
    );
    let cfg: flywheel_feedback::CaptureConfig = toml::from_str(&toml_cfg).unwrap();
    assert_eq!(cfg.fsync, FsyncPolicy::IntervalMs(20));
    assert!(
        toml::from_str::<flywheel_feedback::CaptureConfig>("bogus = 1").is_err(),
        "deny_unknown_fields"
    );
    let cap = flywheel_feedback::Capture::start(&cfg).unwrap();
    cap.append(&events(5)).await.unwrap();
    assert!(
        eventually(PATIENCE, async || cap.stats().wal.records_pending == 0).await,
        "{:?}",
        cap.stats()
    );
    let owner = cap
        .store()
        .inference_owner(events_id(&cap).await.as_str())
        .await
        .unwrap();
    assert_eq!(owner.unwrap().tenant, "tenant-a");
    let store = cap.store().clone();
    assert!(cap.shutdown(Duration::from_secs(1)).await.drained);
    drop_db(&store).await;
}

async fn events_id(cap: &flywheel_feedback::Capture) -> String {
    let db = cap.store().database();
    cap.store()
        .client()
        .query(&format!("SELECT any(id) FROM {db}.inferences"))
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_insert_that_commits_after_its_timeout_is_not_inserted_again() {
    let store = migrated_store("late_commit").await;
    let recs = events(20);
    // Each INSERT into inferences now takes 2 s on the server before its
    // rows are written (a column whose default sleeps; the shipper does not
    // send it), while the client gives up after 0.8 s: an INSERT that
    // commits after its client timed out, as under a stalled disk.
    let slow = Duration::from_secs(2);
    let alter = format!(
        "ALTER TABLE {}.inferences ADD COLUMN test_slow UInt8 DEFAULT sleep(2)",
        store.database()
    );
    store.client().query(&alter).execute().await.unwrap();
    let store = store.with_insert_timeout(Duration::from_millis(800));

    let started = std::time::Instant::now();
    let first = ship_batch(&store, &recs, BodiesPolicy::Store).await;
    assert!(
        matches!(first, Err(flywheel_feedback::StoreError::Timeout { .. })),
        "{first:?}"
    );
    // The shipper's replay (the segment's marker is there, so checked),
    // retried after each failure as the shipper does.
    let mut waited = false;
    let second = loop {
        match ship_batch(&store, &recs, BodiesPolicy::Store).await {
            Ok(outcome) => break outcome,
            Err(flywheel_feedback::StoreError::InsertsInFlight { .. }) => waited = true,
            // Without the wait, every replay inserts again, times out and
            // commits late: it never settles, and each try is a duplicate.
            Err(flywheel_feedback::StoreError::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never settled: {:?}",
            totals(&store).await
        );
    };
    assert!(waited, "the replay did not wait for the INSERT given up on");
    assert!(
        started.elapsed() >= slow,
        "the replay ran before the late commit"
    );
    // The late commit counts once; the replay inserted nothing again.
    assert_eq!((second.inferences, second.attempts), (0, 0), "{second:?}");
    assert_eq!(totals(&store).await, [20, 21, 1, 20, 1, 20]);
    drop_db(&store).await;
}
