//! Upstream providers: an OpenAI-compatible HTTP(S) endpoint each, with its
//! own connection pool, prices and circuit breaker.

mod circuit;
mod pool;
pub mod sse;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
pub use circuit::{CircuitBreaker, CircuitState, Permit};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
pub use pool::{BadReplica, ReplicaPool};

use crate::{
    config::{CircuitBreakerConfig, Config, Continuation, ProviderConfig},
    metrics::Metrics,
};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect error: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
}

pub struct Provider {
    pub name: String,
    base_url: String,
    /// With replicas: the scheme and path prefix of `base_url`.
    replica_base: (String, String),
    pool: Option<Arc<ReplicaPool>>,
    headers: HeaderMap,
    pub price_input_per_1m: f64,
    pub price_output_per_1m: f64,
    pub price_per_second: f64,
    /// Whether `response_format` is sent upstream (the gateway validates it either way).
    pub forward_response_format: bool,
    pub continuation: Continuation,
    pub breaker: CircuitBreaker,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Provider {
    fn new(
        name: &str,
        cfg: &ProviderConfig,
        cb: &CircuitBreakerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BadReplica> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg.tls.as_ref().clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(authorization) = &cfg.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        for (k, v) in &cfg.headers {
            headers.insert(k.clone(), v.clone());
        }
        let replica_base = (
            cfg.base_url.scheme_str().unwrap_or("http").to_owned(),
            cfg.base_url.path().trim_end_matches('/').to_owned(),
        );
        let pool = match cfg.replicas.as_slice() {
            [] => None,
            replicas => Some(ReplicaPool::new(
                replicas,
                &cfg.health_path,
                cfg.health_check,
            )?),
        };
        Ok(Self {
            name: name.to_owned(),
            base_url: cfg.base_url.to_string().trim_end_matches('/').to_owned(),
            replica_base,
            pool,
            headers,
            price_input_per_1m: cfg.price_input_per_1m,
            price_output_per_1m: cfg.price_output_per_1m,
            price_per_second: cfg.price_per_second,
            forward_response_format: cfg.forward_response_format,
            continuation: cfg.continuation,
            breaker: CircuitBreaker::new(name, cb, metrics),
            client,
        })
    }

    /// POSTs a JSON body to `{base_url}{path}` (with replicas: on the
    /// replica of `affinity`) and returns once the response headers arrived
    /// (or `timeout` passed).
    pub async fn post(
        &self,
        path: &str,
        body: Bytes,
        timeout: Duration,
        affinity: &[u8],
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (url, replica) = match &self.pool {
            None => (format!("{}{}", self.base_url, path), None),
            Some(pool) => {
                let replica = pool
                    .pick(affinity)
                    .ok_or_else(|| UpstreamError::Connect("no healthy replica".into()))?;
                let (scheme, prefix) = &self.replica_base;
                (format!("{scheme}://{replica}{prefix}{path}"), Some(replica))
            }
        };
        let result = self.send(url, body, timeout).await;
        if let (Err(UpstreamError::Connect(_)), Some(replica), Some(pool)) =
            (&result, replica, &self.pool)
        {
            pool.bench(replica);
        }
        result
    }

    async fn send(
        &self,
        url: String,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = Request::post(url)
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        *request.headers_mut() = self.headers.clone();
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(UpstreamError::Connect(error_chain(&e))),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// USD for one attempt: its tokens at the per-token prices plus its
    /// upstream time at the per-second price (self-hosted engines).
    pub fn cost(&self, prompt: u64, completion: u64, elapsed: Duration) -> f64 {
        crate::metering::cost_usd(
            prompt,
            completion,
            self.price_input_per_1m,
            self.price_output_per_1m,
        ) + elapsed.as_secs_f64() * self.price_per_second
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The providers by name. Fails only if the load balancer refuses a replica
/// address (they are parsed at config load).
pub fn build_providers(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Arc<Provider>>, BadReplica> {
    config
        .providers
        .iter()
        .map(|(name, p)| {
            let provider = Provider::new(name, p, &config.circuit_breaker, metrics.clone())?;
            Ok((name.clone(), Arc::new(provider)))
        })
        .collect()
}

/// Seconds from a `Retry-After` header (delta-seconds form only; HTTP dates
/// are rare from LLM APIs and are treated as absent). The value is an
/// upstream's: one past what a [`Duration`] holds (`1e20`) saturates rather
/// than panics, and the plan moves on to the next target instead of
/// waiting, as for any wait over `retry.max_retry_after_ms`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    let seconds = v.trim().parse::<f64>().ok()?;
    if !(seconds.is_finite() && seconds >= 0.0) {
        return None;
    }
    Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

/// At most the first `max_bytes` of an upstream's text, cut at a character
/// boundary (slicing a `str` inside a character panics), for error reasons
/// and logs.
pub fn preview(text: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Statuses worth another attempt: the upstream may answer differently next
/// time, or another provider may.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    }

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(after("2"), Some(Duration::from_secs(2)));
        assert_eq!(after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn previews_cut_at_a_character_boundary() {
        let text = format!("{}é and more", "x".repeat(199));
        assert_eq!(preview(&text, 200), "x".repeat(199));
        assert_eq!(preview(&text, 201), format!("{}é", "x".repeat(199)));
        assert_eq!(preview("日本", 1), "");
        assert_eq!(preview("short", 200), "short");
    }

    #[test]
    fn an_absurd_retry_after_never_panics() {
        // Past u64 seconds: `Duration::from_secs_f64` panics on these.
        for huge in ["1e20", "1e300", "18446744073709551616"] {
            let wait = after(huge).unwrap();
            assert!(wait >= Duration::from_secs(3600), "{huge}: {wait:?}");
        }
        for nonsense in ["-1", "-0.5", "NaN", "inf", "-inf", ""] {
            assert_eq!(after(nonsense), None, "{nonsense}");
        }
    }
}
