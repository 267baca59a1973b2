//! Per-key limits on requests and tokens per minute. With Redis they hold
//! across gateway processes (fixed one-minute windows, `INCR` + `EXPIRE`);
//! without it, or while it is down, each process enforces them alone.
//!
//! Tokens are reserved before a request runs ([`Limiter::reserve`]: its
//! prompt estimate plus `max_tokens` × `n`), so that concurrent requests
//! cannot overrun the limit together, and the reservation is replaced by
//! what the request used when it ends ([`Limiter::settle`]).

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

/// Tokens taken from a key's window before a request ran.
#[derive(Debug)]
pub struct Reservation {
    key: Arc<str>,
    minute: u64,
    tokens: u64,
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
        let w = window(&mut local, key, minute);
        w.requests = w.requests.saturating_add(1);
        verdict(limits, u64::from(w.requests), w.tokens, left)
    }

    /// Reserves `tokens` in `key`'s window, or gives the seconds to wait
    /// before retrying (the window's end): refused
    /// when the window would then hold more than `tokens_per_minute`. A
    /// request larger than a whole minute's budget reserves the budget: it
    /// runs when it has a window to itself.
    pub async fn reserve(
        &self,
        key: &Arc<str>,
        tokens_per_minute: u64,
        tokens: u64,
    ) -> Result<Reservation, u64> {
        let tokens = tokens.min(tokens_per_minute);
        let (minute, left) = now_minute();
        let limited = left.max(1);
        if let Some(redis) = &self.redis {
            if let Some(mut conn) = redis.conn() {
                let tok_key = format!("{}rl:{key}:{minute}:tok", redis.prefix);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .incr(&tok_key, tokens)
                    .cmd("EXPIRE")
                    .arg(&tok_key)
                    .arg(120)
                    .arg("NX")
                    .ignore();
                let result =
                    tokio::time::timeout(redis.timeout, pipe.query_async::<(i64,)>(&mut conn))
                        .await;
                match result {
                    Ok(Ok((total,))) => {
                        if total > signed(tokens_per_minute) {
                            // Give back what was taken for a refused request.
                            self.add_redis(key, minute, -signed(tokens));
                            return Err(limited);
                        }
                        // The fallback count, should Redis go down.
                        self.add_local(key, minute, signed(tokens));
                        return Ok(Reservation {
                            key: key.clone(),
                            minute,
                            tokens,
                        });
                    }
                    Ok(Err(e)) => redis.mark_down(&e),
                    Err(_) => redis.mark_down(&"token reservation timed out"),
                }
            }
            self.metrics.rate_limit_fallbacks.inc();
        }
        let mut local = self.local.lock();
        let w = window(&mut local, key, minute);
        if w.tokens.saturating_add(tokens) > tokens_per_minute {
            return Err(limited);
        }
        w.tokens += tokens;
        Ok(Reservation {
            key: key.clone(),
            minute,
            tokens,
        })
    }

    /// Replaces a reservation by the tokens the request used. Once its
    /// minute is over, the use counts in the current window.
    pub fn settle(&self, reservation: &Reservation, used: u64) {
        let (minute, _) = now_minute();
        let delta = if minute == reservation.minute {
            signed(used).saturating_sub(signed(reservation.tokens))
        } else {
            signed(used)
        };
        self.add_tokens(&reservation.key, minute, delta);
    }

    /// Adds the tokens a finished request used to its key's window (a
    /// request that reserved none).
    pub fn record_tokens(&self, key: &Arc<str>, tokens: u64) {
        let (minute, _) = now_minute();
        self.add_tokens(key, minute, signed(tokens));
    }

    /// Adds `delta` (negative: gives back) to `key`'s window of `minute`,
    /// here and in Redis.
    fn add_tokens(&self, key: &Arc<str>, minute: u64, delta: i64) {
        if delta == 0 {
            return;
        }
        self.add_local(key, minute, delta);
        self.add_redis(key, minute, delta);
    }

    /// Adds `delta` to `key`'s window of `minute` in Redis, if any.
    fn add_redis(&self, key: &Arc<str>, minute: u64, delta: i64) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let Some(mut conn) = redis.conn() else { return };
        let tok_key = format!("{}rl:{key}:{minute}:tok", redis.prefix);
        // Off the request path: the answer is already on its way.
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .incr(&tok_key, delta)
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

    /// Adds `delta` to this process's window of `minute` (a window already
    /// past is left alone).
    fn add_local(&self, key: &Arc<str>, minute: u64, delta: i64) {
        let mut local = self.local.lock();
        let w = window(&mut local, key, now_minute().0);
        if w.minute == minute {
            w.tokens = w.tokens.saturating_add_signed(delta);
        }
    }
}

/// Token counts fit an `i64` (what Redis counts in); larger ones saturate.
fn signed(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// `key`'s window of `minute`, fresh if it held an older minute.
fn window<'a>(
    local: &'a mut HashMap<Arc<str>, LocalWindow>,
    key: &Arc<str>,
    minute: u64,
) -> &'a mut LocalWindow {
    let w = local.entry(key.clone()).or_default();
    if w.minute != minute {
        *w = LocalWindow {
            minute,
            ..Default::default()
        };
    }
    w
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

    #[tokio::test]
    async fn reservations_hold_the_limit_and_settle_to_what_was_used() {
        let limiter = Limiter::new(None, Arc::new(Metrics::new()));
        let key: Arc<str> = Arc::from("k");
        let a = limiter.reserve(&key, 100, 80).await.unwrap();
        assert!(
            limiter.reserve(&key, 100, 30).await.is_err(),
            "80 + 30 > 100"
        );
        // The request used 50: 30 more fit, then nothing.
        limiter.settle(&a, 50);
        let b = limiter.reserve(&key, 100, 30).await.unwrap();
        assert!(limiter.reserve(&key, 100, 21).await.is_err());
        // Settling a refused or cancelled request's reservation to 0 gives
        // everything back.
        limiter.settle(&b, 0);
        limiter.reserve(&key, 100, 50).await.unwrap();
        // Larger than the budget: it takes a whole window.
        let other: Arc<str> = Arc::from("o");
        limiter.reserve(&other, 100, 10_000).await.unwrap();
        assert!(limiter.reserve(&other, 100, 1).await.is_err());
    }
}
