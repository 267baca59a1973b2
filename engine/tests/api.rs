//! The OpenAI-compatible API on the real SmolLM2 (F32 HF directory), through the real binary.

mod common;

use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

/// One engine (no admin token) shared by the tests of this file.
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let dir = smollm2_dir();
        Engine::spawn(&["--model", dir.to_str().unwrap(), "--name", "base"], &[])
    })
}

fn france(extra: Value) -> Value {
    let mut body = json!({
        "model": "base",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 24,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_greedy_answers_paris() {
    let http = engine().client();
    let (status, v) = http.post("/v1/chat/completions", &france(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let text = content(&v);
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "base");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // Greedy is deterministic.
    let (_, v2) = http.post("/v1/chat/completions", &france(json!({}))).await;
    assert_eq!(content(&v2), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_ends_with_usage_then_done() {
    let http = engine().client();
    let body = france(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, reader) = http.post_stream("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    let events = reader.collect().await;
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    let text = chat_stream_text(&events);
    assert!(text.contains("Paris"), "streamed: {text:?}");
    // The streamed text equals the non-streamed greedy answer.
    let (_, v) = http.post("/v1/chat/completions", &france(json!({}))).await;
    assert_eq!(text, content(&v));
}

/// Concurrent requests get the answers they get alone, decoded together in one
/// batch. mistral.rs 0.8.1's CPU decode kernel gave every sequence of a batch
/// the attention output of the batch's last sequence (a haiku's answer
/// contained another request's JSON); `vendor/PATCHES.md` has the fix. Short
/// prompts of equal and of different lengths and two long ones (several
/// hundred tokens, so many KV tiles), greedy, sent together several rounds in
/// a different order each time so that each request takes other places in
/// the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers() {
    const ROUNDS: usize = 5;
    // Its own engine, batched explicitly whatever the default.
    let dir = smollm2_dir();
    let engine = Engine::spawn(
        &[
            "--model",
            dir.to_str().unwrap(),
            "--name",
            "base",
            "--max-seqs",
            "32",
        ],
        &[],
    );
    let http = engine.client();
    let ask = |content: &str, format: Value| {
        let mut body = json!({
            "model": "base",
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": 32,
        });
        if !format.is_null() {
            body["response_format"] = format;
        }
        body
    };
    let long = |subject: &str| {
        let facts: String = (1..=40)
            .map(|i| format!("Fact {i}: {subject} number {i} lives in zone {}.\n", i % 13))
            .collect();
        format!("{facts}In which zone does {subject} number 17 live?")
    };
    let json_object = json!({"type": "json_object"});
    let bodies = [
        ask("What is the capital of France?", Value::Null),
        ask("What is the capital of Spain?", Value::Null),
        ask("What is the capital of Italy?", Value::Null),
        ask("Write a haiku about the sea.", Value::Null),
        ask(
            "Extract the name and age as JSON: 'Alice is 31 years old.'",
            json_object.clone(),
        ),
        ask("Give me a JSON object describing a cat.", json_object),
        ask(&long("cat"), Value::Null),
        ask(&long("dog"), Value::Null),
    ];
    let n = bodies.len();
    let mut alone = Vec::new();
    for b in &bodies {
        let (status, v) = http.post("/v1/chat/completions", b).await;
        assert_eq!(status, 200, "{v}");
        alone.push(content(&v));
        if b["messages"][0]["content"].as_str().unwrap().len() > 1000 {
            let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
            assert!(prompt_tokens > 400, "long prompt of {prompt_tokens} tokens");
        }
    }
    let mut differ = Vec::new();
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..n).map(|i| (i + 3 * round) % n).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let together = futures_util::future::join_all(order.iter().map(|&i| {
            let http = http.clone();
            let body = &bodies[i];
            async move { (i, http.post("/v1/chat/completions", body).await) }
        }))
        .await;
        for (i, (status, v)) in together {
            assert_eq!(status, 200, "{v}");
            let text = content(&v);
            if text != alone[i] {
                differ.push(format!(
                    "round {round}, request {i}: {text:?} (alone: {:?})",
                    alone[i]
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} concurrent answers differ from the ones given alone:\n{}",
        differ.len(),
        ROUNDS * n,
        differ.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_output_validates() {
    let http = engine().client();
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let body = json!({
        "model": "base",
        "messages": [{"role": "user", "content": "Extract the name and age as JSON with keys name and age: 'Alice is 31 years old.'"}],
        "temperature": 0,
        "max_tokens": 48,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}
    });
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let text = content(&v);
    let parsed: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&parsed), "{parsed} does not validate");

    // json_object: any JSON object.
    let body = json!({
        "model": "base",
        "messages": [{"role": "user", "content": "Give me a JSON object describing a cat."}],
        "temperature": 0,
        "max_tokens": 48,
        "response_format": {"type": "json_object"}
    });
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let text = content(&v);
    if v["choices"][0]["finish_reason"] == "stop" {
        let parsed: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert!(parsed.is_object());
    } else {
        assert!(text.trim_start().starts_with('{'), "{text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assistant_prefix_continues() {
    let http = engine().client();
    // The full greedy answer, then resume from a cut of it: the continuation must complete
    // the same text (greedy, same tokens as context).
    let (_, v) = http.post("/v1/chat/completions", &france(json!({}))).await;
    let full = content(&v);
    let cut = "The capital of France";
    assert!(full.starts_with(cut), "unexpected greedy answer {full:?}");
    let body = json!({
        "model": "base",
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": cut}
        ],
        "temperature": 0,
        "max_tokens": 24,
    });
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let rest = content(&v);
    assert!(
        !rest.starts_with(cut),
        "continuation repeated the prefix: {rest:?}"
    );
    let joined = format!("{cut}{rest}");
    assert!(joined.contains("Paris"), "continued: {joined:?}");
    assert!(
        full.starts_with(joined.trim_end()) || joined.starts_with(full.trim_end()),
        "full {full:?} vs resumed {joined:?}"
    );

    // Streaming continuation also works and ends with usage + [DONE].
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (status, reader) = http.post_stream("/v1/chat/completions", &sbody).await;
    assert_eq!(status, 200);
    let events = reader.collect().await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(chat_stream_text(&events), rest);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap() > 5,
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_and_models() {
    let http = engine().client();
    let (status, v) = http
        .post("/v1/completions", &json!({"model": "base", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 8}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty(), "{v}");

    let (status, v) = http.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["id"], "base", "{v}");
    let (status, v) = http.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_openai_style() {
    let http = engine().client();
    // Unknown model → 404.
    let (status, v) = http
        .post("/v1/chat/completions", &france(json!({"model": "nope"})))
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    // Malformed body → 400.
    let (status, v) = http
        .post("/v1/chat/completions", &json!({"model": "base"}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    // n > 1 with streaming → 400.
    let (status, v) = http
        .post(
            "/v1/chat/completions",
            &france(json!({"n": 2, "stream": true})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "n");
    // Bad temperature → 400.
    let (status, _) = http
        .post("/v1/chat/completions", &france(json!({"temperature": 7})))
        .await;
    assert_eq!(status, 400);
    // No admin token configured → the admin routes do not exist.
    let (status, v) = http.get("/admin/models").await;
    assert_eq!(status, 404, "{v}");
    let (status, _) = http
        .send(
            hyper::Method::POST,
            "/admin/models",
            Some(&json!({"name": "x", "path": "/tmp"})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_options_are_accepted() {
    let http = engine().client();
    let body = france(
        json!({"temperature": 0.7, "top_p": 0.9, "seed": 7, "stop": ["\n"], "max_completion_tokens": 12}),
    );
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert!(!content(&v).contains('\n'), "{v}");
    // n = 2 (non-streaming).
    let (status, v) = http
        .post(
            "/v1/chat/completions",
            &france(json!({"n": 2, "temperature": 0.8, "max_tokens": 8})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2, "{v}");
    // Tools are accepted.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let body = json!({"model": "base", "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": tools, "temperature": 0, "max_tokens": 32});
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
}

#[test]
fn serve_with_missing_model_dir_fails_clearly() {
    let out = std::process::Command::new(engine_bin())
        .args(["serve", "--model", "/nope/does-not-exist"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nope/does-not-exist") && stderr.contains("does not exist"),
        "stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
