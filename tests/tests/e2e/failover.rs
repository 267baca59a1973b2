//! Mid-stream failover: a stream that is cut, stalls or sends a malformed
//! chunk is continued on the next attempt, and the client sees one complete,
//! well-formed stream.

use flywheel_tests::*;
use serde_json::{json, Value};

const TEXT: &str = "one two three four five six seven eight nine ten eleven twelve";

fn config(mock: &Proc, fault: (&str, &str), continuation: &str) -> String {
    format!(
        "{}continuation = \"{continuation}\"\n\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"p\", model = \"m\" }}]\n",
        mock_provider(
            "p",
            mock,
            &[fault, ("x-mock-fault-times", "1"), ("x-mock-text", TEXT), ("x-mock-stall-ms", "5000"), ("x-mock-scenario", "s")]
        )
    )
}

async fn stream(gw: &Proc) -> (String, Vec<String>) {
    let mut body = chat("chat", "count");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
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
    (id, sse_data(&r.text().await.unwrap()))
}

fn assert_one_complete_stream(data: &[String]) {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert_eq!(stream_text(data), TEXT);
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d)
            .unwrap_or_else(|e| panic!("malformed chunk reached the client: {e}: {d}"));
        assert!(chunk.get("error").is_none(), "{d}");
    }
    let roles = data.iter().filter(|d| d.contains("\"role\"")).count();
    assert_eq!(
        roles, 1,
        "the continuation repeated the role chunk: {data:?}"
    );
    let finishes = data
        .iter()
        .filter(|d| d.contains("\"finish_reason\":\"stop\""))
        .count();
    assert_eq!(finishes, 1);
}

async fn check(fault: (&str, &str), expected_reason: &str) {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock, fault, "assistant_prefix"));
    let (id, data) = stream(&gw).await;
    assert_one_complete_stream(&data);
    let e = event_for(&gw, &id);
    assert_eq!(e["failovers"], 1);
    assert_eq!(e["status"], 200);
    let attempts = e["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "mid_stream_failover");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .unwrap()
            .contains(expected_reason),
        "{}",
        attempts[0]
    );
    assert_eq!(attempts[1]["outcome"], "ok");
    // The continuation carried the partial answer as an assistant prefix.
    let last = &mock_stats(&mock).await["scenarios"]["s"]["last_body"];
    let messages = last["messages"].as_array().unwrap();
    let prefix = messages.last().unwrap();
    assert_eq!(prefix["role"], "assistant");
    let prefix = prefix["content"].as_str().unwrap();
    assert!(!prefix.is_empty() && TEXT.starts_with(prefix), "{prefix:?}");
}

#[tokio::test]
async fn cut_stream_is_continued() {
    check(("x-mock-cut-after", "3"), "stream").await;
}

#[tokio::test]
async fn stalled_stream_is_continued() {
    check(("x-mock-stall-after", "3"), "stalled").await;
}

#[tokio::test]
async fn malformed_chunk_is_continued() {
    check(("x-mock-malformed-after", "3"), "malformed").await;
}

#[tokio::test]
async fn restart_continuation_drops_the_repeated_part() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock, ("x-mock-cut-after", "4"), "restart"));
    let (id, data) = stream(&gw).await;
    assert_one_complete_stream(&data);
    let e = event_for(&gw, &id);
    assert_eq!(e["failovers"], 1);
    assert_eq!(e["failover_diverged"], false);
    // Restart resends the original conversation.
    let last = &mock_stats(&mock).await["scenarios"]["s"]["last_body"];
    assert_eq!(last["messages"].as_array().unwrap().len(), 1);
}
