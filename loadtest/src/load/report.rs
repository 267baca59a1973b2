//! Aggregated results of a run, as a table or one JSON object.

use std::{collections::BTreeMap, fmt::Write};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest trackable latency: 60 s in microseconds; longer ones saturate.
pub const MAX_US: u64 = 60_000_000;

/// A microsecond histogram covering 1 µs ..= 60 s at 3 significant digits.
#[expect(
    clippy::expect_used,
    reason = "constant bounds that hdrhistogram accepts; every test creates one"
)]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Milliseconds from a microsecond histogram; all zero when empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub target_rate: f64,
    pub achieved_qps: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub dropped: u64,
    pub latency_ms: Percentiles,
    pub ttft_ms: Option<Percentiles>,
}

impl Report {
    pub fn to_json(&self) -> String {
        // Plain numbers and strings: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "target rate    {:>10.1} req/s", self.target_rate);
        let _ = writeln!(
            s,
            "achieved qps   {:>10.1} req/s (ok / {:.1} s)",
            self.achieved_qps, self.duration_s
        );
        let _ = writeln!(s, "sent           {:>10}", self.sent);
        let _ = writeln!(s, "ok             {:>10}", self.ok);
        let _ = writeln!(s, "errors         {:>10}", self.errors);
        for (kind, n) in &self.error_kinds {
            let _ = writeln!(s, "  {kind:<20} {n:>6}");
        }
        let _ = writeln!(s, "dropped        {:>10}", self.dropped);
        let _ = writeln!(
            s,
            "\n{:<10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "ms", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let mut row = |name: &str, p: &Percentiles| {
            let _ = writeln!(
                s,
                "{name:<10}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                p.p50, p.p90, p.p99, p.p999, p.max, p.mean
            );
        };
        row("latency", &self.latency_ms);
        if let Some(t) = &self.ttft_ms {
            row("ttft", t);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        // 1 ms .. 1000 ms, one sample each.
        for ms in 1..=1000u64 {
            h.saturating_record(ms * 1000);
        }
        let p = Percentiles::from_histogram(&h);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.001;
        assert!(close(p.p50, 500.0), "{p:?}");
        assert!(close(p.p90, 900.0), "{p:?}");
        assert!(close(p.p99, 990.0), "{p:?}");
        assert!(close(p.p999, 999.0), "{p:?}");
        assert!(close(p.max, 1000.0), "{p:?}");
        assert!(close(p.mean, 500.5), "{p:?}");
    }

    #[test]
    fn empty_and_saturated() {
        assert_eq!(Percentiles::from_histogram(&new_histogram()).max, 0.0);
        let mut h = new_histogram();
        h.saturating_record(10 * MAX_US);
        assert!((Percentiles::from_histogram(&h).max - 60_000.0).abs() < 60.0);
    }

    #[test]
    fn json_has_the_documented_keys() {
        let p = Percentiles::from_histogram(&new_histogram());
        let r = Report {
            target_rate: 1.0,
            achieved_qps: 1.0,
            duration_s: 1.0,
            warmup_s: 0.0,
            sent: 1,
            ok: 1,
            errors: 0,
            error_kinds: BTreeMap::new(),
            dropped: 0,
            latency_ms: p,
            ttft_ms: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for key in [
            "target_rate",
            "achieved_qps",
            "sent",
            "ok",
            "errors",
            "error_kinds",
            "dropped",
            "latency_ms",
            "ttft_ms",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(v["latency_ms"].get(key).is_some(), "{key}");
        }
        assert!(v["ttft_ms"].is_null());
        assert!(r.to_table().contains("latency"));
    }
}
