//! Bearer-token authentication. Keys are stored as SHA-256 hashes, so the
//! config file holds no usable secret; each key maps to a tenant and may
//! carry a per-process requests-per-minute limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either, Ready};
use http::{header, Request};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::config::AuthConfig;
use crate::error::GatewayError;

/// The tenant a request is attributed to; set by [`ApiKeyLayer`].
#[derive(Clone, Debug)]
pub struct Tenant(pub String);

pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn bearer(req: &Request<Body>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

struct Key {
    tenant: Tenant,
    limit: Option<RateWindow>,
}

/// A fixed one-minute window. Redis-backed limits that hold across
/// processes replace this; it stays as the fallback when Redis is down.
struct RateWindow {
    per_minute: u32,
    state: Mutex<(Instant, u32)>,
}

impl RateWindow {
    /// `Err(seconds to wait)` when the key is over its limit.
    fn take(&self) -> Result<(), u64> {
        let mut state = self.state.lock().expect("rate window lock");
        let now = Instant::now();
        if now.duration_since(state.0) >= Duration::from_secs(60) {
            *state = (now, 0);
        }
        if state.1 >= self.per_minute {
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(state.0));
            return Err(wait.as_secs().max(1));
        }
        state.1 += 1;
        Ok(())
    }
}

/// The configured API keys, by hash.
pub struct Keys {
    enabled: bool,
    by_hash: HashMap<String, Key>,
}

impl Keys {
    pub fn new(config: &AuthConfig) -> Self {
        let by_hash = config
            .keys
            .iter()
            .map(|k| {
                let limit = (k.requests_per_minute > 0).then(|| RateWindow {
                    per_minute: k.requests_per_minute,
                    state: Mutex::new((Instant::now(), 0)),
                });
                (k.sha256.clone(), Key { tenant: Tenant(k.tenant.clone()), limit })
            })
            .collect();
        Self { enabled: config.enabled, by_hash }
    }

    fn check(&self, req: &Request<Body>) -> Result<Tenant, GatewayError> {
        if !self.enabled {
            return Ok(Tenant("anonymous".to_owned()));
        }
        let token = bearer(req).ok_or(GatewayError::Unauthorized)?;
        let key = self.by_hash.get(&hash_token(token)).ok_or(GatewayError::Unauthorized)?;
        if let Some(limit) = &key.limit {
            limit.take().map_err(|retry_after_s| GatewayError::RateLimited { retry_after_s })?;
        }
        Ok(key.tenant.clone())
    }
}

/// Rejects requests without a valid API key (401) or over their key's limit
/// (429), and attaches the [`Tenant`] to the request.
#[derive(Clone)]
pub struct ApiKeyLayer {
    keys: Arc<Keys>,
}

impl ApiKeyLayer {
    pub fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKey<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiKey { keys: self.keys.clone(), inner }
    }
}

#[derive(Clone)]
pub struct ApiKey<S> {
    keys: Arc<Keys>,
    inner: S,
}

impl<S> Service<Request<Body>> for ApiKey<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.keys.check(&req) {
            Ok(tenant) => {
                req.extensions_mut().insert(tenant);
                Either::Left(self.inner.call(req))
            }
            Err(e) => Either::Right(futures_util::future::ready(Ok(e.into_response()))),
        }
    }
}

/// Guards `/admin`: the bearer token must hash to `admin.token_sha256`.
/// Without a configured token the admin API answers 404, as if absent.
#[derive(Clone)]
pub struct AdminAuthLayer {
    token_sha256: Option<Arc<str>>,
}

impl AdminAuthLayer {
    pub fn new(token_sha256: Option<&str>) -> Self {
        Self { token_sha256: token_sha256.map(Arc::from) }
    }
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth { token_sha256: self.token_sha256.clone(), inner }
    }
}

#[derive(Clone)]
pub struct AdminAuth<S> {
    token_sha256: Option<Arc<str>>,
    inner: S,
}

impl<S> Service<Request<Body>> for AdminAuth<S>
where
    S: Service<Request<Body>, Response = Response> + Send,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let verdict = match &self.token_sha256 {
            None => Err(GatewayError::NotFound("the admin API is disabled (admin.token_sha256 is unset)".into())),
            Some(expected) => match bearer(&req) {
                Some(token) if hash_token(token) == **expected => Ok(()),
                _ => Err(GatewayError::Unauthorized),
            },
        };
        match verdict {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(e) => Box::pin(async move { Ok(e.into_response()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        // printf abc | sha256sum
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn rate_window_limits_then_reports_wait() {
        let w = RateWindow { per_minute: 2, state: Mutex::new((Instant::now(), 0)) };
        assert!(w.take().is_ok());
        assert!(w.take().is_ok());
        let wait = w.take().unwrap_err();
        assert!((1..=60).contains(&wait));
    }
}
