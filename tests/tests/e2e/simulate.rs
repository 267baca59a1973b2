//! Simulated users (`flywheel-tuner simulate`) on the real SmolLM2 engine
//! behind the gateway: every conversation is captured with its episode and
//! user, every judged answer gets the thumbs its grader verdict says, and
//! every failed answer is re-asked in its episode, which the gateway reads
//! as an implicit re-ask.

use std::collections::HashSet;

use flywheel_tests::*;
use serde_json::Value;

#[tokio::test]
async fn simulated_users_converse_thumb_and_reask_through_the_gateway() {
    let _heavy = HEAVY.lock().await;
    let engine = start_engine();
    let gw = start_gateway(&format!(
        "[providers.engine]\nbase_url = \"http://{}/v1\"\nprice_input_per_1m = 0.01\nprice_output_per_1m = 0.02\n\n[[feedback.metrics]]\nname = \"thumbs_up\"\ntype = \"boolean\"\n\n[[routes]]\nname = \"chat\"\n{ENGINE_RETRY}[[routes.variants]]\nname = \"base\"\ntargets = [{{ provider = \"engine\", model = \"base\" }}]\n",
        engine.addr
    ));
    let dir = scratch_dir("simulate");
    let suite = dir.join("tasks");
    let tuner = |args: &[&str]| {
        let (ok, text) = tuner(args);
        assert!(ok, "{text}");
        text
    };
    let path = |name: &str| suite.join(name).to_str().unwrap().to_owned();
    tuner(&[
        "tasks",
        "--out",
        suite.to_str().unwrap(),
        "--n",
        "20",
        "--task",
        "extraction",
    ]);
    let summary_path = dir.join("summary.json");
    let conversations = 6;
    let text = tuner(&[
        "simulate",
        "--route",
        "chat",
        "--dataset",
        &path("extraction.train.jsonl"),
        "--grader",
        &path("extraction.grader.json"),
        "--gateway",
        &gw.url("/v1"),
        "--api-key",
        KEY,
        "--rate",
        "4",
        "--conversations",
        &conversations.to_string(),
        "--feedback-rate",
        "1",
        "--noise",
        "0",
        "--feedback-delay-secs",
        "0.1",
        "--reask-rate",
        "1",
        "--temperature",
        "0",
        "--max-tokens",
        "100",
        "--summary",
        summary_path.to_str().unwrap(),
    ]);
    assert!(text.contains("| base |"), "{text}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let total = &summary["total"];
    let n = |key: &str| total[key].as_u64().unwrap();
    assert_eq!(summary["conversations"], conversations, "{summary}");
    assert_eq!(summary["dropped"], 0);
    // A request may fail for real (the gateway validates the JSON answers,
    // and a 135M model's answer cut at max_tokens fails validation twice):
    // it is counted, not answered, and its conversation ends there.
    assert_eq!(n("answered") + n("errors"), n("requests"), "{summary}");
    assert!(n("answered") > 0, "{summary}");
    assert_eq!(n("grader_errors"), 0, "{summary}");
    // Every failed answer was re-asked once (reask rate 1), no passing one.
    let failed = n("answered") - n("passed");
    assert_eq!(n("requests"), conversations + n("reasks"), "{summary}");
    assert!(n("reasks") <= failed, "{summary}");
    // Thumbs on every judged answer (feedback rate 1), all delivered.
    assert_eq!(n("feedback_sent"), n("answered"), "{summary}");
    assert_eq!(n("feedback_failed"), 0);

    // What the gateway captured: every request, in the users' episodes.
    let events = events(&gw, n("requests") as usize);
    assert_eq!(events.len() as u64, n("requests"));
    let episodes: HashSet<&str> = events
        .iter()
        .map(|e| e["episode_id"].as_str().unwrap())
        .collect();
    assert_eq!(episodes.len() as u64, conversations, "one episode each");
    assert!(episodes.iter().all(|e| e.starts_with("sim-1-")));
    assert!(events
        .iter()
        .all(|e| e["user"].as_str().unwrap().starts_with("sim-user-")));
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();

    // The thumbs say what the grader said: as many `true` as passed.
    let feedback = records(&gw, "feedback", n("feedback_sent") as usize);
    let thumbs: Vec<&Value> = feedback
        .iter()
        .filter(|f| f["metric"] == "thumbs_up")
        .collect();
    assert_eq!(thumbs.len() as u64, n("feedback_sent"), "{feedback:?}");
    assert!(thumbs
        .iter()
        .all(|f| ids.contains(f["target"]["inference_id"].as_str().unwrap())));
    let up = thumbs
        .iter()
        .filter(|f| f["value"]["boolean"] == true)
        .count() as u64;
    assert_eq!(up, n("passed"), "{feedback:?}");
    // Each re-ask marks the answer it followed.
    let reasks = feedback
        .iter()
        .filter(|f| f["metric"] == "implicit_reask")
        .count() as u64;
    assert_eq!(reasks, n("reasks"), "{feedback:?}");
}
