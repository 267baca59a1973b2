//! A pool of replicas behind one provider (engine replicas, typically),
//! on pingora's load balancer: Ketama consistent hashing by affinity key
//! (episode id, else user), so that a conversation returns to the replica
//! that holds its prefix cache; active HTTP health checks take a dead
//! replica out and bring it back; a connect failure takes a replica out at
//! once until its next successful check (passive detection), so retries go
//! elsewhere without waiting for the checker.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use pingora_load_balancing::{
    health_check::HttpHealthCheck, selection::consistent::KetamaHashing, Backend, LoadBalancer,
};

pub struct ReplicaPool {
    lb: LoadBalancer<KetamaHashing>,
    /// Replicas that failed a connect, and until when they are skipped.
    benched: Mutex<HashMap<SocketAddr, Instant>>,
    bench_for: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid replica address `{0}` (expected HOST:PORT with a numeric IP)")]
pub struct BadReplica(String);

impl ReplicaPool {
    pub fn new(
        replicas: &[SocketAddr],
        health_path: &str,
        check_every: Duration,
    ) -> Result<Arc<Self>, BadReplica> {
        let mut lb = LoadBalancer::<KetamaHashing>::try_from_iter(replicas.iter().copied())
            .map_err(|_| {
                let list: Vec<String> = replicas.iter().map(ToString::to_string).collect();
                BadReplica(list.join(","))
            })?;
        let mut check = HttpHealthCheck::new("localhost", false);
        if let Ok(mut req) = pingora_http::RequestHeader::build("GET", health_path.as_bytes(), None)
        {
            let _ = req.append_header("Host", "localhost");
            check.req = req;
        }
        check.peer_template.options.connection_timeout = Some(Duration::from_millis(500));
        check.peer_template.options.read_timeout = Some(Duration::from_secs(2));
        lb.set_health_check(Box::new(check));
        let pool = Arc::new(Self {
            lb,
            benched: Mutex::new(HashMap::new()),
            bench_for: check_every * 3,
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(check_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.lb.backends().run_health_check(true).await;
                // A replica that passed its check is trusted again.
                let backends = pool.lb.backends().get_backend();
                let mut benched = pool.benched.lock();
                benched.retain(|addr, _| {
                    !backends
                        .iter()
                        .any(|b| b.addr.as_inet() == Some(addr) && pool.lb.backends().ready(b))
                });
            }
        });
        Ok(pool)
    }

    /// The replica for `key`: its place on the hash ring, or the next
    /// healthy one. `None` when no replica is healthy.
    pub fn pick(&self, key: &[u8]) -> Option<SocketAddr> {
        let now = Instant::now();
        let benched = self.benched.lock().clone();
        let accept = |b: &Backend, healthy: bool| {
            healthy
                && b.addr
                    .as_inet()
                    .is_none_or(|a| benched.get(a).is_none_or(|until| *until <= now))
        };
        self.lb
            .select_with(key, 256, accept)
            .and_then(|b| b.addr.as_inet().copied())
    }

    /// Takes a replica out after a failed connect, until it passes a check.
    pub fn bench(&self, addr: SocketAddr) {
        tracing::warn!(%addr, "replica unreachable; taken out of the pool until it passes a health check");
        self.benched
            .lock()
            .insert(addr, Instant::now() + self.bench_for);
    }
}
