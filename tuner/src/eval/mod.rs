//! Offline evaluation: a dataset is run through several configurations of
//! the gateway (the base model, a candidate version, the fallback chain),
//! every answer graded, and each configuration summarised by quality, cost
//! and quality per dollar.
//!
//! Scoring rules, the same for every configuration so that they compare:
//! - a request the gateway could not answer (any non-2xx, a transport
//!   error) scores 0 and fails: the user got nothing;
//! - a grader error is not a score: the item is left out of quality and
//!   counted in `grader_errors`, so a broken grader shows instead of
//!   passing as a bad model;
//! - cost, tokens, retries and fallbacks are the gateway's own totals over
//!   all attempts of the request (`x-flywheel-*` headers), so a chain that
//!   retried pays for every try.

pub mod client;
pub mod report;
pub mod stats;

/// What the gateway reported about one request (its `x-flywheel-*` headers).
pub use flywheel_api::headers::Totals;
use serde::Serialize;
use stats::Estimate;

use crate::grader::Grade;

/// One item run through one configuration.
#[derive(Debug, Clone)]
pub struct Observation {
    pub item_id: String,
    /// Client-side wall time of the request.
    pub latency_ms: f64,
    /// Absent when the request never reached the gateway.
    pub totals: Option<Totals>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The gateway answered and the grader scored the answer.
    Graded(Grade),
    /// The gateway answered, the grader failed on it.
    GraderError(String),
    /// The gateway did not answer (status and error message).
    RequestError(String),
}

/// The summary of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    pub config: String,
    /// Asked without `response_format` (see [`Config::raw`]).
    pub raw: bool,
    /// The model name sent to the gateway (a route).
    pub model: String,
    pub requests: usize,
    pub request_errors: usize,
    pub grader_errors: usize,
    pub mean_score: Estimate,
    pub pass_rate: Estimate,
    pub tokens_per_request: f64,
    pub retries_per_request: f64,
    /// Share of requests answered by a fallback target (depth > 0).
    pub fallbacks_per_request: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub cost_per_request_usd: f64,
    /// Mean score per USD spent per request; `None` when nothing was priced.
    pub quality_per_dollar: Option<f64>,
}

/// Summarises a configuration's observations (see the module docs for
/// what counts).
pub fn summarize(config: &Config, observations: &[Observation]) -> ConfigReport {
    let mut scores = Vec::new();
    let mut passed = 0;
    let (mut request_errors, mut grader_errors) = (0, 0);
    for o in observations {
        match &o.outcome {
            Outcome::Graded(g) => {
                scores.push(g.score);
                passed += usize::from(g.passed);
            }
            Outcome::GraderError(_) => grader_errors += 1,
            Outcome::RequestError(_) => {
                request_errors += 1;
                scores.push(0.0);
            }
        }
    }
    let n = observations.len().max(1) as f64;
    let totals: Vec<Totals> = observations
        .iter()
        .map(|o| o.totals.unwrap_or_default())
        .collect();
    let per_request = |f: &dyn Fn(&Totals) -> f64| totals.iter().map(f).sum::<f64>() / n;
    let latencies: Vec<f64> = observations.iter().map(|o| o.latency_ms).collect();
    let mean_score = stats::mean_ci(&scores, 0.0, 1.0);
    let cost_per_request = per_request(&|t| t.cost_usd);
    ConfigReport {
        config: config.name.clone(),
        model: config.model.clone(),
        raw: config.raw,
        requests: observations.len(),
        request_errors,
        grader_errors,
        pass_rate: stats::wilson(passed, scores.len()),
        tokens_per_request: per_request(&|t| (t.prompt_tokens + t.completion_tokens) as f64),
        retries_per_request: per_request(&|t| t.attempts.saturating_sub(1) as f64),
        fallbacks_per_request: per_request(&|t| f64::from(u8::from(t.fallback_depth > 0))),
        latency_p50_ms: stats::percentile(&latencies, 0.50),
        latency_p95_ms: stats::percentile(&latencies, 0.95),
        cost_per_request_usd: cost_per_request,
        quality_per_dollar: stats::quality_per_dollar(mean_score.value, cost_per_request),
        mean_score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(latency_ms: f64, totals: Totals, outcome: Outcome) -> Observation {
        Observation {
            item_id: "i".into(),
            latency_ms,
            totals: Some(totals),
            outcome,
        }
    }

    fn graded(score: f64) -> Outcome {
        Outcome::Graded(Grade {
            score,
            passed: score >= 1.0,
            reason: String::new(),
        })
    }

    /// Four requests, checked by hand: scores 1, 0.5, (grader error), and a
    /// request error that counts as 0.
    #[test]
    fn summary_arithmetic_by_hand() {
        let t = |attempts, depth, p, c, cost| Totals {
            attempts,
            fallback_depth: depth,
            prompt_tokens: p,
            completion_tokens: c,
            cost_usd: cost,
        };
        let observations = vec![
            obs(100.0, t(1, 0, 10, 5, 0.001), graded(1.0)),
            obs(300.0, t(3, 1, 30, 15, 0.005), graded(0.5)),
            obs(
                200.0,
                t(1, 0, 10, 5, 0.001),
                Outcome::GraderError("boom".into()),
            ),
            obs(
                400.0,
                t(2, 1, 20, 0, 0.001),
                Outcome::RequestError("502".into()),
            ),
        ];
        let r = summarize(&"chain=tasks-chain".parse().unwrap(), &observations);
        assert_eq!((r.requests, r.request_errors, r.grader_errors), (4, 1, 1));
        // Scores 1, 0.5, 0 (the request error); the grader error is left out.
        assert!((r.mean_score.value - 0.5).abs() < 1e-12);
        // One pass of three scored.
        assert!((r.pass_rate.value - 1.0 / 3.0).abs() < 1e-12);
        // Tokens (15 + 45 + 15 + 20) / 4, retries (0 + 2 + 0 + 1) / 4,
        // fallbacks 2 of 4, cost 0.008 / 4.
        assert!((r.tokens_per_request - 23.75).abs() < 1e-12);
        assert!((r.retries_per_request - 0.75).abs() < 1e-12);
        assert!((r.fallbacks_per_request - 0.5).abs() < 1e-12);
        assert!((r.cost_per_request_usd - 0.002).abs() < 1e-12);
        assert!((r.quality_per_dollar.unwrap() - 250.0).abs() < 1e-9);
        assert_eq!((r.latency_p50_ms, r.latency_p95_ms), (200.0, 400.0));
    }
}

/// A configuration to evaluate: a display name and the model (route) the
/// gateway serves it under.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub name: String,
    pub model: String,
    /// Ask without the items' `response_format`: the model's raw answer is
    /// graded, with no gateway validation (and so no validation retries).
    pub raw: bool,
}

impl std::str::FromStr for Config {
    type Err = String;

    /// `NAME=MODEL`, or `MODEL` alone (named after itself).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, model) = s.split_once('=').unwrap_or((s, s));
        if name.is_empty() || model.is_empty() {
            return Err(format!("a configuration is NAME=MODEL, got {s:?}"));
        }
        Ok(Config {
            name: name.to_owned(),
            model: model.to_owned(),
            raw: false,
        })
    }
}

/// Runs `items` through every configuration in turn (one at a time, so
/// their latencies do not disturb each other) and builds the report.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    gateway: &client::Gateway,
    grader: std::sync::Arc<crate::grader::Grader>,
    items: &[crate::Item],
    configs: &[Config],
    params: &client::RequestParams,
    concurrency: usize,
    dataset: &str,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> report::Report {
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut reports = Vec::with_capacity(configs.len());
    for c in configs {
        let params = client::RequestParams {
            response_format: params.response_format && !c.raw,
            ..params.clone()
        };
        let observations = client::run_config(
            gateway,
            grader.clone(),
            items,
            &c.model,
            &params,
            concurrency,
            &|done| progress(&c.name, done, items.len()),
        )
        .await;
        reports.push(summarize(c, &observations));
    }
    report::Report {
        run_id: format!("eval-{ts_ms}"),
        ts_ms,
        dataset: dataset.to_owned(),
        grader: grader.name().to_owned(),
        temperature: params.temperature,
        max_tokens: params.max_tokens,
        configs: reports,
    }
}
