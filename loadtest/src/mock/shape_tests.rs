//! The mock's answers against OpenAI's published response shapes
//! (`tests/fixtures/openai-response-shapes.json`, transcribed from OpenAI's OpenAPI schema):
//! what the gateway is tested against must be what OpenAI sends.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::{handlers::handle, knobs::Knobs, state::MockState};

fn shapes() -> Value {
    // Read when the test runs (see the engine's tests/common `manifest_dir`).
    let dir: std::path::PathBuf = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into);
    let path = dir.join("../tests/fixtures/openai-response-shapes.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A validator of one shape of the fixture.
fn shape(name: &str) -> jsonschema::Validator {
    let mut schema = shapes();
    assert!(schema["$defs"][name].is_object(), "no shape {name}");
    schema["$ref"] = json!(format!("#/$defs/{name}"));
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_shape(name: &str, v: &Value) {
    let errors: Vec<String> = shape(name)
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not a valid {name}: {errors:?}\n{v}");
}

/// The mock's answer to `body` on `path`: its status and body.
async fn call(path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, String) {
    let state = Arc::new(MockState::new(Knobs::default(), 7));
    let mut req = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = handle(state, req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The JSON events of an SSE body, which must end with `[DONE]`.
fn events(body: &str) -> Vec<Value> {
    let data: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn chat_bodies() -> Vec<Value> {
    let messages = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    vec![
        json!({"model": "m", "messages": messages}),
        json!({"model": "m", "messages": messages, "n": 2, "max_tokens": 3}),
        json!({"model": "m", "messages": messages, "response_format": {"type": "json_object"}}),
        json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": "required"}),
        json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": "auto"}),
    ]
}

#[tokio::test]
async fn chat_answers_have_openai_shapes() {
    for body in chat_bodies() {
        let (status, text) = call("/v1/chat/completions", &body, &[]).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_shape("CreateChatCompletionResponse", &v);
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["message"].get("refusal"), Some(&Value::Null), "{v}");
            assert_ne!(c["message"].get("tool_calls"), Some(&Value::Null), "{v}");
        }
    }
    // A forced tool call answers with one call.
    let (_, text) = call("/v1/chat/completions", &chat_bodies()[3], &[]).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["type"],
        "function"
    );
}

#[tokio::test]
async fn chat_stream_chunks_have_openai_shapes() {
    for body in chat_bodies() {
        for include_usage in [false, true] {
            let mut body = body.clone();
            body["stream"] = json!(true);
            if include_usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            let (status, text) = call("/v1/chat/completions", &body, &[]).await;
            assert_eq!(status, 200, "{text}");
            let chunks = events(&text);
            assert!(chunks.len() >= 2, "{text}");
            for chunk in &chunks {
                assert_shape("CreateChatCompletionStreamResponse", chunk);
            }
            let last = chunks.last().unwrap();
            if include_usage {
                assert_eq!(last["choices"], json!([]), "{last}");
                assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
            } else {
                assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{text}");
            }
        }
    }
}

#[tokio::test]
async fn completions_have_openai_shapes() {
    let body = json!({"model": "m", "prompt": "Say hi", "max_tokens": 4});
    let (status, text) = call("/v1/completions", &body, &[]).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_shape("CreateCompletionResponse", &v);
    for include_usage in [false, true] {
        let mut body = body.clone();
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let (status, text) = call("/v1/completions", &body, &[]).await;
        assert_eq!(status, 200, "{text}");
        for chunk in events(&text) {
            assert_shape("CreateCompletionStreamResponse", &chunk);
        }
    }
}

/// The fixture rejects what the mock used to send (a message without `refusal`) and
/// other departures, so the tests above can fail.
#[tokio::test]
async fn the_shapes_reject_departures() {
    let (_, text) = call("/v1/chat/completions", &chat_bodies()[0], &[]).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let chat = shape("CreateChatCompletionResponse");
    assert!(chat.is_valid(&v));
    let mut no_refusal = v.clone();
    no_refusal["choices"][0]["message"]
        .as_object_mut()
        .unwrap()
        .remove("refusal");
    assert!(!chat.is_valid(&no_refusal), "{no_refusal}");
    let mut null_calls = v.clone();
    null_calls["choices"][0]["message"]["tool_calls"] = Value::Null;
    assert!(!chat.is_valid(&null_calls), "{null_calls}");
    let mut chunk_object = v.clone();
    chunk_object["object"] = json!("chat.completion.chunk");
    assert!(!chat.is_valid(&chunk_object));
    let mut bad_finish = v;
    bad_finish["choices"][0]["finish_reason"] = json!("eos");
    assert!(!chat.is_valid(&bad_finish));

    let mut body = chat_bodies()[3].clone();
    body["stream"] = json!(true);
    let (_, text) = call("/v1/chat/completions", &body, &[]).await;
    let chunks = events(&text);
    let stream = shape("CreateChatCompletionStreamResponse");
    // The tool call's argument chunk, without the index a call chunk requires.
    let mut call_chunk = chunks[1].clone();
    assert!(stream.is_valid(&call_chunk), "{call_chunk}");
    call_chunk["choices"][0]["delta"]["tool_calls"][0]
        .as_object_mut()
        .unwrap()
        .remove("index");
    assert!(!stream.is_valid(&call_chunk), "{call_chunk}");
    let mut null_calls = chunks[0].clone();
    null_calls["choices"][0]["delta"]["tool_calls"] = Value::Null;
    assert!(!stream.is_valid(&null_calls));
}
