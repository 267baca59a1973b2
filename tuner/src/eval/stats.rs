//! The statistics of an eval report, as plain functions so that each can
//! be checked by hand on a tiny set.

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// A point estimate with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Mean with a normal-approximation 95 % interval (sample standard
/// deviation, n − 1), clamped to `[lo, hi]` (the score range). One value
/// gives the widest interval: one observation says nothing about spread.
pub fn mean_ci(xs: &[f64], lo: f64, hi: f64) -> Estimate {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return Estimate {
            value: f64::NAN,
            low: lo,
            high: hi,
        };
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() == 1 {
        return Estimate {
            value: mean,
            low: lo,
            high: hi,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = Z95 * (var / n).sqrt();
    Estimate {
        value: mean,
        low: (mean - half).max(lo),
        high: (mean + half).min(hi),
    }
}

/// Proportion with the Wilson score 95 % interval, which stays inside
/// [0, 1] and is honest at 0/n and n/n, where the normal one collapses.
pub fn wilson(successes: usize, n: usize) -> Estimate {
    if n == 0 {
        return Estimate {
            value: f64::NAN,
            low: 0.0,
            high: 1.0,
        };
    }
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = Z95 * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    Estimate {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// Nearest-rank percentile (`q` in (0, 1]): the smallest value with at
/// least q·n values at or below it. Always one of the observations.
pub fn percentile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Mean score per USD per request: how much quality a dollar buys. `None`
/// when the configuration cost nothing (no prices configured), rather than
/// an infinity that would top every table.
pub fn quality_per_dollar(mean_score: f64, cost_per_request: f64) -> Option<f64> {
    (cost_per_request > 0.0 && mean_score.is_finite()).then(|| mean_score / cost_per_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn mean_ci_by_hand() {
        // 0, 1, 1, 1: mean 0.75, sample variance 0.25, se = 0.25, half 0.48999.
        let e = mean_ci(&[0.0, 1.0, 1.0, 1.0], 0.0, 1.0);
        assert!(close(e.value, 0.75));
        assert!(close(e.low, 0.75 - Z95 * 0.25), "{e:?}");
        assert!(close(e.high, 1.0), "clamped to the score range: {e:?}");
        let one = mean_ci(&[0.4], 0.0, 1.0);
        assert_eq!((one.value, one.low, one.high), (0.4, 0.0, 1.0));
        assert!(mean_ci(&[], 0.0, 1.0).value.is_nan());
    }

    #[test]
    fn wilson_by_hand() {
        // 8 of 10: centre (0.8 + 1.9208/10)/1.38415 = 0.71674,
        // half 1.95996·sqrt(0.016 + 0.0096037)/1.38415 = 0.22658.
        let e = wilson(8, 10);
        assert!(close(e.value, 0.8));
        assert!((e.low - 0.4902).abs() < 1e-4, "{e:?}");
        assert!((e.high - 0.9433).abs() < 1e-4, "{e:?}");
        let zero = wilson(0, 5);
        assert_eq!(zero.low, 0.0);
        assert!(zero.high > 0.4 && zero.high < 0.45, "{zero:?}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&xs, 0.5), 3.0);
        assert_eq!(percentile(&xs, 0.95), 5.0);
        assert_eq!(percentile(&xs, 0.2), 1.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn quality_per_dollar_needs_a_cost() {
        assert_eq!(quality_per_dollar(0.5, 0.001), Some(500.0));
        assert_eq!(quality_per_dollar(0.5, 0.0), None);
    }
}
