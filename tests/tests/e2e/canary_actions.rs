//! The canary controller's actions on the engine pool, end to end: the real
//! gateway routes a route's two variants to two model versions on a real
//! `flywheel-engine` (SmolLM2), weights from a private Redis; experiments
//! live in a private ClickHouse; `flywheel-canary run` holds the engine
//! admin token and unloads the version an ended experiment no longer
//! serves; the CLI steps in by hand (`promote`, `rollback`).
//!
//! No traffic is graded here, so the controller itself only holds: every
//! transition is manual, which is what these tests are about (what happens
//! to the versions after a rollback, and around a promotion's grace
//! period). Intervals are short; the tests wait for behaviour, never for a
//! time.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use flywheel_tests::*;
use serde_json::{json, Value};

/// One test at a time: each runs an engine, and the machine is small.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An attempt may take long on a real model on a busy machine: a timeout
/// would test the machine's load, not the code.
const ENGINE_RETRY: &str = "[routes.retry]\nmax_retries = 2\nvalidation_retries = 1\ninitial_backoff_ms = 5\nmax_backoff_ms = 20\nattempt_timeout_ms = 120000\ntotal_timeout_ms = 300000\nstream_idle_timeout_ms = 60000\n";

/// The controller process, killed on drop.
struct Ctl(Child);

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Engine (versions `base` and `v2`), gateway (variants `base` → `base`,
/// `tuned` → `v2`), services, controller.
struct Stack {
    services: Services,
    engine: Proc,
    gateway: Proc,
    controller: Option<Ctl>,
}

impl Stack {
    async fn start() -> Self {
        let services = Services::new();
        services.start_clickhouse();
        services.start_redis();
        let engine = start_engine();
        let stack_engine_url = engine.url("");
        deploy_v2(&stack_engine_url).await;
        let config = format!(
            "[redis]\nurl = \"{}\"\nweights_poll_ms = 100\ncommand_timeout_ms = 200\n\n\
             [providers.engine]\nbase_url = \"http://engine/v1\"\nreplicas = [\"{}\"]\nhealth_check_ms = 300\n\
             price_input_per_1m = 0.01\nprice_output_per_1m = 0.02\n\n\
             [[routes]]\nname = \"chat\"\n{ENGINE_RETRY}\
             [[routes.variants]]\nname = \"base\"\nweight = 100\ntargets = [{{ provider = \"engine\", model = \"base\" }}]\n\
             [[routes.variants]]\nname = \"tuned\"\nweight = 0\ntargets = [{{ provider = \"engine\", model = \"v2\" }}]\n",
            services.redis_url(),
            engine.addr
        );
        let gateway = start_gateway(&config);
        Self {
            services,
            engine,
            gateway,
            controller: None,
        }
    }

    fn canary(&self) -> Command {
        let mut cmd = Command::new(bin("flywheel-canary"));
        cmd.env("FLYWHEEL_CLICKHOUSE_URL", self.services.clickhouse_url())
            .env("FLYWHEEL_CLICKHOUSE_DATABASE", "flywheel")
            .env("FLYWHEEL_REDIS_URL", self.services.redis_url())
            .env("FLYWHEEL_REDIS_PREFIX", "flywheel:")
            .env("RUST_LOG", "warn");
        cmd
    }

    fn start_controller(&mut self) {
        self.controller = None;
        let child = self
            .canary()
            .args(["run", "--interval-ms", "300", "--settle-ms", "1000"])
            .env("FLYWHEEL_ENGINE_ADMIN_TOKEN", ENGINE_ADMIN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flywheel-canary run");
        self.controller = Some(Ctl(child));
    }

    /// `flywheel-canary create` on route chat, base → tuned, at 50 % (the
    /// controller holds: no graded traffic); returns the id.
    fn create(&self, extra: &[&str]) -> String {
        let out = self
            .canary()
            .args([
                "create",
                "--route",
                "chat",
                "--incumbent",
                "base",
                "--candidate",
                "tuned",
                "--metric",
                "thumbs_up",
                "--steps",
                "50,100",
                "--origin",
                "e2e",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A CLI command: (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.canary().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "{args:?}: {err}");
        out
    }

    fn weights(&self) -> (String, String) {
        let get = |v: &str| {
            self.services
                .redis_cli(&["HGET", "flywheel:weights:chat", v])
        };
        (get("base"), get("tuned"))
    }

    /// Whether the engine serves `version` (its admin API).
    async fn loaded(&self, version: &str) -> bool {
        let r = client()
            .get(self.engine.url(&format!("/admin/models/{version}")))
            .bearer_auth(ENGINE_ADMIN)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => true,
            404 => false,
            s => panic!("GET /admin/models/{version}: {s}"),
        }
    }

    /// The `unload` rows of an experiment (their reason_json), oldest first.
    async fn unloads(&self, id: &str) -> Vec<Value> {
        let text = self
            .services
            .try_query(&format!(
                "SELECT reason_json FROM flywheel.canary_evaluations \
                 WHERE experiment_id = '{id}' AND action = 'unload' ORDER BY ts_ms FORMAT JSONEachRow"
            ))
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let row: Value = serde_json::from_str(l).unwrap();
                serde_json::from_str(row["reason_json"].as_str().unwrap()).unwrap()
            })
            .collect()
    }

    /// (status, variant) of one short request in episode `episode`.
    async fn ask(&self, episode: &str) -> (u16, String) {
        let r = client()
            .post(self.gateway.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-flywheel-episode-id", episode)
            .json(&json!({"model": "chat", "max_tokens": 1, "temperature": 0,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let variant = r
            .headers()
            .get("x-flywheel-variant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        (status, variant)
    }
}

/// Deploys the second version, `v2` (the same weights under another name:
/// what matters here is which version is loaded).
async fn deploy_v2(engine_url: &str) {
    let r = client()
        .post(format!("{engine_url}/admin/models"))
        .bearer_auth(ENGINE_ADMIN)
        .json(&json!({"name": "v2", "path": model_dir()}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Engines (by URL) an unload record says are done.
fn done(record: &Value) -> Vec<String> {
    record["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["ok"] == true)
        .map(|o| o["engine"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_rolled_back_candidate_version_is_unloaded_from_the_engine_after_its_in_flight_stream_finished(
) {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let engine_url = format!("http://{}", stack.engine.addr);
    // A second replica that never answers: its unload is retried and
    // recorded as failing, without holding back the live one.
    let dead_url = format!("http://127.0.0.1:{}", free_port());
    let id = stack.create(&[
        "--candidate-model",
        "v2",
        "--engine",
        &engine_url,
        "--engine",
        &dead_url,
    ]);
    stack.start_controller();
    assert_eq!(stack.weights(), ("5000".into(), "5000".into()));

    // An episode the gateway sends to the candidate (sticky per episode).
    let mut episode = None;
    for i in 0..64 {
        let e = format!("episode-{i}");
        let (status, variant) = stack.ask(&e).await;
        assert_eq!(status, 200);
        if variant == "tuned" {
            episode = Some(e);
            break;
        }
    }
    let episode = episode.expect("an episode on the candidate");

    // A long stream on the candidate's version; roll back once it streams.
    let (first, first_rx) = tokio::sync::oneshot::channel::<()>();
    let url = stack.gateway.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        use futures_util::StreamExt;
        let r = client()
            .post(url)
            .bearer_auth(KEY)
            .header("x-flywheel-episode-id", episode)
            .json(&json!({"model": "chat", "stream": true, "temperature": 0, "max_tokens": 200,
                          "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let variant = r.headers()["x-flywheel-variant"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut body = r.bytes_stream();
        let mut text = String::new();
        let mut first = Some(first);
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(f) = first.take() {
                let _ = f.send(());
            }
        }
        (status, variant, text)
    });
    first_rx.await.expect("the stream started");
    let out = stack.ok(&["rollback", &id, "--reason", "e2e: bad candidate"]);
    assert!(out.contains("rolled_back"), "{out}");
    // The incumbent's weights are back at once.
    assert_eq!(stack.weights(), ("10000".into(), "0".into()));

    // The stream that was in flight finishes normally.
    let (status, variant, text) = in_flight.await.unwrap();
    assert_eq!((status, variant.as_str()), (200, "tuned"));
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the in-flight stream failed: {text}"
    );

    // The controller unloads v2 from the live engine, never the incumbent.
    assert!(
        eventually(Duration::from_secs(120), || async {
            !stack.loaded("v2").await
        })
        .await,
        "v2 still loaded; unload rows: {:?}",
        stack.unloads(&id).await
    );
    assert!(stack.loaded("base").await);
    // Recorded: the live engine done; the dead one failing and retried.
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.unloads(&id).await.len() >= 3
        })
        .await,
        "{:?}",
        stack.unloads(&id).await
    );
    let rows = stack.unloads(&id).await;
    eprintln!("unload rows: {rows:?}");
    for r in &rows {
        assert_eq!(
            (r["model"].as_str(), r["role"].as_str()),
            (Some("v2"), Some("candidate"))
        );
    }
    let live_done = rows
        .iter()
        .filter(|r| done(r).contains(&engine_url))
        .count();
    assert_eq!(live_done, 1, "the live engine is unloaded once: {rows:?}");
    let dead = rows
        .iter()
        .flat_map(|r| r["results"].as_array().unwrap())
        .filter(|o| o["engine"] == dead_url.as_str())
        .collect::<Vec<_>>();
    assert!(
        dead.len() >= 2 && dead.iter().all(|o| o["ok"] == false),
        "{dead:?}"
    );
    assert!(
        dead[0]["error"].as_str().unwrap().contains("unreachable"),
        "{dead:?}"
    );
    let status = stack.ok(&["status", &id]);
    assert!(status.contains("pending on 1 of 2"), "{status}");

    // A restarted controller carries on from the records: the dead engine
    // is tried again, the live one is not.
    stack.start_controller();
    let before = rows.len();
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.unloads(&id).await.len() >= before + 2
        })
        .await
    );
    let rows = stack.unloads(&id).await;
    assert_eq!(
        rows.iter()
            .filter(|r| done(r).contains(&engine_url))
            .count(),
        1,
        "{rows:?}"
    );
    // The route still answers, from the incumbent.
    assert_eq!(stack.ask("after").await, (200, "base".into()));
}

#[tokio::test]
async fn after_a_promotion_the_old_version_stays_loaded_through_the_grace_period_and_a_rollback_in_it_restores_the_old_weights_at_once(
) {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let engine_url = format!("http://{}", stack.engine.addr);
    let models = [
        "--candidate-model",
        "v2",
        "--incumbent-model",
        "base",
        "--engine",
        engine_url.as_str(),
    ];
    let mut args = models.to_vec();
    args.extend(["--grace-secs", "3600"]);
    let id = stack.create(&args);
    stack.start_controller();

    // Promoted by hand from the step before the last: completed, all
    // weight on the candidate.
    let out = stack.ok(&["promote", &id]);
    assert!(out.contains("completed"), "{out}");
    assert_eq!(stack.weights(), ("0".into(), "10000".into()));
    let status = stack.ok(&["status", &id]);
    assert!(status.contains("grace     until"), "{status}");
    // The controller looks several times; the old version stays loaded.
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.ask("p").await == (200, "tuned".into())
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stack.loaded("base").await && stack.loaded("v2").await);
    // Counted with a query that fails loudly, so an unreachable ClickHouse
    // cannot pass for "no unload".
    let unloads = stack
        .services
        .query(&format!(
            "SELECT count() FROM flywheel.canary_evaluations \
             WHERE experiment_id = '{id}' AND action = 'unload' FORMAT TSV"
        ))
        .await;
    assert_eq!(unloads, "0");

    // A rollback in the grace period: the old weights at once, recorded as
    // manual with its actor.
    let out = stack.ok(&["rollback", &id, "--actor", "cli:oncall"]);
    assert!(out.contains("rolled_back"), "{out}");
    assert_eq!(stack.weights(), ("10000".into(), "0".into()));
    let row = stack
        .services
        .query(&format!(
            "SELECT manual, actor, toString(status_after) FROM flywheel.canary_evaluations \
             WHERE experiment_id = '{id}' AND action = 'rollback' FORMAT TSV"
        ))
        .await;
    assert_eq!(row, "1\tcli:oncall\trolled_back");
    // Then the candidate's version goes; the old one serves.
    assert!(
        eventually(Duration::from_secs(60), || async {
            !stack.loaded("v2").await
        })
        .await,
        "{:?}",
        stack.unloads(&id).await
    );
    assert!(stack.loaded("base").await);
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.ask("q").await == (200, "base".into())
        })
        .await
    );

    // Again with a short grace period: the old version is unloaded when it
    // ends, and a rollback is refused from then on.
    deploy_v2(&engine_url).await;
    let mut args = models.to_vec();
    args.extend(["--grace-secs", "2"]);
    let id = stack.create(&args);
    let out = stack.ok(&["promote", &id]);
    assert!(out.contains("completed"), "{out}");
    assert!(
        eventually(Duration::from_secs(60), || async {
            !stack.loaded("base").await
        })
        .await,
        "{:?}",
        stack.unloads(&id).await
    );
    assert!(stack.loaded("v2").await, "the promoted version stays");
    // The record follows the unload; a ClickHouse hiccup only delays it.
    assert!(
        eventually(Duration::from_secs(30), || async {
            !stack.unloads(&id).await.is_empty()
        })
        .await
    );
    let rows = stack.unloads(&id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0]["model"].as_str(),
            rows[0]["role"].as_str(),
            done(&rows[0])
        ),
        (Some("base"), Some("incumbent"), vec![engine_url.clone()])
    );
    let (ok, _, err) = stack.cli(&["rollback", &id]);
    assert!(!ok, "a rollback after the grace period must be refused");
    assert!(
        err.contains("grace period") && err.contains("ended") && err.contains("base was unloaded"),
        "{err}"
    );
    assert_eq!(stack.weights(), ("0".into(), "10000".into()));
    let status = stack.ok(&["status", &id]);
    assert!(status.contains("rollback refused"), "{status}");
    assert_eq!(stack.ask("r").await, (200, "tuned".into()));
}
