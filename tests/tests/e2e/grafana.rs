//! The Grafana provisioning in `dashboards/grafana`: every panel's query
//! works on a live gateway's data. Grafana is not installable here, so the
//! test does what Grafana would do: it expands the ClickHouse plugin's
//! macros and variables and runs each SQL on a real ClickHouse (18.16, the
//! project's server), and it sends each PromQL expression to a real
//! Prometheus that scraped the gateway.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flywheel_tests::*;
use serde_json::{json, Value};

const CLICKHOUSE_UID: &str = "flywheel-clickhouse";
const PROMETHEUS_UID: &str = "flywheel-prometheus";
/// The database the gateway captures into (`capture_config`).
const DATABASE: &str = "flywheel";
/// How long the load runs: Prometheus scrapes every second, so each rate
/// window below holds a dozen samples.
const LOAD: Duration = Duration::from_secs(15);
/// What `$__rate_interval` becomes in the PromQL: Grafana takes at least four
/// scrape intervals; the load lasted 15 s, so a 15 s window is all load.
const RATE_INTERVAL: &str = "15s";

fn grafana_dir() -> PathBuf {
    manifest_dir().join("../dashboards/grafana")
}

fn dashboard(file: &str) -> Value {
    let path = grafana_dir().join("dashboards").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of a dashboard, those nested in collapsed rows included.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(children) = p.get("panels") {
                walk(children, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// (panel title, panel, target) of every query target.
fn targets(d: &Value) -> Vec<(String, &Value, &Value)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), p, t))
        })
        .collect()
}

/// uid -> type of the datasources in the provisioning YAML. A line scanner,
/// not a YAML parser (the tests crate has none, and the file is ours): each
/// `- name:` starts an entry whose `uid:` and `type:` lines fill it.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let path = grafana_dir().join("provisioning/datasources/flywheel.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().any(|l| l.trim() == "apiVersion: 1"), "{text}");
    let mut entries: Vec<(Option<String>, Option<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.split(" #").next().unwrap().trim();
        let value = |key: &str| line.strip_prefix(key).map(|v| v.trim().to_owned());
        if line.starts_with("- name:") {
            entries.push((None, None));
        } else if let (Some(v), Some(e)) = (value("uid:"), entries.last_mut()) {
            e.0 = Some(v);
        } else if let (Some(v), Some(e)) = (value("type:"), entries.last_mut()) {
            e.1 = Some(v);
        }
    }
    entries
        .into_iter()
        .map(|(uid, kind)| {
            (
                uid.expect("every datasource has a uid"),
                kind.expect("a type"),
            )
        })
        .collect()
}

/// Every `datasource` object anywhere in a dashboard (panels, targets,
/// variables, annotations).
fn datasource_refs(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "datasource" && child.is_object() {
                    out.push(child.clone());
                }
                datasource_refs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| datasource_refs(c, out)),
        _ => {}
    }
}

#[test]
fn every_datasource_a_dashboard_names_is_provisioned_and_panels_are_well_formed() {
    let provisioned = provisioned_datasources();
    assert_eq!(
        provisioned.get(CLICKHOUSE_UID).map(String::as_str),
        Some("grafana-clickhouse-datasource")
    );
    assert_eq!(
        provisioned.get(PROMETHEUS_UID).map(String::as_str),
        Some("prometheus")
    );
    let provider =
        std::fs::read_to_string(grafana_dir().join("provisioning/dashboards/flywheel.yaml"))
            .unwrap();
    assert!(
        provider.contains("apiVersion: 1")
            && provider.contains("type: file")
            && provider.contains("path:"),
        "{provider}"
    );

    let mut uids = BTreeSet::new();
    for (file, uid) in [
        ("flywheel-clickhouse.json", CLICKHOUSE_UID),
        ("flywheel-metrics.json", PROMETHEUS_UID),
    ] {
        let d = dashboard(file);
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{file}: schemaVersion"
        );
        assert!(d["title"].is_string(), "{file}: title");
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{file}: uid"
        );

        let mut refs = Vec::new();
        datasource_refs(&d, &mut refs);
        for r in &refs {
            // The built-in annotation query names Grafana itself.
            if r["type"] == "grafana" {
                continue;
            }
            let ref_uid = r["uid"].as_str().unwrap_or_default();
            assert_eq!(
                provisioned.get(ref_uid),
                r["type"].as_str().map(str::to_owned).as_ref(),
                "{file}: datasource {r} is not provisioned (or has another type)"
            );
            assert_eq!(ref_uid, uid, "{file}: one datasource per dashboard");
        }

        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = &p["title"];
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: id of {title}"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                g["h"].as_u64().unwrap() > 0 && g["y"].as_u64().is_some() && x + w <= 24,
                "{file}: gridPos of {title}: {g}"
            );
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            let refs: BTreeSet<_> = targets
                .iter()
                .map(|t| t["refId"].as_str().unwrap())
                .collect();
            assert_eq!(refs.len(), targets.len(), "{file}: refIds of {title}");
            for t in targets {
                let query = t["rawSql"].as_str().or(t["expr"].as_str()).unwrap_or("");
                assert!(!query.trim().is_empty(), "{file}: {title}: empty query");
            }
        }
    }
}

/// Every metric name the gateway registers: the `"flywheel_..."` string
/// literals of `gateway/src/metrics.rs`.
fn gateway_metric_names() -> BTreeSet<String> {
    let source = std::fs::read_to_string(manifest_dir().join("../gateway/src/metrics.rs")).unwrap();
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("flywheel_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_metrics_dashboard_shows_every_metric_the_gateway_exports() {
    let exprs: Vec<String> = targets(&dashboard("flywheel-metrics.json"))
        .into_iter()
        .map(|(_, _, t)| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let names = gateway_metric_names();
    assert!(names.len() > 20, "metrics.rs names {names:?}");
    // A name followed by a letter or `_` is another metric (a histogram's
    // `_bucket` counts as its own).
    let shown = |name: &str| {
        exprs.iter().any(|e| {
            e.match_indices(name).any(|(at, _)| {
                let next = e[at + name.len()..].chars().next();
                next.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
                    || e[at + name.len()..].starts_with("_bucket")
            })
        })
    };
    let missing: Vec<_> = names.iter().filter(|n| !shown(n)).collect();
    assert!(
        missing.is_empty(),
        "gateway metrics no panel of flywheel-metrics.json shows: {missing:?}"
    );
}

// ---------------------------------------------------------------------------
// The ClickHouse plugin's query expansion.

/// A template variable's state: `None` selects All.
struct Var {
    selected: Option<Vec<String>>,
    options: Vec<String>,
    multi: bool,
}

/// What Grafana and grafana-clickhouse-datasource (v4) do to a panel's SQL
/// before ClickHouse sees it, in their order:
/// 1. the plugin's frontend (`applyConditionalAll`): `$__conditionalAll(cond,
///    $var)` becomes `1=1` when `$var` selects All, else `cond`;
/// 2. Grafana's template variables, `$var` and `${var}`, with the plugin's
///    format: a multi-value variable becomes `'a','b'` (All: every option),
///    a single value is inserted as it is;
/// 3. the backend macros (grafana-plugin-sdk-go `sqlutil.Interpolate` and
///    the plugin's `pkg/macros`), arguments split at top-level commas:
///    `$__timeFilter(c)` is `c >= toDateTime(FROM) AND c <= toDateTime(TO)`,
///    `$__fromTime` / `$__toTime` are `toDateTime(T)`, `$__interval_s` the
///    interval in seconds, `$__timeInterval(c)` is
///    `toStartOfInterval(toDateTime(c), INTERVAL N second)`. ClickHouse
///    18.16 has no `toStartOfInterval`, so the dashboards never use that
///    macro; expanding it faithfully makes a panel that does fail here as
///    it would in Grafana.
///
/// Anything still starting with `$` afterwards is an unknown macro or
/// variable, and fails the test.
struct Expander {
    from_s: u64,
    to_s: u64,
    vars: BTreeMap<String, Var>,
}

/// The arguments of a macro call whose `(` is at `open`, split at top-level
/// commas and trimmed, and the index just after its `)`.
fn macro_args(sql: &str, open: usize) -> (Vec<String>, usize) {
    assert!(
        sql[open..].starts_with('('),
        "macro without arguments: {sql}"
    );
    let (mut depth, mut args, mut arg) = (0, Vec::new(), String::new());
    for (i, c) in sql[open..].char_indices() {
        match c {
            '(' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(arg.trim().to_owned());
                    return (args, open + i + 1);
                }
            }
            ',' if depth == 1 => {
                args.push(arg.trim().to_owned());
                arg.clear();
                continue;
            }
            _ => {}
        }
        arg.push(c);
    }
    panic!("unclosed macro call: {sql}")
}

/// The name of a `$name` or `${name}` reference starting at `at`, and its
/// length in the text.
fn var_ref(sql: &str, at: usize) -> Option<(String, usize)> {
    let rest = &sql[at + 1..];
    let word = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find('}')?;
        Some((inner[..end].to_owned(), end + 3))
    } else {
        let n = word(rest);
        (n > 0).then(|| (rest[..n].to_owned(), n + 1))
    }
}

impl Expander {
    fn expand(&self, sql: &str, interval_s: u64) -> String {
        // 1. $__conditionalAll, last first as the plugin does.
        let mut sql = sql.to_owned();
        const COND: &str = "$__conditionalAll";
        while let Some(at) = sql.rfind(COND) {
            let (args, end) = macro_args(&sql, at + COND.len());
            assert_eq!(args.len(), 2, "{COND} takes two arguments: {sql}");
            let (name, _) = var_ref(&args[1], 0).expect("a $variable");
            let var = self.var(&name);
            let phrase = if var.selected.is_none() {
                "1=1".to_owned()
            } else {
                args[0].clone()
            };
            sql.replace_range(at..end, &phrase);
        }
        // 2. Template variables; `$__` names are macros, left for step 3.
        let mut out = String::new();
        let mut rest = sql.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            match var_ref(rest, at).filter(|(n, _)| !n.starts_with("__")) {
                Some((name, len)) => {
                    let var = self.var(&name);
                    let values = var.selected.as_ref().unwrap_or(&var.options);
                    if var.multi {
                        out.push_str(&format!("'{}'", values.join("','")));
                    } else {
                        out.push_str(&values[0]);
                    }
                    rest = &rest[at + len..];
                }
                None => {
                    out.push('$');
                    rest = &rest[at + 1..];
                }
            }
        }
        out.push_str(rest);
        // 3. Backend macros, by whole name (as the SDK's `\b`), so that
        //    `$__timeFilter_ms` is never read as `$__timeFilter`.
        let (from, to) = (self.from_s, self.to_s);
        let mut sql = out;
        while let Some(at) = sql.find("$__") {
            let (name, len) = var_ref(&sql, at).unwrap();
            let name = name.trim_start_matches("__");
            let plain = |text: String| (text, at + len);
            let (text, end) = match name {
                "fromTime" => plain(format!("toDateTime({from})")),
                "toTime" => plain(format!("toDateTime({to})")),
                "interval_s" => plain(interval_s.to_string()),
                "timeFilter" | "timeInterval" => {
                    let (args, end) = macro_args(&sql, at + len);
                    assert_eq!(args.len(), 1, "$__{name} takes one argument: {sql}");
                    let c = &args[0];
                    let text = if name == "timeFilter" {
                        format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})")
                    } else {
                        format!("toStartOfInterval(toDateTime({c}), INTERVAL {interval_s} second)")
                    };
                    (text, end)
                }
                other => panic!("the expander does not know $__{other}: {sql}"),
            };
            sql.replace_range(at..end, &text);
        }
        sql
    }

    fn var(&self, name: &str) -> &Var {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("unknown template variable ${name}"))
    }
}

/// Grafana's `$__interval` for a panel: ours is 20 s, unless the panel sets a
/// larger minimum (`"interval": "1m"`).
fn panel_interval_s(panel: &Value) -> u64 {
    let min = panel["interval"].as_str().map_or(0, |s| {
        let (n, unit) = s.split_at(s.len() - 1);
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("interval {s}"));
        n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("interval {s}"),
        }
    });
    min.max(20)
}

/// A query's result (JSONCompact): its column names and rows.
struct Rows {
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Whether a cell other than the time carries data: a non-zero number
    /// (ClickHouse quotes 64-bit integers; nan and inf come back as null)
    /// or, in a table, a non-empty string.
    fn has_data(&self, table: bool) -> bool {
        let data = |cell: &Value| match cell {
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => match s.parse::<f64>() {
                Ok(f) => f != 0.0,
                Err(_) => table && !s.is_empty(),
            },
            _ => false,
        };
        self.rows.iter().any(|row| {
            row.iter()
                .zip(&self.names)
                .any(|(cell, name)| name != "time" && data(cell))
        })
    }
}

/// A query's result, or ClickHouse's error.
async fn clickhouse_rows(services: &Services, sql: &str) -> Result<Rows, String> {
    let url = format!(
        "{}/?database={DATABASE}&default_format=JSONCompact",
        services.clickhouse_url()
    );
    let r = client()
        .post(url)
        .body(sql.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(text);
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let column = |v: &Value, f: &dyn Fn(&Value) -> Value| {
        v.as_array().unwrap().iter().map(f).collect::<Vec<_>>()
    };
    Ok(Rows {
        names: column(&v["meta"], &|m| m["name"].clone())
            .into_iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect(),
        rows: column(&v["data"], &Clone::clone)
            .into_iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect(),
    })
}

fn number(cell: &Value) -> f64 {
    cell.as_f64()
        .or_else(|| cell.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {cell}"))
}

// ---------------------------------------------------------------------------
// The live gateway, its load and Prometheus.

fn gateway_config(mock: &Proc, services: &Services, wal: &std::path::Path) -> String {
    let providers = [
        mock_provider("mock", mock, &[]),
        // Fails 30 % of its attempts: retries, and fallbacks to `mock`.
        mock_provider("flaky", mock, &[("x-mock-error-rate", "0.3")]),
        // Always 500: errors on `broken`, fallbacks on `fallback`, and an
        // open circuit.
        mock_provider("down", mock, &[("x-mock-error-rate", "1")]),
        // Cuts every stream after two chunks: stream failovers.
        mock_provider("cutter", mock, &[("x-mock-cut-after", "2")]),
    ];
    let route = |name: &str, variants: &[(&str, String)]| {
        let mut s = format!("[[routes]]\nname = \"{name}\"\n");
        for (variant, targets) in variants {
            s.push_str(&format!(
                "[[routes.variants]]\nname = \"{variant}\"\nweight = 1\ntargets = [{targets}]\n"
            ));
        }
        s
    };
    let target = |p: &str| format!("{{ provider = \"{p}\", model = \"m\" }}");
    format!(
        "{}\n{}\n[[feedback.metrics]]\nname = \"thumbs_up\"\ntype = \"boolean\"\n\n[[feedback.metrics]]\nname = \"grade\"\ntype = \"float\"\n\n{}\n{}\n{}\n{}",
        providers.join("\n"),
        capture_config(services, wal),
        route(
            "chat",
            &[
                ("a", target("mock")),
                ("b", format!("{}, {}", target("flaky"), target("mock"))),
            ]
        ),
        route("fallback", &[("v", format!("{}, {}", target("down"), target("mock")))]),
        route("broken", &[("v", target("down"))]),
        route("stream", &[("v", format!("{}, {}", target("cutter"), target("mock")))]),
    )
}

/// What the load did, to compare with what the panels show.
#[derive(Default)]
struct Sent {
    /// Requests that reached a route (every one is one inference row).
    inferences: u64,
    feedback: u64,
    /// Answered `chat` requests, for feedback.
    chat_ids: Vec<String>,
}

/// One request; returns its status and request id, after reading the whole
/// body (a stream is done once it ended).
async fn send(gw: &Proc, key: &str, model: &str, stream: bool) -> (u16, Option<String>) {
    let mut body = chat(model, "Tell me something.");
    if stream {
        body["stream"] = json!(true);
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-flywheel-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let _ = r.text().await;
    (status, id)
}

async fn feedback(gw: &Proc, id: &str, metric: &str, value: Value) {
    let r = client()
        .post(gw.url("/v1/feedback"))
        .bearer_auth(KEY)
        .json(&json!({"inference_id": id, "metric": metric, "value": value}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// `LOAD` of mixed traffic: plain and streamed chat on two variants (one
/// flaky), a fallback chain whose first target is down, a route that only
/// has the down target (5xx), streams cut mid-way, feedback on chat answers,
/// and a tenant over its per-minute limit (429s, which never reach a route).
async fn load(gw: &Proc) -> Sent {
    let mut sent = Sent::default();
    // globex may send 3 a minute: two of these five are refused.
    for _ in 0..5 {
        let (status, _) = send(gw, OTHER_KEY, "chat", false).await;
        if status != 429 {
            sent.inferences += 1;
        }
    }
    assert!(sent.inferences < 5, "globex was never rate limited");
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < LOAD {
        let calls = [
            ("chat", false),
            ("chat", false),
            ("chat", true),
            ("fallback", false),
            ("broken", false),
            ("stream", true),
        ];
        let answers = futures_util::future::join_all(
            calls
                .iter()
                .map(|(model, stream)| send(gw, KEY, model, *stream)),
        )
        .await;
        let before = sent.chat_ids.len();
        for ((model, stream), (status, id)) in calls.iter().zip(answers) {
            sent.inferences += 1;
            if *model == "chat" && !stream && status == 200 {
                sent.chat_ids.push(id.expect("a request id"));
            }
        }
        // Feedback on this round's chat answers: a thumb, and a grade that
        // passes the dashboard's 0.5 threshold two times in three.
        for (i, id) in sent.chat_ids[before..].iter().enumerate() {
            let n = round * 2 + i as u64;
            feedback(gw, id, "thumbs_up", json!(n.is_multiple_of(2))).await;
            feedback(
                gw,
                id,
                "grade",
                json!(if n.is_multiple_of(3) { 0.2 } else { 0.9 }),
            )
            .await;
            sent.feedback += 2;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    sent
}

/// Starts Debian's `prometheus` scraping the gateway every second, with its
/// storage in a scratch dir, on a free port.
fn start_prometheus(gw: &Proc) -> Proc {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "prometheus is not installed: run `scripts/services.sh install` (it installs Debian's prometheus)"
    );
    let dir = scratch_dir("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: flywheel-gateway\n    metrics_path: /metrics\n    authorization:\n      credentials: {}\n    static_configs:\n      - targets: ['{}']\n",
            ADMIN_TOKEN, gw.addr
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn prometheus");
    Proc { child, addr, dir }
}

/// Result of an instant query: Ok(series) or the error Prometheus gave.
async fn promql(prometheus: &Proc, expr: &str) -> Result<Vec<Value>, String> {
    let r = client()
        .post(prometheus.url("/api/v1/query"))
        .form(&[("query", expr)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Rows for the tables that the canary controller and the tuner write (this
/// test runs neither), so that their panels have something to show.
async fn insert_fixtures(services: &Services) {
    let ts = now_ms();
    let date = format!("toDate(toDateTime({}))", ts / 1000);
    let statements = [
        format!(
            "INSERT INTO {DATABASE}.experiments (id, revision, route, incumbent, candidate, spec_json, step, step_name, candidate_percent, step_started_ms, status, status_reason, origin, created_ms, updated_ms) VALUES ('exp-1', 2, 'chat', 'a', 'b', '{{}}', 1, 'ramp-10', 10, {ts}, 'running', '', 'manual', {ts}, {ts})"
        ),
        format!(
            "INSERT INTO {DATABASE}.canary_evaluations (id, experiment_id, ts_ms, date, revision, route, step, step_name, candidate_percent, elapsed_secs, action, manual, actor, reason_kind, reason_json, evidence_json, step_after, status_after, incumbent_weight, candidate_weight, incumbent_requests, candidate_requests, incumbent_graded, candidate_graded, qpd_advantage, qpd_lower, qpd_upper, guardrails_failing) VALUES ('ev-1', 'exp-1', {ts}, {date}, 2, 'chat', 1, 'ramp-10', 10, 60, 'hold', 0, 'controller', 'not_significant', '{{}}', '{{}}', 1, 'running', 90, 10, 40, 5, 30, 4, 0.1, -0.2, 0.4, []), ('ev-2', 'exp-1', {}, {date}, 2, 'chat', 1, 'ramp-10', 10, 65, 'hold', 0, 'controller', 'not_significant', '{{}}', '{{}}', 1, 'running', 90, 10, 44, 6, 33, 5, 0.12, -0.1, 0.35, [])",
            ts + 5000
        ),
        format!(
            "INSERT INTO {DATABASE}.training_steps (run_id, step, ts_ms, loss, reward_mean, reward_std, pass_rate, kl, entropy, grad_norm, learning_rate, response_len_mean, step_secs, tokens_per_sec, heldout_reward) VALUES ('run-1', 1, {ts}, 1.2, 0.4, 0.1, 0.3, 0.01, 1.1, 0.9, 0.00001, 40, 2, 100, 0.35), ('run-1', 2, {}, 1.1, 0.5, 0.1, 0.4, 0.02, 1.0, 0.8, 0.00001, 41, 2, 100, NULL)",
            ts + 2000
        ),
        format!(
            "INSERT INTO {DATABASE}.eval_results (run_id, ts_ms, dataset, grader, config, model, requests, request_errors, grader_errors, mean_score, mean_score_low, mean_score_high, pass_rate, pass_rate_low, pass_rate_high, tokens_per_request, retries_per_request, fallbacks_per_request, latency_p50_ms, latency_p95_ms, cost_per_request_usd, quality_per_dollar, report_json) VALUES ('eval-1', {ts}, 'tasks', 'grade', 'a', 'm', 10, 0, 0, 0.5, 0.4, 0.6, 0.5, 0.4, 0.6, 100, 0, 0, 100, 200, 0.0001, 5000, '{{}}')"
        ),
    ];
    for sql in statements {
        services.query(&sql).await;
    }
}

async fn count(services: &Services, sql: &str) -> u64 {
    services
        .try_query(sql)
        .await
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_grafana_panel_query_runs_on_a_live_gateways_data() {
    // The Prometheus half needs the load to be a steady stream for 15 s.
    let _heavy = HEAVY.lock().await;
    let services = Services::new();
    services.start_clickhouse();
    let mock = start_mock(&[]);
    let wal = scratch_dir("grafana-wal").join("wal");
    let gw = start_gateway(&gateway_config(&mock, &services, &wal));
    let prometheus = start_prometheus(&gw);
    let scraping = eventually(Duration::from_secs(30), || async {
        promql(&prometheus, "up{job=\"flywheel-gateway\"} == 1")
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    assert!(
        scraping,
        "prometheus never scraped the gateway: see {}",
        prometheus.dir.join("prometheus.log").display()
    );

    let from_s = now_ms() / 1000 - 600;
    let sent = load(&gw).await;
    // The last scrape after the load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut failures = Vec::new();

    // PromQL: every expression, with every variable on All, is valid and
    // returns series; with one route and variant selected it is valid.
    let metrics = dashboard("flywheel-metrics.json");
    for (name, metric) in [("route", "chat"), ("variant", "a")] {
        let values = promql(
            &prometheus,
            &format!("group by ({name}) (flywheel_requests_total)"),
        )
        .await
        .unwrap();
        assert!(
            values.iter().any(|s| s["metric"][name] == metric),
            "${name} would not offer {metric}: {values:?}"
        );
    }
    let mut queried = 0;
    for (title, _, target) in targets(&metrics) {
        let expr = target["expr"].as_str().unwrap();
        for (route, variant, must_have_series) in [(".*", ".*", true), ("chat", "a", false)] {
            let query = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$route", route)
                .replace("$variant", variant);
            assert!(
                !query.contains('$'),
                "{title}: unexpanded variable in {query}"
            );
            match promql(&prometheus, &query).await {
                Err(e) => failures.push(format!("{title}: {query}: {e}")),
                Ok(series) if series.is_empty() && must_have_series => {
                    failures.push(format!("{title}: {query}: no series"))
                }
                Ok(_) => queried += 1,
            }
        }
    }
    drop(prometheus);

    // ClickHouse: wait until every request and feedback is there.
    let shipped = eventually(Duration::from_secs(60), || async {
        count(&services, "SELECT count() FROM flywheel.inferences").await >= sent.inferences
            && count(&services, "SELECT count() FROM flywheel.feedback").await >= sent.feedback
    })
    .await;
    assert!(
        shipped,
        "ClickHouse has {} of {} inferences and {} of {} feedback",
        count(&services, "SELECT count() FROM flywheel.inferences").await,
        sent.inferences,
        count(&services, "SELECT count() FROM flywheel.feedback").await,
        sent.feedback
    );
    insert_fixtures(&services).await;

    let sql = dashboard("flywheel-clickhouse.json");
    let to_s = now_ms() / 1000 + 60;
    let mut ex = Expander {
        from_s,
        to_s,
        vars: BTreeMap::new(),
    };
    // The variables, in order (a later query may use an earlier variable),
    // each on All: their queries run too, and give the options.
    for v in sql["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_owned();
        let var = if v["type"] == "query" {
            let query = v["query"]["rawSql"].as_str().unwrap();
            let expanded = ex.expand(query, 20);
            let rows = clickhouse_rows(&services, &expanded)
                .await
                .unwrap_or_else(|e| panic!("variable ${name}: {e}\n{expanded}"));
            let options: Vec<String> = rows
                .rows
                .iter()
                .map(|r| r[0].as_str().unwrap().to_owned())
                .collect();
            let include_all = v["includeAll"] == true;
            Var {
                // A variable without All starts on its first option; the
                // metric is set to the grader below.
                selected: (!include_all).then(|| options[..1].to_vec()),
                options,
                multi: v["multi"] == true,
            }
        } else {
            let value = v["query"].as_str().unwrap().to_owned();
            Var {
                selected: Some(vec![value.clone()]),
                options: vec![value],
                multi: false,
            }
        };
        ex.vars.insert(name, var);
    }
    for (name, expected) in [
        ("route", &["broken", "chat", "fallback", "stream"][..]),
        ("variant", &["a", "b", "v"][..]),
        // The gateway's implicit signals (a re-ask) may add metrics.
        ("metric", &["grade", "thumbs_up"][..]),
    ] {
        let options = &ex.var(name).options;
        assert!(
            expected.iter().all(|e| options.iter().any(|o| o == e)),
            "${name} offers {options:?}, not all of {expected:?}"
        );
    }
    ex.vars.get_mut("metric").unwrap().selected = Some(vec!["grade".to_owned()]);

    let mut requests_panel = None;
    for selection in [None, Some(("chat", "a"))] {
        if let Some((route, variant)) = selection {
            ex.vars.get_mut("route").unwrap().selected = Some(vec![route.to_owned()]);
            ex.vars.get_mut("variant").unwrap().selected = Some(vec![variant.to_owned()]);
        }
        for (title, panel, target) in targets(&sql) {
            let query = ex.expand(target["rawSql"].as_str().unwrap(), panel_interval_s(panel));
            match clickhouse_rows(&services, &query).await {
                Err(e) => failures.push(format!("{title} ({selection:?}): {e}\n{query}")),
                // With All, every panel shows data; one route and variant
                // may well have no fallbacks, so there it only has to run.
                Ok(rows) if selection.is_none() && !rows.has_data(target["format"] == 1) => {
                    failures.push(format!("{title}: no data: {:?}\n{query}", rows.rows))
                }
                Ok(Rows { rows, .. }) => {
                    queried += 1;
                    if title != "Requests" {
                        continue;
                    }
                    let shown = number(&rows[0][0]) as u64;
                    let (expected, what) = match selection {
                        None => (sent.inferences, "every request sent".to_owned()),
                        Some((route, variant)) => (
                            count(
                                &services,
                                &format!("SELECT count() FROM flywheel.inferences WHERE route = '{route}' AND variant = '{variant}'"),
                            )
                            .await,
                            format!("the {route}/{variant} rows of `inferences`"),
                        ),
                    };
                    if selection.is_none() {
                        requests_panel = Some(shown);
                    }
                    if shown != expected {
                        failures.push(format!(
                            "Requests shows {shown}, not {expected} ({what})\n{query}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing panel queries:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(requests_panel.is_some(), "no Requests panel");
    assert!(queried > 60, "only {queried} queries ran");
}
