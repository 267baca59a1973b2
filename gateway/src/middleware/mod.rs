//! Cross-cutting concerns as tower layers: API keys and per-key limits on
//! the client API, the admin token on `/admin`, HTTP metrics everywhere.

mod auth;
mod http_metrics;

pub use auth::{hash_token, AdminAuthLayer, ApiKeyLayer, Keys, Tenant};
pub use http_metrics::{HttpMetricsLayer, RequestStart};
