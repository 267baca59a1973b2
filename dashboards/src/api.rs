//! The handlers of `/api/` (the contract is `dashboards/API.md`). Each one
//! resolves the caller's scope, reads through [`crate::queries`] (or the
//! canary store, the tuner journal, the gateway) and answers JSON, or one
//! of its arrays as CSV with `format=csv&table=NAME`.

use std::{collections::HashMap, time::Duration};

use axum::{
    body::Body,
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use flywheel_canary_controller::{ops, Action, Experiment, Status};
use flywheel_feedback::store::rows::CanaryEvaluationRow;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    auth::Caller,
    csv::table_csv,
    error::ApiError,
    queries::{Filters, GradedRow, LatencyPoint, Scope, TotalsRow, Window},
    stats::{mean_ci, ratio},
    AppState,
};

/// The default window: the last 24 h.
const DEFAULT_WINDOW_MS: u64 = 86_400_000;
/// Longest window: the rollups are per minute, so a year is ~525k minutes
/// per dimension tuple; past that a page asks for too much.
const MAX_WINDOW_MS: u64 = 400 * 86_400_000;
/// Buckets per series, at most (a finer `step_ms` is coarsened).
const MAX_BUCKETS: u64 = 1500;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// The default success threshold of a metric.
const DEFAULT_THRESHOLD: f64 = 0.5;
/// Evaluations shown for one experiment (a look every 10 s for a week is
/// ~60k; the newest are kept).
const EVALUATIONS_LIMIT: u64 = 20_000;

/// The common query parameters (API.md, "Common query parameters").
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub step_ms: Option<u64>,
    pub route: Option<String>,
    pub variant: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub format: Option<String>,
    pub table: Option<String>,
    pub metric: Option<String>,
    pub threshold: Option<f64>,
}

type ParamsQuery = Result<Query<Params>, QueryRejection>;

fn params(q: ParamsQuery) -> Result<Params, ApiError> {
    q.map(|Query(p)| p).map_err(|e| ApiError::BadRequest {
        message: e.body_text(),
        param: None,
    })
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The default step: the window / 120, rounded up to a whole minute; a
/// given step is rounded up to a whole minute too (the rollups' grain),
/// and coarsened to at most [`MAX_BUCKETS`] buckets.
pub fn step_ms(window_ms: u64, requested: Option<u64>) -> u64 {
    let round_up = |ms: u64| ms.div_ceil(MINUTE_MS).max(1) * MINUTE_MS;
    let step = round_up(requested.unwrap_or(window_ms / 120));
    let step = step.max(round_up(window_ms.div_ceil(MAX_BUCKETS)));
    // An hour or more: whole hours, which the latency page reads from the
    // hourly rollup (queries::Grain).
    if step > HOUR_MS {
        step.div_ceil(HOUR_MS) * HOUR_MS
    } else {
        step
    }
}

/// The caller's scope of a read: window, step, filters (tenant forced for
/// a tenant).
pub fn scope(caller: &Caller, p: &Params, now_ms: u64) -> Result<Scope, ApiError> {
    let to_ms = p.to_ms.unwrap_or(now_ms);
    let from_ms = p
        .from_ms
        .unwrap_or_else(|| to_ms.saturating_sub(DEFAULT_WINDOW_MS));
    if from_ms >= to_ms {
        return Err(ApiError::bad("from_ms must be before to_ms", "from_ms"));
    }
    if to_ms - from_ms > MAX_WINDOW_MS {
        return Err(ApiError::bad(
            "the window is longer than 400 days",
            "from_ms",
        ));
    }
    Ok(Scope {
        window: Window { from_ms, to_ms },
        step_ms: step_ms(to_ms - from_ms, p.step_ms),
        filters: Filters {
            tenant: caller.tenant_filter(p.tenant.as_deref())?,
            route: nonempty(&p.route),
            variant: nonempty(&p.variant),
            model: nonempty(&p.model),
            provider: nonempty(&p.provider),
        },
    })
}

/// The answer as JSON, or its array `table` as a CSV download.
fn answer(p: &Params, name: &str, body: Value) -> Result<Response, ApiError> {
    match p.format.as_deref() {
        None | Some("") | Some("json") => Ok(Json(body).into_response()),
        Some("csv") => {
            let table = p
                .table
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad("format=csv needs table=NAME", "table"))?;
            let csv = table_csv(&body, table).map_err(|e| ApiError::bad(e.to_string(), "table"))?;
            // `table` is a key of the answer (checked above), so one of ours:
            // safe in a header.
            let disposition = format!("attachment; filename=\"{name}-{table}.csv\"");
            let mut resp = (StatusCode::OK, csv).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            );
            Ok(resp)
        }
        Some(other) => Err(ApiError::bad(
            format!("format must be json or csv, not {other:?}"),
            "format",
        )),
    }
}

fn window_json(s: &Scope) -> Value {
    json!({"from_ms": s.window.from_ms, "to_ms": s.window.to_ms, "step_ms": s.step_ms})
}

// ---------------------------------------------------------------- session, filters

pub async fn session(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({
        "scope": if caller.is_admin() { "admin" } else { "tenant" },
        "tenant": caller.tenant(),
    }))
}

pub async fn filters(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    let p = params(q)?;
    let s = scope(&caller, &p, flywheel_feedback::now_ms())?;
    let mut menus = st.queries.menus(&s).await?;
    if let Some(t) = caller.tenant() {
        menus.tenants = vec![t.to_owned()];
    }
    let body = serde_json::to_value(menus).map_err(|e| ApiError::Internal(e.to_string()))?;
    answer(&p, "filters", body)
}

// ---------------------------------------------------------------- overview

/// `T` of API.md: one window's totals.
fn totals_json(t: &TotalsRow, graded: Option<&[GradedRow]>) -> Value {
    let cost_per_request = ratio(t.cost_usd, t.requests as f64);
    let (graded_n, successes, success_rate) = match graded {
        Some(rows) => {
            let n: u64 = rows.iter().map(|r| r.graded).sum();
            let ok: u64 = rows.iter().map(|r| r.successes).sum();
            (Some(n), ok, ratio(ok as f64, n as f64))
        }
        None => (
            None,
            t.ok_requests,
            ratio(t.ok_requests as f64, t.requests as f64),
        ),
    };
    json!({
        "requests": t.requests,
        "errors": t.errors,
        "error_rate": ratio(t.errors as f64, t.requests as f64),
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "cost_usd": t.cost_usd,
        "cost_per_request": cost_per_request,
        "graded": graded_n,
        "successes": successes,
        "success_rate": success_rate,
        "cost_per_success": cost_per_success(cost_per_request, success_rate),
    })
}

fn cost_per_success(cost_per_request: Option<f64>, success_rate: Option<f64>) -> Option<f64> {
    ratio(cost_per_request?, success_rate?)
}

pub async fn overview(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    let p = params(q)?;
    let s = scope(&caller, &p, flywheel_feedback::now_ms())?;
    let threshold = p.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !threshold.is_finite() {
        return Err(ApiError::bad("threshold must be a number", "threshold"));
    }
    let metric = match nonempty(&p.metric) {
        Some(m) => Some(m),
        None => st
            .queries
            .metrics_present(&s)
            .await?
            .into_iter()
            .find(|m| m.starts_with("grader_")),
    };
    let prev = Scope {
        window: s.window.previous(),
        ..s.clone()
    };
    let q = &st.queries;
    let (current, previous, series, versions) = tokio::try_join!(
        q.totals(s.window, &s.filters, s.grain()),
        q.totals(prev.window, &prev.filters, prev.grain()),
        q.overview_series(&s),
        q.versions(&s),
    )?;
    let (graded, prev_graded) = match &metric {
        Some(m) => {
            let (a, b) =
                tokio::try_join!(q.graded(&s, m, threshold), q.graded(&prev, m, threshold))?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let by_version: HashMap<(&str, &str, &str), &GradedRow> = graded
        .iter()
        .flatten()
        .map(|g| ((g.route.as_str(), g.variant.as_str(), g.model.as_str()), g))
        .collect();
    let frontier: Vec<Value> = versions
        .iter()
        .map(|v| {
            let g = by_version.get(&(v.route.as_str(), v.variant.as_str(), v.model.as_str()));
            let ci = g.map(|g| mean_ci(g.graded, g.value_sum, g.value_sq_sum));
            let cost_per_request = ratio(v.cost_usd, v.requests as f64);
            let success_rate = match (&metric, g) {
                (Some(_), Some(g)) => ratio(g.successes as f64, g.graded as f64),
                (Some(_), None) => None,
                (None, _) => ratio(v.ok_requests as f64, v.requests as f64),
            };
            json!({
                "route": v.route, "variant": v.variant, "model": v.model,
                "requests": v.requests, "cost_usd": v.cost_usd,
                "cost_per_request": cost_per_request,
                "quality_n": g.map_or(0, |g| g.graded),
                "quality_mean": ci.and_then(|c| c.mean),
                "quality_low": ci.and_then(|c| c.low),
                "quality_high": ci.and_then(|c| c.high),
                "success_rate": success_rate,
                "cost_per_success": cost_per_success(cost_per_request, success_rate),
            })
        })
        .collect();
    let series: Vec<Value> = series
        .into_iter()
        .map(|pt| {
            let mut v = json!(pt);
            v["t_ms"] = json!(pt.t * 1000);
            v
        })
        .collect();
    let body = json!({
        "window": window_json(&s),
        "metric": metric,
        "threshold": threshold,
        "totals": {
            "current": totals_json(&current, graded.as_deref()),
            "previous": totals_json(&previous, prev_graded.as_deref()),
        },
        "series": series,
        "frontier": frontier,
    });
    answer(&p, "overview", body)
}

// ---------------------------------------------------------------- latency

pub async fn latency(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    let p = params(q)?;
    let s = scope(&caller, &p, flywheel_feedback::now_ms())?;
    let (series, table) =
        tokio::try_join!(st.queries.latency_series(&s), st.queries.latency_table(&s))?;
    let series: Vec<Value> = series
        .iter()
        .map(|l: &LatencyPoint| {
            json!({
                "t_ms": l.t_ms, "model": l.model, "provider": l.provider, "requests": l.requests,
                "p50": l.latency[0], "p90": l.latency[1], "p95": l.latency[2], "p99": l.latency[3],
                "ttft_p50": l.ttft[0], "ttft_p95": l.ttft[2],
                "overhead_p50": l.overhead[0], "overhead_p99": l.overhead[3],
            })
        })
        .collect();
    let table: Vec<Value> = table
        .iter()
        .map(|l| {
            json!({
                "model": l.model, "provider": l.provider, "requests": l.requests,
                "p50": l.latency[0], "p90": l.latency[1], "p95": l.latency[2], "p99": l.latency[3],
                "ttft_p50": l.ttft[0], "ttft_p90": l.ttft[1], "ttft_p95": l.ttft[2], "ttft_p99": l.ttft[3],
                "overhead_p50": l.overhead[0], "overhead_p99": l.overhead[3],
            })
        })
        .collect();
    let body = json!({"window": window_json(&s), "series": series, "table": table});
    answer(&p, "latency", body)
}

// ---------------------------------------------------------------- reliability

pub async fn reliability(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    let p = params(q)?;
    let s = scope(&caller, &p, flywheel_feedback::now_ms())?;
    let (series, errors) =
        tokio::try_join!(st.queries.reliability_series(&s), st.queries.errors(&s))?;
    // The circuits are the gateway's live state, not a tenant's data, and
    // name only providers: shown to every caller. A gateway that does not
    // answer leaves the table empty and says why.
    let (circuits, circuits_error) = match &st.gateway {
        None => (Vec::new(), None),
        Some(g) => match g.circuits().await {
            Ok(c) => (c, None),
            Err(e) => {
                tracing::warn!(error = %e, "gateway /metrics");
                (Vec::new(), Some(e.to_string()))
            }
        },
    };
    let series: Vec<Value> = series
        .into_iter()
        .map(|pt| {
            let mut v = json!(pt);
            v["t_ms"] = json!(pt.t * 1000);
            v
        })
        .collect();
    let body = json!({
        "window": window_json(&s),
        "series": series,
        "errors": errors,
        "circuits": circuits,
        "circuits_error": circuits_error,
    });
    answer(&p, "reliability", body)
}

// ---------------------------------------------------------------- quality

pub async fn quality(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    let p = params(q)?;
    let s = scope(&caller, &p, flywheel_feedback::now_ms())?;
    let (metrics, series, histograms) = tokio::try_join!(
        st.queries.metric_table(&s),
        st.queries.metric_series(&s),
        st.queries.histograms(&s),
    )?;
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|m| {
            let ci = mean_ci(m.numeric_n, m.value_sum, m.value_sq_sum);
            json!({
                "metric": m.metric, "source": m.source, "variant": m.variant,
                "n": m.n, "numeric_n": m.numeric_n,
                "mean": ci.mean, "low": ci.low, "high": ci.high,
            })
        })
        .collect();
    let series: Vec<Value> = series
        .iter()
        .map(|m| {
            json!({
                "t_ms": m.t * 1000, "metric": m.metric, "variant": m.variant, "n": m.n,
                "mean": ratio(m.value_sum, m.numeric_n as f64),
            })
        })
        .collect();
    let body = json!({
        "window": window_json(&s),
        "metrics": metrics,
        "series": series,
        "histograms": histograms,
    });
    answer(&p, "quality", body)
}

// ---------------------------------------------------------------- experiments

fn experiment_json(e: &Experiment) -> Value {
    json!({
        "id": e.id, "route": e.route, "incumbent": e.incumbent, "candidate": e.candidate,
        "status": e.status.name(), "status_reason": e.status_reason,
        "step": e.step, "step_name": e.step_name(), "candidate_percent": e.candidate_percent(),
        "origin": e.origin, "created_ms": e.created_ms, "updated_ms": e.updated_ms,
    })
}

/// The text of an evaluation's reason: the `reason` of its JSON when it has
/// one (manual actions), else the JSON itself (the controller's decisions).
fn reason_text(reason_json: &str) -> String {
    serde_json::from_str::<Value>(reason_json)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| reason_json.to_owned())
}

fn evaluation_json(r: &CanaryEvaluationRow) -> Value {
    json!({
        "ts_ms": r.ts_ms,
        "action": Action::from_code(r.action).map_or("unknown", |a| a.name()),
        "manual": r.manual, "actor": r.actor, "reason_kind": r.reason_kind,
        "reason": reason_text(&r.reason_json),
        "step_name": r.step_name, "candidate_percent": r.candidate_percent,
        "incumbent_weight": r.incumbent_weight, "candidate_weight": r.candidate_weight,
        "incumbent_requests": r.incumbent_requests, "candidate_requests": r.candidate_requests,
        "incumbent_quality": r.incumbent_quality, "candidate_quality": r.candidate_quality,
        "incumbent_cost_per_request": r.incumbent_cost_per_request,
        "candidate_cost_per_request": r.candidate_cost_per_request,
        "qpd_advantage": r.qpd_advantage, "qpd_lower": r.qpd_lower, "qpd_upper": r.qpd_upper,
        "qpd_p_value": r.qpd_p_value,
        "quality_difference": r.quality_difference, "quality_lower": r.quality_lower,
        "quality_upper": r.quality_upper, "srm_p_value": r.srm_p_value,
        "guardrails_failing": r.guardrails_failing,
        "status_after": Status::from_code(r.status_after).map_or("unknown", |s| s.name()),
    })
}

pub async fn experiments(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = params(q)?;
    let mut all = st.canary.experiments().await.map_err(ops::OpError::from)?;
    all.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
    let list: Vec<Value> = all.iter().map(experiment_json).collect();
    answer(&p, "experiments", json!({"experiments": list}))
}

/// The experiment whose id is exactly `id` (the store also matches
/// prefixes, which an action must not: `confirm` repeats the full id).
async fn exact_experiment(st: &AppState, id: &str) -> Result<Experiment, ApiError> {
    let e = st.canary.experiment(id).await.map_err(ops::OpError::from)?;
    if e.id != id {
        return Err(ApiError::NotFound(format!("no experiment {id:?}")));
    }
    Ok(e)
}

pub async fn experiment(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = params(q)?;
    let e = exact_experiment(&st, &id).await?;
    let mut evals = st
        .canary
        .evaluations(&e.id, EVALUATIONS_LIMIT)
        .await
        .map_err(ops::OpError::from)?;
    evals.reverse();
    let mut exp = experiment_json(&e);
    exp["spec"] = serde_json::to_value(&e.spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let run = e.origin.strip_prefix("tuner:").map(str::to_owned);
    let body = json!({
        "experiment": exp,
        "evaluations": evals.iter().map(evaluation_json).collect::<Vec<_>>(),
        "run": run,
    });
    answer(&p, "experiment", body)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub action: String,
    pub confirm: String,
    #[serde(default)]
    pub reason: String,
}

/// Who the controller's record names for an action taken here.
pub const ACTOR: &str = "dashboard";

pub async fn experiment_action(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest {
        message: e.body_text(),
        param: None,
    })?;
    let action = match body.action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "promote" => Action::Promote,
        "rollback" => Action::Rollback,
        other => {
            return Err(ApiError::bad(
                format!("action must be pause, resume, promote or rollback, not {other:?}"),
                "action",
            ))
        }
    };
    if body.confirm != id {
        return Err(ApiError::bad(
            "confirm must repeat the experiment's id",
            "confirm",
        ));
    }
    let e = exact_experiment(&st, &id).await?;
    let (after, applied) =
        ops::manual(&st.canary, &st.weights, &e.id, action, ACTOR, &body.reason).await?;
    let (weights_applied, weights_error) = match applied {
        ops::WeightsApplied::Yes => (true, None),
        ops::WeightsApplied::Later(e) => (false, Some(e)),
    };
    Ok(Json(json!({
        "experiment": experiment_json(&after),
        "weights_applied": weights_applied,
        "weights_error": weights_error,
    }))
    .into_response())
}

// ---------------------------------------------------------------- runs

pub async fn runs(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = params(q)?;
    let Some(runs) = st.runs.clone() else {
        return answer(
            &p,
            "runs",
            json!({"runs": [], "unavailable": "the dashboards were started without --tuner-state"}),
        );
    };
    let mut list = tokio::task::spawn_blocking(move || runs.list())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let experiments = st.canary.experiments().await.map_err(ops::OpError::from)?;
    for r in &mut list {
        let origin = format!("tuner:{}", r.run);
        r.experiment = experiments
            .iter()
            .find(|e| e.origin == origin)
            .map(|e| e.id.clone());
    }
    answer(&p, "runs", json!({"runs": list, "unavailable": null}))
}

pub async fn run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    q: ParamsQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = params(q)?;
    let runs = st.runs.clone().ok_or_else(|| {
        ApiError::NotFound(
            "no tuner runs: the dashboards were started without --tuner-state".into(),
        )
    })?;
    let id = run.clone();
    let (mut info, events) = tokio::task::spawn_blocking(move || runs.read(&id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let origin = format!("tuner:{run}");
    info.experiment = st
        .canary
        .experiments()
        .await
        .map_err(ops::OpError::from)?
        .into_iter()
        .find(|e| e.origin == origin)
        .map(|e| e.id);
    let (steps, evals) = tokio::try_join!(
        st.queries.training_steps(&run),
        st.queries.eval_results(&run)
    )?;
    let evals: Vec<Value> = evals
        .into_iter()
        .map(|r| {
            let mut v = json!(r);
            // The whole report is large and has its own tools; the columns
            // are what the page draws.
            if let Some(o) = v.as_object_mut() {
                o.remove("report_json");
            }
            v
        })
        .collect();
    let body = json!({"run": info, "events": events, "steps": steps, "evals": evals});
    answer(&p, "run", body)
}

// ---------------------------------------------------------------- playground

pub async fn playground_routes(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"routes": st.access.routes()}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    pub route: String,
    pub variant: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
}

/// The key the playground calls the gateway with: a tenant's own (it must
/// be allowed to pin variants), the admin's `--playground-key`.
fn playground_key(st: &AppState, caller: &Caller) -> Result<String, ApiError> {
    match caller {
        Caller::Tenant {
            key, pin_variants, ..
        } => {
            if *pin_variants {
                Ok(key.clone())
            } else {
                Err(ApiError::Forbidden(
                    "this key may not pin variants (pin_variants in the gateway config)".into(),
                ))
            }
        }
        Caller::Admin => st.playground_key.clone().ok_or_else(|| {
            ApiError::NotConfigured(
                "the admin playground needs an API key: start with --playground-key or FLYWHEEL_PLAYGROUND_KEY".into(),
            )
        }),
    }
}

fn gateway(st: &AppState) -> Result<&crate::gateway::Gateway, ApiError> {
    st.gateway
        .as_ref()
        .ok_or_else(|| ApiError::NotConfigured("the playground needs --gateway-url".into()))
}

/// The gateway's answer passed on: status, body (streamed as it comes) and
/// the headers a client reads (content type, `x-flywheel-*`).
fn pass_through(resp: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if n == "content-type" || n == "cache-control" || n.starts_with("x-flywheel-") {
            headers.insert(name.clone(), value.clone());
        }
    }
    let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

pub async fn playground_chat(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ChatBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest {
        message: e.body_text(),
        param: None,
    })?;
    let known = st
        .access
        .routes()
        .iter()
        .any(|r| r.route == body.route && r.variants.contains(&body.variant));
    if !known {
        return Err(ApiError::bad(
            format!(
                "no variant {:?} on route {:?} in the gateway config",
                body.variant, body.route
            ),
            "variant",
        ));
    }
    let key = playground_key(&st, &caller)?;
    let gw = gateway(&st)?;
    // The usage chunk gives the page each answer's tokens.
    let mut req = json!({
        "model": body.route,
        "messages": body.messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(m) = body.max_tokens {
        req["max_tokens"] = json!(m);
    }
    if let Some(t) = body.temperature {
        req["temperature"] = json!(t);
    }
    let resp = gw.chat(&key, &body.variant, &req).await?;
    Ok(pass_through(resp))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbsBody {
    pub inference_id: String,
    pub value: bool,
}

/// The metric thumbs are recorded as (declare it in the gateway's
/// `[[feedback.metrics]]` as a boolean inference metric).
pub const THUMBS_METRIC: &str = "thumbs";

pub async fn playground_feedback(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ThumbsBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest {
        message: e.body_text(),
        param: None,
    })?;
    let key = playground_key(&st, &caller)?;
    let gw = gateway(&st)?;
    let req =
        json!({"inference_id": body.inference_id, "metric": THUMBS_METRIC, "value": body.value});
    let resp = gw.feedback(&key, &req).await?;
    Ok(pass_through(resp))
}

/// How long [`playground_cost`] waits for an answer's event to ship.
const COST_WAIT: Duration = Duration::from_secs(10);
const COST_POLL: Duration = Duration::from_millis(250);

/// `GET /api/playground/cost/{id}`: what a playground answer cost, read
/// from its event in ClickHouse. A stream's cost is known only once its
/// attempts end, so the page asks after the stream, and the call waits up
/// to [`COST_WAIT`] for the event to ship (one request, not a poll of
/// 404s). A tenant reads its own answers only; another tenant's id is a
/// 404, as a missing one is, after the same wait.
pub async fn playground_cost(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::bad(
            "an inference id is 1 to 128 characters",
            "id",
        ));
    }
    let deadline = tokio::time::Instant::now() + COST_WAIT;
    loop {
        if let Some(cost) = st.queries.answer_cost(&id, caller.tenant()).await? {
            return Ok(Json(cost).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::NotFound(format!(
                "no inference {id:?} in ClickHouse after {COST_WAIT:?}"
            )));
        }
        tokio::time::sleep(COST_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_whole_minutes() {
        // 24 h / 120 = 12 min.
        assert_eq!(step_ms(86_400_000, None), 720_000);
        assert_eq!(step_ms(3_600_000, None), 60_000);
        assert_eq!(step_ms(3_600_000, Some(90_000)), 120_000);
        assert_eq!(step_ms(3_600_000, Some(0)), 60_000);
        // Past an hour: whole hours (7 d / 120 = 84 min → 2 h).
        assert_eq!(step_ms(7 * 86_400_000, None), 7_200_000);
        assert_eq!(step_ms(3_600_000, Some(3_600_000)), 3_600_000);
        // 30 days at 1 min would be 43 200 buckets: coarsened.
        assert!(30 * 86_400_000 / step_ms(30 * 86_400_000, Some(60_000)) <= MAX_BUCKETS);
    }

    #[test]
    fn scope_defaults_and_checks() {
        let tenant = Caller::Tenant {
            tenant: "a".into(),
            key: "k".into(),
            pin_variants: false,
        };
        let s = scope(&tenant, &Params::default(), 100_000_000).unwrap();
        assert_eq!(
            s.window,
            Window {
                from_ms: 100_000_000 - DEFAULT_WINDOW_MS,
                to_ms: 100_000_000
            }
        );
        assert_eq!(s.filters.tenant.as_deref(), Some("a"));
        let other = Params {
            tenant: Some("b".into()),
            ..Params::default()
        };
        assert!(matches!(
            scope(&tenant, &other, 1),
            Err(ApiError::Forbidden(_))
        ));
        let backwards = Params {
            from_ms: Some(10),
            to_ms: Some(5),
            ..Params::default()
        };
        assert!(matches!(
            scope(&Caller::Admin, &backwards, 1),
            Err(ApiError::BadRequest { .. })
        ));
    }

    #[test]
    fn cost_per_success_needs_successes() {
        assert_eq!(cost_per_success(Some(0.2), Some(0.5)), Some(0.4));
        assert_eq!(cost_per_success(Some(0.2), Some(0.0)), None);
        assert_eq!(cost_per_success(None, Some(0.5)), None);
        assert_eq!(reason_text(r#"{"kind":"manual","reason":"why"}"#), "why");
        assert_eq!(reason_text(r#"{"kind":"x"}"#), r#"{"kind":"x"}"#);
    }
}
