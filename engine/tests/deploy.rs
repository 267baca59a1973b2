//! Runtime deploys: authenticated admin API, a second version, unload after draining.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::Method;
use serde_json::{json, Value};

fn chat(model: &str, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_answer_unload_while_streaming() {
    let dir = smollm2_dir();
    // A second "version": the same weights under another path (a symlinked directory).
    let tmp = std::env::temp_dir().join(format!("flywheel-engine-v2-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&dir, &tmp).unwrap();

    let hash = admin_hash();
    let engine = Engine::spawn(
        &["--model", dir.to_str().unwrap(), "--name", "base"],
        &[("FLYWHEEL_ENGINE_ADMIN_TOKEN_SHA256", hash.as_str())],
    );
    let http = engine.client();

    // Authentication.
    let (status, v) = http.send(Method::GET, "/admin/models", None, None).await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = http
        .send(Method::GET, "/admin/models", None, Some("wrong-token"))
        .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    let (status, _) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "v2", "path": tmp})),
            Some("wrong-token"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, v) = http
        .send(Method::GET, "/admin/models", None, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);

    // A bad path is refused with a 4xx naming it, and serving is untouched.
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "bad", "path": "/nope/missing-model"})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nope/missing-model"),
        "{v}"
    );
    let empty = std::env::temp_dir().join(format!("flywheel-engine-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "bad", "path": empty})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config.json"),
        "{v}"
    );
    let (status, v) = http.post("/v1/chat/completions", &chat("base", 8)).await;
    assert_eq!(status, 200, "{v}");

    // Deploy v2 at runtime and answer from it.
    let t0 = Instant::now();
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "v2", "path": tmp})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    eprintln!("deployed v2 in {:.1}s", t0.elapsed().as_secs_f64());
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "v2", "path": tmp})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    let (_, models) = http.get("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["base", "v2"]);
    let (status, v) = http.post("/v1/chat/completions", &chat("v2", 24)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "v2");
    assert!(content(&v).contains("Paris"), "{v}");

    // Unload v2 while a streaming request to it is in flight.
    let mut body = chat("v2", 64);
    body["messages"] = json!([{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, mut reader) = http.post_stream("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    let first = reader.next_event().await.expect("first event");
    assert!(first.contains("chat.completion.chunk"), "{first}");
    let stream_task = tokio::spawn(async move {
        let mut events = vec![first];
        events.extend(reader.collect().await);
        events
    });
    let h2 = http.clone();
    let delete = tokio::spawn(async move {
        h2.send(Method::DELETE, "/admin/models/v2", None, Some(ADMIN_TOKEN))
            .await
    });
    // While draining: v2 no longer takes new requests.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = http.post("/v1/chat/completions", &chat("v2", 4)).await;
    assert_eq!(status, 404, "{v}");
    let events = stream_task.await.unwrap();
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    assert!(
        events.iter().all(|e| !e.contains("\"error\"")),
        "{events:?}"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 20,
        "{usage}"
    );
    assert!(
        events.len() > 20,
        "the stream ended before the unload could overlap it"
    );
    let (status, v) = delete.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["drained"], 1, "{v}");

    // After: 404 for v2, base still serves, the list shows base only.
    let (status, v) = http.post("/v1/chat/completions", &chat("v2", 4)).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = http.post("/v1/chat/completions", &chat("base", 24)).await;
    assert_eq!(status, 200, "{v}");
    assert!(content(&v).contains("Paris"));
    let (_, v) = http
        .send(Method::GET, "/admin/models", None, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    // The last version cannot be unloaded; unknown versions are 404.
    let (status, _) = http
        .send(
            Method::DELETE,
            "/admin/models/base",
            None,
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = http
        .send(Method::DELETE, "/admin/models/v2", None, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 404);

    // The same directory can come back under a new name.
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "v3", "path": dir})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = http.post("/v1/chat/completions", &chat("v3", 8)).await;
    assert_eq!(status, 200, "{v}");

    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&empty);
}

/// `GET /admin/models` as the admin.
async fn admin_models(http: &Http) -> Value {
    let (status, v) = http
        .send(Method::GET, "/admin/models", None, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// `in_flight` of one version in `GET /admin/models`.
fn in_flight(models: &Value, name: &str) -> u64 {
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == name)
        .unwrap_or_else(|| panic!("no version {name}: {models}"))["in_flight"]
        .as_u64()
        .unwrap()
}

async fn put_alias(http: &Http, alias: &str, body: &Value) -> (hyper::StatusCode, Value) {
    http.send(
        Method::PUT,
        &format!("/admin/aliases/{alias}"),
        Some(body),
        Some(ADMIN_TOKEN),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_serves_its_version_follows_re_points_and_goes_with_an_unload() {
    let dir = smollm2_dir();
    let hash = admin_hash();
    let engine = Engine::spawn(
        &["--model", dir.to_str().unwrap(), "--name", "base"],
        &[("FLYWHEEL_ENGINE_ADMIN_TOKEN_SHA256", hash.as_str())],
    );
    let http = engine.client();

    // Refusals: no token, unknown version, a version's name, an invalid name, a bad body.
    let (status, _) = http
        .send(
            Method::PUT,
            "/admin/aliases/slot-a",
            Some(&json!({"version": "base"})),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, v) = put_alias(&http, "slot-a", &json!({"version": "v2"})).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    let (status, v) = put_alias(&http, "base", &json!({"version": "base"})).await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = put_alias(&http, &"x".repeat(65), &json!({"version": "base"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "alias", "{v}");
    let (status, v) = put_alias(&http, "slot-a", &json!({"name": "base"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(admin_models(&http).await["aliases"], json!({}));

    // A second version (the same directory under another name), aliased twice.
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "v2", "path": dir})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = put_alias(&http, "slot-a", &json!({"version": "v2"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"alias": "slot-a", "version": "v2"}));
    let (status, v) = put_alias(&http, "slot-b", &json!({"version": "v2"})).await;
    assert_eq!(status, 200, "{v}");
    // A version cannot take an alias's name.
    let (status, v) = http
        .send(
            Method::POST,
            "/admin/models",
            Some(&json!({"name": "slot-a", "path": dir})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        admin_models(&http).await["aliases"],
        json!({"slot-a": "v2", "slot-b": "v2"})
    );
    let (_, models) = http.get("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["base", "v2", "slot-a", "slot-b"]);

    // Requests via the alias are served by v2 and answered under the alias.
    let (status, v) = http.post("/v1/chat/completions", &chat("slot-a", 24)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "slot-a");
    assert!(content(&v).contains("Paris"), "{v}");
    let (status, v) = http
        .post(
            "/v1/completions",
            &json!({"model": "slot-a", "prompt": "The capital of France is", "max_tokens": 4}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "slot-a");

    // Re-pointing while a request via the alias streams: that request keeps v2 and finishes.
    let mut body = chat("slot-a", 64);
    body["messages"] = json!([{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]);
    body["stream"] = json!(true);
    let (status, mut reader) = http.post_stream("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    let first = reader.next_event().await.expect("first event");
    let chunk: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(chunk["model"], "slot-a", "{first}");
    let (status, v) = put_alias(&http, "slot-a", &json!({"version": "base"})).await;
    assert_eq!(status, 200, "{v}");
    let models = admin_models(&http).await;
    assert_eq!(models["aliases"], json!({"slot-a": "base", "slot-b": "v2"}));
    assert_eq!(in_flight(&models, "v2"), 1, "{models}");
    assert_eq!(in_flight(&models, "base"), 0, "{models}");
    let events = reader.collect().await;
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    assert!(
        events.iter().all(|e| !e.contains("\"error\"")),
        "{events:?}"
    );
    let (status, v) = http.post("/v1/chat/completions", &chat("slot-a", 8)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "slot-a");

    // Unloading v2 takes its aliases with it; the others stay.
    let (status, v) = put_alias(&http, "slot-a", &json!({"version": "v2"})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = put_alias(&http, "keep", &json!({"version": "base"})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = http
        .send(Method::DELETE, "/admin/models/v2", None, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["aliases_removed"], json!(["slot-a", "slot-b"]), "{v}");
    let (status, v) = http.post("/v1/chat/completions", &chat("slot-a", 4)).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    assert_eq!(
        admin_models(&http).await["aliases"],
        json!({"keep": "base"})
    );
    let (status, v) = http.post("/v1/chat/completions", &chat("keep", 8)).await;
    assert_eq!(status, 200, "{v}");

    // Deleting an alias.
    let (status, v) = http
        .send(
            Method::DELETE,
            "/admin/aliases/keep",
            None,
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["deleted"], true, "{v}");
    let (status, v) = http
        .send(
            Method::DELETE,
            "/admin/aliases/keep",
            None,
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = http.post("/v1/chat/completions", &chat("keep", 4)).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = http.post("/v1/chat/completions", &chat("base", 8)).await;
    assert_eq!(status, 200, "{v}");
}
