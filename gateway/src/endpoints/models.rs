//! `GET /v1/models` (the public route names) and `GET /metrics`.

use axum::{extract::State, response::IntoResponse, Json};
use http::header;
use serde_json::{json, Value};

use crate::AppState;

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .router
        .names()
        .into_iter()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "flywheel"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(capture) = &state.capture {
        state
            .metrics
            .observe_capture(&capture.stats(), flywheel_feedback::now_ms());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
