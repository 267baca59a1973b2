//! The decision for one ramp step: [`decide`] turns the settings, the step,
//! its elapsed time and both arms' data into a [`Decision`] that carries
//! every statistic behind it ([`Evidence`], serialisable as one row).
//!
//! # Rules, in order
//!
//! 1. **No traffic** in either arm → hold.
//! 2. **Critical guardrail** → roll back at once (no minimum duration and
//!    no `min_samples_per_arm`: the bounds are always valid). A guardrail is critical when
//!    the candidate is significantly worse (always-valid lower bound of
//!    the increase above 0; for latency the Hodges-Lehmann lower bound of
//!    the shift) **and** the estimated increase exceeds the critical
//!    threshold, as Kayenta requires both significance and effect size.
//! 3. **Quality regression**: the always-valid upper bound of the quality
//!    difference is below `−quality_margin` (the candidate is proven worse)
//!    → roll back. Quality is the guardrail of quality per dollar: a cheap
//!    model with poor answers has a fine ratio and must not ship. Needs
//!    `min_rollback_samples` graded requests per arm: the bounds are
//!    asymptotic in the estimated variance, and two or three equal scores
//!    have a sample variance of 0 (two failures of a good candidate would
//!    otherwise be a "certain" regression). The cost-per-request guardrail
//!    needs as many requests per arm to be critical, for the same reason.
//! 4. **Sample-ratio mismatch** → hold (the comparison cannot be trusted).
//! 5. **No data**: fewer than two graded requests in an arm, or no
//!    positive mean cost → hold. Missing quality is never read as zero
//!    ([`crate::summary`]).
//! 6. **Minimum samples** (graded requests per arm) and **minimum
//!    duration** → hold.
//! 7. **Allowed threshold breached** (point estimate of a guardrail above
//!    its allowed increase), or a guardrail without data on one arm →
//!    hold: no promotion while a guardrail looks bad, even before it is
//!    significant.
//! 8. **Promote** when both always-valid one-sided lower bounds clear
//!    their margins: the candidate's quality-per-dollar advantage
//!    `R_C/R_I − 1 > primary_margin` **and** the quality difference
//!    `q_C − q_I > −quality_margin`. Requiring both is an
//!    intersection-union test, so each at level α keeps the promotion
//!    error at α: no alpha splitting is needed.
//! 9. **No advantage**: the upper bound of the advantage is below
//!    `primary_margin` (it can never clear it) → keep the incumbent now.
//! 10. Otherwise hold (inconclusive); at or after `max_step_secs` every
//!     hold becomes **keep incumbent** with the same reason.
//!
//! With the default `quality_margin` of 0, promotion needs quality to be
//! significantly *better*; a candidate that is only cheaper at equal
//! quality needs a positive non-inferiority margin (e.g. 0.02) to pass.
//!
//! # Guardrails
//!
//! | guardrail | estimate (thresholded) | significance |
//! |---|---|---|
//! | error rate, fallback rate | `rate_C − rate_I` (absolute) | [`crate::rates`], always valid |
//! | cost per request | `cost_C/cost_I − 1` (all requests) | delta method + [`crate::sequential`] |
//! | p95 latency, TTFT | `p95_C/p95_I − 1` of the samples | Hodges-Lehmann lower bound > 0 at `latency_confidence` |
//!
//! The rank tests on latency are fixed-sample tests; with repeated looks
//! their false-alarm rate grows, which is why a rollback also needs the
//! p95 to have grown past the critical threshold (+100 % by default).
//! Latency samples are passed in by the I/O layer (a bounded sample per
//! arm is enough); if both arms have none (TTFT when nothing streams) the
//! guardrail is "not measured" and does not block.

use serde::{Deserialize, Serialize};

use crate::{
    ramp::RampStep,
    ranks::{hodges_lehmann, mann_whitney, quantile},
    rates::{self, Counts},
    ratio::{absolute_difference, quality_per_dollar, relative_difference, Estimate},
    sequential::{Bounds, Method, Sequential, DEFAULT_ALPHA, DEFAULT_N_STAR},
    srm::{self, srm_test, Srm},
    summary::ArmSummary,
};

/// Fewer latency samples than this in an arm is no data for the guardrail.
pub const MIN_LATENCY_SAMPLES: usize = 20;

/// Allowed and critical increases of one guardrail (absolute for rates,
/// relative for latency and cost: 0.2 = +20 %).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub allowed: f64,
    pub critical: f64,
}

/// `None` turns a guardrail off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guardrails {
    pub error_rate: Option<Threshold>,
    pub fallback_rate: Option<Threshold>,
    pub p95_latency: Option<Threshold>,
    pub ttft: Option<Threshold>,
    pub cost_per_request: Option<Threshold>,
}

impl Default for Guardrails {
    fn default() -> Self {
        let t = |allowed, critical| Some(Threshold { allowed, critical });
        Self {
            error_rate: t(0.01, 0.05),
            fallback_rate: t(0.02, 0.10),
            p95_latency: t(0.20, 1.0),
            ttft: t(0.20, 1.0),
            cost_per_request: t(0.10, 0.50),
        }
    }
}

impl Guardrails {
    pub fn none() -> Self {
        Self {
            error_rate: None,
            fallback_rate: None,
            p95_latency: None,
            ttft: None,
            cost_per_request: None,
        }
    }
}

/// The experiment's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// One-sided error rate of every always-valid test.
    pub alpha: f64,
    pub method: Method,
    /// Tuning of the always-valid tests ([`crate::sequential`]).
    pub n_star: f64,
    /// The lower bound of `R_C/R_I − 1` must exceed this (0.05 = 5 % more
    /// quality per dollar).
    pub primary_margin: f64,
    /// Non-inferiority margin on mean quality (absolute, ≥ 0).
    pub quality_margin: f64,
    /// Graded requests per arm before anything but a rollback.
    pub min_samples_per_arm: u64,
    /// Graded requests (quality) or requests (cost per request) per arm
    /// before their regression can roll back: below it the sample variance
    /// is too unreliable for the asymptotic bounds (rates are smoothed and
    /// latencies need [`MIN_LATENCY_SAMPLES`] instead).
    pub min_rollback_samples: u64,
    pub min_step_secs: u64,
    pub max_step_secs: u64,
    /// Sample-ratio mismatch below this p-value.
    pub srm_threshold: f64,
    /// Two-sided confidence of the Hodges-Lehmann latency intervals
    /// (Kayenta's 0.98: the lower bound is one-sided at 1 %).
    pub latency_confidence: f64,
    pub guardrails: Guardrails,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
            method: Method::default(),
            n_star: DEFAULT_N_STAR,
            primary_margin: 0.0,
            quality_margin: 0.0,
            min_samples_per_arm: 100,
            min_rollback_samples: 10,
            min_step_secs: 3600,
            max_step_secs: 72 * 3600,
            srm_threshold: srm::DEFAULT_THRESHOLD,
            latency_confidence: 0.98,
            guardrails: Guardrails::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error("alpha must be in (0, 0.5), got {0}")]
    Alpha(f64),
    #[error("n_star must be positive, got {0}")]
    NStar(f64),
    #[error("margins must be finite and quality_margin ≥ 0")]
    Margin,
    #[error("min_samples_per_arm and min_rollback_samples must be at least 2")]
    MinSamples,
    #[error("min_step_secs must not exceed max_step_secs")]
    Duration,
    #[error("srm_threshold and latency_confidence must be in (0, 1)")]
    Level,
    #[error("guardrail {0:?}: need 0 ≤ allowed ≤ critical, finite")]
    Threshold(GuardrailKind),
}

impl Settings {
    pub fn sequential(&self) -> Sequential {
        Sequential {
            alpha: self.alpha,
            method: self.method,
            n_star: self.n_star,
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(SettingsError::Alpha(self.alpha));
        }
        if !(self.n_star > 0.0 && self.n_star.is_finite()) {
            return Err(SettingsError::NStar(self.n_star));
        }
        if !(self.primary_margin.is_finite() && self.quality_margin.is_finite())
            || self.quality_margin < 0.0
        {
            return Err(SettingsError::Margin);
        }
        if self.min_samples_per_arm < 2 || self.min_rollback_samples < 2 {
            return Err(SettingsError::MinSamples);
        }
        if self.min_step_secs > self.max_step_secs {
            return Err(SettingsError::Duration);
        }
        let unit = |x: f64| x > 0.0 && x < 1.0;
        if !(unit(self.srm_threshold) && unit(self.latency_confidence)) {
            return Err(SettingsError::Level);
        }
        for (kind, t) in self.guardrail_list() {
            if let Some(t) = t {
                if !(t.allowed >= 0.0 && t.allowed <= t.critical && t.critical.is_finite()) {
                    return Err(SettingsError::Threshold(kind));
                }
            }
        }
        Ok(())
    }

    fn guardrail_list(&self) -> [(GuardrailKind, Option<Threshold>); 5] {
        let g = &self.guardrails;
        [
            (GuardrailKind::ErrorRate, g.error_rate),
            (GuardrailKind::FallbackRate, g.fallback_rate),
            (GuardrailKind::P95Latency, g.p95_latency),
            (GuardrailKind::Ttft, g.ttft),
            (GuardrailKind::CostPerRequest, g.cost_per_request),
        ]
    }
}

/// One arm's data for a step.
#[derive(Debug, Clone, Copy)]
pub struct ArmData<'a> {
    pub summary: &'a ArmSummary,
    /// Latency samples (ms), e.g. a bounded random sample of the window.
    pub latency_ms: &'a [f64],
    /// Time-to-first-token samples (ms) of streamed requests.
    pub ttft_ms: &'a [f64],
}

impl<'a> ArmData<'a> {
    /// An arm without latency samples.
    pub fn summary_only(summary: &'a ArmSummary) -> Self {
        Self {
            summary,
            latency_ms: &[],
            ttft_ms: &[],
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub step: &'a RampStep,
    /// Seconds since the step started.
    pub elapsed_secs: u64,
    pub incumbent: ArmData<'a>,
    pub candidate: ArmData<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailKind {
    ErrorRate,
    FallbackRate,
    P95Latency,
    Ttft,
    CostPerRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// The estimate exceeds the allowed increase.
    Breach,
    /// Significantly worse and past the critical increase.
    Critical,
    /// Too little data on one arm.
    NoData,
    /// No data on either arm (e.g. TTFT when nothing streams).
    NotMeasured,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailResult {
    pub kind: GuardrailKind,
    pub verdict: Verdict,
    pub allowed: f64,
    pub critical: f64,
    /// The arms' values: rates, mean cost per request, or p95 (ms).
    pub incumbent: Option<f64>,
    pub candidate: Option<f64>,
    /// The thresholded increase (absolute for rates, relative otherwise).
    pub estimate: Option<f64>,
    /// Lower bound of the increase: always valid for rates and cost (same
    /// units as `estimate`), Hodges-Lehmann shift in ms for latency.
    pub lower_bound: Option<f64>,
    /// Always-valid p-value of "no increase" (rates, cost), or the
    /// one-sided Mann-Whitney p-value (latency).
    pub p_value: Option<f64>,
}

impl GuardrailResult {
    fn empty(kind: GuardrailKind, t: Threshold, verdict: Verdict) -> Self {
        Self {
            kind,
            verdict,
            allowed: t.allowed,
            critical: t.critical,
            incumbent: None,
            candidate: None,
            estimate: None,
            lower_bound: None,
            p_value: None,
        }
    }

    fn judge(&mut self, significant: bool) {
        self.verdict = match self.estimate {
            Some(e) if significant && e > self.critical => Verdict::Critical,
            Some(e) if e > self.allowed => Verdict::Breach,
            Some(_) => Verdict::Pass,
            None => Verdict::NoData,
        };
    }
}

/// What an arm looked like, for the record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    pub requests: u64,
    pub graded: u64,
    /// Requests without a quality score (no data, not zeros).
    pub ungraded: u64,
    pub errors: u64,
    pub fallbacks: u64,
    pub mean_quality: Option<f64>,
    /// Mean cost of the graded requests (the ratio's denominator).
    pub mean_cost_graded: Option<f64>,
    pub quality_per_dollar: Option<f64>,
    /// Mean cost of all requests.
    pub cost_per_request: Option<f64>,
    pub latency_samples: usize,
    pub ttft_samples: usize,
}

impl ArmStats {
    fn new(arm: &ArmData<'_>) -> Self {
        let s = arm.summary;
        Self {
            requests: s.requests,
            graded: s.graded.n,
            ungraded: s.ungraded(),
            errors: s.errors,
            fallbacks: s.fallbacks,
            mean_quality: s.graded.quality().mean(),
            mean_cost_graded: s.graded.cost().mean(),
            quality_per_dollar: quality_per_dollar(&s.graded).map(|r| r.value),
            cost_per_request: s.cost.mean(),
            latency_samples: arm.latency_ms.len(),
            ttft_samples: arm.ttft_ms.len(),
        }
    }
}

/// Every statistic behind a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub step: String,
    pub elapsed_secs: u64,
    pub alpha: f64,
    pub method: Method,
    pub n_star: f64,
    pub incumbent: ArmStats,
    pub candidate: ArmStats,
    /// The candidate's quality-per-dollar advantage `R_C/R_I − 1`, tested
    /// against `primary_margin`.
    pub quality_per_dollar: Option<Bounds>,
    /// The quality difference `q_C − q_I`, tested against
    /// `−quality_margin`.
    pub quality: Option<Bounds>,
    pub srm: Option<Srm>,
    pub guardrails: Vec<GuardrailResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    NoTraffic,
    /// An arm has fewer than two graded requests, or no positive cost.
    NoData,
    SampleRatioMismatch {
        p_value: f64,
    },
    MinSamples {
        required: u64,
        incumbent: u64,
        candidate: u64,
    },
    MinDuration {
        required_secs: u64,
        elapsed_secs: u64,
    },
    GuardrailCritical {
        guardrails: Vec<GuardrailKind>,
    },
    GuardrailBreach {
        guardrails: Vec<GuardrailKind>,
    },
    GuardrailNoData {
        guardrails: Vec<GuardrailKind>,
    },
    /// The candidate's quality is proven below the non-inferiority margin.
    QualityRegression,
    /// The advantage is proven below the margin: it cannot be promoted.
    NoAdvantage,
    /// Not significant yet.
    Inconclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Promote,
    Hold,
    Rollback,
    KeepIncumbent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Advance to the next ramp step.
    Promote { evidence: Evidence },
    /// Stay on this step and look again later.
    Hold { reason: Reason, evidence: Evidence },
    /// Send all traffic back to the incumbent now.
    Rollback { reason: Reason, evidence: Evidence },
    /// End the canary without the candidate (inconclusive at the maximum
    /// duration, or proven not better).
    KeepIncumbent { reason: Reason, evidence: Evidence },
}

impl Decision {
    pub fn action(&self) -> Action {
        match self {
            Self::Promote { .. } => Action::Promote,
            Self::Hold { .. } => Action::Hold,
            Self::Rollback { .. } => Action::Rollback,
            Self::KeepIncumbent { .. } => Action::KeepIncumbent,
        }
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Self::Promote { .. } => None,
            Self::Hold { reason, .. }
            | Self::Rollback { reason, .. }
            | Self::KeepIncumbent { reason, .. } => Some(reason),
        }
    }

    pub fn evidence(&self) -> &Evidence {
        match self {
            Self::Promote { evidence }
            | Self::Hold { evidence, .. }
            | Self::Rollback { evidence, .. }
            | Self::KeepIncumbent { evidence, .. } => evidence,
        }
    }
}

/// The decision for one look at one step (module docs).
pub fn decide(settings: &Settings, input: &Input<'_>) -> Result<Decision, SettingsError> {
    settings.validate()?;
    let seq = settings.sequential();
    let (inc, cand) = (input.incumbent.summary, input.candidate.summary);

    let quality_per_dollar = match (
        quality_per_dollar(&cand.graded),
        quality_per_dollar(&inc.graded),
    ) {
        (Some(c), Some(i)) => {
            relative_difference(&c, &i).and_then(|d| seq.test(&d, settings.primary_margin))
        }
        _ => None,
    };
    let quality = match (
        Estimate::mean(&cand.graded.quality()),
        Estimate::mean(&inc.graded.quality()),
    ) {
        (Some(c), Some(i)) => seq.test(&absolute_difference(&c, &i), -settings.quality_margin),
        _ => None,
    };
    let srm = srm_test(
        &[inc.requests, cand.requests],
        &input.step.expected_split(),
        settings.srm_threshold,
    );
    let guardrails = settings
        .guardrail_list()
        .into_iter()
        .filter_map(|(kind, t)| Some(guardrail(settings, &seq, kind, t?, input)))
        .collect();
    let evidence = Evidence {
        step: input.step.name.clone(),
        elapsed_secs: input.elapsed_secs,
        alpha: settings.alpha,
        method: settings.method,
        n_star: settings.n_star,
        incumbent: ArmStats::new(&input.incumbent),
        candidate: ArmStats::new(&input.candidate),
        quality_per_dollar,
        quality,
        srm,
        guardrails,
    };
    Ok(match rule(settings, input, &evidence) {
        Outcome::Promote => Decision::Promote { evidence },
        Outcome::Hold(reason) if input.elapsed_secs >= settings.max_step_secs => {
            Decision::KeepIncumbent { reason, evidence }
        }
        Outcome::Hold(reason) => Decision::Hold { reason, evidence },
        Outcome::Rollback(reason) => Decision::Rollback { reason, evidence },
        Outcome::KeepIncumbent(reason) => Decision::KeepIncumbent { reason, evidence },
    })
}

enum Outcome {
    Promote,
    Hold(Reason),
    Rollback(Reason),
    KeepIncumbent(Reason),
}

/// Rules 1–9 of the module docs (the max-duration rule is in [`decide`]).
fn rule(settings: &Settings, input: &Input<'_>, e: &Evidence) -> Outcome {
    let hold = Outcome::Hold;
    let (inc, cand) = (input.incumbent.summary, input.candidate.summary);
    if inc.requests == 0 || cand.requests == 0 {
        return hold(Reason::NoTraffic);
    }
    let with = |v: Verdict| -> Vec<GuardrailKind> {
        e.guardrails
            .iter()
            .filter(|g| g.verdict == v)
            .map(|g| g.kind)
            .collect()
    };
    let critical = with(Verdict::Critical);
    if !critical.is_empty() {
        return Outcome::Rollback(Reason::GuardrailCritical {
            guardrails: critical,
        });
    }
    let rollback_n = settings.min_rollback_samples;
    if e.quality
        .is_some_and(|q| q.upper < -settings.quality_margin)
        && inc.graded.n >= rollback_n
        && cand.graded.n >= rollback_n
    {
        return Outcome::Rollback(Reason::QualityRegression);
    }
    if let Some(srm) = e.srm.as_ref().filter(|s| s.mismatch) {
        return hold(Reason::SampleRatioMismatch {
            p_value: srm.p_value,
        });
    }
    let (Some(primary), Some(quality)) = (e.quality_per_dollar, e.quality) else {
        return hold(Reason::NoData);
    };
    let required = settings.min_samples_per_arm;
    if inc.graded.n < required || cand.graded.n < required {
        return hold(Reason::MinSamples {
            required,
            incumbent: inc.graded.n,
            candidate: cand.graded.n,
        });
    }
    if input.elapsed_secs < settings.min_step_secs {
        return hold(Reason::MinDuration {
            required_secs: settings.min_step_secs,
            elapsed_secs: input.elapsed_secs,
        });
    }
    let breached = with(Verdict::Breach);
    if !breached.is_empty() {
        return hold(Reason::GuardrailBreach {
            guardrails: breached,
        });
    }
    let missing = with(Verdict::NoData);
    if !missing.is_empty() {
        return hold(Reason::GuardrailNoData {
            guardrails: missing,
        });
    }
    if primary.lower > settings.primary_margin && quality.lower > -settings.quality_margin {
        return Outcome::Promote;
    }
    if primary.upper < settings.primary_margin {
        return Outcome::KeepIncumbent(Reason::NoAdvantage);
    }
    hold(Reason::Inconclusive)
}

fn guardrail(
    settings: &Settings,
    seq: &Sequential,
    kind: GuardrailKind,
    t: Threshold,
    input: &Input<'_>,
) -> GuardrailResult {
    let (inc, cand) = (input.incumbent.summary, input.candidate.summary);
    let mut g = GuardrailResult::empty(kind, t, Verdict::NoData);
    match kind {
        GuardrailKind::ErrorRate | GuardrailKind::FallbackRate => {
            let counts = |s: &ArmSummary| Counts {
                events: if kind == GuardrailKind::ErrorRate {
                    s.errors
                } else {
                    s.fallbacks
                },
                trials: s.requests,
            };
            let (c, i) = (counts(cand), counts(inc));
            (g.candidate, g.incumbent) = (c.rate(), i.rate());
            if let Some(b) = rates::increase(seq, &c, &i) {
                g.estimate = Some(b.estimate);
                g.lower_bound = Some(b.lower);
                g.p_value = Some(b.p_value);
            }
            let significant = g.lower_bound.is_some_and(|l| l > 0.0);
            g.judge(significant);
        }
        GuardrailKind::CostPerRequest => {
            let (c, i) = (Estimate::mean(&cand.cost), Estimate::mean(&inc.cost));
            (g.candidate, g.incumbent) = (c.map(|e| e.value), i.map(|e| e.value));
            if let Some(b) = c
                .zip(i)
                .and_then(|(c, i)| relative_difference(&c, &i))
                .and_then(|d| seq.test(&d, 0.0))
            {
                g.estimate = Some(b.estimate);
                g.lower_bound = Some(b.lower);
                g.p_value = Some(b.p_value);
            }
            let enough = cand.cost.n >= settings.min_rollback_samples
                && inc.cost.n >= settings.min_rollback_samples;
            let significant = enough && g.lower_bound.is_some_and(|l| l > 0.0);
            g.judge(significant);
        }
        GuardrailKind::P95Latency | GuardrailKind::Ttft => {
            let (c, i) = if kind == GuardrailKind::P95Latency {
                (input.candidate.latency_ms, input.incumbent.latency_ms)
            } else {
                (input.candidate.ttft_ms, input.incumbent.ttft_ms)
            };
            if c.is_empty() && i.is_empty() {
                g.verdict = Verdict::NotMeasured;
                return g;
            }
            if c.len() < MIN_LATENCY_SAMPLES || i.len() < MIN_LATENCY_SAMPLES {
                return g;
            }
            (g.candidate, g.incumbent) = (quantile(c, 0.95), quantile(i, 0.95));
            g.estimate = match (g.candidate, g.incumbent) {
                (Some(pc), Some(pi)) if pi > 0.0 => Some(pc / pi - 1.0),
                _ => None,
            };
            g.lower_bound = hodges_lehmann(c, i, settings.latency_confidence).map(|h| h.lower);
            g.p_value = mann_whitney(c, i).map(|m| m.p_greater);
            let significant = g.lower_bound.is_some_and(|l| l > 0.0);
            g.judge(significant);
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;
    use crate::{
        ramp::RampStep,
        sim::{ArmModel, Experiment},
        summary::Request,
    };

    /// Summaries of `n` simulated requests per arm.
    fn arms(seed: u64, n: usize, inc: &ArmModel, cand: &ArmModel) -> (ArmSummary, ArmSummary) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut e = Experiment::default();
        e.add(&mut rng, inc, cand, n);
        (e.incumbent, e.candidate)
    }

    fn decide_on(
        settings: &Settings,
        step: &RampStep,
        elapsed: u64,
        i: &ArmSummary,
        c: &ArmSummary,
    ) -> Decision {
        let input = Input {
            step,
            elapsed_secs: elapsed,
            incumbent: ArmData::summary_only(i),
            candidate: ArmData::summary_only(c),
        };
        decide(settings, &input).unwrap()
    }

    fn base() -> ArmModel {
        ArmModel {
            pass_rate: 0.7,
            cost_usd: 0.002,
            graded_share: 0.5,
            error_rate: 0.01,
            fallback_rate: 0.02,
        }
    }

    const HOUR: u64 = 3600;

    #[test]
    fn better_and_cheaper_candidate_is_promoted() {
        let cand = ArmModel {
            pass_rate: 0.8,
            cost_usd: 0.0015,
            ..base()
        };
        let (i, c) = arms(1, 2000, &base(), &cand);
        let step = RampStep::live(50.0);
        let d = decide_on(&Settings::default(), &step, 2 * HOUR, &i, &c);
        assert_eq!(d.action(), Action::Promote, "{d:#?}");
        let e = d.evidence();
        let qpd = e.quality_per_dollar.unwrap();
        assert!(qpd.lower > 0.0 && qpd.p_value < 0.05);
        assert!(
            (qpd.estimate - (0.8 / 0.0015) / (0.7 / 0.002) + 1.0).abs() < 0.15,
            "{qpd:?}"
        );
        assert!(e.quality.unwrap().lower > 0.0);
        assert!(e
            .guardrails
            .iter()
            .all(|g| matches!(g.verdict, Verdict::Pass | Verdict::NotMeasured)));
        // Before the minimum duration the same data holds.
        let d = decide_on(&Settings::default(), &step, HOUR / 2, &i, &c);
        assert!(
            matches!(d.reason(), Some(Reason::MinDuration { .. })),
            "{d:?}"
        );
    }

    /// The reference's 30-step model: quality 0.59 against the chain's 0.98
    /// at 4.5× the quality per dollar. The ratio clears any margin; quality
    /// does not, and is proven worse: rollback, never promote.
    #[test]
    fn cheap_but_worse_candidate_is_not_promoted() {
        let chain = ArmModel {
            pass_rate: 0.98,
            cost_usd: 0.010,
            ..base()
        };
        // 0.59/c = 4.5 · 0.98/0.010 → c = 0.59·0.010/(4.5·0.98).
        let small = ArmModel {
            pass_rate: 0.59,
            cost_usd: 0.59 * 0.010 / (4.5 * 0.98),
            ..base()
        };
        let (i, c) = arms(2, 1500, &chain, &small);
        let step = RampStep::live(25.0);
        let d = decide_on(&Settings::default(), &step, 2 * HOUR, &i, &c);
        let e = d.evidence();
        let qpd = e.quality_per_dollar.unwrap();
        assert!(qpd.lower > 2.0, "advantage {qpd:?}");
        assert!(
            (e.candidate.quality_per_dollar.unwrap() / e.incumbent.quality_per_dollar.unwrap()
                - 4.5)
                .abs()
                < 0.6
        );
        assert_eq!(d.action(), Action::Rollback, "{d:#?}");
        assert_eq!(d.reason(), Some(&Reason::QualityRegression));
        // Even with a generous non-inferiority margin it is not promoted.
        let lenient = Settings {
            quality_margin: 0.3,
            ..Settings::default()
        };
        assert_ne!(
            decide_on(&lenient, &step, 2 * HOUR, &i, &c).action(),
            Action::Promote
        );
    }

    #[test]
    fn critical_error_rate_regression_rolls_back_at_once() {
        let broken = ArmModel {
            error_rate: 0.2,
            pass_rate: 0.9,
            ..base()
        };
        let (i, c) = arms(3, 300, &base(), &broken);
        // Minutes into the step, under the minimum samples (graded ≈ 150).
        let settings = Settings {
            min_samples_per_arm: 500,
            ..Settings::default()
        };
        let d = decide_on(&settings, &RampStep::live(5.0), 300, &i, &c);
        assert_eq!(d.action(), Action::Rollback, "{d:#?}");
        assert_eq!(
            d.reason(),
            Some(&Reason::GuardrailCritical {
                guardrails: vec![GuardrailKind::ErrorRate]
            })
        );
        let g = &d.evidence().guardrails[0];
        assert!(
            g.lower_bound.unwrap() > 0.0 && g.estimate.unwrap() > 0.05,
            "{g:?}"
        );
    }

    /// Two failures of a candidate as good as the incumbent have a sample
    /// variance of 0: not proof of a regression until `min_rollback_samples`.
    #[test]
    fn a_few_equal_scores_do_not_prove_a_regression() {
        let mut i = ArmSummary::default();
        for k in 0..400 {
            i.record(&Request {
                cost_usd: 0.002,
                quality: Some(if k % 10 == 0 { 0.0 } else { 1.0 }),
                error: false,
                fallback: false,
            });
        }
        let mut c = ArmSummary::default();
        let fail = Request {
            cost_usd: 0.002,
            quality: Some(0.0),
            error: false,
            fallback: false,
        };
        let step = RampStep::live(1.0);
        for n in 1..=12 {
            c.record(&fail);
            let d = decide_on(&Settings::default(), &step, 60, &i, &c);
            let q = d.evidence().quality;
            if n < 10 {
                assert_ne!(d.action(), Action::Rollback, "{n}: {d:#?}");
            } else {
                // Ten failures in a row against 90 %: proven worse.
                assert!(q.unwrap().upper < 0.0);
                assert_eq!(d.reason(), Some(&Reason::QualityRegression), "{n}");
            }
        }
    }

    #[test]
    fn a_moderate_error_increase_holds() {
        // +2 points: over the allowed 1, under the critical 5.
        let worse = ArmModel {
            error_rate: 0.03,
            pass_rate: 0.8,
            ..base()
        };
        let (i, c) = arms(4, 4000, &base(), &worse);
        let d = decide_on(
            &Settings::default(),
            &RampStep::live(50.0),
            2 * HOUR,
            &i,
            &c,
        );
        assert_eq!(
            d.reason(),
            Some(&Reason::GuardrailBreach {
                guardrails: vec![GuardrailKind::ErrorRate]
            }),
            "{d:#?}"
        );
    }

    #[test]
    fn equal_arms_at_max_duration_keep_the_incumbent() {
        let (i, c) = arms(5, 1000, &base(), &base());
        let settings = Settings::default();
        let step = RampStep::live(50.0);
        let d = decide_on(&settings, &step, 10 * HOUR, &i, &c);
        assert_eq!(d.action(), Action::Hold);
        assert_eq!(d.reason(), Some(&Reason::Inconclusive));
        let d = decide_on(&settings, &step, settings.max_step_secs, &i, &c);
        assert_eq!(d.action(), Action::KeepIncumbent, "{d:#?}");
        assert_eq!(d.reason(), Some(&Reason::Inconclusive));
    }

    #[test]
    fn sample_ratio_mismatch_holds() {
        let better = ArmModel {
            pass_rate: 0.85,
            ..base()
        };
        let (i, c) = arms(6, 2000, &base(), &better);
        // Equal counts, but the step says 5 % to the candidate.
        let d = decide_on(&Settings::default(), &RampStep::live(5.0), 2 * HOUR, &i, &c);
        assert!(
            matches!(d.reason(), Some(Reason::SampleRatioMismatch { p_value }) if *p_value < 1e-6),
            "{d:?}"
        );
        assert!(d.evidence().srm.as_ref().unwrap().mismatch);
        // The same data under a 50 % step would be promoted.
        let d = decide_on(
            &Settings::default(),
            &RampStep::live(50.0),
            2 * HOUR,
            &i,
            &c,
        );
        assert_eq!(d.action(), Action::Promote);
    }

    #[test]
    fn no_traffic_and_no_data_hold() {
        let step = RampStep::shadow();
        let settings = Settings::default();
        let empty = ArmSummary::default();
        let (i, _) = arms(7, 500, &base(), &base());
        let d = decide_on(&settings, &step, 2 * HOUR, &i, &empty);
        assert_eq!(d.reason(), Some(&Reason::NoTraffic));

        // Traffic, but no feedback on the candidate yet: not zeros, no data.
        let ungraded = ArmModel {
            graded_share: 0.0,
            ..base()
        };
        let (i, c) = arms(8, 500, &base(), &ungraded);
        let d = decide_on(&settings, &step, 2 * HOUR, &i, &c);
        assert_eq!(d.action(), Action::Hold);
        assert_eq!(d.reason(), Some(&Reason::NoData));
        assert_eq!(d.evidence().candidate.ungraded, 500);
        assert_eq!(d.evidence().candidate.mean_quality, None);
        // At the maximum duration no data ends the canary, never promotes.
        let d = decide_on(&settings, &step, settings.max_step_secs, &i, &c);
        assert_eq!(d.action(), Action::KeepIncumbent);

        // Some feedback, under the minimum.
        let (i, c) = arms(9, 120, &base(), &base());
        let d = decide_on(&settings, &step, 2 * HOUR, &i, &c);
        assert!(
            matches!(d.reason(), Some(Reason::MinSamples { required: 100, .. })),
            "{d:?}"
        );
    }

    #[test]
    fn proven_no_advantage_keeps_the_incumbent_early() {
        let pricier = ArmModel {
            cost_usd: 0.0021,
            pass_rate: 0.6,
            ..base()
        };
        let (i, c) = arms(10, 3000, &base(), &pricier);
        let settings = Settings {
            quality_margin: 0.2,
            ..Settings::default()
        };
        let d = decide_on(&settings, &RampStep::live(50.0), 2 * HOUR, &i, &c);
        assert_eq!(d.action(), Action::KeepIncumbent, "{d:#?}");
        assert_eq!(d.reason(), Some(&Reason::NoAdvantage));
    }

    #[test]
    fn latency_guardrails() {
        let (i, c) = arms(
            11,
            2000,
            &base(),
            &ArmModel {
                pass_rate: 0.8,
                ..base()
            },
        );
        let fast: Vec<f64> = (0..500).map(|k| 200.0 + f64::from(k % 100)).collect();
        let slow: Vec<f64> = fast.iter().map(|x| x * 2.5).collect();
        let slower: Vec<f64> = fast.iter().map(|x| x * 1.3).collect();
        let step = RampStep::live(50.0);
        let run = |cl: &[f64], ct: &[f64]| {
            let input = Input {
                step: &step,
                elapsed_secs: 2 * HOUR,
                incumbent: ArmData {
                    summary: &i,
                    latency_ms: &fast,
                    ttft_ms: &[],
                },
                candidate: ArmData {
                    summary: &c,
                    latency_ms: cl,
                    ttft_ms: ct,
                },
            };
            decide(&Settings::default(), &input).unwrap()
        };
        // Same latency, no TTFT anywhere (not measured): promoted.
        assert_eq!(run(&fast, &[]).action(), Action::Promote);
        // p95 +150 %, significant: rollback.
        let d = run(&slow, &[]);
        assert_eq!(
            d.reason(),
            Some(&Reason::GuardrailCritical {
                guardrails: vec![GuardrailKind::P95Latency]
            })
        );
        // +30 %: over the allowed 20 %, hold.
        let d = run(&slower, &[]);
        assert!(
            matches!(d.reason(), Some(Reason::GuardrailBreach { .. })),
            "{d:?}"
        );
        // TTFT on one arm only: no data for it, hold.
        let d = run(&fast, &fast);
        assert_eq!(
            d.reason(),
            Some(&Reason::GuardrailNoData {
                guardrails: vec![GuardrailKind::Ttft]
            })
        );
    }

    #[test]
    fn decision_serialises_as_a_row() {
        let (i, c) = arms(12, 300, &base(), &base());
        let d = decide_on(&Settings::default(), &RampStep::live(50.0), 60, &i, &c);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["action"], "hold");
        assert_eq!(json["reason"]["kind"], "min_duration");
        assert_eq!(json["evidence"]["incumbent"]["requests"], 300);
        assert!(json["evidence"]["quality_per_dollar"]["lower"].is_number());
        let back: Decision = serde_json::from_value(json).unwrap();
        assert_eq!((back.action(), back.reason()), (d.action(), d.reason()));
        assert_eq!(back.evidence().incumbent.requests, 300);
    }

    #[test]
    fn settings_are_validated_and_deserialise_with_defaults() {
        let s: Settings =
            serde_json::from_str(r#"{"alpha": 0.01, "guardrails": {"ttft": null}}"#).unwrap();
        assert_eq!(s.alpha, 0.01);
        assert_eq!(s.guardrails.ttft, None);
        assert_eq!(s.guardrails.error_rate, Guardrails::default().error_rate);
        assert!(s.validate().is_ok());
        let bad = Settings {
            alpha: 0.5,
            ..Settings::default()
        };
        assert_eq!(bad.validate(), Err(SettingsError::Alpha(0.5)));
        let bad = Settings {
            guardrails: Guardrails {
                error_rate: Some(Threshold {
                    allowed: 0.1,
                    critical: 0.05,
                }),
                ..Guardrails::default()
            },
            ..Settings::default()
        };
        assert_eq!(
            bad.validate(),
            Err(SettingsError::Threshold(GuardrailKind::ErrorRate))
        );
    }

    #[test]
    fn requests_feed_the_summary_the_decision_reads() {
        // A hand-built pair of arms through `record`, to pin the wiring.
        let mut i = ArmSummary::default();
        let mut c = ArmSummary::default();
        for k in 0..400 {
            let q = |p: u32| (k % 10 < p).then_some(1.0).or(Some(0.0));
            i.record(&Request {
                cost_usd: 0.002,
                quality: if k % 2 == 0 { q(6) } else { None },
                error: false,
                fallback: false,
            });
            c.record(&Request {
                cost_usd: 0.002 + 1e-6 * f64::from(k % 7),
                quality: if k % 2 == 0 { q(6) } else { None },
                error: false,
                fallback: false,
            });
        }
        let d = decide_on(
            &Settings::default(),
            &RampStep::live(50.0),
            2 * HOUR,
            &i,
            &c,
        );
        let e = d.evidence();
        assert_eq!((e.candidate.graded, e.candidate.ungraded), (200, 200));
        assert_eq!(e.incumbent.mean_quality, Some(0.6));
    }
}
