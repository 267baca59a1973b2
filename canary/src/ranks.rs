//! Rank tests for latency guardrails, as Kayenta judges its metrics:
//! the Mann-Whitney U test and the Hodges-Lehmann shift with its
//! distribution-free confidence interval.
//!
//! * [`mann_whitney`]: `U₁ = R₁ − n₁(n₁+1)/2` from mid-ranks; normal
//!   approximation with the tie-corrected variance
//!   `σ² = n₁n₂/12 · ((n+1) − Σ(t³−t)/(n(n−1)))` and a continuity
//!   correction of ½, as `scipy.stats.mannwhitneyu(method='asymptotic')`.
//! * [`hodges_lehmann`]: the shift estimate is the median of the `n₁n₂`
//!   pairwise differences `xᵢ − yⱼ`; the interval is
//!   `[D₍c₎, D₍n₁n₂+1−c₎]` of the ordered differences, where `c` is the
//!   largest rank with `P(U ≤ c − 1) ≤ (1 − confidence)/2` under the null.
//!   For `n₁ + n₂ ≤ 100` that probability is exact (the null distribution
//!   of U, counted as the coefficients of the Gaussian binomial
//!   `[n₁+n₂ choose n₁]_q`); above, `c = ⌊n₁n₂/2 + ½ − z·σ⌋` (normal
//!   approximation with continuity correction and the tie-corrected σ).
//!
//! The `n₁n₂` differences are never stored: [`kth_difference`] finds an
//! order statistic by bisection on the bit patterns of `f64` (64 steps),
//! counting differences `≤ t` in `O(n₁ + n₂)` on sorted inputs with two
//! pointers. So a rank test on 100 000 samples per arm stays cheap.
//!
//! These are fixed-sample tests. Repeated looks inflate their error rate,
//! so the decision uses them only together with an effect-size threshold
//! (see [`crate::decision`]).

use serde::{Deserialize, Serialize};

use crate::dist::{normal_quantile, normal_sf};

/// Exact null distribution is used up to this many observations in all.
pub const EXACT_MAX_N: usize = 100;

/// The Mann-Whitney U test of `x` against `y`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of `x`: pairs with `xᵢ > yⱼ`, ties counting ½.
    pub u1: f64,
    pub u2: f64,
    /// Tie-corrected standard deviation of U under the null.
    pub sigma: f64,
    /// Two-sided p-value (continuity-corrected normal approximation).
    pub p_two_sided: f64,
    /// One-sided p-value for "x tends to be larger than y".
    pub p_greater: f64,
    /// One-sided p-value for "x tends to be smaller than y".
    pub p_less: f64,
}

/// Mann-Whitney U of `x` against `y`; `None` if either is empty or holds a
/// NaN.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum_x, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Positions i..=j share the mid-rank (i+1 + j+1)/2.
        let mid_rank = (i + j + 2) as f64 / 2.0;
        let in_x = all[i..=j].iter().filter(|v| v.1).count() as f64;
        rank_sum_x += mid_rank * in_x;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let n = n1 + n2;
    let u1 = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let u2 = n1 * n2 - u1;
    let mu = n1 * n2 / 2.0;
    let var = if n > 1.0 {
        n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
    } else {
        0.0
    };
    let sigma = var.max(0.0).sqrt();
    let sf = |u: f64| {
        if sigma > 0.0 {
            normal_sf((u - mu - 0.5) / sigma)
        } else {
            1.0
        }
    };
    Some(MannWhitney {
        u1,
        u2,
        sigma,
        p_two_sided: (2.0 * sf(u1.max(u2))).min(1.0),
        p_greater: sf(u1).min(1.0),
        p_less: sf(u2).min(1.0),
    })
}

/// The Hodges-Lehmann shift of `x` relative to `y` (`x − y`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HodgesLehmann {
    /// Median of the pairwise differences.
    pub estimate: f64,
    /// Two-sided interval at `confidence` (each side at
    /// `(1 − confidence)/2`); ±∞ when the samples are too small for it.
    pub lower: f64,
    pub upper: f64,
    pub confidence: f64,
    /// The rank `c` of the lower end (0 when unbounded).
    pub rank: u64,
    /// Whether `c` came from the exact null distribution.
    pub exact: bool,
}

/// Hodges-Lehmann estimate and interval (module docs); `None` if either
/// sample is empty, holds a NaN, or `confidence` is not in (0, 1).
pub fn hodges_lehmann(x: &[f64], y: &[f64], confidence: f64) -> Option<HodgesLehmann> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    let mw = mann_whitney(x, y)?;
    let xs = sorted(x);
    let ys = sorted(y);
    let (n1, n2) = (xs.len(), ys.len());
    let pairs = (n1 as u64) * (n2 as u64);
    let estimate = if pairs % 2 == 1 {
        kth_difference(&xs, &ys, pairs / 2 + 1)?
    } else {
        0.5 * (kth_difference(&xs, &ys, pairs / 2)? + kth_difference(&xs, &ys, pairs / 2 + 1)?)
    };
    let tail = (1.0 - confidence) / 2.0;
    let exact = n1 + n2 <= EXACT_MAX_N;
    let rank = if exact {
        let cdf = u_null_cdf(n1, n2);
        // Largest c with P(U ≤ c−1) ≤ tail, i.e. count the u with cdf ≤ tail.
        cdf.iter().take_while(|&&p| p <= tail).count() as u64
    } else {
        let z = normal_quantile(1.0 - tail);
        let c = (pairs as f64 / 2.0 + 0.5 - z * mw.sigma).floor();
        if c >= 1.0 {
            c as u64
        } else {
            0
        }
    };
    let (lower, upper) = if rank >= 1 && rank <= pairs / 2 {
        (
            kth_difference(&xs, &ys, rank)?,
            kth_difference(&xs, &ys, pairs + 1 - rank)?,
        )
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    };
    Some(HodgesLehmann {
        estimate,
        lower,
        upper,
        confidence,
        rank,
        exact,
    })
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The `k`-th smallest (1-based) of the differences `xᵢ − yⱼ` of two
/// **sorted**, NaN-free samples; `None` if `k` is out of range.
pub fn kth_difference(xs: &[f64], ys: &[f64], k: u64) -> Option<f64> {
    let pairs = (xs.len() as u64) * (ys.len() as u64);
    if k == 0 || k > pairs {
        return None;
    }
    let (first_x, last_x) = (xs.first()?, xs.last()?);
    let (first_y, last_y) = (ys.first()?, ys.last()?);
    // Rounding is monotone, so x − y (as computed) rises with x and falls
    // with y: for a fixed i the j with xᵢ − yⱼ ≤ t are a suffix, whose
    // start moves right as i grows.
    let count_le = |t: f64| -> u64 {
        let mut j = 0;
        let mut count = 0u64;
        for &x in xs {
            while j < ys.len() && x - ys[j] > t {
                j += 1;
            }
            count += (ys.len() - j) as u64;
        }
        count
    };
    // Smallest t (in the f64 order) with count_le(t) ≥ k: t is then one of
    // the differences. Search over order-preserving keys of the bits.
    let (mut lo, mut hi) = (key(first_x - last_y), key(last_x - first_y));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_le(from_key(mid)) >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(from_key(lo))
}

/// Maps f64 (no NaN) to u64 preserving order.
fn key(f: f64) -> u64 {
    let bits = f.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn from_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// `P(U ≤ u)` for `u = 0..=n₁n₂` under the null, without ties: the
/// coefficients of `[n₁+n₂ choose n₁]_q = Π_{i=1..m} (1 − q^{n+i})/(1 − q^i)`
/// (m = min, n = max), over `C(n₁+n₂, n₁)`. Exact integers (i128) up to
/// [`EXACT_MAX_N`] in all.
pub fn u_null_cdf(n1: usize, n2: usize) -> Vec<f64> {
    let (m, n) = (n1.min(n2), n1.max(n2));
    // Room for the intermediate degree i·n + i.
    let mut poly = vec![0i128; m * n + m + 1];
    poly[0] = 1;
    // After step i, poly = [n+i choose i]_q, of degree i·n.
    for i in 1..=m {
        let degree = (i - 1) * n;
        // × (1 − q^{n+i}), high to low so each coefficient reads the old one.
        for k in (n + i..=degree + n + i).rev() {
            poly[k] -= poly[k - n - i];
        }
        // ÷ (1 − q^i): P_k = A_k + P_{k−i} (exact: the top i come out 0).
        for k in i..=degree + n + i {
            poly[k] += poly[k - i];
        }
    }
    poly.truncate(m * n + 1);
    let total: i128 = poly.iter().sum();
    let mut acc = 0i128;
    poly.iter()
        .map(|&c| {
            acc += c;
            acc as f64 / total as f64
        })
        .collect()
}

/// Exact two-sided Mann-Whitney p-value without ties
/// (`2·P(U ≥ max(U₁, U₂))`, as scipy's `method='exact'`); `None` beyond
/// [`EXACT_MAX_N`] observations or with ties.
pub fn mann_whitney_exact_p(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() + y.len() > EXACT_MAX_N {
        return None;
    }
    let mw = mann_whitney(x, y)?;
    let mut all: Vec<f64> = x.iter().chain(y).copied().collect();
    all.sort_by(f64::total_cmp);
    if all.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let cdf = u_null_cdf(x.len(), y.len());
    let u = mw.u1.max(mw.u2) as usize;
    // P(U ≥ u) = 1 − P(U ≤ u − 1).
    let sf = 1.0
        - u.checked_sub(1)
            .and_then(|i| cdf.get(i))
            .copied()
            .unwrap_or(0.0);
    Some((2.0 * sf).min(1.0))
}

/// Linear-interpolation quantile (numpy's default) of a sample.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let s = sorted(v);
    let h = (s.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    Some(s[lo] + (h - lo as f64) * (s[hi] - s[lo]))
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    const X: [f64; 12] = [
        212.0, 180.5, 301.0, 250.0, 199.0, 260.5, 180.5, 420.0, 233.0, 275.0, 190.0, 310.0,
    ];
    const Y: [f64; 15] = [
        170.0, 180.5, 205.0, 160.0, 199.0, 188.0, 240.0, 150.5, 230.0, 176.0, 210.0, 199.0, 260.5,
        182.0, 171.0,
    ];

    /// Reference (scipy 1.17.1, numpy), with the X and Y above:
    ///
    /// ```python
    /// from scipy.stats import mannwhitneyu
    /// r = mannwhitneyu(X, Y, alternative='two-sided', method='asymptotic', use_continuity=True)
    /// g = mannwhitneyu(X, Y, alternative='greater', method='asymptotic', use_continuity=True)
    /// l = mannwhitneyu(X, Y, alternative='less', method='asymptotic', use_continuity=True)
    /// print(repr(r.statistic), repr(r.pvalue), repr(g.pvalue), repr(l.pvalue))
    /// ```
    #[test]
    fn mann_whitney_matches_scipy_with_ties() {
        let mw = mann_whitney(&X, &Y).unwrap();
        assert_eq!(mw.u1, REF_U1);
        assert_eq!(mw.u1 + mw.u2, (X.len() * Y.len()) as f64);
        assert!(
            (mw.p_two_sided - REF_P_TWO).abs() < 1e-12,
            "{}",
            mw.p_two_sided
        );
        assert!(
            (mw.p_greater - REF_P_GREATER).abs() < 1e-12,
            "{}",
            mw.p_greater
        );
        assert!((mw.p_less - REF_P_LESS).abs() < 1e-12, "{}", mw.p_less);
    }
    const REF_U1: f64 = 141.5;
    const REF_P_TWO: f64 = 0.012_703_656_062_955_444;
    const REF_P_GREATER: f64 = 0.006_351_828_031_477_722;
    const REF_P_LESS: f64 = 0.994_470_559_599_177_6;

    /// Large samples (normal approximation for the rank), reference:
    ///
    /// ```python
    /// import numpy as np
    /// from scipy.stats import mannwhitneyu, norm
    /// x = [100 + (i * 37 % 101) + 0.25 * (i % 7) for i in range(150)]
    /// y = [90 + (i * 53 % 97) + 0.5 * (i % 5) for i in range(130)]
    /// r = mannwhitneyu(x, y, alternative='two-sided', method='asymptotic', use_continuity=True)
    /// d = np.sort(np.subtract.outer(x, y).ravel())
    /// n1, n2, N = len(x), len(y), len(x) * len(y)
    /// _, t = np.unique(np.concatenate([x, y]), return_counts=True)
    /// n = n1 + n2
    /// sigma = np.sqrt(n1 * n2 / 12 * ((n + 1) - (t**3 - t).sum() / (n * (n - 1))))
    /// c = int(np.floor(N / 2 + 0.5 - norm.ppf(0.975) * sigma))
    /// print(repr(r.statistic), repr(r.pvalue), repr(np.median(d)), c, repr(d[c - 1]), repr(d[N - c]))
    /// ```
    #[test]
    fn large_sample_rank_test_and_hl_match_reference() {
        let x: Vec<f64> = (0..150)
            .map(|i| 100.0 + f64::from(i * 37 % 101) + 0.25 * f64::from(i % 7))
            .collect();
        let y: Vec<f64> = (0..130)
            .map(|i| 90.0 + f64::from(i * 53 % 97) + 0.5 * f64::from(i % 5))
            .collect();
        let mw = mann_whitney(&x, &y).unwrap();
        assert_eq!(mw.u1, LARGE_U1);
        assert!((mw.p_two_sided - LARGE_P).abs() < 1e-12);
        let hl = hodges_lehmann(&x, &y, 0.95).unwrap();
        assert!(!hl.exact);
        assert_eq!(hl.rank, LARGE_C);
        assert_eq!(
            (hl.estimate, hl.lower, hl.upper),
            (LARGE_HL, LARGE_LO, LARGE_HI)
        );
    }
    const LARGE_U1: f64 = 11_976.5;
    const LARGE_P: f64 = 0.000_987_049_723_912_522_6;
    const LARGE_C: u64 = 8426;
    const LARGE_HL: f64 = 12.0;
    const LARGE_LO: f64 = 5.0;
    const LARGE_HI: f64 = 19.0;

    /// Small samples: the exact null distribution against scipy's exact
    /// p-values, and the HL interval's exact rank.
    ///
    /// ```python
    /// from scipy.stats import mannwhitneyu
    /// a = [1.1, 2.3, 3.8, 4.0, 5.2, 6.9, 7.7]
    /// b = [0.4, 0.9, 1.5, 2.0, 2.8, 3.1, 3.3, 4.4, 5.0]
    /// print(repr(mannwhitneyu(a, b, method='exact').pvalue))
    /// print(repr(mannwhitneyu(a[:3], b[:4], method='exact').pvalue))
    /// ```
    #[test]
    fn exact_null_distribution_matches_scipy() {
        let a = [1.1, 2.3, 3.8, 4.0, 5.2, 6.9, 7.7];
        let b = [0.4, 0.9, 1.5, 2.0, 2.8, 3.1, 3.3, 4.4, 5.0];
        let p = mann_whitney_exact_p(&a, &b).unwrap();
        assert!((p - EXACT_P).abs() < 1e-12, "{p}");
        let p = mann_whitney_exact_p(&a[..3], &b[..4]).unwrap();
        assert!((p - EXACT_P_SMALL).abs() < 1e-12, "{p}");
        // The distribution is symmetric and sums to one (C(100, 50) paths).
        let cdf = u_null_cdf(50, 50);
        assert!((cdf[2500] - 1.0).abs() < 1e-15);
        for u in [0usize, 10, 700, 1249] {
            let lower = cdf[u];
            let upper = 1.0 - cdf[2499 - u];
            assert!((lower - upper).abs() < 1e-12, "{u}");
        }
        // HL at 95 % on 7 vs 9, reference by enumerating the null:
        //
        // ```python
        // import itertools, numpy as np
        // n1, n2 = len(a), len(b)
        // us = [sum(r) - n1 * (n1 + 1) // 2
        //       for r in itertools.combinations(range(1, n1 + n2 + 1), n1)]
        // counts = np.bincount(us, minlength=n1 * n2 + 1)
        // cdf = np.cumsum(counts) / counts.sum()
        // c = int((cdf <= 0.025).sum())
        // d = np.sort(np.subtract.outer(a, b).ravel())
        // print(c, repr(np.median(d)), repr(d[c - 1]), repr(d[n1 * n2 - c]))
        // ```
        // → 13 1.9000000000000004 -0.6000000000000005 4.3
        let hl = hodges_lehmann(&a, &b, 0.95).unwrap();
        assert!(hl.exact);
        assert_eq!(hl.rank, 13);
        assert_eq!(
            (hl.estimate, hl.lower, hl.upper),
            (1.900_000_000_000_000_4, -0.600_000_000_000_000_5, 4.3)
        );
        assert!(cdf_at(7, 9, hl.rank - 1) <= 0.025 && cdf_at(7, 9, hl.rank) > 0.025);
        // Too few observations for a 95 % interval.
        let tiny = hodges_lehmann(&[1.0, 2.0], &[3.0], 0.95).unwrap();
        assert_eq!(
            (tiny.lower, tiny.upper, tiny.rank),
            (f64::NEG_INFINITY, f64::INFINITY, 0)
        );
    }
    const EXACT_P: f64 = 0.114_160_839_160_839_16;
    const EXACT_P_SMALL: f64 = 0.228_571_428_571_428_56;

    fn cdf_at(n1: usize, n2: usize, u: u64) -> f64 {
        u_null_cdf(n1, n2)[u as usize]
    }

    #[test]
    fn kth_difference_matches_brute_force() {
        let mut rng = StdRng::seed_from_u64(3);
        for round in 0..50 {
            let n1 = rng.random_range(1..40);
            let n2 = rng.random_range(1..40);
            // Rounded values make ties; negatives cross zero.
            let mut x: Vec<f64> = (0..n1)
                .map(|_| (rng.random::<f64>() * 20.0 - 5.0).round() / 2.0)
                .collect();
            let mut y: Vec<f64> = (0..n2).map(|_| rng.random::<f64>() * 10.0 - 5.0).collect();
            if round % 2 == 0 {
                y.iter_mut().for_each(|v| *v = v.round());
            }
            x.sort_by(f64::total_cmp);
            y.sort_by(f64::total_cmp);
            let mut d: Vec<f64> = x
                .iter()
                .flat_map(|a| y.iter().map(move |b| a - b))
                .collect();
            d.sort_by(f64::total_cmp);
            for k in 1..=d.len() as u64 {
                assert_eq!(kth_difference(&x, &y, k), Some(d[k as usize - 1]), "k {k}");
            }
            assert_eq!(kth_difference(&x, &y, 0), None);
            assert_eq!(kth_difference(&x, &y, d.len() as u64 + 1), None);
        }
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        // numpy.quantile([4, 1, 3, 2, 10], [0, 0.5, 0.95, 1]) = [1, 3, 8.8, 10]
        let v = [4.0, 1.0, 3.0, 2.0, 10.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert!((quantile(&v, 0.95).unwrap() - 8.8).abs() < 1e-12);
        assert_eq!(quantile(&v, 1.0), Some(10.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
