//! HTTP endpoints. Each handler checks its body, builds a [`Call`] and hands
//! it to the dispatcher; the response shape is OpenAI's.

pub mod admin;
pub mod body;
mod feedback;
mod inference;
mod models;

use axum::{
    routing::{get, post, put},
    Router,
};
pub use inference::{chat_completions, completions, embeddings};

use crate::AppState;

/// Routes under `/v1` (client API, behind the API-key layer).
pub fn api() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models::list))
        .route("/v1/feedback", post(feedback::create))
}

/// Routes under `/admin` (behind the admin-token layer).
pub fn admin() -> Router<AppState> {
    Router::new()
        .route("/admin/routes", get(admin::list_routes))
        .route("/admin/routes/{route}/weights", put(admin::set_weights))
}

/// `/metrics` (behind the metrics-token layer: it names tenants and costs).
pub fn metrics() -> Router<AppState> {
    Router::new().route("/metrics", get(models::metrics))
}

/// Unauthenticated operational routes.
pub fn ops() -> Router<AppState> {
    Router::new().route("/health", get(|| async { "ok" }))
}
