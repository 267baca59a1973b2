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

/// `GET /v1/models`: the served versions, then the aliases, as an OpenAI model list. Either
/// name works as a request's `model`; an alias's entry carries its version's `created`.
pub(super) async fn list_models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let (versions, aliases) = st.registry.snapshot();
    let entry = |id: &str, created: u64| json!({"id": id, "object": "model", "created": created, "owned_by": "flywheel"});
    let mut data: Vec<Value> = versions.iter().map(|v| entry(&v.name, v.created)).collect();
    for (alias, target) in aliases {
        if let Some(v) = versions.iter().find(|v| v.name == target) {
            data.push(entry(&alias, v.created));
        }
    }
    Json(json!({"object": "list", "data": data}))
}
