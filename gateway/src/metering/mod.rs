//! Metering: one event per client request, with one record per upstream
//! attempt. The dispatcher hands over what happened ([`Ledger`],
//! [`Outcome`]) and [`record_request`] turns it into the event. Events go to
//! an [`EventSink`]; the Prometheus metrics are fed from the same events so
//! that the two can never disagree.

mod record;
mod sink;
pub mod tokens;

pub use flywheel_feedback::{
    AttemptEvent, AttemptOutcome, AttemptSummary, InferenceEvent, Validation,
};
pub use record::{record_request, Ledger, Outcome, Recorded};
pub use sink::{build_sink, EventSink, JsonlSink, MetricsSink, NotRecorded, NullSink, WalSink};

/// USD cost of `prompt` + `completion` tokens at per-1M-token prices.
pub fn cost_usd(prompt: u64, completion: u64, price_in_per_1m: f64, price_out_per_1m: f64) -> f64 {
    (prompt as f64 * price_in_per_1m + completion as f64 * price_out_per_1m) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn cost_uses_per_million_prices() {
        // 1000 prompt tokens at $0.15/1M + 500 completion tokens at $0.60/1M.
        let c = super::cost_usd(1000, 500, 0.15, 0.60);
        assert!((c - 0.00045).abs() < 1e-12, "{c}");
    }
}
