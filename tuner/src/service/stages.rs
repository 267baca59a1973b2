//! What each stage of a run does ([`super::run::Stage`]), and the cleanup
//! of a run that ends after its deploy started. Every stage can be run
//! again after a restart (see [`super::run`]): its inputs are the job, the
//! run's directory and what earlier stages journaled in their `Finished`
//! details, never the service's memory.
//!
//! A stage ends in a [`StageEnd`], or a [`StageError`] that either fails the
//! run (journaled with its reason) or asks to be tried again at the next
//! poll (a dependency that is down while a canary is followed).

use std::{path::PathBuf, process::Stdio, sync::Arc};

use flywheel_canary_controller::{
    engines::EngineAdmin,
    ops::{self, NewExperiment, OpError},
    spec::EnginePlan,
    unload::grace_deadline_ms,
    CanaryStore, Experiment, Status, Weights,
};
use flywheel_feedback::{now_ms, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    config::{Job, ServiceConfig, Slot},
    gate::{self, Answer},
    journal::Record,
    run::{Event, Outcome, Stage},
};
use crate::{
    dataset::{self, captured, pii::PiiFilter},
    eval::{
        self,
        client::{run_config, Gateway, RequestParams},
        Observation, Outcome as EvalOutcome,
    },
    grader::{Grader, GraderOptions},
    item::Item,
};

/// How a stage ended.
#[derive(Debug)]
pub enum StageEnd {
    /// Done; the detail is journaled (the lineage later stages read).
    Finished(Value),
    /// The run ends here with this outcome and reason.
    Concluded(Outcome, String),
    /// Not done yet (a canary still deciding): look again at the next poll.
    Pending(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The run fails with this reason.
    #[error("{0}")]
    Failed(String),
    /// Try the stage again at the next poll.
    #[error("{0}")]
    Retry(String),
}

fn failed(e: impl std::fmt::Display) -> StageError {
    StageError::Failed(e.to_string())
}

/// What the stages need from the outside world.
pub struct Deps {
    pub config: ServiceConfig,
    pub store: Store,
    pub canary: CanaryStore,
    pub weights: Weights,
    /// The gateway, with a key that may pin variants.
    pub gateway: Gateway,
    pub engines: EngineAdmin,
    pub grader_options: GraderOptions,
    /// `flywheel-tuner` itself: training runs as its `train` subcommand in
    /// a child process, so a crash or an out-of-memory kill fails the
    /// stage instead of the service.
    pub tuner_exe: PathBuf,
}

/// One run as the stages see it.
pub struct RunCtx<'a> {
    pub deps: &'a Deps,
    pub job: &'a Job,
    pub id: &'a str,
    pub dir: PathBuf,
    pub records: &'a [Record],
}

/// The dataset stage's lineage.
#[derive(Debug, Serialize, Deserialize)]
pub struct DatasetDetail {
    pub from_ms: u64,
    pub to_ms: u64,
    pub train: usize,
    pub heldout: usize,
    pub counts: Value,
}

/// The training stage's lineage.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrainDetail {
    pub steps: u64,
    pub best_step: u64,
    /// The merged model directory the deploy loads.
    pub model: PathBuf,
    pub summary: Value,
}

/// The deploy stage's lineage.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeployDetail {
    /// The version's name on the engines.
    pub version: String,
    pub slot: Slot,
    /// The route's incumbent variant when the run deployed.
    pub incumbent: String,
    /// The version behind the incumbent's slot, when the incumbent is one.
    pub incumbent_version: Option<String>,
}

impl RunCtx<'_> {
    /// When the run started: its first journal entry.
    fn started_ms(&self) -> u64 {
        self.records.first().map_or(0, |r| r.at_ms)
    }

    /// The detail an earlier stage finished with.
    fn detail<T: serde::de::DeserializeOwned>(&self, stage: Stage) -> Result<T, StageError> {
        self.records
            .iter()
            .rev()
            .find_map(|r| match &r.event {
                Event::Finished { stage: s, detail } if *s == stage => Some(detail.clone()),
                _ => None,
            })
            .ok_or_else(|| failed(format!("the journal has no finished {stage:?} stage")))
            .and_then(|d| serde_json::from_value(d).map_err(failed))
    }

    fn grader(&self) -> Result<Arc<Grader>, StageError> {
        let text = std::fs::read_to_string(&self.job.grader)
            .map_err(|e| failed(format!("reading {}: {e}", self.job.grader.display())))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| failed(format!("{}: {e}", self.job.grader.display())))?;
        Grader::from_config_with(&config, &self.deps.grader_options)
            .map(Arc::new)
            .map_err(|e| failed(format!("invalid grader: {e}")))
    }

    /// The model version's name on the engines: job, the run's start (UTC,
    /// to the minute) and the training step it was exported at, so a
    /// person reading an engine's list can tell where it came from.
    pub fn version_name(&self, best_step: u64) -> String {
        format!(
            "{}-{}-s{best_step}",
            self.job.name,
            utc_minute(self.started_ms())
        )
    }
}

/// `20261207t0301` for a time in ms since the epoch (UTC).
pub fn utc_minute(ms: u64) -> String {
    // `2026-12-07 03:01:59` → its digits, `20261207030159`.
    let digits: String = flywheel_canary_controller::report::utc(ms)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!(
        "{}t{}",
        digits.get(..8).unwrap_or_default(),
        digits.get(8..12).unwrap_or_default()
    )
}

/// The dataset: the route's captured traffic in the run's window (fixed
/// by the run's start, so a resumed stage cuts the same one), filtered,
/// split with the job's fixed seed (a prompt held out once stays held out
/// in later runs), written to `dataset/`, and its inferences recorded as
/// used by the run so retention keeps them.
pub async fn dataset(ctx: &RunCtx<'_>) -> Result<StageEnd, StageError> {
    let job = ctx.job;
    let d = &job.dataset;
    let to_ms = ctx.started_ms();
    let from_ms = to_ms.saturating_sub(d.window_secs * 1000);
    let query = captured::Query {
        route: job.route.clone(),
        variant: d.variant.clone(),
        from_ms,
        to_ms,
        keep_validation_failures: !d.drop_validation_failures,
        include_shadow: d.include_shadow,
        pii: dataset::pii::PiiAction::Drop,
        seed: 1,
        heldout_fraction: d.heldout_fraction,
        limit: 100_000,
    };
    let filter = PiiFilter::new(&[]).map_err(failed)?;
    let built = captured::build(&ctx.deps.store, &query, &filter)
        .await
        .map_err(|e| failed(format!("reading captured traffic: {e}")))?;
    let dir = ctx.dir.join("dataset");
    std::fs::create_dir_all(&dir).map_err(failed)?;
    // Sealed with the service's keys, when it has any: the snapshot holds
    // captured prompts and answers.
    let keys = ctx.deps.config.keys.as_deref();
    for (name, items) in [("train", &built.train), ("heldout", &built.heldout)] {
        let path = dir.join(format!("{name}.jsonl"));
        dataset::jsonl::write_file(&path, items.iter(), keys)
            .map_err(|e| failed(format!("writing {}: {e}", path.display())))?;
    }
    let counts = serde_json::to_value(&built.counts).map_err(failed)?;
    let detail = DatasetDetail {
        from_ms,
        to_ms,
        train: built.train.len(),
        heldout: built.heldout.len(),
        counts,
    };
    let kept = (detail.train + detail.heldout) as u64;
    if kept < d.min_rows {
        return Ok(StageEnd::Concluded(
            Outcome::Skipped,
            format!(
                "{kept} rows kept of {}, {} needed",
                built.counts.selected, d.min_rows
            ),
        ));
    }
    if detail.heldout < 2 || detail.train == 0 {
        return Ok(StageEnd::Concluded(
            Outcome::Skipped,
            format!(
                "{} train and {} held-out rows: the gate needs 2 held-out rows at least",
                detail.train, detail.heldout
            ),
        ));
    }
    let ids = built.inference_ids();
    ctx.deps
        .store
        .record_training_usage(ctx.id, &ids)
        .await
        .map_err(|e| failed(format!("recording training usage: {e}")))?;
    serde_json::to_value(&detail)
        .map(StageEnd::Finished)
        .map_err(failed)
}

/// The run's dataset file `name` (plain or sealed with the service's keys).
fn snapshot(ctx: &RunCtx<'_>, name: &str) -> Result<dataset::jsonl::Read, StageError> {
    let path = ctx.dir.join("dataset").join(name);
    dataset::jsonl::read_file(&path, ctx.deps.config.keys.as_deref()).map_err(failed)
}

/// Training: `flywheel-tuner train` in a child process with the job's
/// hyperparameters, its progress lines passed through to the service's log
/// and kept in `train/train.log`; resumed from its checkpoint after a
/// restart. The merged model of the best held-out step is the candidate.
pub async fn train(ctx: &RunCtx<'_>) -> Result<StageEnd, StageError> {
    let h = &ctx.job.hyperparameters;
    let data = ctx.dir.join("dataset");
    let out = ctx.dir.join("train");
    let prompts = snapshot(ctx, "train.jsonl")?.items.len() as u64;
    let steps = h.length.steps(prompts, h.batch_size);
    let mut cmd = tokio::process::Command::new(&ctx.deps.tuner_exe);
    cmd.arg("train")
        .arg("--model")
        .arg(&ctx.job.base_model)
        .arg("--train")
        .arg(data.join("train.jsonl"))
        .arg("--heldout")
        .arg(data.join("heldout.jsonl"))
        .arg("--grader")
        .arg(&ctx.job.grader)
        .arg("--out")
        .arg(&out)
        .args(["--steps", &steps.to_string()])
        .args(["--prompts-per-step", &h.batch_size.to_string()])
        .args(["--generations", &h.group_size.to_string()])
        .args(["--lr", &h.learning_rate.to_string()])
        .args(["--eval-every", &h.eval_interval.to_string()])
        .args(["--patience", &h.early_stopping_patience.to_string()])
        .args(["--rank", &h.lora_rank.to_string()])
        .args(["--run-id", ctx.id])
        .arg("--exit-with-parent");
    for key in &ctx.deps.config.encryption_key_files {
        cmd.arg("--encryption-key-file").arg(key);
    }
    if h.guide {
        cmd.arg("--guide");
    }
    if out.join("checkpoint").is_dir() {
        cmd.arg("--resume");
    }
    std::fs::create_dir_all(&out).map_err(failed)?;
    let log_path = out.join("train.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(failed)?;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("starting the trainer: {e}")))?;
    let last = pass_through(child.stderr.take(), log, ctx.id).await;
    let status = child
        .wait()
        .await
        .map_err(|e| failed(format!("waiting for the trainer: {e}")))?;
    if !status.success() {
        return Err(failed(format!(
            "the trainer {status}: {}",
            last.unwrap_or_else(|| format!("see {}", log_path.display()))
        )));
    }
    let summary: Value = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| failed("the trainer wrote no summary.json"))?;
    let model = out.join("best").join("merged");
    if !model.join("config.json").is_file() {
        return Err(failed(format!("no merged model in {}", model.display())));
    }
    let detail = TrainDetail {
        steps,
        best_step: summary["best_step"].as_u64().unwrap_or(0),
        model,
        summary,
    };
    serde_json::to_value(&detail)
        .map(StageEnd::Finished)
        .map_err(failed)
}

/// Copies the trainer's stderr to its log and to the service's, each line
/// prefixed with the run; returns the last line (the error, if it failed).
async fn pass_through(
    stderr: Option<tokio::process::ChildStderr>,
    mut log: std::fs::File,
    run: &str,
) -> Option<String> {
    use std::io::Write;

    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr?).lines();
    let mut last = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = writeln!(log, "{line}");
        eprintln!("{} {run} train: {line}", super::serve::clock());
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    last
}

/// The variant that serves the route now: the canary controller's record
/// of it, or the chain before any promotion.
async fn incumbent(ctx: &RunCtx<'_>) -> Result<String, StageError> {
    let recorded = ctx
        .deps
        .weights
        .incumbent(&ctx.job.route)
        .await
        .map_err(|e| failed(format!("reading the route's incumbent from Redis: {e}")))?;
    Ok(recorded.unwrap_or_else(|| ctx.job.chain_variant.clone()))
}

/// The deploy: the version is loaded on every engine (unless it already
/// is: never twice) and the free slot's alias is pointed at it. The
/// route's weights do not change, so the candidate serves no one yet.
pub async fn deploy(ctx: &RunCtx<'_>) -> Result<StageEnd, StageError> {
    let trained: TrainDetail = ctx.detail(Stage::Train)?;
    let version = ctx.version_name(trained.best_step);
    let incumbent = incumbent(ctx).await?;
    let slot = ctx
        .job
        .slots
        .iter()
        .find(|s| s.variant != incumbent)
        .cloned()
        .ok_or_else(|| failed("no free slot: every slot variant is the incumbent"))?;
    let experiments = ctx
        .deps
        .canary
        .experiments()
        .await
        .map_err(|e| StageError::Retry(format!("reading the route's experiments: {e}")))?;
    if let Some(wait) = held_for_rollback(&experiments, &ctx.job.route, &slot, now_ms()) {
        return Ok(StageEnd::Pending(wait));
    }
    let engines = &ctx.deps.config.engines;
    let admin = &ctx.deps.engines;
    let path = trained.model.to_string_lossy().into_owned();
    let mut incumbent_version = None;
    for engine in engines {
        if !admin.is_deployed(engine, &version).await.map_err(failed)? {
            admin
                .deploy(engine, &version, &path)
                .await
                .map_err(|e| failed(format!("the engine refused the model: {e}")))?;
        }
        if let Some(inc) = ctx.job.slots.iter().find(|s| s.variant == incumbent) {
            let aliases = admin.aliases(engine).await.map_err(failed)?;
            incumbent_version = incumbent_version.or_else(|| aliases.get(&inc.model).cloned());
        }
        admin
            .set_alias(engine, &slot.model, &version)
            .await
            .map_err(failed)?;
    }
    let detail = DeployDetail {
        version,
        slot,
        incumbent,
        incumbent_version,
    };
    serde_json::to_value(&detail)
        .map(StageEnd::Finished)
        .map_err(failed)
}

/// The gate's per-arm results as `eval_results` rows under the run's id,
/// as `flywheel-tuner eval --store` writes them, so the dashboards'
/// training page shows the gate beside the run. The verdict itself is in
/// the journal; a failed insert is logged and does not redo the gate.
async fn store_gate_evals(
    ctx: &RunCtx<'_>,
    params: &RequestParams,
    grader: &str,
    configs: Vec<eval::ConfigReport>,
) {
    let report = eval::report::Report {
        run_id: ctx.id.to_owned(),
        ts_ms: now_ms(),
        dataset: format!("{}/dataset/heldout.jsonl", ctx.id),
        grader: grader.to_owned(),
        temperature: params.temperature,
        max_tokens: params.max_tokens,
        configs,
    };
    let stored = match report.rows() {
        Ok(rows) => ctx
            .deps
            .store
            .insert_rows("eval_results", &rows)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        eprintln!(
            "{} {}: the gate's results were not stored in eval_results: {e}",
            super::serve::clock(),
            ctx.id
        );
    }
}

/// Why the free slot must not be re-pointed yet, if it must not: a
/// promotion on the route that completed within its grace period still
/// needs the slot's version, the old incumbent, for an instant rollback
/// (the controller unloads it when the grace period ends). Pointing the
/// slot at a new candidate then would make that rollback serve the new,
/// ungated version. The default trigger interval outlasts the default
/// grace period; this holds whatever the configuration says.
fn held_for_rollback(
    experiments: &[Experiment],
    route: &str,
    slot: &Slot,
    now_ms: u64,
) -> Option<String> {
    experiments
        .iter()
        .filter(|e| e.route == route && e.status == Status::Completed && e.incumbent == slot.variant)
        .find_map(|e| {
            let deadline = grace_deadline_ms(e);
            (now_ms < deadline).then(|| {
                format!(
                    "slot {} still backs experiment {}'s instant rollback until {} UTC; deploying after that",
                    slot.variant,
                    e.id,
                    flywheel_canary_controller::report::utc(deadline)
                )
            })
        })
}

/// The offline gate: the candidate's slot, the incumbent and the chain
/// answer the same held-out items through the gateway (pinned variants,
/// greedy), graded by the job's grader; [`gate::judge`] decides. A grader
/// error fails the run: an answer that cannot be scored is not a 0.
pub async fn gate(ctx: &RunCtx<'_>) -> Result<StageEnd, StageError> {
    let deployed: DeployDetail = ctx.detail(Stage::Deploy)?;
    let grader = ctx.grader()?;
    let read = snapshot(ctx, "heldout.jsonl")?;
    let items: Vec<Item> = read
        .items
        .into_iter()
        .take(ctx.job.gate.heldout_items as usize)
        .collect();
    let params = RequestParams {
        max_tokens: ctx.job.gate.max_tokens,
        ..RequestParams::default()
    };
    let chain = ctx.job.chain_variant.clone();
    let mut arms = vec![deployed.slot.variant.clone(), chain.clone()];
    if deployed.incumbent != chain {
        arms.push(deployed.incumbent.clone());
    }
    let mut answers: Vec<Vec<Answer>> = Vec::new();
    let mut summaries = Vec::new();
    for variant in &arms {
        let gw = ctx.deps.gateway.pinned(variant);
        let total = items.len();
        let label = format!("{} gate: {variant}", ctx.id);
        let progress = |done: usize| {
            if done == total || done.is_multiple_of(10) {
                eprintln!("{} {label} {done}/{total}", super::serve::clock());
            }
        };
        let obs = run_config(
            &gw,
            grader.clone(),
            &items,
            &ctx.job.route,
            &params,
            2,
            &progress,
        )
        .await;
        answers.push(to_answers(variant, &obs)?);
        let config = eval::Config {
            name: variant.clone(),
            model: ctx.job.route.clone(),
            raw: false,
        };
        summaries.push(eval::summarize(&config, &obs));
    }
    store_gate_evals(ctx, &params, grader.name(), summaries).await;
    let [candidate, chain_answers, rest @ ..] = answers.as_slice() else {
        return Err(failed("the gate lost an arm"));
    };
    let incumbent_answers = rest.first().unwrap_or(chain_answers);
    let paired: Vec<gate::Item> = candidate
        .iter()
        .zip(incumbent_answers)
        .zip(chain_answers)
        .map(|((c, i), ch)| gate::Item {
            candidate: *c,
            incumbent: *i,
            chain: *ch,
        })
        .collect();
    let verdict = gate::judge(&ctx.job.gate, &paired);
    let mean =
        |a: &[Answer], f: fn(&Answer) -> f64| a.iter().map(f).sum::<f64>() / a.len().max(1) as f64;
    let arm =
        |a: &[Answer]| json!({"quality": mean(a, |x| x.quality), "cost_usd": mean(a, |x| x.cost)});
    let detail = json!({
        "items": paired.len(),
        "candidate": arm(candidate),
        "incumbent": arm(incumbent_answers),
        "chain": arm(chain_answers),
        "verdict": verdict,
    });
    if verdict.pass() {
        Ok(StageEnd::Finished(detail))
    } else {
        Ok(StageEnd::Concluded(Outcome::Rejected, verdict.reasons()))
    }
}

/// Each observation's quality and cost; a request the gateway could not
/// answer scores 0 (the user got nothing) at the cost it reported.
fn to_answers(variant: &str, obs: &[Observation]) -> Result<Vec<Answer>, StageError> {
    let errors: Vec<&str> = obs
        .iter()
        .filter_map(|o| match &o.outcome {
            EvalOutcome::GraderError(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    if let Some(first) = errors.first() {
        return Err(failed(format!(
            "the grader failed on {} of {} answers of {variant}: {first}",
            errors.len(),
            obs.len()
        )));
    }
    Ok(obs
        .iter()
        .map(|o| Answer {
            quality: match &o.outcome {
                EvalOutcome::Graded(g) => g.score,
                _ => 0.0,
            },
            cost: o.totals.as_ref().map_or(0.0, |t| t.cost_usd),
        })
        .collect())
}

/// The canary: the experiment of this run (found by its origin, so it is
/// created once), created from the job's template with the run's versions,
/// then followed until the controller promotes or rolls back.
pub async fn canary(ctx: &RunCtx<'_>) -> Result<StageEnd, StageError> {
    let deployed: DeployDetail = ctx.detail(Stage::Deploy)?;
    let origin = format!("tuner:{}", ctx.id);
    let retry = |e: &dyn std::fmt::Display| StageError::Retry(format!("canary: {e}"));
    let existing = ctx
        .deps
        .canary
        .experiments()
        .await
        .map_err(|e| retry(&e))?
        .into_iter()
        .find(|e| e.origin == origin);
    let exp = match existing {
        Some(e) => e,
        None => {
            let mut spec = ctx.job.canary.clone();
            spec.engine = EnginePlan {
                candidate_model: Some(deployed.version.clone()),
                incumbent_model: deployed.incumbent_version.clone(),
                engines: ctx.deps.config.engines.clone(),
                ..EnginePlan::default()
            };
            let new = NewExperiment {
                route: &ctx.job.route,
                incumbent: &deployed.incumbent,
                candidate: &deployed.slot.variant,
                spec,
                origin: &origin,
                actor: "tuner",
            };
            match ops::create(&ctx.deps.canary, &ctx.deps.weights, new).await {
                Ok((e, _)) => e,
                Err(OpError::Busy { id, .. }) => {
                    return Ok(StageEnd::Pending(format!(
                        "the route has another active experiment ({id}); waiting for it to end"
                    )))
                }
                Err(e @ (OpError::Spec(_) | OpError::SameVariant)) => return Err(failed(e)),
                Err(e) => return Err(retry(&e)),
            }
        }
    };
    let reason = format!("experiment {}: {}", exp.id, exp.status_reason);
    Ok(match exp.status {
        Status::Running | Status::Paused => StageEnd::Pending(format!(
            "experiment {} at step {} of {}",
            exp.id,
            exp.step + 1,
            exp.spec.steps.len()
        )),
        Status::Completed => StageEnd::Concluded(Outcome::Promoted, reason),
        Status::RolledBack | Status::KeptIncumbent => {
            StageEnd::Concluded(Outcome::RolledBack, reason)
        }
    })
}

/// After a failed or rejected run whose deploy started: the run's version
/// is unloaded from every engine (a version never loaded counts as done),
/// which also drops the slot alias pointing at it.
pub async fn clean_up(ctx: &RunCtx<'_>) -> Result<Value, StageError> {
    let trained: TrainDetail = ctx.detail(Stage::Train)?;
    let version = ctx.version_name(trained.best_step);
    let outcomes = ctx
        .deps
        .engines
        .unload_all(&ctx.deps.config.engines, &version)
        .await;
    if let Some(bad) = outcomes.iter().find(|o| !o.ok) {
        return Err(StageError::Retry(format!(
            "unloading {version} from {}: {}",
            bad.engine,
            bad.error.as_deref().unwrap_or("failed")
        )));
    }
    Ok(json!({"unloaded": version}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route whose promotion of `tuned-a` over `tuned-b` completed at
    /// `completed_ms`, with a 60 s grace period.
    fn promoted(route: &str, completed_ms: u64) -> Experiment {
        let mut spec = flywheel_canary_controller::Spec {
            quality: vec![flywheel_canary_controller::QualityMetric::parse("thumbs_up").unwrap()],
            ..Default::default()
        };
        spec.engine.grace_secs = 60;
        let mut e = Experiment::new(route, "tuned-b", "tuned-a", spec, "test", 0).unwrap();
        e.status = Status::Completed;
        e.updated_ms = completed_ms;
        e
    }

    #[test]
    fn a_slot_is_not_repointed_while_a_promotion_may_still_roll_back_to_it() {
        let slot = |v: &str| Slot {
            variant: v.into(),
            model: format!("job-{v}"),
        };
        let exps = [promoted("extract", 1_000_000)];
        // Within the grace period: the old incumbent's slot waits...
        let wait = held_for_rollback(&exps, "extract", &slot("tuned-b"), 1_030_000).unwrap();
        assert!(
            wait.contains("tuned-b") && wait.contains(&exps[0].id),
            "{wait}"
        );
        // ...until it ends.
        assert_eq!(
            held_for_rollback(&exps, "extract", &slot("tuned-b"), 1_060_000),
            None
        );
        // Another route's promotion, or a slot that is not the old incumbent, does not hold it.
        assert_eq!(
            held_for_rollback(&exps, "other", &slot("tuned-b"), 1_030_000),
            None
        );
        assert_eq!(
            held_for_rollback(&exps, "extract", &slot("tuned-c"), 1_030_000),
            None
        );
        // An experiment that did not complete holds nothing.
        let mut rolled_back = promoted("extract", 1_000_000);
        rolled_back.status = Status::RolledBack;
        assert_eq!(
            held_for_rollback(&[rolled_back], "extract", &slot("tuned-b"), 1_030_000),
            None
        );
    }

    #[test]
    fn version_names_carry_the_runs_start_to_the_minute_in_utc() {
        assert_eq!(utc_minute(0), "19700101t0000");
        // 2026-12-07 03:01:59 UTC.
        assert_eq!(utc_minute(1_796_612_519_000), "20261207t0301");
        // The leap day of 2024.
        assert_eq!(utc_minute(1_709_164_800_000), "20240229t0000");
    }
}
