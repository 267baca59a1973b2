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
