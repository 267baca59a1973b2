//! Freeing the model version an experiment no longer serves (pure: the
//! controller does the HTTP calls and the records).
//!
//! * Ended without a promotion (rolled back, automatically or by hand;
//!   incumbent kept): the candidate's version
//!   ([`EnginePlan::candidate_model`]) is unloaded from every named engine
//!   once its weight is 0 in Redis and `settle` has passed since (the
//!   gateways poll the weights, so they may still send for a moment; the
//!   engine's `DELETE` then drains what is in flight before freeing it).
//! * Promoted to 100 %: the old version ([`EnginePlan::incumbent_model`])
//!   stays loaded for `grace_secs`, during which `rollback` restores the
//!   incumbent at once ([`grace`]); when the grace period ends it is
//!   unloaded, and a rollback is refused from then on.
//!
//! Each attempt is an evaluation row with action `unload` whose
//! `reason_json` is an [`UnloadRecord`]: per engine, unloaded (2xx, or
//! 404: the version is not there, which is the goal) or the error. An
//! engine counts as done once any record says so; the others are tried
//! again at the next look. So a restarted controller finishes a pending
//! unload from the records and never repeats a done one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::experiment::{Experiment, Status};

/// Which of the experiment's versions a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The candidate's version, after the experiment ended without it.
    Candidate,
    /// The old incumbent's version, after the grace period.
    Incumbent,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Incumbent => "incumbent",
        }
    }
}

/// One engine's answer to an unload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineOutcome {
    /// The engine's base URL, as in the spec.
    pub engine: String,
    /// Unloaded, or not there (404).
    pub ok: bool,
    /// HTTP status, when the engine answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed (unreachable, timeout, 401, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests that were in flight and drained before the unload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<u64>,
}

/// The `reason_json` of an `unload` evaluation row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnloadRecord {
    /// Always `unload`.
    pub kind: String,
    pub model: String,
    pub role: Role,
    pub results: Vec<EngineOutcome>,
    /// The row's time (not in the JSON).
    #[serde(skip)]
    pub ts_ms: u64,
}

impl UnloadRecord {
    pub fn new(model: &str, role: Role, results: Vec<EngineOutcome>) -> Self {
        Self {
            kind: "unload".into(),
            model: model.to_owned(),
            role,
            results,
            ts_ms: 0,
        }
    }

    /// `unload` when every engine of this attempt is done, else
    /// `unload_failed`: the row's reason kind.
    pub fn reason_kind(&self) -> &'static str {
        if self.results.iter().all(|r| r.ok) {
            "unload"
        } else {
            "unload_failed"
        }
    }
}

/// What an ended experiment still has to unload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub role: Role,
    pub model: String,
    /// The variant whose weight must be 0 in Redis first.
    pub variant: String,
    /// Not before this time (the end of the grace period; the end of the
    /// experiment for a candidate).
    pub not_before_ms: u64,
}

/// The version an experiment in this state should free, if it names one.
/// `updated_ms` of an ended experiment is when it ended: it has no later
/// revision but a rollback within the grace period.
pub fn target(exp: &Experiment) -> Option<Target> {
    let plan = &exp.spec.engine;
    if plan.engines.is_empty() {
        return None;
    }
    match exp.status {
        Status::RolledBack | Status::KeptIncumbent => {
            plan.candidate_model.as_ref().map(|m| Target {
                role: Role::Candidate,
                model: m.clone(),
                variant: exp.candidate.clone(),
                not_before_ms: exp.updated_ms,
            })
        }
        Status::Completed => plan.incumbent_model.as_ref().map(|m| Target {
            role: Role::Incumbent,
            model: m.clone(),
            variant: exp.incumbent.clone(),
            not_before_ms: grace_deadline_ms(exp),
        }),
        Status::Running | Status::Paused => None,
    }
}

/// When a completed experiment's grace period ends.
pub fn grace_deadline_ms(exp: &Experiment) -> u64 {
    exp.updated_ms
        .saturating_add(exp.spec.engine.grace_secs.saturating_mul(1000))
}

/// Engines on which `model` is done (unloaded or absent), by any record.
pub fn done_engines<'a>(records: &'a [UnloadRecord], model: &str, role: Role) -> BTreeSet<&'a str> {
    records
        .iter()
        .filter(|r| r.model == model && r.role == role)
        .flat_map(|r| r.results.iter())
        .filter(|o| o.ok)
        .map(|o| o.engine.as_str())
        .collect()
}

/// Why nothing is unloaded at this look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The grace period after the promotion runs until then.
    Grace { until_ms: u64 },
    /// The variant's weight in Redis is not 0 (yet): the gateways may
    /// still route to it.
    Weight,
    /// The weight is 0; the gateways' polls and in-flight routing settle
    /// until then.
    Settle { until_ms: u64 },
    /// Another experiment serves or tests this version.
    InUse,
}

/// The controller's next move for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every engine is done.
    Done,
    Wait(Wait),
    /// Unload from these engines (the ones not done yet).
    Unload(Vec<String>),
}

/// The next move: `zero_since_ms` is since when the controller has seen
/// the variant's weight at 0 in Redis (None: not 0 now); `in_use` whether
/// another experiment names the version.
pub fn next_step(
    t: &Target,
    engines: &[String],
    records: &[UnloadRecord],
    now_ms: u64,
    zero_since_ms: Option<u64>,
    settle_ms: u64,
    in_use: bool,
) -> Step {
    let done = done_engines(records, &t.model, t.role);
    let pending: Vec<String> = engines
        .iter()
        .filter(|e| !done.contains(e.as_str()))
        .cloned()
        .collect();
    if pending.is_empty() {
        return Step::Done;
    }
    if now_ms < t.not_before_ms && t.role == Role::Incumbent {
        return Step::Wait(Wait::Grace {
            until_ms: t.not_before_ms,
        });
    }
    if in_use {
        return Step::Wait(Wait::InUse);
    }
    let Some(zero_since) = zero_since_ms else {
        return Step::Wait(Wait::Weight);
    };
    // Settle from the later of the end and the first sight of weight 0
    // (a restarted controller starts that clock again: later, never
    // sooner).
    let until_ms = t.not_before_ms.max(zero_since).saturating_add(settle_ms);
    if now_ms < until_ms {
        return Step::Wait(Wait::Settle { until_ms });
    }
    Step::Unload(pending)
}

/// Where a completed experiment stands for a manual rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grace {
    /// Not completed: the usual rules apply.
    NotCompleted,
    /// A rollback restores the incumbent at once.
    Open { deadline_ms: u64 },
    /// Too late: the grace period ended (and the old version, when named,
    /// is being or was unloaded).
    Over {
        deadline_ms: u64,
        unloaded: Option<String>,
    },
}

/// The grace state of `exp` at `now_ms`. Once an unload of the old
/// version was attempted it is over, whatever the clock says: the
/// version may be gone from some engine.
pub fn grace(exp: &Experiment, records: &[UnloadRecord], now_ms: u64) -> Grace {
    if exp.status != Status::Completed {
        return Grace::NotCompleted;
    }
    let deadline_ms = grace_deadline_ms(exp);
    let attempted = records.iter().any(|r| r.role == Role::Incumbent);
    if now_ms >= deadline_ms || attempted {
        Grace::Over {
            deadline_ms,
            unloaded: exp
                .spec
                .engine
                .incumbent_model
                .clone()
                .filter(|_| attempted),
        }
    } else {
        Grace::Open { deadline_ms }
    }
}

/// Versions that must stay loaded whatever an ended experiment says:
/// those a running or paused experiment names, and the one each route
/// serves after its newest experiment (its candidate when completed, its
/// incumbent otherwise).
pub fn in_use(experiments: &[Experiment]) -> BTreeSet<String> {
    let mut newest: std::collections::BTreeMap<&str, &Experiment> = Default::default();
    for e in experiments {
        let slot = newest.entry(e.route.as_str()).or_insert(e);
        if (e.created_ms, e.id.as_str()) >= (slot.created_ms, slot.id.as_str()) {
            *slot = e;
        }
    }
    let mut used = BTreeSet::new();
    for e in experiments {
        if e.status.is_active() {
            used.extend(e.spec.engine.models().map(str::to_owned));
        }
    }
    for e in newest.values() {
        let serving = match e.status {
            Status::Completed => &e.spec.engine.candidate_model,
            Status::RolledBack | Status::KeptIncumbent => &e.spec.engine.incumbent_model,
            Status::Running | Status::Paused => continue,
        };
        used.extend(serving.iter().cloned());
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        experiment::Action,
        spec::{EnginePlan, QualityMetric, Spec},
    };

    const E1: &str = "http://127.0.0.1:1";
    const E2: &str = "http://127.0.0.1:2";

    fn experiment(route: &str, created: u64) -> Experiment {
        let spec = Spec {
            quality: vec![QualityMetric::parse("thumbs_up").unwrap()],
            steps: Spec::parse_steps("5,100").unwrap(),
            engine: EnginePlan {
                candidate_model: Some("v2".into()),
                incumbent_model: Some("v1".into()),
                engines: vec![E1.into(), E2.into()],
                grace_secs: 60,
            },
            ..Spec::default()
        };
        Experiment::new(route, "base", "tuned", spec, "test", created).unwrap()
    }

    fn engines(e: &Experiment) -> Vec<String> {
        e.spec.engine.engines.clone()
    }

    fn outcome(engine: &str, ok: bool) -> EngineOutcome {
        EngineOutcome {
            engine: engine.into(),
            ok,
            status: ok.then_some(200),
            error: (!ok).then(|| "connection refused".into()),
            drained: None,
        }
    }

    #[test]
    fn a_rolled_back_candidate_is_unloaded_after_weight_zero_and_settle() {
        let running = experiment("chat", 1_000);
        assert_eq!(target(&running), None);
        let rolled = running
            .after(Action::Rollback, "error_rate", 10_000)
            .unwrap();
        let t = target(&rolled).unwrap();
        assert_eq!(
            (t.role, t.model.as_str(), t.variant.as_str()),
            (Role::Candidate, "v2", "tuned")
        );
        let step = |now, zero, records: &[UnloadRecord]| {
            next_step(&t, &engines(&rolled), records, now, zero, 500, false)
        };
        // Weight not 0 yet; then 0, settling; then both engines.
        assert_eq!(step(10_100, None, &[]), Step::Wait(Wait::Weight));
        assert_eq!(
            step(10_200, Some(10_100), &[]),
            Step::Wait(Wait::Settle { until_ms: 10_600 })
        );
        assert_eq!(
            step(10_600, Some(10_100), &[]),
            Step::Unload(vec![E1.into(), E2.into()])
        );
        // One engine failed: only it is tried again; both done: done, for good.
        let first = UnloadRecord::new(
            "v2",
            Role::Candidate,
            vec![outcome(E1, true), outcome(E2, false)],
        );
        assert_eq!(first.reason_kind(), "unload_failed");
        assert_eq!(
            step(11_000, Some(10_100), std::slice::from_ref(&first)),
            Step::Unload(vec![E2.into()])
        );
        let second = UnloadRecord::new("v2", Role::Candidate, vec![outcome(E2, true)]);
        assert_eq!(second.reason_kind(), "unload");
        assert_eq!(step(12_000, Some(10_100), &[first, second]), Step::Done);
        // Records of another version or role do not count.
        let other = UnloadRecord::new(
            "v1",
            Role::Incumbent,
            vec![outcome(E1, true), outcome(E2, true)],
        );
        assert!(matches!(
            step(12_000, Some(10_100), &[other]),
            Step::Unload(_)
        ));
        // Kept incumbent: the same.
        let kept = running
            .after(Action::KeepIncumbent, "inconclusive", 10_000)
            .unwrap();
        assert_eq!(target(&kept).map(|t| t.role), Some(Role::Candidate));
    }

    #[test]
    fn a_version_in_use_elsewhere_is_never_unloaded() {
        let rolled = experiment("chat", 1_000)
            .after(Action::Rollback, "x", 2_000)
            .unwrap();
        let t = target(&rolled).unwrap();
        assert_eq!(
            next_step(&t, &engines(&rolled), &[], 99_000, Some(2_000), 0, true),
            Step::Wait(Wait::InUse)
        );
        // A running experiment elsewhere tests v2; the route's newest ended
        // experiment serves its incumbent again (v1).
        let other = experiment("other", 3_000);
        let used = in_use(&[rolled.clone(), other]);
        assert!(used.contains("v2") && used.contains("v1"));
        assert_eq!(
            in_use(std::slice::from_ref(&rolled)),
            BTreeSet::from(["v1".to_owned()])
        );
        // Completed: the candidate serves.
        let done = experiment("chat", 1_000)
            .after(Action::Promote, "promote", 2_000)
            .unwrap();
        assert_eq!(done.status, Status::Completed);
        assert_eq!(in_use(&[done]), BTreeSet::from(["v2".to_owned()]));
    }

    #[test]
    fn the_old_version_stays_loaded_through_the_grace_period() {
        let done = experiment("chat", 1_000)
            .after(Action::Promote, "promote", 10_000)
            .unwrap();
        let t = target(&done).unwrap();
        assert_eq!(
            (t.role, t.model.as_str(), t.variant.as_str()),
            (Role::Incumbent, "v1", "base")
        );
        assert_eq!(t.not_before_ms, 70_000);
        let e = engines(&done);
        assert_eq!(
            next_step(&t, &e, &[], 69_999, Some(10_000), 500, false),
            Step::Wait(Wait::Grace { until_ms: 70_000 })
        );
        assert_eq!(
            next_step(&t, &e, &[], 70_000, None, 500, false),
            Step::Wait(Wait::Weight)
        );
        assert_eq!(
            next_step(&t, &e, &[], 70_500, Some(10_000), 500, false),
            Step::Unload(e.clone())
        );
        // Within the grace period a rollback is allowed; at its end, or
        // once an unload was attempted, it is not.
        assert_eq!(
            grace(&done, &[], 69_999),
            Grace::Open {
                deadline_ms: 70_000
            }
        );
        assert_eq!(
            grace(&done, &[], 70_000),
            Grace::Over {
                deadline_ms: 70_000,
                unloaded: None
            }
        );
        let tried = UnloadRecord::new("v1", Role::Incumbent, vec![outcome(E1, false)]);
        assert_eq!(
            grace(&done, &[tried], 20_000),
            Grace::Over {
                deadline_ms: 70_000,
                unloaded: Some("v1".into())
            }
        );
        assert_eq!(grace(&experiment("chat", 1), &[], 2), Grace::NotCompleted);
    }

    #[test]
    fn a_rollback_in_the_grace_period_frees_the_candidate_instead() {
        let done = experiment("chat", 1_000)
            .after(Action::Promote, "promote", 10_000)
            .unwrap();
        let back = done
            .after_grace_rollback(&grace(&done, &[], 20_000), "manual", 20_000)
            .unwrap();
        assert_eq!(
            (back.status, back.weights()),
            (Status::RolledBack, (10_000, 0))
        );
        let t = target(&back).unwrap();
        assert_eq!((t.role, t.model.as_str()), (Role::Candidate, "v2"));
        // The old version serves again.
        assert_eq!(in_use(&[back]), BTreeSet::from(["v1".to_owned()]));
        let late = done.after_grace_rollback(&grace(&done, &[], 70_000), "manual", 70_000);
        assert!(late.unwrap_err().to_string().contains("grace period"));
    }

    #[test]
    fn records_round_trip_as_reason_json() {
        let r = UnloadRecord::new(
            "v2",
            Role::Candidate,
            vec![outcome(E1, true), outcome(E2, false)],
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains("\"kind\":\"unload\"") && json.contains("\"role\":\"candidate\""),
            "{json}"
        );
        let back: UnloadRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // Without engines or named versions nothing is ever unloaded.
        let mut plain = experiment("chat", 1);
        plain.spec.engine = EnginePlan::default();
        let plain = plain.after(Action::Rollback, "x", 2).unwrap();
        assert_eq!(target(&plain), None);
    }
}
