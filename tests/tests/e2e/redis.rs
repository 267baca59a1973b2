//! Redis: limits shared by several gateway processes, live route weights,
//! and serving through a Redis outage.

use std::time::Duration;

use flywheel_tests::*;

fn config(mock: &Proc, services: &Services) -> String {
    format!(
        "[redis]\nurl = \"{}\"\nweights_poll_ms = 200\n\n{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"base\"\nweight = 100\ntargets = [{{ provider = \"mock\", model = \"m\" }}]\n[[routes.variants]]\nname = \"canary\"\nweight = 0\ntargets = [{{ provider = \"mock\", model = \"m2\" }}]\n",
        services.redis_url(),
        mock_provider("mock", mock, &[])
    )
}

async fn send(gw: &Proc, key: &str) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat("chat", "hi"))
        .send()
        .await
        .unwrap()
}

async fn redis_up(gw: &Proc) -> bool {
    let m = metrics_text(gw).await;
    m.lines().any(|l| l == "flywheel_redis_up 1")
}

#[tokio::test]
async fn limits_hold_across_processes_and_survive_redis_outage() {
    let services = Services::new();
    services.start_redis();
    let mock = start_mock(&[]);
    let a = start_gateway(&config(&mock, &services));
    let b = start_gateway(&config(&mock, &services));
    assert!(eventually(Duration::from_secs(10), || redis_up(&a)).await);
    assert!(eventually(Duration::from_secs(10), || redis_up(&b)).await);
    // OTHER_KEY allows 3 requests per minute, across both processes. (If
    // the minute turns over mid-test the window resets; retry once then.)
    let mut statuses = Vec::new();
    for gw in [&a, &b, &a, &b] {
        statuses.push(send(gw, OTHER_KEY).await.status().as_u16());
    }
    if statuses != [200, 200, 200, 429] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        statuses.clear();
        for gw in [&a, &b, &a, &b] {
            statuses.push(send(gw, OTHER_KEY).await.status().as_u16());
        }
    }
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 3,
        "{statuses:?}"
    );

    // Live weights: one write to Redis moves every process.
    services.redis_cli(&[
        "HSET",
        "flywheel:weights:chat",
        "base",
        "0",
        "canary",
        "100",
    ]);
    for gw in [&a, &b] {
        let moved = eventually(Duration::from_secs(10), || async {
            send(gw, KEY).await.headers()["x-flywheel-variant"] == "canary"
        })
        .await;
        assert!(moved, "weights from Redis not applied");
    }

    // Redis down: serving continues with the last known weights and
    // per-process limits, and the metrics say so.
    services.stop_redis();
    assert!(eventually(Duration::from_secs(10), || async { !redis_up(&a).await }).await);
    for _ in 0..5 {
        let r = send(&a, KEY).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-flywheel-variant"], "canary");
    }
    let m = metrics_text(&a).await;
    assert!(m.lines().any(|l| l == "flywheel_redis_up 0"), "{m}");
}
