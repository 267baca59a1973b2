//! The gateway under hostile clients and upstreams: slowloris connections,
//! a stream that never ends, client ids past their limits. (Upstream bytes
//! the mock cannot send, such as `Retry-After: 1e20` or a chunk cut inside a
//! character, are tested in-process in the gateway crate.)

use std::time::{Duration, Instant};

use flywheel_tests::*;
use serde_json::Value;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// A gateway with these `[server]` keys added to the shared config.
fn gateway_with_server(server: &str, rest: &str) -> Proc {
    let dir = scratch_dir("gateway");
    let base = base_config(&dir.join("events.jsonl")).replacen(
        "[server]\n",
        &format!("[server]\n{server}"),
        1,
    );
    start_gateway_with(&dir, &format!("{base}\n{rest}"))
}

fn route(provider: &str, retry: &str) -> String {
    format!(
        "[[routes]]\nname = \"chat\"\n{retry}[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"{provider}\", model = \"m\" }}]\n"
    )
}

/// Whether the server closed the connection (EOF or reset) by `deadline`.
async fn closed_by(conn: &mut TcpStream, deadline: Instant) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(deadline.into(), conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slowloris_leaves_the_gateway_serving_others_and_is_closed() {
    let mock = start_mock(&[]);
    let gw = gateway_with_server(
        "header_read_timeout_ms = 2000\nidle_timeout_ms = 2000\n",
        &format!("{}\n{}", mock_provider("m", &mock, &[]), route("m", "")),
    );
    let addr = gw.addr.clone();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // 200 clients sending a request one byte a second.
    let mut trickling = Vec::new();
    for _ in 0..200 {
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        trickling.push(tokio::spawn(async move {
            let request =
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
            for byte in request {
                if conn.write_all(&[*byte]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            false
        }));
    }
    for _ in 0..5 {
        let start = Instant::now();
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat("chat", "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "an answer took {took:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    for conn in &mut idle {
        assert!(
            closed_by(conn, deadline).await,
            "an idle connection is open"
        );
    }
    for task in trickling {
        assert!(task.await.unwrap(), "a trickling connection stayed open");
    }
}

#[tokio::test]
async fn the_request_deadline_cuts_a_stream_that_never_ends() {
    let mock = start_mock(&[]);
    // Five tokens a second for minutes: never idle, never done.
    let text = "la ".repeat(2000);
    let provider = mock_provider(
        "slow",
        &mock,
        &[("x-mock-tokens-per-s", "5"), ("x-mock-text", text.trim())],
    );
    let retry =
        "retry = { max_retries = 0, total_timeout_ms = 1500, stream_idle_timeout_ms = 1000 }\n";
    let gw = start_gateway(&format!("{provider}\n{}", route("slow", retry)));
    let mut body = chat("chat", "hi");
    body["stream"] = Value::Bool(true);
    let start = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = r.text().await.unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    let data = sse_data(&text);
    let last = data.last().unwrap();
    assert!(
        last.contains("\"error\"") && last.contains("timed out"),
        "{last}"
    );
    assert!(!stream_text(&data).is_empty(), "some tokens came first");
    let e = event_for(&gw, &id);
    assert_eq!(e["status"], 504);
    assert_eq!(e["attempts"][0]["outcome"], "timeout");
}

#[tokio::test]
async fn client_ids_over_their_limit_are_a_400_naming_them() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&format!(
        "{}\n{}",
        mock_provider("m", &mock, &[]),
        route("m", "")
    ));
    let long = "e".repeat(10_000);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-flywheel-episode-id", &long)
        .json(&chat("chat", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "x-flywheel-episode-id", "{v}");
    let mut body = chat("chat", "hi");
    body["user"] = Value::String(long);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "user", "{v}");
}
