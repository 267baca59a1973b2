//! `POST /v1/feedback`: a metric value on one of the caller's inferences or
//! episodes.
//!
//! ```json
//! {"inference_id": "…", "metric": "thumbs_up", "value": true,
//!  "tags": {"reviewer": "ops"}, "idempotency_key": "…"}
//! ```
//!
//! The metric must be declared in `[[feedback.metrics]]`, the value must
//! have its type, and the target must belong to the caller's tenant
//! (inferences still in the write-ahead log included). A repeated
//! `idempotency_key` stores the feedback once.
//!
//! Episode ids are the clients', so two tenants may use the same one: an
//! episode is (tenant, episode id), and only the caller's tenant's is looked
//! up. Tenant B sending tenant A's episode id reaches B's own episode of that
//! id (or a 404 if B has none), never A's.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use std::collections::BTreeMap;

use axum::{body::Body, extract::State, Extension, Json};
use flywheel_feedback::{
    event::{feedback_source, FeedbackEvent, FeedbackTarget, FeedbackValue},
    Record,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{check_id, check_pairs, read_json, view};
use crate::{
    config::{MetricKind, MetricLevel},
    error::GatewayError,
    middleware::Tenant,
    signals::Owner,
    AppState,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    #[serde(default)]
    inference_id: Option<String>,
    #[serde(default)]
    episode_id: Option<String>,
    metric: String,
    value: Value,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl FeedbackBody {
    /// Client-chosen ids and tags within their limits: they are stored
    /// with the feedback and the episode id is looked up in memory.
    fn check_sizes(&self) -> Result<(), GatewayError> {
        for (id, param) in [
            (&self.inference_id, "inference_id"),
            (&self.episode_id, "episode_id"),
            (&self.idempotency_key, "idempotency_key"),
        ] {
            if let Some(id) = id {
                check_id(id, param)?;
            }
        }
        check_pairs(
            "tags",
            self.tags.len(),
            self.tags.iter().map(|(k, v)| (k.as_str(), v.len())),
        )
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    body: Body,
) -> Result<Json<Value>, GatewayError> {
    let raw = read_json(
        body,
        state.config.server.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    let body: FeedbackBody = view(&raw)?;
    body.check_sizes()?;
    let metrics = &state.config.feedback.metrics;
    let metric = metrics
        .iter()
        .find(|m| m.name == body.metric)
        .ok_or_else(|| {
            let declared: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
            GatewayError::invalid(
                format!(
                    "unknown metric `{}`; declared metrics: [{}]",
                    body.metric,
                    declared.join(", ")
                ),
                Some("metric"),
            )
        })?;
    let value = typed_value(metric.kind, &body.value)?;
    let (target, owner) = match metric.level {
        MetricLevel::Inference => {
            let Some(id) = body
                .inference_id
                .as_deref()
                .filter(|_| body.episode_id.is_none())
            else {
                return Err(GatewayError::invalid(
                    format!("metric `{}` is an inference metric: send `inference_id` (and no `episode_id`)", metric.name),
                    Some("inference_id"),
                ));
            };
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(GatewayError::invalid(
                    "`inference_id` must be a request id (a UUID)",
                    Some("inference_id"),
                ));
            }
            (
                FeedbackTarget::inference(id),
                inference_owner(&state, &tenant.name, id).await?,
            )
        }
        MetricLevel::Episode => {
            let Some(id) = body
                .episode_id
                .as_deref()
                .filter(|_| body.inference_id.is_none())
            else {
                return Err(GatewayError::invalid(
                    format!("metric `{}` is an episode metric: send `episode_id` (and no `inference_id`)", metric.name),
                    Some("episode_id"),
                ));
            };
            (
                FeedbackTarget::episode(id),
                episode_owner(&state, &tenant.name, id).await?,
            )
        }
    };
    // Another tenant's target is reported exactly like a missing one, so
    // that ids cannot be probed across tenants.
    let owner: Owner = owner.filter(|o| *o.tenant == *tenant.name).ok_or_else(|| {
        let what = target.inference_id.as_deref().map_or_else(
            || {
                format!(
                    "episode `{}`",
                    target.episode_id.as_deref().unwrap_or_default()
                )
            },
            |id| format!("inference `{id}`"),
        );
        GatewayError::NotFound(format!("{what} does not exist for this API key"))
    })?;
    let id = match &body.idempotency_key {
        Some(key) => FeedbackEvent::id_for_idempotency_key(&tenant.name, key),
        None => FeedbackEvent::new_id(),
    };
    let event = FeedbackEvent {
        id: id.clone(),
        ts_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
        tenant: tenant.name.clone(),
        target,
        route: owner.route.to_string(),
        variant: owner.variant.to_string(),
        metric: metric.name.clone(),
        value,
        tags: body.tags,
        idempotency_key: body.idempotency_key,
        source: feedback_source::API.to_owned(),
    };
    // An id is only given for feedback that is in the log: a refused one
    // answers 503, so the client sends it again.
    state
        .sink
        .record(Record::Feedback(event))
        .await
        .map_err(|_| GatewayError::NotRecorded("feedback"))?;
    Ok(Json(json!({"id": id})))
}

/// Owner of inference `id` if it is `tenant`'s: the in-memory index of
/// recent ones, then the capture store, asked for `tenant`'s only. Inference
/// ids are the gateway's UUIDs, unique across tenants: one in memory for
/// another tenant is not `tenant`'s, without asking ClickHouse.
async fn inference_owner(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Option<Owner>, GatewayError> {
    if let Some(owner) = state.recent.inference(id) {
        return Ok(Some(owner).filter(|o| *o.tenant == *tenant));
    }
    let Some(capture) = &state.capture else {
        return Ok(None);
    };
    let found = capture
        .store()
        .tenant_inference_owner(tenant, id)
        .await
        .map_err(crate::store_unavailable)?;
    Ok(found.map(Owner::from))
}

/// Owner of `tenant`'s episode `id` (never another tenant's episode with
/// the same id): the in-memory index, then the capture store's episode
/// table, sorted by (tenant, episode id), so a lookup costs one granule.
async fn episode_owner(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Option<Owner>, GatewayError> {
    if let Some(owner) = state.recent.tenant_episode(tenant, id) {
        return Ok(Some(owner));
    }
    let Some(capture) = &state.capture else {
        return Ok(None);
    };
    let found = capture
        .store()
        .tenant_episode_owner(tenant, id)
        .await
        .map_err(crate::store_unavailable)?;
    Ok(found.map(Owner::from))
}

fn typed_value(kind: MetricKind, value: &Value) -> Result<FeedbackValue, GatewayError> {
    let wrong = |expected: &str| {
        GatewayError::invalid(
            format!("`value` must be {expected} for this metric, got {value}"),
            Some("value"),
        )
    };
    match kind {
        MetricKind::Boolean => value
            .as_bool()
            .map(FeedbackValue::Boolean)
            .ok_or_else(|| wrong("a boolean")),
        MetricKind::Float => value
            .as_f64()
            .filter(|f| f.is_finite())
            .map(FeedbackValue::Float)
            .ok_or_else(|| wrong("a finite number")),
        MetricKind::Comment => value
            .as_str()
            .map(|s| FeedbackValue::Comment(s.to_owned()))
            .ok_or_else(|| wrong("a string")),
        MetricKind::Demonstration => match value {
            Value::String(s) => Ok(FeedbackValue::Demonstration(
                json!({"role": "assistant", "content": s}),
            )),
            Value::Object(m)
                if m.get("role") == Some(&json!("assistant")) && m.contains_key("content") =>
            {
                Ok(FeedbackValue::Demonstration(value.clone()))
            }
            _ => Err(wrong(
                "an assistant message ({\"role\": \"assistant\", \"content\": …}) or its content",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::testing;

    const METRICS: &str = "[[feedback.metrics]]\nname = \"thumbs\"\ntype = \"boolean\"\n\
        [[feedback.metrics]]\nname = \"solved\"\ntype = \"boolean\"\nlevel = \"episode\"\n";

    #[tokio::test]
    async fn client_supplied_fields_over_their_limit_are_a_400_naming_them() {
        let addr = testing::chat_upstream(|| async { testing::chat_answer(3, 1) }).await;
        let (state, _) = testing::state(addr, METRICS);
        let long = "k".repeat(10_000);
        let id = uuid::Uuid::now_v7().to_string();
        let thumbs = |extra: serde_json::Value| {
            let mut body = json!({"inference_id": id, "metric": "thumbs", "value": true});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        let many_tags: serde_json::Map<_, _> =
            (0..100).map(|i| (format!("t{i}"), json!("v"))).collect();
        for (body, param) in [
            (thumbs(json!({"idempotency_key": long})), "idempotency_key"),
            (thumbs(json!({"tags": {"by": long}})), "tags.by"),
            (thumbs(json!({"tags": many_tags})), "tags"),
            (
                json!({"episode_id": long, "metric": "solved", "value": true}),
                "episode_id",
            ),
        ] {
            let answer =
                testing::post(&state, "/v1/feedback", &[], &body, Duration::from_secs(10)).await;
            assert_eq!(answer.status, 400, "{param}: {}", answer.body);
            assert_eq!(answer.json()["error"]["param"], param, "{}", answer.body);
        }
    }
}
