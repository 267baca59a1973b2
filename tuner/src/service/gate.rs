//! The offline gate: whether a trained candidate may be deployed at all.
//!
//! The candidate, the route's incumbent and the fallback chain answer the
//! same held-out items through the gateway; each answer is graded and its
//! cost (all attempts, as the gateway reports it) recorded. The candidate
//! passes when, at the configured confidence, both hold:
//!
//! - its quality per dollar beats the incumbent's **and** the chain's by at
//!   least `min_gain` (relative: the lower confidence bound of
//!   `R_candidate / R_other − 1` is at least `min_gain`), and
//! - its quality is not worse than the incumbent's by more than
//!   `non_inferiority` (the lower bound of `q̄_candidate − q̄_incumbent` is
//!   at least `−non_inferiority`).
//!
//! The three arms answer the same items, so the comparisons are paired: each
//! statistic is a smooth function of the per-item means, and its variance
//! is the delta method's, computed from the per-item linearization (the
//! gradient at the means dotted with each item's values), which keeps the
//! covariance between arms. Pairing matters: on 50 items where candidate
//! and incumbent mostly agree, the quality difference is known to a few
//! points, where independent arms would leave ±0.13. The bounds are
//! one-sided at `confidence` (each claim is "at least"). Fewer than two
//! items, no cost, or an arm compared against with no quality at all, is a
//! failure that says so: no data never passes.

use flywheel_canary::dist::normal_quantile;

use super::config::Gate;

/// One check of the gate, as its table shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// What is compared: `quality per dollar vs incumbent`, ….
    pub name: String,
    /// Point estimate and its one-sided lower bound; `None` without data.
    pub estimate: Option<(f64, f64)>,
    /// The bound the lower bound must reach.
    pub threshold: f64,
    pub pass: bool,
}

/// The gate's verdict with its table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn pass(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// The failed checks, one line each (the run's `Concluded` reason).
    pub fn reasons(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| match c.estimate {
                Some((point, lower)) => format!(
                    "{}: {point:+.3} (lower bound {lower:+.3}, needs {:+.3})",
                    c.name, c.threshold
                ),
                None => format!("{}: not enough graded answers with a cost", c.name),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One graded answer: its grader score (0..1) and its cost, all attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub quality: f64,
    pub cost: f64,
}

/// One held-out item as the three arms answered it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    pub candidate: Answer,
    pub incumbent: Answer,
    pub chain: Answer,
}

/// The gate over the items all three arms answered and were graded on.
pub fn judge(gate: &Gate, items: &[Item]) -> Verdict {
    let z = normal_quantile(gate.confidence);
    let mut checks = Vec::new();
    for (name, other) in [
        ("incumbent", (|i: &Item| i.incumbent) as fn(&Item) -> Answer),
        ("chain", |i: &Item| i.chain),
    ] {
        let gain = qpd_gain(items, other);
        checks.push(check(
            format!("quality per dollar vs {name}"),
            gain.map(|(g, se)| (g, g - z * se)),
            gate.min_gain,
        ));
    }
    let diff = paired_mean(items, |i| i.candidate.quality - i.incumbent.quality);
    checks.push(check(
        "quality vs incumbent".to_string(),
        diff.map(|(d, se)| (d, d - z * se)),
        -gate.non_inferiority,
    ));
    Verdict { checks }
}

/// Mean of a per-item value and its standard error.
fn paired_mean(items: &[Item], value: impl Fn(&Item) -> f64) -> Option<(f64, f64)> {
    let n = items.len();
    if n < 2 {
        return None;
    }
    let xs: Vec<f64> = items.iter().map(value).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let se = (var / n as f64).sqrt();
    (mean.is_finite() && se.is_finite()).then_some((mean, se))
}

/// `(q̄c / c̄c) / (q̄o / c̄o) − 1` and its delta-method standard error over
/// paired items (module docs): the gradient at the means, written without
/// dividing by the candidate's quality (which may be 0).
fn qpd_gain(items: &[Item], other: fn(&Item) -> Answer) -> Option<(f64, f64)> {
    let n = items.len() as f64;
    let mean = |f: &dyn Fn(&Item) -> f64| items.iter().map(f).sum::<f64>() / n;
    let qc = mean(&|i| i.candidate.quality);
    let cc = mean(&|i| i.candidate.cost);
    let qo = mean(&|i| other(i).quality);
    let co = mean(&|i| other(i).cost);
    if items.len() < 2 || !(cc > 0.0 && qo > 0.0 && co > 0.0) {
        return None;
    }
    let gain = qc * co / (cc * qo) - 1.0;
    let (d_qc, d_cc, d_qo, d_co) = (
        co / (cc * qo),
        -qc * co / (cc * cc * qo),
        -qc * co / (cc * qo * qo),
        qc / (cc * qo),
    );
    let (_, se) = paired_mean(items, |i| {
        let o = other(i);
        d_qc * i.candidate.quality + d_cc * i.candidate.cost + d_qo * o.quality + d_co * o.cost
    })?;
    gain.is_finite().then_some((gain, se))
}

fn check(name: String, estimate: Option<(f64, f64)>, threshold: f64) -> Check {
    Check {
        pass: estimate.is_some_and(|(_, lower)| lower >= threshold),
        name,
        estimate,
        threshold,
    }
}

#[cfg(test)]
#[path = "tests/gate.rs"]
mod tests;
