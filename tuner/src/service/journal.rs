//! The service's journal: what happened to each run, on disk.
//!
//! Each run has a directory, `<state_dir>/runs/<run id>/`, which holds its
//! stages' outputs (the dataset, the training run, the gate's report) and
//! `journal.jsonl`, one [`Record`] per line: the time and the run's
//! [`Event`]. The service appends an event and syncs it to disk before it
//! acts on it, so after a crash or a restart the journal says exactly which
//! stage started and which ended, and [`super::run::next`] decides from it
//! alone. A crash in the middle of an append leaves a torn last line: it is
//! ignored when read and cut off before the next append. Any other line
//! that does not parse is an error naming the file and line: a journal is
//! never guessed at.
//!
//! Run ids are `<job>-<start time in ms>`, so a directory listing shows the
//! job and sorts each job's runs by age.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::run::{self, Event, Next, Outcome, Stage};

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: not a journal record: {source}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("no run {0:?} in the journal")]
    NoSuchRun(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One line of a run's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the event was recorded, ms since the epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// What `runs` lists about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub job: String,
    pub started_ms: u64,
    pub last_ms: u64,
    /// What the service would do next, or how the run ended.
    pub next: Next,
}

/// The journals of every run under a state directory.
pub struct Journal {
    root: PathBuf,
    /// Summaries of the runs that ended. An ended run's journal never
    /// changes, and the service lists the runs at every poll: without this,
    /// each poll would re-read every journal the service ever wrote.
    ended: parking_lot::Mutex<std::collections::HashMap<String, RunSummary>>,
}

impl Journal {
    /// The journal under `state_dir` (created if missing).
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let root = state_dir.join("runs");
        fs::create_dir_all(&root).map_err(io_error(&root))?;
        Ok(Journal {
            root,
            ended: Default::default(),
        })
    }

    /// The directory of a run: its journal and its stages' outputs.
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join(run)
    }

    /// A new run of `job` starting at `now_ms`; its directory is created.
    pub fn new_run(&self, job: &str, now_ms: u64) -> Result<String, JournalError> {
        // Two runs of a job in the same millisecond only in tests; take the next ms.
        let mut ms = now_ms;
        loop {
            let id = format!("{job}-{ms}");
            let dir = self.run_dir(&id);
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ms += 1,
                Err(e) => return Err(io_error(&dir)(e)),
            }
        }
    }

    fn file(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("journal.jsonl")
    }

    /// Appends an event and syncs it to disk.
    pub fn append(&self, run: &str, at_ms: u64, event: Event) -> Result<(), JournalError> {
        let path = self.file(run);
        if !self.run_dir(run).is_dir() {
            return Err(JournalError::NoSuchRun(run.to_string()));
        }
        cut_torn_tail(&path)?;
        let mut line =
            serde_json::to_string(&Record { at_ms, event }).map_err(|e| JournalError::Io {
                path: path.clone(),
                source: io::Error::other(e),
            })?;
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        f.write_all(line.as_bytes()).map_err(io_error(&path))?;
        f.sync_data().map_err(io_error(&path))
    }

    /// A run's records, oldest first.
    pub fn read(&self, run: &str) -> Result<Vec<Record>, JournalError> {
        if !self.run_dir(run).is_dir() {
            return Err(JournalError::NoSuchRun(run.to_string()));
        }
        let path = self.file(run);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error(&path)(e)),
        };
        // Only complete lines: a torn last one was never acted on.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|source| JournalError::Corrupt {
                    path: path.clone(),
                    line: i + 1,
                    source,
                })
            })
            .collect()
    }

    /// Every run, newest first (a run with an unreadable journal is an
    /// error, not left out).
    pub fn runs(&self) -> Result<Vec<RunSummary>, JournalError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_error(&self.root))? {
            let entry = entry.map_err(io_error(&self.root))?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some((job, started)) = id.rsplit_once('-') else {
                continue;
            };
            let Ok(started_ms) = started.parse::<u64>() else {
                continue;
            };
            if let Some(summary) = self.ended.lock().get(&id) {
                out.push(summary.clone());
                continue;
            }
            let records = self.read(&id)?;
            let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
            let summary = RunSummary {
                job: job.to_string(),
                started_ms,
                last_ms: records.last().map_or(started_ms, |r| r.at_ms),
                next: run::next(&events),
                id,
            };
            if matches!(summary.next, Next::Done(_)) {
                self.ended
                    .lock()
                    .insert(summary.id.clone(), summary.clone());
            }
            out.push(summary);
        }
        out.sort_by(|a, b| (b.started_ms, &b.id).cmp(&(a.started_ms, &a.id)));
        Ok(out)
    }
}

/// Cuts a torn last line (a crash in the middle of an append) so the next
/// record starts on a line of its own.
fn cut_torn_tail(path: &Path) -> Result<(), JournalError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    f.set_len(keep as u64).map_err(io_error(path))?;
    f.sync_data().map_err(io_error(path))
}

/// One line of a run's story: what the record says, for a terminal.
pub fn describe(event: &Event) -> String {
    let (stage, outcome) = (lower::<Stage>, lower::<Outcome>);
    match event {
        Event::Started { stage: s } => format!("{} started", stage(s)),
        Event::Finished { stage: s, detail } if detail.is_null() => {
            format!("{} finished", stage(s))
        }
        Event::Finished { stage: s, detail } => format!("{} finished: {detail}", stage(s)),
        Event::Concluded {
            stage: s,
            outcome: o,
            reason,
        } => format!("{} concluded {}: {reason}", stage(s), outcome(o)),
        Event::Failed { stage: s, reason } => format!("{} FAILED: {reason}", stage(s)),
        Event::CleanedUp => "the run's version was unloaded from the engines".to_string(),
        Event::Ended { outcome: o } => format!("ended: {}", outcome(o)),
    }
}

/// Where a run stands, for `runs`.
pub fn state(next: &Next) -> String {
    match next {
        Next::Done(o) => lower(o),
        Next::Start(s) => format!("before {}", lower(s)),
        Next::Resume(s) => format!("in {}", lower(s)),
        Next::CleanUp { .. } => "cleaning up".to_string(),
        Next::End(o) => format!("ending {}", lower(o)),
    }
}

/// A stage's or outcome's name as the journal spells it (`dataset`, `rolled_back`).
fn lower<T: Serialize>(x: &T) -> String {
    serde_json::to_value(x)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "tests/journal.rs"]
mod tests;
