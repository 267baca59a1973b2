//! State shared by all gateway processes through Redis: per-key rate limits
//! and live route weights.
//!
//! Redis is optional and never on the critical path when it is down: a
//! health task pings it every second; while it does not answer, limits fall
//! back to per-process windows and routing keeps the last known weights.
//! `flywheel_redis_up` and the logs say which mode is active.

mod limits;
mod weights;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

pub use limits::{KeyLimits, Limiter, Reservation, Verdict};
use redis::aio::ConnectionManager;
pub use weights::{publish as publish_weights, spawn_weight_sync};

use crate::{config::RedisConfig, metrics::Metrics};

/// A Redis connection with a health flag.
pub struct Redis {
    manager: ConnectionManager,
    up: AtomicBool,
    pub prefix: String,
    pub timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Redis {
    /// Connects lazily; returns `None` when no URL is configured.
    pub fn connect(
        cfg: &RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, redis::RedisError> {
        let Some(url) = &cfg.url else { return Ok(None) };
        let client = redis::Client::open(url.clone())?;
        let timeout = cfg.command_timeout;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        metrics.redis_up.set(0);
        let redis = Arc::new(Self {
            manager,
            up: AtomicBool::new(false),
            prefix: cfg.key_prefix.clone(),
            timeout,
            metrics,
        });
        tokio::spawn(health_loop(Arc::downgrade(&redis)));
        Ok(Some(redis))
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A connection for one command, or `None` while Redis is down.
    pub fn conn(&self) -> Option<ConnectionManager> {
        self.is_up().then(|| self.manager.clone())
    }

    /// Records a failed command: the health task brings Redis back.
    pub fn mark_down(&self, error: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis unavailable: per-process rate limits, last known route weights");
            self.metrics.redis_up.set(0);
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis available: shared rate limits and live route weights");
            self.metrics.redis_up.set(1);
        }
    }
}

async fn health_loop(redis: std::sync::Weak<Redis>) {
    loop {
        let Some(r) = redis.upgrade() else { return };
        let mut conn = r.manager.clone();
        let ping = tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match ping {
            Ok(Ok(_)) => r.mark_up(),
            Ok(Err(e)) => r.mark_down(&e),
            Err(_) => r.mark_down(&"PING timed out"),
        }
        drop(r);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
