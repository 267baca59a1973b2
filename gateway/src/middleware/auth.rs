//! Bearer-token authentication. Keys are stored as SHA-256 hashes, so the
//! config file holds no usable secret; each key maps to a tenant and may
//! carry request and token limits (enforced by [`Limiter`]).

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use flywheel_api::keys;
use futures_util::future::BoxFuture;
use http::{header, Request};
use tower::{Layer, Service};

use crate::{
    config::AuthConfig,
    coordination::{KeyLimits, Limiter, Verdict},
    error::GatewayError,
    metrics::Metrics,
};

/// Who is calling: the tenant, and the id of the key used (the first 16
/// hex digits of its hash), which keys its rate limits.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub key_id: Arc<str>,
    /// The key has a token limit, so finished requests report their tokens.
    pub counts_tokens: bool,
}

pub fn hash_token(token: &str) -> String {
    keys::sha256_hex(token)
}

fn bearer(req: &Request<Body>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

struct Key {
    tenant: Tenant,
    limits: KeyLimits,
}

/// The configured API keys, by hash.
pub struct Keys {
    enabled: bool,
    by_hash: HashMap<[u8; 32], Key>,
}

impl Keys {
    pub fn new(config: &AuthConfig) -> Self {
        let by_hash = config
            .keys
            .iter()
            .map(|k| {
                let tenant = Tenant {
                    name: k.tenant.clone(),
                    key_id: Arc::from(keys::hex(&k.sha256[..8])),
                    counts_tokens: k.tokens_per_minute > 0,
                };
                let limits = KeyLimits {
                    requests_per_minute: k.requests_per_minute,
                    tokens_per_minute: k.tokens_per_minute,
                };
                (k.sha256, Key { tenant, limits })
            })
            .collect();
        Self {
            enabled: config.enabled,
            by_hash,
        }
    }

    fn check(&self, req: &Request<Body>) -> Result<&Key, GatewayError> {
        let token = bearer(req).ok_or(GatewayError::Unauthorized)?;
        self.by_hash
            .get(&keys::digest(token))
            .ok_or(GatewayError::Unauthorized)
    }
}

/// Rejects requests without a valid API key (401) or over their key's
/// limits (429), and attaches the [`Tenant`] to the request.
#[derive(Clone)]
pub struct ApiKeyLayer {
    keys: Arc<Keys>,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
}

impl ApiKeyLayer {
    pub fn new(keys: Arc<Keys>, limiter: Arc<Limiter>, metrics: Arc<Metrics>) -> Self {
        Self {
            keys,
            limiter,
            metrics,
        }
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKey<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiKey {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct ApiKey<S> {
    layer: ApiKeyLayer,
    inner: S,
}

impl<S> Service<Request<Body>> for ApiKey<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if !self.layer.keys.enabled {
            req.extensions_mut().insert(Tenant {
                name: "anonymous".into(),
                key_id: Arc::from("anonymous"),
                counts_tokens: false,
            });
            return Box::pin(self.inner.call(req));
        }
        let (tenant, limits) = match self.layer.keys.check(&req) {
            Ok(key) => (key.tenant.clone(), key.limits),
            Err(e) => return Box::pin(async move { Ok(e.into_response()) }),
        };
        // The service that was made ready is the one to call; keep a fresh
        // clone for the next request (tower's documented pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.layer.limiter.clone();
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            if let Verdict::Limited { retry_after_s } = limiter.admit(&tenant.key_id, limits).await
            {
                metrics
                    .rate_limited
                    .with_label_values(&[&tenant.name])
                    .inc();
                return Ok(GatewayError::RateLimited { retry_after_s }.into_response());
            }
            req.extensions_mut().insert(tenant);
            inner.call(req).await
        })
    }
}

/// Guards `/admin`: the bearer token must hash to `admin.token_sha256`.
/// Without a configured token the admin API answers 404, as if absent.
#[derive(Clone)]
pub struct AdminAuthLayer {
    token_sha256: Option<[u8; 32]>,
}

impl AdminAuthLayer {
    pub fn new(token_sha256: Option<[u8; 32]>) -> Self {
        Self { token_sha256 }
    }
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth {
            token_sha256: self.token_sha256,
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AdminAuth<S> {
    token_sha256: Option<[u8; 32]>,
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
            None => Err(GatewayError::NotFound(
                "the admin API is disabled (admin.token_sha256 is unset)".into(),
            )),
            Some(expected) => match bearer(&req) {
                Some(token) if keys::token_matches(token, expected) => Ok(()),
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
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
