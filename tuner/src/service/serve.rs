//! `flywheel-tuner serve`: one task per job that starts runs when their
//! trigger fires and drives each run through its stages from its journal
//! ([`super::run::next`]), plus one online grading task per job (its
//! scores are the canary's default quality).
//!
//! One training at a time on a machine: the training stage holds a lock,
//! so a job whose run reaches training while another trains waits there.
//! A run whose canary is still deciding is looked at again every poll;
//! meanwhile the job starts no other run (one run per job at a time). On
//! shutdown the tasks stop where they are (a trainer child is killed); the
//! journal tells the next start where to carry on.

use std::{future::Future, sync::Arc, time::Duration};

use flywheel_feedback::{now_ms, Store};
use parking_lot::Mutex;

use super::{
    config::{grader_metric, Job},
    journal::{self, Journal, JournalError},
    run::{self, Event, Next, Stage},
    stages::{self, Deps, RunCtx, StageEnd, StageError},
    trigger::{self, Decision, JobHistory},
};
use crate::online::{OnlineGrader, Settings as OnlineSettings};

/// The time of day for log lines, `03:01:59`.
pub fn clock() -> String {
    let s = now_ms() / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("{} {}", clock(), format!($($arg)*)) };
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("ClickHouse: {0}")]
    ClickHouse(String),
    #[error("{0}")]
    Stage(String),
}

/// The service's shared state.
struct Service {
    deps: Deps,
    journal: Journal,
    /// Held by the run that is training; the job's name while it does.
    training: tokio::sync::Mutex<()>,
    training_job: Mutex<Option<String>>,
    started_ms: u64,
}

/// Runs every job until `shutdown` completes.
pub async fn serve(deps: Deps, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let journal = Journal::open(&deps.config.state_dir)?;
    deps.store
        .migrate()
        .await
        .map_err(|e| ServeError::ClickHouse(e.to_string()))?;
    let svc = Arc::new(Service {
        deps,
        journal,
        training: tokio::sync::Mutex::new(()),
        training_job: Mutex::new(None),
        started_ms: now_ms(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for job in svc.deps.config.jobs.clone() {
        say!(
            "job {}: route {}, trigger {:?}",
            job.name,
            job.route,
            job.trigger
        );
        if job.online_grading.fraction > 0.0 {
            let grader = online_grader(&svc.deps, &job)?;
            let every = Duration::from_secs(job.online_grading.interval_secs);
            tasks.spawn(grade_online(grader, every, job.name.clone()));
        }
        tasks.spawn(job_loop(svc.clone(), job));
    }
    shutdown.await;
    say!("shutting down: runs carry on from their journals at the next start");
    tasks.shutdown().await;
    Ok(())
}

fn online_grader(deps: &Deps, job: &Job) -> Result<OnlineGrader, ServeError> {
    let stage_err = |e: String| ServeError::Stage(format!("job {}: {e}", job.name));
    let text = std::fs::read_to_string(&job.grader)
        .map_err(|e| stage_err(format!("reading {}: {e}", job.grader.display())))?;
    let config = serde_json::from_str(&text).map_err(|e| stage_err(e.to_string()))?;
    let grader = crate::grader::Grader::from_config_with(&config, &deps.grader_options)
        .map_err(|e| stage_err(format!("invalid grader: {e}")))?;
    let settings = OnlineSettings {
        route: job.route.clone(),
        metric: grader_metric(&job.name),
        fraction: job.online_grading.fraction,
        lookback: Duration::from_secs(6 * 3600),
        batch: 64,
    };
    OnlineGrader::new(deps.store.clone(), Arc::new(grader), settings)
        .map_err(|e| stage_err(e.to_string()))
}

async fn grade_online(mut grader: OnlineGrader, every: Duration, job: String) {
    grader
        .run(every, std::future::pending(), |pass| match pass {
            Ok(p) if p.graded > 0 => {
                say!("{}", p.summary(&job, &grader_metric(&job)))
            }
            Ok(_) => {}
            Err(e) => say!("job {job}: online grading failed: {e}"),
        })
        .await;
}

async fn job_loop(svc: Arc<Service>, job: Job) {
    let poll = Duration::from_secs(svc.deps.config.poll_secs);
    let mut last_said = String::new();
    loop {
        match svc.tick(&job).await {
            Ok(Some(state)) if state != last_said => {
                say!("job {}: {state}", job.name);
                last_said = state;
            }
            Ok(_) => {}
            Err(e) => say!(
                "job {}: {e} (trying again in {}s)",
                job.name,
                poll.as_secs()
            ),
        }
        tokio::time::sleep(poll).await;
    }
}

impl Service {
    /// One look at a job: carry its unfinished run on, or start one if its
    /// trigger fires. Returns what it waits for, to be logged when it
    /// changes.
    async fn tick(&self, job: &Job) -> Result<Option<String>, ServeError> {
        let runs = self.journal.runs()?;
        let mine: Vec<_> = runs.iter().filter(|r| r.job == job.name).collect();
        if let Some(r) = mine.first().filter(|r| !matches!(r.next, Next::Done(_))) {
            return self.drive(job, &r.id).await;
        }
        let last_start_ms = mine.first().map(|r| r.started_ms);
        let since = last_start_ms.unwrap_or(self.started_ms);
        let history = JobHistory {
            first_seen_ms: self.started_ms,
            last_start_ms,
            new_rows: new_rows(&self.deps.store, &job.route, since).await?,
        };
        let training = self.training_job.lock().clone();
        let now = now_ms();
        match trigger::decide(&job.trigger, &history, now, training.as_deref()) {
            Decision::Run(due) => {
                let id = self.journal.new_run(&job.name, now)?;
                say!("job {}: run {id} starts ({due:?})", job.name);
                self.drive(job, &id).await
            }
            Decision::NotDue { recheck_at_ms } => {
                let mut waits = Vec::new();
                if job.trigger.new_rows > 0 {
                    waits.push(format!(
                        "{} of {} new rows",
                        history.new_rows, job.trigger.new_rows
                    ));
                }
                if let Some(at) = recheck_at_ms {
                    waits.push(format!(
                        "the schedule in {}s",
                        at.saturating_sub(now) / 1000
                    ));
                }
                Ok(Some(format!("waiting: {}", waits.join(", or "))))
            }
            Decision::MinInterval { recheck_at_ms, .. } => Ok(Some(format!(
                "due, waiting {}s for the minimum interval",
                recheck_at_ms.saturating_sub(now) / 1000
            ))),
            Decision::Busy { training, .. } => Ok(Some(format!(
                "due, waiting for {training} to finish training"
            ))),
        }
    }

    /// Drives a run from its journal until it ends, or waits on a stage
    /// (then returns what it waits for).
    async fn drive(&self, job: &Job, run: &str) -> Result<Option<String>, ServeError> {
        loop {
            let records = self.journal.read(run)?;
            let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
            let next = run::next(&events);
            let ctx = RunCtx {
                deps: &self.deps,
                job,
                id: run,
                dir: self.journal.run_dir(run),
                records: &records,
            };
            let event = match next {
                Next::Done(outcome) => {
                    say!("{run}: ended, {}", journal::state(&Next::Done(outcome)));
                    return Ok(None);
                }
                Next::End(outcome) => Event::Ended { outcome },
                Next::CleanUp { .. } => match stages::clean_up(&ctx).await {
                    Ok(_) => Event::CleanedUp,
                    Err(e) => return Err(ServeError::Stage(format!("{run}: cleanup: {e}"))),
                },
                Next::Start(stage) => {
                    say!("{run}: {stage:?} starts");
                    self.journal
                        .append(run, now_ms(), Event::Started { stage })?;
                    continue;
                }
                Next::Resume(stage) => match self.stage(&ctx, stage).await {
                    Ok(StageEnd::Finished(detail)) => Event::Finished { stage, detail },
                    Ok(StageEnd::Concluded(outcome, reason)) => Event::Concluded {
                        stage,
                        outcome,
                        reason,
                    },
                    Ok(StageEnd::Pending(what)) => return Ok(Some(format!("{run}: {what}"))),
                    Err(StageError::Failed(reason)) => Event::Failed { stage, reason },
                    Err(StageError::Retry(e)) => {
                        return Err(ServeError::Stage(format!("{run}: {stage:?}: {e}")))
                    }
                },
            };
            say!("{run}: {}", journal::describe(&event));
            self.journal.append(run, now_ms(), event)?;
        }
    }

    async fn stage(&self, ctx: &RunCtx<'_>, stage: Stage) -> Result<StageEnd, StageError> {
        match stage {
            Stage::Dataset => stages::dataset(ctx).await,
            Stage::Train => {
                let _one_at_a_time = self.training.lock().await;
                *self.training_job.lock() = Some(ctx.job.name.clone());
                let end = stages::train(ctx).await;
                *self.training_job.lock() = None;
                end
            }
            Stage::Deploy => stages::deploy(ctx).await,
            Stage::Gate => stages::gate(ctx).await,
            Stage::Canary => stages::canary(ctx).await,
        }
    }
}

/// Graded or feedback rows on the route since `since_ms`: what the
/// `new_rows` trigger counts.
async fn new_rows(store: &Store, route: &str, since_ms: u64) -> Result<u64, ServeError> {
    let sql = format!(
        "SELECT count() FROM {}.feedback WHERE route = ? AND ts_ms >= ?",
        store.database()
    );
    store
        .client()
        .query(&sql)
        .bind(route)
        .bind(since_ms)
        .fetch_one::<u64>()
        .await
        .map_err(|e| ServeError::ClickHouse(e.to_string()))
}
