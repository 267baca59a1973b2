//! Lossless capture: every answered request becomes exactly one row in
//! ClickHouse, through ClickHouse outages and a SIGKILL of the gateway.

use std::time::Duration;

use flywheel_tests::*;
use serde_json::json;

fn config(mock: &Proc, services: &Services, wal: &std::path::Path) -> String {
    format!(
        "{}\n{}\n[[feedback.metrics]]\nname = \"thumbs_up\"\ntype = \"boolean\"\n\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"mock\", model = \"m\" }}]\n",
        mock_provider("mock", mock, &[]),
        capture_config(services, wal)
    )
}

/// Sends `n` requests (every third one streamed); returns the request ids
/// answered with 200.
async fn load(gw: &Proc, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let mut body = chat("chat", &format!("request {i}"));
            if i % 3 == 0 {
                body["stream"] = json!(true);
            }
            let r = client()
                .post(url)
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            let id = r.headers()["x-flywheel-request-id"]
                .to_str()
                .ok()?
                .to_owned();
            // A stream is answered once it ended with [DONE].
            let text = r.text().await.ok()?;
            (i % 3 != 0 || text.ends_with("data: [DONE]\n\n")).then_some(id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            ids.push(id);
        }
    }
    ids
}

/// A count, or 0 while the tables do not exist yet (the shipper migrates
/// once ClickHouse is reachable).
async fn count(services: &Services, sql: &str) -> u64 {
    services
        .try_query(sql)
        .await
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Waits until ClickHouse holds `expected` inferences, then checks that
/// nothing is duplicated in the base tables or the rollups.
async fn assert_exactly_once(services: &Services, expected: &[String]) {
    let n = expected.len() as u64;
    let reached = eventually(Duration::from_secs(60), || async {
        count(services, "SELECT count() FROM flywheel.inferences").await >= n
    })
    .await;
    assert!(
        reached,
        "ClickHouse has {} of {n} inferences",
        count(services, "SELECT count() FROM flywheel.inferences").await
    );
    // Let a late duplicate (if any) arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(services, "SELECT count() FROM flywheel.inferences").await,
        n,
        "duplicate rows"
    );
    assert_eq!(
        count(services, "SELECT uniqExact(id) FROM flywheel.inferences").await,
        n
    );
    assert_eq!(
        count(services, "SELECT count() FROM flywheel.attempts").await,
        n,
        "one attempt per request"
    );
    assert_eq!(
        count(
            services,
            "SELECT countMerge(requests) FROM flywheel.inference_rollup_1m"
        )
        .await,
        n,
        "rollup"
    );
    let ids: Vec<String> = expected.iter().map(|id| format!("'{id}'")).collect();
    let present = count(
        services,
        &format!(
            "SELECT count() FROM flywheel.inferences WHERE toString(id) IN ({})",
            ids.join(",")
        ),
    )
    .await;
    assert_eq!(present, n, "answered requests missing from ClickHouse");
}

/// After a SIGKILL with ClickHouse down: starts ClickHouse and the gateway
/// again. Feedback on an inference that is still only in the log is
/// accepted (the restarted gateway indexed the unshipped log), and every
/// answered request reaches ClickHouse once. Returns the gateway.
async fn restart_and_replay(
    services: &Services,
    gw_dir: &std::path::Path,
    config: &str,
    answered: &[String],
) -> Proc {
    services.start_clickhouse();
    let gw = start_gateway_with(gw_dir, config);
    let r = client()
        .post(gw.url("/v1/feedback"))
        .bearer_auth(KEY)
        .json(&json!({"inference_id": answered[0], "metric": "thumbs_up", "value": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_exactly_once(services, answered).await;
    gw
}

#[tokio::test]
async fn clickhouse_outage_loses_nothing() {
    let services = Services::new();
    services.start_clickhouse();
    let mock = start_mock(&[]);
    let dir = scratch_dir("capture-outage");
    let gw = start_gateway(&config(&mock, &services, &dir.join("wal")));

    let mut answered = load(&gw, 30).await;
    services.stop_clickhouse();
    // Serving continues while ClickHouse is down.
    let during = load(&gw, 30).await;
    assert_eq!(
        during.len(),
        30,
        "requests failed while ClickHouse was down"
    );
    answered.extend(during);
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("flywheel_wal_records_pending"),
        "{metrics}"
    );
    services.start_clickhouse();
    answered.extend(load(&gw, 30).await);
    assert_eq!(answered.len(), 90);
    assert_exactly_once(&services, &answered).await;
}

#[tokio::test]
async fn sigkill_replays_what_was_not_shipped() {
    let services = Services::new();
    // ClickHouse is down from the start: nothing can ship before the kill.
    let mock = start_mock(&[]);
    let dir = scratch_dir("capture-kill");
    let cfg = config(&mock, &services, &dir.join("wal"));
    let gw_dir = scratch_dir("gateway");
    let full = format!("{}\n{}", base_config(&gw_dir.join("events.jsonl")), cfg);
    let gw = start_gateway_with(&gw_dir, &full);
    let answered = load(&gw, 40).await;
    assert_eq!(answered.len(), 40);
    gw.signal("KILL");
    drop(gw);

    let _gw = restart_and_replay(&services, &gw_dir, &full, &answered).await;
    let shipped_feedback = eventually(Duration::from_secs(30), || async {
        count(
            &services,
            "SELECT count() FROM flywheel.feedback WHERE metric = 'thumbs_up'",
        )
        .await
            == 1
    })
    .await;
    assert!(shipped_feedback);
}

/// With `capture.encryption_key_file` the log on disk holds no prompt and
/// no request id in the clear, and a gateway SIGKILLed with ClickHouse down
/// replays it with the key: feedback on a logged inference is accepted, and
/// every answered request reaches ClickHouse once.
#[tokio::test]
async fn an_encrypted_log_holds_no_plain_text_and_replays_after_a_sigkill() {
    let services = Services::new();
    let mock = start_mock(&[]);
    let dir = scratch_dir("capture-sealed");
    let key = dir.join("wal.key");
    std::fs::write(
        &key,
        "8f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0\n",
    )
    .unwrap();
    let wal = dir.join("wal");
    let cfg = config(&mock, &services, &wal).replacen(
        "[capture]\n",
        &format!("[capture]\nencryption_key_file = \"{}\"\n", key.display()),
        1,
    );
    let gw_dir = scratch_dir("gateway");
    let full = format!("{}\n{}", base_config(&gw_dir.join("events.jsonl")), cfg);
    let gw = start_gateway_with(&gw_dir, &full);
    let answered = load(&gw, 20).await;
    assert_eq!(answered.len(), 20);
    gw.signal("KILL");
    drop(gw);
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(&wal).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wal") {
            on_disk.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(
        on_disk.len() > 20 * 100,
        "the log holds {} bytes",
        on_disk.len()
    );
    for needle in ["request 1", answered[0].as_str(), "\"tenant\""] {
        assert!(
            !on_disk
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "{needle:?} is readable in the log"
        );
    }

    restart_and_replay(&services, &gw_dir, &full, &answered).await;
}

#[tokio::test]
async fn feedback_on_shipped_inferences_checks_clickhouse() {
    let services = Services::new();
    services.start_clickhouse();
    let mock = start_mock(&[]);
    let dir = scratch_dir("capture-owner");
    let cfg = config(&mock, &services, &dir.join("wal"));
    let gw_dir = scratch_dir("gateway");
    let full = format!("{}\n{}", base_config(&gw_dir.join("events.jsonl")), cfg);
    let gw = start_gateway_with(&gw_dir, &full);
    let answered = load(&gw, 3).await;
    assert_exactly_once(&services, &answered).await;
    // A restarted gateway has an empty memory and an empty log: the owner
    // comes from ClickHouse, including the tenant check.
    drop(gw);
    let gw = start_gateway_with(&gw_dir, &full);
    let send = |key: &'static str| {
        client()
            .post(gw.url("/v1/feedback"))
            .bearer_auth(key)
            .json(&json!({"inference_id": answered[1], "metric": "thumbs_up", "value": false}))
            .send()
    };
    assert_eq!(send(OTHER_KEY).await.unwrap().status(), 404);
    assert_eq!(send(KEY).await.unwrap().status(), 200);
}

/// With `when_log_refuses = "refuse"`, a full log turns new inference
/// requests away with 503 (nothing is answered that is not recorded), and
/// they are served again once the shipper has emptied it.
#[tokio::test]
async fn under_the_refuse_policy_a_full_log_turns_requests_away_until_it_has_shipped() {
    let services = Services::new();
    let mock = start_mock(&[]);
    let dir = scratch_dir("capture-refuse");
    let cfg = config(&mock, &services, &dir.join("wal")).replace(
        "max_backoff_ms = 300\n",
        "max_backoff_ms = 300\nmax_bytes = 8192\nsegment_bytes = 4096\nwhen_log_refuses = \"refuse\"\n",
    );
    let gw = start_gateway(&cfg);
    let ask = || {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat("chat", "hello"))
            .send()
    };
    // Served until the log is full; then turned away, and the refusals are
    // the only requests not served.
    let mut served = 0;
    let refused = loop {
        let r = ask().await.unwrap();
        if r.status() != 200 {
            break r;
        }
        served += 1;
        assert!(
            served < 100,
            "100 requests into an 8 KiB log were all served"
        );
    };
    assert!(served > 0);
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_recorded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request"),
        "{body}"
    );
    assert_eq!(ask().await.unwrap().status(), 503, "served with a full log");
    // ClickHouse comes up, the log ships and empties: served again.
    services.start_clickhouse();
    assert!(
        eventually(Duration::from_secs(60), || async {
            ask().await.unwrap().status() == 200
        })
        .await,
        "still refused after the log shipped"
    );
}

/// A full log refuses new records. Explicit feedback is then answered 503
/// (it used to get 200 and an id, and was lost), and inference keeps
/// serving, the loss counted. ClickHouse is never started here, so nothing
/// ships and the 8 KiB log fills.
#[tokio::test]
async fn feedback_that_a_full_log_refuses_is_answered_503_while_inference_keeps_serving() {
    let services = Services::new();
    let mock = start_mock(&[]);
    let dir = scratch_dir("capture-full");
    let cfg = config(&mock, &services, &dir.join("wal")).replace(
        "max_backoff_ms = 300\n",
        "max_backoff_ms = 300\nmax_bytes = 8192\nsegment_bytes = 4096\n",
    );
    let gw = start_gateway(&cfg);
    let feedback = |id: &str| {
        client()
            .post(gw.url("/v1/feedback"))
            .bearer_auth(KEY)
            .json(&json!({"inference_id": id, "metric": "thumbs_up", "value": true}))
            .send()
    };
    let first = load(&gw, 1).await;
    let r = feedback(&first[0]).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Fill the log; every request is still answered.
    let answered = load(&gw, 40).await;
    assert_eq!(
        answered.len(),
        40,
        "inference stopped serving with a full log"
    );
    // A feedback record is smaller than an inference event, so the room an
    // inference left may still take a few: send until one is refused.
    let mut refused = None;
    for _ in 0..50 {
        let r = feedback(&answered[39]).await.unwrap();
        if r.status() != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("50 feedback records into a full 8 KiB log were all answered 200");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_recorded", "{body}");
    let metrics = metrics_text(&gw).await;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flywheel_wal_dropped_full_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "the refused records are not counted: {metrics}"
    );
}
