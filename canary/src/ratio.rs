//! Quality per dollar and the relative difference between arms, with
//! delta-method variances (Deng et al. 2018, as Eppo uses).
//!
//! For `R = q̄ / c̄` over the graded requests of one arm,
//!
//! ```text
//! Var(R) ≈ (Var(q̄) − 2R·Cov(q̄, c̄) + R²·Var(c̄)) / c̄²
//! ```
//!
//! with `Var(q̄) = s_q²/n`, `Var(c̄) = s_c²/n`, `Cov(q̄, c̄) = s_qc/n`
//! (first-order Taylor expansion of `q̄/c̄` around the true means). For the
//! candidate's advantage `g = R_C / R_I − 1` of two independent arms,
//!
//! ```text
//! Var(g) ≈ Var(R_C)/R_I² + R_C²·Var(R_I)/R_I⁴
//! ```
//!
//! (the same expansion; written without dividing by `R_C`, which may be 0).
//! The relative form makes a margin mean the same thing ("5 % more quality
//! per dollar") whatever the price level.

use serde::{Deserialize, Serialize};

use crate::{
    sequential::Difference,
    summary::{Moments, QualityCost},
};

/// A point estimate with the variance of the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub variance: f64,
    /// Observations behind it.
    pub n: u64,
}

impl Estimate {
    /// A mean and the variance of the mean; needs two values.
    pub fn mean(m: &Moments) -> Option<Self> {
        Some(Self {
            value: m.mean()?,
            variance: m.variance_of_mean()?,
            n: m.n,
        })
    }
}

/// Quality per dollar of the graded requests (module docs); `None` with
/// fewer than two graded requests or a mean cost that is not positive.
pub fn quality_per_dollar(graded: &QualityCost) -> Option<Estimate> {
    let quality = Estimate::mean(&graded.quality())?;
    let cost = Estimate::mean(&graded.cost())?;
    if cost.value <= 0.0 || !cost.value.is_finite() {
        return None;
    }
    let n = graded.n as f64;
    let cov = graded.covariance()? / n;
    let r = quality.value / cost.value;
    let variance =
        (quality.variance - 2.0 * r * cov + r * r * cost.variance) / (cost.value * cost.value);
    Some(Estimate {
        value: r,
        variance: variance.max(0.0),
        n: graded.n,
    })
}

/// `candidate / incumbent − 1` of two independent estimates; `None` when
/// the incumbent's value is not positive.
pub fn relative_difference(candidate: &Estimate, incumbent: &Estimate) -> Option<Difference> {
    let (rc, ri) = (candidate.value, incumbent.value);
    if ri <= 0.0 || !ri.is_finite() || !rc.is_finite() {
        return None;
    }
    let ri2 = ri * ri;
    Some(Difference {
        estimate: rc / ri - 1.0,
        variance: candidate.variance / ri2 + rc * rc * incumbent.variance / (ri2 * ri2),
        n: (candidate.n + incumbent.n) as f64,
    })
}

/// `candidate − incumbent` of two independent estimates.
pub fn absolute_difference(candidate: &Estimate, incumbent: &Estimate) -> Difference {
    Difference {
        estimate: candidate.value - incumbent.value,
        variance: candidate.variance + incumbent.variance,
        n: (candidate.n + incumbent.n) as f64,
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;
    use crate::sim::standard_normal;

    /// Correlated (quality, cost): longer answers cost more and score
    /// better; quality in [0, 1], cost log-normal.
    fn sample(rng: &mut StdRng, n: usize, lift: f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|_| {
                let z = standard_normal(rng);
                let cost = 0.002 * (0.6 * z).exp();
                let p = (0.55 + lift + 0.35 * z.tanh()).clamp(0.0, 1.0);
                let q = if rng.random::<f64>() < p { 1.0 } else { 0.3 };
                (q, cost)
            })
            .collect()
    }

    fn summarise(xs: &[(f64, f64)]) -> QualityCost {
        let mut s = QualityCost::default();
        for &(q, c) in xs {
            s.push(q, c);
        }
        s
    }

    fn resample(rng: &mut StdRng, xs: &[(f64, f64)]) -> QualityCost {
        let mut s = QualityCost::default();
        for _ in 0..xs.len() {
            let (q, c) = xs[rng.random_range(0..xs.len())];
            s.push(q, c);
        }
        s
    }

    fn variance(xs: &[f64]) -> f64 {
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
    }

    /// Delta-method variances against a seeded bootstrap (4000 resamples:
    /// the bootstrap variance itself is within ~5 % of its limit).
    #[test]
    fn delta_method_agrees_with_bootstrap() {
        let mut rng = StdRng::seed_from_u64(7);
        let inc = sample(&mut rng, 500, 0.0);
        let cand = sample(&mut rng, 300, 0.1);
        let ri = quality_per_dollar(&summarise(&inc)).unwrap();
        let rc = quality_per_dollar(&summarise(&cand)).unwrap();
        let rel = relative_difference(&rc, &ri).unwrap();

        let (mut boot_r, mut boot_rel) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let bi = quality_per_dollar(&resample(&mut rng, &inc)).unwrap().value;
            let bc = quality_per_dollar(&resample(&mut rng, &cand))
                .unwrap()
                .value;
            boot_r.push(bi);
            boot_rel.push(bc / bi - 1.0);
        }
        let (vr, vrel) = (variance(&boot_r), variance(&boot_rel));
        assert!(
            (ri.variance / vr - 1.0).abs() < 0.1,
            "{} vs bootstrap {vr}",
            ri.variance
        );
        assert!(
            (rel.variance / vrel - 1.0).abs() < 0.1,
            "{} vs bootstrap {vrel}",
            rel.variance
        );
        // The covariance term matters here: leaving it out is visibly off.
        let g = summarise(&inc);
        let (q, c) = (
            Estimate::mean(&g.quality()).unwrap(),
            Estimate::mean(&g.cost()).unwrap(),
        );
        let r = q.value / c.value;
        let no_cov = (q.variance + r * r * c.variance) / (c.value * c.value);
        println!(
            "delta {} / bootstrap {vr}; without the covariance {no_cov}",
            ri.variance
        );
        assert!((no_cov / vr - 1.0).abs() > 0.3, "{no_cov} vs {vr}");
    }

    #[test]
    fn undefined_without_cost_or_data() {
        let mut g = QualityCost::default();
        g.push(1.0, 0.0);
        assert!(quality_per_dollar(&g).is_none(), "one value");
        g.push(0.5, 0.0);
        assert!(quality_per_dollar(&g).is_none(), "zero cost");
        let zero = Estimate {
            value: 0.0,
            variance: 0.0,
            n: 2,
        };
        assert!(relative_difference(&zero, &zero).is_none());
        let one = Estimate { value: 1.0, ..zero };
        let d = relative_difference(&zero, &one).unwrap();
        assert_eq!((d.estimate, d.variance, d.n), (-1.0, 0.0, 4.0));
    }
}
