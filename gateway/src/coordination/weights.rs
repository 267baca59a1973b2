//! Live route weights from Redis: the hash `{prefix}weights:{route}` maps
//! variant names to weights. Every gateway process polls it, so one write
//! (by the canary controller or the admin API) moves traffic everywhere
//! without a restart. While Redis is down the last known weights stay in
//! force.
//!
//! The same poll reads the canary's shadow mirror of each route, the hash
//! `{prefix}shadow:{route}` with fields `variant` and `fraction` (absent:
//! no mirror; see [`crate::router::Mirror`]).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use redis::AsyncCommands;

use super::Redis;
use crate::router::{Mirror, Router};

pub fn weights_key(redis: &Redis, route: &str) -> String {
    format!("{}weights:{route}", redis.prefix)
}

pub fn shadow_key(redis: &Redis, route: &str) -> String {
    format!("{}shadow:{route}", redis.prefix)
}

/// The mirror a shadow hash describes; `None` for an empty or unreadable
/// one.
fn parse_mirror(h: &BTreeMap<String, String>) -> Option<Mirror> {
    let variant = h.get("variant")?.clone();
    let fraction = h.get("fraction")?.trim().parse::<f64>().ok()?;
    Some(Mirror { variant, fraction })
}

/// Writes weights so that every process picks them up.
pub async fn publish(
    redis: &Redis,
    route: &str,
    weights: &BTreeMap<String, u32>,
) -> Result<(), redis::RedisError> {
    let mut conn = redis
        .conn()
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "Redis is down")))?;
    let items: Vec<(&String, &u32)> = weights.iter().collect();
    conn.hset_multiple::<_, _, _, ()>(weights_key(redis, route), &items)
        .await
}

pub fn spawn_weight_sync(redis: Arc<Redis>, router: Arc<Router>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(mut conn) = redis.conn() else {
                continue;
            };
            for route in router.names() {
                let read = tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.hgetall::<_, BTreeMap<String, u32>>(weights_key(&redis, &route)),
                )
                .await;
                let weights = match read {
                    Ok(Ok(w)) => w,
                    Ok(Err(e)) => {
                        redis.mark_down(&e);
                        break;
                    }
                    Err(_) => break,
                };
                let current = router.weights().remove(&route).unwrap_or_default();
                if !weights
                    .iter()
                    .all(|(variant, w)| current.get(variant) == Some(w))
                {
                    match router.set_weights(&route, &weights) {
                        Ok(()) => {
                            tracing::info!(%route, ?weights, "route weights updated from Redis")
                        }
                        Err(e) => {
                            tracing::warn!(%route, error = %e, "ignoring invalid weights in Redis")
                        }
                    }
                }
                let read = tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.hgetall::<_, BTreeMap<String, String>>(shadow_key(&redis, &route)),
                )
                .await;
                let mirror = match read {
                    Ok(Ok(h)) => parse_mirror(&h),
                    Ok(Err(e)) => {
                        redis.mark_down(&e);
                        break;
                    }
                    Err(_) => break,
                };
                if router.mirror(&route) == mirror {
                    continue;
                }
                match router.set_mirror(&route, mirror.clone()) {
                    Ok(()) => tracing::info!(%route, ?mirror, "shadow mirror updated from Redis"),
                    Err(e) => {
                        tracing::warn!(%route, error = %e, "ignoring an invalid shadow mirror in Redis")
                    }
                }
            }
        }
    });
}
