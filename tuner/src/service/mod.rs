//! The tuner service (`flywheel-tuner serve`, issue 16): jobs that turn a
//! route's captured traffic into a new model version and canary it without
//! a person:
//!
//! - [`config`]: the `[tuner]` TOML, parsed as written and then validated
//!   into [`config::Job`]s (`flywheel-tuner jobs --config FILE` checks a
//!   file and prints what each job would do).
//! - [`trigger`]: when a job runs (schedule, new rows, minimum interval, one
//!   training at a time), a pure decision.
//! - [`run`]: a run's stages (dataset → train → gate → deploy → canary) and
//!   what comes next after each journal entry, restarts and failures
//!   included, a pure decision too.
//!
//! - [`gate`]: the offline gate's verdict over the candidate's, the
//!   incumbent's and the chain's graded held-out answers, with its table.
//! - [`journal`]: each run's journal on disk (appended and synced before the
//!   service acts), read back after a restart; `flywheel-tuner runs` lists
//!   the runs and prints a run's story.
//! - [`stages`]: what each stage does (dataset, training in a child
//!   process, deploy behind a slot alias, the gate through the gateway,
//!   the canary experiment) and the cleanup of a failed run.
//! - [`serve`]: the loop (`flywheel-tuner serve`): one task per job, the
//!   training lock, online grading.

pub mod config;
pub mod gate;
pub mod journal;
pub mod run;
pub mod serve;
pub mod stages;
pub mod trigger;
