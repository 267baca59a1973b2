//! Weighted A/B split, sticky per user or episode, and live weight changes.

use std::collections::HashMap;

use flywheel_tests::*;
use serde_json::json;

fn config(mock: &Proc) -> String {
    format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"base\"\nweight = 80\ntargets = [{{ provider = \"mock\", model = \"base\" }}]\n[[routes.variants]]\nname = \"canary\"\nweight = 20\ntargets = [{{ provider = \"mock\", model = \"canary\" }}]\n",
        mock_provider("mock", mock, &[])
    )
}

async fn variant_for_user(gw: &Proc, user: &str) -> String {
    let mut body = chat("chat", "hi");
    body["user"] = json!(user);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-flywheel-variant"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn split_holds_weights_and_is_sticky() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let users = 1000;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut first = Vec::new();
    for i in 0..users {
        let v = variant_for_user(&gw, &format!("user-{i}")).await;
        *counts.entry(v.clone()).or_default() += 1;
        first.push(v);
    }
    let canary = f64::from(counts["canary"]) / f64::from(users);
    // 20 % expected; 4 standard deviations at n = 1000 is about ±5 %.
    assert!((0.15..=0.25).contains(&canary), "canary share {canary}");
    // Sticky: the same users land on the same variants again.
    for (i, expected) in first.iter().enumerate().take(50) {
        assert_eq!(&variant_for_user(&gw, &format!("user-{i}")).await, expected);
    }
    // The episode header pins too, and wins over `user`.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-flywheel-episode-id", "episode-42")
            .json(&json!({"model": "chat", "user": format!("u{}", seen.len()), "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        seen.insert(
            r.headers()["x-flywheel-variant"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn live_weight_change_without_restart() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&config(&mock));
    let c = client();
    let put = |token: &'static str, body: serde_json::Value| {
        c.put(gw.url("/admin/routes/chat/weights"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    // Admin API needs the admin token, not a client key.
    assert_eq!(
        put(KEY, json!({"weights": {"base": 0}}))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        put(ADMIN_TOKEN, json!({"weights": {"nope": 1}}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        put(ADMIN_TOKEN, json!({"weights": {"base": 0, "canary": 0}}))
            .await
            .unwrap()
            .status(),
        400
    );
    let r = put(ADMIN_TOKEN, json!({"weights": {"base": 0, "canary": 100}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for i in 0..30 {
        assert_eq!(variant_for_user(&gw, &format!("user-{i}")).await, "canary");
    }
    let routes: serde_json::Value = c
        .get(gw.url("/admin/routes"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(routes["routes"]["chat"], json!({"base": 0, "canary": 100}));
}
