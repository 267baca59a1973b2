//! Runtime deploys and aliases behind the admin token:
//!
//! * `GET /admin/models`: the versions, the default one and the aliases.
//! * `POST /admin/models {"name", "path"}`: loads a version (409 if the name is a version or
//!   an alias already).
//! * `GET /admin/models/{name}`: one version.
//! * `DELETE /admin/models/{name}[?wait=false]`: stops routing to a version, deletes the
//!   aliases pointing at it (`aliases_removed`), and unloads it once drained.
//! * `PUT /admin/aliases/{alias} {"version"}`: points a stable name at a version, creating
//!   or re-pointing it at once (requests already running keep their version). The tuner
//!   deploys versions under dated names and the gateway's routes name a fixed model per
//!   variant slot (`extract-a`): the alias joins the two.
//! * `DELETE /admin/aliases/{alias}`: deletes an alias.

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
use crate::{
    error::ApiError,
    registry::{Deployment, Unloading},
};

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

/// `GET /admin/models`: every served version, the default one, and the aliases
/// (`{"alias": "version"}`).
pub(super) async fn list(_: Admin, State(st): State<Arc<AppState>>) -> Json<Value> {
    let (versions, aliases) = st.registry.snapshot();
    let data: Vec<Value> = versions.iter().map(|v| v.info()).collect();
    Json(json!({
        "object": "list",
        "data": data,
        "default": st.registry.default_name(),
        "aliases": aliases,
    }))
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

/// `DELETE /admin/models/{name}[?wait=false]`: stops routing to a version, deletes the
/// aliases pointing at it (listed as `aliases_removed`: an alias must never dangle, and the
/// canary controller unloading a rolled-back candidate must not be refused because of one),
/// and unloads it once its in-flight requests are done.
pub(super) async fn undeploy(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<UndeployQuery>,
) -> Result<Response, ApiError> {
    let Unloading {
        version,
        aliases_removed,
    } = st.registry.begin_undeploy(&name)?;
    let in_flight = version.inflight();
    if q.wait {
        st.registry.finish_undeploy(version).await?;
        return Ok(Json(json!({
            "id": name,
            "deleted": true,
            "drained": in_flight,
            "aliases_removed": aliases_removed,
        }))
        .into_response());
    }
    let st2 = st.clone();
    tokio::spawn(async move {
        if let Err(e) = st2.registry.finish_undeploy(version).await {
            tracing::error!(error = %e, "unload failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": name,
            "deleted": false,
            "draining": in_flight,
            "aliases_removed": aliases_removed,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct AliasBody {
    version: String,
}

/// `PUT /admin/aliases/{alias} {"version"}`: points `alias` at a loaded version, creating it
/// or re-pointing it atomically (requests already running keep the version they got).
/// 404 for an unknown version, 409 when `alias` is a version's name, 400 for an invalid name.
pub(super) async fn put_alias(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(alias): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: AliasBody = parse_json(&body)?;
    st.registry.set_alias(&alias, &b.version)?;
    Ok(Json(json!({"alias": alias, "version": b.version})))
}

/// `DELETE /admin/aliases/{alias}`: requests naming it get 404 from now on (running ones keep
/// their version).
pub(super) async fn delete_alias(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(alias): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let version = st.registry.remove_alias(&alias)?;
    Ok(Json(
        json!({"alias": alias, "deleted": true, "version": version}),
    ))
}
