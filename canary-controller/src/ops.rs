//! Creating experiments and the manual actions (pause, resume, promote,
//! rollback): recorded like the controller's own transitions, with
//! `manual = 1` and the operator as actor.
//!
//! A rollback of a completed experiment is allowed within its grace period
//! ([`crate::unload::grace`]) while no newer experiment owns the route: it
//! restores the incumbent's weights at once, and the controller then
//! unloads the candidate's version.

use flywheel_feedback::now_ms;

use crate::{
    controller::{apply_weights, Error},
    experiment::{evaluation_row, Action, Experiment, Record},
    spec::Spec,
    store::CanaryStore,
    weights::Weights,
};

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Controller(#[from] Error),
    #[error("invalid experiment: {0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("route {route} already has an active experiment: {id}")]
    Busy { route: String, id: String },
    #[error("incumbent and candidate must differ")]
    SameVariant,
    #[error(
        "experiment {id} completed, but the newer experiment {newer} owns route {route} now: \
         roll back that one, or create a new experiment"
    )]
    Superseded {
        id: String,
        route: String,
        newer: String,
    },
}

impl From<crate::store::Error> for OpError {
    fn from(e: crate::store::Error) -> Self {
        Self::Controller(e.into())
    }
}

impl From<crate::experiment::ExperimentError> for OpError {
    fn from(e: crate::experiment::ExperimentError) -> Self {
        Self::Controller(e.into())
    }
}

/// What became of the weights after an action.
#[derive(Debug)]
pub enum WeightsApplied {
    Yes,
    /// Redis did not answer: the controller writes them when it does.
    Later(String),
}

async fn try_apply(weights: &Weights, exp: &Experiment) -> WeightsApplied {
    match apply_weights(weights, exp).await {
        Ok(()) => WeightsApplied::Yes,
        Err(e) => WeightsApplied::Later(e.to_string()),
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewExperiment<'a> {
    pub route: &'a str,
    pub incumbent: &'a str,
    pub candidate: &'a str,
    pub spec: Spec,
    /// Who or what asked for it (`tuner:RUN`, `cli:USER`).
    pub origin: &'a str,
    /// Recorded on the `create` evaluation row.
    pub actor: &'a str,
}

/// Records a new experiment at its first step and writes its weights.
pub async fn create(
    store: &CanaryStore,
    weights: &Weights,
    new: NewExperiment<'_>,
) -> Result<(Experiment, WeightsApplied), OpError> {
    let NewExperiment {
        route,
        incumbent,
        candidate,
        spec,
        origin,
        actor,
    } = new;
    if incumbent == candidate {
        return Err(OpError::SameVariant);
    }
    if let Some(busy) = store
        .experiments()
        .await?
        .into_iter()
        .find(|e| e.route == route && e.status.is_active())
    {
        return Err(OpError::Busy {
            route: route.to_owned(),
            id: busy.id,
        });
    }
    let now = now_ms();
    let exp = Experiment::new(route, incumbent, candidate, spec, origin, now)?;
    let row = evaluation_row(
        &exp,
        &exp,
        &Record {
            action: Action::Create,
            manual: true,
            actor,
            reason_kind: "created",
            reason_json: String::new(),
            decision: None,
        },
        now,
    );
    store.record(&row, Some(&exp)).await?;
    let applied = try_apply(weights, &exp).await;
    Ok((exp, applied))
}

/// A manual pause, resume, promote (one step), rollback or keep-incumbent.
pub async fn manual(
    store: &CanaryStore,
    weights: &Weights,
    id: &str,
    action: Action,
    actor: &str,
    reason: &str,
) -> Result<(Experiment, WeightsApplied), OpError> {
    let mut exp = store.experiment(id).await?;
    if let Some(t) = store.latest_transition(&exp.id).await? {
        if let Some(next) = exp.replay(&t) {
            exp = next;
        }
    }
    let now = now_ms();
    let reason = if reason.is_empty() { "manual" } else { reason };
    let after = if action == Action::Rollback && exp.status == crate::Status::Completed {
        if let Some(newer) = store
            .experiments()
            .await?
            .into_iter()
            .find(|e| e.route == exp.route && (e.created_ms, &e.id) > (exp.created_ms, &exp.id))
        {
            return Err(OpError::Superseded {
                id: exp.id,
                route: exp.route,
                newer: newer.id,
            });
        }
        let records = store.unload_records(&exp.id).await?;
        exp.after_grace_rollback(&crate::unload::grace(&exp, &records, now), reason, now)?
    } else {
        exp.after(action, reason, now)?
    };
    let row = evaluation_row(
        &exp,
        &after,
        &Record {
            action,
            manual: true,
            actor,
            reason_kind: "manual",
            reason_json: serde_json::json!({"kind": "manual", "reason": reason}).to_string(),
            decision: None,
        },
        now,
    );
    store.record(&row, Some(&after)).await?;
    let applied = try_apply(weights, &after).await;
    Ok((after, applied))
}
