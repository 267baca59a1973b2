//! The order of attempts: retries on one target with backoff, then the next
//! target of the fallback chain.

use std::time::Duration;

use crate::config::RetryConfig;

#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Worth retrying on the same target, after `retry_after` if the upstream
    /// asked for it.
    Retryable { retry_after: Option<Duration> },
    /// The answer failed output validation.
    Validation,
    /// Move to the next target right away (circuit open, Retry-After too long).
    NextTarget,
}

pub struct Plan<'a> {
    retry: &'a RetryConfig,
    targets: usize,
    pub target: usize,
    /// Attempts made on the current target so far.
    pub tries: u32,
    validation_tries: u32,
}

impl<'a> Plan<'a> {
    pub fn new(retry: &'a RetryConfig, targets: usize) -> Self {
        Self {
            retry,
            targets,
            target: 0,
            tries: 0,
            validation_tries: 0,
        }
    }

    pub fn exhausted(&self) -> bool {
        self.target >= self.targets
    }

    /// Records a failure of the current attempt and returns how long to wait
    /// before the next one, or `None` when the chain is exhausted.
    pub fn next(&mut self, failure: Failure) -> Option<Duration> {
        self.tries += 1;
        match failure {
            Failure::Validation if self.validation_tries < self.retry.validation_retries => {
                self.validation_tries += 1;
                return Some(Duration::ZERO);
            }
            Failure::Retryable { retry_after } if self.tries <= self.retry.max_retries => {
                match retry_after {
                    Some(wait) if wait > Duration::from_millis(self.retry.max_retry_after_ms) => {}
                    Some(wait) => return Some(wait),
                    None => return Some(self.backoff()),
                }
            }
            _ => {}
        }
        self.target += 1;
        self.tries = 0;
        self.validation_tries = 0;
        (!self.exhausted()).then_some(Duration::ZERO)
    }

    /// Exponential backoff with full jitter: uniform in [0, cap].
    fn backoff(&self) -> Duration {
        Duration::from_millis(rand::random_range(0..=self.backoff_cap_ms()))
    }

    /// Longest backoff before retry number `tries` on this target:
    /// min(max, initial·2^(tries-1)).
    fn backoff_cap_ms(&self) -> u64 {
        let exp = self
            .retry
            .initial_backoff_ms
            .saturating_mul(1u64 << self.tries.saturating_sub(1).min(20));
        exp.min(self.retry.max_backoff_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryConfig {
        RetryConfig {
            max_retries: 2,
            validation_retries: 1,
            initial_backoff_ms: 10,
            max_backoff_ms: 15,
            ..Default::default()
        }
    }

    #[test]
    fn retries_then_falls_back_then_exhausts() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        let f = Failure::Retryable { retry_after: None };
        assert!(p.next(f).unwrap() <= Duration::from_millis(10));
        assert!(p.next(f).unwrap() <= Duration::from_millis(15));
        assert_eq!((p.target, p.tries), (0, 2));
        assert_eq!(p.next(f), Some(Duration::ZERO));
        assert_eq!((p.target, p.tries), (1, 0));
        p.next(f);
        p.next(f);
        assert_eq!(p.next(f), None);
        assert!(p.exhausted());
    }

    #[test]
    fn validation_retries_are_separate() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        assert_eq!(p.next(Failure::Validation), Some(Duration::ZERO));
        assert_eq!(p.target, 0);
        p.next(Failure::Validation);
        assert_eq!(p.target, 1);
    }

    #[test]
    fn honours_and_caps_retry_after() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        let wait = Duration::from_millis(300);
        assert_eq!(
            p.next(Failure::Retryable {
                retry_after: Some(wait)
            }),
            Some(wait)
        );
        let too_long = Duration::from_secs(3600);
        p.next(Failure::Retryable {
            retry_after: Some(too_long),
        });
        assert_eq!(p.target, 1);
    }

    fn retryable() -> Failure {
        Failure::Retryable { retry_after: None }
    }

    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_cap() {
        let r = RetryConfig {
            max_retries: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..Default::default()
        };
        let mut p = Plan::new(&r, 1);
        let mut caps = Vec::new();
        for _ in 0..6 {
            let wait = p.next(retryable()).unwrap();
            let cap = p.backoff_cap_ms();
            assert!(wait <= Duration::from_millis(cap), "{wait:?} > {cap} ms");
            caps.push(cap);
        }
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn many_retries_do_not_overflow_the_backoff() {
        let r = RetryConfig {
            max_retries: 100,
            initial_backoff_ms: u64::MAX / 4,
            max_backoff_ms: 5,
            ..Default::default()
        };
        let mut p = Plan::new(&r, 1);
        for _ in 0..100 {
            assert!(p.next(retryable()).unwrap() <= Duration::from_millis(5));
        }
        assert_eq!(p.target, 0);
    }

    #[test]
    fn next_target_failures_walk_the_chain_without_waiting() {
        let r = retry();
        let mut p = Plan::new(&r, 3);
        assert_eq!(p.next(Failure::NextTarget), Some(Duration::ZERO));
        assert_eq!((p.target, p.tries), (1, 0));
        assert_eq!(p.next(Failure::NextTarget), Some(Duration::ZERO));
        assert_eq!(p.target, 2);
        assert_eq!(p.next(Failure::NextTarget), None);
        assert!(p.exhausted());
    }

    #[test]
    fn without_retries_a_retryable_failure_falls_back_at_once() {
        let r = RetryConfig {
            max_retries: 0,
            ..retry()
        };
        let mut p = Plan::new(&r, 2);
        assert_eq!(p.next(retryable()), Some(Duration::ZERO));
        assert_eq!((p.target, p.tries), (1, 0));
    }

    #[test]
    fn waits_the_upstream_asked_for_count_against_the_retries() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        let wait = Duration::from_millis(50);
        let asked = Failure::Retryable {
            retry_after: Some(wait),
        };
        assert_eq!(p.next(asked), Some(wait));
        assert_eq!(p.next(asked), Some(wait));
        assert_eq!(p.target, 0);
        assert_eq!(p.next(asked), Some(Duration::ZERO));
        assert_eq!(p.target, 1);
    }

    #[test]
    fn a_retry_after_at_the_limit_is_honoured() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        let limit = Duration::from_millis(r.max_retry_after_ms);
        let asked = Failure::Retryable {
            retry_after: Some(limit),
        };
        assert_eq!(p.next(asked), Some(limit));
        assert_eq!(p.target, 0);
    }

    #[test]
    fn validation_retries_count_as_tries_on_the_target() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        assert_eq!(p.next(Failure::Validation), Some(Duration::ZERO));
        assert_eq!((p.target, p.tries), (0, 1));
        assert!(p.next(retryable()).is_some());
        assert_eq!((p.target, p.tries), (0, 2));
        // max_retries = 2 tries after the first are used up: fall back.
        assert_eq!(p.next(retryable()), Some(Duration::ZERO));
        assert_eq!((p.target, p.tries), (1, 0));
    }

    #[test]
    fn the_next_target_gets_fresh_budgets() {
        let r = retry();
        let mut p = Plan::new(&r, 2);
        p.next(Failure::Validation);
        p.next(Failure::Validation);
        assert_eq!((p.target, p.tries), (1, 0));
        assert_eq!(p.next(Failure::Validation), Some(Duration::ZERO));
        assert_eq!(p.target, 1);
        assert!(p.next(retryable()).is_some());
        assert_eq!(p.target, 1);
        assert_eq!(p.next(retryable()), None);
        assert!(p.exhausted());
    }
}
