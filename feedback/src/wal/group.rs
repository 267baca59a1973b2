//! Group commit: one thread appends to the log for every request.
//!
//! Before, each request appended its event itself, on a tokio worker, under
//! the log's lock: under load the workers queued on that lock and on the
//! write (and with `fsync = "always"` on one fsync each), and a stalled disk
//! froze every worker, `/health` included. Now a request encodes its records
//! (on its own thread, no lock), hands them to the writer thread and awaits
//! the outcome without holding a worker. The writer takes everything queued
//! since its last write as one group: one lock, one `write` per batch and,
//! with `fsync = "always"`, one fsync for the whole group.
//!
//! Fast path: without `fsync = "always"`, a request that finds the log free
//! (`try_lock`) writes its batch itself. That write goes to the page cache
//! and costs microseconds; a hand-off to the writer thread costs two thread
//! wake-ups, which on a busy 2-core box cost more (BENCHMARKS §1). Under
//! contention, and always with `fsync = "always"`, batches go to the writer:
//! no request waits on the lock or on the disk while holding a worker,
//! except the one whose own page-cache write stalls.
//!
//! What each policy promises is unchanged, because a request still gets its
//! answer only after its records are written (`await` on [`GroupCommit::append`]):
//! - every policy: a killed process (SIGKILL, panic) loses no answered
//!   request's event: it is in the file, in the page cache;
//! - `fsync = "always"`: it is also on disk, so a kernel crash or power loss
//!   loses none either;
//! - `interval_ms = N`: a kernel crash or power loss loses at most the last
//!   N ms;
//! - `never`: a kernel crash or power loss may lose what the OS had not yet
//!   written back.
//!
//! A request that goes away while it waits does not take its records back:
//! they are written with their group.

use std::{
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use tokio::sync::oneshot;

use super::{Frames, Result, Wal, WalError};
use crate::event::Record;

/// Most batches in one group: bounds the time the last one of a burst waits
/// for the others' writes.
const MAX_GROUP: usize = 1024;

struct Job {
    frames: Frames,
    done: oneshot::Sender<Result<()>>,
}

/// The writer thread of a [`Wal`] and the queue to it.
pub struct GroupCommit {
    wal: Arc<Wal>,
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the writer thread (`flywheel-wal-writer`).
    pub fn start(wal: Arc<Wal>) -> std::io::Result<GroupCommit> {
        let (tx, rx) = mpsc::channel::<Job>();
        let log = Arc::clone(&wal);
        let writer = std::thread::Builder::new()
            .name("flywheel-wal-writer".into())
            .spawn(move || {
                // Ends when every sender is gone and the queue is empty.
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let batches: Vec<&Frames> = group.iter().map(|job| &job.frames).collect();
                    let results = log.append_frames(&batches);
                    for (job, result) in group.into_iter().zip(results) {
                        // The request may have gone away: its records are
                        // written all the same.
                        let _ = job.done.send(result);
                    }
                }
            })?;
        Ok(GroupCommit {
            wal,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Appends `records` as one batch, all or nothing, as [`Wal::append`]
    /// does, and returns once the group it joined is written (and synced,
    /// with `fsync = "always"`). Never blocks the calling thread.
    pub async fn append(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or(WalError::Closed)?;
        let frames = self.wal.encode(records)?;
        if let Some(written) = self.wal.try_append_frames(&frames) {
            return written;
        }
        let (done, outcome) = oneshot::channel();
        if tx.send(Job { frames, done }).is_err() {
            return Err(WalError::Closed);
        }
        // The writer answers every job it takes; a lost answer means it
        // stopped (a panic), and the records are not known to be written.
        outcome.await.unwrap_or(Err(WalError::Closed))
    }

    /// Stops taking records, and waits until the writer has written every
    /// batch handed over before (blocking: call it off the runtime).
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the WAL writer thread panicked");
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.close();
    }
}
