//! Pinning a route's variant per request with `x-flywheel-variant`, as the
//! tuner's offline eval does: only keys with `pin_variants = true` may, a
//! weight-0 variant can be pinned, and the request is metered and captured
//! like live traffic.

use flywheel_tests::*;
use serde_json::{json, Value};

/// A key with `pin_variants = true`, for tenant `tuner`.
const TRUSTED_KEY: &str = "sk-test-tuner";

/// Route `chat`: `base` takes all the weight; `cand` (weight 0) answers
/// with model `cand`; `chain` (weight 0) is a fallback chain whose first
/// provider always fails with 503.
fn routes(mock: &Proc) -> String {
    format!(
        "{}{}\n[[routes]]\nname = \"chat\"\n\
         [[routes.variants]]\nname = \"base\"\nweight = 100\ntargets = [{{ provider = \"mock\", model = \"base\" }}]\n\
         [[routes.variants]]\nname = \"cand\"\nweight = 0\ntargets = [{{ provider = \"mock\", model = \"cand\" }}]\n\
         [[routes.variants]]\nname = \"chain\"\nweight = 0\ntargets = [{{ provider = \"down\", model = \"small\" }}, {{ provider = \"mock\", model = \"big\" }}]\n",
        mock_provider("mock", mock, &[]),
        mock_provider(
            "down",
            mock,
            &[
                ("x-mock-error-rate", "1"),
                ("x-mock-error-status", "503"),
                ("x-mock-scenario", "down")
            ]
        ),
    )
}

/// The test preamble's keys plus [`TRUSTED_KEY`], and the routes.
fn config(mock: &Proc) -> String {
    format!(
        "[[auth.keys]]\ntenant = \"tuner\"\nsha256 = \"{}\"\npin_variants = true\n\n{}",
        sha256_hex(TRUSTED_KEY),
        routes(mock)
    )
}

async fn post(gw: &Proc, key: &str, variant: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body);
    if let Some(variant) = variant {
        request = request.header("x-flywheel-variant", variant);
    }
    request.send().await.unwrap()
}

fn header<'r>(r: &'r reqwest::Response, name: &str) -> &'r str {
    r.headers()[name].to_str().unwrap()
}

#[tokio::test]
async fn a_trusted_key_can_pin_a_weight_zero_variant() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    // Sticky keys that weights send to `base` are served by the pinned
    // variant instead.
    for user in ["u1", "u2", "u3"] {
        let mut body = chat("chat", "held-out prompt");
        body["user"] = json!(user);
        let r = post(&gw, TRUSTED_KEY, None, &body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-flywheel-variant"), "base");

        let r = post(&gw, TRUSTED_KEY, Some("cand"), &body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-flywheel-variant"), "cand");
        assert_eq!(header(&r, "x-flywheel-model"), "cand");
        let id = header(&r, "x-flywheel-request-id").to_owned();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["model"], "chat", "the client sees the route");
        let e = event_for(&gw, &id);
        assert_eq!(e["tenant"], "tuner");
        assert_eq!(e["route"], "chat");
        assert_eq!(e["variant"], "cand");
        assert_eq!(e["user"], user);
        // Served, not mirrored (the JSONL event leaves `shadow` out when false).
        assert_ne!(e["shadow"], true);
    }

    // A streamed request is pinned too.
    let mut body = chat("chat", "stream please");
    body["stream"] = json!(true);
    let r = post(&gw, TRUSTED_KEY, Some("cand"), &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-flywheel-variant"), "cand");
    let id = header(&r, "x-flywheel-request-id").to_owned();
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(event_for(&gw, &id)["variant"], "cand");
}

#[tokio::test]
async fn a_pinned_fallback_chain_keeps_its_retries_and_fallback() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let r = post(&gw, TRUSTED_KEY, Some("chain"), &chat("chat", "hi")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-flywheel-variant"), "chain");
    assert_eq!(header(&r, "x-flywheel-provider"), "mock");
    assert_eq!(header(&r, "x-flywheel-model"), "big");
    assert_eq!(header(&r, "x-flywheel-fallback-depth"), "1");
    // 1 try + 2 retries on the failing target, then the fallback.
    assert_eq!(header(&r, "x-flywheel-attempts"), "4");
    let id = header(&r, "x-flywheel-request-id").to_owned();
    let e = event_for(&gw, &id);
    assert_eq!(e["variant"], "chain");
    assert_eq!(e["attempts"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_key_without_pin_variants_gets_403() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let r = post(&gw, KEY, Some("cand"), &chat("chat", "hi")).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "x-flywheel-variant");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("x-flywheel-variant"), "{message}");
    // The same key without the header is served as usual.
    let r = post(&gw, KEY, None, &chat("chat", "hi")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-flywheel-variant"), "base");
    // Refused before any upstream was asked: only the second request ran.
    assert_eq!(mock_stats(&mock).await["requests"], 1);
}

#[tokio::test]
async fn an_unknown_variant_gets_400_naming_it_and_the_route() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let r = post(&gw, TRUSTED_KEY, Some("nope"), &chat("chat", "hi")).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "x-flywheel-variant");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`nope`") && message.contains("`chat`"),
        "{message}"
    );
}

#[tokio::test]
async fn anyone_may_pin_when_auth_is_disabled() {
    let mock = start_mock(&[]);
    let dir = scratch_dir("gateway");
    let config = format!(
        "[auth]\nenabled = false\n\n[metering]\nsink = \"jsonl\"\npath = \"{}\"\n\n{}",
        dir.join("events.jsonl").display(),
        routes(&mock)
    );
    let gw = start_gateway_with(&dir, &config);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-flywheel-variant", "cand")
        .json(&chat("chat", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-flywheel-variant"), "cand");
    let id = header(&r, "x-flywheel-request-id").to_owned();
    let e = event_for(&gw, &id);
    assert_eq!(
        (&e["tenant"], &e["variant"]),
        (&json!("anonymous"), &json!("cand"))
    );
}
