//! The few statistics the pages show: ratios that are `None` without data
//! (the API's "null, never 0") and the 95 % interval of a mean from its
//! sums.

/// `x` when it is a number (ClickHouse answers NaN for an empty quantile).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// `n / d`, or `None` when `d` is 0.
pub fn ratio(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d).and_then(finite)
}

/// A mean with its 95 % interval (normal approximation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanCi {
    pub mean: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// z of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Mean and 95 % interval of `n` values whose sum is `sum` and sum of
/// squares `sum_sq`. The interval needs two values; the sample variance
/// is clamped at 0 (float error can make it slightly negative).
pub fn mean_ci(n: u64, sum: f64, sum_sq: f64) -> MeanCi {
    if n == 0 {
        return MeanCi {
            mean: None,
            low: None,
            high: None,
        };
    }
    let nf = n as f64;
    let mean = sum / nf;
    if n < 2 {
        return MeanCi {
            mean: finite(mean),
            low: None,
            high: None,
        };
    }
    let var = ((sum_sq - nf * mean * mean) / (nf - 1.0)).max(0.0);
    let half = Z95 * (var / nf).sqrt();
    MeanCi {
        mean: finite(mean),
        low: finite(mean - half),
        high: finite(mean + half),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_none_without_data() {
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
    }

    #[test]
    fn interval_of_a_mean() {
        // 0, 1, 1, 1: mean 0.75, sample variance 0.25, se 0.25.
        let ci = mean_ci(4, 3.0, 3.0);
        assert_eq!(ci.mean, Some(0.75));
        let half = Z95 * 0.25;
        assert!((ci.low.unwrap() - (0.75 - half)).abs() < 1e-12);
        assert!((ci.high.unwrap() - (0.75 + half)).abs() < 1e-12);
        assert_eq!(mean_ci(1, 0.5, 0.25).low, None);
        assert_eq!(mean_ci(0, 0.0, 0.0).mean, None);
        // Constant values: a zero-width interval, not NaN.
        let c = mean_ci(3, 3.0, 3.0);
        assert_eq!((c.low, c.high), (Some(1.0), Some(1.0)));
    }
}
