//! The canary controller end to end: the real gateway (capture into a
//! private ClickHouse, live weights from a private Redis) in front of the
//! mock, whose "providers" differ in price (so in cost per request) and
//! faults; the test plays the users, sending feedback with a set pass rate
//! per variant; `flywheel-tuner grade-online` grades answers no user saw
//! (the shadow step's mirrors); `flywheel-canary run` decides,
//! `flywheel-canary create` starts each experiment.
//!
//! The tests run one at a time (each starts its own services and keeps two
//! cores busy with traffic, and their timing is what they test), with
//! short intervals and small sample minimums so each takes well under two
//! minutes.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use flywheel_tests::*;
use serde_json::{json, Value};

/// Pause of each load worker between requests (6 workers: a few hundred
/// requests per second at most).
const PACE: Duration = Duration::from_millis(25);

/// One canary test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The routes' variants: name, provider.
const VARIANTS: &[(&str, &str)] = &[
    ("base", "pricey"),
    ("good", "cheap"),
    ("broken", "flaky"),
    ("worse", "bargain"),
    ("same", "pricey"),
    ("best", "bargain"),
];

fn provider(name: &str, mock: &Proc, price_in: f64, price_out: f64, headers: &str) -> String {
    format!(
        "[providers.{name}]\nbase_url = \"http://{}/v1\"\nprice_input_per_1m = {price_in:?}\nprice_output_per_1m = {price_out:?}\nheaders = {{ {headers} }}\n",
        mock.addr
    )
}

fn config(mock: &Proc, services: &Services, wal: &std::path::Path) -> String {
    let mut c = format!(
        "[redis]\nurl = \"{}\"\nweights_poll_ms = 100\ncommand_timeout_ms = 200\n\n{}\n[[feedback.metrics]]\nname = \"thumbs_up\"\ntype = \"boolean\"\n\n",
        services.redis_url(),
        capture_config(services, wal)
    );
    c += &provider("pricey", mock, 3.0, 6.0, "");
    c += &provider("cheap", mock, 1.0, 2.0, "");
    c += &provider("bargain", mock, 0.1, 0.2, "");
    c += &provider(
        "flaky",
        mock,
        1.0,
        2.0,
        "\"x-mock-error-rate\" = '0.6', \"x-mock-scenario\" = 'flaky'",
    );
    c += "\n[[routes]]\nname = \"chat\"\n";
    for (variant, provider) in VARIANTS {
        let weight = if *variant == "base" { 100 } else { 0 };
        c += &format!(
            "[[routes.variants]]\nname = \"{variant}\"\nweight = {weight}\ntargets = [{{ provider = \"{provider}\", model = \"m\" }}]\n"
        );
    }
    c
}

/// Gateway, mock, services and the controller of one test.
struct Stack {
    services: Services,
    mock: Proc,
    gateway: Proc,
    wal: std::path::PathBuf,
    controller: Option<Ctl>,
}

/// The controller process, killed on drop.
struct Ctl(Child);

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn canary_cmd(services: &Services) -> Command {
    let mut cmd = Command::new(bin("flywheel-canary"));
    cmd.env("FLYWHEEL_CLICKHOUSE_URL", services.clickhouse_url())
        .env("FLYWHEEL_CLICKHOUSE_DATABASE", "flywheel")
        .env("FLYWHEEL_REDIS_URL", services.redis_url())
        .env("FLYWHEEL_REDIS_PREFIX", "flywheel:")
        .env("RUST_LOG", "warn");
    cmd
}

impl Stack {
    async fn start() -> Self {
        let services = Services::new();
        services.start_clickhouse();
        services.start_redis();
        let mock = start_mock(&[]);
        let wal = scratch_dir("canary-wal");
        let gateway = start_gateway(&config(&mock, &services, &wal));
        let stack = Self {
            services,
            mock,
            gateway,
            wal,
            controller: None,
        };
        // The capture has migrated once its first event is stored.
        let r = send(&stack.gateway.url("/v1/chat/completions"), 0).await;
        assert_eq!(r.0, 200);
        assert!(
            eventually(Duration::from_secs(30), || async {
                stack.count("SELECT count() FROM flywheel.inferences").await >= 1
            })
            .await,
            "capture did not reach ClickHouse"
        );
        stack
    }

    fn start_controller(&mut self) {
        let child = canary_cmd(&self.services)
            .args([
                "run",
                "--interval-ms",
                "300",
                "--settle-ms",
                "1000",
                "--latency-samples",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flywheel-canary run");
        self.controller = Some(Ctl(child));
    }

    /// `flywheel-canary create` with test-sized settings and `extra`
    /// flags; returns the experiment id.
    fn create(&self, incumbent: &str, candidate: &str, steps: &str, extra: &[&str]) -> String {
        let out = canary_cmd(&self.services)
            .args([
                "create",
                "--route",
                "chat",
                "--incumbent",
                incumbent,
                "--candidate",
                candidate,
                "--metric",
                "thumbs_up",
                "--steps",
                steps,
                "--min-samples",
                "15",
                "--n-star",
                "200",
                "--guardrail",
                "p95_latency=off",
                "--guardrail",
                "ttft=off",
                "--origin",
                "e2e",
            ])
            .args(extra)
            .output()
            .expect("flywheel-canary create");
        assert!(
            out.status.success(),
            "create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = canary_cmd(&self.services).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn count(&self, sql: &str) -> u64 {
        self.services
            .try_query(sql)
            .await
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    async fn rows(&self, sql: &str) -> Vec<Value> {
        match self
            .services
            .try_query(&format!("{sql} FORMAT JSONEachRow"))
            .await
        {
            Ok(text) => text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => vec![],
        }
    }

    /// The experiment's latest revision.
    async fn experiment(&self, id: &str) -> Value {
        self.rows(&format!(
            "SELECT id, toString(revision) AS revision, step, step_name, toString(step_started_ms) AS step_started_ms, \
             toString(status) AS status, status_reason FROM flywheel.experiments FINAL WHERE id = '{id}'"
        ))
        .await
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
    }

    /// Every evaluation row of the experiment, oldest first.
    async fn evaluations(&self, id: &str) -> Vec<Value> {
        self.rows(&format!(
            "SELECT toString(ts_ms) AS ts_ms, step, step_name, toString(action) AS action, reason_kind, \
             reason_json, step_after, toString(status_after) AS status_after, manual, \
             toString(incumbent_requests) AS incumbent_requests, toString(candidate_requests) AS candidate_requests, \
             toString(incumbent_graded) AS incumbent_graded, toString(candidate_graded) AS candidate_graded, \
             guardrails_failing, incumbent_weight, candidate_weight \
             FROM flywheel.canary_evaluations WHERE experiment_id = '{id}' ORDER BY ts_ms, revision"
        ))
        .await
    }

    /// Waits until the experiment's status is `status`.
    async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let ok = eventually(timeout, || async {
            self.experiment(id).await["status"] == status
        })
        .await;
        let e = self.experiment(id).await;
        assert!(
            ok,
            "experiment not {status} after {timeout:?}: {e}\n{}",
            self.cli(&["status", id])
        );
        e
    }

    fn weights(&self) -> BTreeMap<String, u64> {
        let text = self
            .services
            .redis_cli(&["HGETALL", "flywheel:weights:chat"]);
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?.to_string(), kv.get(1)?.parse().ok()?)))
            .collect()
    }
}

fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// One request; (status, variant, request id).
async fn send(url: &str, _worker: usize) -> (u16, String, String) {
    let Ok(r) = client()
        .post(url)
        .bearer_auth(KEY)
        .json(&chat("chat", "hello"))
        .send()
        .await
    else {
        return (0, String::new(), String::new());
    };
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let out = (
        r.status().as_u16(),
        header("x-flywheel-variant"),
        header("x-flywheel-request-id"),
    );
    let _ = r.bytes().await;
    out
}

/// Users: workers sending requests and, for each answer, `thumbs_up`
/// feedback with the variant's pass rate (an evenly spread 0/1 pattern
/// starting with a pass, so each variant's mean quality is near its rate
/// at any point).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Load {
    fn start(gateway: &Proc, pass: &[(&str, f64)], workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let pass: Arc<BTreeMap<String, f64>> =
            Arc::new(pass.iter().map(|(v, p)| ((*v).to_owned(), *p)).collect());
        let chat_url = gateway.url("/v1/chat/completions");
        let feedback_url = gateway.url("/v1/feedback");
        let tasks = (0..workers)
            .map(|w| {
                let (stop, counts, pass) = (stop.clone(), counts.clone(), pass.clone());
                let (chat_url, feedback_url) = (chat_url.clone(), feedback_url.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        // Paced: a saturated machine delays the gateways'
                        // Redis polls, and with them the weights.
                        tokio::time::sleep(PACE).await;
                        let (status, variant, id) = send(&chat_url, w).await;
                        if status != 200 || id.is_empty() {
                            if status == 0 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            continue;
                        }
                        let k = {
                            let mut c = counts.lock().unwrap();
                            let k = c.entry(variant.clone()).or_insert(0);
                            *k += 1;
                            *k - 1
                        };
                        let rate = pass.get(&variant).copied().unwrap_or(0.5);
                        let value = ((k + 1) as f64 * rate).ceil() > (k as f64 * rate).ceil();
                        let _ = client
                            .post(&feedback_url)
                            .bearer_auth(KEY)
                            .json(
                                &json!({"inference_id": id, "metric": "thumbs_up", "value": value}),
                            )
                            .send()
                            .await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            counts,
        }
    }

    async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let c = self.counts.lock().unwrap().clone();
        c
    }
}

/// The online grader of the shadow step: `flywheel-tuner grade-online`
/// scoring a sampled half of the route's answers, served and mirrored
/// alike (no user sees a mirror, so its quality comes from the grader
/// alone), as metric `grader_mock`. Its `string_check` passes the mock's
/// answer ("Hello! This is the mock provider answering your request.").
/// Killed on drop.
struct OnlineGrader(Child);

impl OnlineGrader {
    fn start(services: &Services) -> Self {
        let dir = scratch_dir("grader");
        let config = dir.join("mock.grader.json");
        let grader = json!({
            "type": "string_check",
            "name": "mock",
            "input": "{{sample.output_text}}",
            "reference": "mock provider",
            "operation": "like"
        });
        std::fs::write(&config, grader.to_string()).unwrap();
        let child = Command::new(bin("flywheel-tuner"))
            .args(["grade-online", "--route", "chat", "--grader"])
            .arg(&config)
            .args([
                "--fraction",
                "0.5",
                "--interval-ms",
                "300",
                "--lookback",
                "10m",
            ])
            .env("FLYWHEEL_CLICKHOUSE_URL", services.clickhouse_url())
            .env("FLYWHEEL_CLICKHOUSE_DATABASE", "flywheel")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flywheel-tuner grade-online");
        Self(child)
    }
}

impl Drop for OnlineGrader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn actions(evals: &[Value]) -> Vec<(String, String, String)> {
    evals
        .iter()
        .map(|e| {
            (
                e["step_name"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["reason_kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The transitions (everything but holds) of an experiment, in order.
fn transitions(evals: &[Value]) -> Vec<(String, String, String)> {
    actions(evals)
        .into_iter()
        .filter(|(_, a, _)| a != "hold")
        .collect()
}

#[tokio::test]
async fn a_better_and_cheaper_candidate_is_promoted_through_every_step() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    // The default ramp: shadow, 1, 5, 25, 50, 100.
    // Quality: the users' thumbs and the online grader's scores.
    let id = stack.create(
        "base",
        "good",
        "shadow,1,5,25,50,100",
        &[
            "--min-step-secs",
            "1",
            "--max-step-secs",
            "120",
            "--metric",
            "grader_mock",
        ],
    );
    assert_eq!(stack.weights()["good"], 0, "shadow serves no user");
    stack.start_controller();
    let grader = OnlineGrader::start(&stack.services);
    let load = Load::start(&stack.gateway, &[("base", 0.5), ("good", 0.95)], 6);
    let e = stack
        .wait_status(&id, "completed", Duration::from_secs(150))
        .await;
    let counts = load.stop().await;
    drop(grader);
    // The mirrors were scored by the grader, as feedback of the tenant
    // whose request they mirrored.
    let graded = stack
        .rows(
            "SELECT toString(count()) AS n, toString(countIf(value_float = 1)) AS passed, \
             groupUniqArray(tenant) AS tenants FROM flywheel.feedback FINAL \
             WHERE metric = 'grader_mock' AND source = 'grader:mock' \
             AND inference_id IN (SELECT id FROM flywheel.inferences WHERE shadow = 1)",
        )
        .await;
    let graded = &graded[0];
    assert!(num(&graded["n"]) >= 15, "shadow answers graded: {graded}");
    assert_eq!(graded["n"], graded["passed"], "{graded}");
    assert_eq!(graded["tenants"], json!(["acme"]), "{graded}");
    assert_eq!(e["step_name"], "100%");
    let evals = stack.evaluations(&id).await;
    assert_eq!(
        transitions(&evals),
        [
            ("shadow", "create", "created"),
            ("shadow", "promote", "promote"),
            ("1%", "promote", "promote"),
            ("5%", "promote", "promote"),
            ("25%", "promote", "promote"),
            ("50%", "promote", "promote"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())),
        "{counts:?}"
    );
    // Every promotion had data on both arms behind it.
    for p in evals.iter().filter(|e| e["action"] == "promote") {
        assert!(
            num(&p["candidate_graded"]) >= 15 && num(&p["incumbent_graded"]) >= 15,
            "{p}"
        );
    }
    // The shadow step compared the mirrors with the requests they mirrored.
    let shadow = &evals
        .iter()
        .find(|e| e["action"] == "promote" && e["step_name"] == "shadow")
        .unwrap();
    let (i, c) = (
        num(&shadow["incumbent_requests"]),
        num(&shadow["candidate_requests"]),
    );
    assert!(c > 0 && i.abs_diff(c) <= 5 + i / 20, "pairs {i}/{c}");
    assert_eq!(
        stack
            .services
            .redis_cli(&["EXISTS", "flywheel:shadow:chat"]),
        "0",
        "no mirror after the shadow step"
    );
    // The candidate is the route's incumbent: all weight, in Redis...
    let w = stack.weights();
    assert_eq!((w["base"], w["good"]), (0, 10_000));
    assert_eq!(
        stack
            .services
            .redis_cli(&["GET", "flywheel:canary:incumbent:chat"]),
        "good"
    );
    // ...so a restarted gateway (whose config still says base) serves it.
    let gw_dir = stack.gateway.dir.clone();
    stack.gateway.signal("KILL");
    let _ = stack.gateway.child.wait();
    let config = std::fs::read_to_string(gw_dir.join("flywheel.toml")).unwrap();
    let restarted = start_gateway_with(&gw_dir, &config);
    let url = restarted.url("/v1/chat/completions");
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(&url, 0).await.1 == "good"
        })
        .await
    );
    for _ in 0..20 {
        assert_eq!(send(&url, 0).await.1, "good");
    }
    // The status table a person reads.
    let status = stack.cli(&["status", &id]);
    for needle in [
        "completed",
        "quality per $",
        "guardrails:",
        "error_rate",
        "promote→100%",
    ] {
        assert!(status.contains(needle), "{needle}: {status}");
    }
    let _ = &stack.wal;
    let _ = &stack.mock;
}

#[tokio::test]
async fn a_candidate_with_a_higher_error_rate_is_rolled_back_at_its_first_live_step() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let id = stack.create("base", "broken", "1,5,25,50,100", &["--min-step-secs", "1"]);
    stack.start_controller();
    let load = Load::start(&stack.gateway, &[("base", 0.5), ("broken", 0.95)], 6);
    let e = stack
        .wait_status(&id, "rolled_back", Duration::from_secs(120))
        .await;
    let counts = load.stop().await;
    assert_eq!(e["step_name"], "1%", "{counts:?}");
    let evals = stack.evaluations(&id).await;
    let last = evals.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["reason_kind"].as_str()),
        (Some("rollback"), Some("guardrail_critical")),
        "{last}"
    );
    assert!(
        last["guardrails_failing"]
            .as_array()
            .unwrap()
            .contains(&json!("error_rate:critical")),
        "{last}"
    );
    assert_eq!(transitions(&evals).len(), 2, "create, rollback");
    let w = stack.weights();
    assert_eq!((w["base"], w["broken"]), (10_000, 0));
    // The gateway stops sending it traffic.
    let url = stack.gateway.url("/v1/chat/completions");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..30 {
        assert_eq!(send(&url, 0).await.1, "base");
    }
}

/// Much cheaper (5× the quality per dollar) but worse: quality is a
/// guardrail of its own, and its proven regression rolls the candidate
/// back.
#[tokio::test]
async fn a_candidate_with_worse_quality_is_rolled_back_at_its_first_live_step() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let id = stack.create("base", "worse", "1,5,25,50,100", &["--min-step-secs", "1"]);
    stack.start_controller();
    let load = Load::start(&stack.gateway, &[("base", 0.9), ("worse", 0.15)], 6);
    let e = stack
        .wait_status(&id, "rolled_back", Duration::from_secs(120))
        .await;
    let counts = load.stop().await;
    assert_eq!(e["step_name"], "1%", "{counts:?}");
    let evals = stack.evaluations(&id).await;
    let last = evals.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["reason_kind"].as_str()),
        (Some("rollback"), Some("quality_regression")),
        "{last}"
    );
    let w = stack.weights();
    assert_eq!((w["base"], w["worse"]), (10_000, 0));
    // Its quality per dollar was better: the ratio alone would have promoted.
    let row = stack
        .rows(&format!(
            "SELECT qpd_advantage, quality_upper FROM flywheel.canary_evaluations \
             WHERE experiment_id = '{id}' AND action = 'rollback'"
        ))
        .await;
    assert!(row[0]["qpd_advantage"].as_f64().unwrap() > 1.0, "{row:?}");
    assert!(row[0]["quality_upper"].as_f64().unwrap() < 0.0, "{row:?}");
}

#[tokio::test]
async fn an_equal_candidate_ends_inconclusive_with_the_incumbent_kept() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let id = stack.create(
        "base",
        "same",
        "50,100",
        &["--min-step-secs", "1", "--max-step-secs", "8"],
    );
    stack.start_controller();
    let load = Load::start(&stack.gateway, &[("base", 0.8), ("same", 0.8)], 6);
    let e = stack
        .wait_status(&id, "kept_incumbent", Duration::from_secs(60))
        .await;
    let counts = load.stop().await;
    assert_eq!(e["step_name"], "50%");
    let evals = stack.evaluations(&id).await;
    let last = evals.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["reason_kind"].as_str()),
        (Some("keep_incumbent"), Some("inconclusive")),
        "{last} {counts:?}"
    );
    // It had its data: this is "no difference found", not "no data".
    assert!(num(&last["candidate_graded"]) >= 15, "{last}");
    let w = stack.weights();
    assert_eq!((w["base"], w["same"]), (10_000, 0));
}

#[tokio::test]
async fn the_controller_killed_mid_experiment_resumes_at_the_same_step() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let id = stack.create("base", "good", "5,25,50,100", &["--min-step-secs", "3"]);
    stack.start_controller();
    let load = Load::start(&stack.gateway, &[("base", 0.5), ("good", 0.95)], 6);
    assert!(
        eventually(Duration::from_secs(90), || async {
            num(&stack.experiment(&id).await["step"]) >= 1
        })
        .await,
        "never left the first step"
    );
    let killed = stack.controller.take().unwrap();
    let mut child = killed;
    child.0.kill().unwrap();
    let _ = child.0.wait();
    // What is recorded: the experiment row, or a newer transition whose
    // row the kill cut off.
    let evals = stack.evaluations(&id).await;
    let before = stack.experiment(&id).await;
    let recorded_step = evals
        .iter()
        .filter(|e| e["action"] != "hold")
        .map(|e| num(&e["step_after"]))
        .max()
        .unwrap()
        .max(num(&before["step"]));
    assert!(
        recorded_step >= 1 && before["status"] == "running",
        "{before}"
    );
    let n_before = evals.len();
    // Down for a while: more than the step's minimum duration passes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        stack.evaluations(&id).await.len(),
        n_before,
        "no looks while down"
    );
    stack.start_controller();
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.evaluations(&id).await.len() > n_before
        })
        .await
    );
    let after = stack.evaluations(&id).await;
    let first = &after[n_before];
    assert_eq!(num(&first["step"]), recorded_step, "resumed at {first}");
    // Same step clock: the step's elapsed time counts the downtime.
    let resumed = stack.experiment(&id).await;
    if num(&resumed["step"]) == num(&before["step"]) {
        assert_eq!(resumed["step_started_ms"], before["step_started_ms"]);
    }
    let e = stack
        .wait_status(&id, "completed", Duration::from_secs(120))
        .await;
    load.stop().await;
    assert_eq!(e["step_name"], "100%");
    let steps: Vec<String> = transitions(&stack.evaluations(&id).await)
        .into_iter()
        .map(|(s, a, _)| format!("{s} {a}"))
        .collect();
    assert_eq!(
        steps,
        ["5% create", "5% promote", "25% promote", "50% promote"],
        "each step promoted exactly once"
    );
}

#[tokio::test]
async fn stopping_clickhouse_or_redis_holds_the_experiment() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    // ClickHouse: a promotion falls due during the outage and waits for it
    // to end.
    let id = stack.create("base", "good", "50,100", &["--min-step-secs", "10"]);
    stack.start_controller();
    let load = Load::start(&stack.gateway, &[("base", 0.5), ("good", 0.95)], 6);
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack
                .evaluations(&id)
                .await
                .last()
                .is_some_and(|e| e["reason_kind"] == "min_duration")
        })
        .await,
        "enough data before the outage"
    );
    stack.services.stop_clickhouse();
    let down_from = flywheel_now();
    let weights = stack.weights();
    assert_eq!(
        (weights["base"], weights["good"]),
        (5_000, 5_000),
        "still at the first step when ClickHouse stopped"
    );
    // The promotion falls due (10 s into the step) during the outage.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        stack.weights(),
        weights,
        "no action while ClickHouse is down"
    );
    let down_to = flywheel_now();
    stack.services.start_clickhouse();
    stack
        .wait_status(&id, "completed", Duration::from_secs(60))
        .await;
    let evals = stack.evaluations(&id).await;
    assert!(
        evals
            .iter()
            .all(|e| !(down_from..down_to).contains(&num(&e["ts_ms"]))),
        "nothing recorded during the outage"
    );
    let promote = evals.iter().find(|e| e["action"] == "promote").unwrap();
    assert!(
        num(&promote["ts_ms"]) >= down_to,
        "promoted after it: {promote}"
    );

    // Redis: looks go on (ClickHouse is up) and are recorded as holds.
    let id2 = stack.create("good", "best", "50,100", &["--min-step-secs", "4"]);
    load.stop().await;
    let load = Load::start(&stack.gateway, &[("good", 0.5), ("best", 0.95)], 6);
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack
                .evaluations(&id2)
                .await
                .last()
                .is_some_and(|e| e["reason_kind"] == "min_duration")
        })
        .await
    );
    stack.services.stop_redis();
    let stopped_at = flywheel_now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let e = stack.experiment(&id2).await;
    assert_eq!(
        (e["status"].as_str(), num(&e["step"])),
        (Some("running"), 0)
    );
    let during: Vec<Value> = stack
        .evaluations(&id2)
        .await
        .into_iter()
        .filter(|e| num(&e["ts_ms"]) > stopped_at + 1000)
        .collect();
    assert!(!during.is_empty());
    assert!(
        during
            .iter()
            .all(|e| e["action"] == "hold" && e["reason_kind"] == "redis_unavailable"),
        "{during:?}"
    );
    assert!(
        during.iter().any(|e| e["reason_json"]
            .as_str()
            .unwrap_or("")
            .contains("\"decision\":\"promote\"")),
        "a promotion was due and held: {during:?}"
    );
    // Redis back (empty: no persistence): the controller rewrites the
    // step's weights, then promotes.
    stack.services.start_redis();
    stack
        .wait_status(&id2, "completed", Duration::from_secs(60))
        .await;
    load.stop().await;
    let w = stack.weights();
    assert_eq!((w["good"], w["best"]), (0, 10_000));
}

#[tokio::test]
async fn an_injected_sample_ratio_mismatch_holds() {
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::start().await;
    let id = stack.create("base", "good", "50,100", &["--min-step-secs", "3"]);
    let started = num(&stack.experiment(&id).await["step_started_ms"]);
    // The incumbent's real cost per request (Stack::start sent one).
    let cost = stack
        .services
        .query("SELECT any(cost_usd) FROM flywheel.inferences WHERE variant = 'base'")
        .await;
    // Lost candidate logs, as it were: 3000 extra incumbent requests in the
    // step's window, as the gateway would have recorded them.
    stack
        .services
        .query(&format!(
            "INSERT INTO flywheel.inferences (id, ts_ms, date, tenant, route, variant, provider, model, status, latency_ms, cost_usd) \
             SELECT concat('injected-', toString(number)), {ts} + number % 1000, toDate({day}), 'acme', 'chat', 'base', 'pricey', 'm', 200, 1.0, {cost} \
             FROM system.numbers LIMIT 3000",
            ts = started + 1000,
            day = started / 86_400_000
        ))
        .await;
    stack.start_controller();
    let load = Load::start(&stack.gateway, &[("base", 0.5), ("good", 0.95)], 6);
    // Well past the minimum duration with data that would otherwise
    // promote (the next test's twin promotes in seconds).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let counts = load.stop().await;
    let e = stack.experiment(&id).await;
    assert_eq!(
        (e["status"].as_str(), num(&e["step"])),
        (Some("running"), 0),
        "{counts:?}"
    );
    let evals = stack.evaluations(&id).await;
    assert_eq!(transitions(&evals).len(), 1, "only the creation");
    let recent: Vec<&Value> = evals.iter().rev().take(5).collect();
    assert!(
        recent
            .iter()
            .all(|e| e["reason_kind"] == "sample_ratio_mismatch"),
        "{recent:?}"
    );
    assert!(num(&recent[0]["candidate_graded"]) >= 15, "{}", recent[0]);
    let w = stack.weights();
    assert_eq!((w["base"], w["good"]), (5_000, 5_000));
}

/// The gateway side of the shadow step, without the controller: a sampled
/// half of the requests (unary and streamed) is mirrored to the candidate;
/// clients only ever get the incumbent's answers and costs; each mirror is
/// recorded as shadow, paired with its served request, streamed when it
/// was (with a TTFT), and billed to nobody's limit.
#[tokio::test]
async fn the_shadow_step_mirrors_a_sample_of_requests_without_answering_or_billing_them() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start().await;
    let id = stack.create(
        "base",
        "good",
        "shadow,50,100",
        &["--shadow-fraction", "0.5"],
    );
    assert_eq!(
        stack
            .services
            .redis_cli(&["HGET", "flywheel:shadow:chat", "variant"]),
        "good"
    );
    let routes = || async {
        client()
            .get(stack.gateway.url("/admin/routes"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            routes().await["mirrors"]["chat"]["variant"] == "good"
        })
        .await
    );
    assert_eq!(routes().await["mirrors"]["chat"]["fraction"], 0.5);
    let url = stack.gateway.url("/v1/chat/completions");
    let mut served = vec![];
    for i in 0..300 {
        let mut body = chat("chat", &format!("question {i}"));
        if i % 3 == 0 {
            body["stream"] = json!(true);
        }
        let r = client()
            .post(&url)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-flywheel-variant"], "base");
        let rid = r.headers()["x-flywheel-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let cost = r
            .headers()
            .get("x-flywheel-cost-usd")
            .map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
        let text = r.text().await.unwrap();
        if i % 3 == 0 {
            assert!(text.ends_with("data: [DONE]\n\n"));
        }
        served.push((rid, cost));
    }
    // Every event reached ClickHouse (the mirrors finish after their pair).
    let stored = || async {
        stack
            .count(
                "SELECT count() FROM flywheel.inferences FINAL WHERE shadow = 0 AND pair_id != ''",
            )
            .await
            == stack
                .count("SELECT count() FROM flywheel.inferences FINAL WHERE shadow = 1")
                .await
            && stack
                .count("SELECT count() FROM flywheel.inferences FINAL WHERE shadow = 0")
                .await
                >= 301
    };
    assert!(eventually(Duration::from_secs(30), stored).await);
    let mirrors = stack
        .rows(
            "SELECT id, pair_id, variant, stream, ttft_ms, status FROM flywheel.inferences FINAL WHERE shadow = 1",
        )
        .await;
    // About half (binomial, n = 300: 150 ± 9).
    assert!(
        (110..=190).contains(&mirrors.len()),
        "{} mirrors",
        mirrors.len()
    );
    let served_ids: std::collections::HashSet<&str> =
        served.iter().map(|(id, _)| id.as_str()).collect();
    let pairs = stack
        .rows("SELECT id, pair_id, variant FROM flywheel.inferences FINAL WHERE shadow = 0 AND pair_id != ''")
        .await;
    for p in &pairs {
        assert_eq!(
            p["id"], p["pair_id"],
            "a served request's pair id is its own id"
        );
        assert_eq!(p["variant"], "base");
    }
    let paired: std::collections::HashSet<&str> =
        pairs.iter().map(|p| p["id"].as_str().unwrap()).collect();
    for m in &mirrors {
        let pair = m["pair_id"].as_str().unwrap();
        assert!(served_ids.contains(pair) && paired.contains(pair), "{m}");
        assert_eq!(
            (m["variant"].as_str(), num(&m["status"])),
            (Some("good"), 200)
        );
        if num(&m["stream"]) == 1 {
            assert!(
                m["ttft_ms"].as_f64().is_some(),
                "a streamed mirror has a TTFT: {m}"
            );
        }
    }
    assert!(
        mirrors.iter().any(|m| num(&m["stream"]) == 1),
        "streamed mirrors"
    );
    assert!(
        mirrors.iter().any(|m| num(&m["stream"]) == 0),
        "unary mirrors"
    );
    // The client's costs are the served requests' own: mirrors add nothing.
    let costs = stack
        .rows("SELECT id, cost_usd FROM flywheel.inferences FINAL WHERE shadow = 0 AND stream = 0 AND pair_id != ''")
        .await;
    for c in &costs {
        let (_, header) = served
            .iter()
            .find(|(id, _)| c["id"] == id.as_str())
            .unwrap();
        let header = header.expect("unary answers carry their cost");
        assert!(
            (header - c["cost_usd"].as_f64().unwrap()).abs() < 1e-9,
            "{c}"
        );
    }
    // The controller's shadow arms: the mirrors against the requests they
    // mirrored, counts equal (no sample-ratio mismatch).
    let out = canary_cmd(&stack.services)
        .args(["run", "--once", "--settle-ms", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let evals = stack.evaluations(&id).await;
    let look = evals.last().unwrap();
    assert_eq!(look["step_name"], "shadow");
    assert_eq!(
        num(&look["incumbent_requests"]),
        num(&look["candidate_requests"]),
        "{look}"
    );
    assert_eq!(num(&look["candidate_requests"]), mirrors.len() as u64);
    // Ending the shadow step removes the mirror from the gateway.
    stack.cli(&["promote", &id]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            routes().await["mirrors"].get("chat").is_none()
        })
        .await
    );
}

fn flywheel_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
