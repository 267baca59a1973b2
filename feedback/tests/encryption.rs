//! Encryption at rest of the write-ahead log (`wal::seal`): what is on disk,
//! crash recovery and replay of sealed segments, key rotation, and shipping
//! a sealed log to a real ClickHouse.

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, sync::Arc, time::Duration};

use common::*;
use flywheel_feedback::{
    shipper::{Shipper, ShipperConfig},
    wal::{self, frame, Keyring, Wal, WalConfig, WalError},
    CaptureConfig, FsyncPolicy, Record,
};

const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";
const TS: u64 = 1_700_000_000_000;

fn keyring(current: &str, old: &[&str]) -> Option<Arc<Keyring>> {
    let old: Vec<String> = old.iter().map(|k| (*k).to_owned()).collect();
    Some(Arc::new(Keyring::from_hex(current, &old).unwrap()))
}

fn cfg(keys: Option<Arc<Keyring>>) -> WalConfig {
    WalConfig {
        segment_bytes: 8 << 20,
        fsync: FsyncPolicy::Never,
        max_bytes: 1 << 30,
        keyring: keys,
    }
}

fn on_disk(w: &Wal) -> Vec<Record> {
    let keys = w.config().keyring.clone();
    w.sealed_segments()
        .iter()
        .flat_map(|s| wal::read_segment(&s.path, keys.as_deref()).unwrap().records)
        .collect()
}

/// With a key, segments carry the sealed header, no prompt or answer text
/// is readable in them, and they read back whole with the key only.
#[test]
fn a_keyed_log_writes_no_plain_text_and_reads_back_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg(keyring(A, &[]))).unwrap();
    let recs = records(5, TS, "chat", "a");
    w.append(&recs).unwrap();
    w.seal().unwrap();
    let seg = w.sealed_segments().remove(0);
    let bytes = fs::read(&seg.path).unwrap();
    assert_eq!(&bytes[..frame::HEADER_LEN], frame::SEALED_SEGMENT_MAGIC);
    for needle in [recs[0].id(), "chat", "\"Inference\""] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} is readable in the segment"
        );
    }
    assert_eq!(on_disk(&w), recs);
    // Without the key: refused with a message that says what to configure.
    let err = wal::read_segment(&seg.path, None).unwrap_err();
    assert!(matches!(err, WalError::NoKey { .. }), "{err}");
    assert!(err.to_string().contains("encryption_key_file"), "{err}");
    // With another key: every frame undecodable (the segment is damaged,
    // so the shipper quarantines it instead of deleting it).
    let other = Keyring::from_hex(B, &[]).unwrap();
    let c = wal::read_segment(&seg.path, Some(&other)).unwrap();
    assert_eq!((c.records.len(), c.undecodable), (0, 5));
    assert_eq!(
        wal::segment_key_ids(&seg.path)
            .unwrap()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![keyring(A, &[]).unwrap().current_id()]
    );
}

/// A crash mid-write leaves a torn sealed frame: the next open truncates
/// it and replays the whole frames, as for a plain log. A log left sealed
/// does not open without its key.
#[test]
fn sealed_segments_recover_from_a_torn_write_and_need_their_key_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path(), cfg(keyring(A, &[]))).unwrap();
    let recs = records(4, TS, "chat", "a");
    w.append(&recs).unwrap();
    drop(w);
    let seg = wal::list_segments(dir.path()).unwrap().remove(0).1;
    let len = fs::metadata(&seg).unwrap().len();
    // Half of a fifth record's frame, as a crash would leave it.
    let mut bytes = fs::read(&seg).unwrap();
    let one_frame = (len as usize - frame::HEADER_LEN) / 4;
    let copy = bytes[frame::HEADER_LEN..frame::HEADER_LEN + one_frame / 2].to_vec();
    bytes.extend_from_slice(&copy);
    fs::write(&seg, &bytes).unwrap();

    let err = Wal::open(dir.path(), cfg(None)).unwrap_err();
    assert!(matches!(err, WalError::NoKey { .. }), "{err}");
    let w = Wal::open(dir.path(), cfg(keyring(A, &[]))).unwrap();
    assert_eq!(w.stats().torn_bytes_truncated, copy.len() as u64);
    assert_eq!(on_disk(&w), recs);
}

/// Rotation: a log opened with a new key and the old one as an old key
/// replays what the old key sealed and seals new records with the new key;
/// a plain log that gets a key keeps its plain segments readable.
#[test]
fn a_rotated_key_reads_old_segments_and_seals_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let plain = records(2, TS, "chat", "a");
    let under_a = records(3, TS + 10, "chat", "a");
    let under_b = records(2, TS + 20, "chat", "a");
    let w = Wal::open(dir.path(), cfg(None)).unwrap();
    w.append(&plain).unwrap();
    drop(w);
    let w = Wal::open(dir.path(), cfg(keyring(A, &[]))).unwrap();
    w.append(&under_a).unwrap();
    drop(w);
    // Only the new key: the segment sealed with the old one is undecodable.
    let w = Wal::open(dir.path(), cfg(keyring(B, &[]))).unwrap();
    let damaged = w
        .sealed_segments()
        .iter()
        .map(|s| wal::read_segment(&s.path, w.config().keyring.as_deref()).unwrap())
        .filter(|c| c.is_damaged())
        .count();
    assert_eq!(damaged, 1);
    drop(w);
    let w = Wal::open(dir.path(), cfg(keyring(B, &[A]))).unwrap();
    w.append(&under_b).unwrap();
    w.seal().unwrap();
    let all: Vec<Record> = plain
        .iter()
        .chain(&under_a)
        .chain(&under_b)
        .cloned()
        .collect();
    assert_eq!(on_disk(&w), all);
    let ids: Vec<_> = w
        .sealed_segments()
        .iter()
        .map(|s| wal::segment_key_ids(&s.path).unwrap())
        .collect();
    let (a, b) = (
        keyring(A, &[]).unwrap().current_id(),
        keyring(B, &[]).unwrap().current_id(),
    );
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], None);
    assert_eq!(ids[1], Some([a].into()));
    assert_eq!(ids[2], Some([b].into()));
}

/// `capture.encryption_*` read from a key file or a variable; bad settings
/// are named.
#[test]
fn capture_config_reads_keys_from_files_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wal.key");
    fs::write(&key, format!("{A}\n")).unwrap();
    let old = dir.path().join("old.key");
    fs::write(&old, B).unwrap();
    let env = |v: &str| match v {
        "WAL_KEY" => Ok(B.to_owned()),
        _ => Err(std::env::VarError::NotPresent),
    };
    let from_file = CaptureConfig {
        encryption_key_file: Some(key.clone()),
        encryption_old_key_files: vec![old.clone()],
        ..Default::default()
    };
    assert_eq!(from_file.keyring_with(env).unwrap(), keyring(A, &[B]));
    let from_env = CaptureConfig {
        encryption_key_env: Some("WAL_KEY".into()),
        ..Default::default()
    };
    assert_eq!(from_env.keyring_with(env).unwrap(), keyring(B, &[]));
    assert_eq!(CaptureConfig::default().keyring_with(env).unwrap(), None);
    for (bad, says) in [
        (
            CaptureConfig {
                encryption_key_file: Some(key.clone()),
                encryption_key_env: Some("WAL_KEY".into()),
                ..Default::default()
            },
            "not both",
        ),
        (
            CaptureConfig {
                encryption_key_env: Some("UNSET".into()),
                ..Default::default()
            },
            "UNSET is not set",
        ),
        (
            CaptureConfig {
                encryption_key_file: Some(dir.path().join("missing.key")),
                ..Default::default()
            },
            "missing.key",
        ),
        (
            CaptureConfig {
                encryption_old_key_files: vec![old.clone()],
                ..Default::default()
            },
            "needs a current key",
        ),
        (
            CaptureConfig {
                encryption_key_file: Some(old.clone()),
                encryption_old_key_files: vec![dir.path().to_owned()],
                ..Default::default()
            },
            "cannot read key file",
        ),
    ] {
        let err = bad.keyring_with(env).unwrap_err();
        assert!(err.contains(says), "{err:?} does not say {says:?}");
    }
    fs::write(&key, "not a key").unwrap();
    let err = from_file.keyring_with(env).unwrap_err();
    assert!(err.contains("64 hex digits"), "{err}");
}

/// A sealed log ships to ClickHouse like a plain one: the rows arrive once,
/// decrypted, and the segments are deleted.
#[tokio::test]
async fn a_sealed_log_ships_its_records_to_clickhouse() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated_store("sealed").await;
    let wal = Arc::new(Wal::open(dir.path(), cfg(keyring(A, &[]))).unwrap());
    let s = Shipper::spawn(
        Arc::clone(&wal),
        store.clone(),
        ShipperConfig {
            max_segment_age: Duration::from_millis(50),
            migrate: false,
            ..ShipperConfig::default()
        },
    );
    let recs = records(7, TS, "chat", "a");
    wal.append(&recs).unwrap();
    let report = s.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(
        count(&store, "SELECT count() FROM {db}.inferences").await,
        7
    );
    assert_eq!(wal.stats().quarantined_segments, 0);
    assert!(wal.sealed_segments().is_empty());
    drop_db(&store).await;
}
