//! Tenant isolation of every id a client can name: tenant B (`OTHER_KEY`,
//! "globex") tries tenant A's (`KEY`, "acme") inference ids and episode ids
//! on the inference and feedback APIs, in memory and through ClickHouse,
//! and in the datasets built from captured traffic. Episode ids are the
//! clients', so both tenants may use the same one: an episode is (tenant,
//! episode id), and B's use of A's id must neither block A nor reach A's
//! data.

use std::time::Duration;

use flywheel_tests::*;
use serde_json::{json, Value};

/// Route `chat` (variant `va`) for A, `chat_b` (variant `vb`) for B, so
/// that a stored feedback row tells whose episode it was attached to.
fn config(mock: &Proc, capture: &str) -> String {
    format!(
        r#"{}
{capture}
[[feedback.metrics]]
name = "thumbs_up"
type = "boolean"
[[feedback.metrics]]
name = "task_success"
type = "boolean"
level = "episode"
[[feedback.metrics]]
name = "episode_ideal"
type = "demonstration"
level = "episode"

[[routes]]
name = "chat"
[[routes.variants]]
name = "va"
targets = [{{ provider = "mock", model = "m" }}]

[[routes]]
name = "chat_b"
[[routes.variants]]
name = "vb"
targets = [{{ provider = "mock", model = "m" }}]
"#,
        mock_provider("mock", mock, &[])
    )
}

/// `base_config` with B's request limit lifted: B's probes must be
/// answered, not rate limited.
fn gateway(dir: &std::path::Path, events: &str, rest: &str) -> Proc {
    let base = base_config(&dir.join(events))
        .replace("requests_per_minute = 3", "requests_per_minute = 10000");
    start_gateway_with(dir, &format!("{base}\n{rest}"))
}

async fn infer(gw: &Proc, key: &str, route: &str, prompt: &str, episode: &str) -> String {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-flywheel-episode-id", episode)
        .json(&chat(route, prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
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

fn episode(ep: &str, metric: &str, value: Value) -> Value {
    json!({"episode_id": ep, "metric": metric, "value": value})
}

/// The in-memory index (no ClickHouse): B using an episode id first does not
/// make it B's for A, and B reaches none of A's ids.
#[tokio::test]
async fn in_memory_ids_are_per_tenant() {
    let mock = start_mock(&[]);
    let gw = gateway(
        &scratch_dir("tenants-memory"),
        "events.jsonl",
        &config(&mock, ""),
    );
    // B claims the id first, then A uses it.
    infer(&gw, OTHER_KEY, "chat_b", "b first", "ep-shared").await;
    let a_inference = infer(&gw, KEY, "chat", "a second", "ep-shared").await;
    infer(&gw, KEY, "chat", "a only", "ep-a-only").await;

    // A's episode feedback still works, on A's episode.
    let (status, body) =
        feedback(&gw, KEY, episode("ep-shared", "task_success", json!(true))).await;
    assert_eq!(status, 200, "A blocked from its own episode: {body}");
    // B's lands on B's own episode of that id.
    let (status, body) = feedback(
        &gw,
        OTHER_KEY,
        episode("ep-shared", "task_success", json!(false)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // B reaches neither A's inference nor an episode only A has.
    let (status, body) = feedback(
        &gw,
        OTHER_KEY,
        json!({"inference_id": a_inference, "metric": "thumbs_up", "value": false}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = feedback(
        &gw,
        OTHER_KEY,
        episode("ep-a-only", "task_success", json!(false)),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    let events = records(&gw, "feedback", 2);
    let on_shared: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e["source"] == "api" && e["target"]["episode_id"] == "ep-shared")
        .map(|e| {
            (
                e["tenant"].as_str().unwrap(),
                e["route"].as_str().unwrap(),
                e["variant"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        on_shared,
        [("acme", "chat", "va"), ("globex", "chat_b", "vb")],
        "{events:?}"
    );
}

/// Starts ClickHouse and a capturing gateway logging into `wal`.
fn stack(tag: &str) -> (Services, Proc, Proc, std::path::PathBuf) {
    let services = Services::new();
    services.start_clickhouse();
    let mock = start_mock(&[]);
    let dir = scratch_dir(tag);
    let gw = gateway(
        &dir,
        "events.jsonl",
        &config(&mock, &capture_config(&services, &dir.join("wal"))),
    );
    (services, mock, gw, dir)
}

/// `SELECT count()`-like query as a number (0 while ClickHouse has no
/// table yet).
async fn number(services: &Services, sql: &str) -> u64 {
    services
        .try_query(sql)
        .await
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0)
}

async fn shipped(services: &Services, inferences: u64, feedback: u64) -> bool {
    eventually(Duration::from_secs(60), || async {
        number(services, "SELECT count() FROM flywheel.inferences").await == inferences
            && number(
                services,
                "SELECT count() FROM flywheel.feedback WHERE source = 'api'",
            )
            .await
                == feedback
    })
    .await
}

/// Through ClickHouse (a restarted gateway with an empty index): whoever
/// used an episode id last does not own it for the other tenant, and B
/// reaches none of A's ids; each tenant's feedback lands on its own episode.
#[tokio::test]
async fn clickhouse_episode_owner_is_per_tenant() {
    let (services, mock, gw, dir) = stack("tenants-ch");
    // A uses "ep-ch" first, B last: ClickHouse's latest inference of the
    // id is B's.
    let a_inference = infer(&gw, KEY, "chat", "a in ep-ch", "ep-ch").await;
    infer(&gw, OTHER_KEY, "chat_b", "b in ep-ch", "ep-ch").await;
    infer(&gw, KEY, "chat", "a only", "ep-a-only").await;
    assert!(
        shipped(&services, 3, 0).await,
        "inferences not in ClickHouse"
    );
    drop(gw);

    // A fresh log: the new gateway's index is empty, every owner lookup
    // goes to ClickHouse.
    let gw = gateway(
        &dir,
        "events2.jsonl",
        &config(&mock, &capture_config(&services, &dir.join("wal2"))),
    );
    let (status, body) = feedback(&gw, KEY, episode("ep-ch", "task_success", json!(true))).await;
    assert_eq!(status, 200, "A blocked from its own episode by B: {body}");
    let (status, body) = feedback(
        &gw,
        OTHER_KEY,
        episode("ep-ch", "task_success", json!(false)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = feedback(
        &gw,
        OTHER_KEY,
        json!({"inference_id": a_inference, "metric": "thumbs_up", "value": false}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = feedback(
        &gw,
        OTHER_KEY,
        episode("ep-a-only", "task_success", json!(false)),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(shipped(&services, 3, 2).await, "feedback not in ClickHouse");
    // Each tenant's feedback on "ep-ch" is attached to its own episode
    // (route and variant of its own inference), never to the other's.
    let rows = services
        .query(
            "SELECT tenant, route, variant FROM flywheel.feedback \
             WHERE episode_id = 'ep-ch' AND source = 'api' ORDER BY tenant FORMAT CSV",
        )
        .await;
    assert_eq!(
        rows, "\"acme\",\"chat\",\"va\"\n\"globex\",\"chat_b\",\"vb\"",
        "{rows}"
    );
    // The episode lookup table (migration 0009) holds both apart.
    let episodes = services
        .query(
            "SELECT tenant, episode_id, variant FROM flywheel.episodes \
             WHERE episode_id = 'ep-ch' ORDER BY tenant FORMAT CSV",
        )
        .await;
    assert_eq!(
        episodes, "\"acme\",\"ep-ch\",\"va\"\n\"globex\",\"ep-ch\",\"vb\"",
        "{episodes}"
    );
}

/// B's episode feedback and demonstration on B's own episode of A's id do
/// not enter A's dataset; A's own episode feedback does.
#[tokio::test]
async fn datasets_join_episode_feedback_per_tenant() {
    let (services, _mock, gw, dir) = stack("tenants-ds");
    // B uses "ep-ds" first (B's episode feedback is accepted, before the
    // fix as after), then A.
    infer(&gw, OTHER_KEY, "chat_b", "b in ep-ds", "ep-ds").await;
    let a_ds = infer(&gw, KEY, "chat", "a in ep-ds", "ep-ds").await;
    let a_own = infer(&gw, KEY, "chat", "a in ep-own", "ep-own").await;
    for (key, body) in [
        (OTHER_KEY, episode("ep-ds", "task_success", json!(false))),
        (
            OTHER_KEY,
            episode("ep-ds", "episode_ideal", json!("B's planted answer")),
        ),
        (KEY, episode("ep-own", "task_success", json!(true))),
    ] {
        let (status, body) = feedback(&gw, key, body).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(shipped(&services, 3, 3).await, "rows not in ClickHouse");

    // A's dataset (route `chat`).
    let out = dir.join("ds");
    let url = services.clickhouse_url();
    let (ok, text) = tuner(&[
        "dataset",
        "--route",
        "chat",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "ds-tenants",
        "--clickhouse-url",
        &url,
    ]);
    assert!(ok, "{text}");
    let mut items: Vec<Value> = Vec::new();
    for split in ["train.jsonl", "heldout.jsonl"] {
        let text = std::fs::read_to_string(out.join(split)).unwrap_or_default();
        items.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    assert_eq!(items.len(), 2, "{items:?}");
    let item = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {items:?}"))
            .clone()
    };
    let a_item = item(&a_ds);
    assert!(
        a_item.get("feedback").is_none(),
        "B's feedback in A's dataset: {a_item}"
    );
    assert!(
        a_item.get("reference_answer").is_none(),
        "B's demonstration in A's dataset: {a_item}"
    );
    assert_eq!(item(&a_own)["feedback"]["task_success"], true);
}
