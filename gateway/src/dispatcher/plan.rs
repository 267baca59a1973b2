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

    /// Exponential backoff with full jitter: uniform in [0, min(max, initial·2^(n-1))].
    fn backoff(&self) -> Duration {
        let exp = self
            .retry
            .initial_backoff_ms
            .saturating_mul(1u64 << (self.tries - 1).min(20));
        let cap = exp.min(self.retry.max_backoff_ms);
        Duration::from_millis(rand::random_range(0..=cap))
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
}
