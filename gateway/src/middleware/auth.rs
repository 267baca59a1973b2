//! Bearer-token authentication, as `axum::middleware::from_fn_with_state`
//! functions. Keys are stored as SHA-256 digests ([`flywheel_api::keys`]),
//! so the config file holds no usable secret; each key maps to a tenant and
//! may carry request and token limits (enforced by [`Limiter`]).

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use flywheel_api::keys;
use http::{header, HeaderMap};

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
    /// The key's `tokens_per_minute` (0 = no limit): each request reserves
    /// its tokens against it up front.
    pub tokens_per_minute: u64,
    /// The key may pin a route's variant with `x-flywheel-variant`
    /// (`pin_variants`); without it a pinning request gets 403.
    pub pin_variants: bool,
}

impl Tenant {
    /// Every request's tenant while `auth.enabled = false`.
    fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            key_id: Arc::from("anonymous"),
            tokens_per_minute: 0,
            // Without auth there is no one to trust more than another.
            pin_variants: true,
        }
    }
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    keys::bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

struct Key {
    tenant: Tenant,
    limits: KeyLimits,
}

/// The configured API keys, by digest. Looking a presented token up by its
/// digest reveals nothing about stored secrets through timing: the lookup
/// key is a hash of what the client sent, not a prefix of a secret.
pub struct Keys {
    enabled: bool,
    by_digest: HashMap<[u8; 32], Key>,
}

impl Keys {
    pub fn new(config: &AuthConfig) -> Self {
        let by_digest = config
            .keys
            .iter()
            .map(|k| {
                let tenant = Tenant {
                    name: k.tenant.clone(),
                    key_id: Arc::from(keys::hex(&k.sha256[..8])),
                    tokens_per_minute: k.tokens_per_minute,
                    pin_variants: k.pin_variants,
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
            by_digest,
        }
    }

    fn check(&self, headers: &HeaderMap) -> Result<&Key, GatewayError> {
        let token = bearer(headers).ok_or(GatewayError::Unauthorized)?;
        self.by_digest
            .get(&keys::digest(token))
            .ok_or(GatewayError::Unauthorized)
    }
}

/// State of [`require_api_key`].
#[derive(Clone)]
pub struct ApiKeyAuth {
    pub keys: Arc<Keys>,
    pub limiter: Arc<Limiter>,
    pub metrics: Arc<Metrics>,
}

/// Rejects requests without a valid API key (401) or over their key's
/// limits (429), and attaches the [`Tenant`] to the request. With
/// `auth.enabled = false` every request is tenant `anonymous`, unlimited,
/// and may pin variants.
pub async fn require_api_key(
    State(auth): State<ApiKeyAuth>,
    mut req: Request,
    next: Next,
) -> Response {
    if !auth.keys.enabled {
        req.extensions_mut().insert(Tenant::anonymous());
        return next.run(req).await;
    }
    let (tenant, limits) = match auth.keys.check(req.headers()) {
        Ok(key) => (key.tenant.clone(), key.limits),
        Err(e) => return e.into_response(),
    };
    if let Verdict::Limited { retry_after_s } = auth.limiter.admit(&tenant.key_id, limits).await {
        auth.metrics
            .rate_limited
            .with_label_values(&[&tenant.name])
            .inc();
        return GatewayError::RateLimited { retry_after_s }.into_response();
    }
    req.extensions_mut().insert(tenant);
    next.run(req).await
}

/// State of [`require_admin_token`]: the digest of `admin.token_sha256`.
#[derive(Clone, Copy)]
pub struct AdminToken(pub Option<[u8; 32]>);

/// Guards `/admin`: the bearer token must hash to `admin.token_sha256`
/// (compared in constant time). Without a configured token the admin API
/// answers 404, as if absent.
pub async fn require_admin_token(
    State(AdminToken(expected)): State<AdminToken>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = expected else {
        return GatewayError::NotFound(
            "the admin API is disabled (admin.token_sha256 is unset)".into(),
        )
        .into_response();
    };
    match bearer(req.headers()) {
        Some(token) if keys::token_matches(token, &expected) => next.run(req).await,
        _ => GatewayError::Unauthorized.into_response(),
    }
}

/// State of [`require_metrics_token`]: the digests that may read
/// `/metrics` (`admin.token_sha256` and `admin.metrics_token_sha256`).
#[derive(Clone, Copy)]
pub struct MetricsToken(pub [Option<[u8; 32]>; 2]);

/// Guards `/metrics`, which names tenants and their costs: whenever a token
/// is configured the bearer token must hash to one of them (compared in
/// constant time; 401). With neither configured there is no secret to
/// check and `/metrics` is open.
pub async fn require_metrics_token(
    State(MetricsToken(tokens)): State<MetricsToken>,
    req: Request,
    next: Next,
) -> Response {
    if tokens.iter().all(Option::is_none) {
        return next.run(req).await;
    }
    let presented = bearer(req.headers());
    let ok = presented.is_some_and(|token| {
        tokens.iter().flatten().fold(false, |ok, expected| {
            ok | keys::token_matches(token, expected)
        })
    });
    if ok {
        next.run(req).await
    } else {
        GatewayError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get, Extension, Router};
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::config::ApiKeyConfig;

    async fn status(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn api(enabled: bool) -> Router {
        let metrics = Arc::new(Metrics::new());
        let config = AuthConfig {
            enabled,
            keys: vec![
                ApiKeyConfig {
                    tenant: "acme".into(),
                    sha256: keys::digest("sk-1"),
                    requests_per_minute: 1,
                    tokens_per_minute: 0,
                    pin_variants: false,
                },
                ApiKeyConfig {
                    tenant: "tuner".into(),
                    sha256: keys::digest("sk-tuner"),
                    requests_per_minute: 0,
                    tokens_per_minute: 0,
                    pin_variants: true,
                },
            ],
        };
        let auth = ApiKeyAuth {
            keys: Arc::new(Keys::new(&config)),
            limiter: Arc::new(Limiter::new(None, metrics.clone())),
            metrics,
        };
        Router::new()
            .route(
                "/v1/x",
                get(|Extension(t): Extension<Tenant>| async move { format!("{} {}", t.name, t.key_id) }),
            )
            .route(
                "/v1/pin",
                get(|Extension(t): Extension<Tenant>| async move { t.pin_variants.to_string() }),
            )
            .route_layer(axum::middleware::from_fn_with_state(auth, require_api_key))
    }

    #[tokio::test]
    async fn api_keys_attach_the_tenant_and_limit() {
        let app = api(true);
        assert_eq!(
            status(&app, "/v1/x", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, "/v1/x", Some("sk-2")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let key_id = &keys::sha256_hex("sk-1")[..16];
        assert_eq!(
            status(&app, "/v1/x", Some("sk-1")).await,
            (StatusCode::OK, format!("acme {key_id}"))
        );
        // One request per minute: the second is refused.
        assert_eq!(
            status(&app, "/v1/x", Some("sk-1")).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        let anonymous = api(false);
        assert_eq!(
            status(&anonymous, "/v1/x", None).await,
            (StatusCode::OK, "anonymous anonymous".into())
        );
    }

    #[tokio::test]
    async fn only_keys_with_pin_variants_and_anonymous_callers_may_pin() {
        let app = api(true);
        assert_eq!(
            status(&app, "/v1/pin", Some("sk-1")).await,
            (StatusCode::OK, "false".into())
        );
        assert_eq!(
            status(&app, "/v1/pin", Some("sk-tuner")).await,
            (StatusCode::OK, "true".into())
        );
        assert_eq!(
            status(&api(false), "/v1/pin", None).await,
            (StatusCode::OK, "true".into())
        );
    }

    fn admin(token: Option<&str>) -> Router {
        Router::new()
            .route("/admin/x", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(
                AdminToken(token.map(keys::digest)),
                require_admin_token,
            ))
    }

    #[tokio::test]
    async fn admin_token_is_checked_and_its_absence_hides_the_api() {
        let app = admin(Some("root"));
        assert_eq!(
            status(&app, "/admin/x", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, "/admin/x", Some("roo")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, "/admin/x", Some("root")).await.0,
            StatusCode::OK
        );
        let (code, body) = status(&admin(None), "/admin/x", Some("root")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body.contains("admin.token_sha256"), "{body}");
    }

    fn metrics(admin: Option<&str>, scraper: Option<&str>) -> Router {
        Router::new()
            .route("/metrics", get(|| async { "tenant_cost" }))
            .route_layer(axum::middleware::from_fn_with_state(
                MetricsToken([admin.map(keys::digest), scraper.map(keys::digest)]),
                require_metrics_token,
            ))
    }

    #[tokio::test]
    async fn metrics_need_the_admin_or_the_metrics_token_once_either_is_set() {
        for app in [
            metrics(Some("root"), Some("scrape")),
            metrics(Some("root"), None),
        ] {
            assert_eq!(
                status(&app, "/metrics", None).await.0,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                status(&app, "/metrics", Some("wrong")).await.0,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                status(&app, "/metrics", Some("root")).await.0,
                StatusCode::OK
            );
        }
        let app = metrics(None, Some("scrape"));
        assert_eq!(
            status(&app, "/metrics", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, "/metrics", Some("scrape")).await.0,
            StatusCode::OK
        );
        // No token configured anywhere: nothing to check.
        assert_eq!(
            status(&metrics(None, None), "/metrics", None).await.0,
            StatusCode::OK
        );
    }
}
