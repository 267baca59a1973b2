//! The OpenAI surface: chat (plain and streamed), completions, embeddings,
//! models, metering headers and `/metrics`.

use flywheel_tests::*;
use serde_json::{json, Value};

const TEXT: &str = "Hello! This is the mock provider answering your request.";

fn config(mock: &Proc) -> String {
    format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"base\"\ntargets = [{{ provider = \"mock\", model = \"mock-model\" }}]\n",
        mock_provider("mock", mock, &[])
    )
}

#[tokio::test]
async fn chat_non_streaming_is_metered() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-flywheel-episode-id", "ep-1")
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi there"}], "user": "u1", "temperature": 0.2, "seed": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.headers()["x-flywheel-variant"], "base");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["model"], "chat");
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    let usage = &body["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);

    // The upstream got the target's model and the client's other fields.
    let stats = mock_stats(&mock).await;
    let sent = &stats["scenarios"][""]["last_body"];
    assert_eq!(sent["model"], "mock-model");
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["user"], "u1");

    let e = event_for(&gw, &id);
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["route"], "chat");
    assert_eq!(e["variant"], "base");
    assert_eq!(e["provider"], "mock");
    assert_eq!(e["episode_id"], "ep-1");
    assert_eq!(e["user"], "u1");
    assert_eq!(e["status"], 200);
    assert_eq!(e["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(e["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(e["tokens_estimated"], false);
    assert_eq!(e["retries"], 0);
    // Prices are $1/M prompt and $2/M completion tokens.
    let expected = (usage["prompt_tokens"].as_f64().unwrap()
        + 2.0 * usage["completion_tokens"].as_f64().unwrap())
        / 1e6;
    assert!((e["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12);
    let overhead = e["overhead_ms"].as_f64().unwrap();
    assert!(overhead >= 0.0 && overhead <= e["latency_ms"].as_f64().unwrap());
    assert_eq!(e["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let mut body = chat("chat", "stream please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let id = response.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(stream_text(&data), TEXT);
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_eq!(chunk["id"], id.as_str());
        assert_eq!(chunk["model"], "chat");
    }
    let e = event_for(&gw, &id);
    assert_eq!(e["stream"], true);
    assert!(e["ttft_ms"].as_f64().is_some());
    assert_eq!(
        e["completion_tokens"],
        usage_chunk["usage"]["completion_tokens"]
    );
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_chunk() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let mut body = chat("chat", "stream please");
    body["stream"] = json!(true);
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let data = sse_data(&response.text().await.unwrap());
    assert!(data.iter().all(|d| !d.contains("\"usage\"")), "{data:?}");
    // The gateway still metered real usage: it asked the upstream for it.
    let e = event_for(&gw, &id);
    assert_eq!(e["tokens_estimated"], false);
    assert!(e["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn missing_upstream_usage_is_estimated_and_marked() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"base\"\ntargets = [{{ provider = \"nousage\", model = \"m\" }}]\n",
        mock_provider("nousage", &mock, &[("x-mock-no-usage", "1")])
    );
    let gw = start_gateway(&cfg);
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat("chat", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let e = event_for(&gw, &id);
    assert_eq!(e["tokens_estimated"], true);
    assert_eq!(
        e["completion_tokens"].as_u64().unwrap(),
        (TEXT.len() as u64).div_ceil(4)
    );
}

#[tokio::test]
async fn completions_embeddings_and_models() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let c = client();
    let r = c
        .post(gw.url("/v1/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat", "prompt": "Once upon", "max_tokens": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    let r = c
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["model"], "chat");

    let r = c
        .get(gw.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["id"], "chat");
}

#[tokio::test]
async fn tools_and_n_pass_through() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let body = json!({
        "model": "chat", "n": 2,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required"
    });
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn metrics_reflect_traffic() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    for _ in 0..3 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat("chat", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // It names tenants and costs: not for anyone without the admin token
    // (the config has one), a tenant's key included.
    for key in [None, Some(KEY)] {
        let mut r = client().get(gw.url("/metrics"));
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        assert_eq!(r.send().await.unwrap().status(), 401, "{key:?}");
    }
    let text = metrics_text(&gw).await;
    for needle in [
        "flywheel_requests_total{route=\"chat\",status=\"200\",variant=\"base\"} 3",
        "flywheel_attempts_total{outcome=\"ok\",provider=\"mock\"} 3",
        "flywheel_request_latency_seconds_count{route=\"chat\",variant=\"base\"} 3",
        "flywheel_gateway_overhead_seconds_bucket",
        "flywheel_tokens_total{kind=\"completion\",route=\"chat\",variant=\"base\"}",
        "flywheel_cost_usd_total{route=\"chat\",variant=\"base\"}",
        "flywheel_circuit_state{provider=\"mock\"} 0",
        "flywheel_http_requests_total{path=\"/v1/chat/completions\",status=\"200\"} 3",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}
