//! Per-arm sufficient statistics, built one request at a time
//! ([`ArmSummary::record`]) or from the sums an analytics query returns
//! (the fields are public), and merged across windows
//! ([`ArmSummary::merge`]).
//!
//! # Missing quality is no data, never a zero
//!
//! Feedback is sparse and late: most requests have no quality score when
//! the controller looks, and some never get one. A request without a
//! score counts in [`ArmSummary::requests`] (traffic, errors, fallbacks,
//! cost per request) and in [`ArmSummary::ungraded`], but adds nothing to
//! the quality sums.
//!
//! # Quality per dollar on the graded requests
//!
//! The primary metric is `R = mean(quality) / mean(cost)` where **both
//! means are over the same requests: those that have a quality score**
//! ([`ArmSummary::graded`] keeps their quality, cost and quality·cost
//! sums together). Dividing the mean quality of the graded requests by
//! the mean cost of all requests would mix two populations (grading may
//! favour short or long answers) and change the ratio whenever feedback
//! arrives; over the same requests the ratio is an honest "quality bought
//! per dollar spent on the answers we can judge", and the delta method
//! gets the covariance of quality and cost from the cross sum. The cost of
//! all requests is tested on its own by the cost-per-request guardrail
//! ([`ArmSummary::cost`]).
//!
//! Sums of squares lose precision when the mean is much larger than the
//! spread (`Σx² − (Σx)²/n` cancels); quality in [0, 1] and costs in
//! dollars per request are far from that regime, and variances are
//! clamped at zero.

use serde::{Deserialize, Serialize};

/// One request as the summary sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// What the request cost, in dollars (all attempts, fallbacks included).
    pub cost_usd: f64,
    /// The quality score, if one has arrived; `None` is "no data".
    pub quality: Option<f64>,
    /// The request failed (the error-rate guardrail).
    pub error: bool,
    /// A fallback target served it (the fallback-rate guardrail).
    pub fallback: bool,
}

/// Count, sum and sum of squares of one variable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    pub fn merge(&mut self, other: &Self) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// Sample variance (n − 1 denominator); needs two values.
    pub fn variance(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        Some(((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0))
    }

    /// Variance of the mean, `s²/n`.
    pub fn variance_of_mean(&self) -> Option<f64> {
        Some(self.variance()? / self.n as f64)
    }
}

/// Quality and cost of the graded requests, with their cross sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityCost {
    pub n: u64,
    pub sum_quality: f64,
    pub sum_quality_sq: f64,
    pub sum_cost: f64,
    pub sum_cost_sq: f64,
    /// Σ quality·cost, for the covariance of the two means.
    pub sum_quality_cost: f64,
}

impl QualityCost {
    pub fn push(&mut self, quality: f64, cost: f64) {
        self.n += 1;
        self.sum_quality += quality;
        self.sum_quality_sq += quality * quality;
        self.sum_cost += cost;
        self.sum_cost_sq += cost * cost;
        self.sum_quality_cost += quality * cost;
    }

    pub fn merge(&mut self, other: &Self) {
        self.n += other.n;
        self.sum_quality += other.sum_quality;
        self.sum_quality_sq += other.sum_quality_sq;
        self.sum_cost += other.sum_cost;
        self.sum_cost_sq += other.sum_cost_sq;
        self.sum_quality_cost += other.sum_quality_cost;
    }

    pub fn quality(&self) -> Moments {
        Moments {
            n: self.n,
            sum: self.sum_quality,
            sum_sq: self.sum_quality_sq,
        }
    }

    pub fn cost(&self) -> Moments {
        Moments {
            n: self.n,
            sum: self.sum_cost,
            sum_sq: self.sum_cost_sq,
        }
    }

    /// Sample covariance of quality and cost (n − 1 denominator).
    pub fn covariance(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        Some((self.sum_quality_cost - self.sum_quality * self.sum_cost / n) / (n - 1.0))
    }
}

/// Everything the decision needs about one arm, except latency samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// Requests assigned to the arm (the sample-ratio check counts these).
    pub requests: u64,
    pub errors: u64,
    pub fallbacks: u64,
    /// Cost of every request with a finite cost (cost per request).
    pub cost: Moments,
    /// Requests with a quality score and a finite cost.
    pub graded: QualityCost,
}

impl ArmSummary {
    /// Adds one request. A non-finite quality counts as no quality; a
    /// non-finite cost keeps the request out of both cost sums (and so out
    /// of the graded sums), though it still counts as traffic.
    pub fn record(&mut self, request: &Request) {
        self.requests += 1;
        self.errors += u64::from(request.error);
        self.fallbacks += u64::from(request.fallback);
        if !request.cost_usd.is_finite() {
            return;
        }
        self.cost.push(request.cost_usd);
        if let Some(q) = request.quality.filter(|q| q.is_finite()) {
            self.graded.push(q, request.cost_usd);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.fallbacks += other.fallbacks;
        self.cost.merge(&other.cost);
        self.graded.merge(&other.graded);
    }

    /// Requests without a (usable) quality score: "no data", not zeros.
    pub fn ungraded(&self) -> u64 {
        self.requests.saturating_sub(self.graded.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cost_usd: f64, quality: Option<f64>) -> Request {
        Request {
            cost_usd,
            quality,
            error: false,
            fallback: false,
        }
    }

    #[test]
    fn missing_quality_is_counted_not_zeroed() {
        let mut arm = ArmSummary::default();
        arm.record(&req(0.01, Some(1.0)));
        arm.record(&req(0.03, None));
        arm.record(&req(0.02, Some(0.5)));
        arm.record(&req(0.02, Some(f64::NAN)));
        assert_eq!(arm.requests, 4);
        assert_eq!(arm.ungraded(), 2);
        assert_eq!(arm.graded.n, 2);
        assert_eq!(arm.graded.quality().mean(), Some(0.75));
        // The ratio's cost is over the graded requests only...
        assert!((arm.graded.cost().mean().unwrap() - 0.015).abs() < 1e-15);
        // ...the cost per request over all of them.
        assert!((arm.cost.mean().unwrap() - 0.02).abs() < 1e-15);
    }

    #[test]
    fn moments_match_two_pass_formulas_and_merge() {
        let qs = [0.2, 0.9, 0.4, 1.0, 0.0, 0.7];
        let cs = [0.010, 0.030, 0.012, 0.041, 0.007, 0.020];
        let mut all = ArmSummary::default();
        let (mut a, mut b) = (ArmSummary::default(), ArmSummary::default());
        for (i, (&q, &c)) in qs.iter().zip(&cs).enumerate() {
            let r = Request {
                cost_usd: c,
                quality: Some(q),
                error: i % 3 == 0,
                fallback: i == 1,
            };
            all.record(&r);
            if i < 2 { &mut a } else { &mut b }.record(&r);
        }
        a.merge(&b);
        assert_eq!(a.requests, all.requests);
        assert_eq!((a.errors, a.fallbacks), (2, 1));
        let n = qs.len() as f64;
        let mq = qs.iter().sum::<f64>() / n;
        let mc = cs.iter().sum::<f64>() / n;
        let vq = qs.iter().map(|q| (q - mq).powi(2)).sum::<f64>() / (n - 1.0);
        let cov = qs
            .iter()
            .zip(&cs)
            .map(|(q, c)| (q - mq) * (c - mc))
            .sum::<f64>()
            / (n - 1.0);
        assert!((a.graded.quality().variance().unwrap() - vq).abs() < 1e-14);
        assert!((a.graded.covariance().unwrap() - cov).abs() < 1e-15);
        assert_eq!(Moments::default().mean(), None);
        assert!(a.graded.quality().variance_of_mean().is_some());
    }
}
