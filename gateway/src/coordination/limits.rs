//! Per-key limits on requests and tokens per minute. With Redis they hold
//! across gateway processes (fixed one-minute windows, `INCR` + `EXPIRE`);
//! without it, or while it is down, each process enforces them alone.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;

use super::Redis;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, Default)]
pub struct KeyLimits {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
}

impl KeyLimits {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute == 0 && self.tokens_per_minute == 0
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over a limit; retry after this many seconds (the window's end).
    Limited {
        retry_after_s: u64,
    },
}

/// Requests and tokens counted in one process's current window.
#[derive(Default)]
struct LocalWindow {
    minute: u64,
    requests: u32,
    tokens: u64,
}

pub struct Limiter {
    redis: Option<Arc<Redis>>,
    local: Mutex<HashMap<Arc<str>, LocalWindow>>,
    metrics: Arc<Metrics>,
}

fn now_minute() -> (u64, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    (secs / 60, 60 - secs % 60)
}

impl Limiter {
    pub fn new(redis: Option<Arc<Redis>>, metrics: Arc<Metrics>) -> Self {
        Self {
            redis,
            local: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Counts one request of `key` and says whether it may proceed.
    pub async fn admit(&self, key: &Arc<str>, limits: KeyLimits) -> Verdict {
        if limits.is_unlimited() {
            return Verdict::Allowed;
        }
        let (minute, left) = now_minute();
        if let Some(redis) = &self.redis {
            if let Some(mut conn) = redis.conn() {
                let req_key = format!("{}rl:{key}:{minute}:req", redis.prefix);
                let tok_key = format!("{}rl:{key}:{minute}:tok", redis.prefix);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .incr(&req_key, 1)
                    .cmd("EXPIRE")
                    .arg(&req_key)
                    .arg(120)
                    .arg("NX")
                    .ignore()
                    .get(&tok_key);
                let result = tokio::time::timeout(
                    redis.timeout,
                    pipe.query_async::<(u64, Option<u64>)>(&mut conn),
                )
                .await;
                match result {
                    Ok(Ok((requests, tokens))) => {
                        return verdict(limits, requests, tokens.unwrap_or(0), left);
                    }
                    Ok(Err(e)) => redis.mark_down(&e),
                    Err(_) => redis.mark_down(&"rate-limit command timed out"),
                }
            }
            self.metrics.rate_limit_fallbacks.inc();
        }
        let mut local = self.local.lock();
        let w = local.entry(key.clone()).or_default();
        if w.minute != minute {
            *w = LocalWindow {
                minute,
                ..Default::default()
            };
        }
        w.requests += 1;
        verdict(limits, u64::from(w.requests), w.tokens, left)
    }

    /// Adds the tokens a finished request used to its key's window.
    pub fn record_tokens(&self, key: &Arc<str>, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let (minute, _) = now_minute();
        {
            let mut local = self.local.lock();
            let w = local.entry(key.clone()).or_default();
            if w.minute != minute {
                *w = LocalWindow {
                    minute,
                    ..Default::default()
                };
            }
            w.tokens += tokens;
        }
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let Some(mut conn) = redis.conn() else { return };
        let tok_key = format!("{}rl:{key}:{minute}:tok", redis.prefix);
        // Off the request path: the answer is already on its way.
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .incr(&tok_key, tokens)
                .ignore()
                .cmd("EXPIRE")
                .arg(&tok_key)
                .arg(120)
                .arg("NX")
                .ignore();
            let r =
                tokio::time::timeout(redis.timeout * 4, pipe.query_async::<()>(&mut conn)).await;
            if let Ok(Err(e)) = r {
                redis.mark_down(&e);
            }
        });
    }
}

fn verdict(limits: KeyLimits, requests: u64, tokens: u64, left_s: u64) -> Verdict {
    let over_requests =
        limits.requests_per_minute > 0 && requests > u64::from(limits.requests_per_minute);
    let over_tokens = limits.tokens_per_minute > 0 && tokens >= limits.tokens_per_minute;
    if over_requests || over_tokens {
        Verdict::Limited {
            retry_after_s: Duration::from_secs(left_s).as_secs().max(1),
        }
    } else {
        Verdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_window_limits_requests_and_tokens() {
        let limiter = Limiter::new(None, Arc::new(Metrics::new()));
        let key: Arc<str> = Arc::from("k");
        let limits = KeyLimits {
            requests_per_minute: 2,
            tokens_per_minute: 0,
        };
        assert_eq!(limiter.admit(&key, limits).await, Verdict::Allowed);
        assert_eq!(limiter.admit(&key, limits).await, Verdict::Allowed);
        assert!(matches!(
            limiter.admit(&key, limits).await,
            Verdict::Limited { .. }
        ));

        let other: Arc<str> = Arc::from("t");
        let limits = KeyLimits {
            requests_per_minute: 0,
            tokens_per_minute: 100,
        };
        assert_eq!(limiter.admit(&other, limits).await, Verdict::Allowed);
        limiter.record_tokens(&other, 100);
        assert!(matches!(
            limiter.admit(&other, limits).await,
            Verdict::Limited { .. }
        ));
    }
}
