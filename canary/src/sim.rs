//! Seeded simulations of canary steps: the A/A tests and
//! `examples/aa_sim.rs` run the real [`decide`] on simulated traffic,
//! looking after every batch, next to a naive fixed-horizon test that
//! peeks at the same looks.
//!
//! Traffic model per request: `z ~ N(0, 1)`; cost `c₀·e^{0.5z}`
//! (log-normal); a pass/fail grade with probability
//! `p + 0.3·min(p, 1−p)·tanh(z)` (dearer answers pass a little more often;
//! the mean stays `p`), present for a share of the requests only; errors
//! and fallbacks at fixed rates (an error gets no grade).

use rand::{rngs::StdRng, Rng};

use crate::{
    decision::{decide, Action, ArmData, Input, Settings},
    ramp::RampStep,
    ratio::{absolute_difference, quality_per_dollar, relative_difference, Estimate},
    sequential::fixed_horizon_lower_bound,
    summary::{ArmSummary, Request},
};

/// A standard normal draw (Box-Muller).
pub fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One arm's traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmModel {
    /// Mean quality (share of passing grades).
    pub pass_rate: f64,
    /// Median cost per request, dollars.
    pub cost_usd: f64,
    /// Share of successful requests that receive a grade.
    pub graded_share: f64,
    pub error_rate: f64,
    pub fallback_rate: f64,
}

impl Default for ArmModel {
    fn default() -> Self {
        Self {
            pass_rate: 0.7,
            cost_usd: 0.002,
            graded_share: 0.5,
            error_rate: 0.01,
            fallback_rate: 0.02,
        }
    }
}

impl ArmModel {
    pub fn sample(&self, rng: &mut StdRng) -> Request {
        let z = standard_normal(rng);
        let cost_usd = self.cost_usd * (0.5 * z).exp();
        let p = self.pass_rate + 0.3 * self.pass_rate.min(1.0 - self.pass_rate) * z.tanh();
        let error = rng.random::<f64>() < self.error_rate;
        let fallback = rng.random::<f64>() < self.fallback_rate;
        let pass = rng.random::<f64>() < p;
        let graded = !error && rng.random::<f64>() < self.graded_share;
        Request {
            cost_usd,
            quality: graded.then_some(if pass { 1.0 } else { 0.0 }),
            error,
            fallback,
        }
    }
}

/// Both arms' summaries so far.
#[derive(Debug, Clone, Default)]
pub struct Experiment {
    pub incumbent: ArmSummary,
    pub candidate: ArmSummary,
}

impl Experiment {
    /// `n` more requests on each arm.
    pub fn add(&mut self, rng: &mut StdRng, incumbent: &ArmModel, candidate: &ArmModel, n: usize) {
        for _ in 0..n {
            self.incumbent.record(&incumbent.sample(rng));
            self.candidate.record(&candidate.sample(rng));
        }
    }

    /// The naive rule: promote when fixed-horizon one-sided z bounds clear
    /// both margins (after the same minimum samples).
    pub fn peeking_promotes(&self, settings: &Settings) -> bool {
        self.peeking_primary(settings) && self.peeking_quality(settings)
    }

    /// The fixed-horizon z bound of the advantage alone clears the margin.
    pub fn peeking_primary(&self, settings: &Settings) -> bool {
        let (i, c) = (&self.incumbent.graded, &self.candidate.graded);
        if i.n < settings.min_samples_per_arm || c.n < settings.min_samples_per_arm {
            return false;
        }
        quality_per_dollar(c)
            .zip(quality_per_dollar(i))
            .and_then(|(c, i)| relative_difference(&c, &i))
            .is_some_and(|d| {
                fixed_horizon_lower_bound(&d, settings.alpha) > settings.primary_margin
            })
    }

    fn peeking_quality(&self, settings: &Settings) -> bool {
        let (i, c) = (&self.incumbent.graded, &self.candidate.graded);
        Estimate::mean(&c.quality())
            .zip(Estimate::mean(&i.quality()))
            .is_some_and(|(c, i)| {
                fixed_horizon_lower_bound(&absolute_difference(&c, &i), settings.alpha)
                    > -settings.quality_margin
            })
    }

    /// The always-valid bound of the advantage alone clears the margin.
    pub fn sequential_primary(&self, settings: &Settings) -> bool {
        let (i, c) = (&self.incumbent.graded, &self.candidate.graded);
        if i.n < settings.min_samples_per_arm || c.n < settings.min_samples_per_arm {
            return false;
        }
        quality_per_dollar(c)
            .zip(quality_per_dollar(i))
            .and_then(|(c, i)| relative_difference(&c, &i))
            .and_then(|d| settings.sequential().lower_bound(&d))
            .is_some_and(|l| l > settings.primary_margin)
    }
}

/// How one simulated step went: the look (1-based) at which each rule
/// first fired, if it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunResult {
    /// The first decision other than hold, and its look.
    pub decision: Option<(usize, Action)>,
    /// The sequential bound of the advantage alone cleared the margin.
    pub sequential_primary: Option<usize>,
    /// The peeking z bound of the advantage alone cleared the margin.
    pub peeking_primary: Option<usize>,
    /// The promote rule with peeking z bounds.
    pub peeking_promotion: Option<usize>,
}

/// Simulates one 50/50 step: `looks` looks, `batch` requests per arm
/// between looks, a look every 10 simulated minutes (the settings' min and
/// max durations apply to that clock). Latency guardrails see no samples.
pub fn run(
    rng: &mut StdRng,
    settings: &Settings,
    incumbent: &ArmModel,
    candidate: &ArmModel,
    batch: usize,
    looks: usize,
) -> RunResult {
    let step = RampStep::live(50.0);
    let mut e = Experiment::default();
    let mut out = RunResult::default();
    for look in 1..=looks {
        e.add(rng, incumbent, candidate, batch);
        if out.decision.is_none() {
            let input = Input {
                step: &step,
                elapsed_secs: look as u64 * 600,
                incumbent: ArmData::summary_only(&e.incumbent),
                candidate: ArmData::summary_only(&e.candidate),
            };
            // Settings come from the caller; invalid ones never decide.
            match decide(settings, &input).map(|d| d.action()) {
                Ok(Action::Hold) | Err(_) => {}
                Ok(action) => out.decision = Some((look, action)),
            }
        }
        let first = |slot: &mut Option<usize>, fired: bool| {
            if slot.is_none() && fired {
                *slot = Some(look);
            }
        };
        first(&mut out.sequential_primary, e.sequential_primary(settings));
        first(&mut out.peeking_primary, e.peeking_primary(settings));
        first(&mut out.peeking_promotion, e.peeking_promotes(settings));
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::{decision::Guardrails, sequential::Method};

    /// Settings of the A/A runs: the defaults, without the clock (no
    /// minimum duration, the maximum at the last look).
    fn aa_settings(method: Method, looks: usize) -> Settings {
        Settings {
            method,
            min_step_secs: 0,
            max_step_secs: looks as u64 * 600,
            ..Settings::default()
        }
    }

    /// A/A, 1000 simulated steps per method, a look after every 50
    /// requests per arm up to 3000 (60 looks; half the requests graded, so
    /// up to ~1500 graded per arm). Always-valid bounds keep false
    /// promotions (and the advantage bound alone) at or under α = 0.05,
    /// with binomial slack (+3σ ≈ 71 of 1000); the fixed-horizon z test
    /// peeking at the same looks is far above α on the same data, so the
    /// simulation can see inflation.
    #[test]
    fn aa_false_promotions_with_continuous_monitoring_1000_runs() {
        const RUNS: usize = 1000;
        const LOOKS: usize = 60;
        const SLACK: usize = 71;
        let model = ArmModel::default();
        for method in [Method::Msprt, Method::ConfidenceSequence] {
            let settings = aa_settings(method, LOOKS);
            let mut rng = StdRng::seed_from_u64(2024);
            let (mut promoted, mut primary, mut peeking, mut peeking_promoted) = (0, 0, 0, 0);
            for _ in 0..RUNS {
                let r = run(&mut rng, &settings, &model, &model, 50, LOOKS);
                promoted += usize::from(matches!(r.decision, Some((_, Action::Promote))));
                primary += usize::from(r.sequential_primary.is_some());
                peeking += usize::from(r.peeking_primary.is_some());
                peeking_promoted += usize::from(r.peeking_promotion.is_some());
            }
            println!(
                "{method:?}: promoted {promoted}, advantage bound {primary}, \
                 peeking advantage {peeking}, peeking promotion {peeking_promoted} (of {RUNS})"
            );
            assert!(promoted <= SLACK, "{method:?}: {promoted} false promotions");
            assert!(
                primary <= SLACK,
                "{method:?}: {primary} false advantage bounds"
            );
            assert!(
                peeking >= 150,
                "peeking only {peeking}: the simulation lacks power"
            );
            assert!(peeking > 3 * primary.max(1));
        }
    }

    /// A real effect is found: +10 points of quality at the same cost is
    /// promoted in almost every run within the horizon.
    #[test]
    fn a_real_improvement_is_promoted() {
        let settings = Settings {
            guardrails: Guardrails::default(),
            ..aa_settings(Method::Msprt, 60)
        };
        let better = ArmModel {
            pass_rate: 0.8,
            ..ArmModel::default()
        };
        let mut rng = StdRng::seed_from_u64(9);
        let promoted = (0..100)
            .filter(|_| {
                let r = run(&mut rng, &settings, &ArmModel::default(), &better, 50, 60);
                matches!(r.decision, Some((_, Action::Promote)))
            })
            .count();
        assert!(promoted >= 95, "{promoted} of 100");
    }
}
