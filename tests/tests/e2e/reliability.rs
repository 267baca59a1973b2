//! Retries, Retry-After, fallback chains, circuit breakers, upstream errors.

use std::time::Instant;

use flywheel_tests::*;
use serde_json::Value;

fn route(name: &str, targets: &[(&str, &str)]) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|(p, m)| format!("{{ provider = \"{p}\", model = \"{m}\" }}"))
        .collect();
    format!(
        "[[routes]]\nname = \"{name}\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{}]\n",
        targets.join(", ")
    )
}

async fn post(gw: &Proc, model: &str) -> (u16, String, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat(model, "hi"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-flywheel-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, id, r.json().await.unwrap())
}

fn outcomes(event: &Value) -> Vec<String> {
    event["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn retries_429_honouring_retry_after() {
    let mock = start_mock(&[]);
    let provider = mock_provider(
        "flaky",
        &mock,
        &[
            ("x-mock-fail-first", "2"),
            ("x-mock-error-status", "429"),
            ("x-mock-retry-after", "1"),
            ("x-mock-scenario", "r429"),
        ],
    );
    let gw = start_gateway(&format!("{provider}\n{}", route("chat", &[("flaky", "m")])));
    let start = Instant::now();
    let (status, id, _) = post(&gw, "chat").await;
    assert_eq!(status, 200);
    // Two Retry-After: 1 waits, not the 5-20 ms configured backoff.
    assert!(
        start.elapsed().as_millis() >= 2000,
        "Retry-After was not honoured"
    );
    let e = event_for(&gw, &id);
    assert_eq!(outcomes(&e), ["error_status", "error_status", "ok"]);
    assert_eq!(e["attempts"][0]["status"], 429);
    assert_eq!(e["retries"], 2);
    assert_eq!(e["fallback_depth"], 0);
    assert_eq!(mock_stats(&mock).await["scenarios"]["r429"]["requests"], 3);
}

#[tokio::test]
async fn retries_500_then_succeeds() {
    let mock = start_mock(&[]);
    let provider = mock_provider(
        "flaky",
        &mock,
        &[("x-mock-fail-first", "1"), ("x-mock-scenario", "r500")],
    );
    let gw = start_gateway(&format!("{provider}\n{}", route("chat", &[("flaky", "m")])));
    let (status, id, _) = post(&gw, "chat").await;
    assert_eq!(status, 200);
    let e = event_for(&gw, &id);
    assert_eq!(outcomes(&e), ["error_status", "ok"]);
    assert_eq!(e["attempts"][0]["status"], 500);
    // Both attempts are billed.
    assert_eq!(e["attempts"][1]["try_index"], 1);
}

#[tokio::test]
async fn falls_back_after_exhausted_retries() {
    let mock = start_mock(&[]);
    let providers = format!(
        "{}{}",
        mock_provider(
            "down",
            &mock,
            &[
                ("x-mock-error-rate", "1"),
                ("x-mock-error-status", "503"),
                ("x-mock-scenario", "down")
            ]
        ),
        mock_provider("backup", &mock, &[("x-mock-scenario", "backup")])
    );
    let gw = start_gateway(&format!(
        "{providers}\n{}",
        route("chat", &[("down", "small"), ("backup", "big")])
    ));
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat("chat", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-flywheel-provider"], "backup");
    assert_eq!(r.headers()["x-flywheel-model"], "big");
    let id = r.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let e = event_for(&gw, &id);
    // 1 try + 2 retries on the first target, then the fallback.
    assert_eq!(
        outcomes(&e),
        ["error_status", "error_status", "error_status", "ok"]
    );
    assert_eq!(e["fallback_depth"], 1);
    assert_eq!(e["provider"], "backup");
    assert_eq!(e["model"], "big");
    let stats = mock_stats(&mock).await;
    assert_eq!(stats["scenarios"]["down"]["requests"], 3);
    assert_eq!(stats["scenarios"]["backup"]["last_body"]["model"], "big");
}

#[tokio::test]
async fn all_attempts_failing_is_502_listing_them() {
    let mock = start_mock(&[]);
    let provider = mock_provider("down", &mock, &[("x-mock-error-rate", "1")]);
    let gw = start_gateway(&format!("{provider}\n{}", route("chat", &[("down", "m")])));
    let (status, _, body) = post(&gw, "chat").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["type"], "upstream_error");
    let attempts = body["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts
        .iter()
        .all(|a| a["status"] == 500 && a["provider"] == "down"));
    // What the upstream said stays in the event and the log.
    assert!(!body.to_string().contains("mock injected error"), "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("request id"));
}

#[tokio::test]
async fn unreachable_upstream_is_503() {
    let mock = start_mock(&[]);
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "[providers.dead]\nbase_url = \"http://127.0.0.1:{port}/v1\"\n{}\n{}",
        mock_provider("alive", &mock, &[]),
        route("chat", &[("dead", "m")])
    );
    let gw = start_gateway(&cfg);
    let (status, _, body) = post(&gw, "chat").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["attempts"][0]["outcome"], "connect_error");
    // The connect error names the upstream's address: not for the client.
    assert!(!body.to_string().contains(&port.to_string()), "{body}");
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "{}\n{}\n[routes.retry]\nmax_retries = 0\nattempt_timeout_ms = 200\ntotal_timeout_ms = 1000\n",
        mock_provider("slow", &mock, &[("x-mock-latency-ms", "3000")]),
        route("chat", &[("slow", "m")])
    );
    let gw = start_gateway(&cfg);
    let start = Instant::now();
    let (status, _, body) = post(&gw, "chat").await;
    assert_eq!(status, 504);
    assert!(
        start.elapsed().as_millis() < 2500,
        "the attempt deadline was not enforced"
    );
    assert_eq!(body["error"]["attempts"][0]["outcome"], "timeout");
}

#[tokio::test]
async fn circuit_opens_and_skips_the_provider() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "[circuit_breaker]\nwindow = 4\nmin_requests = 4\nerror_ratio = 0.5\nopen_ms = 60000\n{}{}\n{}",
        mock_provider("down", &mock, &[("x-mock-error-rate", "1"), ("x-mock-scenario", "down")]),
        mock_provider("backup", &mock, &[]),
        route("chat", &[("down", "m"), ("backup", "m")])
    );
    let gw = start_gateway(&cfg);
    // 3 failed attempts on `down` per request: the 4th failure (second
    // request) opens the breaker.
    assert_eq!(post(&gw, "chat").await.0, 200);
    assert_eq!(post(&gw, "chat").await.0, 200);
    let before = mock_stats(&mock).await["scenarios"]["down"]["requests"]
        .as_u64()
        .unwrap();
    let (status, id, _) = post(&gw, "chat").await;
    assert_eq!(status, 200);
    let after = mock_stats(&mock).await["scenarios"]["down"]["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(before, after, "an open circuit must not send requests");
    let e = event_for(&gw, &id);
    assert_eq!(outcomes(&e), ["circuit_open", "ok"]);
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("flywheel_circuit_state{provider=\"down\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn upstream_400_is_returned_as_is() {
    let mock = start_mock(&[]);
    let provider = mock_provider(
        "p",
        &mock,
        &[("x-mock-error-rate", "1"), ("x-mock-error-status", "400")],
    );
    let gw = start_gateway(&format!(
        "{provider}\n{}",
        route("chat", &[("p", "m"), ("p", "m2")])
    ));
    let (status, _, body) = post(&gw, "chat").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "mock injected error");
    // Not retried, not fallen back: the request itself is at fault.
    assert_eq!(mock_stats(&mock).await["requests"], 1);
}
