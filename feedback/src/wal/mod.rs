//! Segmented write-ahead log: the gateway appends every event here before
//! anything else happens to it; the shipper ships sealed segments to
//! ClickHouse and deletes each one only after ClickHouse accepted all of it.
//!
//! Layout: one directory, segment files `{seq:020}.wal` with increasing
//! sequence numbers (framing in [`frame`]). The newest segment is *active*
//! (appended to); all others are *sealed* (immutable, waiting to ship).
//! A segment is sealed when the next batch would grow it past
//! `segment_bytes`, when the shipper asks ([`Wal::seal_if_older`]: the
//! active segment has held records for `max_segment_age_ms`), or when the
//! log is opened (every existing segment is sealed, so a restarted gateway
//! replays what it had not shipped). The active segment is created by the
//! first append after a seal, so an idle log holds no empty files.
//!
//! Crash recovery ([`Wal::open`]): each segment's frames are checked
//! (length + CRC). In the newest segment, bytes after the last valid frame
//! are a write torn by the crash and are truncated. Elsewhere an invalid
//! region is skipped by resynchronizing on the next valid frame
//! ([`frame::scan`]); the shipper ships the valid records and moves such a
//! segment to `quarantine/` instead of deleting it.
//!
//! Shipping markers: before the shipper inserts the first row of a sealed
//! segment it creates `{seq:020}.shipping` next to it and fsyncs the
//! directory ([`Wal::mark_shipping`]); the marker is removed only after
//! the segment file is gone ([`Wal::remove_segment`],
//! [`Wal::quarantine_segment`]; [`Wal::open`] removes markers left without
//! a segment). So a segment of which any row may already be in ClickHouse
//! always has a marker, and a segment without one was never inserted from
//! (see "Exactly once" in the crate docs). Markers are empty files and do
//! not count towards the quota.
//!
//! Encryption at rest ([`seal`]): with [`WalConfig::keyring`] new segments
//! are written sealed (a second header, [`frame::SEALED_SEGMENT_MAGIC`]),
//! each payload AES-256-GCM; plain segments left from before still ship.
//!
//! Disk quota policy: the log (all segment files) never exceeds
//! `max_bytes`. When an append would exceed it, **the new records are
//! refused**: `append` returns [`WalError::Full`], the records are counted
//! in [`WalStats::dropped_full`] and an error is logged (rate-limited).
//! Unshipped data already in the log is never deleted to make room: it is
//! older, was accepted first, and ships as soon as ClickHouse is back, at
//! which point appends succeed again. Serving is unaffected either way; the
//! gateway exports `dropped_full` as a metric to alert on.

pub mod frame;
mod group;
pub mod seal;

use std::{
    collections::{btree_map, BTreeMap},
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use frame::{HEADER_LEN, MAX_PAYLOAD_LEN, SEALED_SEGMENT_MAGIC, SEGMENT_MAGIC};
pub use group::GroupCommit;
pub use seal::{Keyring, SealError};
use serde::{Deserialize, Serialize};

use crate::event::Record;

const SEGMENT_EXT: &str = "wal";
const MARKER_EXT: &str = "shipping";
const QUARANTINE_DIR: &str = "quarantine";
const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk quota is reached; the records were not written.
    #[error(
        "write-ahead log full: {records} record(s) ({needed} bytes) refused, \
         {on_disk} of {max_bytes} bytes used by unshipped segments"
    )]
    Full {
        records: usize,
        needed: u64,
        on_disk: u64,
        max_bytes: u64,
    },
    #[error("write-ahead log I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot encode record {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("record {id} encodes to {len} bytes, more than the {max} a frame holds")]
    RecordTooLarge { id: String, len: usize, max: usize },
    #[error("segment {seq} is not a sealed segment of this log")]
    NotSealed { seq: u64 },
    #[error("{path} is not a write-ahead log segment (bad header)")]
    BadHeader { path: PathBuf },
    /// A sealed segment, and the log has no key (module docs of [`seal`]).
    #[error(
        "{path} is encrypted and no key is configured: set capture.encryption_key_file \
         (or _env), and list earlier keys in capture.encryption_old_key_files"
    )]
    NoKey { path: PathBuf },
    #[error("cannot seal record {id}: {source}")]
    Seal { id: String, source: SealError },
    /// The log's writer thread has stopped (shutdown) and takes no records.
    #[error("write-ahead log closed: it takes no more records")]
    Closed,
    /// Another live `Wal` (this process or another) has the directory.
    #[error("write-ahead log {path} is in use by another process (one gateway per WAL directory)")]
    Locked { path: PathBuf },
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// When the write-ahead log calls `fsync`.
///
/// Every append is written to the file (the page cache) before it returns,
/// so a killed process (SIGKILL, panic) loses nothing under any policy;
/// fsync only matters for a kernel crash or power loss.
///
/// TOML: `fsync = "always"`, `fsync = "never"`, `fsync = { interval_ms = 100 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fsync before an append returns: each [`Wal::append`], or once for
    /// each group of [`GroupCommit`] (slowest, safest).
    Always,
    /// A background thread fsyncs the active segment every N ms when it
    /// has unsynced data: at most N ms of events lost on power loss.
    IntervalMs(u64),
    /// Never fsync (the OS writes back eventually); sealed segments are not
    /// synced either.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        Self::IntervalMs(100)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Seal the active segment when a batch would grow it past this.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Quota for all segment files together.
    pub max_bytes: u64,
    /// Encrypt records at rest ([`seal`]): new segments are sealed with the
    /// current key; sealed segments left by a previous run need their key.
    pub keyring: Option<Arc<Keyring>>,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 8 << 20,
            fsync: FsyncPolicy::default(),
            max_bytes: 1 << 30,
            keyring: None,
        }
    }
}

/// A segment file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentMeta {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub records: u64,
    /// Times of the oldest and newest record (by `ts_ms`).
    pub min_ts_ms: Option<u64>,
    pub max_ts_ms: Option<u64>,
}

impl SegmentMeta {
    fn new(seq: u64, path: PathBuf) -> Self {
        Self {
            seq,
            path,
            bytes: HEADER_LEN as u64,
            records: 0,
            min_ts_ms: None,
            max_ts_ms: None,
        }
    }

    fn note_ts(&mut self, ts: u64) {
        self.min_ts_ms = Some(self.min_ts_ms.map_or(ts, |m| m.min(ts)));
        self.max_ts_ms = Some(self.max_ts_ms.map_or(ts, |m| m.max(ts)));
    }
}

/// Counters and gauges of the log, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalStats {
    /// Bytes of all segment files (the quota's measure).
    pub bytes_on_disk: u64,
    pub max_bytes: u64,
    /// Sealed segments plus the active one, if any.
    pub segments: u64,
    pub sealed_segments: u64,
    /// Records in the log (not yet shipped and deleted).
    pub records_pending: u64,
    /// `ts_ms` of the oldest record not yet shipped; `now - this` is the
    /// capture lag.
    pub oldest_unshipped_ts_ms: Option<u64>,
    /// Records appended since open.
    pub records_appended: u64,
    /// Records refused because the quota was reached, since open.
    pub dropped_full: u64,
    /// Bytes of torn tails truncated at open.
    pub torn_bytes_truncated: u64,
    /// Segments moved to `quarantine/` (corruption seen while reading).
    pub quarantined_segments: u64,
}

/// What [`read_segment`] found in a segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentContents {
    pub records: Vec<Record>,
    /// Bytes in regions that hold no valid frame.
    pub corrupt_bytes: u64,
    /// Frames with a valid CRC whose payload is not a [`Record`] (written by
    /// an incompatible version).
    pub undecodable: u64,
}

impl SegmentContents {
    /// Whether anything in the segment could not be read back.
    pub fn is_damaged(&self) -> bool {
        self.corrupt_bytes > 0 || self.undecodable > 0
    }
}

/// What a segment's payloads are, by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payloads {
    Json,
    Sealed,
}

impl Payloads {
    fn of(buf: &[u8]) -> Option<Payloads> {
        match buf.get(..HEADER_LEN) {
            Some(h) if h == SEGMENT_MAGIC => Some(Payloads::Json),
            Some(h) if h == SEALED_SEGMENT_MAGIC => Some(Payloads::Sealed),
            _ => None,
        }
    }

    /// The keyring a segment of this kind needs: `Err(NoKey)` for a sealed
    /// segment when the log has none.
    fn keys<'k>(self, keys: Option<&'k Keyring>, path: &Path) -> Result<Option<&'k Keyring>> {
        match (self, keys) {
            (Payloads::Json, _) => Ok(None),
            (Payloads::Sealed, Some(k)) => Ok(Some(k)),
            (Payloads::Sealed, None) => Err(WalError::NoKey {
                path: path.to_owned(),
            }),
        }
    }
}

/// A segment's frames: JSON payloads resynchronize on `{"`, sealed ones on
/// a key id of the keyring.
fn scan_segment(buf: &[u8], keys: Option<&Keyring>) -> frame::Scan {
    match keys {
        None => frame::scan(buf),
        Some(k) => frame::scan_with(buf, &|p| k.knows(p)),
    }
}

/// Reads and decodes a segment file; a sealed one needs `keys` (the log's
/// [`WalConfig::keyring`]). Frames sealed with a key that `keys` lacks, or
/// altered, count as undecodable.
pub fn read_segment(path: &Path, keys: Option<&Keyring>) -> Result<SegmentContents> {
    let buf = fs::read(path).map_err(io_err(path))?;
    let keys = Payloads::of(&buf)
        .ok_or_else(|| WalError::BadHeader {
            path: path.to_owned(),
        })?
        .keys(keys, path)?;
    let scan = scan_segment(&buf, keys);
    let mut out = SegmentContents {
        corrupt_bytes: scan.corrupt_bytes() as u64,
        ..Default::default()
    };
    for f in &scan.frames {
        let decoded = match keys {
            None => frame::decode_record(&buf, f).map_err(|e| e.to_string()),
            Some(k) => frame::payload(&buf, f)
                .ok_or_else(|| "frame outside the segment".to_owned())
                .and_then(|p| k.open(f.ts_ms, p).map_err(|e| e.to_string()))
                .and_then(|plain| serde_json::from_slice(&plain).map_err(|e| e.to_string())),
        };
        match decoded {
            Ok(r) => out.records.push(r),
            Err(e) => {
                tracing::error!(path = %path.display(), offset = f.offset, error = %e, "undecodable WAL record");
                out.undecodable += 1;
            }
        }
    }
    Ok(out)
}

/// The ids of the keys a sealed segment's frames name (hex), or `None` for a
/// plain segment: what `wal-inspect` shows, to tell when an old key is no
/// longer needed.
pub fn segment_key_ids(path: &Path) -> Result<Option<std::collections::BTreeSet<String>>> {
    let buf = fs::read(path).map_err(io_err(path))?;
    match Payloads::of(&buf) {
        None => Err(WalError::BadHeader {
            path: path.to_owned(),
        }),
        Some(Payloads::Json) => Ok(None),
        Some(Payloads::Sealed) => {
            let scan = frame::scan_with(&buf, &|p| p.len() >= seal::SEALED_OVERHEAD);
            Ok(Some(
                scan.frames
                    .iter()
                    .filter_map(|f| frame::payload(&buf, f).and_then(Keyring::payload_key_id))
                    .collect(),
            ))
        }
    }
}

/// The sequence number of a segment file name, if it is one.
fn segment_seq(path: &Path) -> Option<u64> {
    if path.extension()? != SEGMENT_EXT {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// The shipping marker of segment `seq` in `dir` (module docs).
pub fn marker_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{MARKER_EXT}"))
}

/// Removes a marker; a missing one is fine.
fn remove_marker(dir: &Path, seq: u64) -> Result<()> {
    let path = marker_path(dir, seq);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(WalError::Io { path, source: e }),
        _ => Ok(()),
    }
}

/// Segment files of a directory, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if let Some(seq) = segment_seq(&path) {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

struct Active {
    meta: SegmentMeta,
    file: File,
    /// When the first record went in: the age the shipper seals on.
    opened: Instant,
}

struct State {
    active: Option<Active>,
    sealed: BTreeMap<u64, SegmentMeta>,
    next_seq: u64,
    /// Bytes written to the active segment since its last fsync.
    dirty: bool,
    bytes_on_disk: u64,
    /// Rate limit for the "log full" error message.
    last_full_log: Option<Instant>,
}

struct Shared {
    dir: PathBuf,
    cfg: WalConfig,
    state: Mutex<State>,
    records_appended: AtomicU64,
    dropped_full: AtomicU64,
    torn_bytes_truncated: AtomicU64,
    quarantined: AtomicU64,
    /// Set (under the mutex) when the log is dropped, to stop the syncer.
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

/// The write-ahead log. `Send + Sync`: appends, seals and removals are
/// serialized by one mutex (appends come from one writer thread in the
/// gateway; the shipper's calls are short).
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    /// Holds the directory's advisory lock for the log's lifetime.
    _lock: File,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: recovers existing
    /// segments (see the module docs) and seals them all.
    pub fn open(dir: impl AsRef<Path>, cfg: WalConfig) -> Result<Wal> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // One writer (and one shipper) per directory: two would interleave
        // segments and break the shipper's exactly-once check. The kernel
        // releases the lock when the process dies, SIGKILL included.
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // A lock held for a moment is retried briefly: a process forked
        // between another open and its exec (Command::spawn in the same
        // program) holds a copy of the lock until it execs.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if tries < 20 => {
                    tries += 1;
                    // `open` is synchronous (the gateway opens its log once,
                    // at startup, before it serves): at most 0.5 s in all.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(fs::TryLockError::WouldBlock) => return Err(WalError::Locked { path: dir }),
                Err(fs::TryLockError::Error(e)) => {
                    return Err(WalError::Io {
                        path: lock_path,
                        source: e,
                    })
                }
            }
        }
        let segments = list_segments(&dir)?;
        let newest = segments.last().map(|(seq, _)| *seq);
        let mut sealed = BTreeMap::new();
        let mut bytes_on_disk = 0;
        let mut torn = 0;
        let mut quarantined = 0;
        for (seq, path) in segments {
            match recover_segment(
                &dir,
                seq,
                &path,
                Some(seq) == newest,
                cfg.keyring.as_deref(),
            )? {
                Recovered::Kept(meta, truncated) => {
                    torn += truncated;
                    bytes_on_disk += meta.bytes;
                    sealed.insert(seq, meta);
                }
                Recovered::Removed => {}
                Recovered::Quarantined => quarantined += 1,
            }
        }
        // Markers whose segment is gone (shipped and deleted, or quarantined,
        // before the marker's own removal): nothing left to replay.
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_some_and(|e| e == MARKER_EXT) {
                let seq = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok());
                if seq.is_none_or(|seq| !sealed.contains_key(&seq)) {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        if !sealed.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                segments = sealed.len(),
                bytes = bytes_on_disk,
                "write-ahead log has unshipped segments; they will be replayed"
            );
        }
        let state = State {
            active: None,
            sealed,
            next_seq: newest.map_or(1, |s| s + 1),
            dirty: false,
            bytes_on_disk,
            last_full_log: None,
        };
        let shared = Arc::new(Shared {
            dir,
            cfg,
            state: Mutex::new(state),
            records_appended: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            torn_bytes_truncated: AtomicU64::new(torn),
            quarantined: AtomicU64::new(quarantined),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        });
        let syncer = match shared.cfg.fsync {
            FsyncPolicy::IntervalMs(ms) => {
                let shared = Arc::clone(&shared);
                let every = Duration::from_millis(ms.max(1));
                Some(
                    std::thread::Builder::new()
                        .name("wal-fsync".into())
                        .spawn(move || sync_loop(&shared, every))
                        .map_err(io_err(Path::new("wal-fsync thread")))?,
                )
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(Wal {
            shared,
            syncer,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn config(&self) -> &WalConfig {
        &self.shared.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent enough
        // (at worst a byte count off); keep logging rather than cascade.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the quota still allows (`max_bytes` minus the segments on
    /// disk).
    pub fn room(&self) -> u64 {
        self.shared
            .cfg
            .max_bytes
            .saturating_sub(self.lock().bytes_on_disk)
    }

    /// `records` as frames of this log (sealed when it has a keyring), ready
    /// for [`Wal::append_frames`]. Needs no lock.
    pub fn encode(&self, records: &[Record]) -> Result<Frames> {
        Frames::encode(records, self.shared.cfg.keyring.as_deref())
    }

    /// Appends `records` as one batch: all of them are written (and, with
    /// `fsync = "always"`, synced) when this returns `Ok`, or none counts.
    /// Returns [`WalError::Full`] when the quota would be exceeded.
    pub fn append(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let frames = self.encode(records)?;
        self.append_frames(&[&frames])
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }

    /// Appends each batch of frames in order under one lock, each batch all
    /// or nothing as with [`Wal::append`], and with `fsync = "always"`
    /// syncs once for all of them (group commit, [`GroupCommit`]). Returns
    /// one result per batch, in order.
    pub fn append_frames(&self, batches: &[&Frames]) -> Vec<Result<()>> {
        let mut st = self.lock();
        let mut results: Vec<Result<()>> = batches
            .iter()
            .map(|frames| self.write_locked(&mut st, frames))
            .collect();
        if self.shared.cfg.fsync == FsyncPolicy::Always && results.iter().any(Result::is_ok) {
            if let Some(active) = st.active.as_ref() {
                if let Err(e) = active.file.sync_data() {
                    // Written but not durable: every batch of the group
                    // reports it (the records may still ship; ids keep that
                    // exactly once).
                    for r in results.iter_mut().filter(|r| r.is_ok()) {
                        *r = Err(WalError::Io {
                            path: active.meta.path.clone(),
                            source: io::Error::new(e.kind(), e.to_string()),
                        });
                    }
                }
            }
        }
        results
    }

    /// Appends one batch at once if the log is free and needs no fsync per
    /// append: `None` when another append holds the lock, or with `fsync =
    /// "always"` (whose appends are worth grouping). [`GroupCommit`]'s fast
    /// path: a write to the page cache costs microseconds, less than handing
    /// the batch to another thread on a busy machine.
    pub fn try_append_frames(&self, frames: &Frames) -> Option<Result<()>> {
        if self.shared.cfg.fsync == FsyncPolicy::Always {
            return None;
        }
        let mut st = match self.shared.state.try_lock() {
            Ok(st) => st,
            // As in `lock`: a panic under the lock leaves the state usable.
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.write_locked(&mut st, frames))
    }

    /// Writes one batch to the active segment (rotating or creating it as
    /// needed) under the lock the caller holds; no fsync.
    fn write_locked(&self, st: &mut State, frames: &Frames) -> Result<()> {
        let len = frames.buf.len() as u64;
        let cfg = &self.shared.cfg;
        let rotate = st
            .active
            .as_ref()
            .is_some_and(|a| a.meta.records > 0 && a.meta.bytes + len > cfg.segment_bytes);
        if rotate {
            self.seal_locked(st)?;
        }
        let needed = len
            + if st.active.is_none() {
                HEADER_LEN as u64
            } else {
                0
            };
        if st.bytes_on_disk + needed > cfg.max_bytes {
            self.shared
                .dropped_full
                .fetch_add(frames.records as u64, Ordering::Relaxed);
            let err = WalError::Full {
                records: frames.records,
                needed,
                on_disk: st.bytes_on_disk,
                max_bytes: cfg.max_bytes,
            };
            if st
                .last_full_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                st.last_full_log = Some(Instant::now());
                tracing::error!(
                    dropped_total = self.shared.dropped_full.load(Ordering::Relaxed),
                    "{err}; new events are being dropped until the shipper catches up"
                );
            }
            return Err(err);
        }
        let active = match st.active.take() {
            Some(active) => active,
            None => {
                let active = self.create_segment(st)?;
                st.bytes_on_disk += active.meta.bytes;
                active
            }
        };
        let active = st.active.insert(active);
        if let Err(e) = active.file.write_all(&frames.buf) {
            // Undo a partial write so the segment stays a sequence of whole
            // frames; if even that fails, open() truncates it later.
            let _ = active.file.set_len(active.meta.bytes);
            return Err(WalError::Io {
                path: active.meta.path.clone(),
                source: e,
            });
        }
        if active.meta.records == 0 {
            active.opened = Instant::now();
        }
        active.meta.bytes += len;
        active.meta.records += frames.records as u64;
        active.meta.note_ts(frames.min_ts);
        active.meta.note_ts(frames.max_ts);
        if matches!(cfg.fsync, FsyncPolicy::IntervalMs(_)) {
            st.dirty = true;
        }
        st.bytes_on_disk += len;
        self.shared
            .records_appended
            .fetch_add(frames.records as u64, Ordering::Relaxed);
        Ok(())
    }

    fn create_segment(&self, st: &mut State) -> Result<Active> {
        let seq = st.next_seq;
        st.next_seq += 1;
        let path = self.shared.dir.join(format!("{seq:020}.{SEGMENT_EXT}"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let magic = match self.shared.cfg.keyring {
            Some(_) => SEALED_SEGMENT_MAGIC,
            None => SEGMENT_MAGIC,
        };
        file.write_all(magic).map_err(io_err(&path))?;
        if self.shared.cfg.fsync != FsyncPolicy::Never {
            // Make the new name durable too, not only the data.
            file.sync_data().map_err(io_err(&path))?;
            sync_dir(&self.shared.dir)?;
        }
        Ok(Active {
            meta: SegmentMeta::new(seq, path),
            file,
            opened: Instant::now(),
        })
    }

    fn seal_locked(&self, st: &mut State) -> Result<()> {
        let Some(active) = st.active.take() else {
            return Ok(());
        };
        if self.shared.cfg.fsync != FsyncPolicy::Never {
            if let Err(e) = active.file.sync_data() {
                let path = active.meta.path.clone();
                st.active = Some(active);
                return Err(WalError::Io { path, source: e });
            }
        }
        st.dirty = false;
        if active.meta.records == 0 {
            // Nothing in it (can only happen after a failed first write).
            st.bytes_on_disk -= active.meta.bytes;
            let _ = fs::remove_file(&active.meta.path);
        } else {
            st.sealed.insert(active.meta.seq, active.meta);
        }
        Ok(())
    }

    /// Seals the active segment now, if it holds records.
    pub fn seal(&self) -> Result<()> {
        let mut st = self.lock();
        self.seal_locked(&mut st)
    }

    /// Seals the active segment if its first record is at least `age` old.
    /// Returns whether it sealed. The shipper calls this so a quiet log
    /// still ships within about `max_segment_age_ms`.
    pub fn seal_if_older(&self, age: Duration) -> Result<bool> {
        let mut st = self.lock();
        match &st.active {
            Some(a) if a.meta.records > 0 && a.opened.elapsed() >= age => {
                self.seal_locked(&mut st)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Sealed segments, oldest first.
    pub fn sealed_segments(&self) -> Vec<SegmentMeta> {
        self.lock().sealed.values().cloned().collect()
    }

    /// Durably marks sealed segments `seqs` as "insert started" (module
    /// docs). The shipper calls this before the first INSERT of their
    /// rows. Returns `true` when a marker was already there: an earlier
    /// attempt (this process or a previous one) may have inserted some of
    /// those segments, so their records must be checked against ClickHouse
    /// before they are inserted again.
    pub fn mark_shipping(&self, seqs: &[u64]) -> Result<bool> {
        {
            let st = self.lock();
            if let Some(&seq) = seqs.iter().find(|s| !st.sealed.contains_key(s)) {
                return Err(WalError::NotSealed { seq });
            }
        }
        // Outside the lock: the fsyncs must not stall appends. Only the
        // shipper (one per log) touches markers.
        let mut existed = false;
        let mut created = false;
        for &seq in seqs {
            let path = marker_path(&self.shared.dir, seq);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => {
                    f.sync_all().map_err(io_err(&path))?;
                    created = true;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => existed = true,
                Err(e) => return Err(WalError::Io { path, source: e }),
            }
        }
        if created {
            // Always synced, whatever the fsync policy: a segment that
            // survives an OS crash must not lose its marker. One directory
            // fsync per call.
            sync_dir(&self.shared.dir)?;
        }
        Ok(existed)
    }

    /// Deletes a shipped segment, then its shipping marker.
    pub fn remove_segment(&self, seq: u64) -> Result<()> {
        let mut st = self.lock();
        let btree_map::Entry::Occupied(entry) = st.sealed.entry(seq) else {
            return Err(WalError::NotSealed { seq });
        };
        let path = &entry.get().path;
        fs::remove_file(path).map_err(io_err(path))?;
        let meta = entry.remove();
        st.bytes_on_disk -= meta.bytes;
        drop(st);
        // After the segment: a crash in between (or a failure here) leaves
        // an orphan marker, which open() removes; it is harmless meanwhile
        // (sequence numbers are not reused while the log is open).
        if let Err(e) = remove_marker(&self.shared.dir, seq) {
            tracing::warn!(seq, error = %e, "could not remove a shipped segment's marker");
        }
        Ok(())
    }

    /// Moves a shipped segment that had corrupt regions to `quarantine/`
    /// (kept for inspection; no longer counted in the quota).
    pub fn quarantine_segment(&self, seq: u64) -> Result<PathBuf> {
        let mut st = self.lock();
        let btree_map::Entry::Occupied(entry) = st.sealed.entry(seq) else {
            return Err(WalError::NotSealed { seq });
        };
        let to = quarantine(&self.shared.dir, &entry.get().path)?;
        let meta = entry.remove();
        st.bytes_on_disk -= meta.bytes;
        self.shared.quarantined.fetch_add(1, Ordering::Relaxed);
        drop(st);
        if let Err(e) = remove_marker(&self.shared.dir, seq) {
            tracing::warn!(seq, error = %e, "could not remove a quarantined segment's marker");
        }
        Ok(to)
    }

    pub fn stats(&self) -> WalStats {
        let st = self.lock();
        let metas = || {
            st.sealed
                .values()
                .chain(st.active.as_ref().map(|a| &a.meta))
        };
        WalStats {
            bytes_on_disk: st.bytes_on_disk,
            max_bytes: self.shared.cfg.max_bytes,
            segments: metas().count() as u64,
            sealed_segments: st.sealed.len() as u64,
            records_pending: metas().map(|m| m.records).sum(),
            oldest_unshipped_ts_ms: metas().filter_map(|m| m.min_ts_ms).min(),
            records_appended: self.shared.records_appended.load(Ordering::Relaxed),
            dropped_full: self.shared.dropped_full.load(Ordering::Relaxed),
            torn_bytes_truncated: self.shared.torn_bytes_truncated.load(Ordering::Relaxed),
            quarantined_segments: self.shared.quarantined.load(Ordering::Relaxed),
        }
    }

    /// fsyncs the active segment now (whatever the policy). The segment
    /// counts as synced only once the fsync succeeded.
    pub fn sync(&self) -> Result<()> {
        let mut st = self.lock();
        let synced = match &st.active {
            Some(a) => a.file.sync_data().map_err(io_err(&a.meta.path)),
            None => Ok(()),
        };
        if synced.is_ok() {
            st.dirty = false;
        }
        synced
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.stop_cv.notify_all();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        if self.shared.cfg.fsync != FsyncPolicy::Never {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "final WAL fsync failed");
            }
        }
    }
}

/// The `interval_ms` policy: fsync the active segment when dirty. The sync
/// runs on a duplicate of the file handle, outside the lock, so appends do
/// not wait for the disk.
fn sync_loop(shared: &Shared, every: Duration) {
    let mut stop = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        stop = shared
            .stop_cv
            .wait_timeout(stop, every)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *stop {
            return;
        }
        if let Some((path, Err(e))) = sync_if_dirty(shared, File::sync_data) {
            tracing::warn!(path = %path.display(), error = %e, "WAL fsync failed; retrying at the next tick");
        }
    }
}

/// One pass of the `interval_ms` syncer: when the active segment is dirty,
/// `sync` it on a duplicate handle, outside the lock. The flag is cleared
/// before the fsync (an append during it marks the segment dirty again)
/// and set again if the fsync fails, so a failed fsync is retried rather
/// than taken for durability. Returns the segment and the outcome when it
/// synced.
fn sync_if_dirty(
    shared: &Shared,
    sync: impl FnOnce(&File) -> std::io::Result<()>,
) -> Option<(PathBuf, std::io::Result<()>)> {
    let (file, path) = {
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.dirty {
            return None;
        }
        st.dirty = false;
        let a = st.active.as_ref()?;
        (a.file.try_clone(), a.meta.path.clone())
    };
    let synced = file.and_then(|f| sync(&f));
    if synced.is_err() {
        shared.state.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
    }
    Some((path, synced))
}

/// Records encoded as log frames ([`Wal::encode`]), ready to append.
/// Encoding (JSON, sealed when the log has a key) needs no lock, so
/// [`GroupCommit`] does it on the caller's thread.
#[derive(Debug)]
pub struct Frames {
    buf: Vec<u8>,
    records: usize,
    min_ts: u64,
    max_ts: u64,
}

impl Frames {
    fn encode(records: &[Record], keys: Option<&Keyring>) -> Result<Frames> {
        let mut frames = Frames {
            buf: Vec::with_capacity(records.len() * 1024),
            records: records.len(),
            min_ts: u64::MAX,
            max_ts: 0,
        };
        for r in records {
            let mut payload = encode_payload(r)?;
            if let Some(k) = keys {
                payload = k
                    .seal(r.ts_ms(), &payload)
                    .map_err(|source| WalError::Seal {
                        id: r.id().to_owned(),
                        source,
                    })?;
            }
            if payload.len() > MAX_PAYLOAD_LEN {
                return Err(WalError::RecordTooLarge {
                    id: r.id().to_owned(),
                    len: payload.len(),
                    max: MAX_PAYLOAD_LEN,
                });
            }
            frame::encode_frame(&mut frames.buf, r.ts_ms(), &payload);
            frames.min_ts = frames.min_ts.min(r.ts_ms());
            frames.max_ts = frames.max_ts.max(r.ts_ms());
        }
        Ok(frames)
    }

    /// Bytes the batch takes in a segment.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
}

/// The JSON payload of a record. serde_json writes non-finite floats as
/// `null`, which would not read back into `f64`; such values (a bug
/// upstream) are written as 0 so the rest of the event survives.
fn encode_payload(r: &Record) -> Result<Vec<u8>> {
    let encode = |r: &Record| {
        serde_json::to_vec(r).map_err(|source| WalError::Encode {
            id: r.id().to_owned(),
            source,
        })
    };
    if has_non_finite(r) {
        tracing::warn!(
            id = r.id(),
            "event has a non-finite number; writing 0 instead"
        );
        let mut r = r.clone();
        zero_non_finite(&mut r);
        return encode(&r);
    }
    encode(r)
}

fn floats_mut(r: &mut Record) -> Vec<&mut f64> {
    match r {
        Record::Inference(e) => {
            let mut v = vec![&mut e.latency_ms, &mut e.overhead_ms, &mut e.cost_usd];
            v.extend(e.ttft_ms.as_mut());
            for a in &mut e.attempts {
                v.push(&mut a.latency_ms);
                v.push(&mut a.cost_usd);
                v.extend(a.ttft_ms.as_mut());
            }
            v
        }
        Record::Feedback(e) => match &mut e.value {
            crate::event::FeedbackValue::Float(f) => vec![f],
            _ => vec![],
        },
    }
}

fn has_non_finite(r: &Record) -> bool {
    // floats_mut needs &mut; a clone per record would cost more than this.
    match r {
        Record::Inference(e) => {
            ![
                e.latency_ms,
                e.overhead_ms,
                e.cost_usd,
                e.ttft_ms.unwrap_or(0.0),
            ]
            .iter()
            .all(|f| f.is_finite())
                || e.attempts.iter().any(|a| {
                    ![a.latency_ms, a.cost_usd, a.ttft_ms.unwrap_or(0.0)]
                        .iter()
                        .all(|f| f.is_finite())
                })
        }
        Record::Feedback(e) => {
            matches!(e.value, crate::event::FeedbackValue::Float(f) if !f.is_finite())
        }
    }
}

fn zero_non_finite(r: &mut Record) {
    for f in floats_mut(r) {
        if !f.is_finite() {
            *f = 0.0;
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn quarantine(dir: &Path, path: &Path) -> Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir).map_err(io_err(&qdir))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let to = qdir.join(format!("{name}.{}", crate::now_ms()));
    fs::rename(path, &to).map_err(io_err(path))?;
    tracing::error!(from = %path.display(), to = %to.display(), "WAL segment quarantined");
    Ok(to)
}

enum Recovered {
    /// Kept as a sealed segment; bytes of torn tail truncated.
    Kept(SegmentMeta, u64),
    Removed,
    Quarantined,
}

/// Opens one existing segment at startup. A sealed segment without a
/// keyring stops the open ([`WalError::NoKey`]): it could not ship.
fn recover_segment(
    dir: &Path,
    seq: u64,
    path: &Path,
    newest: bool,
    keys: Option<&Keyring>,
) -> Result<Recovered> {
    let buf = fs::read(path).map_err(io_err(path))?;
    if buf.len() < HEADER_LEN {
        // Created but the header never made it: nothing can be inside.
        fs::remove_file(path).map_err(io_err(path))?;
        return Ok(Recovered::Removed);
    }
    let Some(payloads) = Payloads::of(&buf) else {
        tracing::error!(path = %path.display(), "not a WAL segment (bad header)");
        quarantine(dir, path)?;
        return Ok(Recovered::Quarantined);
    };
    let scan = scan_segment(&buf, payloads.keys(keys, path)?);
    let mut len = buf.len();
    let mut truncated = 0;
    if let (true, Some((start, end))) = (newest, scan.tail) {
        // The write the crash interrupted. Whole frames before it are kept.
        tracing::warn!(path = %path.display(), bytes = end - start, "truncating torn WAL tail");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(start as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        truncated = (end - start) as u64;
        len = start;
    }
    if scan.frames.is_empty() && scan.corrupt.is_empty() && len == HEADER_LEN {
        fs::remove_file(path).map_err(io_err(path))?;
        return Ok(Recovered::Removed);
    }
    let mut meta = SegmentMeta::new(seq, path.to_owned());
    meta.bytes = len as u64;
    meta.records = scan.frames.len() as u64;
    for f in &scan.frames {
        meta.note_ts(f.ts_ms);
    }
    Ok(Recovered::Kept(meta, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed fsync leaves the segment dirty, so the next tick tries
    /// again; only a successful one clears it.
    #[test]
    fn a_failed_interval_fsync_is_retried_not_taken_for_durable() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            // The syncer thread must not run during the test.
            fsync: FsyncPolicy::IntervalMs(3_600_000),
            ..WalConfig::default()
        };
        let wal = Wal::open(dir.path(), cfg).unwrap();
        let thumbs = crate::event::FeedbackEvent {
            id: crate::event::FeedbackEvent::new_id(),
            ts_ms: 1,
            tenant: "t".into(),
            target: crate::event::FeedbackTarget::inference("i"),
            route: "r".into(),
            variant: "v".into(),
            metric: "thumbs_up".into(),
            value: crate::event::FeedbackValue::Boolean(true),
            tags: Default::default(),
            idempotency_key: None,
            source: crate::event::feedback_source::API.into(),
        };
        wal.append(&[Record::Feedback(thumbs)]).unwrap();
        let dirty = || wal.shared.state.lock().unwrap().dirty;
        assert!(dirty());
        let failed = sync_if_dirty(&wal.shared, |_| Err(std::io::Error::other("EIO")));
        assert!(matches!(failed, Some((_, Err(_)))));
        assert!(dirty(), "a failed fsync cleared the dirty flag");
        let synced = sync_if_dirty(&wal.shared, |f| f.sync_data());
        assert!(matches!(synced, Some((_, Ok(())))));
        assert!(!dirty());
        assert!(sync_if_dirty(&wal.shared, |_| unreachable!("clean")).is_none());
    }
}
