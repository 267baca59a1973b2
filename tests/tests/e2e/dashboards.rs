//! The dashboards' pages in a real browser: a known load (two tenants, two
//! variants at different prices, graded answers, a route that always fails)
//! goes through the gateway into a private ClickHouse; `flywheel-dashboards`
//! serves it; `dashboards/tests/browser.py` drives headless Chromium over
//! every page. The overview's numbers must be what ClickHouse holds (asked
//! here directly, from the raw tables, not through the server's rollups),
//! before and after a filter; every page renders without a console error
//! and draws its charts; the playground streams two variants side by side
//! and its thumbs-up lands in ClickHouse; an experiment paused with the
//! page's button (after its confirmation) is paused in ClickHouse, with the
//! reason typed in its decision log.
//!
//! Needs Debian's `chromium` and `chromium-driver`, and `selenium` in
//! `$FLYWHEEL_PYTHON` (scripts/lib.sh `ensure_python` installs it). The
//! screenshots go to a scratch dir, and to `$FLYWHEEL_SCREENSHOTS` when set.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flywheel_tests::*;
use serde_json::{json, Value};

/// The database the gateway captures into (`capture_config`).
const DATABASE: &str = "flywheel";
/// The grader metric the overview's "successful answer" uses.
const METRIC: &str = "grader_exact";
const EXPERIMENT: &str = "exp-dash";
/// What the browser types as the reason of its pause.
const PAUSE_REASON: &str = "paused from the browser test";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Both tenants may pin a variant (the playground does); `cheap` and `dear`
/// answer the two variants of `chat` at prices 30× apart, `down` fails
/// every attempt (5xx on `broken`).
fn gateway_config(mock: &Proc, services: &Services, dir: &Path) -> String {
    let provider = |name: &str, input: f64, output: f64, headers: &str| {
        format!(
            "[providers.{name}]\nbase_url = \"http://{}/v1\"\nprice_input_per_1m = {input}\nprice_output_per_1m = {output}\nheaders = {{ {headers} }}\n",
            mock.addr
        )
    };
    format!(
        r#"
[server]
max_body_bytes = 65536
shutdown_grace_ms = 10000

[[auth.keys]]
tenant = "acme"
sha256 = "{acme}"
pin_variants = true

[[auth.keys]]
tenant = "globex"
sha256 = "{globex}"
pin_variants = true

[admin]
token_sha256 = "{admin}"

[metering]
sink = "jsonl"
path = "{events}"

[retry]
max_retries = 1
validation_retries = 1
initial_backoff_ms = 5
max_backoff_ms = 20
attempt_timeout_ms = 5000
total_timeout_ms = 20000
stream_idle_timeout_ms = 2000

{capture}
[[feedback.metrics]]
name = "thumbs"
type = "boolean"

[[feedback.metrics]]
name = "{METRIC}"
type = "float"

{cheap}
{dear}
{down}
[[routes]]
name = "chat"
[[routes.variants]]
name = "a"
weight = 1
targets = [{{ provider = "cheap", model = "small" }}]
[[routes.variants]]
name = "b"
weight = 1
targets = [{{ provider = "dear", model = "big" }}]

[[routes]]
name = "broken"
[[routes.variants]]
name = "v"
targets = [{{ provider = "down", model = "m" }}]
"#,
        acme = sha256_hex(KEY),
        globex = sha256_hex(OTHER_KEY),
        admin = sha256_hex(ADMIN_TOKEN),
        events = dir.join("events.jsonl").display(),
        capture = capture_config(services, &dir.join("wal")),
        cheap = provider("cheap", 0.1, 0.2, ""),
        dear = provider("dear", 3.0, 6.0, ""),
        down = provider("down", 1.0, 2.0, "\"x-mock-error-rate\" = '1'"),
    )
}

/// One request, pinned to `variant`; its status and request id once the
/// whole body is read.
async fn send(gw: &Proc, key: &str, route: &str, variant: &str, stream: bool) -> (u16, String) {
    let mut body = chat(route, "Tell me something.");
    if stream {
        body["stream"] = json!(true);
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-flywheel-variant", variant)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{route}/{variant}: {e}"));
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-flywheel-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let _ = r.text().await;
    (status, id)
}

async fn grade(gw: &Proc, key: &str, id: &str, value: f64) {
    let r = client()
        .post(gw.url("/v1/feedback"))
        .bearer_auth(key)
        .json(&json!({"inference_id": id, "metric": METRIC, "value": value}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// The load: how many inferences and feedback rows ClickHouse must hold.
async fn load(gw: &Proc) -> (u64, u64) {
    let (mut inferences, mut feedback) = (0, 0);
    let calls = [(KEY, 16), (OTHER_KEY, 4)];
    for (key, n) in calls {
        for i in 0..n {
            let variant = if i % 2 == 0 { "a" } else { "b" };
            let stream = i % 4 == 3;
            let (status, id) = send(gw, key, "chat", variant, stream).await;
            assert_eq!(status, 200, "chat/{variant}");
            inferences += 1;
            // Variant b grades better: 0.9 three times in four; a: 0.2 one in three.
            let value = match (variant, i % 3 == 0) {
                ("a", true) => 0.2,
                ("a", false) => 0.7,
                (_, true) => 0.6,
                _ => 0.9,
            };
            grade(gw, key, &id, value).await;
            feedback += 1;
        }
    }
    for _ in 0..3 {
        let (status, _) = send(gw, KEY, "broken", "v", false).await;
        assert!(status >= 500, "broken answered {status}");
        inferences += 1;
    }
    (inferences, feedback)
}

/// `FORMAT JSONEachRow` rows of a query.
async fn rows(services: &Services, sql: &str) -> Vec<Value> {
    services
        .query(&format!("{sql} FORMAT JSONEachRow"))
        .await
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// ClickHouse quotes 64-bit integers in JSON.
fn number(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// What the overview must show for the window and `filter` (a condition on
/// `inferences`), from the raw tables: the stat cards' totals and the
/// frontier's rows.
async fn expected(services: &Services, from: u64, to: u64, filter: &str) -> Value {
    let base = format!(
        "FROM {DATABASE}.inferences FINAL WHERE shadow = 0 AND ts_ms >= {from} AND ts_ms < {to}{filter}"
    );
    let t = &rows(
        services,
        &format!(
            "SELECT count() AS n, sum(cost_usd) AS cost, countIf(status >= 400) AS errors {base}"
        ),
    )
    .await[0];
    let requests = number(&t["n"]);
    let errors = number(&t["errors"]);
    let mut frontier = Vec::new();
    let per_version = rows(
        services,
        &format!(
            "SELECT route, variant, model, count() AS n, sum(cost_usd) AS cost {base} \
             GROUP BY route, variant, model ORDER BY route, variant, model"
        ),
    )
    .await;
    let graded = rows(
        services,
        &format!(
            "SELECT route, variant, model, count() AS n, avg(v) AS mean FROM \
             (SELECT id AS iid, route, variant, model {base}) \
             ANY INNER JOIN (SELECT assumeNotNull(inference_id) AS iid, avg(value_float) AS v \
             FROM {DATABASE}.feedback FINAL WHERE metric = '{METRIC}' AND isNotNull(inference_id) GROUP BY iid) \
             USING iid GROUP BY route, variant, model"
        ),
    )
    .await;
    for r in per_version {
        let mut row = json!({
            "route": r["route"], "variant": r["variant"], "model": r["model"],
            "requests": number(&r["n"]), "cost_usd": number(&r["cost"]),
        });
        let g = graded.iter().find(|g| {
            g["route"] == r["route"] && g["variant"] == r["variant"] && g["model"] == r["model"]
        });
        match g {
            Some(g) => {
                row["quality_n"] = json!(number(&g["n"]));
                row["quality_mean"] = json!(number(&g["mean"]));
            }
            // Not graded: no quality (the table shows "–").
            None => row["quality_mean"] = Value::Null,
        }
        frontier.push(row);
    }
    json!({
        "totals": {
            "requests": requests,
            "cost_usd": number(&t["cost"]),
            "error_rate": if requests > 0.0 { json!(errors / requests) } else { Value::Null },
        },
        "frontier": frontier,
    })
}

/// An experiment started by a tuner run, with a few evaluations whose
/// interval narrows (the band), a run's training steps and offline gate,
/// and the run's journal: the controller and the tuner do not run here.
async fn fixtures(services: &Services, state_dir: &Path) -> String {
    let ts = now_ms() - 60_000;
    let run = format!("dash-{ts}");
    let date = format!("toDate(toDateTime({}))", ts / 1000);
    // A spec the controller parses: the default ramp and guardrails, graded by METRIC.
    let spec = format!(r#"{{"quality":[{{"metric":"{METRIC}"}}]}}"#);
    let mut statements = vec![format!(
        "INSERT INTO {DATABASE}.experiments (id, revision, route, incumbent, candidate, spec_json, step, step_name, candidate_percent, step_started_ms, status, status_reason, origin, created_ms, updated_ms) VALUES ('{EXPERIMENT}', 3, 'chat', 'a', 'b', '{spec}', 2, 'ramp-25', 25, {ts}, 'running', 'ramping', 'tuner:{run}', {ts}, {})",
        ts + 40_000
    )];
    let mut evals = Vec::new();
    for i in 0..5u64 {
        let half = 0.8 / (i as f64 + 1.0);
        let (percent, cw) = [(1, 100), (5, 500), (5, 500), (25, 2500), (25, 2500)][i as usize];
        evals.push(format!(
            "('ev-{i}', '{EXPERIMENT}', {}, {date}, {i}, 'chat', {}, 'ramp-{percent}', {percent}, {}, 'hold', 0, 'controller', 'not_significant', '{{}}', '{{}}', 1, 'running', {}, {cw}, {}, {}, {}, {}, 0.2, {}, {}, {})",
            ts + i * 10_000,
            i / 2,
            i * 10,
            10_000 - cw,
            40 * (i + 1),
            5 * (i + 1),
            30 * (i + 1),
            4 * (i + 1),
            0.2 - half,
            0.2 + half,
            if i == 4 { "['ttft:no_data']" } else { "[]" },
        ));
    }
    statements.push(format!(
        "INSERT INTO {DATABASE}.canary_evaluations (id, experiment_id, ts_ms, date, revision, route, step, step_name, candidate_percent, elapsed_secs, action, manual, actor, reason_kind, reason_json, evidence_json, step_after, status_after, incumbent_weight, candidate_weight, incumbent_requests, candidate_requests, incumbent_graded, candidate_graded, qpd_advantage, qpd_lower, qpd_upper, guardrails_failing) VALUES {}",
        evals.join(", ")
    ));
    let steps: Vec<String> = (1..=12u64)
        .map(|s| {
            let r = 0.3 + 0.4 * (1.0 - (-(s as f64) / 4.0).exp());
            let heldout = if s % 4 == 0 { format!("{}", r - 0.05) } else { "NULL".into() };
            format!(
                "('{run}', {s}, {}, {}, {r}, 0.1, {}, {}, 1.1, 0.9, 0.00001, {}, 2, 100, {heldout})",
                ts + s * 1000,
                1.0 / s as f64,
                r - 0.1,
                0.002 * s as f64,
                40 + s
            )
        })
        .collect();
    statements.push(format!(
        "INSERT INTO {DATABASE}.training_steps (run_id, step, ts_ms, loss, reward_mean, reward_std, pass_rate, kl, entropy, grad_norm, learning_rate, response_len_mean, step_secs, tokens_per_sec, heldout_reward) VALUES {}",
        steps.join(", ")
    ));
    statements.push(format!(
        "INSERT INTO {DATABASE}.eval_results (run_id, ts_ms, dataset, grader, config, model, requests, request_errors, grader_errors, mean_score, mean_score_low, mean_score_high, pass_rate, pass_rate_low, pass_rate_high, tokens_per_request, retries_per_request, fallbacks_per_request, latency_p50_ms, latency_p95_ms, cost_per_request_usd, quality_per_dollar, report_json) VALUES ('{run}', {ts}, 'tasks', 'exact', 'candidate', 'b', 10, 0, 0, 0.8, 0.7, 0.9, 0.8, 0.7, 0.9, 100, 0, 0, 100, 200, 0.0004, 2000, '{{}}'), ('{run}', {ts}, 'tasks', 'exact', 'incumbent', 'a', 10, 0, 0, 0.5, 0.4, 0.6, 0.5, 0.4, 0.6, 100, 0, 0, 100, 200, 0.00002, 25000, '{{}}')"
    ));
    for sql in statements {
        services.query(&sql).await;
    }
    // The tuner's journal (tuner/src/service/journal.rs: one JSON record a line).
    let dir = state_dir.join("runs").join(&run);
    std::fs::create_dir_all(&dir).unwrap();
    let records = [
        json!({"at_ms": ts, "event": "started", "stage": "dataset"}),
        json!({"at_ms": ts + 100, "event": "finished", "stage": "dataset", "detail": {"train": 16, "heldout": 4}}),
        json!({"at_ms": ts + 200, "event": "started", "stage": "train"}),
        json!({"at_ms": ts + 12_000, "event": "finished", "stage": "train", "detail": {"steps": 12}}),
        json!({"at_ms": ts + 12_100, "event": "started", "stage": "deploy"}),
        json!({"at_ms": ts + 12_200, "event": "finished", "stage": "deploy", "detail": {"version": "b"}}),
        json!({"at_ms": ts + 12_300, "event": "started", "stage": "gate"}),
        json!({"at_ms": ts + 13_000, "event": "finished", "stage": "gate", "detail": {}}),
        json!({"at_ms": ts + 13_100, "event": "started", "stage": "canary"}),
    ];
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("journal.jsonl"), text).unwrap();
    run
}

async fn count(services: &Services, sql: &str) -> u64 {
    services
        .try_query(sql)
        .await
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

async fn scalar_f64(services: &Services, sql: &str) -> f64 {
    let text = services.try_query(sql).await.unwrap_or_default();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql} gave {text:?}"))
}

async fn rows_in(services: &Services, table: &str) -> u64 {
    count(services, &format!("SELECT count() FROM {DATABASE}.{table}")).await
}

/// Starts `flywheel-dashboards` on a free port and waits until it answers.
async fn start_dashboards(gw: &Proc, services: &Services, state_dir: &Path) -> Proc {
    let dir = scratch_dir("dashboards");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("dashboards.log")).unwrap();
    let child = Command::new(bin("flywheel-dashboards"))
        .args(["--listen", &addr, "--gateway-config"])
        .arg(gw.dir.join("flywheel.toml"))
        .args([
            "--gateway-url",
            &gw.url(""),
            "--gateway-metrics-token",
            ADMIN_TOKEN,
            "--playground-key",
            KEY,
            "--tuner-state",
        ])
        .arg(state_dir)
        .args([
            "--clickhouse-url",
            &services.clickhouse_url(),
            "--database",
            DATABASE,
        ])
        .args(["--redis-url", &services.redis_url()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn flywheel-dashboards");
    let proc = Proc { child, addr, dir };
    let up = eventually(Duration::from_secs(30), || async {
        client()
            .get(proc.url("/api/session"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        up,
        "flywheel-dashboards did not answer: {}",
        std::fs::read_to_string(proc.dir.join("dashboards.log")).unwrap_or_default()
    );
    proc
}

fn python() -> String {
    std::env::var("FLYWHEEL_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Chromium, its driver and selenium are there, or the test says how to get them.
fn check_browser_tools() {
    for path in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: `apt-get install chromium chromium-driver`"
        );
    }
    let ok = Command::new(python())
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "selenium is not importable by {}: run the tests through scripts/test.sh (ensure_python installs it) or set FLYWHEEL_PYTHON",
        python()
    );
}

/// Runs browser.py; whether it passed, and its output.
async fn browse(url: String, token: &str, expect: &Value, dir: &Path) -> (bool, String) {
    std::fs::create_dir_all(dir).unwrap();
    let expect_path = dir.join("expect.json");
    std::fs::write(&expect_path, serde_json::to_string_pretty(expect).unwrap()).unwrap();
    let script = manifest_dir().join("../dashboards/tests/browser.py");
    let (token, dir) = (token.to_owned(), dir.to_owned());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(&script)
            .args(["--url", &url, "--token", &token, "--expect"])
            .arg(&expect_path)
            .arg("--screenshots")
            .arg(dir.join("screenshots"))
            .arg("--result")
            .arg(dir.join("result.json"))
            .output()
            .expect("run browser.py")
    })
    .await
    .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("browser.py ({:.0?}):\n{log}", started.elapsed());
    (out.status.success(), log)
}

/// The screenshots of a run, copied to `$FLYWHEEL_SCREENSHOTS/<name>` when set.
fn keep_screenshots(dir: &Path, name: &str) {
    let Some(dest) = std::env::var_os("FLYWHEEL_SCREENSHOTS").map(PathBuf::from) else {
        return;
    };
    let dest = dest.join(name);
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(dir.join("screenshots"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::copy(entry.path(), dest.join(entry.file_name()));
    }
    println!("screenshots copied to {}", dest.display());
}

#[tokio::test]
async fn dashboards_pages_show_clickhouse_numbers_in_a_browser() {
    // A headless browser takes a core for a minute: not beside the heavy tests.
    let _heavy = HEAVY.lock().await;
    check_browser_tools();
    let services = Services::new();
    services.start_clickhouse();
    services.start_redis();
    let mock = start_mock(&[]);
    let gw_dir = scratch_dir("dashboards-gateway");
    let gw = start_gateway_with(&gw_dir, &gateway_config(&mock, &services, &gw_dir));

    // Whole minutes: the server's rollups are per minute.
    let from = now_ms() / 60_000 * 60_000 - 60_000;
    let (inferences, feedback) = load(&gw).await;
    let shipped = eventually(Duration::from_secs(60), || async {
        rows_in(&services, "inferences").await >= inferences
            && rows_in(&services, "feedback").await >= feedback
    })
    .await;
    assert!(
        shipped,
        "ClickHouse has {} of {inferences} inferences and {} of {feedback} feedback",
        rows_in(&services, "inferences").await,
        rows_in(&services, "feedback").await,
    );
    let state_dir = scratch_dir("dashboards-tuner");
    let run = fixtures(&services, &state_dir).await;
    let dash = start_dashboards(&gw, &services, &state_dir).await;

    // The window ends before the playground's requests, so the numbers
    // checked are the load's alone.
    let to = (now_ms() / 60_000 + 1) * 60_000;
    let hash = format!("range=custom&from={from}&to={to}&metric={METRIC}&threshold=0.5");
    let work = scratch_dir("dashboards-browser");

    // The admin: every tenant, every page, a filter, the playground.
    let mut overview = expected(&services, from, to, "").await;
    assert_eq!(
        overview["totals"]["requests"],
        json!(inferences as f64),
        "{overview}"
    );
    let only_a = expected(&services, from, to, " AND variant = 'a'").await;
    overview["filter"] = json!({"name": "variant", "value": "a"});
    overview["filter"]["totals"] = only_a["totals"].clone();
    overview["filter"]["frontier"] = only_a["frontier"].clone();
    let expect = json!({
        "hash": hash,
        "admin": true,
        "overview": overview,
        "playground": {"route": "chat", "variants": ["a", "b"], "prompt": "Say hello.", "thumbs": "up"},
        "action": {"experiment": EXPERIMENT, "action": "pause", "status": "paused", "reason": PAUSE_REASON},
        "tolerance": 1e-6,
    });
    let admin_dir = work.join("admin");
    let (passed, log) = browse(dash.url(""), ADMIN_TOKEN, &expect, &admin_dir).await;
    keep_screenshots(&admin_dir, "admin");
    assert!(
        passed,
        "the admin's browser checks failed (screenshots in {}; server log {}):\n{log}",
        admin_dir.join("screenshots").display(),
        dash.dir.join("dashboards.log").display()
    );
    assert!(
        log.contains("training detail") && log.contains("experiments detail"),
        "the run {run} or experiment {EXPERIMENT} was not visited:\n{log}"
    );

    // The pause clicked and confirmed in the browser is the experiment's
    // state now, recorded as the dashboard's manual action with its reason.
    let paused = count(
        &services,
        &format!("SELECT count() FROM {DATABASE}.experiments FINAL WHERE id = '{EXPERIMENT}' AND status = 'paused'"),
    )
    .await;
    assert_eq!(
        paused, 1,
        "the experiment is not paused after the browser's action"
    );
    let recorded = count(
        &services,
        &format!(
            "SELECT count() FROM {DATABASE}.canary_evaluations WHERE experiment_id = '{EXPERIMENT}' AND manual = 1 AND actor = 'dashboard' AND position(reason_json, '{PAUSE_REASON}') > 0"
        ),
    )
    .await;
    assert_eq!(recorded, 1, "the manual pause is not in the decision log");

    // The playground's thumbs went through the gateway into ClickHouse.
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(admin_dir.join("result.json")).unwrap())
            .unwrap();
    let id = result["thumbs"]["inference_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no thumbs in {result}"))
        .to_owned();
    let thumbs = format!(
        "SELECT count() FROM {DATABASE}.feedback WHERE inference_id = '{id}' AND metric = 'thumbs' AND value_float = 1"
    );
    let recorded = eventually(Duration::from_secs(30), || async {
        count(&services, &thumbs).await == 1
    })
    .await;
    assert!(recorded, "the thumbs-up on {id} is not in ClickHouse");
    // Both playground answers are in ClickHouse before the tenant's numbers
    // are taken, so that the page and the expectation see the same rows.
    let both = eventually(Duration::from_secs(30), || async {
        rows_in(&services, "inferences").await >= inferences + 2
    })
    .await;
    assert!(both, "the playground's two answers are not in ClickHouse");
    let answered = count(
        &services,
        &format!(
            "SELECT count() FROM {DATABASE}.inferences WHERE id = '{id}' AND route = 'chat' AND variant = 'a'"
        ),
    )
    .await;
    assert_eq!(
        answered, 1,
        "the playground's answer {id} is not an inference of chat/a"
    );
    // The streamed answer's cost on the page is its event's.
    let shown = result["playground_costs"]["A"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cost shown in {result}"));
    let cost = scalar_f64(
        &services,
        &format!("SELECT cost_usd FROM {DATABASE}.inferences WHERE id = '{id}'"),
    )
    .await;
    assert!(
        cost > 0.0 && (shown - cost).abs() <= 1e-12 + 1e-9 * cost,
        "the page shows {shown} for {id}, ClickHouse holds {cost}"
    );

    // A tenant: its own rows only, no admin pages.
    let mut overview = expected(&services, from, to, " AND tenant = 'acme'").await;
    let acme_a = expected(
        &services,
        from,
        to,
        " AND tenant = 'acme' AND variant = 'a'",
    )
    .await;
    assert_ne!(
        overview["totals"]["requests"],
        json!(inferences as f64),
        "globex's requests would not show whether the tenant's view is filtered"
    );
    overview["filter"] = json!({"name": "variant", "value": "a"});
    overview["filter"]["totals"] = acme_a["totals"].clone();
    overview["filter"]["frontier"] = acme_a["frontier"].clone();
    let expect = json!({"hash": hash, "admin": false, "overview": overview, "tolerance": 1e-6});
    let tenant_dir = work.join("tenant");
    let (passed, log) = browse(dash.url(""), KEY, &expect, &tenant_dir).await;
    keep_screenshots(&tenant_dir, "tenant");
    assert!(
        passed,
        "the tenant's browser checks failed (screenshots in {}):\n{log}",
        tenant_dir.join("screenshots").display()
    );
    assert!(
        log.contains("scope shown: 'tenant acme'"),
        "the tenant's scope is not shown:\n{log}"
    );
}
