//! Route weights in Redis, the live-weights path every gateway polls
//! (`flywheel-gateway`'s `coordination::weights`): the hash
//! `{prefix}weights:{route}` maps variant names to `u32` weights, and a
//! variant the hash does not name keeps its configured weight. The
//! controller writes only its two variants.
//!
//! Two more keys of its own:
//! * `{prefix}canary:applied:{experiment}`: the experiment revision whose
//!   weights were last written, so an ended experiment's weights are
//!   written exactly once even across a crash;
//! * `{prefix}canary:incumbent:{route}`: the route's incumbent after a
//!   completed experiment (read by `flywheel-canary list` and as the
//!   default incumbent of the route's next experiment); set back to the
//!   old incumbent when a completed experiment is rolled back in its grace
//!   period.
//!
//! Redis values persist across gateway restarts: a restarted gateway reads
//! the hash at its first poll, so a promoted candidate stays promoted.

use std::{collections::BTreeMap, time::Duration};

use redis::{aio::ConnectionManager, AsyncCommands};

/// Each command's limit (the connection manager also times out at 500 ms).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: {0} timed out")]
    Timeout(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Weights {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("prefix", &self.prefix)
            .finish()
    }
}

async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Timeout(what)),
    }
}

impl Weights {
    /// Connects lazily: a Redis that is down now is not an error until a
    /// command is sent.
    pub fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    pub fn weights_key(&self, route: &str) -> String {
        format!("{}weights:{route}", self.prefix)
    }

    fn applied_key(&self, experiment: &str) -> String {
        format!("{}canary:applied:{experiment}", self.prefix)
    }

    fn incumbent_key(&self, route: &str) -> String {
        format!("{}canary:incumbent:{route}", self.prefix)
    }

    fn shadow_key(&self, route: &str) -> String {
        format!("{}shadow:{route}", self.prefix)
    }

    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        timed("PING", redis::cmd("PING").query_async::<String>(&mut c)).await?;
        Ok(())
    }

    /// The route's weights hash (empty when never written).
    pub async fn get(&self, route: &str) -> Result<BTreeMap<String, u32>> {
        let mut c = self.conn.clone();
        timed("HGETALL", c.hgetall(self.weights_key(route))).await
    }

    /// Sets the weights of the named variants (others untouched).
    pub async fn set(&self, route: &str, weights: &[(&str, u32)]) -> Result<()> {
        let mut c = self.conn.clone();
        timed(
            "HSET",
            c.hset_multiple::<_, _, _, ()>(self.weights_key(route), weights),
        )
        .await
    }

    /// Writes `weights` unless the hash already has them; returns whether
    /// it wrote.
    pub async fn ensure(&self, route: &str, weights: &[(&str, u32)]) -> Result<bool> {
        let current = self.get(route).await?;
        if weights
            .iter()
            .all(|(v, w)| current.get(*v).is_some_and(|c| c == w))
        {
            return Ok(false);
        }
        self.set(route, weights).await?;
        Ok(true)
    }

    pub async fn applied_revision(&self, experiment: &str) -> Result<Option<u64>> {
        let mut c = self.conn.clone();
        timed("GET", c.get(self.applied_key(experiment))).await
    }

    pub async fn set_applied_revision(&self, experiment: &str, revision: u64) -> Result<()> {
        let mut c = self.conn.clone();
        timed(
            "SET",
            c.set::<_, _, ()>(self.applied_key(experiment), revision),
        )
        .await
    }

    pub async fn incumbent(&self, route: &str) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        timed("GET", c.get(self.incumbent_key(route))).await
    }

    pub async fn set_incumbent(&self, route: &str, variant: &str) -> Result<()> {
        let mut c = self.conn.clone();
        timed("SET", c.set::<_, _, ()>(self.incumbent_key(route), variant)).await
    }

    /// The shadow mirror of a route: `{prefix}shadow:{route}` is a hash
    /// with `variant` (the candidate) and `fraction` (share of requests
    /// mirrored); deleted when no shadow step runs.
    pub async fn set_shadow(&self, route: &str, mirror: Option<(&str, f64)>) -> Result<()> {
        let mut c = self.conn.clone();
        let key = self.shadow_key(route);
        match mirror {
            Some((variant, fraction)) => {
                let fields = [
                    ("variant", variant.to_owned()),
                    ("fraction", fraction.to_string()),
                ];
                timed("HSET", c.hset_multiple::<_, _, _, ()>(key, &fields)).await
            }
            None => timed("DEL", c.del::<_, ()>(key)).await,
        }
    }

    /// The shadow mirror as written by [`Weights::set_shadow`].
    pub async fn shadow(&self, route: &str) -> Result<Option<(String, f64)>> {
        let mut c = self.conn.clone();
        let h: BTreeMap<String, String> =
            timed("HGETALL", c.hgetall(self.shadow_key(route))).await?;
        Ok(
            match (
                h.get("variant"),
                h.get("fraction").and_then(|f| f.parse().ok()),
            ) {
                (Some(v), Some(f)) => Some((v.clone(), f)),
                _ => None,
            },
        )
    }
}
