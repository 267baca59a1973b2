//! Runs a dataset through one gateway configuration: each item's prompt
//! as an OpenAI chat request, its cost read from the gateway's
//! `x-flywheel-*` headers, its answer graded.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use flywheel_api::headers;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::{Observation, Outcome, Totals};
use crate::{
    grader::Grader,
    item::{Item, Sample},
};

/// Sampling parameters sent with every request of an eval.
#[derive(Debug, Clone)]
pub struct RequestParams {
    pub temperature: f64,
    pub max_tokens: u32,
    /// Send the item's `response_format` (the gateway validates it and,
    /// with validation retries, retries and falls back on it).
    pub response_format: bool,
    pub timeout: Duration,
}

impl Default for RequestParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            max_tokens: 256,
            response_format: true,
            timeout: Duration::from_secs(300),
        }
    }
}

/// An OpenAI-compatible endpoint: the Flywheel gateway.
#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    /// Sent as `x-flywheel-variant`: every request goes to this variant of
    /// the route (the gateway allows it to keys with `pin_variants`).
    variant: Option<String>,
}

impl Gateway {
    pub fn new(base_url: &str, api_key: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            variant: None,
        }
    }

    /// The same gateway, every request pinned to the route's `variant`
    /// whatever its weight: the offline gate measures a candidate that
    /// serves no traffic yet, through the same retries and metering.
    pub fn pinned(&self, variant: &str) -> Self {
        Self {
            variant: Some(variant.to_owned()),
            ..self.clone()
        }
    }

    /// The chat request for an item: its prompt (a trailing assistant
    /// answer, if any, is the reference, not part of the prompt) and tools.
    pub fn request_body(item: &Item, model: &str, params: &RequestParams) -> Value {
        let mut body = json!({
            "model": model,
            "messages": item.prompt(),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        });
        for key in ["tools", "tool_choice"] {
            if let Some(v) = item.extra.get(key) {
                body[key] = v.clone();
            }
        }
        if params.response_format {
            if let Some(v) = item.extra.get("response_format") {
                body["response_format"] = v.clone();
            }
        }
        body
    }

    /// Asks one item; never fails: errors become [`Outcome::RequestError`].
    pub async fn ask(
        &self,
        item: &Item,
        model: &str,
        params: &RequestParams,
    ) -> (f64, Option<Totals>, Result<Sample, String>) {
        let body = Self::request_body(item, model, params);
        let reply = self.chat(&body, None, params.timeout).await;
        (reply.latency_ms, reply.totals, reply.answer)
    }

    /// Sends one chat request (in `episode`, when given: the gateway keeps
    /// an episode on one variant and joins its feedback); never fails:
    /// transport and HTTP errors are the reply's `answer`.
    pub async fn chat(&self, body: &Value, episode: Option<&str>, timeout: Duration) -> Reply {
        let mut request = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .timeout(timeout);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        if let Some(episode) = episode {
            request = request.header(headers::EPISODE_ID, episode);
        }
        if let Some(variant) = &self.variant {
            request = request.header(headers::VARIANT, variant);
        }
        let started = Instant::now();
        let mut reply = Reply {
            latency_ms: 0.0,
            totals: None,
            inference_id: None,
            variant: None,
            answer: Err(String::new()),
        };
        reply.answer = match request.json(body).send().await {
            Err(e) => Err(format!("request failed: {e}")),
            Ok(response) => {
                let header = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                reply.totals = totals_of(response.headers());
                reply.inference_id = header(headers::REQUEST_ID);
                reply.variant = header(headers::VARIANT);
                let status = response.status();
                match response.bytes().await {
                    Err(e) => Err(format!("reading the answer: {e}")),
                    Ok(bytes) if !status.is_success() => Err(format!(
                        "HTTP {}: {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    )),
                    Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                        .map(|v| Sample::from_chat_answer(&v))
                        .map_err(|e| format!("answer is not JSON: {e}")),
                }
            }
        };
        reply.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        reply
    }

    /// Sends a boolean feedback on an inference (`POST /v1/feedback`).
    pub async fn feedback(
        &self,
        inference_id: &str,
        metric: &str,
        value: bool,
    ) -> Result<(), String> {
        let mut request = self
            .http
            .post(format!("{}/feedback", self.base_url))
            .timeout(Duration::from_secs(30));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let body = json!({"inference_id": inference_id, "metric": metric, "value": value});
        match request.json(&body).send().await {
            Err(e) => Err(format!("feedback failed: {e}")),
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!(
                "feedback got HTTP {}: {}",
                r.status().as_u16(),
                r.text().await.unwrap_or_default()
            )),
        }
    }
}

/// One chat answer as a client sees it.
#[derive(Debug)]
pub struct Reply {
    pub latency_ms: f64,
    pub totals: Option<Totals>,
    /// The gateway's id of the request (`x-flywheel-request-id`): what
    /// feedback names.
    pub inference_id: Option<String>,
    /// The route variant that answered (`x-flywheel-variant`).
    pub variant: Option<String>,
    pub answer: Result<Sample, String>,
}

/// The gateway's totals over all attempts of a request; `None` when the
/// headers are missing (not a Flywheel gateway, or an old one).
pub fn totals_of(headers: &HeaderMap) -> Option<Totals> {
    Totals::from_headers(|name| headers.get(name)?.to_str().ok())
}

/// Runs every item through `model` with at most `concurrency` requests in
/// flight, grading each answer off the async threads. `progress` is called
/// after each item with the number done. Observations come back in item
/// order.
pub async fn run_config(
    gateway: &Gateway,
    grader: Arc<Grader>,
    items: &[Item],
    model: &str,
    params: &RequestParams,
    concurrency: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<Observation> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let tasks = items.iter().map(|item| {
        let permits = permits.clone();
        let grader = grader.clone();
        let done = &done;
        async move {
            // The semaphore is never closed; were it, the request would just
            // go without a permit.
            let _permit = permits.acquire().await.ok();
            let (latency_ms, totals, answer) = gateway.ask(item, model, params).await;
            let outcome = match answer {
                Err(e) => Outcome::RequestError(e),
                Ok(sample) => {
                    let item = item.clone();
                    let graded =
                        tokio::task::spawn_blocking(move || grader.grade(&sample, &item)).await;
                    match graded {
                        Ok(Ok(grade)) => Outcome::Graded(grade),
                        Ok(Err(e)) => Outcome::GraderError(e.to_string()),
                        Err(e) => Outcome::GraderError(format!("grader panicked: {e}")),
                    }
                }
            };
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            Observation {
                item_id: item.id(),
                latency_ms,
                totals,
                outcome,
            }
        }
    });
    futures_util::future::join_all(tasks).await
}
