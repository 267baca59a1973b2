//! Runtime deploys behind the admin token: `GET/POST /admin/models` and
//! `GET/DELETE /admin/models/{name}`.

use std::{path::PathBuf, sync::Arc};

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use flywheel_api::keys;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, AppState};
use crate::{error::ApiError, registry::Deployment};

/// Proof that the request carries the admin token (`Authorization: Bearer TOKEN` whose
/// sha256 is [`AppState::admin_sha256`]). Rejects with 401 (`WWW-Authenticate: Bearer`),
/// or 404 when no admin token is configured (the routes are not mounted then anyway).
pub(super) struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &st.admin_sha256 else {
            return Err(ApiError::not_found("no such route"));
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(keys::bearer)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        if !keys::token_matches(token, expected) {
            return Err(ApiError::unauthorized("invalid admin token"));
        }
        Ok(Admin)
    }
}

/// `GET /admin/models`: every served version, and the default one.
pub(super) async fn list(_: Admin, State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st.registry.list().iter().map(|v| v.info()).collect();
    Json(json!({"object": "list", "data": data, "default": st.registry.default_name()}))
}

/// `GET /admin/models/{name}`: one version.
pub(super) async fn get(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = st
        .registry
        .list()
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::model_not_found(&name))?;
    Ok(Json(v.info()))
}

#[derive(Deserialize)]
struct DeployBody {
    name: String,
    path: PathBuf,
}

/// `POST /admin/models {"name", "path"}`: loads a version (201 once it serves).
pub(super) async fn deploy(
    _: Admin,
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: DeployBody = parse_json(&body)?;
    let v = st
        .registry
        .deploy(Deployment::checkpoint(b.name, b.path))
        .await?;
    Ok((StatusCode::CREATED, Json(v.info())).into_response())
}

#[derive(Deserialize)]
pub(super) struct UndeployQuery {
    /// Answer once the version drained and unloaded (200), or at once (202).
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

/// `DELETE /admin/models/{name}[?wait=false]`: stops routing to a version and unloads it
/// once its in-flight requests are done.
pub(super) async fn undeploy(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<UndeployQuery>,
) -> Result<Response, ApiError> {
    let version = st.registry.begin_undeploy(&name)?;
    let in_flight = version.inflight();
    if q.wait {
        st.registry.finish_undeploy(version).await?;
        return Ok(
            Json(json!({"id": name, "deleted": true, "drained": in_flight})).into_response(),
        );
    }
    let st2 = st.clone();
    tokio::spawn(async move {
        if let Err(e) = st2.registry.finish_undeploy(version).await {
            tracing::error!(error = %e, "unload failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": name, "deleted": false, "draining": in_flight})),
    )
        .into_response())
}
