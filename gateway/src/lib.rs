//! Flywheel gateway: an OpenAI-compatible endpoint that routes each request
//! to weighted variants, each an ordered fallback chain of upstreams, with
//! retries, circuit breakers, output validation, mid-stream failover and
//! per-attempt metering.
//!
//! Data path: request → layers (see [`app`]) → endpoint (parse, route) →
//! dispatcher (attempts) → response; every request → one event → sink and
//! metrics.

pub mod config;
pub mod coordination;
pub mod dispatcher;
pub mod endpoints;
pub mod error;
pub mod metering;
pub mod metrics;
pub mod middleware;
pub mod router;
pub mod signals;
pub mod upstream;

#[cfg(test)]
mod testing;

use std::{ops::Deref, sync::Arc, time::Duration};

use axum::{middleware::from_fn_with_state, Router as HttpRouter};
use config::Config;
use coordination::{Limiter, Redis};
use error::GatewayError;
use flywheel_feedback::{BodiesPolicy, Capture};
use metering::EventSink;
use metrics::Metrics;
use middleware::{
    record_http_metrics, require_admin_token, require_api_key, require_metrics_token, AdminToken,
    ApiKeyAuth, Keys, MetricsToken,
};
use router::Router;
use signals::{RecentInferences, Signals};
use tower_http::trace::TraceLayer;

pub struct Shared {
    pub config: Config,
    pub router: Arc<Router>,
    pub sink: Arc<dyn EventSink>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Limiter>,
    pub redis: Option<Arc<Redis>>,
    pub recent: RecentInferences,
    pub signals: Signals,
    pub capture: Option<Arc<Capture>>,
    capture_bodies: bool,
}

/// State shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Builds providers, routes, the event sink and the Redis coordination
    /// from a validated config. Needs a Tokio runtime (it starts the
    /// background tasks).
    pub fn new(config: Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let metrics = Arc::new(Metrics::new());
        let providers = upstream::build_providers(&config, &metrics)?;
        let router = Arc::new(Router::new(&config, &providers)?);
        let recent = RecentInferences::new(
            config.feedback.recent_capacity,
            config.feedback.recent_max_bytes,
        );
        let capture = match &config.capture {
            Some(cfg) => {
                // Inferences still in the log are not in ClickHouse yet:
                // index their owners so that feedback on them is accepted.
                let wal_cfg = cfg.wal_config().map_err(anyhow::Error::msg)?;
                signals::index_unshipped(&cfg.wal_dir, wal_cfg.keyring.as_deref(), &recent);
                let capture = Capture::start(cfg).with_context(|| {
                    format!("cannot start capture (log in {})", cfg.wal_dir.display())
                })?;
                Some(Arc::new(capture))
            }
            None => None,
        };
        let sink = metering::build_sink(&config.metering, capture.clone(), metrics.clone())
            .context("cannot open the metering sink")?;
        let redis = Redis::connect(&config.redis, metrics.clone()).context("invalid redis.url")?;
        if let Some(redis) = &redis {
            coordination::spawn_weight_sync(
                redis.clone(),
                router.clone(),
                config.redis.weights_poll,
            );
        }
        let limiter = Arc::new(Limiter::new(redis.clone(), metrics.clone()));
        let signals = Signals::new(config.feedback.implicit.clone());
        let capture_bodies = config
            .capture
            .as_ref()
            .is_some_and(|c| c.bodies != BodiesPolicy::Skip);
        Ok(Self(Arc::new(Shared {
            config,
            router,
            sink,
            metrics,
            limiter,
            redis,
            recent,
            signals,
            capture,
            capture_bodies,
        })))
    }

    /// Whether events carry request and response bodies.
    pub fn capture_bodies(&self) -> bool {
        self.capture_bodies
    }

    pub fn body_timeout(&self) -> Duration {
        self.config.server.body_read_timeout
    }

    /// `capture.when_log_refuses = "refuse"`: inference requests are
    /// answered 503 while the log refuses records.
    pub fn refuses_unrecorded(&self) -> bool {
        self.config
            .capture
            .as_ref()
            .is_some_and(|c| c.when_log_refuses == flywheel_feedback::WhenLogRefuses::Refuse)
    }
}

/// An owner lookup that could not reach ClickHouse: the caller may retry.
fn store_unavailable(e: flywheel_feedback::StoreError) -> GatewayError {
    tracing::warn!(error = %e, "feedback owner lookup failed");
    GatewayError::Upstream {
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        message: "the target is not in recent memory and ClickHouse is unavailable; retry later"
            .into(),
        attempts: Vec::new(),
    }
}

/// The HTTP application: endpoints with their layers.
///
/// A request passes these layers in order, outermost first (each is added
/// with `.layer` / `.route_layer`, so the one added last runs first):
///
/// 1. **`TraceLayer`** (tower-http): one `tracing` span per request with
///    method, URI and the response status and latency. Reads and adds no
///    extensions.
/// 2. **[`record_http_metrics`]** (`from_fn_with_state`, [`Metrics`]):
///    counts `flywheel_http_requests_total` and times
///    `flywheel_http_request_duration_seconds` by a bounded path label and
///    status, for every request including 404s. **Inserts
///    [`RequestStart`](middleware::RequestStart)**, the instant the metering clock starts from, so that
///    auth and body parsing count as gateway overhead.
/// 3. **Routing** (the axum router). A path no route matches goes to the
///    fallback, a 404 in the OpenAI envelope ([`GatewayError::NotFound`]),
///    without passing any of the per-group layers below (they are
///    `route_layer`s, run only for a matched route).
/// 4. Per route group, one of:
///    - `/v1/*` ([`endpoints::api`]): **[`require_api_key`]**
///      (`from_fn_with_state`, [`ApiKeyAuth`]: the keys, the [`Limiter`],
///      the metrics). Looks the bearer token's SHA-256 up among
///      `auth.keys` (401 if absent), counts the request against the key's
///      `requests_per_minute` and refuses it while the minute's
///      `tokens_per_minute` are used up (429 with `Retry-After`), and
///      **inserts [`Tenant`](middleware::Tenant)**, which carries the key's
///      `pin_variants` and `tokens_per_minute`. With `auth.enabled = false`
///      it inserts the `anonymous` tenant (which may pin) and checks
///      nothing.
///    - `/admin/*` ([`endpoints::admin`]): **[`require_admin_token`]**
///      (`from_fn_with_state`, [`AdminToken`]): the bearer token must hash
///      to `admin.token_sha256`, compared in constant time (401); unset,
///      the admin API answers 404. Adds no extensions.
///    - `/metrics` ([`endpoints::metrics`]): **[`require_metrics_token`]**
///      (`from_fn_with_state`, [`MetricsToken`]): it names tenants and
///      their costs, so whenever `admin.token_sha256` or
///      `admin.metrics_token_sha256` is set the bearer token must hash to
///      one of them, compared in constant time (401); with neither set it
///      is open. Adds no extensions.
///    - `/health` ([`endpoints::ops`]): no layer.
/// 5. **Handlers** read the body themselves, bounded by
///    `server.max_body_bytes` (413) and `server.body_read_timeout_ms` (408),
///    and refuse client-chosen ids and fields over their limits (episode id
///    header, `user`, `metadata`; feedback ids, idempotency key, `tags`:
///    400 naming the field, [`endpoints::body::MAX_ID_BYTES`] and
///    [`endpoints::body::MAX_PAIRS`]). Before any attempt, the inference
///    handlers reserve the request's tokens (prompt estimate + `max_tokens`
///    × `n`) against the key's `tokens_per_minute` (429 when they do not
///    fit); the reservation is settled to what was used when the request
///    ends.
///    The inference handlers need both [`Tenant`](middleware::Tenant) and [`RequestStart`](middleware::RequestStart)
///    (`Extension` extractors: a missing one would be a 500, so they only
///    sit behind layers 2 and 4); `POST /v1/feedback` needs [`Tenant`](middleware::Tenant).
///    The inference handlers honour an `x-flywheel-variant` request header
///    (pin the route's variant) only when that tenant's `pin_variants` is
///    set, and answer 403 otherwise: the permission is checked there, not in
///    a layer, because it only matters once a request names a route.
///
/// What bounds a connection (the first request's wait, header reads,
/// idle and HTTP/2 keep-alive timeouts, HTTP/2 streams, the cap on open
/// connections) is the accept loop's, [`flywheel_listener::serve`], outside this
/// stack: it counts each request in flight, response body included.
pub fn app(state: AppState) -> HttpRouter {
    let api_keys = ApiKeyAuth {
        keys: Arc::new(Keys::new(&state.config.auth)),
        limiter: state.limiter.clone(),
        metrics: state.metrics.clone(),
    };
    let api = endpoints::api().route_layer(from_fn_with_state(api_keys, require_api_key));
    let admin = endpoints::admin().route_layer(from_fn_with_state(
        AdminToken(state.config.admin.token_sha256),
        require_admin_token,
    ));
    let metrics = endpoints::metrics().route_layer(from_fn_with_state(
        MetricsToken([
            state.config.admin.token_sha256,
            state.config.admin.metrics_token_sha256,
        ]),
        require_metrics_token,
    ));
    HttpRouter::new()
        .merge(api)
        .merge(admin)
        .merge(metrics)
        .merge(endpoints::ops())
        .fallback(|uri: http::Uri| async move {
            GatewayError::NotFound(format!("no route for {}", uri.path()))
        })
        .layer(from_fn_with_state(
            state.metrics.clone(),
            record_http_metrics,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
