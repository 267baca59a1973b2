//! Live routing changes: `GET /admin/routes` shows the weights (and the
//! canary's shadow mirrors),
//! `PUT /admin/routes/{route}/weights` with `{"weights": {"variant": 10}}`
//! changes them for the next request, without a restart.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    extract::{Path, State},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{read_json, view};
use crate::{error::GatewayError, router::WeightsError, AppState};

pub async fn list_routes(State(state): State<AppState>) -> Json<Value> {
    let mirrors: BTreeMap<String, Value> = state
        .router
        .mirrors()
        .into_iter()
        .map(|(route, m)| (route, json!({"variant": m.variant, "fraction": m.fraction})))
        .collect();
    Json(json!({"routes": state.router.weights(), "mirrors": mirrors}))
}

#[derive(Deserialize)]
struct WeightsBody {
    weights: BTreeMap<String, u32>,
}

pub async fn set_weights(
    State(state): State<AppState>,
    Path(route): Path<String>,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let value = read_json(
        body,
        state.config.server.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    let body: WeightsBody = view(&value)?;
    state
        .router
        .set_weights(&route, &body.weights)
        .map_err(|e| match e {
            WeightsError::UnknownRoute(r) => {
                GatewayError::NotFound(format!("the route `{r}` does not exist"))
            }
            other => GatewayError::invalid(other.to_string(), Some("weights")),
        })?;
    // With Redis, every gateway process picks the change up from there.
    if let Some(redis) = &state.redis {
        if let Err(e) = crate::coordination::publish_weights(redis, &route, &body.weights).await {
            tracing::warn!(%route, error = %e, "weights changed in this process only: Redis unavailable");
        }
    }
    tracing::info!(%route, weights = ?body.weights, "route weights changed");
    Ok(Json(
        json!({"route": route, "weights": state.router.weights().remove(&route)}),
    ))
}
