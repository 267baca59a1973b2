//! Always-valid one-sided inference for a difference `δ` estimated by `d`
//! with variance `V`: a lower bound `L` such that, with probability at
//! least `1 − α`, `δ ≥ L` holds at **every** look at once, so the
//! controller may look after every batch and stop whenever a bound clears
//! a margin (under the usual asymptotics: `d` close to normal and `V`
//! estimated well, which the minimum sample size is there for).
//!
//! # The two tests, and why they share a tuning
//!
//! Write `S = (d − θ)/V` (score) and `I = 1/V` (information): under
//! `δ = θ`, `S` is approximately a Brownian motion in information time,
//! and `exp(λS − λ²I/2)` is a martingale for every `λ`. Mixing `λ` over a
//! prior gives the tests:
//!
//! * [`Method::Msprt`], the **default**: a half-normal prior `λ ~ N⁺(0,
//!   τ²)` on the alternatives above `θ` (a one-sided mSPRT, Johari et al.),
//!   whose mixture is
//!
//!   ```text
//!   M(θ) = 2·√r · Φ(u·√(1−r)) · exp((1−r)·u²/2),
//!   r = V/(V+τ²),  u = (d−θ)/√V
//!   ```
//!
//!   For any `δ ≤ θ` every component is a supermartingale, so Ville's
//!   inequality gives `P(sup M ≥ 1/α) ≤ α`: the always-valid p-value of
//!   `H0: δ ≤ θ` is `min(1, 1/M(θ))` and the lower bound is the `θ` where
//!   `M(θ) = 1/α` (`M` falls as `θ` rises; solved by bisection on `u`).
//! * [`Method::ConfidenceSequence`]: the asymptotic confidence sequence of
//!   Waudby-Smith et al. (GrowthBook, TensorZero's UI), half-width
//!   `s·√(2(nρ²+1)/(n²ρ²) · ln(√(nρ²+1)/α))` with `s² = V·n`. With
//!   `τ² = s²ρ²` this is exactly the **two-sided** normal-mixture mSPRT
//!   interval `|d − θ| ≤ √(V(V+τ²)/τ² · (−2 ln α − ln(V/(V+τ²))))`; a
//!   one-sided bound takes it at `2α`, as GrowthBook's one-sided intervals
//!   do. That is only approximately one-sided-valid: crossing below and
//!   crossing above are not disjoint events over time, so the lower tail
//!   gets `α + P(both)/2`.
//!
//! The default is the one-sided mSPRT because its guarantee is exact
//! (Ville's inequality on a one-sided supermartingale) for the one-sided
//! question the controller asks (is the candidate better?), with no alpha
//! spent on the other side, and it costs almost nothing: its mixture is
//! the confidence sequence's at `2α` times `Φ(u·√(1−r)) ≤ 1`, which is
//! ≈ 1 where the bound crosses. The A/A simulations (tests and
//! `examples/aa_sim.rs`) run both: they promote in the same runs to within
//! 0.1 %.
//!
//! # The mixing variance τ²
//!
//! Both use `τ² = s²·ρ²` with `s² = V·n` (the per-observation variance
//! scale, estimated from the data at each look) and Waudby-Smith's
//! `ρ² = (−2 ln α + ln(−2 ln α + 1)) / N*`, which makes the two-sided
//! sequence (nearly: one fixed-point step of the exact condition) narrowest
//! at `n = N*` total observations ([`DEFAULT_N_STAR`]). Then `r = 1/(1 + nρ²)` depends on `n` only.
//!
//! Statsig's rule in the reference, `τ² = z²·(σ_t²+σ_c²)/(N_t+N_c)`, is
//! also "a per-observation variance over a sample size"; evaluated at the
//! **current** sample sizes it shrinks like `V`, `r` stays constant, and
//! the boundary degenerates into a fixed z threshold, which is the peeking
//! test the A/A simulation shows inflating α. So the sample size in `τ²`
//! must be fixed: here it is `N*`, the planned size near which the test is
//! most powerful. Only the variance comes from the data, which keeps `τ²`
//! nearly constant across looks once the variance estimate has settled.
//!
//! The bound at each look is valid on its own (the guarantee is
//! simultaneous over looks); keeping the running maximum of lower bounds
//! (running minimum of p-values) is also valid and is the I/O layer's
//! choice.

use serde::{Deserialize, Serialize};

use crate::dist::{normal_ln_cdf, normal_quantile};

/// Default `N*`: total observations (both arms) at which the interval is
/// tuned to be narrowest. Graded requests per canary step are in the
/// hundreds to low thousands; GrowthBook's default is 5000.
pub const DEFAULT_N_STAR: f64 = 2000.0;

/// Default one-sided error rate.
pub const DEFAULT_ALPHA: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One-sided normal-mixture mSPRT (half-normal mixing).
    #[default]
    Msprt,
    /// Waudby-Smith's asymptotic confidence sequence at 2α.
    ConfidenceSequence,
}

/// A difference and the variance of its estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub estimate: f64,
    pub variance: f64,
    /// Total observations behind it (both arms): `s² = variance·n`.
    pub n: f64,
}

impl Difference {
    pub fn negate(&self) -> Self {
        Self {
            estimate: -self.estimate,
            ..*self
        }
    }

    fn usable(&self) -> bool {
        self.estimate.is_finite()
            && self.variance.is_finite()
            && self.variance >= 0.0
            && self.n >= 1.0
    }
}

/// One always-valid test configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sequential {
    /// One-sided error rate, in (0, 0.5).
    pub alpha: f64,
    pub method: Method,
    /// Tuning `N*` (module docs).
    pub n_star: f64,
}

impl Default for Sequential {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
            method: Method::default(),
            n_star: DEFAULT_N_STAR,
        }
    }
}

/// A one-sided test of `H0: δ ≤ θ` and the bounds behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub estimate: f64,
    pub variance: f64,
    /// Always-valid lower and upper bounds (each one-sided at α).
    pub lower: f64,
    pub upper: f64,
    /// The `θ` tested against.
    pub threshold: f64,
    /// Always-valid p-value of `H0: δ ≤ threshold`.
    pub p_value: f64,
}

impl Sequential {
    /// `ρ²` (module docs).
    pub fn rho_sq(&self) -> f64 {
        let l = -2.0 * self.alpha.ln();
        (l + (l + 1.0).ln()) / self.n_star
    }

    /// `τ²` used at this look.
    pub fn mixing_variance(&self, d: &Difference) -> f64 {
        d.variance * d.n * self.rho_sq()
    }

    /// `r = V/(V+τ²) = 1/(1 + nρ²)`.
    fn r(&self, n: f64) -> f64 {
        1.0 / (1.0 + n * self.rho_sq())
    }

    /// The boundary in standard errors: `L = d − boundary·√V`.
    pub fn boundary(&self, n: f64) -> f64 {
        let r = self.r(n);
        match self.method {
            Method::ConfidenceSequence => {
                ((-2.0 * (2.0 * self.alpha).ln() - r.ln()) / (1.0 - r)).sqrt()
            }
            Method::Msprt => {
                // ln M(u) is increasing in u; M(0) = √r < 1 < 1/α. Since
                // ln 2 + ln Φ ≥ 0 for u ≥ 0, ln M ≥ ½ ln r + (1−r)u²/2, so
                // `hi` below already reaches ln(1/α).
                let target = -self.alpha.ln();
                let ln_m = |u: f64| {
                    std::f64::consts::LN_2
                        + 0.5 * r.ln()
                        + normal_ln_cdf(u * (1.0 - r).sqrt())
                        + (1.0 - r) * u * u / 2.0
                };
                let (mut lo, mut hi) = (0.0, (2.0 * (target - 0.5 * r.ln()) / (1.0 - r)).sqrt());
                for _ in 0..100 {
                    let mid = 0.5 * (lo + hi);
                    if ln_m(mid) < target {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                    if hi - lo < 1e-12 * hi {
                        break;
                    }
                }
                hi
            }
        }
    }

    /// Always-valid one-sided lower bound of `δ`; `None` when the inputs
    /// are not usable (no variance, NaN).
    pub fn lower_bound(&self, d: &Difference) -> Option<f64> {
        if !d.usable() {
            return None;
        }
        Some(d.estimate - self.boundary(d.n) * d.variance.sqrt())
    }

    /// Always-valid one-sided upper bound of `δ`.
    pub fn upper_bound(&self, d: &Difference) -> Option<f64> {
        Some(-self.lower_bound(&d.negate())?)
    }

    /// Always-valid p-value of `H0: δ ≤ theta`.
    pub fn p_value(&self, d: &Difference, theta: f64) -> Option<f64> {
        if !d.usable() || !theta.is_finite() {
            return None;
        }
        let gap = d.estimate - theta;
        if gap <= 0.0 {
            return Some(1.0);
        }
        if d.variance == 0.0 {
            return Some(0.0);
        }
        let u = gap / d.variance.sqrt();
        let r = self.r(d.n);
        let ln_lambda = 0.5 * r.ln() + (1.0 - r) * u * u / 2.0;
        let ln_m = match self.method {
            Method::Msprt => {
                std::f64::consts::LN_2 + ln_lambda + normal_ln_cdf(u * (1.0 - r).sqrt())
            }
            Method::ConfidenceSequence => std::f64::consts::LN_2 + ln_lambda,
        };
        Some((-ln_m).exp().min(1.0))
    }

    /// Both bounds and the p-value against `threshold`.
    pub fn test(&self, d: &Difference, threshold: f64) -> Option<Bounds> {
        Some(Bounds {
            estimate: d.estimate,
            variance: d.variance,
            lower: self.lower_bound(d)?,
            upper: self.upper_bound(d)?,
            threshold,
            p_value: self.p_value(d, threshold)?,
        })
    }
}

/// The naive fixed-horizon one-sided z bound, `d − z_{1−α}·√V`. **Not**
/// valid under repeated looks; the simulations use it to show why.
pub fn fixed_horizon_lower_bound(d: &Difference, alpha: f64) -> f64 {
    d.estimate - normal_quantile(1.0 - alpha) * d.variance.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(estimate: f64, variance: f64, n: f64) -> Difference {
        Difference {
            estimate,
            variance,
            n,
        }
    }

    #[test]
    fn cs_matches_the_reference_half_width() {
        // Half-width = s·√(2(nρ²+1)/(n²ρ²)·ln(√(nρ²+1)/α')) with α' = 2α.
        let seq = Sequential {
            method: Method::ConfidenceSequence,
            ..Sequential::default()
        };
        let (n, s2) = (1234.0, 0.8);
        let d = diff(0.1, s2 / n, n);
        let rho2 = seq.rho_sq();
        let a2 = 2.0 * seq.alpha;
        let hw = (s2 * 2.0 * (n * rho2 + 1.0) / (n * n * rho2)
            * ((n * rho2 + 1.0).sqrt() / a2).ln())
        .sqrt();
        assert!((seq.lower_bound(&d).unwrap() - (0.1 - hw)).abs() < 1e-12);
        assert!((seq.upper_bound(&d).unwrap() - (0.1 + hw)).abs() < 1e-12);
        // ρ (nearly) minimises the two-sided width at n = N*: within 0.2 %
        // of the best width over a fine grid.
        let width = |rho2: f64| {
            let n = seq.n_star;
            2.0 * (n * rho2 + 1.0) / (n * n * rho2) * ((n * rho2 + 1.0).sqrt() / seq.alpha).ln()
        };
        let best = (1..400)
            .map(|k| width(rho2 * f64::from(k) / 100.0))
            .fold(f64::INFINITY, f64::min);
        assert!(
            width(rho2) / best - 1.0 < 0.002,
            "{} vs {best}",
            width(rho2)
        );
    }

    #[test]
    fn msprt_bound_is_where_the_mixture_reaches_one_over_alpha() {
        let seq = Sequential::default();
        for n in [20.0, 200.0, 2000.0, 20_000.0, 2e6] {
            let d = diff(0.3, 1.0 / n, n);
            let lower = seq.lower_bound(&d).unwrap();
            // The p-value at θ = lower bound is α (1/M = α there).
            let p = seq.p_value(&d, lower).unwrap();
            assert!((p - seq.alpha).abs() < 1e-9, "n {n}: p {p}");
            // Wider than a fixed-horizon bound, narrower than CS at α.
            let fixed = fixed_horizon_lower_bound(&d, seq.alpha);
            let cs_alpha = Sequential {
                alpha: seq.alpha / 2.0,
                method: Method::ConfidenceSequence,
                ..seq
            };
            assert!(lower < fixed, "n {n}");
            assert!(lower > cs_alpha.lower_bound(&d).unwrap(), "n {n}");
        }
    }

    #[test]
    fn p_value_is_monotone_and_one_below_the_estimate() {
        for method in [Method::Msprt, Method::ConfidenceSequence] {
            let seq = Sequential {
                method,
                ..Sequential::default()
            };
            let d = diff(0.05, 0.0004, 1000.0);
            assert_eq!(seq.p_value(&d, 0.05), Some(1.0));
            assert_eq!(seq.p_value(&d, 0.2), Some(1.0));
            let ps: Vec<f64> = [0.04, 0.02, 0.0, -0.02, -0.1]
                .iter()
                .map(|&t| seq.p_value(&d, t).unwrap())
                .collect();
            assert!(ps.windows(2).all(|w| w[1] <= w[0]), "{ps:?}");
            // The bound and the p-value agree: p < α ⇔ lower bound > θ.
            let lower = seq.lower_bound(&d).unwrap();
            assert!(seq.p_value(&d, lower - 1e-6).unwrap() < seq.alpha);
            assert!(seq.p_value(&d, lower + 1e-6).unwrap() > seq.alpha);
        }
    }

    #[test]
    fn degenerate_inputs() {
        let seq = Sequential::default();
        assert_eq!(seq.lower_bound(&diff(0.2, 0.0, 100.0)), Some(0.2));
        assert_eq!(seq.lower_bound(&diff(f64::NAN, 0.1, 100.0)), None);
        assert_eq!(seq.lower_bound(&diff(0.1, 0.1, 0.0)), None);
        assert_eq!(seq.p_value(&diff(0.2, 0.0, 100.0), 0.1), Some(0.0));
    }
}
