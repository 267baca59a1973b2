//! `flywheel-tuner serve-reward`: any grader behind the Bedrock RFT
//! reward-Lambda contract over HTTP (what the `endpoint` grader speaks), so
//! a Flywheel grader can be the reward function of a Bedrock job or of
//! another trainer.
//!
//! `POST /` or `POST /reward` with a JSON array of
//! `{"id", "messages": [..., {"role": "assistant", "content": answer}], "reference_answer"?, ...}`.
//! The last message, which must be the assistant's, is the sample (its text
//! and `tool_calls`); the other messages, `reference_answer` and every other
//! field (`id` included) make the item. The reply is a JSON array, in order:
//!
//! ```json
//! [{"id": "a", "aggregate_reward_score": 1.0,
//!   "metrics_list": [{"name": "<grader name>", "value": 1.0, "type": "Reward"},
//!                    {"name": "passed", "value": 1, "type": "Metric"}]}]
//! ```
//!
//! A sample the grader can't grade gets score 0, the metric
//! `{"name": "error", "value": 1, "type": "Metric"}` and an `"error"`
//! string (which the `endpoint` grader turns back into a grading error). A
//! malformed body is HTTP 400 with `{"error": "entry 2 (id \"x\"): ..."}`.
//! `GET /health` answers `ok`. Grading runs on the blocking pool, one
//! [`Grader::grade_batch`] per request.
//!
//! [`ServeOptions`] bound it: a bearer token (its SHA-256; 401 without it,
//! `/health` excepted), a body limit (413) and a cap on requests graded at
//! once (503 past it, so a flood cannot queue unbounded work).

use std::{future::Future, sync::Arc};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::{header, StatusCode},
    middleware::{from_fn_with_state, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use super::Grader;
use crate::item::{Item, Message, Sample};

/// Default largest request body (`--max-body-bytes`).
pub const BODY_LIMIT: usize = 4 << 20;
/// Default cap on requests graded at once (`--max-concurrent`).
pub const MAX_CONCURRENT: usize = 8;

/// What bounds the reward server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// SHA-256 of the bearer token every reward request must carry; `None`
    /// = no authentication (the CLI refuses that on a non-loopback address).
    pub token_sha256: Option<[u8; 32]>,
    /// Largest request body (413 past it).
    pub body_limit: usize,
    /// Requests graded at once; one more is a 503.
    pub max_concurrent: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            token_sha256: None,
            body_limit: BODY_LIMIT,
            max_concurrent: MAX_CONCURRENT,
        }
    }
}

#[derive(Clone)]
struct Guard {
    token_sha256: Option<[u8; 32]>,
    slots: Arc<Semaphore>,
}

/// The bearer token (when set), then a free slot (503 when none).
async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(expected) = &g.token_sha256 {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token.is_some_and(|t| flywheel_api::keys::token_matches(t, expected)) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": "missing or invalid bearer token" })),
            )
                .into_response();
        }
    }
    let Ok(_permit) = g.slots.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "too many requests in flight; retry later" })),
        )
            .into_response();
    };
    next.run(req).await
}

/// The reward server's routes.
pub fn router(grader: Arc<Grader>, options: &ServeOptions) -> Router {
    let g = Guard {
        token_sha256: options.token_sha256,
        slots: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
    };
    Router::new()
        .route("/", post(reward))
        .route("/reward", post(reward))
        .route_layer(from_fn_with_state(g, guard))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(grader)
}

/// Serves [`router`] on `listener` until `shutdown` completes, with the
/// gateway's accept loop and connection bounds (a silent or trickling
/// client cannot hold a connection), over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    grader: Arc<Grader>,
    options: &ServeOptions,
    tls: Option<&flywheel_listener::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = flywheel_listener::Limits::default();
    flywheel_listener::serve(listener, router(grader, options), &limits, tls, shutdown).await;
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

async fn reward(State(grader): State<Arc<Grader>>, body: Bytes) -> Response {
    let entries = match parse_request(&body) {
        Ok(e) => e,
        Err(message) => return bad_request(message),
    };
    let (ids, pairs): (Vec<String>, Vec<(Sample, Item)>) =
        entries.into_iter().map(|(id, s, i)| (id, (s, i))).unzip();
    let g = grader.clone();
    let results = match tokio::task::spawn_blocking(move || g.grade_batch(&pairs)).await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "error": format!("grading failed: {e}") })),
            )
                .into_response();
        }
    };
    let out: Vec<Value> = ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| match r {
            Ok(g) => json!({
                "id": id,
                "aggregate_reward_score": g.score,
                "metrics_list": [
                    {"name": grader.name(), "value": g.score, "type": "Reward"},
                    {"name": "passed", "value": u8::from(g.passed), "type": "Metric"},
                ],
            }),
            Err(e) => json!({
                "id": id,
                "aggregate_reward_score": 0.0,
                "metrics_list": [{"name": "error", "value": 1, "type": "Metric"}],
                "error": e.to_string(),
            }),
        })
        .collect();
    axum::Json(Value::Array(out)).into_response()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The request's `(id, sample, item)`s, or what is wrong with it.
pub fn parse_request(body: &[u8]) -> Result<Vec<(String, Sample, Item)>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Array(list) = value else {
        return Err(format!(
            "the body must be a JSON array of samples, got {}",
            type_name(&value)
        ));
    };
    list.into_iter()
        .enumerate()
        .map(|(i, entry)| parse_entry(i, entry))
        .collect()
}

fn parse_entry(i: usize, entry: Value) -> Result<(String, Sample, Item), String> {
    let Value::Object(mut obj) = entry else {
        return Err(format!(
            "entry {i}: must be an object, got {}",
            type_name(&entry)
        ));
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Number(_)) => v.to_string(),
        Some(v) => {
            return Err(format!(
                "entry {i}: \"id\" must be a string or a number, got {}",
                type_name(v)
            ))
        }
        None => return Err(format!("entry {i}: missing \"id\"")),
    };
    let at = format!("entry {i} (id {id:?})");
    let messages = match obj.remove("messages") {
        Some(Value::Array(m)) => m,
        Some(v) => {
            return Err(format!(
                "{at}: \"messages\" must be an array, got {}",
                type_name(&v)
            ))
        }
        None => return Err(format!("{at}: missing \"messages\"")),
    };
    let mut messages = messages
        .into_iter()
        .enumerate()
        .map(|(j, m)| {
            serde_json::from_value::<Message>(m).map_err(|e| format!("{at}: messages[{j}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answer = match messages.pop() {
        Some(m) if m.role == "assistant" => m,
        Some(m) => {
            return Err(format!(
                "{at}: the last message must be the assistant's answer to grade, got role {:?}",
                m.role
            ));
        }
        None => {
            return Err(format!(
                "{at}: \"messages\" is empty; the last message must be the assistant's answer"
            ))
        }
    };
    let mut sample = Sample::from_text(answer.text());
    if let Some(Value::Array(calls)) = answer.extra.get("tool_calls") {
        sample.output_tools = calls.clone();
    }
    let reference_answer = obj.remove("reference_answer");
    let extra: Map<String, Value> = obj;
    Ok((
        id,
        sample,
        Item {
            messages,
            reference_answer,
            extra,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};

    use super::{router, ServeOptions};
    use crate::{
        grader::{testutil::Server, Grader, GraderError},
        item::{Item, Message, Sample},
    };

    fn reward_server() -> Server {
        let g = Grader::from_config(&json!({
            "type": "string_check", "name": "exact", "operation": "eq",
            "input": "{{sample.output_text}}", "reference": "{{item.reference_answer.value}}"
        }))
        .unwrap();
        Server::start(router(Arc::new(g), &ServeOptions::default()))
    }

    /// Before: no token, 64 MiB bodies and no cap on requests in flight.
    #[test]
    fn token_body_limit_and_concurrency_cap_are_enforced() {
        let exact = || {
            Arc::new(
                Grader::from_config(&json!({
                    "type": "string_check", "name": "exact", "operation": "eq",
                    "input": "{{sample.output_text}}", "reference": "x"
                }))
                .unwrap(),
            )
        };
        let options = ServeOptions {
            token_sha256: Some(flywheel_api::keys::digest("s3cret")),
            body_limit: 1024,
            max_concurrent: 1,
        };
        let server = Server::start(router(exact(), &options));
        let client = reqwest::blocking::Client::new();
        let send = |token: Option<&str>, body: String| {
            let mut r = client.post(server.url("/")).body(body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().unwrap().status().as_u16()
        };
        assert_eq!(send(None, "[]".into()), 401);
        assert_eq!(send(Some("wrong"), "[]".into()), 401);
        assert_eq!(send(Some("s3cret"), "[]".into()), 200);
        assert_eq!(send(Some("s3cret"), format!("[{}]", " ".repeat(2048))), 413);
        let health = client.get(server.url("/health")).send().unwrap();
        assert_eq!(health.status().as_u16(), 200);

        // No slot free: a 503. A python grader that sleeps holds the slot.
        let sem = Arc::new(tokio::sync::Semaphore::new(1));
        let held = sem.clone().try_acquire_owned().unwrap();
        let busy = super::Guard {
            token_sha256: None,
            slots: sem,
        };
        let app = axum::Router::new()
            .route("/", axum::routing::post(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(busy, super::guard));
        let busy_server = Server::start(app);
        let status = client.post(busy_server.url("/")).send().unwrap().status();
        assert_eq!(status.as_u16(), 503);
        drop(held);
    }

    fn item(id: &str, value: Value) -> Item {
        let mut item = Item::new(
            vec![Message::new("user", "2+2?")],
            Some(json!({"value": value})),
        );
        item.extra.insert("id".into(), json!(id));
        item
    }

    #[test]
    fn endpoint_grader_round_trips_through_serve_reward() {
        let server = reward_server();
        for path in ["/", "/reward"] {
            let g = Grader::from_config(
                &json!({"type": "endpoint", "name": "remote", "url": server.url(path)}),
            )
            .unwrap();
            let pairs = vec![
                (Sample::from_text("4"), item("pass", json!("4"))),
                (Sample::from_text("5"), item("fail", json!("4"))),
                // The remote grader can't render its reference: an error, not a 0.
                (
                    Sample::from_text("4"),
                    Item::new(vec![Message::new("user", "q")], Some(json!("4"))),
                ),
            ];
            let r = g.grade_batch(&pairs);
            let pass = r[0].as_ref().unwrap();
            assert_eq!((pass.score, pass.passed), (1.0, true));
            assert_eq!(pass.reason, "exact=1.0, passed=1");
            let fail = r[1].as_ref().unwrap();
            assert_eq!((fail.score, fail.passed), (0.0, false));
            assert_eq!(fail.reason, "exact=0.0, passed=0");
            let e = r[2].as_ref().unwrap_err();
            assert!(matches!(e, GraderError::Grading { .. }), "{e}");
            assert!(e.to_string().contains("reference_answer.value"), "{e}");
        }
    }

    fn post(server: &Server, body: &str) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(server.url("/"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap())
    }

    #[test]
    fn reply_shape() {
        let server = reward_server();
        let (status, body) = post(
            &server,
            r#"[{"id": "x", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text", "text": "4"}]}], "reference_answer": {"value": "4"}},
                {"id": 7, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "4"}]}]"#,
        );
        assert_eq!(status, 200);
        assert_eq!(
            body[0],
            json!({"id": "x", "aggregate_reward_score": 1.0, "metrics_list": [
                {"name": "exact", "value": 1.0, "type": "Reward"}, {"name": "passed", "value": 1, "type": "Metric"}]})
        );
        assert_eq!(body[1]["id"], "7");
        assert_eq!(body[1]["aggregate_reward_score"], 0.0);
        assert_eq!(
            body[1]["metrics_list"],
            json!([{"name": "error", "value": 1, "type": "Metric"}])
        );
        assert!(
            body[1]["error"]
                .as_str()
                .unwrap()
                .contains("item.reference_answer"),
            "{body}"
        );
        assert_eq!(post(&server, "[]"), (200, json!([])));
    }

    #[test]
    fn malformed_bodies_are_400_naming_the_problem() {
        let server = reward_server();
        for (body, expected) in [
            ("not json", "the body is not JSON"),
            (
                r#"{"id": "a"}"#,
                "must be a JSON array of samples, got an object",
            ),
            ("[3]", "entry 0: must be an object"),
            (r#"[{"messages": []}]"#, "entry 0: missing \"id\""),
            (
                r#"[{"id": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]}, {"id": "b"}]"#,
                "entry 1 (id \"b\"): missing \"messages\"",
            ),
            (
                r#"[{"id": "a", "messages": "hi"}]"#,
                "\"messages\" must be an array",
            ),
            (
                r#"[{"id": "a", "messages": [{"role": "user", "content": "q"}]}]"#,
                "the last message must be the assistant's answer",
            ),
            (r#"[{"id": "a", "messages": []}]"#, "\"messages\" is empty"),
            (
                r#"[{"id": "a", "messages": [{"content": "q"}]}]"#,
                "messages[0]",
            ),
            (
                r#"[{"id": true, "messages": []}]"#,
                "\"id\" must be a string or a number",
            ),
        ] {
            let (status, reply) = post(&server, body);
            assert_eq!(status, 400, "{body}");
            let msg = reply["error"].as_str().unwrap_or_default();
            assert!(msg.contains(expected), "{body}: {msg}");
        }
    }
}
