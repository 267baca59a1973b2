//! The whole loop with no person in it, on the real SmolLM2 engine:
//! simulated users talk to a route whose incumbent is a pricey chain; the
//! tuner service (`flywheel-tuner serve`) triggers on their feedback,
//! builds the dataset from ClickHouse, trains a tiny GRPO run, deploys the
//! version behind a slot alias, gates it through the gateway and starts a
//! canary experiment that the controller (`flywheel-canary run`) decides.
//! The service is restarted in the middle and carries on from its journal.
//!
//! Test-sized settings: one training step, a few held-out items, a 50 % step
//! before the final 100 % with a 60 s limit, polls every second. At one
//! conversation every 8 s the step rarely gathers the samples a promotion
//! needs, so the usual decision is to keep the incumbent at the limit (a
//! rollback); either decision is the loop doing its job.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use flywheel_tests::*;
use serde_json::Value;

/// The key the tuner's gate sends with: it may pin variants.
const TUNER_KEY: &str = "sk-test-tuner";

/// A child process killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway_config(engine: &Proc, services: &Services, wal: &Path) -> String {
    let provider = |name: &str, price_in: f64, price_out: f64| {
        format!(
            "[providers.{name}]\nbase_url = \"http://{}/v1\"\nprice_input_per_1m = {price_in:?}\nprice_output_per_1m = {price_out:?}\n",
            engine.addr
        )
    };
    let mut c = format!(
        "[redis]\nurl = \"{}\"\nweights_poll_ms = 100\ncommand_timeout_ms = 200\n\n{}\n[[feedback.metrics]]\nname = \"thumbs_up\"\ntype = \"boolean\"\n\n[[auth.keys]]\ntenant = \"flywheel-tuner\"\nsha256 = \"{}\"\npin_variants = true\n\n",
        services.redis_url(),
        capture_config(services, wal),
        sha256_hex(TUNER_KEY),
    );
    // The chain stands for "SmolLM2 with retries, then a bigger model":
    // the same engine at a hundred times the price.
    c += &provider("engine", 0.01, 0.02);
    c += &provider("chain", 1.0, 2.0);
    c += &format!("\n[[routes]]\nname = \"extract\"\n{ENGINE_RETRY}");
    c += "[[routes.variants]]\nname = \"chain\"\nweight = 100\ntargets = [{ provider = \"chain\", model = \"base\" }]\n";
    for slot in ["a", "b"] {
        c += &format!(
            "[[routes.variants]]\nname = \"tuned-{slot}\"\nweight = 0\ntargets = [{{ provider = \"engine\", model = \"extract-{slot}\" }}, {{ provider = \"chain\", model = \"base\" }}]\n"
        );
    }
    c
}

/// The key that seals the runs' dataset snapshots (`data.key` in `dir`).
const DATA_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The service's config: `engines` as listed, the trigger as given, its
/// dataset snapshots sealed with [`DATA_KEY`].
fn tuner_config(
    dir: &Path,
    engines: &[&str],
    gateway: &Proc,
    grader: &Path,
    trigger: &str,
) -> PathBuf {
    let engines: Vec<String> = engines.iter().map(|e| format!("\"http://{e}\"")).collect();
    let key = dir.join("data.key");
    std::fs::write(&key, DATA_KEY).unwrap();
    let text = format!(
        r#"[tuner]
state_dir = "{state}"
gateway_url = "http://{gw}"
engines = [{engines}]
poll_secs = 1
encryption_key_files = ["{key}"]

[[tuner.jobs]]
name = "extract"
route = "extract"
base_model = "{model}"
grader = "{grader}"

[tuner.jobs.trigger]
{trigger}

[tuner.jobs.dataset]
min_rows = 6
# Enough held-out items for the gate's four, after deduplication.
heldout_fraction = 0.5

[tuner.jobs.hyperparameters]
steps = 1
batch_size = 1
group_size = 2
eval_interval = 1

[tuner.jobs.gate]
heldout_items = 4
min_gain = 0.0
non_inferiority = 1.0
max_tokens = 64

[tuner.jobs.online_grading]
interval_secs = 1

[tuner.jobs.canary]
steps = [{{ name = "50%", candidate_percent = 50.0, shadow = false }}, {{ name = "100%", candidate_percent = 100.0, shadow = false }}]

[tuner.jobs.canary.settings]
min_samples_per_arm = 3
min_rollback_samples = 3
min_step_secs = 0
max_step_secs = 60
n_star = 50.0
"#,
        state = dir.join("state").display(),
        gw = gateway.addr,
        engines = engines.join(", "),
        model = model_dir().display(),
        grader = grader.display(),
        key = key.display(),
    );
    let path = dir.join("tuner.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn with_services(cmd: &mut Command, services: &Services) {
    cmd.env("FLYWHEEL_CLICKHOUSE_URL", services.clickhouse_url())
        .env("FLYWHEEL_CLICKHOUSE_DATABASE", "flywheel")
        .env("FLYWHEEL_REDIS_URL", services.redis_url())
        .env("FLYWHEEL_REDIS_PREFIX", "flywheel:")
        .env("FLYWHEEL_ENGINE_ADMIN_TOKEN", ENGINE_ADMIN)
        .env("RUST_LOG", "warn");
}

/// `flywheel-tuner serve`, its log appended to `log`.
fn serve(config: &Path, services: &Services, log: &Path) -> Bg {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(bin("flywheel-tuner"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .env("FLYWHEEL_API_KEY", TUNER_KEY)
        .stdout(Stdio::null())
        .stderr(file);
    with_services(&mut cmd, services);
    Bg(cmd.spawn().unwrap())
}

/// The run that reached training (runs before it may have ended as
/// skipped, with too few rows): its id and journal events, oldest first.
fn trained_run(state: &Path) -> Option<(String, Vec<Value>)> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .ok()?
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    runs.into_iter().find_map(|run| {
        let events: Vec<Value> = std::fs::read_to_string(run.join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let id = run.file_name()?.to_str()?.to_owned();
        has(&events, "started", "train").then_some((id, events))
    })
}

fn journal(state: &Path) -> Vec<Value> {
    trained_run(state).map(|(_, e)| e).unwrap_or_default()
}

fn has(events: &[Value], event: &str, stage: &str) -> bool {
    events
        .iter()
        .any(|e| e["event"] == event && (stage.is_empty() || e["stage"] == stage))
}

/// Services, the engine, the gateway and the task suite of one test.
struct Stack {
    services: Services,
    engine: Proc,
    gateway: Proc,
    dir: PathBuf,
    suite: PathBuf,
}

impl Stack {
    fn start() -> Self {
        let services = Services::new();
        services.start_clickhouse();
        services.start_redis();
        let engine = start_engine();
        let wal = scratch_dir("loop-wal");
        let gateway = start_gateway(&gateway_config(&engine, &services, &wal));
        let dir = scratch_dir("loop");
        let suite = dir.join("tasks");
        let (ok, text) = tuner(&[
            "tasks",
            "--out",
            suite.to_str().unwrap(),
            "--n",
            "30",
            "--task",
            "extraction",
        ]);
        assert!(ok, "{text}");
        Self {
            services,
            engine,
            gateway,
            dir,
            suite,
        }
    }

    /// Simulated users: `rate` conversations a second until
    /// `conversations` started (or killed), every answer thumbed, answers of
    /// at most 64 tokens.
    fn users(&self, rate: &str, conversations: &str) -> Command {
        let mut users = Command::new(bin("flywheel-tuner"));
        users
            .args(["simulate", "--route", "extract", "--dataset"])
            .arg(self.suite.join("extraction.train.jsonl"))
            .arg("--grader")
            .arg(self.suite.join("extraction.grader.json"))
            .args(["--gateway", &self.gateway.url("/v1"), "--api-key", KEY])
            .args(["--rate", rate, "--conversations", conversations])
            .args(["--duration-secs", "36000"])
            .args(["--max-tokens", "64", "--feedback-rate", "1", "--noise", "0"])
            .args(["--feedback-delay-secs", "0.1", "--reask-rate", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        users
    }
}

/// Trainer processes whose arguments name a path under `state`.
fn trainers_under(state: &Path) -> usize {
    let state = state.to_string_lossy();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" train ") && c.contains(&*state))
        .count()
}

#[tokio::test]
async fn the_loop_turns_from_user_feedback_to_a_canary_decision_without_a_person_and_survives_a_restart(
) {
    let _heavy = HEAVY.lock().await;
    let stack = Stack::start();
    // Yesterday's traffic, then today's users: one conversation every 8 s
    // (the engine also trains and answers the gate on these two cores).
    assert!(stack.users("1", "20").status().unwrap().success());
    let _users = Bg(stack.users("0.125", "100000").spawn().unwrap());
    let Stack {
        services,
        engine,
        gateway: gw,
        dir,
        suite,
    } = &stack;
    let mut controller = Command::new(bin("flywheel-canary"));
    controller
        .args(["run", "--interval-ms", "1000", "--settle-ms", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    with_services(&mut controller, services);
    let _controller = Bg(controller.spawn().unwrap());

    let config = tuner_config(
        dir,
        &[&engine.addr],
        gw,
        &suite.join("extraction.grader.json"),
        "every_secs = 0\nnew_rows = 6\nmin_interval_secs = 0",
    );
    let state = dir.join("state");
    let log = dir.join("serve.log");
    let service = serve(&config, services, &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();

    // Restart the service while it trains: the stage is resumed.
    assert!(
        eventually(Duration::from_secs(300), || async {
            has(&journal(&state), "started", "train")
        })
        .await,
        "no run reached training: {}",
        logged()
    );
    drop(service);
    // SIGKILL leaves the service no chance to stop its trainer: the trainer
    // must notice by itself, or it would write the checkpoint that the next
    // service's trainer resumes from.
    assert!(
        eventually(Duration::from_secs(10), || async {
            trainers_under(&state) == 0
        })
        .await,
        "the killed service's trainer is still running"
    );
    let _service = serve(&config, services, &log);

    assert!(
        eventually(Duration::from_secs(900), || async {
            has(&journal(&state), "ended", "")
        })
        .await,
        "the run did not end: {}",
        logged()
    );
    let (run, events) = trained_run(&state).unwrap();
    let (ok, list) = tuner(&["runs", "--config", config.to_str().unwrap()]);
    assert!(ok && list.contains(&run), "{list}");
    let (ok, story) = tuner(&["runs", "--config", config.to_str().unwrap(), &run]);
    assert!(ok, "{story}");
    for stage in ["dataset", "train", "deploy", "gate", "canary"] {
        assert!(
            has(&events, "finished", stage) || stage == "canary",
            "{story}"
        );
        assert!(story.contains(stage), "{stage} missing from:\n{story}");
    }
    // The dataset snapshot that the trainer (a child process, given the
    // key) and the gate read is sealed at rest: no row is on disk in the
    // clear.
    for file in ["train.jsonl", "heldout.jsonl"] {
        let bytes =
            std::fs::read(state.join("runs").join(&run).join("dataset").join(file)).unwrap();
        assert!(
            bytes.starts_with(b"FLYWHEEL-SEALED-1\n"),
            "{file} is not sealed"
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains("\"messages\""),
            "{file} holds plain JSON"
        );
    }
    // Deployed once, whatever the restart did.
    let deploys = events
        .iter()
        .filter(|e| e["event"] == "finished" && e["stage"] == "deploy")
        .count();
    assert_eq!(deploys, 1, "{story}");
    let concluded = events
        .iter()
        .find(|e| e["event"] == "concluded")
        .unwrap_or_else(|| panic!("no conclusion: {story}"));
    assert_eq!(concluded["stage"], "canary", "{story}");
    let outcome = concluded["outcome"].as_str().unwrap().to_owned();
    assert!(outcome == "promoted" || outcome == "rolled_back", "{story}");
    // The controller decided and recorded it.
    let decisions: u64 = services
        .query(
            "SELECT count() FROM flywheel.canary_evaluations WHERE experiment_id IN \
             (SELECT id FROM flywheel.experiments WHERE startsWith(origin, 'tuner:'))",
        )
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(decisions >= 2, "{decisions} evaluation rows\n{story}");
    // The gate's arms, candidate and chain, are stored under the run's id
    // for the dashboards' training page.
    let gate_arms = services
        .query(&format!(
            "SELECT count() FROM flywheel.eval_results FINAL WHERE run_id = '{run}'"
        ))
        .await;
    assert_eq!(gate_arms.trim(), "2", "gate rows in eval_results\n{story}");
    // The version serves after a promotion, and is gone after a rollback.
    let version = events
        .iter()
        .find(|e| e["event"] == "finished" && e["stage"] == "deploy")
        .and_then(|e| e["detail"]["version"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        version.starts_with("extract-") && version.contains("-s"),
        "{version}"
    );
    let loaded = || async {
        let r = client()
            .get(engine.url(&format!("/admin/models/{version}")))
            .bearer_auth(ENGINE_ADMIN)
            .send()
            .await
            .unwrap();
        r.status() == 200
    };
    let want_loaded = outcome == "promoted";
    assert!(
        eventually(Duration::from_secs(60), || async {
            loaded().await == want_loaded
        })
        .await,
        "{version} loaded should be {want_loaded} after {outcome}"
    );
}

#[tokio::test]
async fn a_run_an_engine_refuses_is_recorded_failed_and_leaves_no_version_loaded() {
    let _heavy = HEAVY.lock().await;
    let stack = Stack::start();
    // Some captured, graded traffic to build the dataset from.
    let status = stack.users("1", "20").status().unwrap();
    assert!(status.success());
    // A second engine with no admin API: it refuses every deploy (404),
    // after the first engine has loaded the version.
    let mut cmd = Command::new(std::env::var("FLYWHEEL_ENGINE_BIN").unwrap());
    cmd.arg("serve")
        .arg("--model")
        .arg(model_dir())
        .args(["--name", "base", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let refusing = spawn_listening(cmd, scratch_dir("engine-refusing"));
    let (events, failure, story) = failed_run(
        &stack,
        &[&stack.engine.addr, &refusing.addr],
        &stack.suite.join("extraction.grader.json"),
    )
    .await;
    assert_eq!(failure["stage"], "deploy", "{story}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("refused the model"),
        "{story}"
    );
    assert!(has(&events, "cleaned_up", ""), "{story}");
    assert!(story.contains("failed"), "{story}");
    // Nothing of the run stays loaded, on the engine that took it either.
    assert_only_base_loaded(&stack.engine).await;
}

/// Runs the tuner service on `engines` with `grader` until its first run
/// ends, which must be as failed: the run's journal events, its failure
/// event and the `runs RUN` story.
async fn failed_run(stack: &Stack, engines: &[&str], grader: &Path) -> (Vec<Value>, Value, String) {
    let config = tuner_config(
        &stack.dir,
        engines,
        &stack.gateway,
        grader,
        "every_secs = 1\nnew_rows = 0\nmin_interval_secs = 3600",
    );
    let state = stack.dir.join("state");
    let log = stack.dir.join("serve.log");
    let _service = serve(&config, &stack.services, &log);
    assert!(
        eventually(Duration::from_secs(600), || async {
            has(&journal(&state), "ended", "")
        })
        .await,
        "the run did not end: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (run, events) = trained_run(&state).unwrap();
    let (ok, story) = tuner(&["runs", "--config", config.to_str().unwrap(), &run]);
    assert!(ok, "{story}");
    let failure = events
        .iter()
        .find(|e| e["event"] == "failed")
        .cloned()
        .unwrap_or_else(|| panic!("no failure recorded: {story}"));
    assert_eq!(events.last().unwrap()["outcome"], "failed", "{story}");
    (events, failure, story)
}

/// The engine serves its base model and nothing else: no tuned version, no
/// alias.
async fn assert_only_base_loaded(engine: &Proc) {
    let models: Value = client()
        .get(engine.url("/admin/models"))
        .bearer_auth(ENGINE_ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().or(m["id"].as_str()))
        .collect();
    assert_eq!(names, ["base"], "{models}");
    assert_eq!(models["aliases"], serde_json::json!({}), "{models}");
}

#[tokio::test]
async fn a_run_whose_grader_always_errors_is_recorded_failed_and_deploys_nothing() {
    let _heavy = HEAVY.lock().await;
    let stack = Stack::start();
    let status = stack.users("1", "20").status().unwrap();
    assert!(status.success());
    let grader = stack.dir.join("broken.grader.json");
    std::fs::write(
        &grader,
        serde_json::json!({
            "type": "python",
            "name": "broken",
            "source": "def grade(sample, item):\n    raise RuntimeError('this grader is broken')\n",
        })
        .to_string(),
    )
    .unwrap();
    let (events, failure, story) = failed_run(&stack, &[&stack.engine.addr], &grader).await;
    assert_eq!(failure["stage"], "train", "{story}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("this grader is broken"),
        "{story}"
    );
    assert!(!has(&events, "started", "deploy"), "{story}");
    assert_only_base_loaded(&stack.engine).await;
}
