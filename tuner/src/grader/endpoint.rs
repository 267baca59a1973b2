//! The `endpoint` grader: an HTTP reward function speaking the Bedrock RFT
//! reward-Lambda contract.
//!
//! ```json
//! {"type": "endpoint", "name": "reward", "url": "http://127.0.0.1:9000/",
//!  "headers": {"Authorization": "Bearer ..."}, "rate_limit": 5, "pass_threshold": 0.5}
//! ```
//!
//! `rate_limit` is the most requests per second sent to `url` (default:
//! no limit). Each [`super::Grader::grade_batch`] is one POST of a JSON
//! array, one entry per sample:
//!
//! ```json
//! [{"id": "item-1", "messages": [...the item's prompt..., {"role": "assistant", "content": "<sample.output_text>"}],
//!   "reference_answer": ..., "...the item's other fields": ...}]
//! ```
//!
//! (the assistant message carries `tool_calls` when the sample has some;
//! `id` is the item's id, suffixed `#2`, `#3`... when one batch grades an
//! item more than once). The reply must be a JSON array of
//! `{"id", "aggregate_reward_score": number, "metrics_list": [{"name", "value", "type"}]}`,
//! matched by `id`. The score is `aggregate_reward_score` as is; the reason
//! lists the metrics as `name=value`. A transport error, a non-2xx status,
//! a reply that is not such an array, a missing id, a non-numeric score or
//! an entry carrying an `"error"` string (as `serve-reward` sends for a
//! sample it could not grade) is a grading error for the samples concerned.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::{config::Cfg, http::Http, snippet, GraderError, GraderOptions, Scored};
use crate::item::Item;

pub(crate) const FIELDS: &[&str] = &["url", "headers", "rate_limit"];

pub(crate) struct Endpoint {
    url: String,
    headers: Vec<(String, String)>,
    http: Http,
    /// Minimum spacing between requests, and when the next may go.
    rate: Option<(Duration, Mutex<Instant>)>,
}

impl Endpoint {
    pub fn from_cfg(cfg: &Cfg, options: &GraderOptions) -> Result<Self, GraderError> {
        let url = cfg.req_str("url")?;
        let parsed =
            reqwest::Url::parse(url).map_err(|e| cfg.err("url", format!("invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(cfg.err(
                "url",
                format!("must be http:// or https://, not {}://", parsed.scheme()),
            ));
        }
        let mut headers = Vec::new();
        if let Some(h) = cfg.opt("headers") {
            let map = h
                .as_object()
                .ok_or_else(|| cfg.err("headers", "must be an object of name -> value strings"))?;
            for (k, v) in map {
                let path = || cfg.path(&format!("headers.{k}"));
                let v = v.as_str().ok_or_else(|| GraderError::Config {
                    path: path(),
                    message: "must be a string".into(),
                })?;
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| GraderError::Config {
                    path: path(),
                    message: format!("invalid header name {k:?}"),
                })?;
                HeaderValue::from_str(v).map_err(|_| GraderError::Config {
                    path: path(),
                    message: "invalid header value".into(),
                })?;
                headers.push((k.clone(), v.to_owned()));
            }
        }
        let rate = match cfg.opt_f64("rate_limit")? {
            None => None,
            Some(r) if r > 0.0 && r.is_finite() => {
                Some((Duration::from_secs_f64(1.0 / r), Mutex::new(Instant::now())))
            }
            Some(_) => {
                return Err(cfg.err(
                    "rate_limit",
                    "must be a positive number of requests per second",
                ))
            }
        };
        Ok(Self {
            url: url.to_owned(),
            headers,
            http: Http::new(options.endpoint_timeout),
            rate,
        })
    }

    fn wait_for_slot(&self) {
        if let Some((spacing, next)) = &self.rate {
            let wait = {
                let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let slot = (*next).max(now);
                *next = slot + *spacing;
                slot - now
            };
            if !wait.is_zero() {
                // Graders are synchronous and run on blocking threads
                // (`spawn_blocking` in the reward server and the eval, the
                // trainer's own thread), never on a runtime worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(wait);
            }
        }
    }

    pub fn score_batch(&self, ctxs: &[Value]) -> Vec<Scored> {
        let mut results: Vec<Option<Scored>> = vec![None; ctxs.len()];
        let mut entries = Vec::new();
        let mut ids: Vec<(usize, String)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, ctx) in ctxs.iter().enumerate() {
            match request_entry(ctx) {
                Ok((item_id, mut entry)) => {
                    let n = seen.entry(item_id.clone()).or_default();
                    *n += 1;
                    let id = if *n == 1 {
                        item_id
                    } else {
                        format!("{item_id}#{n}")
                    };
                    entry.insert("id".into(), json!(id));
                    entries.push(Value::Object(entry));
                    ids.push((i, id));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !entries.is_empty() {
            match self.call(&Value::Array(entries)) {
                Err(e) => {
                    for (i, _) in &ids {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
                Ok(by_id) => {
                    for (i, id) in &ids {
                        results[*i] = Some(match by_id.get(id) {
                            None => Err(format!("endpoint reply has no entry for id {id:?}")),
                            Some(entry) => read_entry(entry),
                        });
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("no result".into())))
            .collect()
    }

    /// One POST; the reply's entries by id (the first of duplicates).
    fn call(&self, body: &Value) -> Result<HashMap<String, Value>, String> {
        self.wait_for_slot();
        let reply = self
            .http
            .post_json(&self.url, &self.headers, None, body)
            .map_err(|e| format!("endpoint: {e}"))?;
        if !reply.ok() {
            return Err(reply.status_error("endpoint"));
        }
        let value: Value = serde_json::from_str(&reply.body).map_err(|e| {
            format!(
                "endpoint reply is not JSON ({e}): {}",
                snippet(&reply.body, 200)
            )
        })?;
        let Value::Array(list) = value else {
            return Err(format!(
                "endpoint reply is not a JSON array: {}",
                snippet(&reply.body, 200)
            ));
        };
        let mut by_id = HashMap::new();
        for entry in list {
            let id = match entry.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Number(_)) => v.to_string(),
                _ => continue,
            };
            by_id.entry(id).or_insert(entry);
        }
        Ok(by_id)
    }
}

/// The item's id and the request entry (without `id`) for one sample.
fn request_entry(ctx: &Value) -> Result<(String, Map<String, Value>), String> {
    let item: Item = serde_json::from_value(ctx.get("item").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("the item is not a chat item: {e}"))?;
    let sample = ctx.get("sample").unwrap_or(&Value::Null);
    let mut answer = json!({
        "role": "assistant",
        "content": sample.get("output_text").and_then(Value::as_str).unwrap_or_default(),
    });
    if let Some(Value::Array(tools)) = sample.get("output_tools") {
        if !tools.is_empty() {
            answer["tool_calls"] = Value::Array(tools.clone());
        }
    }
    let mut messages: Vec<Value> = item
        .prompt()
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect();
    messages.push(answer);
    let mut entry = Map::new();
    entry.insert("messages".into(), Value::Array(messages));
    if let Some(r) = &item.reference_answer {
        entry.insert("reference_answer".into(), r.clone());
    }
    for (k, v) in &item.extra {
        if !matches!(k.as_str(), "id" | "messages" | "reference_answer") {
            entry.insert(k.clone(), v.clone());
        }
    }
    Ok((item.id(), entry))
}

fn read_entry(entry: &Value) -> Scored {
    if let Some(e) = entry.get("error").and_then(Value::as_str) {
        return Err(format!("endpoint could not grade the sample: {e}"));
    }
    let score = match entry.get("aggregate_reward_score") {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("aggregate_reward_score is not a number: {v}"))?,
        None => return Err("endpoint reply entry has no aggregate_reward_score".into()),
    };
    let metrics = match entry.get("metrics_list") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|m| {
                let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
                match m.get("value") {
                    Some(Value::String(s)) => format!("{name}={s}"),
                    Some(v) => format!("{name}={v}"),
                    None => format!("{name}=?"),
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    Ok((score, metrics))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };

    use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
    use serde_json::{json, Value};

    use crate::{
        grader::{
            testutil::{closed_port, Server},
            Grader, GraderError, GraderOptions,
        },
        item::{Item, Message, Sample},
    };

    #[derive(Default)]
    struct Lambda {
        requests: AtomicUsize,
        bodies: Mutex<Vec<Value>>,
        auth: Mutex<Option<String>>,
    }

    /// A reward function: 1 when the answer equals the reference; the
    /// answer `skip` gets no entry, `nonnum` a string score, `fail` makes
    /// the whole request a 500.
    async fn lambda(
        State(state): State<Arc<Lambda>>,
        headers: axum::http::HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        state.requests.fetch_add(1, Ordering::SeqCst);
        state.bodies.lock().unwrap().push(body.clone());
        *state.auth.lock().unwrap() = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut out = Vec::new();
        for entry in body.as_array().unwrap() {
            let answer = entry["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_owned();
            if answer == "fail" {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "boom"})),
                );
            }
            if answer == "skip" {
                continue;
            }
            let score = if answer == "nonnum" {
                json!("high")
            } else {
                json!(
                    if Some(answer.as_str()) == entry["reference_answer"].as_str() {
                        1.0
                    } else {
                        0.0
                    }
                )
            };
            out.push(json!({
                "id": entry["id"],
                "aggregate_reward_score": score,
                "metrics_list": [{"name": "exact", "value": score, "type": "Metric"}, {"name": "len", "value": answer.len(), "type": "Metric"}]
            }));
        }
        out.reverse(); // matched by id, not by position
        (StatusCode::OK, Json(Value::Array(out)))
    }

    fn start() -> (Server, Arc<Lambda>) {
        let state = Arc::new(Lambda::default());
        let app = Router::new()
            .route("/reward", post(lambda))
            .with_state(state.clone());
        (Server::start(app), state)
    }

    fn item(id: &str, reference: &str) -> Item {
        let mut item = Item::new(
            vec![
                Message::new("system", "be brief"),
                Message::new("user", "2+2?"),
            ],
            Some(json!(reference)),
        );
        item.extra.insert("id".into(), json!(id));
        item.extra.insert("task".into(), json!("arithmetic"));
        item
    }

    fn grader(url: &str) -> Grader {
        Grader::from_config(&json!({"type": "endpoint", "name": "lambda", "url": url, "headers": {"x-api-key": "abc"}, "pass_threshold": 0.5}))
            .unwrap()
    }

    #[test]
    fn one_request_per_batch_matched_by_id() {
        let (server, state) = start();
        let g = grader(&server.url("/reward"));
        let pairs = vec![
            (Sample::from_text("4"), item("a", "4")),
            (Sample::from_text("5"), item("b", "4")),
            (Sample::from_text("4"), item("a", "4")),
        ];
        let results = g.grade_batch(&pairs);
        assert_eq!(state.requests.load(Ordering::SeqCst), 1);
        let grades: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            grades
                .iter()
                .map(|g| (g.score, g.passed))
                .collect::<Vec<_>>(),
            vec![(1.0, true), (0.0, false), (1.0, true)]
        );
        assert_eq!(grades[0].reason, "exact=1.0, len=1");
        // The request: prompt + the sample as the assistant's answer,
        // reference_answer and the item's other fields; duplicate ids made unique.
        let body = state.bodies.lock().unwrap()[0].clone();
        assert_eq!(body[0]["id"], "a");
        assert_eq!(body[1]["id"], "b");
        assert_eq!(body[2]["id"], "a#2");
        assert_eq!(
            body[1]["messages"],
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}])
        );
        assert_eq!(
            (&body[1]["reference_answer"], &body[1]["task"]),
            (&json!("4"), &json!("arithmetic"))
        );
        assert_eq!(state.auth.lock().unwrap().as_deref(), Some("abc"));
        // A single grade is a batch of one.
        assert_eq!(
            g.grade(&Sample::from_text("4"), &item("c", "4"))
                .unwrap()
                .score,
            1.0
        );
        assert_eq!(state.requests.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn missing_ids_and_non_numeric_scores_are_errors_for_that_sample() {
        let (server, _) = start();
        let g = grader(&server.url("/reward"));
        let pairs = vec![
            (Sample::from_text("skip"), item("a", "4")),
            (Sample::from_text("nonnum"), item("b", "4")),
            (Sample::from_text("4"), item("c", "4")),
        ];
        let r = g.grade_batch(&pairs);
        let e = r[0].as_ref().unwrap_err();
        assert!(
            matches!(e, GraderError::Grading { .. })
                && e.to_string().contains("no entry for id \"a\""),
            "{e}"
        );
        let e = r[1].as_ref().unwrap_err();
        assert!(
            e.to_string()
                .contains("aggregate_reward_score is not a number"),
            "{e}"
        );
        assert_eq!(r[2].as_ref().unwrap().score, 1.0);
    }

    #[test]
    fn transport_errors_fail_every_sample() {
        let (server, _) = start();
        let g = grader(&server.url("/reward"));
        let pairs = vec![
            (Sample::from_text("4"), item("a", "4")),
            (Sample::from_text("fail"), item("b", "4")),
        ];
        for r in g.grade_batch(&pairs) {
            assert!(
                r.as_ref().unwrap_err().to_string().contains("HTTP 500"),
                "{r:?}"
            );
        }
        let g = grader(&server.url("/nowhere"));
        assert!(g
            .grade(&Sample::from_text("4"), &item("a", "4"))
            .unwrap_err()
            .to_string()
            .contains("HTTP 404"));
        let g = grader(&format!("http://127.0.0.1:{}/", closed_port()));
        let e = g
            .grade(&Sample::from_text("4"), &item("a", "4"))
            .unwrap_err();
        assert!(matches!(e, GraderError::Grading { .. }), "{e}");
    }

    #[test]
    fn rate_limit_spaces_requests() {
        let (server, state) = start();
        let g = Grader::from_config(&json!({"type": "endpoint", "name": "l", "url": server.url("/reward"), "rate_limit": 10})).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..4 {
            g.grade(&Sample::from_text("4"), &item("a", "4")).unwrap();
        }
        assert!(
            start.elapsed() >= std::time::Duration::from_millis(290),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(state.requests.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn config_is_validated_strictly() {
        for (c, path) in [
            (json!({"type": "endpoint", "name": "e"}), "$.url"),
            (
                json!({"type": "endpoint", "name": "e", "url": "not a url"}),
                "$.url",
            ),
            (
                json!({"type": "endpoint", "name": "e", "url": "ftp://x/"}),
                "$.url",
            ),
            (
                json!({"type": "endpoint", "name": "e", "url": "http://x/", "headers": {"a b": "c"}}),
                "$.headers.a b",
            ),
            (
                json!({"type": "endpoint", "name": "e", "url": "http://x/", "headers": {"k": 1}}),
                "$.headers.k",
            ),
            (
                json!({"type": "endpoint", "name": "e", "url": "http://x/", "headers": "k"}),
                "$.headers",
            ),
            (
                json!({"type": "endpoint", "name": "e", "url": "http://x/", "rate_limit": 0}),
                "$.rate_limit",
            ),
            (
                json!({"type": "endpoint", "name": "e", "url": "http://x/", "timeout": 3}),
                "$.timeout",
            ),
        ] {
            let e = Grader::from_config_with(&c, &GraderOptions::default()).unwrap_err();
            assert!(
                matches!(&e, GraderError::Config { path: p, .. } if p == path),
                "{c}: {e}"
            );
        }
    }
}
