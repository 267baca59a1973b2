//! Write-ahead log tests (no ClickHouse needed).

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, time::Duration};

use common::*;
use flywheel_feedback::{
    wal::{self, frame, Wal, WalConfig, WalError},
    FeedbackTarget, FeedbackValue, FsyncPolicy, Record,
};

fn cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 8 << 20,
        fsync: FsyncPolicy::Never,
        max_bytes: 1 << 30,
        keyring: None,
    }
}

fn all_records(w: &Wal) -> Vec<Record> {
    w.sealed_segments()
        .iter()
        .flat_map(|s| wal::read_segment(&s.path, None).unwrap().records)
        .collect()
}

fn mixed(n: usize) -> Vec<Record> {
    let mut v = records(n, 1_700_000_000_000, "chat", "a");
    v.push(Record::Feedback(feedback(
        FeedbackTarget::inference(v[0].id()),
        1_700_000_000_500,
        "chat",
        "a",
        "thumbs",
        FeedbackValue::Demonstration(serde_json::json!({"role": "assistant", "content": "better"})),
    )));
    v
}

#[test]
fn append_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::IntervalMs(5),
        FsyncPolicy::Never,
    ] {
        let sub = dir.path().join(format!("{fsync:?}"));
        let w = Wal::open(&sub, WalConfig { fsync, ..cfg() }).unwrap();
        let batch1 = mixed(3);
        let batch2 = records(2, 1_600_000_000_000, "chat", "b");
        w.append(&batch1).unwrap();
        w.append(&batch2).unwrap();
        w.append(&[]).unwrap();
        let st = w.stats();
        assert_eq!(st.records_appended, 6);
        assert_eq!(st.records_pending, 6);
        assert_eq!(st.sealed_segments, 0);
        assert_eq!(st.oldest_unshipped_ts_ms, Some(1_600_000_000_000));
        #[allow(clippy::disallowed_methods)] // a plain test thread
        std::thread::sleep(Duration::from_millis(20));
        w.seal().unwrap();
        let segs = w.sealed_segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].bytes, fs::metadata(&segs[0].path).unwrap().len());
        assert_eq!(st.bytes_on_disk, segs[0].bytes);
        let back = all_records(&w);
        assert_eq!(back, [batch1, batch2].concat());
        w.remove_segment(segs[0].seq).unwrap();
        assert_eq!(w.stats().bytes_on_disk, 0);
        assert_eq!(w.stats().oldest_unshipped_ts_ms, None);
        assert!(wal::list_segments(&sub).unwrap().is_empty());
    }
}

#[test]
fn crc_corruption_is_detected_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg()).unwrap();
    let recs = records(3, 1_700_000_000_000, "chat", "a");
    for r in &recs {
        w.append(std::slice::from_ref(r)).unwrap();
    }
    w.seal().unwrap();
    let seg = w.sealed_segments().remove(0);
    drop(w);

    // Flip one byte inside the second record's payload.
    let mut bytes = fs::read(&seg.path).unwrap();
    let first_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let second = frame::HEADER_LEN + frame::FRAME_HEADER_LEN + first_len;
    bytes[second + frame::FRAME_HEADER_LEN + 10] ^= 0x55;
    fs::write(&seg.path, &bytes).unwrap();

    let c = wal::read_segment(&seg.path, None).unwrap();
    assert_eq!(c.records, vec![recs[0].clone(), recs[2].clone()]);
    assert!(c.is_damaged());
    assert!(c.corrupt_bytes > 0);

    // Reopen: the damage is in the middle (a valid frame follows), so it is
    // not a torn tail and nothing is truncated.
    let w = Wal::open(dir.path(), cfg()).unwrap();
    assert_eq!(w.stats().torn_bytes_truncated, 0);
    assert_eq!(fs::metadata(&seg.path).unwrap().len(), bytes.len() as u64);
    let seq = w.sealed_segments()[0].seq;
    let q = w.quarantine_segment(seq).unwrap();
    assert!(q.starts_with(dir.path().join("quarantine")));
    assert_eq!(w.stats().quarantined_segments, 1);
    assert_eq!(w.stats().bytes_on_disk, 0);
}

#[test]
fn torn_tail_is_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg()).unwrap();
    let recs = records(3, 1_700_000_000_000, "chat", "a");
    w.append(&recs).unwrap();
    // A crash: no seal. (Drop only fsyncs, so the files are as SIGKILL
    // leaves them; the kernel would release the lock the same way.)
    let path = wal::list_segments(dir.path()).unwrap()[0].1.clone();
    drop(w);
    let full = fs::metadata(&path).unwrap().len();
    // The last write was cut 7 bytes short.
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(full - 7).unwrap();
    drop(f);

    let w = Wal::open(dir.path(), cfg()).unwrap();
    let st = w.stats();
    let last_frame = full - 7 - fs::metadata(&path).unwrap().len();
    assert!(last_frame > 0);
    assert_eq!(st.torn_bytes_truncated, last_frame);
    assert_eq!(st.records_pending, 2);
    assert_eq!(all_records(&w), recs[..2].to_vec());
    assert!(!wal::read_segment(&path, None).unwrap().is_damaged());

    // It continues: new appends go to a new segment after the recovered one.
    let more = records(1, 1_700_000_001_000, "chat", "a");
    w.append(&more).unwrap();
    w.seal().unwrap();
    let segs = w.sealed_segments();
    assert_eq!(segs.len(), 2);
    assert!(segs[0].seq < segs[1].seq);
    assert_eq!(all_records(&w), [recs[..2].to_vec(), more].concat());
}

#[test]
fn unshipped_segments_survive_a_crash_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(
        dir.path(),
        WalConfig {
            segment_bytes: 2048,
            ..cfg()
        },
    )
    .unwrap();
    let recs = records(10, 1_700_000_000_000, "chat", "a");
    for r in &recs {
        w.append(std::slice::from_ref(r)).unwrap();
    }
    drop(w);
    let w = Wal::open(dir.path(), cfg()).unwrap();
    assert_eq!(w.stats().records_pending, 10);
    assert_eq!(all_records(&w), recs);
}

#[test]
fn segments_rotate_at_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(
        dir.path(),
        WalConfig {
            segment_bytes: 2048,
            ..cfg()
        },
    )
    .unwrap();
    let recs = records(20, 1_700_000_000_000, "chat", "a");
    for r in &recs {
        w.append(std::slice::from_ref(r)).unwrap();
    }
    w.seal().unwrap();
    let segs = w.sealed_segments();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    for pair in segs.windows(2) {
        assert!(pair[0].seq < pair[1].seq);
    }
    for s in &segs {
        assert!(s.bytes <= 2048, "segment of {} bytes", s.bytes);
        assert_eq!(s.bytes, fs::metadata(&s.path).unwrap().len());
    }
    assert_eq!(all_records(&w), recs);

    // A batch bigger than a segment is never split: it gets its own.
    let big = records(30, 1_700_000_000_000, "chat", "a");
    w.append(&big).unwrap();
    w.seal().unwrap();
    let last = w.sealed_segments().pop().unwrap();
    assert!(last.bytes > 2048);
    assert_eq!(wal::read_segment(&last.path, None).unwrap().records, big);
}

#[test]
fn seal_if_older_seals_a_quiet_segment() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg()).unwrap();
    assert!(!w.seal_if_older(Duration::ZERO).unwrap(), "nothing to seal");
    w.append(&records(1, 1, "chat", "a")).unwrap();
    assert!(!w.seal_if_older(Duration::from_secs(60)).unwrap());
    #[allow(clippy::disallowed_methods)] // a plain test thread
    std::thread::sleep(Duration::from_millis(30));
    assert!(w.seal_if_older(Duration::from_millis(20)).unwrap());
    assert_eq!(w.sealed_segments().len(), 1);
}

#[test]
fn quota_full_refuses_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(
        dir.path(),
        WalConfig {
            segment_bytes: 1024,
            max_bytes: 4096,
            ..cfg()
        },
    )
    .unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for r in records(40, 1_700_000_000_000, "chat", "a") {
        match w.append(&[r]) {
            Ok(()) => accepted += 1,
            Err(WalError::Full {
                records, max_bytes, ..
            }) => {
                assert_eq!((records, max_bytes), (1, 4096));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let st = w.stats();
    assert!(accepted > 0 && refused > 0);
    assert_eq!(st.dropped_full, refused);
    assert_eq!(st.records_appended, accepted);
    assert!(st.bytes_on_disk <= 4096);
    let on_disk: u64 = wal::list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|(_, p)| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, st.bytes_on_disk);
    // Data already in the log is kept (the policy refuses new records).
    w.seal().unwrap();
    assert_eq!(all_records(&w).len() as u64, accepted);

    // Shipping frees space; appends work again.
    let oldest = w.sealed_segments()[0].seq;
    w.remove_segment(oldest).unwrap();
    w.append(&records(1, 1_700_000_000_000, "chat", "a"))
        .unwrap();
}

#[test]
fn non_finite_numbers_do_not_poison_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg()).unwrap();
    let mut e = inference(&uuid(), 5, "chat", "a");
    e.latency_ms = f64::NAN;
    e.ttft_ms = Some(f64::INFINITY);
    w.append(&[Record::Inference(e.clone())]).unwrap();
    w.seal().unwrap();
    let back = all_records(&w);
    let Record::Inference(b) = &back[0] else {
        panic!()
    };
    assert_eq!((b.latency_ms, b.ttft_ms), (0.0, Some(0.0)));
    assert_eq!(b.id, e.id);
}

#[test]
fn one_wal_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg()).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), cfg()),
        Err(WalError::Locked { .. })
    ));
    drop(w);
    Wal::open(dir.path(), cfg()).unwrap();
}

#[test]
fn wal_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Wal>();
}

const CHILD_DIR_ENV: &str = "FLYWHEEL_WAL_TEST_CHILD_DIR";

/// The writer of `sigkill_loses_nothing`, run as a child process: appends
/// batches forever and prints how many records are acknowledged.
#[test]
#[ignore = "child process of sigkill_loses_nothing"]
fn sigkill_child_writer() {
    use std::io::Write;
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    // No fsync at all: a killed process must still lose nothing.
    let w = Wal::open(
        &dir,
        WalConfig {
            segment_bytes: 16 << 10,
            ..cfg()
        },
    )
    .unwrap();
    let mut n = 0u64;
    loop {
        let batch: Vec<Record> = (n..n + 5)
            .map(|i| Record::Inference(inference(&format!("r{i:08}"), i, "chat", "a")))
            .collect();
        w.append(&batch).unwrap();
        n += 5;
        println!("acked {n}");
        std::io::stdout().flush().unwrap();
    }
}

#[test]
fn sigkill_loses_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = 0;
    // The pipe stays open until after the kill, so the child dies of the
    // SIGKILL mid-loop, not of a broken pipe.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while acked < 500 {
        let line = lines.next().expect("child output").unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    drop(lines);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let w = Wal::open(dir.path(), cfg()).unwrap();
    let back = all_records(&w);
    assert!(
        back.len() as u64 >= acked,
        "{} records back, {acked} acknowledged",
        back.len()
    );
    for (i, r) in back.iter().enumerate() {
        assert_eq!(r.id(), format!("r{i:08}"), "records form a gap-free prefix");
    }
    assert!(w.sealed_segments().len() > 1);
}
