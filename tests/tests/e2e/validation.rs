//! Content-based retry: answers that fail `response_format` validation are
//! retried, then the fallback chain is used; the client gets the first
//! valid answer.

use flywheel_tests::*;
use serde_json::{json, Value};

fn schema_request(stream: bool) -> Value {
    json!({
        "model": "extract",
        "stream": stream,
        "messages": [{"role": "user", "content": "Alice is 31. Return JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
            "type": "object", "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}
        }}}
    })
}

fn config(mock: &Proc) -> String {
    format!(
        "{}{}\n[[routes]]\nname = \"extract\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"sloppy\", model = \"small\" }}, {{ provider = \"careful\", model = \"big\" }}]\n",
        mock_provider("sloppy", mock, &[("x-mock-json-valid-ratio", "0"), ("x-mock-scenario", "sloppy")]),
        mock_provider("careful", mock, &[("x-mock-json-valid-ratio", "1"), ("x-mock-scenario", "careful")]),
    )
}

#[tokio::test]
async fn invalid_json_is_retried_then_falls_back() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&schema_request(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-flywheel-request-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let content: Value = serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"name": "Alice", "age": 31}));
    let e = event_for(&gw, &id);
    let attempts = e["attempts"].as_array().unwrap();
    // validation_retries = 1: two tries on the sloppy target, then the fallback.
    assert_eq!(attempts.len(), 3);
    for a in &attempts[..2] {
        assert_eq!(a["outcome"], "validation_failed");
        assert!(a["reason"].as_str().unwrap().contains("not valid JSON"), "{a}");
    }
    assert_eq!(attempts[2]["outcome"], "ok");
    assert_eq!(e["validation"], "passed");
    assert_eq!(e["fallback_depth"], 1);
    assert_eq!(mock_stats(&mock).await["scenarios"]["sloppy"]["requests"], 2);
}

#[tokio::test]
async fn schema_mismatch_is_a_validation_failure() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "{}\n[[routes]]\nname = \"extract\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"wrong\", model = \"m\" }}]\n",
        mock_provider("wrong", &mock, &[("x-mock-text", "{\"name\": \"Alice\", \"age\": \"thirty\"}")])
    );
    let gw = start_gateway(&cfg);
    let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&schema_request(false)).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    let attempts = body["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a["outcome"] == "validation_failed"
        && a["reason"].as_str().unwrap().contains("does not match the schema")));
}

#[tokio::test]
async fn streamed_answers_are_validated_before_sending() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&schema_request(true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text = stream_text(&data);
    let content: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(content, json!({"name": "Alice", "age": 31}));
    // Exactly one role chunk: the invalid attempts never reached the client.
    let roles = data.iter().filter(|d| d.contains("\"role\"")).count();
    assert_eq!(roles, 1, "{data:?}");
}

#[tokio::test]
async fn invalid_schema_in_request_is_400() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let mut req = schema_request(false);
    req["response_format"]["json_schema"]["schema"] = json!({"type": "no-such-type"});
    let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&req).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "response_format.json_schema.schema");
}
