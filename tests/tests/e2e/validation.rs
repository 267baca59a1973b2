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
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&schema_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = r.json().await.unwrap();
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"name": "Alice", "age": 31}));
    let e = event_for(&gw, &id);
    let attempts = e["attempts"].as_array().unwrap();
    // validation_retries = 1: two tries on the sloppy target, then the fallback.
    assert_eq!(attempts.len(), 3);
    for a in &attempts[..2] {
        assert_eq!(a["outcome"], "validation_failed");
        assert!(
            a["reason"].as_str().unwrap().contains("not valid JSON"),
            "{a}"
        );
    }
    assert_eq!(attempts[2]["outcome"], "ok");
    assert_eq!(e["validation"], "passed");
    assert_eq!(e["fallback_depth"], 1);
    assert_eq!(
        mock_stats(&mock).await["scenarios"]["sloppy"]["requests"],
        2
    );
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The response headers carry what the whole chain cost: attempts, the
/// fallback depth, tokens billed by every attempt (failed ones included)
/// and the USD cost with the per-second price of a self-hosted provider.
/// With `forward_response_format = false` the sloppy provider never sees
/// the schema, yet the gateway still validates its answers.
#[tokio::test]
async fn totals_headers_and_unforwarded_response_format() {
    let mock = start_mock(&[]);
    let cfg = config(&mock)
        .replace(
            "[providers.careful]\n",
            "[providers.careful]\nprice_per_second = 50.0\n",
        )
        .replace(
            "[providers.sloppy]\n",
            "[providers.sloppy]\nforward_response_format = false\n",
        );
    let gw = start_gateway(&cfg);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&schema_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-flywheel-attempts"), "3");
    assert_eq!(header(&r, "x-flywheel-retries"), "2");
    assert_eq!(header(&r, "x-flywheel-fallback-depth"), "1");
    let id = header(&r, "x-flywheel-request-id").to_owned();
    let prompt: u64 = header(&r, "x-flywheel-prompt-tokens").parse().unwrap();
    let completion: u64 = header(&r, "x-flywheel-completion-tokens").parse().unwrap();
    let cost: f64 = header(&r, "x-flywheel-cost-usd").parse().unwrap();
    let e = event_for(&gw, &id);
    let attempts = e["attempts"].as_array().unwrap();
    let sum = |k: &str| attempts.iter().map(|a| a[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(prompt, sum("prompt_tokens"));
    assert_eq!(completion, sum("completion_tokens"));
    assert!(
        prompt > e["prompt_tokens"].as_u64().unwrap(),
        "failed attempts are billed too"
    );
    assert!(
        (cost - e["cost_usd"].as_f64().unwrap()).abs() < 1e-8,
        "{cost} vs {e}"
    );
    let last = &attempts[2];
    let tokens_only = (last["prompt_tokens"].as_f64().unwrap() * 1.0
        + last["completion_tokens"].as_f64().unwrap() * 2.0)
        / 1e6;
    let compute = last["latency_ms"].as_f64().unwrap() / 1000.0 * 50.0;
    assert!(
        (last["cost_usd"].as_f64().unwrap() - tokens_only - compute).abs() < 1e-6,
        "{last}"
    );
    let stats = mock_stats(&mock).await;
    let sent = |scenario: &str| stats["scenarios"][scenario]["last_body"].clone();
    assert!(
        sent("sloppy").get("response_format").is_none(),
        "{}",
        sent("sloppy")
    );
    assert!(sent("careful").get("response_format").is_some());

    // An exhausted chain reports its totals on the error too.
    let cfg = format!(
        "{}\n[[routes]]\nname = \"extract\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"wrong\", model = \"m\" }}]\n",
        mock_provider("wrong", &mock, &[("x-mock-text", "not json")])
    );
    let gw = start_gateway(&cfg);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&schema_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "x-flywheel-attempts"), "2");
    assert!(header(&r, "x-flywheel-cost-usd").parse::<f64>().unwrap() > 0.0);
}

#[tokio::test]
async fn schema_mismatch_is_a_validation_failure() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "{}\n[[routes]]\nname = \"extract\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"wrong\", model = \"m\" }}]\n",
        mock_provider("wrong", &mock, &[("x-mock-text", "{\"name\": \"Alice\", \"age\": \"thirty\"}")])
    );
    let gw = start_gateway(&cfg);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&schema_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let id = r.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = r.json().await.unwrap();
    let attempts = body["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    // The client sees the outcomes; the reasons are in the event only.
    assert!(attempts
        .iter()
        .all(|a| a["outcome"] == "validation_failed" && a.get("reason").is_none()));
    let e = event_for(&gw, &id);
    let attempts = e["attempts"].as_array().unwrap();
    assert!(attempts.iter().all(|a| a["reason"]
        .as_str()
        .unwrap()
        .contains("does not match the schema")));
}

#[tokio::test]
async fn streamed_answers_are_validated_before_sending() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&schema_request(true))
        .send()
        .await
        .unwrap();
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
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "response_format.json_schema.schema");
}
