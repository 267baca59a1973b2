//! A circuit breaker per provider: it opens when the error ratio over the
//! last `window` attempts reaches `error_ratio`, rejects attempts for
//! `open_ms`, then lets `half_open_probes` probes through; a successful probe
//! closes it, a failed one opens it again.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::{config::CircuitBreakerConfig, metrics::Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

struct Inner {
    state: CircuitState,
    /// true = failure, most recent last.
    outcomes: VecDeque<bool>,
    failures: usize,
}

pub struct CircuitBreaker {
    provider: String,
    cfg: CircuitBreakerConfig,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

/// Permission to make one attempt; report its result with `success` or
/// `failure`. Dropped without a report (the attempt was abandoned, e.g. the
/// client left), it counts as neither.
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.report(self.probe, false);
    }
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.report(self.probe, true);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            let mut inner = self.breaker.inner.lock();
            if let CircuitState::HalfOpen { probes_in_flight } = &mut inner.state {
                *probes_in_flight = probes_in_flight.saturating_sub(1);
            }
        }
    }
}

impl CircuitBreaker {
    pub fn new(provider: &str, cfg: &CircuitBreakerConfig, metrics: Arc<Metrics>) -> Self {
        metrics.circuit_state.with_label_values(&[provider]).set(0);
        Self {
            provider: provider.to_owned(),
            cfg: cfg.clone(),
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                outcomes: VecDeque::with_capacity(cfg.window),
                failures: 0,
            }),
            metrics,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.inner.lock().state
    }

    /// `None` while the breaker is open (or half-open with all probes taken).
    pub fn acquire(&self) -> Option<Permit<'_>> {
        let mut inner = self.inner.lock();
        let probe = match &mut inner.state {
            CircuitState::Closed => false,
            CircuitState::Open { until } => {
                if Instant::now() < *until {
                    return None;
                }
                inner.state = CircuitState::HalfOpen {
                    probes_in_flight: 1,
                };
                self.set_gauge(&inner.state);
                true
            }
            CircuitState::HalfOpen { probes_in_flight } => {
                if *probes_in_flight >= self.cfg.half_open_probes {
                    return None;
                }
                *probes_in_flight += 1;
                true
            }
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    fn report(&self, probe: bool, failed: bool) {
        let mut inner = self.inner.lock();
        if probe {
            inner.outcomes.clear();
            inner.failures = 0;
            inner.state = if failed {
                self.open_state()
            } else {
                CircuitState::Closed
            };
            self.set_gauge(&inner.state);
            return;
        }
        if inner.outcomes.len() == self.cfg.window && inner.outcomes.pop_front() == Some(true) {
            inner.failures -= 1;
        }
        inner.outcomes.push_back(failed);
        if failed {
            inner.failures += 1;
        }
        let n = inner.outcomes.len();
        if matches!(inner.state, CircuitState::Closed)
            && n >= self.cfg.min_requests
            && inner.failures as f64 >= self.cfg.error_ratio * n as f64
        {
            tracing::warn!(provider = %self.provider, failures = inner.failures, window = n, "circuit opened");
            inner.state = self.open_state();
            inner.outcomes.clear();
            inner.failures = 0;
            self.set_gauge(&inner.state);
        }
    }

    fn open_state(&self) -> CircuitState {
        CircuitState::Open {
            until: Instant::now() + Duration::from_millis(self.cfg.open_ms),
        }
    }

    fn set_gauge(&self, state: &CircuitState) {
        let v = match state {
            CircuitState::Closed => 0,
            CircuitState::Open { .. } => 1,
            CircuitState::HalfOpen { .. } => 2,
        };
        self.metrics
            .circuit_state
            .with_label_values(&[&self.provider])
            .set(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_ms: u64) -> CircuitBreaker {
        let cfg = CircuitBreakerConfig {
            window: 4,
            min_requests: 4,
            error_ratio: 0.5,
            open_ms,
            half_open_probes: 1,
        };
        CircuitBreaker::new("p", &cfg, Arc::new(Metrics::new()))
    }

    #[test]
    fn opens_on_error_ratio_then_probes() {
        let b = breaker(0);
        b.acquire().unwrap().success();
        b.acquire().unwrap().success();
        b.acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.acquire().unwrap().failure(); // 2 of 4 failed = 0.5
        assert!(matches!(b.state(), CircuitState::Open { .. }));
        // open_ms = 0: the next acquire is a half-open probe; only one at a time.
        let probe = b.acquire().unwrap();
        assert!(b.acquire().is_none());
        probe.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn open_rejects_until_timeout() {
        let b = breaker(60_000);
        for _ in 0..4 {
            b.acquire().unwrap().failure();
        }
        assert!(b.acquire().is_none());
    }

    #[test]
    fn failed_probe_reopens() {
        let b = breaker(0);
        for _ in 0..4 {
            b.acquire().unwrap().failure();
        }
        b.acquire().unwrap().failure();
        assert!(matches!(b.state(), CircuitState::Open { .. }));
    }
}
