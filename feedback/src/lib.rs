//! Flywheel's event model and its lossless capture into ClickHouse.
//!
//! ```text
//! gateway ──append──▶ WAL (local segments) ──shipper──▶ ClickHouse
//!                                                        inferences, attempts, feedback
//!                                                        ─MV─▶ per-minute rollups
//! ```
//!
//! * [`event`]: what is recorded ([`InferenceEvent`], [`FeedbackEvent`],
//!   [`Record`]).
//! * [`wal`]: the write-ahead log. Every event is appended (written to the
//!   file) before anything else happens to it; segments are deleted only
//!   after ClickHouse accepted them. Quota policy when the disk budget is
//!   used up: new events are refused and counted ([`wal`] docs).
//! * [`shipper`]: the background task that ships sealed segments, retrying
//!   forever with capped backoff while ClickHouse is down.
//! * [`store`]: ClickHouse connection, migrations, row types.
//! * [`queries`]: the analytics reads (dashboards, feedback auth, canary).
//! * [`retention`]: month-partition drops that keep what training needs.
//! * [`Capture`]: WAL + shipper wired from a [`CaptureConfig`], what the
//!   gateway starts.
//!
//! # Exactly once
//!
//! The pipeline is at-least-once by construction: a segment is deleted
//! only after all its inserts succeeded, so a crash (or SIGKILL, or a
//! timeout whose INSERT did commit) between insert and delete replays the
//! segment. Replays are made idempotent at three levels:
//!
//! 1. **An "insert started" marker per segment.** Before the first INSERT
//!    of any row of a sealed segment, the shipper creates
//!    `{seq}.shipping` next to it and fsyncs the directory (always, even
//!    with `fsync = "never"`); the marker is deleted only after the segment
//!    file ([`wal`] docs). So every segment of which a row may be in
//!    ClickHouse has a marker, and a segment without one has never been
//!    inserted from. [`Wal::mark_shipping`] reports whether the marker was
//!    already there: after a crash, or after any failed round in this
//!    process (a timeout or a cut connection is ambiguous: the INSERT may
//!    have committed), the retry finds it.
//! 2. **Before inserting, the shipper drops records whose id ClickHouse
//!    already has** ([`shipper::ship_rows`]: `SELECT id … WHERE id IN
//!    (…)`), for inferences only when a marker of the batch's segments was
//!    already there ([`shipper::ExistenceCheck`]), for feedback always:
//!    feedback ids derived from client idempotency keys may repeat across
//!    segments, while an inference id is minted once per request and
//!    appended once, so it can be in ClickHouse only if its segment was
//!    shipped from before. Ids repeated within a batch are dropped too
//!    (a batch is one or more whole segments). This keeps the
//!    materialized-view rollups exact: a view fires on every INSERT and
//!    cannot be deduplicated after the fact, so a replayed row must never
//!    be inserted. Attempts are inserted before their inference, so "id
//!    present in `inferences`" implies the whole event is stored.
//! 3. **Base tables are `ReplacingMergeTree` keyed by id** and every read of
//!    them in [`queries`] uses `FINAL`, so a duplicate that got past (2)
//!    counts once in those reads (merges also remove it on disk).
//!
//! Skipping the check on fresh segments is what makes shipping fast (the
//! `IN` lookup cost about as much as the inserts); writing markers early
//! is always safe (the shipper marks the next group while the current one
//! is inserted: at worst a retry checks a group it did not need to).
//!
//! 4. **No check while an INSERT given up on still runs.** An INSERT
//!    that the client abandoned (timeout, cut connection, crash) may still
//!    be running on the server and commit *after* a retry's existence
//!    check, which would then insert its rows again and make the rollups
//!    count them twice. Every INSERT carries a `query_id` starting with
//!    `flywheel-insert-{database}-`, and before an existence check of
//!    inferences (a replay) the shipper waits until `system.processes`
//!    lists none ([`store::Store::await_inserts_in_flight`]); past the
//!    insert timeout it gives up the round and backs off. Test:
//!    `tests/shipper.rs`, `an_insert_that_commits_after_its_timeout_is_not_inserted_again`.
//!    What is left: ClickHouse 18.16 lists an HTTP INSERT only once it
//!    has read the first `max_query_size` (256 KiB) of the body, or all of
//!    a smaller one, so an INSERT whose body is still on its way (a
//!    middlebox that keeps delivering after the client gave up) is not
//!    waited for; the client closing its connection normally aborts it.
//!    Two shippers on one database wait on each other's INSERTs (only a
//!    wait).
//!
//! # Throughput
//!
//! Sealed segments are shipped in groups of up to `batch_rows` records
//! (default 100000) and `batch_bytes` (64 MiB): one INSERT per table per
//! group, because on 18.16 every INSERT writes a new part (two files per
//! column, ~150 files for inferences + attempts + rollup) and file
//! creation dominated the server's CPU with 8700-row inserts. The next
//! group is marked, read, decoded and turned into rows (strings moved, not
//! copied) on blocking threads while the current one is inserted.
//! `cargo bench -p flywheel-feedback --bench ship` measures it.
//!
//! # ClickHouse 18.16
//!
//! The server is 18.16.1: no DateTime64/Map/JSON/Bool/TTL/LowCardinality, no
//! `ADD COLUMN IF NOT EXISTS`, no server-side query parameters, and the
//! client must run with validation off (so the row types are pinned by the
//! schema round-trip tests). See [`store`].

pub mod capture;
pub mod config;
pub mod event;
pub mod queries;
pub mod retention;
pub mod sealed_file;
pub mod shipper;
pub mod store;
pub mod wal;

pub use capture::{Capture, CaptureError, CaptureStats};
pub use config::{CaptureConfig, WhenLogRefuses};
pub use event::{
    feedback_source, AttemptEvent, AttemptOutcome, AttemptSummary, FeedbackEvent, FeedbackTarget,
    FeedbackValue, InferenceEvent, Record, Validation,
};
pub use queries::{
    InferenceOwner, MetricStats, MinutePoint, TimeWindow, VariantComparison, VariantSummary,
};
pub use shipper::{
    BodiesPolicy, Shipper, ShipperConfig, ShipperHandle, ShipperStats, ShutdownReport,
};
pub use store::{Store, StoreConfig, StoreError};
pub use wal::{FsyncPolicy, Wal, WalConfig, WalError, WalStats};

/// Unix time now, milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
