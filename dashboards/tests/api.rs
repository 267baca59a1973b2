//! The API against the real ClickHouse (127.0.0.1:8123, the server of
//! scripts/services.sh) and Redis (127.0.0.1:6379): known rows in, the
//! router served in-process, and every number the API answers checked
//! against what went in. Each test has its own database (dropped after)
//! and its own Redis key prefix.

// Helpers outside #[test] fns unwrap too: a failure there is the test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use flywheel_api::keys::sha256_hex;
use flywheel_canary_controller::{ops, CanaryStore, QualityMetric, Spec, Weights};
use flywheel_dashboards::{app, auth::Access, state, Options};
use flywheel_feedback::store::{Store, StoreConfig};
use serde_json::{json, Value};

const CH: &str = "http://127.0.0.1:8123";
const ADMIN: &str = "adm-token";
const KEY_A: &str = "sk-tenant-a";
const KEY_B: &str = "sk-tenant-b";
const DAY_MS: u64 = 86_400_000;

fn gateway_config() -> String {
    format!(
        r#"
[admin]
token_sha256 = "{}"
[[auth.keys]]
tenant = "a"
sha256 = "{}"
pin_variants = true
[[auth.keys]]
tenant = "b"
sha256 = "{}"
[[routes]]
name = "r"
[[routes.variants]]
name = "v1"
targets = [{{ provider = "p", model = "m1" }}]
[[routes.variants]]
name = "v2"
targets = [{{ provider = "p", model = "m2" }}]
"#,
        sha256_hex(ADMIN),
        sha256_hex(KEY_A),
        sha256_hex(KEY_B)
    )
}

struct Fixture {
    base: String,
    http: reqwest::Client,
    store: Store,
    db: String,
    prefix: String,
    /// Start of the rows' minute range.
    t0: u64,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let db = format!(
            "dashtest_{name}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000
        );
        let store = Store::try_new(&StoreConfig {
            url: CH.into(),
            database: db.clone(),
            user: None,
            password: None,
        })
        .unwrap();
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("ClickHouse at {CH} (scripts/services.sh start): {e}"));
        let prefix = format!("{db}:");
        let weights = Weights::connect("redis://127.0.0.1:6379/0", &prefix).unwrap();
        let access = Access::parse(&gateway_config()).unwrap();
        let st = state(store.clone(), weights, access, Options::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app(st)).await });
        // Three hours ago, on a whole minute: inside the default 24 h window.
        let now = flywheel_feedback::now_ms();
        let t0 = (now - 3 * 3_600_000) / 60_000 * 60_000;
        Fixture {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            store,
            db,
            prefix,
            t0,
        }
    }

    async fn exec(&self, sql: &str) {
        self.store
            .client()
            .query(sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    async fn get(&self, token: Option<&str>, path: &str) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn json(&self, token: &str, path: &str) -> Value {
        let resp = self.get(Some(token), path).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn drop(self) {
        self.store
            .client()
            .clone()
            .with_database("system")
            .query(&format!("DROP DATABASE IF EXISTS {}", self.db))
            .execute()
            .await
            .unwrap();
    }

    /// Known traffic:
    /// * tenant a, route r, variant v1, model m1: 10 requests at 0.01 USD,
    ///   latencies 100..1000 ms; #8 is a 500, #9 a 429, #7 failed
    ///   validation; #0 and #1 retried once, #2 fell back, #3 failed over;
    ///   TTFT on #0..#4; plus one shadow request (1 USD) never counted;
    /// * tenant b, route r, variant v2, model m2: 4 requests at 0.1 USD.
    ///
    /// Feedback `grader_q`: a's #0..#5 = 1,1,1,0,0,1 (4 of 6 pass 0.5),
    /// b's two = 1, 1. Failed attempts: a's 500 (`upstream 500`), a's
    /// retries (timeouts), b's `b-secret` 502.
    async fn seed(&self) {
        let db = &self.db;
        let mut rows = Vec::new();
        for i in 0..10u64 {
            let ts = self.t0 + i * 1000;
            let status = match i {
                8 => 500,
                9 => 429,
                _ => 200,
            };
            let validation = if i == 7 { "failed" } else { "passed" };
            let ttft = if i < 5 {
                format!("{}", 10 * (i + 1))
            } else {
                "NULL".into()
            };
            rows.push(format!(
                "('a{i}', {ts}, {date}, 'a', 'r', 'v1', 'p', 'm1', {status}, {lat}, {ovh}, {ttft}, \
                 '{validation}', 0.01, {retries}, {fb}, {fo}, 10, 5, 0)",
                date = ts / DAY_MS,
                lat = 100 * (i + 1),
                ovh = i + 1,
                retries = u64::from(i < 2),
                fb = u64::from(i == 2),
                fo = u64::from(i == 3),
            ));
        }
        rows.push(format!(
            "('ashadow', {ts}, {date}, 'a', 'r', 'v2', 'p', 'm2', 200, 5000, 1, NULL, 'passed', 1.0, 0, 0, 0, 1000, 1000, 1)",
            ts = self.t0 + 500,
            date = (self.t0 + 500) / DAY_MS
        ));
        for i in 0..4u64 {
            let ts = self.t0 + 60_000 + i * 1000;
            rows.push(format!(
                "('b{i}', {ts}, {date}, 'b', 'r', 'v2', 'p', 'm2', 200, 50, 1, NULL, 'not_requested', 0.1, 0, 0, 0, 20, 10, 0)",
                date = ts / DAY_MS
            ));
        }
        self.exec(&format!(
            "INSERT INTO {db}.inferences (id, ts_ms, date, tenant, route, variant, provider, model, \
             status, latency_ms, overhead_ms, ttft_ms, validation, cost_usd, retries, fallback_depth, \
             failovers, prompt_tokens, completion_tokens, shadow) VALUES {}",
            rows.join(", ")
        ))
        .await;

        let mut fb = Vec::new();
        for (i, v) in [1.0, 1.0, 1.0, 0.0, 0.0, 1.0].iter().enumerate() {
            let ts = self.t0 + 30_000 + i as u64 * 1000;
            fb.push(format!(
                "('fa{i}', {ts}, {date}, 'a', 'a{i}', 'r', 'v1', 'grader_q', 'float', {v}, 'grader')",
                date = ts / DAY_MS
            ));
        }
        for i in 0..2u64 {
            let ts = self.t0 + 90_000 + i * 1000;
            fb.push(format!(
                "('fb{i}', {ts}, {date}, 'b', 'b{i}', 'r', 'v2', 'grader_q', 'float', 1, 'grader')",
                date = ts / DAY_MS
            ));
        }
        self.exec(&format!(
            "INSERT INTO {db}.feedback (id, ts_ms, date, tenant, inference_id, route, variant, metric, \
             value_kind, value_float, source) VALUES {}",
            fb.join(", ")
        ))
        .await;

        let attempt = |id: &str,
                       seq: u32,
                       tenant: &str,
                       model: &str,
                       outcome: &str,
                       status: &str,
                       reason: &str,
                       ts: u64| {
            format!(
                "('{id}', {seq}, {ts}, {date}, '{tenant}', 'r', 'v', 'p', '{model}', '{outcome}', {status}, {reason})",
                date = ts / DAY_MS,
                reason = if reason.is_empty() { "NULL".to_owned() } else { format!("'{reason}'") }
            )
        };
        let a = [
            attempt(
                "a8",
                0,
                "a",
                "m1",
                "error_status",
                "500",
                "upstream 500",
                self.t0 + 8000,
            ),
            attempt("a0", 0, "a", "m1", "timeout", "NULL", "", self.t0),
            attempt("a1", 0, "a", "m1", "timeout", "NULL", "", self.t0 + 1000),
            attempt("a0", 1, "a", "m1", "ok", "200", "", self.t0),
            attempt(
                "b0",
                0,
                "b",
                "m2",
                "error_status",
                "502",
                "b-secret",
                self.t0 + 60_000,
            ),
            attempt(
                "ashadow",
                0,
                "a",
                "m2",
                "timeout",
                "NULL",
                "shadow-only",
                self.t0 + 500,
            ),
        ];
        self.exec(&format!(
            "INSERT INTO {db}.attempts (inference_id, seq, ts_ms, date, tenant, route, variant, provider, \
             model, outcome, status, reason) VALUES {}",
            a.join(", ")
        ))
        .await;
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn numbers_match_the_rows_and_tenants_are_isolated() {
    let fx = Fixture::new("numbers").await;
    fx.seed().await;

    // Auth: no token, an unknown one, a tenant at an admin call.
    assert_eq!(fx.get(None, "/api/overview").await.status(), 401);
    let unknown = fx.get(Some("nope"), "/api/overview").await;
    assert_eq!(unknown.status(), 401);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    // Every admin call, whatever the id (known or not: a tenant must not
    // learn which exist).
    for path in [
        "/api/experiments",
        "/api/experiments/any-id",
        "/api/runs",
        "/api/runs/any-run",
        "/api/overview?format=csv&table=frontier&tenant=a",
        "/api/latency?tenant=a",
        "/api/reliability?tenant=a",
        "/api/quality?tenant=a",
        "/api/filters?tenant=a",
    ] {
        assert_eq!(fx.get(Some(KEY_B), path).await.status(), 403, "{path}");
    }
    assert_eq!(
        fx.get(Some(KEY_B), "/api/overview?tenant=a").await.status(),
        403
    );
    assert_eq!(
        fx.json(KEY_B, "/api/session").await,
        json!({"scope": "tenant", "tenant": "b"})
    );

    // Admin overview: both tenants, shadow left out; metric defaults to
    // the grader metric.
    let o = fx.json(ADMIN, "/api/overview").await;
    assert_eq!(o["metric"], "grader_q");
    let cur = &o["totals"]["current"];
    assert_eq!(cur["requests"], 14);
    assert_eq!(cur["errors"], 2);
    assert!(close(f(&cur["cost_usd"]), 0.5), "{cur}");
    assert_eq!(cur["graded"], 8);
    assert_eq!(cur["successes"], 6);
    assert_eq!(cur["prompt_tokens"], 10 * 10 + 4 * 20);
    assert_eq!(o["totals"]["previous"]["requests"], 0);
    assert_eq!(o["totals"]["previous"]["cost_per_request"], Value::Null);
    let series_requests: u64 = o["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(series_requests, 14);

    // Buckets of whole hours read the hourly rollup: the same numbers.
    let hour = fx.t0 / 3_600_000 * 3_600_000;
    let hourly = fx
        .json(
            ADMIN,
            &format!("/api/overview?from_ms={}&step_ms=3600000", hour - 3_600_000),
        )
        .await;
    assert_eq!(hourly["window"]["step_ms"], 3_600_000);
    assert_eq!(hourly["totals"]["current"], o["totals"]["current"]);
    let la_hourly = fx
        .json(
            KEY_A,
            &format!("/api/latency?from_ms={}&step_ms=7200000", hour - 3_600_000),
        )
        .await;
    assert_eq!(la_hourly["table"][0]["requests"], 10);
    assert!((f(&la_hourly["table"][0]["p50"]) - 550.0).abs() <= 50.0);

    // Tenant a sees only its own rows.
    let oa = fx.json(KEY_A, "/api/overview").await;
    let cur = &oa["totals"]["current"];
    assert_eq!(cur["requests"], 10);
    assert!(close(f(&cur["cost_usd"]), 0.1));
    assert!(close(f(&cur["cost_per_request"]), 0.01));
    assert_eq!(cur["graded"], 6);
    assert_eq!(cur["successes"], 4);
    assert!(close(f(&cur["success_rate"]), 4.0 / 6.0));
    assert!(close(f(&cur["cost_per_success"]), 0.01 / (4.0 / 6.0)));
    let frontier = oa["frontier"].as_array().unwrap();
    assert_eq!(frontier.len(), 1);
    assert_eq!(frontier[0]["model"], "m1");
    assert_eq!(frontier[0]["quality_n"], 6);
    assert!(close(f(&frontier[0]["quality_mean"]), 4.0 / 6.0));
    assert!(f(&frontier[0]["quality_low"]) < 4.0 / 6.0);

    // Without a metric: success = status < 400 and validation not failed.
    let plain = fx
        .json(KEY_A, "/api/overview?metric=none_such&threshold=0.5")
        .await;
    assert_eq!(plain["totals"]["current"]["graded"], 0);
    assert_eq!(plain["totals"]["current"]["success_rate"], Value::Null);

    // Tenant b: its own 4 requests, never a's.
    let ob = fx.json(KEY_B, "/api/overview?tenant=b").await;
    assert_eq!(ob["totals"]["current"]["requests"], 4);
    assert!(close(f(&ob["totals"]["current"]["cost_usd"]), 0.4));
    let rb = fx.json(KEY_B, "/api/reliability").await;
    let reasons: Vec<&str> = rb["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, vec!["b-secret"]);
    let filters_b = fx.json(KEY_B, "/api/filters").await;
    assert_eq!(filters_b["tenants"], json!(["b"]));
    assert_eq!(filters_b["models"], json!(["m2"]));

    // Admin filters a tenant.
    let oa2 = fx.json(ADMIN, "/api/overview?tenant=a").await;
    assert_eq!(oa2["totals"]["current"], oa["totals"]["current"]);

    // A quote in a filter value is a value, not SQL.
    let evil = fx
        .json(ADMIN, "/api/overview?route=r%27%20OR%201%3D1%20--")
        .await;
    assert_eq!(evil["totals"]["current"]["requests"], 0);

    // Reliability of a.
    let ra = fx.json(KEY_A, "/api/reliability").await;
    let sum = |k: &str| -> u64 {
        ra["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (
            sum("requests"),
            sum("retries"),
            sum("fallbacks"),
            sum("failovers"),
            sum("validation_failures"),
            sum("errors_4xx"),
            sum("errors_5xx")
        ),
        (10, 2, 1, 1, 1, 1, 1)
    );
    let errors = ra["errors"].as_array().unwrap();
    assert_eq!(errors[0]["outcome"], "timeout");
    assert_eq!(errors[0]["attempts"], 2);
    assert_eq!(errors[0]["requests"], 2);
    assert_eq!(errors[1]["reason"], "upstream 500");
    assert_eq!(errors[1]["status"], 500);
    assert_eq!(
        errors.len(),
        2,
        "the shadow's attempt and b's are not a's: {errors:?}"
    );
    assert_eq!(ra["circuits"], json!([]));

    // Latency of a: 100..1000 ms, TTFT on five, overhead 1..10.
    let la = fx.json(KEY_A, "/api/latency").await;
    let t = &la["table"][0];
    assert_eq!(t["requests"], 10);
    assert!((f(&t["p50"]) - 550.0).abs() <= 50.0, "{t}");
    assert!(f(&t["p99"]) >= 900.0 && f(&t["p99"]) <= 1000.0, "{t}");
    assert!((f(&t["ttft_p50"]) - 30.0).abs() <= 5.0, "{t}");
    assert!(f(&t["overhead_p99"]) <= 10.0);
    // b's model has no TTFT: null, not 0.
    let lb = fx.json(KEY_B, "/api/latency").await;
    assert_eq!(lb["table"][0]["ttft_p50"], Value::Null);

    // Quality.
    let qa = fx.json(KEY_A, "/api/quality").await;
    let m = &qa["metrics"][0];
    assert_eq!(
        (m["metric"].as_str(), m["source"].as_str(), m["n"].as_u64()),
        (Some("grader_q"), Some("grader"), Some(6))
    );
    assert!(close(f(&m["mean"]), 4.0 / 6.0));
    let bins = qa["histograms"].as_array().unwrap();
    assert_eq!(bins.len(), 10);
    assert_eq!(bins[0]["count"], 2);
    assert_eq!(bins[9]["count"], 4);

    // CSV of a table is the JSON's table.
    let resp = fx
        .get(Some(ADMIN), "/api/overview?format=csv&table=frontier")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"overview-frontier.csv\""
    );
    let csv = resp.text().await.unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let frontier = o["frontier"].as_array().unwrap();
    assert_eq!(rows.len(), frontier.len());
    for (row, obj) in rows.iter().zip(frontier) {
        for (k, cell) in header.iter().zip(row) {
            let v = &obj[*k];
            let expected = match v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(*cell, expected, "column {k}");
        }
    }
    let bad = fx
        .get(Some(ADMIN), "/api/overview?format=csv&table=nope")
        .await;
    assert_eq!(bad.status(), 400);

    fx.drop().await;
}

#[tokio::test]
async fn experiments_read_and_act() {
    let fx = Fixture::new("experiments").await;
    let canary = CanaryStore::new(fx.store.clone());
    let weights = Weights::connect("redis://127.0.0.1:6379/0", &fx.prefix).unwrap();
    let (exp, _) = ops::create(
        &canary,
        &weights,
        ops::NewExperiment {
            route: "r",
            incumbent: "v1",
            candidate: "v2",
            spec: Spec {
                quality: vec![QualityMetric::parse("grader_q").unwrap()],
                ..Spec::default()
            },
            origin: "tuner:job-123",
            actor: "test",
        },
    )
    .await
    .unwrap();

    let list = fx.json(ADMIN, "/api/experiments").await;
    assert_eq!(list["experiments"][0]["id"], exp.id.as_str());
    assert_eq!(list["experiments"][0]["status"], "running");
    let one = fx
        .json(ADMIN, &format!("/api/experiments/{}", exp.id))
        .await;
    assert_eq!(one["run"], "job-123");
    assert_eq!(one["evaluations"][0]["action"], "create");
    assert!(one["experiment"]["spec"].is_object());

    let act = |body: Value| {
        fx.http
            .post(format!("{}/api/experiments/{}/actions", fx.base, exp.id))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let wrong = act(json!({"action": "pause", "confirm": "nope", "reason": "x"}))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let tenant = fx
        .http
        .post(format!("{}/api/experiments/{}/actions", fx.base, exp.id))
        .bearer_auth(KEY_A)
        .json(&json!({"action": "pause", "confirm": exp.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), 403);
    let ok = act(json!({"action": "pause", "confirm": exp.id, "reason": "looks off"}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["experiment"]["status"], "paused");
    assert_eq!(body["weights_applied"], true);
    let again = act(json!({"action": "pause", "confirm": exp.id}))
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "pausing a paused experiment");

    let one = fx
        .json(ADMIN, &format!("/api/experiments/{}", exp.id))
        .await;
    let last = one["evaluations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "pause");
    assert_eq!(last["actor"], "dashboard");
    assert_eq!(last["manual"], true);
    assert_eq!(last["reason"], "looks off");

    // No --tuner-state: an empty list that says why.
    let runs = fx.json(ADMIN, "/api/runs").await;
    assert_eq!(runs["runs"], json!([]));
    assert!(runs["unavailable"]
        .as_str()
        .unwrap()
        .contains("--tuner-state"));

    fx.drop().await;
}

#[tokio::test]
async fn pages_are_served_with_a_strict_policy() {
    let fx = Fixture::new("pages").await;
    let r = fx.get(None, "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'self'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let js = fx.get(None, "/vendor/uPlot.iife.min.js").await;
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let missing = fx.get(None, "/api/nope").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));
    fx.drop().await;
}
