//! Flywheel's dashboards: the JSON API of `dashboards/API.md` and the static
//! pages that draw it.
//!
//! * [`queries`]: every SQL query, with typed rows (rollups first).
//! * [`auth`]: the bearer token → admin or a tenant, from the gateway config.
//! * [`api`]: the handlers; [`csv`]: the CSV export.
//! * [`gateway`]: the playground's calls and the circuits (`/metrics`).
//! * [`runs`]: the tuner service's journal.
//! * [`assets`]: the embedded pages and their security headers.
//! * [`error`]: the typed errors and their OpenAI envelope.

pub mod api;
pub mod assets;
pub mod auth;
pub mod csv;
pub mod error;
pub mod gateway;
pub mod queries;
pub mod runs;
pub mod stats;

use std::{path::PathBuf, sync::Arc};

use axum::{
    middleware::{from_fn_with_state, map_response},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use flywheel_canary_controller::{CanaryStore, Weights};

use crate::{auth::Access, error::ApiError, queries::Queries, runs::Runs};

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub queries: Queries,
    pub canary: CanaryStore,
    /// Where manual actions write the route weights (the controller's Redis).
    pub weights: Weights,
    pub access: Arc<Access>,
    /// `--gateway-url`: the playground and the circuits.
    pub gateway: Option<gateway::Gateway>,
    /// `--tuner-state`.
    pub runs: Option<Runs>,
    /// `--playground-key`: the API key the admin's playground calls use.
    pub playground_key: Option<String>,
}

async fn not_found() -> Response {
    ApiError::NotFound("no such page or call".into()).into_response()
}

async fn with_security_headers(mut resp: Response) -> Response {
    assets::security_headers(&mut resp);
    resp
}

/// The router. Layers, outermost first, and what each reads or adds:
///
/// 1. **`with_security_headers`** (`map_response`): adds the
///    Content-Security-Policy, `X-Content-Type-Options: nosniff`,
///    `Referrer-Policy` and `X-Frame-Options` to every answer, pages, API
///    and errors alike. Reads nothing.
/// 2. **Routing** (the axum router). The pages (`/`, `/app.js`,
///    `/style.css`, `/vendor/{name}`) have no further layer: they hold no
///    data. A path no route matches is a 404 in the OpenAI envelope.
/// 3. `/api/*` only: **[`auth::require_caller`]** (`route_layer`, state
///    [`Access`]): the bearer token must be the admin token or an API key
///    of the gateway config (401 otherwise, compared in constant time);
///    **inserts [`auth::Caller`]**, which every API handler extracts (a
///    missing one would be a 500, so no handler sits outside this layer).
///    Being a `route_layer`, it runs only for a matched route, so an
///    unknown `/api/` path is a 404 rather than a 401.
/// 4. **Handlers** ([`api`]): turn the caller and the query into a
///    [`queries::Scope`] (a tenant's forced to its own tenant; another
///    tenant named is a 403), check admin-only calls (403), and read.
///    JSON bodies are limited by axum's default (2 MB).
pub fn app(state: AppState) -> Router {
    let access = state.access.clone();
    let api = Router::new()
        .route("/api/session", get(api::session))
        .route("/api/filters", get(api::filters))
        .route("/api/overview", get(api::overview))
        .route("/api/latency", get(api::latency))
        .route("/api/reliability", get(api::reliability))
        .route("/api/quality", get(api::quality))
        .route("/api/experiments", get(api::experiments))
        .route("/api/experiments/{id}", get(api::experiment))
        .route(
            "/api/experiments/{id}/actions",
            post(api::experiment_action),
        )
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run}", get(api::run))
        .route("/api/playground/routes", get(api::playground_routes))
        .route("/api/playground/chat", post(api::playground_chat))
        .route("/api/playground/feedback", post(api::playground_feedback))
        .route("/api/playground/cost/{id}", get(api::playground_cost))
        .route_layer(from_fn_with_state(access, auth::require_caller))
        .with_state(state);
    Router::new()
        .route("/", get(assets::index))
        .route("/index.html", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/vendor/{name}", get(assets::vendor))
        .merge(api)
        .fallback(not_found)
        .layer(map_response(with_security_headers))
}

/// Options of [`state`] beyond the stores.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub gateway_url: Option<String>,
    /// Bearer token of the gateway's `/metrics`.
    pub gateway_metrics_token: Option<String>,
    pub tuner_state: Option<PathBuf>,
    pub playground_key: Option<String>,
}

/// The shared state from its parts.
pub fn state(
    store: flywheel_feedback::store::Store,
    weights: Weights,
    access: Access,
    opts: Options,
) -> Result<AppState, reqwest::Error> {
    Ok(AppState {
        queries: Queries::new(store.clone()),
        canary: CanaryStore::new(store),
        weights,
        access: Arc::new(access),
        gateway: opts
            .gateway_url
            .as_deref()
            .map(|url| {
                gateway::Gateway::new(url).map(|g| {
                    g.with_metrics_token(
                        opts.gateway_metrics_token.clone().filter(|t| !t.is_empty()),
                    )
                })
            })
            .transpose()?,
        runs: opts.tuner_state.as_deref().map(Runs::new),
        playground_key: opts.playground_key.filter(|k| !k.is_empty()),
    })
}
