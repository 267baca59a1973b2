//! The tuner service's runs, read from its journal on disk
//! (`--tuner-state`, the service's `state_dir`): the journal is the
//! service's record of truth, so the page shows exactly what
//! `flywheel-tuner runs` shows.

use std::path::{Path, PathBuf};

use flywheel_tuner::service::{
    journal::{describe, state, Journal, JournalError, RunSummary},
    run::{Event, Next, Stage},
};
use serde::Serialize;

/// A run, as `/api/runs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub run: String,
    pub job: String,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Where it stands (`before train`, `in canary`, `promoted`, …).
    pub state: String,
    /// How it ended; None while it runs.
    pub outcome: Option<String>,
    /// The model version it deployed, once deployed.
    pub version: Option<String>,
    /// The canary experiment it started (filled in by the caller, from the
    /// experiments' origin `tuner:RUN`).
    pub experiment: Option<String>,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventLine {
    pub at_ms: u64,
    pub text: String,
}

/// The journal under a state directory, opened per call (the service
/// creates runs while the dashboards serve).
#[derive(Debug, Clone)]
pub struct Runs {
    state_dir: PathBuf,
}

impl Runs {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
        }
    }

    /// None while the service has never run there (no `runs/` yet): the
    /// dashboards only read, they do not create the service's folders.
    fn journal(&self) -> Result<Option<Journal>, JournalError> {
        if !self.state_dir.join("runs").is_dir() {
            return Ok(None);
        }
        Journal::open(&self.state_dir).map(Some)
    }

    /// Every run, newest first. Blocking file I/O.
    pub fn list(&self) -> Result<Vec<RunInfo>, JournalError> {
        let Some(journal) = self.journal()? else {
            return Ok(Vec::new());
        };
        journal
            .runs()?
            .into_iter()
            .map(|s| {
                let events: Vec<Event> =
                    journal.read(&s.id)?.into_iter().map(|r| r.event).collect();
                Ok(info(&s, &events))
            })
            .collect()
    }

    /// A run and its journal, oldest first. Blocking file I/O.
    pub fn read(&self, run: &str) -> Result<(RunInfo, Vec<EventLine>), JournalError> {
        let journal = self
            .journal()?
            .ok_or_else(|| JournalError::NoSuchRun(run.to_owned()))?;
        let summary = journal
            .runs()?
            .into_iter()
            .find(|s| s.id == run)
            .ok_or_else(|| JournalError::NoSuchRun(run.to_owned()))?;
        let records = journal.read(run)?;
        let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
        let lines = records
            .iter()
            .map(|r| EventLine {
                at_ms: r.at_ms,
                text: describe(&r.event),
            })
            .collect();
        Ok((info(&summary, &events), lines))
    }
}

fn lower<T: Serialize>(x: &T) -> Option<String> {
    serde_json::to_value(x)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn info(s: &RunSummary, events: &[Event]) -> RunInfo {
    let version = events.iter().rev().find_map(|e| match e {
        Event::Finished {
            stage: Stage::Deploy,
            detail,
        } => detail
            .get("version")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        _ => None,
    });
    RunInfo {
        run: s.id.clone(),
        job: s.job.clone(),
        started_ms: s.started_ms,
        updated_ms: s.last_ms,
        state: state(&s.next),
        outcome: match &s.next {
            Next::Done(o) => lower(o),
            _ => None,
        },
        version,
        experiment: None,
    }
}

#[cfg(test)]
mod tests {
    use flywheel_tuner::service::run::Outcome;

    use super::*;

    #[test]
    fn lists_and_reads_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path());
        assert!(runs.list().unwrap().is_empty());
        assert!(!dir.path().join("runs").exists(), "reading creates nothing");
        let j = Journal::open(dir.path()).unwrap();
        let id = j.new_run("demo", 1000).unwrap();
        j.append(
            &id,
            1001,
            Event::Started {
                stage: Stage::Deploy,
            },
        )
        .unwrap();
        j.append(
            &id,
            1002,
            Event::Finished {
                stage: Stage::Deploy,
                detail: serde_json::json!({"version": "demo-v1"}),
            },
        )
        .unwrap();
        j.append(
            &id,
            1003,
            Event::Ended {
                outcome: Outcome::Promoted,
            },
        )
        .unwrap();
        let list = runs.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].run, "demo-1000");
        assert_eq!(list[0].version.as_deref(), Some("demo-v1"));
        assert_eq!(list[0].outcome.as_deref(), Some("promoted"));
        assert_eq!(list[0].updated_ms, 1003);
        let (info, lines) = runs.read(&id).unwrap();
        assert_eq!(info, list[0]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].text, "deploy started");
        assert!(matches!(
            runs.read("nope-1"),
            Err(JournalError::NoSuchRun(_))
        ));
    }
}
