//! Group commit ([`GroupCommit`]): the WAL's writer thread, no ClickHouse needed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, sync::Arc};

use common::*;
use flywheel_feedback::{
    wal::{self, GroupCommit, Wal, WalConfig, WalError},
    FsyncPolicy, Record,
};

fn wal(dir: &std::path::Path, fsync: FsyncPolicy, max_bytes: u64) -> Arc<Wal> {
    let cfg = WalConfig {
        segment_bytes: 8 << 20,
        fsync,
        max_bytes,
        keyring: None,
    };
    Arc::new(Wal::open(dir, cfg).unwrap())
}

/// Records in the segment files on disk, sealed or not.
fn on_disk(dir: &std::path::Path) -> Vec<Record> {
    wal::list_segments(dir)
        .unwrap()
        .iter()
        .flat_map(|(_, path)| wal::read_segment(path, None).unwrap().records)
        .collect()
}

/// Many requests at once, each on its own task: every batch is in the file
/// when its append resolves, once, with its records together and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_batch_handed_over_is_written_once_before_its_append_resolves() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::IntervalMs(50),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let w = wal(dir.path(), fsync, 1 << 30);
        let writer = Arc::new(GroupCommit::start(Arc::clone(&w)).unwrap());
        let tasks = (0..64).map(|n| {
            let writer = Arc::clone(&writer);
            let dir = dir.path().to_owned();
            tokio::spawn(async move {
                let batch = records(3, 1_700_000_000_000 + n, "chat", "a");
                writer.append(&batch).await.unwrap();
                // Already in the file, as the answer of a request may go out now.
                let ids: HashSet<String> =
                    on_disk(&dir).iter().map(|r| r.id().to_owned()).collect();
                assert!(batch.iter().all(|r| ids.contains(r.id())), "{fsync:?}");
                batch
            })
        });
        let mut batches = Vec::new();
        for task in tasks.collect::<Vec<_>>() {
            batches.push(task.await.unwrap());
        }
        let written = on_disk(dir.path());
        assert_eq!(written.len(), 64 * 3, "{fsync:?}: each record once");
        for batch in &batches {
            let at = written
                .iter()
                .position(|r| r.id() == batch[0].id())
                .unwrap();
            assert_eq!(
                &written[at..at + 3],
                batch.as_slice(),
                "{fsync:?}: a batch stays whole"
            );
        }
        assert_eq!(w.stats().records_appended, 64 * 3);
    }
}

/// A full log refuses the batches that do not fit, each on its own: the ones
/// that fit are written, and each caller hears its own outcome.
#[tokio::test]
async fn a_full_log_refuses_only_the_batches_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let one = wal(scratch.path(), FsyncPolicy::Never, 1 << 30)
        .encode(&records(1, 1_700_000_000_000, "chat", "a"))
        .unwrap();
    // Room for the segment header and about two and a half batches.
    let max = wal::frame::HEADER_LEN as u64 + 5 * one.bytes() as u64 / 2;
    let w = wal(dir.path(), FsyncPolicy::Always, max);
    let writer = GroupCommit::start(Arc::clone(&w)).unwrap();
    let mut outcomes = Vec::new();
    for n in 0..4 {
        let batch = records(1, 1_700_000_000_000 + n, "chat", "a");
        outcomes.push(writer.append(&batch).await);
    }
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[2], Err(WalError::Full { .. }))
            && matches!(outcomes[3], Err(WalError::Full { .. })),
        "{outcomes:?}"
    );
    assert_eq!(on_disk(dir.path()).len(), 2);
    assert_eq!(w.stats().dropped_full, 2);
}

/// Closing waits for what was handed over; after it, appends are refused
/// with a clear error rather than lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_writes_what_was_handed_over_and_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let w = wal(dir.path(), FsyncPolicy::IntervalMs(50), 1 << 30);
    let mut writer = GroupCommit::start(Arc::clone(&w)).unwrap();
    writer
        .append(&records(5, 1_700_000_000_000, "chat", "a"))
        .await
        .unwrap();
    let writer = tokio::task::spawn_blocking(move || {
        writer.close();
        writer
    })
    .await
    .unwrap();
    assert_eq!(on_disk(dir.path()).len(), 5);
    let refused = writer
        .append(&records(1, 1_700_000_000_000, "chat", "a"))
        .await;
    assert!(matches!(refused, Err(WalError::Closed)), "{refused:?}");
}
