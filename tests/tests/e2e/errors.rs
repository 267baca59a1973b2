//! Bad input gets a clear 4xx in OpenAI's error shape, and the gateway keeps
//! serving afterwards. Auth and per-key limits.

use flywheel_tests::*;
use serde_json::{json, Value};

fn config(mock: &Proc) -> String {
    format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"mock\", model = \"m\" }}]\n",
        mock_provider("mock", mock, &[])
    )
}

async fn send_raw(gw: &Proc, key: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r
        .json()
        .await
        .unwrap_or_else(|e| panic!("error body is not JSON: {e}"));
    (status, body)
}

fn assert_error_shape(body: &Value) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_and_serving_continues() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let cases: Vec<(Vec<u8>, u16, Option<&str>, &str)> = vec![
        (b"{not json".to_vec(), 400, None, "not valid JSON"),
        (b"".to_vec(), 400, None, "empty"),
        (b"[1,2]".to_vec(), 400, None, "JSON object"),
        (json!({"model": "chat"}).to_string().into_bytes(), 400, Some("messages"), "messages"),
        (json!({"model": "chat", "messages": []}).to_string().into_bytes(), 400, Some("messages"), "at least one"),
        (json!({"model": "chat", "messages": "hi"}).to_string().into_bytes(), 400, Some("messages"), "messages"),
        (
            json!({"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).to_string().into_bytes(),
            400,
            Some("temperature"),
            "temperature",
        ),
        (
            json!({"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}).to_string().into_bytes(),
            400,
            Some("max_tokens"),
            "max_tokens",
        ),
        (
            json!({"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 0}).to_string().into_bytes(),
            400,
            Some("n"),
            "n",
        ),
        (json!({"model": 5, "messages": []}).to_string().into_bytes(), 400, Some("model"), "model"),
        (
            json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}).to_string().into_bytes(),
            404,
            Some("model"),
            "gpt-nope",
        ),
        (vec![b' '; 70_000], 413, None, "larger than the limit"),
    ];
    for (body, status, param, needle) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let (got, err) = send_raw(&gw, Some(KEY), body).await;
        assert_eq!(got, status, "{shown}: {err}");
        assert_error_shape(&err);
        if let Some(p) = param {
            assert_eq!(err["error"]["param"], p, "{shown}: {err}");
        }
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{shown}: {err}"
        );
        // Still serving.
        let (ok, _) = send_raw(&gw, Some(KEY), chat("chat", "hi").to_string().into_bytes()).await;
        assert_eq!(ok, 200);
    }
}

#[tokio::test]
async fn api_keys_are_required() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let body = chat("chat", "hi").to_string().into_bytes();
    let (status, err) = send_raw(&gw, None, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "invalid_api_key");
    let (status, _) = send_raw(&gw, Some("sk-wrong"), body.clone()).await;
    assert_eq!(status, 401);
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Operational endpoints stay open for probes and scrapers.
    assert_eq!(
        client()
            .get(gw.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client().get(gw.url("/no/such/path")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn per_key_rate_limit_is_429_with_retry_after() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let body = chat("chat", "hi").to_string().into_bytes();
    // OTHER_KEY allows 3 requests per minute.
    for _ in 0..3 {
        assert_eq!(send_raw(&gw, Some(OTHER_KEY), body.clone()).await.0, 200);
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(OTHER_KEY)
        .json(&chat("chat", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    // Other keys are not affected.
    assert_eq!(send_raw(&gw, Some(KEY), body).await.0, 200);
}

#[tokio::test]
async fn bad_config_names_the_key() {
    let dir = scratch_dir("badcfg");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[auth]\nenabled = false\n[retry]\nmax_retires = 3\n").unwrap();
    let out = std::process::Command::new(bin("flywheel-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_retires"), "{stderr}");
}
