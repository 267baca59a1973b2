//! Public read-only routes: `GET /health` and `GET /v1/models`.

use std::sync::Arc;

use axum::{extract::State, Json};
use serde_json::{json, Value};

use super::AppState;

/// `GET /health`: the served versions and the default one.
pub(super) async fn health(State(st): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<String> = st.registry.list().iter().map(|v| v.name.clone()).collect();
    Json(json!({"status": "ok", "models": models, "default": st.registry.default_name()}))
}

/// `GET /v1/models`: the served versions as an OpenAI model list.
pub(super) async fn list_models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .registry
        .list()
        .iter()
        .map(|v| json!({"id": v.name, "object": "model", "created": v.created, "owned_by": "flywheel"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
