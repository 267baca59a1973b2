//! The loop: every interval, for each running experiment, read both arms
//! of the current step from ClickHouse, [`decide`], record the evaluation
//! and apply the action to the route's weights in Redis.
//!
//! # Order of writes, and resuming after a crash
//!
//! A transition writes (1) the evaluation row, which says the state after
//! it, (2) the experiment's new revision, (3) the weights. Each tick
//! starts by finishing what a crash may have cut short: an evaluation
//! newer than its experiment is replayed into it ([`Experiment::replay`]),
//! and the weights of every active experiment are made to match its state
//! (those of an ended one once, tracked by revision in Redis). So the
//! controller resumes at the recorded step with the recorded step clock;
//! nothing is kept in memory between ticks.
//!
//! # Unloading model versions
//!
//! An ended experiment that names its versions on the engine pool frees
//! the one that no longer serves ([`crate::unload`]): the candidate after
//! a rollback or keep-incumbent, the old incumbent when the grace period
//! after a promotion ends. Each look checks the variant's weight is 0 in
//! Redis, waits `settle` after first seeing it so, then unloads from the
//! engines not done yet in a task of its own (an engine drains in-flight
//! requests before answering, which must not delay other experiments'
//! decisions) and records an `unload` row. Redis down: no unload (the
//! weights cannot be checked). Ended experiments that a newer one on the
//! route superseded still free their versions.
//!
//! # Outages pause decisions
//!
//! * ClickHouse unreachable: nothing is read, decided or recorded (no
//!   action without data); the weights stay as they are.
//! * Redis unreachable: the look still runs (ClickHouse is up) and is
//!   recorded as a hold with reason `redis_unavailable`: no transition is
//!   made that could not be applied.
//!
//! # Concurrent manual actions
//!
//! Before recording a transition the controller re-reads the experiment;
//! if its revision moved (a `pause` from the CLI, say) the look is dropped
//! and the next tick starts from the new state.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use flywheel_canary::{decide, ArmData, Input};
use flywheel_feedback::now_ms;
use tokio::{sync::Mutex, task::JoinHandle};

use crate::{
    engines::EngineAdmin,
    experiment::{evaluation_row, reason_of, Action, Experiment, Record, Status},
    store::{ArmQuery, CanaryStore},
    unload::{self, Step, UnloadRecord, Wait},
    weights::Weights,
};

/// Ended experiments are looked at (to write their final weights once)
/// for this long after their last change, unless a newer experiment on the
/// same route supersedes them.
const ENDED_LOOKBACK_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Time between looks.
    pub interval: Duration,
    /// Requests in the first `settle` of a step are left out of it: the
    /// gateways take up to their `weights_poll_ms` to apply new weights,
    /// and requests in flight were routed under the old ones.
    pub settle: Duration,
    /// Latency/TTFT samples per arm for the rank tests (0: no latency
    /// guardrails).
    pub latency_samples: u64,
    /// Recorded as the actor of automatic evaluations.
    pub actor: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            latency_samples: 2000,
            actor: "controller".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Redis(#[from] crate::weights::Error),
    #[error(transparent)]
    Experiment(#[from] crate::experiment::ExperimentError),
    #[error("settings: {0}")]
    Settings(#[from] flywheel_canary::decision::SettingsError),
}

/// What one tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    /// ClickHouse could not be read: nothing was decided.
    pub clickhouse_down: bool,
    pub redis_down: bool,
    /// (experiment id, action, reason kind) of each recorded look.
    pub looks: Vec<(String, Action, String)>,
    /// Experiments whose look failed, with the error.
    pub failed: Vec<(String, String)>,
}

pub struct Controller {
    store: CanaryStore,
    weights: Weights,
    cfg: ControllerConfig,
    engines: EngineAdmin,
    /// `experiment/model` → since when its variant's weight is seen at 0
    /// (the settle clock; a restart starts it again, which only delays).
    zero_since: Mutex<HashMap<String, u64>>,
    /// `experiment/model` being unloaded by a task now.
    unloading: Arc<Mutex<HashSet<String>>>,
    /// `experiment/model` found done: not read again.
    unloaded: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Controller {
    /// A controller without an engine admin token: unloads are attempted
    /// and recorded as failing until one is given ([`Controller::with_engines`]).
    pub fn new(store: CanaryStore, weights: Weights, cfg: ControllerConfig) -> Self {
        Self {
            store,
            weights,
            cfg,
            engines: EngineAdmin::default(),
            zero_since: Mutex::default(),
            unloading: Arc::default(),
            unloaded: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    /// The engines' admin client (with its token).
    pub fn with_engines(mut self, engines: EngineAdmin) -> Self {
        self.engines = engines;
        self
    }

    /// Waits for the unloads started so far (for `--once` and tests).
    pub async fn wait_unloads(&self) {
        let tasks: Vec<_> = self.tasks.lock().await.drain(..).collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "unload task failed");
            }
        }
    }

    /// Looks every interval until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut paused = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let report = self.tick().await;
            let now_paused = report.clickhouse_down || report.redis_down;
            if now_paused && !paused {
                tracing::warn!(
                    clickhouse_down = report.clickhouse_down,
                    redis_down = report.redis_down,
                    "decisions paused until ClickHouse and Redis answer"
                );
            } else if paused && !now_paused {
                tracing::info!("ClickHouse and Redis answer again: decisions resumed");
            }
            paused = now_paused;
        }
    }

    /// One look at every experiment.
    pub async fn tick(&self) -> TickReport {
        let mut report = TickReport::default();
        let experiments = match self.store.experiments().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "ClickHouse unavailable: no decisions this interval");
                report.clickhouse_down = true;
                return report;
            }
        };
        let redis_up = match self.weights.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable: experiments hold");
                false
            }
        };
        report.redis_down = !redis_up;
        let now = now_ms();
        // The newest experiment of each route: an ended experiment's final
        // weights are written only while no newer one owns the route.
        let mut newest: std::collections::HashMap<&str, (u64, &str)> = Default::default();
        for e in &experiments {
            let slot = newest.entry(e.route.as_str()).or_insert((0, ""));
            if (e.created_ms, e.id.as_str()) >= (slot.0, slot.1) {
                *slot = (e.created_ms, e.id.as_str());
            }
        }
        let superseded: std::collections::HashSet<String> = experiments
            .iter()
            .filter(|e| newest.get(e.route.as_str()).is_some_and(|n| n.1 != e.id))
            .map(|e| e.id.clone())
            .collect();
        let in_use = unload::in_use(&experiments);
        self.tasks.lock().await.retain(|t| !t.is_finished());
        for exp in experiments {
            let lookback =
                ENDED_LOOKBACK_MS.saturating_add(exp.spec.engine.grace_secs.saturating_mul(1000));
            if !exp.status.is_active() && now.saturating_sub(exp.updated_ms) > lookback {
                continue;
            }
            let id = exp.id.clone();
            if !exp.status.is_active() && superseded.contains(&exp.id) {
                // The route's weights belong to the newer experiment; the
                // versions this one named are still freed.
                if redis_up {
                    if let Err(e) = self.unload_look(&exp, &in_use, now).await {
                        tracing::warn!(experiment = %id, error = %e, "unload look failed");
                        report.failed.push((id, e.to_string()));
                    }
                }
                continue;
            }
            match self.look(exp, redis_up, &in_use).await {
                Ok(Some(look)) => report.looks.push(look),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(experiment = %id, error = %e, "look failed; the experiment holds");
                    if matches!(e, Error::Store(_)) {
                        report.clickhouse_down = true;
                    }
                    if matches!(e, Error::Redis(_)) {
                        report.redis_down = true;
                    }
                    report.failed.push((id, e.to_string()));
                }
            }
        }
        report
    }

    /// Finishes a cut transition, reconciles weights, and (while running)
    /// decides and records.
    async fn look(
        &self,
        mut exp: Experiment,
        redis_up: bool,
        in_use: &BTreeSet<String>,
    ) -> Result<Option<(String, Action, String)>, Error> {
        if let Some(t) = self.store.latest_transition(&exp.id).await? {
            if let Some(next) = exp.replay(&t) {
                tracing::warn!(
                    experiment = %exp.id,
                    step = next.step,
                    status = next.status.name(),
                    "finishing a transition recorded before a restart"
                );
                self.store
                    .inner()
                    .insert_rows("experiments", &[next.to_row()])
                    .await
                    .map_err(crate::store::Error::from)?;
                exp = next;
            }
        }
        if redis_up {
            apply_weights(&self.weights, &exp).await?;
            if !exp.status.is_active() {
                self.unload_look(&exp, in_use, now_ms()).await?;
            }
        }
        if exp.status != Status::Running {
            return Ok(None);
        }
        let now = now_ms();
        let Some(step) = exp.spec.steps.get(exp.step).cloned() else {
            return Ok(None);
        };
        let settle_ms = u64::try_from(self.cfg.settle.as_millis()).unwrap_or(u64::MAX);
        let query = ArmQuery {
            route: &exp.route,
            incumbent: &exp.incumbent,
            candidate: &exp.candidate,
            from_ms: exp.step_started_ms.saturating_add(settle_ms),
            to_ms: now,
            shadow: step.shadow,
            quality: &exp.spec.quality,
            latency_samples: self.cfg.latency_samples,
        };
        let (inc, cand) = self.store.arms(&query).await?;
        let decision = decide(
            &exp.spec.settings,
            &Input {
                step: &step,
                elapsed_secs: now.saturating_sub(exp.step_started_ms) / 1000,
                incumbent: ArmData {
                    summary: &inc.summary,
                    latency_ms: &inc.latency_ms,
                    ttft_ms: &inc.ttft_ms,
                },
                candidate: ArmData {
                    summary: &cand.summary,
                    latency_ms: &cand.latency_ms,
                    ttft_ms: &cand.ttft_ms,
                },
            },
        )?;
        let (mut kind, mut reason_json) = reason_of(&decision);
        let mut action = Action::from_decision(&decision);
        if !redis_up && action != Action::Hold {
            reason_json = serde_json::json!({
                "kind": "redis_unavailable",
                "decision": Action::from_decision(&decision).name(),
                "reason": kind,
            })
            .to_string();
            kind = "redis_unavailable".into();
            action = Action::Hold;
        } else if !redis_up {
            reason_json =
                serde_json::json!({"kind": "redis_unavailable", "reason": kind}).to_string();
            kind = "redis_unavailable".into();
        }
        let after = if action == Action::Hold {
            exp.clone()
        } else {
            // A manual action since this look began wins.
            let current = self.store.experiment(&exp.id).await?;
            if current.revision != exp.revision {
                tracing::info!(experiment = %exp.id, "changed during the look; looking again next interval");
                return Ok(None);
            }
            exp.after(action, &kind, now)?
        };
        let row = evaluation_row(
            &exp,
            &after,
            &Record {
                action,
                manual: false,
                actor: &self.cfg.actor,
                reason_kind: &kind,
                reason_json,
                decision: Some(&decision),
            },
            now,
        );
        self.store
            .record(&row, (action != Action::Hold).then_some(&after))
            .await?;
        let e = decision.evidence();
        tracing::info!(
            experiment = %exp.id,
            route = %exp.route,
            step = %exp.step_name(),
            action = action.name(),
            reason = %kind,
            incumbent_n = e.incumbent.requests,
            candidate_n = e.candidate.requests,
            incumbent_graded = e.incumbent.graded,
            candidate_graded = e.candidate.graded,
            qpd_lower = ?e.quality_per_dollar.map(|b| b.lower),
            "canary look"
        );
        if action != Action::Hold {
            apply_weights(&self.weights, &after).await?;
            tracing::info!(
                experiment = %exp.id,
                step = %after.step_name(),
                status = after.status.name(),
                weights = ?after.weights(),
                "canary transition applied"
            );
        }
        Ok(Some((exp.id, action, kind)))
    }
}

impl Controller {
    /// An ended experiment's unload, if it has one due ([`unload::next_step`]):
    /// started in a task, recorded there.
    async fn unload_look(
        &self,
        exp: &Experiment,
        in_use: &BTreeSet<String>,
        now: u64,
    ) -> Result<(), Error> {
        let Some(target) = unload::target(exp) else {
            return Ok(());
        };
        let key = format!("{}/{}", exp.id, target.model);
        if self.unloaded.lock().await.contains(&key) || self.unloading.lock().await.contains(&key) {
            return Ok(());
        }
        if target.role == unload::Role::Incumbent && now < target.not_before_ms {
            // In the grace period: nothing to read yet.
            return Ok(());
        }
        let records = self.store.unload_records(&exp.id).await?;
        let zero = self.weights.get(&exp.route).await?.get(&target.variant) == Some(&0);
        let zero_since = {
            let mut m = self.zero_since.lock().await;
            if zero {
                Some(*m.entry(key.clone()).or_insert(now))
            } else {
                m.remove(&key);
                None
            }
        };
        let settle_ms = u64::try_from(self.cfg.settle.as_millis()).unwrap_or(u64::MAX);
        let step = unload::next_step(
            &target,
            &exp.spec.engine.engines,
            &records,
            now,
            zero_since,
            settle_ms,
            in_use.contains(&target.model),
        );
        let engines = match step {
            Step::Done => {
                self.unloaded.lock().await.insert(key);
                return Ok(());
            }
            Step::Wait(Wait::InUse) => {
                tracing::debug!(experiment = %exp.id, model = %target.model, "version in use by another experiment: kept loaded");
                return Ok(());
            }
            Step::Wait(_) => return Ok(()),
            Step::Unload(engines) => engines,
        };
        self.unloading.lock().await.insert(key.clone());
        let task = UnloadTask {
            store: self.store.clone(),
            engines: self.engines.clone(),
            unloading: self.unloading.clone(),
            actor: self.cfg.actor.clone(),
            exp: exp.clone(),
            model: target.model,
            role: target.role,
            targets: engines,
            key,
        };
        self.tasks.lock().await.push(tokio::spawn(task.run()));
        Ok(())
    }
}

/// One unload attempt, off the look loop.
struct UnloadTask {
    store: CanaryStore,
    engines: EngineAdmin,
    unloading: Arc<Mutex<HashSet<String>>>,
    actor: String,
    exp: Experiment,
    model: String,
    role: unload::Role,
    targets: Vec<String>,
    key: String,
}

impl UnloadTask {
    async fn run(self) {
        self.attempt().await;
        self.unloading.lock().await.remove(&self.key);
    }

    async fn attempt(&self) {
        let exp = &self.exp;
        // A manual rollback in the grace period may have landed since the
        // look: the old version must then stay.
        match self.store.experiment(&exp.id).await {
            Ok(current) if current.revision == exp.revision => {}
            Ok(_) => {
                tracing::info!(experiment = %exp.id, "changed since the look; unload decided again next interval");
                return;
            }
            Err(e) => {
                tracing::warn!(experiment = %exp.id, error = %e, "cannot re-read the experiment; unload next interval");
                return;
            }
        }
        let results = self.engines.unload_all(&self.targets, &self.model).await;
        let record = UnloadRecord::new(&self.model, self.role, results);
        for r in &record.results {
            if r.ok {
                tracing::info!(experiment = %exp.id, model = %self.model, role = self.role.name(), engine = %r.engine, status = ?r.status, drained = ?r.drained, "model version unloaded");
            } else {
                tracing::warn!(experiment = %exp.id, model = %self.model, role = self.role.name(), engine = %r.engine, error = ?r.error, "unload failed; retried next interval");
            }
        }
        let now = now_ms();
        let row = evaluation_row(
            exp,
            exp,
            &Record {
                action: Action::Unload,
                manual: false,
                actor: &self.actor,
                reason_kind: record.reason_kind(),
                reason_json: serde_json::to_string(&record).unwrap_or_default(),
                decision: None,
            },
            now,
        );
        if let Err(e) = self.store.record(&row, None).await {
            // The next look tries again: a version already gone answers
            // 404, which is recorded as done.
            tracing::warn!(experiment = %exp.id, error = %e, "unload not recorded");
        }
    }
}

/// Makes Redis match an experiment's state: while active, the step's
/// weights (and the shadow mirror during a shadow step); once ended, the
/// final weights, written once per revision (so a later manual change of
/// the route's weights is not undone).
pub async fn apply_weights(weights: &Weights, exp: &Experiment) -> Result<(), Error> {
    let (wi, wc) = exp.weights();
    let pairs = [(exp.incumbent.as_str(), wi), (exp.candidate.as_str(), wc)];
    if !exp.status.is_active() {
        if weights
            .applied_revision(&exp.id)
            .await?
            .is_some_and(|r| r >= exp.revision)
        {
            return Ok(());
        }
        weights.set(&exp.route, &pairs).await?;
        clear_shadow(weights, exp).await?;
        if exp.status == Status::Completed {
            weights.set_incumbent(&exp.route, &exp.candidate).await?;
        } else if weights.incumbent(&exp.route).await?.as_deref() == Some(exp.candidate.as_str()) {
            // Rolled back in the grace period after its promotion.
            weights.set_incumbent(&exp.route, &exp.incumbent).await?;
        }
        weights.set_applied_revision(&exp.id, exp.revision).await?;
        return Ok(());
    }
    if weights.ensure(&exp.route, &pairs).await? {
        tracing::info!(experiment = %exp.id, route = %exp.route, ?pairs, "route weights written");
    }
    if exp.is_shadow() {
        let want = (exp.candidate.clone(), exp.spec.shadow_fraction);
        if weights.shadow(&exp.route).await?.as_ref() != Some(&want) {
            weights
                .set_shadow(&exp.route, Some((&exp.candidate, exp.spec.shadow_fraction)))
                .await?;
        }
    } else {
        clear_shadow(weights, exp).await?;
    }
    if weights.applied_revision(&exp.id).await? != Some(exp.revision) {
        weights.set_applied_revision(&exp.id, exp.revision).await?;
    }
    Ok(())
}

/// Removes the route's mirror if it is this experiment's.
async fn clear_shadow(weights: &Weights, exp: &Experiment) -> Result<(), Error> {
    if weights
        .shadow(&exp.route)
        .await?
        .is_some_and(|(v, _)| v == exp.candidate)
    {
        weights.set_shadow(&exp.route, None).await?;
    }
    Ok(())
}
