//! The HTTP API: our own axum router in front of mistral.rs (mistral.rs's server router is
//! not mounted: it exposes unauthenticated admin routes).
//!
//! # Routes
//!
//! | Route                          | Caller                   | Served by          |
//! |--------------------------------|--------------------------|--------------------|
//! | `GET /health`                  | anyone                   | [`info`]           |
//! | `GET /v1/models`               | anyone                   | [`info`]           |
//! | `POST /v1/chat/completions`    | anyone                   | [`chat`]           |
//! | `POST /v1/completions`         | anyone                   | [`completions`]    |
//! | `GET /admin/models`            | admin token              | [`admin`]          |
//! | `POST /admin/models`           | admin token              | [`admin`]          |
//! | `GET /admin/models/{name}`     | admin token              | [`admin`]          |
//! | `DELETE /admin/models/{name}`  | admin token              | [`admin`]          |
//! | `PUT /admin/aliases/{alias}`   | admin token              | [`admin`]          |
//! | `DELETE /admin/aliases/{alias}`| admin token              | [`admin`]          |
//! | any other path                 | anyone                   | 404 (`fallback`)   |
//!
//! A known path with another method gets axum's own `405 Method Not Allowed` (with `Allow`).
//!
//! * "Anyone": no authentication; whoever reaches `--listen` (by default 127.0.0.1) may
//!   call. Clients are authenticated by the gateway in front of the engine.
//! * "Admin token": `Authorization: Bearer TOKEN` whose sha256 is the engine's
//!   `--admin-token-sha256` (checked by the [`admin::Admin`] extractor, constant-time, via
//!   `flywheel_api::keys`). A missing or wrong token is a 401 with `WWW-Authenticate: Bearer`.
//!   Without a configured token the admin routes are not mounted at all (404, like any
//!   unknown route).
//! * Handlers return `Result<_, ApiError>`: every error they produce is the OpenAI envelope
//!   (`flywheel_api::error::ErrorBody`, see [`ApiError`]), also as the one SSE error event
//!   of a stream that already started. Rejections by axum itself (the 405 above, a body
//!   over its 2 MB default limit, a malformed `?wait=`) keep axum's plain-text bodies.
//!
//! # Modules
//!
//! * [`info`]: `/health` and `/v1/models`.
//! * [`chat`] and [`completions`]: turn a request into a mistral.rs request.
//! * [`runner`]: what they send to mistral.rs (tokenization, generation) and its errors.
//! * [`reply`]: the engine's answer to one request as a JSON response or (via [`stream`]) an
//!   SSE stream.
//! * [`wire`]: mistral.rs's answers as OpenAI's wire shapes (as published in OpenAI's
//!   OpenAPI schema; `tests/fixtures/openai-response-shapes.json` is what tests check).
//! * [`admin`]: the admin-token check, the runtime-deploy routes and aliases (stable names
//!   that point at a version; a request's `model` may be either).

use std::sync::Arc;

use axum::{
    routing::{get, post, put},
    Router,
};

use crate::{error::ApiError, registry::Registry};

mod admin;
mod chat;
mod completions;
mod info;
mod reply;
mod runner;
mod stream;
mod wire;

/// Shared state of the server.
pub struct AppState {
    pub registry: Registry,
    /// sha256 of the admin bearer token; `None`: the admin routes do not exist (404).
    pub admin_sha256: Option<[u8; 32]>,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
}

/// The engine's router (see the [module documentation](self) for the routes).
pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/health", get(info::health))
        .route("/v1/models", get(info::list_models))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions));
    if state.admin_sha256.is_some() {
        r = r
            .route("/admin/models", get(admin::list).post(admin::deploy))
            .route(
                "/admin/models/{name}",
                get(admin::get).delete(admin::undeploy),
            )
            .route(
                "/admin/aliases/{alias}",
                put(admin::put_alias).delete(admin::delete_alias),
            );
    }
    r.fallback(fallback).with_state(state)
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

/// A JSON request body, or a 400 naming what is wrong with it.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}
