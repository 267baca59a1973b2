//! An eval run's report: Markdown for people, JSON for tools, and one
//! `eval_results` row per configuration for ClickHouse.

use flywheel_feedback::store::rows::EvalResultRow;
use serde::Serialize;

use super::ConfigReport;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub ts_ms: u64,
    pub dataset: String,
    pub grader: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub configs: Vec<ConfigReport>,
}

fn usd(x: f64) -> String {
    format!("${x:.6}")
}

fn qpd(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a (unpriced)".to_owned(), |v| format!("{v:.0}"))
}

impl Report {
    pub fn to_json(&self) -> serde_json::Result<String> {
        // NaN (an empty configuration) has no JSON form: serde_json writes null.
        serde_json::to_string_pretty(self)
    }

    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "# Eval `{}`\n\ndataset `{}`, grader `{}`, temperature {}, max_tokens {}\n\n",
            self.run_id, self.dataset, self.grader, self.temperature, self.max_tokens
        );
        md.push_str(
            "| config | model | n | mean score (95% CI) | pass rate (95% CI) | tokens/req | retries/req | fallbacks/req | p50 ms | p95 ms | cost/req | quality per $ | errors (request / grader) |\n",
        );
        md.push_str("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
        for c in &self.configs {
            md.push_str(&format!(
                "| {} | `{}` | {} | {:.3} ({:.3}–{:.3}) | {:.3} ({:.3}–{:.3}) | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} | {} / {} |\n",
                if c.raw { format!("{} (raw)", c.config) } else { c.config.clone() },
                c.model,
                c.requests,
                c.mean_score.value,
                c.mean_score.low,
                c.mean_score.high,
                c.pass_rate.value,
                c.pass_rate.low,
                c.pass_rate.high,
                c.tokens_per_request,
                c.retries_per_request,
                c.fallbacks_per_request,
                c.latency_p50_ms,
                c.latency_p95_ms,
                usd(c.cost_per_request_usd),
                qpd(c.quality_per_dollar),
                c.request_errors,
                c.grader_errors,
            ));
        }
        md.push_str(
            "\n(raw): asked without `response_format`, the model's raw answer graded. A request the gateway could not answer scores 0; grader errors are left out of quality and counted. \
             Cost, tokens, retries and fallbacks are the gateway's totals over all attempts. \
             Quality per $ = mean score / cost per request.\n",
        );
        md
    }

    /// One row per configuration; the row's `report_json` is that
    /// configuration's summary.
    pub fn rows(&self) -> serde_json::Result<Vec<EvalResultRow>> {
        self.configs
            .iter()
            .map(|c| {
                Ok(EvalResultRow {
                    run_id: self.run_id.clone(),
                    ts_ms: self.ts_ms,
                    dataset: self.dataset.clone(),
                    grader: self.grader.clone(),
                    config: c.config.clone(),
                    model: c.model.clone(),
                    requests: c.requests as u64,
                    request_errors: c.request_errors as u64,
                    grader_errors: c.grader_errors as u64,
                    mean_score: c.mean_score.value,
                    mean_score_low: c.mean_score.low,
                    mean_score_high: c.mean_score.high,
                    pass_rate: c.pass_rate.value,
                    pass_rate_low: c.pass_rate.low,
                    pass_rate_high: c.pass_rate.high,
                    tokens_per_request: c.tokens_per_request,
                    retries_per_request: c.retries_per_request,
                    fallbacks_per_request: c.fallbacks_per_request,
                    latency_p50_ms: c.latency_p50_ms,
                    latency_p95_ms: c.latency_p95_ms,
                    cost_per_request_usd: c.cost_per_request_usd,
                    // Unpriced: 0 in the table (the JSON says null).
                    quality_per_dollar: c.quality_per_dollar.unwrap_or(0.0),
                    report_json: serde_json::to_string(c)?,
                })
            })
            .collect()
    }
}
