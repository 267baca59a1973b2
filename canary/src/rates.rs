//! Always-valid tests on rates (error rate, fallback rate): the
//! candidate's rate minus the incumbent's, with the [`Sequential`] bounds
//! of a difference of two independent Bernoulli means.
//!
//! The estimate is `x_C/n_C − x_I/n_I`. Its variance
//! `p_C(1−p_C)/n_C + p_I(1−p_I)/n_I` is evaluated at the smoothed rates
//! `(x + ½)/(n + 1)`, so an arm with no errors yet still has a variance
//! (with raw rates, 0 errors against 0 errors would be "certain" equality,
//! and 1 against 0 a certain regression). The smoothing moves the variance
//! by `O(1/n)` and disappears as the arms grow.

use serde::{Deserialize, Serialize};

use crate::sequential::{Bounds, Difference, Sequential};

/// Events (errors, fallbacks) out of trials (requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub events: u64,
    pub trials: u64,
}

impl Counts {
    pub fn rate(&self) -> Option<f64> {
        (self.trials > 0).then(|| self.events as f64 / self.trials as f64)
    }

    fn smoothed_variance_of_rate(&self) -> f64 {
        let n = self.trials as f64;
        let p = (self.events as f64 + 0.5) / (n + 1.0);
        p * (1.0 - p) / n
    }
}

/// `rate_C − rate_I` with its variance; `None` if either arm has no
/// trials or more events than trials.
pub fn rate_difference(candidate: &Counts, incumbent: &Counts) -> Option<Difference> {
    if candidate.events > candidate.trials || incumbent.events > incumbent.trials {
        return None;
    }
    Some(Difference {
        estimate: candidate.rate()? - incumbent.rate()?,
        variance: candidate.smoothed_variance_of_rate() + incumbent.smoothed_variance_of_rate(),
        n: (candidate.trials + incumbent.trials) as f64,
    })
}

/// Always-valid bounds on `rate_C − rate_I` and the p-value of "the
/// candidate's rate is not higher" (`H0: δ ≤ 0`); a lower bound above 0
/// is evidence of a regression.
pub fn increase(seq: &Sequential, candidate: &Counts, incumbent: &Counts) -> Option<Bounds> {
    seq.test(&rate_difference(candidate, incumbent)?, 0.0)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;
    use crate::sequential::Method;

    fn counts(events: u64, trials: u64) -> Counts {
        Counts { events, trials }
    }

    #[test]
    fn zero_events_still_have_a_variance() {
        let d = rate_difference(&counts(0, 100), &counts(0, 100)).unwrap();
        assert_eq!(d.estimate, 0.0);
        assert!(d.variance > 0.0);
        let seq = Sequential::default();
        // One error against none is not evidence of anything.
        let b = increase(&seq, &counts(1, 100), &counts(0, 100)).unwrap();
        assert!(b.lower < 0.0 && b.p_value > 0.5);
        assert!(rate_difference(&counts(1, 0), &counts(0, 10)).is_none());
        assert!(rate_difference(&counts(0, 10), &counts(11, 10)).is_none());
    }

    #[test]
    fn a_large_regression_is_detected() {
        let seq = Sequential::default();
        let b = increase(&seq, &counts(90, 500), &counts(5, 500)).unwrap();
        assert!(b.lower > 0.1, "{b:?}");
        assert!(b.p_value < 1e-6);
    }

    /// A/A on a 5 % error rate, 1000 experiments, a look every 50 requests
    /// per arm up to 3000: the rate of false "increase" alarms stays under
    /// α = 0.05 (+ binomial slack) for both methods.
    #[test]
    fn aa_false_alarms_with_continuous_monitoring_1000_runs() {
        let mut rng = StdRng::seed_from_u64(11);
        for method in [Method::Msprt, Method::ConfidenceSequence] {
            let seq = Sequential {
                method,
                ..Sequential::default()
            };
            let mut alarms = 0;
            for _ in 0..1000 {
                let (mut c, mut i) = (Counts::default(), Counts::default());
                for _look in 0..60 {
                    for _ in 0..50 {
                        c.trials += 1;
                        i.trials += 1;
                        c.events += u64::from(rng.random::<f64>() < 0.05);
                        i.events += u64::from(rng.random::<f64>() < 0.05);
                    }
                    if increase(&seq, &c, &i).unwrap().lower > 0.0 {
                        alarms += 1;
                        break;
                    }
                }
            }
            println!("rates A/A, {method:?}: {alarms} false alarms of 1000");
            // 0.05·1000 + 3σ of a binomial(1000, 0.05) ≈ 50 + 21.
            assert!(alarms <= 71, "{method:?}: {alarms} of 1000");
        }
    }
}
