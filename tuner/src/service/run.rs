//! A run's stages, and what the service does next, decided from the run's
//! journal alone: a restarted service reads the journal and carries on
//! where it stopped, without losing or repeating a stage.
//!
//! A run goes dataset → train → deploy → gate → canary: the candidate is
//! deployed (into a slot variant that gets no traffic) before the gate, so
//! the gate measures it through the gateway exactly as users will reach
//! it, retries and metering included. Each stage is
//! journaled when it starts and when it ends. After a restart, a stage that
//! started and did not end is resumed; every stage is written to be
//! resumed safely: the dataset is rebuilt into the run's own directory
//! with the run's fixed time window, training continues from its last
//! checkpoint, the gate is re-evaluated, the deploy first asks each engine
//! whether the run's version is already loaded (so a version is never
//! deployed twice), and the canary experiment's id is derived from the run
//! id (so it is created once and then only followed).
//!
//! A run ends in one [`Outcome`]. A stage that fails, or a candidate that
//! the gate rejects, ends the run; if the deploy stage had started, the
//! version is first unloaded from the engines (no orphan versions), and
//! that cleanup is journaled too. A canary that rolls back is cleaned up by
//! the canary controller itself (it unloads the candidate).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Dataset,
    Train,
    Deploy,
    Gate,
    Canary,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Dataset,
        Stage::Train,
        Stage::Deploy,
        Stage::Gate,
        Stage::Canary,
    ];

    /// The stage after this one; `None` after the canary.
    pub fn next(self) -> Option<Stage> {
        let i = Stage::ALL.iter().position(|s| *s == self)?;
        Stage::ALL.get(i + 1).copied()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The canary promoted the new version.
    Promoted,
    /// The canary rolled it back.
    RolledBack,
    /// The offline gate rejected the candidate; nothing was deployed.
    Rejected,
    /// Too little data for a run; nothing was trained.
    Skipped,
    /// A stage failed (the journal has the stage and the reason).
    Failed,
}

/// One journal entry of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        stage: Stage,
    },
    /// The stage did its work; `detail` is its lineage (dataset counts,
    /// training summary and checkpoint, gate table, version name,
    /// experiment id).
    Finished {
        stage: Stage,
        #[serde(default)]
        detail: serde_json::Value,
    },
    /// The stage ends the run without an error: too little data (dataset:
    /// skipped), a candidate the gate rejects (gate: rejected), or the
    /// canary's verdict (promoted or rolled back).
    Concluded {
        stage: Stage,
        outcome: Outcome,
        reason: String,
    },
    Failed {
        stage: Stage,
        reason: String,
    },
    /// The run's version was unloaded from the engines after a failure.
    CleanedUp,
    Ended {
        outcome: Outcome,
    },
}

/// What the service does next for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start the stage (journal `Started` first).
    Start(Stage),
    /// The stage started and never ended (the service stopped): run it
    /// again, resuming what it can.
    Resume(Stage),
    /// Unload the run's version from the engines, then end as `then`.
    CleanUp { then: Outcome },
    /// Journal `Ended` with this outcome.
    End(Outcome),
    /// The run is over.
    Done(Outcome),
}

/// The next step of a run from its journal, in order.
pub fn next(journal: &[Event]) -> Next {
    let mut current: Option<(Stage, bool)> = None; // (stage, finished)
    let mut deploy_started = false;
    let mut ending: Option<Outcome> = None;
    let mut cleaned = false;
    for e in journal {
        match e {
            Event::Ended { outcome } => return Next::Done(*outcome),
            Event::Started { stage } => {
                deploy_started |= *stage == Stage::Deploy;
                current = Some((*stage, false));
            }
            Event::Finished { stage, .. } => current = Some((*stage, true)),
            Event::Concluded { outcome, .. } => ending = Some(*outcome),
            Event::Failed { .. } => ending = Some(Outcome::Failed),
            Event::CleanedUp => cleaned = true,
        }
    }
    if let Some(outcome) = ending {
        // Only a run that stopped before its canary leaves its version
        // loaded: the controller unloads a rolled-back one, and a promoted
        // one serves.
        let orphan =
            deploy_started && !cleaned && matches!(outcome, Outcome::Failed | Outcome::Rejected);
        return if orphan {
            Next::CleanUp { then: outcome }
        } else {
            Next::End(outcome)
        };
    }
    match current {
        None => Next::Start(Stage::Dataset),
        Some((stage, false)) => Next::Resume(stage),
        Some((stage, true)) => match stage.next() {
            Some(s) => Next::Start(s),
            // A canary's end is `Concluded`; finished without one, it is
            // followed again until it concludes.
            None => Next::Resume(Stage::Canary),
        },
    }
}

#[cfg(test)]
#[path = "tests/run.rs"]
mod tests;
