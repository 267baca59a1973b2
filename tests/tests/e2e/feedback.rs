//! `POST /v1/feedback`: declared metrics, typed values, tenant isolation,
//! idempotency; and the implicit signals (regeneration, re-ask, validation).

use flywheel_tests::*;
use serde_json::{json, Value};

fn config(mock: &Proc) -> String {
    format!(
        r#"{}
[[feedback.metrics]]
name = "thumbs_up"
type = "boolean"
[[feedback.metrics]]
name = "rating"
type = "float"
[[feedback.metrics]]
name = "note"
type = "comment"
[[feedback.metrics]]
name = "ideal"
type = "demonstration"
[[feedback.metrics]]
name = "task_success"
type = "boolean"
level = "episode"

[[routes]]
name = "chat"
[[routes.variants]]
name = "v"
targets = [{{ provider = "mock", model = "m" }}]
"#,
        mock_provider("mock", mock, &[])
    )
}

async fn infer(gw: &Proc, key: &str, body: Value, episode: Option<&str>) -> String {
    let mut r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body);
    if let Some(e) = episode {
        r = r.header("x-flywheel-episode-id", e);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn feedback(gw: &Proc, key: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(gw.url("/v1/feedback"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn feedback_is_validated_and_recorded() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let id = infer(&gw, KEY, chat("chat", "hi"), Some("ep-7")).await;

    let ok = [
        json!({"inference_id": id, "metric": "thumbs_up", "value": true, "tags": {"by": "ops"}}),
        json!({"inference_id": id, "metric": "rating", "value": 4.5}),
        json!({"inference_id": id, "metric": "note", "value": "too long"}),
        json!({"inference_id": id, "metric": "ideal", "value": "Hello."}),
        json!({"episode_id": "ep-7", "metric": "task_success", "value": false}),
    ];
    for body in &ok {
        let (status, resp) = feedback(&gw, KEY, body.clone()).await;
        assert_eq!(status, 200, "{body}: {resp}");
        assert!(resp["id"].is_string());
    }
    let bad = [
        (
            json!({"inference_id": id, "metric": "nope", "value": true}),
            400,
            "metric",
            "unknown metric",
        ),
        (
            json!({"inference_id": id, "metric": "thumbs_up", "value": "yes"}),
            400,
            "value",
            "boolean",
        ),
        (
            json!({"inference_id": id, "metric": "rating", "value": true}),
            400,
            "value",
            "number",
        ),
        (
            json!({"inference_id": id, "metric": "ideal", "value": {"role": "user", "content": "x"}}),
            400,
            "value",
            "assistant",
        ),
        (
            json!({"episode_id": "ep-7", "metric": "thumbs_up", "value": true}),
            400,
            "inference_id",
            "inference metric",
        ),
        (
            json!({"inference_id": id, "metric": "task_success", "value": true}),
            400,
            "episode_id",
            "episode metric",
        ),
        (
            json!({"inference_id": "not-a-uuid", "metric": "thumbs_up", "value": true}),
            400,
            "inference_id",
            "UUID",
        ),
        (json!({"metric": "thumbs_up"}), 400, "value", "value"),
        (
            json!({"inference_id": id, "metric": "thumbs_up", "value": true, "extra": 1}),
            400,
            ".",
            "extra",
        ),
        (
            json!({"inference_id": "0190a000-0000-7000-8000-000000000000", "metric": "thumbs_up", "value": true}),
            404,
            "",
            "does not exist",
        ),
        (
            json!({"episode_id": "ep-unknown", "metric": "task_success", "value": true}),
            404,
            "",
            "does not exist",
        ),
    ];
    for (body, status, param, needle) in bad {
        let (got, resp) = feedback(&gw, KEY, body.clone()).await;
        assert_eq!(got, status, "{body}: {resp}");
        let message = resp["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {resp}");
        if !param.is_empty() && param != "." {
            assert_eq!(resp["error"]["param"], param, "{body}: {resp}");
        }
    }
    let recorded = records(&gw, "feedback", ok.len());
    let api: Vec<&Value> = recorded.iter().filter(|f| f["source"] == "api").collect();
    assert_eq!(api.len(), ok.len());
    let thumbs = api.iter().find(|f| f["metric"] == "thumbs_up").unwrap();
    assert_eq!(thumbs["target"]["inference_id"], id.as_str());
    assert_eq!(thumbs["value"], json!({"boolean": true}));
    assert_eq!(thumbs["tenant"], "acme");
    assert_eq!(thumbs["variant"], "v");
    assert_eq!(thumbs["tags"]["by"], "ops");
}

#[tokio::test]
async fn tenants_only_reach_their_own_inferences() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let mine = infer(&gw, KEY, chat("chat", "hi"), Some("ep-acme")).await;
    let (status, _) = feedback(
        &gw,
        OTHER_KEY,
        json!({"inference_id": mine, "metric": "thumbs_up", "value": false}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = feedback(
        &gw,
        OTHER_KEY,
        json!({"episode_id": "ep-acme", "metric": "task_success", "value": false}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = feedback(
        &gw,
        KEY,
        json!({"inference_id": mine, "metric": "thumbs_up", "value": true}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn idempotency_key_gives_one_id() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let id = infer(&gw, KEY, chat("chat", "hi"), None).await;
    let body = json!({"inference_id": id, "metric": "thumbs_up", "value": true, "idempotency_key": "click-1"});
    let (_, a) = feedback(&gw, KEY, body.clone()).await;
    let (_, b) = feedback(&gw, KEY, body).await;
    assert_eq!(a["id"], b["id"]);
}

#[tokio::test]
async fn implicit_regeneration_reask_and_validation() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let question = json!({"model": "chat", "user": "u-1", "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let first = infer(&gw, KEY, question.clone(), None).await;
    let second = infer(&gw, KEY, question.clone(), None).await;
    let reask = json!({"model": "chat", "user": "u-1", "messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Lyon."},
        {"role": "user", "content": "what is the capital of france??"}
    ]});
    infer(&gw, KEY, reask, None).await;
    // Another user asking the same is no signal.
    let mut other = question.clone();
    other["user"] = json!("u-2");
    infer(&gw, KEY, other, None).await;
    let structured = json!({"model": "chat", "messages": [{"role": "user", "content": "json"}],
        "response_format": {"type": "json_object"}});
    let valid = infer(&gw, KEY, structured, None).await;

    let fb = records(&gw, "feedback", 3);
    let find =
        |metric: &str| -> Vec<&Value> { fb.iter().filter(|f| f["metric"] == metric).collect() };
    let regen = find("implicit_regenerate");
    assert_eq!(regen.len(), 1, "{fb:?}");
    assert_eq!(regen[0]["target"]["inference_id"], first.as_str());
    assert_eq!(regen[0]["source"], "implicit:regenerate");
    let reasks = find("implicit_reask");
    assert_eq!(reasks.len(), 1, "{fb:?}");
    assert_eq!(reasks[0]["target"]["inference_id"], second.as_str());
    let validation = find("implicit_validation_first_try");
    assert_eq!(validation.len(), 1);
    assert_eq!(validation[0]["target"]["inference_id"], valid.as_str());
    assert_eq!(validation[0]["value"], json!({"boolean": true}));
}
