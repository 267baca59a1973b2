//! The ramp: the candidate's traffic steps (shadow → 1 % → 5 % → 25 % →
//! 50 % → 100 % by default) as a small state machine.
//!
//! ```text
//!            advance            advance                 advance (into the last step)
//! Running(0) ──────▶ Running(1) ──────▶ … Running(k) ─────────────────────────────▶ Completed
//!     │                  │                   │
//!     └── rollback ──────┴───────────────────┴──▶ RolledBack { step }
//!     └── keep_incumbent ────────────────────────▶ KeptIncumbent { step }
//! ```
//!
//! The last step must be 100 % live: reaching it is the end of the canary
//! (the candidate serves everything, nothing is left to compare), so
//! [`Ramp::advance`] from the step before it goes straight to
//! [`RampState::Completed`]. `Completed`, `RolledBack` and `KeptIncumbent`
//! are terminal. The decision for a step is made on that step's data
//! only; the I/O layer resets its window and clock on every transition.

use serde::{Deserialize, Serialize};

use crate::decision::Decision;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampStep {
    pub name: String,
    /// Share of live traffic served by the candidate, in percent.
    pub candidate_percent: f64,
    /// The candidate gets a mirrored copy of the incumbent's traffic and
    /// serves no user (`candidate_percent` is 0).
    pub shadow: bool,
}

impl RampStep {
    pub fn live(percent: f64) -> Self {
        Self {
            name: format!("{percent}%"),
            candidate_percent: percent,
            shadow: false,
        }
    }

    pub fn shadow() -> Self {
        Self {
            name: "shadow".to_owned(),
            candidate_percent: 0.0,
            shadow: true,
        }
    }

    /// The assignment weights (incumbent, candidate) the sample-ratio check
    /// expects: equal under shadow (every request is mirrored), otherwise
    /// the live split.
    pub fn expected_split(&self) -> [f64; 2] {
        if self.shadow {
            [1.0, 1.0]
        } else {
            [100.0 - self.candidate_percent, self.candidate_percent]
        }
    }
}

/// shadow → 1 % → 5 % → 25 % → 50 % → 100 %.
pub fn default_steps() -> Vec<RampStep> {
    let mut steps = vec![RampStep::shadow()];
    steps.extend([1.0, 5.0, 25.0, 50.0, 100.0].map(RampStep::live));
    steps
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RampState {
    Running {
        step: usize,
    },
    /// The candidate serves all traffic.
    Completed,
    RolledBack {
        step: usize,
    },
    KeptIncumbent {
        step: usize,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RampError {
    #[error("a ramp needs at least one step before the final 100% step")]
    TooFewSteps,
    #[error("the last step must be 100% live, got {0:?}")]
    LastNotFull(String),
    #[error("step {0:?}: shadow steps come first and have 0%")]
    BadShadow(String),
    #[error("step {0:?}: live steps need 0 < percent ≤ 100, strictly increasing")]
    BadPercent(String),
    #[error("step {0} is not a step before the last")]
    StepOutOfRange(usize),
    #[error("the ramp has ended ({0:?})")]
    Terminal(RampState),
}

/// Deserialising validates like [`Ramp::new`] and checks the state's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRamp")]
pub struct Ramp {
    steps: Vec<RampStep>,
    state: RampState,
}

#[derive(Deserialize)]
struct RawRamp {
    steps: Vec<RampStep>,
    state: RampState,
}

impl TryFrom<RawRamp> for Ramp {
    type Error = RampError;

    fn try_from(raw: RawRamp) -> Result<Self, RampError> {
        let mut ramp = Self::new(raw.steps)?;
        match raw.state {
            RampState::Running { step }
            | RampState::RolledBack { step }
            | RampState::KeptIncumbent { step }
                if step + 1 >= ramp.steps.len() =>
            {
                return Err(RampError::StepOutOfRange(step));
            }
            _ => {}
        }
        ramp.state = raw.state;
        Ok(ramp)
    }
}

impl Ramp {
    /// Validates `steps` and starts at the first.
    pub fn new(steps: Vec<RampStep>) -> Result<Self, RampError> {
        if steps.len() < 2 {
            return Err(RampError::TooFewSteps);
        }
        let mut seen_live = false;
        let mut last_percent = 0.0;
        for step in &steps {
            if step.shadow {
                if seen_live || step.candidate_percent != 0.0 {
                    return Err(RampError::BadShadow(step.name.clone()));
                }
                continue;
            }
            let p = step.candidate_percent;
            if !(p > last_percent && p <= 100.0) {
                return Err(RampError::BadPercent(step.name.clone()));
            }
            seen_live = true;
            last_percent = p;
        }
        match steps.last() {
            Some(last) if !last.shadow && last.candidate_percent == 100.0 => {}
            last => {
                return Err(RampError::LastNotFull(
                    last.map(|s| s.name.clone()).unwrap_or_default(),
                ))
            }
        }
        Ok(Self {
            steps,
            state: RampState::Running { step: 0 },
        })
    }

    pub fn steps(&self) -> &[RampStep] {
        &self.steps
    }

    pub fn state(&self) -> RampState {
        self.state
    }

    pub fn is_terminal(&self) -> bool {
        !matches!(self.state, RampState::Running { .. })
    }

    /// The step being evaluated, while running.
    pub fn current(&self) -> Option<&RampStep> {
        match self.state {
            RampState::Running { step } => self.steps.get(step),
            _ => None,
        }
    }

    /// The candidate's share of live traffic to configure now.
    pub fn candidate_percent(&self) -> f64 {
        match self.state {
            RampState::Running { step } => {
                self.steps.get(step).map_or(0.0, |s| s.candidate_percent)
            }
            RampState::Completed => 100.0,
            RampState::RolledBack { .. } | RampState::KeptIncumbent { .. } => 0.0,
        }
    }

    fn running(&self) -> Result<usize, RampError> {
        match self.state {
            RampState::Running { step } => Ok(step),
            other => Err(RampError::Terminal(other)),
        }
    }

    /// Next step; into the last step is completion.
    pub fn advance(&mut self) -> Result<RampState, RampError> {
        let step = self.running()?;
        self.state = if step + 2 >= self.steps.len() {
            RampState::Completed
        } else {
            RampState::Running { step: step + 1 }
        };
        Ok(self.state)
    }

    pub fn rollback(&mut self) -> Result<RampState, RampError> {
        let step = self.running()?;
        self.state = RampState::RolledBack { step };
        Ok(self.state)
    }

    pub fn keep_incumbent(&mut self) -> Result<RampState, RampError> {
        let step = self.running()?;
        self.state = RampState::KeptIncumbent { step };
        Ok(self.state)
    }

    /// Applies a decision: promote advances, hold stays, rollback and keep
    /// end the ramp. Returns whether the state changed.
    pub fn apply(&mut self, decision: &Decision) -> Result<bool, RampError> {
        let before = self.state;
        match decision {
            Decision::Promote { .. } => self.advance()?,
            Decision::Hold { .. } => {
                self.running()?;
                self.state
            }
            Decision::Rollback { .. } => self.rollback()?,
            Decision::KeepIncumbent { .. } => self.keep_incumbent()?,
        };
        Ok(before != self.state)
    }
}

impl Default for Ramp {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            state: RampState::Running { step: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_default_ramp_to_completion() {
        let mut ramp = Ramp::new(default_steps()).unwrap();
        assert_eq!(ramp, Ramp::default());
        assert!(ramp.current().unwrap().shadow);
        assert_eq!(ramp.candidate_percent(), 0.0);
        let mut seen = vec![];
        while let Some(step) = ramp.current() {
            seen.push(step.candidate_percent);
            ramp.advance().unwrap();
        }
        assert_eq!(seen, [0.0, 1.0, 5.0, 25.0, 50.0]);
        assert_eq!(ramp.state(), RampState::Completed);
        assert_eq!(ramp.candidate_percent(), 100.0);
        assert!(ramp.is_terminal());
        assert_eq!(
            ramp.advance(),
            Err(RampError::Terminal(RampState::Completed))
        );
    }

    #[test]
    fn rollback_and_keep_are_terminal() {
        let mut ramp = Ramp::default();
        ramp.advance().unwrap();
        ramp.advance().unwrap();
        assert_eq!(ramp.candidate_percent(), 5.0);
        assert_eq!(ramp.rollback(), Ok(RampState::RolledBack { step: 2 }));
        assert_eq!(ramp.candidate_percent(), 0.0);
        assert!(ramp.keep_incumbent().is_err());
        assert!(ramp.rollback().is_err());

        let mut ramp = Ramp::default();
        assert_eq!(
            ramp.keep_incumbent(),
            Ok(RampState::KeptIncumbent { step: 0 })
        );
        assert!(ramp.advance().is_err());
    }

    #[test]
    fn applies_decisions() {
        use crate::{
            decision::{decide, ArmData, Input, Reason, Settings},
            summary::ArmSummary,
        };
        let empty = ArmSummary::default();
        let step = RampStep::shadow();
        let input = Input {
            step: &step,
            elapsed_secs: 0,
            incumbent: ArmData::summary_only(&empty),
            candidate: ArmData::summary_only(&empty),
        };
        let hold = decide(&Settings::default(), &input).unwrap();
        assert!(matches!(hold, Decision::Hold { .. }));
        let evidence = hold.evidence().clone();
        let mut ramp = Ramp::default();
        assert_eq!(ramp.apply(&hold), Ok(false));
        let promote = Decision::Promote {
            evidence: evidence.clone(),
        };
        assert_eq!(ramp.apply(&promote), Ok(true));
        assert_eq!(ramp.state(), RampState::Running { step: 1 });
        let rollback = Decision::Rollback {
            reason: Reason::QualityRegression,
            evidence,
        };
        assert_eq!(ramp.apply(&rollback), Ok(true));
        assert_eq!(ramp.state(), RampState::RolledBack { step: 1 });
        assert!(ramp.apply(&hold).is_err());
    }

    #[test]
    fn validates_steps() {
        let live = |ps: &[f64]| ps.iter().copied().map(RampStep::live).collect::<Vec<_>>();
        assert!(Ramp::new(live(&[10.0, 100.0])).is_ok());
        assert_eq!(Ramp::new(live(&[100.0])), Err(RampError::TooFewSteps));
        assert!(matches!(
            Ramp::new(live(&[10.0, 50.0])),
            Err(RampError::LastNotFull(_))
        ));
        assert!(matches!(
            Ramp::new(live(&[50.0, 10.0, 100.0])),
            Err(RampError::BadPercent(_))
        ));
        assert!(matches!(
            Ramp::new(live(&[0.0, 100.0])),
            Err(RampError::BadPercent(_))
        ));
        let mut late_shadow = live(&[10.0, 100.0]);
        late_shadow.insert(1, RampStep::shadow());
        assert!(matches!(
            Ramp::new(late_shadow),
            Err(RampError::BadShadow(_))
        ));
        let only_shadow = vec![RampStep::shadow(), RampStep::shadow()];
        assert!(matches!(
            Ramp::new(only_shadow),
            Err(RampError::LastNotFull(_))
        ));
    }

    #[test]
    fn expected_split_and_state_serialise() {
        assert_eq!(RampStep::shadow().expected_split(), [1.0, 1.0]);
        assert_eq!(RampStep::live(5.0).expected_split(), [95.0, 5.0]);
        let json = serde_json::to_string(&RampState::RolledBack { step: 3 }).unwrap();
        assert_eq!(json, r#"{"state":"rolled_back","step":3}"#);
        let ramp: Ramp =
            serde_json::from_str(&serde_json::to_string(&Ramp::default()).unwrap()).unwrap();
        assert_eq!(ramp, Ramp::default());
        let bad = r#"{"steps":[{"name":"a","candidate_percent":10.0,"shadow":false},{"name":"b","candidate_percent":100.0,"shadow":false}],"state":{"state":"running","step":1}}"#;
        assert!(serde_json::from_str::<Ramp>(bad).is_err());
        assert!(serde_json::from_str::<Ramp>(&bad.replace("\"step\":1", "\"step\":0")).is_ok());
    }
}
