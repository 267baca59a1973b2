//! Cross-cutting concerns as `axum::middleware::from_fn_with_state`
//! functions: API keys and per-key limits on the client API, the admin
//! token on `/admin`, HTTP metrics everywhere. [`crate::app`] lists the
//! whole stack in order.

mod auth;
mod http_metrics;

pub use auth::{
    require_admin_token, require_api_key, require_metrics_token, AdminToken, ApiKeyAuth, Keys,
    MetricsToken, Tenant,
};
pub use http_metrics::{record_http_metrics, RequestStart};
