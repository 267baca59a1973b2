//! The tuner on real services: a dataset built from traffic the gateway
//! captured into ClickHouse, and an eval run through the gateway whose
//! numbers are checked by hand.

use std::time::Duration;

use flywheel_tests::*;
use serde_json::{json, Value};

fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn ask(gw: &Proc, body: Value) -> (u16, String) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-flywheel-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (r.status().as_u16(), id)
}

/// Captured rows of every kind a dataset must sort out: an outage, a
/// duplicate prompt, PII, a validation failure, another route, and
/// explicit feedback to join.
#[tokio::test]
async fn dataset_from_captured_traffic() {
    let services = Services::new();
    services.start_clickhouse();
    // The first three attempts fail (an outage that exhausts the retries);
    // JSON-mode answers are never valid JSON (validation failures).
    let mock = start_mock(&[]);
    let dir = scratch_dir("tuner-dataset");
    let config = format!(
        "{}\n{}\n{}\n[[feedback.metrics]]\nname = \"thumbs_up\"\ntype = \"boolean\"\n\n\
         [[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"flaky\", model = \"m\" }}]\n\
         [[routes]]\nname = \"other\"\n[[routes.variants]]\nname = \"o\"\ntargets = [{{ provider = \"plain\", model = \"m\" }}]\n",
        mock_provider("flaky", &mock, &[("x-mock-fail-first", "3"), ("x-mock-json-valid-ratio", "0"), ("x-mock-scenario", "flaky")]),
        mock_provider("plain", &mock, &[("x-mock-scenario", "plain")]),
        capture_config(&services, &dir.join("wal")),
    );
    let gw = start_gateway(&config);

    let schema =
        json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}});
    let (outage, _) = ask(&gw, chat("chat", "first question")).await;
    assert_eq!(outage, 502);
    let (s, liked) = ask(&gw, chat("chat", "What is 2+2?")).await;
    assert_eq!(s, 200);
    assert_eq!(ask(&gw, chat("chat", "  what IS   2+2? ")).await.0, 200);
    assert_eq!(
        ask(&gw, chat("chat", "Mail me at bob@example.com please"))
            .await
            .0,
        200
    );
    let mut json_request = chat("chat", "Return JSON about cats");
    json_request["response_format"] = schema.clone();
    let (s, invalid) = ask(&gw, json_request).await;
    assert_eq!(s, 502);
    assert_eq!(ask(&gw, chat("chat", "Tell me a joke")).await.0, 200);
    assert_eq!(ask(&gw, chat("other", "Not this route")).await.0, 200);
    let r = client()
        .post(gw.url("/v1/feedback"))
        .bearer_auth(KEY)
        .json(&json!({"inference_id": liked, "metric": "thumbs_up", "value": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let shipped = eventually(Duration::from_secs(60), || async {
        let n = |sql: &'static str| async {
            services
                .try_query(sql)
                .await
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
        };
        n("SELECT count() FROM flywheel.inferences").await == 7
            && n("SELECT count() FROM flywheel.feedback WHERE metric = 'thumbs_up'").await == 1
    })
    .await;
    assert!(shipped, "captured rows did not reach ClickHouse");

    let url = services.clickhouse_url();
    let out = dir.join("ds");
    let (ok, text) = tuner(&[
        "dataset",
        "--route",
        "chat",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "ds-test",
        "--clickhouse-url",
        &url,
    ]);
    assert!(ok, "{text}");
    let counts: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("counts.json")).unwrap()).unwrap();
    assert_eq!(counts["selected"], 6, "{counts}");
    assert_eq!(counts["dropped_provider_outages"], 1, "{counts}");
    assert_eq!(counts["dropped_pii"], 1, "{counts}");
    assert_eq!(counts["pii_hits"]["EMAIL"], 1, "{counts}");
    assert_eq!(counts["dropped_duplicates"], 1, "{counts}");
    assert_eq!(
        counts["dropped_validation_failures"], 0,
        "kept by default: {counts}"
    );
    assert!(text.contains("dropped: provider outages 1"), "{text}");
    let mut items = read_jsonl(&out.join("train.jsonl"));
    items.extend(read_jsonl(&out.join("heldout.jsonl")));
    assert_eq!(items.len(), 3);
    assert_eq!(
        counts["train"].as_u64().unwrap() + counts["heldout"].as_u64().unwrap(),
        3
    );
    let by_id = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {items:?}"))
            .clone()
    };
    // The first copy of the duplicated prompt is kept, with its feedback.
    let liked_item = by_id(&liked);
    assert_eq!(liked_item["messages"][0]["content"], "What is 2+2?");
    assert_eq!(liked_item["feedback"]["thumbs_up"], true);
    assert!(liked_item["logged_output"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    // The validation failure keeps its prompt and response_format, but no answer.
    let invalid_item = by_id(&invalid);
    assert_eq!(invalid_item["response_format"], schema);
    assert!(invalid_item.get("logged_output").is_none());
    let used = services
        .query("SELECT count() FROM flywheel.training_usage WHERE dataset = 'ds-test'")
        .await;
    assert_eq!(used, "3");

    // Masking keeps the PII row with the address replaced; dropping
    // validation failures leaves it out.
    let out = dir.join("ds-masked");
    let (ok, text) = tuner(&[
        "dataset",
        "--route",
        "chat",
        "--out",
        out.to_str().unwrap(),
        "--mask",
        "--drop-validation-failures",
        "--clickhouse-url",
        &url,
    ]);
    assert!(ok, "{text}");
    let counts: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("counts.json")).unwrap()).unwrap();
    assert_eq!(
        (
            counts["masked_pii"].as_u64(),
            counts["dropped_validation_failures"].as_u64()
        ),
        (Some(1), Some(1)),
        "{counts}"
    );
    let mut items = read_jsonl(&out.join("train.jsonl"));
    items.extend(read_jsonl(&out.join("heldout.jsonl")));
    let masked: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("[EMAIL]")
        })
        .collect();
    assert_eq!(masked.len(), 1, "{items:?}");
    assert!(!serde_json::to_string(&items)
        .unwrap()
        .contains("bob@example.com"));

    let (ok, text) = tuner(&[
        "dataset",
        "--route",
        "chat",
        "--out",
        out.to_str().unwrap(),
        "--heldout-fraction",
        "1.5",
    ]);
    assert!(!ok && text.contains("--heldout-fraction"), "{text}");
}

/// Three items, two configurations, every number of the report checked by
/// hand: the answer is right for two items of three; the chain answers
/// after two invalid tries on its first target, so it pays for three
/// attempts per request.
#[tokio::test]
async fn eval_through_the_gateway_by_hand() {
    let services = Services::new();
    services.start_clickhouse();
    let mock = start_mock(&[]);
    let right = r#"{"answer": 42}"#;
    let config = format!(
        "{}{}{}\n[[routes]]\nname = \"good\"\n[[routes.variants]]\nname = \"g\"\ntargets = [{{ provider = \"right\", model = \"m\" }}]\n\
         [[routes]]\nname = \"chain\"\n[[routes.variants]]\nname = \"c\"\ntargets = [{{ provider = \"sloppy\", model = \"s\" }}, {{ provider = \"right2\", model = \"b\" }}]\n",
        mock_provider("right", &mock, &[("x-mock-text", right), ("x-mock-scenario", "right")]),
        mock_provider("sloppy", &mock, &[("x-mock-text", "oops"), ("x-mock-scenario", "sloppy")]),
        mock_provider("right2", &mock, &[("x-mock-text", right), ("x-mock-scenario", "right2")]),
    );
    let gw = start_gateway(&config);
    let dir = scratch_dir("tuner-eval");
    let schema = json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}}});
    let items: Vec<String> = [42, 42, 7]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({"id": format!("q{i}"), "messages": [{"role": "user", "content": format!("question {i}")}],
                   "reference_answer": {"answer": a}, "response_format": schema})
            .to_string()
        })
        .collect();
    let dataset = dir.join("d.jsonl");
    std::fs::write(&dataset, items.join("\n") + "\n").unwrap();
    let grader = dir.join("g.json");
    std::fs::write(
        &grader,
        json!({"type": "json", "name": "answer", "fields": {"answer": 1}}).to_string(),
    )
    .unwrap();
    let out = dir.join("report");
    let (ok, text) = tuner(&[
        "eval",
        "--dataset",
        dataset.to_str().unwrap(),
        "--grader",
        grader.to_str().unwrap(),
        "--config",
        "good=good",
        "--config",
        "chain=chain",
        "--gateway",
        &gw.url("/v1"),
        "--api-key",
        KEY,
        "--out",
        out.to_str().unwrap(),
        "--store",
        "--clickhouse-url",
        &services.clickhouse_url(),
    ]);
    assert!(ok, "{text}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let events = events(&gw, 6);
    let cost_of = |route: &str| {
        events
            .iter()
            .filter(|e| e["route"] == route)
            .map(|e| e["cost_usd"].as_f64().unwrap())
            .sum::<f64>()
            / 3.0
    };
    for (c, route, retries, fallbacks) in [
        (&report["configs"][0], "good", 0.0, 0.0),
        (&report["configs"][1], "chain", 2.0, 1.0),
    ] {
        assert_eq!(c["model"], route);
        assert_eq!(
            (
                c["requests"].as_u64(),
                c["request_errors"].as_u64(),
                c["grader_errors"].as_u64()
            ),
            (Some(3), Some(0), Some(0))
        );
        assert!(
            (c["mean_score"]["value"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
            "{c}"
        );
        assert!(
            (c["pass_rate"]["value"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
            "{c}"
        );
        assert_eq!(c["retries_per_request"].as_f64(), Some(retries), "{c}");
        assert_eq!(c["fallbacks_per_request"].as_f64(), Some(fallbacks), "{c}");
        let cost = c["cost_per_request_usd"].as_f64().unwrap();
        assert!(
            cost > 0.0 && (cost - cost_of(route)).abs() < 1e-9,
            "{cost} vs events {}",
            cost_of(route)
        );
        let qpd = c["quality_per_dollar"].as_f64().unwrap();
        assert!((qpd - (2.0 / 3.0) / cost).abs() / qpd < 1e-9, "{c}");
    }
    // The chain pays for its two invalid tries: more tokens and cost per request.
    assert!(
        report["configs"][1]["cost_per_request_usd"].as_f64()
            > report["configs"][0]["cost_per_request_usd"].as_f64()
    );
    assert!(std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("| chain | `chain` | 3 | 0.667"));
    let stored = services
        .query("SELECT config, requests, round(mean_score, 4), retries_per_request FROM flywheel.eval_results ORDER BY config FORMAT TSV")
        .await;
    assert_eq!(stored, "chain\t3\t0.6667\t2\ngood\t3\t0.6667\t0");
}

/// `train --store` on the real SmolLM2: two GRPO steps on the policy task
/// write one `training_steps` row per step to ClickHouse, the same numbers
/// as `metrics.jsonl`, and export the best adapter and merged model.
#[tokio::test]
async fn train_stores_every_step_in_clickhouse() {
    let services = Services::new();
    services.start_clickhouse();
    let dir = scratch_dir("tuner-train");
    let suite = dir.join("tasks");
    let (ok, text) = tuner(&[
        "tasks",
        "--out",
        suite.to_str().unwrap(),
        "--n",
        "20",
        "--task",
        "policy",
    ]);
    assert!(ok, "{text}");
    let run = dir.join("run");
    let model = model_dir();
    let path = |name: &str| suite.join(name).to_str().unwrap().to_owned();
    let (ok, text) = tuner(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--train",
        &path("policy.train.jsonl"),
        "--heldout",
        &path("policy.heldout.jsonl"),
        "--grader",
        &path("policy.grader.json"),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "2",
        "--generations",
        "2",
        "--max-new-tokens",
        "6",
        "--eval-every",
        "1",
        "--eval-items",
        "1",
        "--eval-max-tokens",
        "6",
        "--seed",
        "1",
        "--store",
        "--run-id",
        "e2e-run",
        "--clickhouse-url",
        &services.clickhouse_url(),
    ]);
    assert!(ok, "{text}");
    assert!(!text.contains("not stored"), "{text}");
    let logged = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(
        logged
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    let stored = services
        .query("SELECT step, reward_mean, grad_norm, tokens_per_sec, heldout_reward FROM flywheel.training_steps WHERE run_id = 'e2e-run' ORDER BY step FORMAT JSONEachRow")
        .await;
    let stored: Vec<Value> = stored
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for (row, log) in stored.iter().zip(&logged) {
        assert_eq!(row["step"], log["step"]);
        for field in [
            "reward_mean",
            "grad_norm",
            "tokens_per_sec",
            "heldout_reward",
        ] {
            let (a, b) = (row[field].as_f64(), log[field].as_f64());
            assert!(a.is_some() && b.is_some(), "{field}: {row} vs {log}");
            assert!(
                (a.unwrap() - b.unwrap()).abs() <= 1e-6 * b.unwrap().abs().max(1.0),
                "{field}: {row} vs {log}"
            );
        }
    }
    assert!(
        stored
            .iter()
            .all(|r| r["tokens_per_sec"].as_f64().is_some_and(|x| x > 0.0)),
        "{stored:?}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 2, "{summary}");
    assert!(run.join("best/adapter/adapter_model.safetensors").is_file());
    assert!(run.join("best/merged/config.json").is_file());
}
