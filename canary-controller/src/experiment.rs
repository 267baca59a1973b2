//! An experiment's state and its transitions, shared by the controller
//! and the manual CLI actions (pure: no I/O).
//!
//! ```text
//!            promote            promote                  promote (into the last, 100 % step)
//! step 0 ──────────▶ step 1 ─────────▶ … step k ───────────────────────────────▶ Completed
//!   │  ▲ pause/resume (any running step)   │
//!   │  └─▶ Paused ──┘                       │
//!   └── rollback ──────────────────────────┴──▶ RolledBack   (candidate weight 0)
//!   └── keep incumbent ────────────────────────▶ KeptIncumbent (candidate weight 0)
//!
//! Completed ── rollback within the grace period ──▶ RolledBack (incumbent restored)
//! ```
//!
//! An ended experiment's model version is then unloaded from the engines
//! ([`crate::unload`]): `unload` rows record it without changing the state.
//!
//! Every transition is a new revision of the experiment row and one
//! evaluation row ([`Transition`]); holds only add an evaluation row.

use flywheel_canary::{decision::Verdict, Decision, Ramp, RampState};
use flywheel_feedback::store::rows::{
    canary_action, date_of, experiment_status, CanaryEvaluationRow, ExperimentRow,
};
use serde::{Deserialize, Serialize};

use crate::spec::{Spec, SpecError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Paused,
    Completed,
    RolledBack,
    KeptIncumbent,
}

impl Status {
    pub fn code(self) -> i8 {
        match self {
            Self::Running => experiment_status::RUNNING,
            Self::Paused => experiment_status::PAUSED,
            Self::Completed => experiment_status::COMPLETED,
            Self::RolledBack => experiment_status::ROLLED_BACK,
            Self::KeptIncumbent => experiment_status::KEPT_INCUMBENT,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            experiment_status::RUNNING => Self::Running,
            experiment_status::PAUSED => Self::Paused,
            experiment_status::COMPLETED => Self::Completed,
            experiment_status::ROLLED_BACK => Self::RolledBack,
            experiment_status::KEPT_INCUMBENT => Self::KeptIncumbent,
            _ => return None,
        })
    }

    /// Running or paused: the experiment still owns its route's weights.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::RolledBack => "rolled_back",
            Self::KeptIncumbent => "kept_incumbent",
        }
    }
}

/// The action of an evaluation row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Promote,
    Hold,
    Rollback,
    KeepIncumbent,
    Pause,
    Resume,
    Create,
    /// A model version unloaded from the engines (no state change).
    Unload,
}

impl Action {
    pub fn code(self) -> i8 {
        match self {
            Self::Promote => canary_action::PROMOTE,
            Self::Hold => canary_action::HOLD,
            Self::Rollback => canary_action::ROLLBACK,
            Self::KeepIncumbent => canary_action::KEEP_INCUMBENT,
            Self::Pause => canary_action::PAUSE,
            Self::Resume => canary_action::RESUME,
            Self::Create => canary_action::CREATE,
            Self::Unload => canary_action::UNLOAD,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            canary_action::PROMOTE => Self::Promote,
            canary_action::HOLD => Self::Hold,
            canary_action::ROLLBACK => Self::Rollback,
            canary_action::KEEP_INCUMBENT => Self::KeepIncumbent,
            canary_action::PAUSE => Self::Pause,
            canary_action::RESUME => Self::Resume,
            canary_action::CREATE => Self::Create,
            canary_action::UNLOAD => Self::Unload,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Hold => "hold",
            Self::Rollback => "rollback",
            Self::KeepIncumbent => "keep_incumbent",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Create => "create",
            Self::Unload => "unload",
        }
    }

    pub fn from_decision(d: &Decision) -> Self {
        match d.action() {
            flywheel_canary::Action::Promote => Self::Promote,
            flywheel_canary::Action::Hold => Self::Hold,
            flywheel_canary::Action::Rollback => Self::Rollback,
            flywheel_canary::Action::KeepIncumbent => Self::KeepIncumbent,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("experiment {id}: stored spec is invalid: {source}")]
    Spec { id: String, source: SpecError },
    #[error("experiment {id}: stored spec is not JSON: {source}")]
    SpecJson {
        id: String,
        source: serde_json::Error,
    },
    #[error("experiment {id}: unknown status code {code}")]
    StatusCode { id: String, code: i8 },
    #[error("experiment {id}: step {step} is not a step of its ramp")]
    Step { id: String, step: u32 },
    #[error("experiment {id} is {status}: cannot {action}")]
    NotAllowed {
        id: String,
        status: &'static str,
        action: &'static str,
    },
    #[error(
        "experiment {id} completed and its grace period for an instant rollback ended at {deadline} UTC{}; \
         the candidate stays the incumbent: to go back, create a new experiment with the old variant as candidate",
        unloaded.as_ref().map(|m| format!(" (the old version {m} was unloaded from the engines)")).unwrap_or_default()
    )]
    GraceOver {
        id: String,
        deadline: String,
        unloaded: Option<String>,
    },
}

/// An experiment as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: String,
    pub revision: u64,
    pub route: String,
    pub incumbent: String,
    pub candidate: String,
    pub spec: Spec,
    /// Index into `spec.steps`: the step being evaluated while active;
    /// the last step once completed; the step it ended at otherwise.
    pub step: usize,
    pub step_started_ms: u64,
    pub status: Status,
    pub status_reason: String,
    pub origin: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The next revision number: above the previous, and time-ordered (µs) so
/// that two writers rarely collide.
pub fn next_revision(previous: u64, now_ms: u64) -> u64 {
    (previous + 1).max(now_ms.saturating_mul(1000))
}

impl Experiment {
    /// A new experiment at its first step.
    pub fn new(
        route: &str,
        incumbent: &str,
        candidate: &str,
        spec: Spec,
        origin: &str,
        now_ms: u64,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            revision: next_revision(0, now_ms),
            route: route.to_owned(),
            incumbent: incumbent.to_owned(),
            candidate: candidate.to_owned(),
            spec,
            step: 0,
            step_started_ms: now_ms,
            status: Status::Running,
            status_reason: "created".into(),
            origin: origin.to_owned(),
            created_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    pub fn from_row(row: ExperimentRow) -> Result<Self, ExperimentError> {
        let spec: Spec =
            serde_json::from_str(&row.spec_json).map_err(|source| ExperimentError::SpecJson {
                id: row.id.clone(),
                source,
            })?;
        spec.validate().map_err(|source| ExperimentError::Spec {
            id: row.id.clone(),
            source,
        })?;
        let status = Status::from_code(row.status).ok_or_else(|| ExperimentError::StatusCode {
            id: row.id.clone(),
            code: row.status,
        })?;
        let step = row.step as usize;
        if step >= spec.steps.len() {
            return Err(ExperimentError::Step {
                id: row.id,
                step: row.step,
            });
        }
        Ok(Self {
            id: row.id,
            revision: row.revision,
            route: row.route,
            incumbent: row.incumbent,
            candidate: row.candidate,
            spec,
            step,
            step_started_ms: row.step_started_ms,
            status,
            status_reason: row.status_reason,
            origin: row.origin,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        })
    }

    pub fn to_row(&self) -> ExperimentRow {
        let step = self.spec.steps.get(self.step);
        ExperimentRow {
            id: self.id.clone(),
            revision: self.revision,
            route: self.route.clone(),
            incumbent: self.incumbent.clone(),
            candidate: self.candidate.clone(),
            // A Spec always serialises (plain data, finite numbers checked).
            spec_json: serde_json::to_string(&self.spec).unwrap_or_default(),
            step: self.step as u32,
            step_name: step.map(|s| s.name.clone()).unwrap_or_default(),
            candidate_percent: self.candidate_percent(),
            step_started_ms: self.step_started_ms,
            status: self.status.code(),
            status_reason: self.status_reason.clone(),
            origin: self.origin.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }

    pub fn step_name(&self) -> &str {
        self.spec
            .steps
            .get(self.step)
            .map_or("?", |s| s.name.as_str())
    }

    /// The ramp in this experiment's state (while active, at its step).
    pub fn ramp(&self) -> Option<Ramp> {
        let mut ramp = Ramp::new(self.spec.steps.clone()).ok()?;
        match self.status {
            Status::Running | Status::Paused => {
                for _ in 0..self.step {
                    ramp.advance().ok()?;
                }
                matches!(ramp.state(), RampState::Running { step } if step == self.step)
                    .then_some(ramp)
            }
            Status::Completed => Some(ramp),
            Status::RolledBack | Status::KeptIncumbent => Some(ramp),
        }
    }

    /// The candidate's share of live traffic in this state.
    pub fn candidate_percent(&self) -> f64 {
        match self.status {
            Status::Running | Status::Paused => self
                .spec
                .steps
                .get(self.step)
                .map_or(0.0, |s| s.candidate_percent),
            Status::Completed => 100.0,
            Status::RolledBack | Status::KeptIncumbent => 0.0,
        }
    }

    /// Whether the current step mirrors traffic instead of serving it.
    pub fn is_shadow(&self) -> bool {
        self.status.is_active() && self.spec.steps.get(self.step).is_some_and(|s| s.shadow)
    }

    /// (incumbent, candidate) weights this state puts in Redis.
    pub fn weights(&self) -> (u32, u32) {
        self.spec.split(self.candidate_percent())
    }

    fn not_allowed(&self, action: &'static str) -> ExperimentError {
        ExperimentError::NotAllowed {
            id: self.id.clone(),
            status: self.status.name(),
            action,
        }
    }

    /// The state after `action` at `now_ms`, or why it is not allowed.
    /// Promote moves to the next step (a new step clock), or completes the
    /// experiment from the step before the last.
    pub fn after(
        &self,
        action: Action,
        reason: &str,
        now_ms: u64,
    ) -> Result<Experiment, ExperimentError> {
        let mut next = self.clone();
        next.revision = next_revision(self.revision, now_ms);
        next.updated_ms = now_ms;
        next.status_reason = reason.to_owned();
        match action {
            Action::Promote | Action::Rollback | Action::KeepIncumbent
                if !self.status.is_active() =>
            {
                return Err(self.not_allowed(action.name()));
            }
            Action::Promote => {
                let last = self.spec.steps.len().saturating_sub(1);
                if self.step + 1 >= last {
                    next.step = last;
                    next.status = Status::Completed;
                } else {
                    next.step = self.step + 1;
                }
                next.step_started_ms = now_ms;
            }
            Action::Rollback => next.status = Status::RolledBack,
            Action::KeepIncumbent => next.status = Status::KeptIncumbent,
            Action::Pause if self.status == Status::Running => next.status = Status::Paused,
            Action::Resume if self.status == Status::Paused => next.status = Status::Running,
            Action::Pause | Action::Resume | Action::Create | Action::Hold | Action::Unload => {
                return Err(self.not_allowed(action.name()));
            }
        }
        Ok(next)
    }

    /// A rollback of a completed experiment: allowed while its grace
    /// period is open (the old version is still loaded), and it restores
    /// the incumbent's weights at once; refused after, saying why.
    pub fn after_grace_rollback(
        &self,
        grace: &crate::unload::Grace,
        reason: &str,
        now_ms: u64,
    ) -> Result<Experiment, ExperimentError> {
        use crate::unload::Grace;
        match grace {
            Grace::NotCompleted => self.after(Action::Rollback, reason, now_ms),
            Grace::Over {
                deadline_ms,
                unloaded,
            } => Err(ExperimentError::GraceOver {
                id: self.id.clone(),
                deadline: crate::report::utc(*deadline_ms),
                unloaded: unloaded.clone(),
            }),
            Grace::Open { .. } if self.status == Status::Completed => {
                let mut next = self.clone();
                next.revision = next_revision(self.revision, now_ms);
                next.updated_ms = now_ms;
                next.status_reason = reason.to_owned();
                next.status = Status::RolledBack;
                Ok(next)
            }
            Grace::Open { .. } => Err(self.not_allowed(Action::Rollback.name())),
        }
    }

    /// The state an evaluation row says this experiment reached, when the
    /// row is newer than this state: what the controller finishes after a
    /// crash between writing the evaluation and the experiment row.
    pub fn replay(&self, row: &CanaryEvaluationRow) -> Option<Experiment> {
        if row.experiment_id != self.id || row.revision <= self.revision {
            return None;
        }
        let status = Status::from_code(row.status_after)?;
        let step = row.step_after as usize;
        if step >= self.spec.steps.len() {
            return None;
        }
        let mut next = self.clone();
        next.revision = row.revision;
        next.updated_ms = row.ts_ms;
        if step != self.step {
            next.step_started_ms = row.ts_ms;
        }
        next.step = step;
        next.status = status;
        next.status_reason = row.reason_kind.clone();
        Some(next)
    }
}

/// Who did what, for an evaluation row.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub action: Action,
    pub manual: bool,
    pub actor: &'a str,
    pub reason_kind: &'a str,
    pub reason_json: String,
    pub decision: Option<&'a Decision>,
}

/// The evaluation row of a look or action on `before` that left `after`.
pub fn evaluation_row(
    before: &Experiment,
    after: &Experiment,
    record: &Record<'_>,
    now_ms: u64,
) -> CanaryEvaluationRow {
    let (incumbent_weight, candidate_weight) = after.weights();
    let mut row = CanaryEvaluationRow {
        id: uuid::Uuid::now_v7().to_string(),
        experiment_id: before.id.clone(),
        ts_ms: now_ms,
        date: date_of(now_ms),
        revision: after.revision,
        route: before.route.clone(),
        step: before.step as u32,
        step_name: before.step_name().to_owned(),
        candidate_percent: before.candidate_percent(),
        elapsed_secs: now_ms.saturating_sub(before.step_started_ms) / 1000,
        action: record.action.code(),
        manual: record.manual,
        actor: record.actor.to_owned(),
        reason_kind: record.reason_kind.to_owned(),
        reason_json: record.reason_json.clone(),
        evidence_json: String::new(),
        step_after: after.step as u32,
        status_after: after.status.code(),
        incumbent_weight,
        candidate_weight,
        incumbent_requests: 0,
        candidate_requests: 0,
        incumbent_graded: 0,
        candidate_graded: 0,
        incumbent_quality: None,
        candidate_quality: None,
        incumbent_cost_per_request: None,
        candidate_cost_per_request: None,
        incumbent_quality_per_dollar: None,
        candidate_quality_per_dollar: None,
        qpd_advantage: None,
        qpd_lower: None,
        qpd_upper: None,
        qpd_p_value: None,
        quality_difference: None,
        quality_lower: None,
        quality_upper: None,
        srm_p_value: None,
        guardrails_failing: vec![],
    };
    if let Some(d) = record.decision {
        let e = d.evidence();
        row.evidence_json = serde_json::to_string(e).unwrap_or_default();
        row.elapsed_secs = e.elapsed_secs;
        row.incumbent_requests = e.incumbent.requests;
        row.candidate_requests = e.candidate.requests;
        row.incumbent_graded = e.incumbent.graded;
        row.candidate_graded = e.candidate.graded;
        row.incumbent_quality = e.incumbent.mean_quality;
        row.candidate_quality = e.candidate.mean_quality;
        row.incumbent_cost_per_request = e.incumbent.cost_per_request;
        row.candidate_cost_per_request = e.candidate.cost_per_request;
        row.incumbent_quality_per_dollar = e.incumbent.quality_per_dollar;
        row.candidate_quality_per_dollar = e.candidate.quality_per_dollar;
        if let Some(b) = e.quality_per_dollar {
            row.qpd_advantage = Some(b.estimate);
            row.qpd_lower = Some(b.lower);
            row.qpd_upper = Some(b.upper);
            row.qpd_p_value = Some(b.p_value);
        }
        if let Some(b) = e.quality {
            row.quality_difference = Some(b.estimate);
            row.quality_lower = Some(b.lower);
            row.quality_upper = Some(b.upper);
        }
        row.srm_p_value = e.srm.as_ref().map(|s| s.p_value);
        row.guardrails_failing = e
            .guardrails
            .iter()
            .filter(|g| !matches!(g.verdict, Verdict::Pass | Verdict::NotMeasured))
            .map(|g| format!("{}:{}", json_name(&g.kind), json_name(&g.verdict)))
            .collect();
    }
    // Non-finite floats (a ratio over zero cost) are no data.
    for x in [
        &mut row.incumbent_quality,
        &mut row.candidate_quality,
        &mut row.incumbent_cost_per_request,
        &mut row.candidate_cost_per_request,
        &mut row.incumbent_quality_per_dollar,
        &mut row.candidate_quality_per_dollar,
        &mut row.qpd_advantage,
        &mut row.qpd_lower,
        &mut row.qpd_upper,
        &mut row.qpd_p_value,
        &mut row.quality_difference,
        &mut row.quality_lower,
        &mut row.quality_upper,
        &mut row.srm_p_value,
    ] {
        *x = x.filter(|v| v.is_finite());
    }
    row
}

/// The serde name of a unit enum value (`error_rate`, `critical`).
pub fn json_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// The `kind` of a decision's reason (`min_samples`, …) and the reason as
/// JSON; `promote` for a promotion.
pub fn reason_of(d: &Decision) -> (String, String) {
    match d.reason() {
        Some(r) => {
            let json = serde_json::to_value(r).unwrap_or_default();
            let kind = json
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("?")
                .to_owned();
            (kind, json.to_string())
        }
        None => ("promote".into(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use flywheel_canary::{decide, ArmData, ArmSummary, Input, Request, Settings};

    use super::*;
    use crate::spec::QualityMetric;

    fn experiment() -> Experiment {
        let spec = Spec {
            quality: vec![QualityMetric::parse("thumbs_up").unwrap()],
            steps: Spec::parse_steps("shadow,5,50,100").unwrap(),
            ..Spec::default()
        };
        Experiment::new("chat", "base", "tuned", spec, "test", 1_000).unwrap()
    }

    #[test]
    fn walks_the_ramp_and_round_trips_as_a_row() {
        let mut e = experiment();
        assert_eq!(e.weights(), (10_000, 0));
        assert!(e.is_shadow());
        let mut seen = vec![];
        for t in 1..=3u64 {
            e = e
                .after(Action::Promote, "promote", 1_000 + t * 1000)
                .unwrap();
            seen.push((e.step, e.status, e.weights()));
            assert_eq!(e.step_started_ms, 1_000 + t * 1000);
        }
        assert_eq!(
            seen,
            [
                (1, Status::Running, (9_500, 500)),
                (2, Status::Running, (5_000, 5_000)),
                (3, Status::Completed, (0, 10_000)),
            ]
        );
        assert!(e.after(Action::Promote, "", 9_000).is_err());
        assert!(e.after(Action::Rollback, "", 9_000).is_err());
        let back = Experiment::from_row(e.to_row()).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.to_row().step_name, "100%");
    }

    #[test]
    fn pause_resume_rollback() {
        let e = experiment()
            .after(Action::Promote, "promote", 2_000)
            .unwrap();
        let p = e.after(Action::Pause, "by hand", 3_000).unwrap();
        assert_eq!((p.status, p.weights()), (Status::Paused, e.weights()));
        assert!(p.revision > e.revision);
        assert!(p.after(Action::Pause, "", 3_500).is_err());
        let r = p.after(Action::Resume, "", 4_000).unwrap();
        assert_eq!(
            (r.status, r.step, r.step_started_ms),
            (Status::Running, 1, 2_000)
        );
        let b = r.after(Action::Rollback, "error_rate", 5_000).unwrap();
        assert_eq!(
            (b.status, b.step, b.weights()),
            (Status::RolledBack, 1, (10_000, 0))
        );
        assert!(b.after(Action::Resume, "", 6_000).is_err());
        let k = r
            .after(Action::KeepIncumbent, "inconclusive", 5_000)
            .unwrap();
        assert_eq!(
            (k.status, k.weights()),
            (Status::KeptIncumbent, (10_000, 0))
        );
        assert!(Status::Paused.is_active() && !Status::Completed.is_active());
        assert!(r.ramp().is_some());
    }

    #[test]
    fn replays_a_recorded_transition() {
        let e = experiment();
        let next = e.after(Action::Promote, "promote", 5_000).unwrap();
        let row = evaluation_row(
            &e,
            &next,
            &Record {
                action: Action::Promote,
                manual: false,
                actor: "controller",
                reason_kind: "promote",
                reason_json: String::new(),
                decision: None,
            },
            5_000,
        );
        assert_eq!((row.step, row.step_after), (0, 1));
        assert_eq!((row.incumbent_weight, row.candidate_weight), (9_500, 500));
        let replayed = e.replay(&row).unwrap();
        assert_eq!(
            (
                replayed.step,
                replayed.status,
                replayed.revision,
                replayed.step_started_ms
            ),
            (1, Status::Running, next.revision, 5_000)
        );
        // Already applied: nothing to do.
        assert!(next.replay(&row).is_none());
    }

    #[test]
    fn evaluation_row_carries_the_evidence() {
        let mut i = ArmSummary::default();
        let mut c = ArmSummary::default();
        for k in 0..200 {
            let q = Some(if k % 3 == 0 { 0.0 } else { 1.0 });
            i.record(&Request {
                cost_usd: 0.002,
                quality: q,
                error: false,
                fallback: false,
            });
            c.record(&Request {
                cost_usd: 0.001,
                quality: if k % 2 == 0 { q } else { None },
                error: k % 50 == 0,
                fallback: false,
            });
        }
        let e = experiment();
        let step = e.spec.steps[0].clone();
        let d = decide(
            &Settings::default(),
            &Input {
                step: &step,
                elapsed_secs: 30,
                incumbent: ArmData::summary_only(&i),
                candidate: ArmData::summary_only(&c),
            },
        )
        .unwrap();
        let (kind, json) = reason_of(&d);
        let row = evaluation_row(
            &e,
            &e,
            &Record {
                action: Action::from_decision(&d),
                manual: false,
                actor: "controller",
                reason_kind: &kind,
                reason_json: json,
                decision: Some(&d),
            },
            31_000,
        );
        assert_eq!(row.action, canary_action::HOLD);
        assert_eq!(row.reason_kind, "min_duration");
        assert_eq!((row.incumbent_requests, row.candidate_graded), (200, 100));
        assert!(row.qpd_lower.is_some() && row.quality_upper.is_some());
        assert_eq!(row.incumbent_quality, d.evidence().incumbent.mean_quality);
        assert_eq!(
            row.evidence_json,
            serde_json::to_string(d.evidence()).unwrap()
        );
        let back: flywheel_canary::Evidence = serde_json::from_str(&row.evidence_json).unwrap();
        assert_eq!(back.candidate.graded, 100);
        assert_eq!(back.guardrails.len(), d.evidence().guardrails.len());
    }
}
