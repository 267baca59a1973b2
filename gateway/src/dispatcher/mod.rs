//! Serving one client request on upstreams: attempts in the order of the
//! [`Plan`], each metered, until one answer is acceptable.
//!
//! The request path is: endpoint → [`Call`] → [`unary::run`] or
//! [`stream::run`] → attempts → response. What happened goes to
//! [`crate::metering::record_request`], which turns it into the request's one event.

mod plan;
mod stream;
mod unary;
pub mod validate;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use flywheel_api::openai::StreamOptions;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
pub use plan::{Failure, Plan};
use serde_json::Value;
pub use stream::run as run_stream;
pub use unary::run as run_unary;
pub use validate::Validator;

use crate::{
    error::GatewayError,
    metering::{tokens, AttemptEvent, AttemptOutcome, AttemptSummary, Ledger},
    middleware::Tenant,
    router::{Route, Target},
    upstream::{is_retryable, retry_after, UpstreamError},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Completion,
    Embedding,
}

impl Operation {
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completion => "/completions",
            Self::Embedding => "/embeddings",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Embedding => "embedding",
        }
    }
}

/// One client request, checked and routed, ready to dispatch.
pub struct Call {
    pub id: String,
    pub ts_ms: u64,
    pub start: Instant,
    pub tenant: String,
    /// The caller's key, when it has a token limit to count against.
    pub token_key: Option<Arc<str>>,
    pub op: Operation,
    pub route: Arc<Route>,
    pub variant: usize,
    /// The body as the client sent it; `model` is replaced per target.
    pub body: Value,
    pub stream: bool,
    pub include_usage: bool,
    /// Mid-stream continuation needs a single choice.
    pub can_continue: bool,
    pub validator: Option<Validator>,
    pub episode_id: Option<String>,
    pub user: Option<String>,
}

impl Call {
    pub fn new(
        op: Operation,
        tenant: Tenant,
        route: Arc<Route>,
        body: Value,
        episode_id: Option<String>,
        start: Instant,
    ) -> Self {
        let user = body.get("user").and_then(Value::as_str).map(str::to_owned);
        let sticky = episode_id.as_deref().or(user.as_deref());
        let picked = route.pick(sticky);
        let variant = route
            .variants
            .iter()
            .position(|v| std::ptr::eq(v, picked))
            .expect("picked from this route");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(start.elapsed());
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            ts_ms: now.as_millis() as u64,
            start,
            tenant: tenant.name,
            token_key: tenant.counts_tokens.then_some(tenant.key_id),
            op,
            route,
            variant,
            body,
            stream: false,
            include_usage: false,
            can_continue: true,
            validator: None,
            episode_id,
            user,
        }
    }

    /// `stream` and `stream_options.include_usage` of the request.
    pub fn set_streaming(&mut self, stream: Option<bool>, options: Option<&StreamOptions>) {
        self.stream = stream.unwrap_or(false);
        self.include_usage = options.is_some_and(|o| o.include_usage);
    }

    pub fn variant_name(&self) -> &str {
        &self.route.variants[self.variant].name
    }

    pub fn targets(&self) -> &[Target] {
        &self.route.variants[self.variant].targets
    }

    pub fn deadline(&self) -> Instant {
        self.start + self.route.retry.total_timeout()
    }

    /// The upstream body for `target`: the client's body with the target's
    /// model. Streams always ask for usage so that metering has real counts.
    fn upstream_body(&self, target: &Target, continue_from: Option<&str>) -> Value {
        let mut body = self.body.clone();
        body["model"] = Value::String(target.model.clone());
        if !target.provider.forward_response_format {
            if let Some(obj) = body.as_object_mut() {
                obj.remove("response_format");
            }
        }
        if self.stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        if let Some(prefix) = continue_from {
            match self.op {
                Operation::Chat => {
                    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
                        messages.push(serde_json::json!({"role": "assistant", "content": prefix}));
                    }
                }
                Operation::Completion => {
                    if let Some(Value::String(prompt)) = body.get_mut("prompt") {
                        prompt.push_str(prefix);
                    }
                }
                Operation::Embedding => {}
            }
        }
        body
    }
}

/// Facts about one attempt, filled in as it runs.
pub struct AttemptRecord<'a> {
    pub target: &'a Target,
    pub target_index: usize,
    pub try_index: u32,
    pub started: Instant,
    pub started_ms: u64,
    pub ttft: Option<Duration>,
    pub status: Option<u16>,
    pub usage: Option<(u64, u64)>,
}

impl<'a> AttemptRecord<'a> {
    pub fn begin(call: &Call, plan: &Plan<'_>, target: &'a Target) -> Self {
        Self {
            target,
            target_index: plan.target,
            try_index: plan.tries,
            started: Instant::now(),
            started_ms: call.ts_ms + call.start.elapsed().as_millis() as u64,
            ttft: None,
            status: None,
            usage: None,
        }
    }

    /// Closes the attempt. Without upstream usage, tokens are estimated from
    /// the request and the `completion_estimate` of the answer seen.
    pub fn finish(
        self,
        ledger: &mut Ledger,
        outcome: AttemptOutcome,
        reason: Option<String>,
        sent_body: &Value,
        completion_estimate: u64,
    ) {
        let elapsed = self.started.elapsed();
        ledger.waited += elapsed;
        let sent_anything = !matches!(
            outcome,
            AttemptOutcome::CircuitOpen | AttemptOutcome::ConnectError
        );
        let (prompt, completion, estimated) = match self.usage {
            Some((p, c)) => (p, c, false),
            None if sent_anything => (
                tokens::estimate_prompt(sent_body),
                completion_estimate,
                true,
            ),
            None => (0, 0, false),
        };
        let provider = &self.target.provider;
        ledger.attempts.push(AttemptEvent {
            provider: provider.name.clone(),
            model: self.target.model.clone(),
            target_index: self.target_index as u32,
            try_index: self.try_index,
            outcome,
            status: self.status,
            reason,
            started_ms: self.started_ms,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            ttft_ms: self.ttft.map(|t| t.as_secs_f64() * 1000.0),
            prompt_tokens: prompt,
            completion_tokens: completion,
            tokens_estimated: estimated,
            cost_usd: provider.cost(prompt, completion, elapsed),
        });
    }
}

/// What an attempt that got no usable answer tells the plan.
pub struct Failed {
    pub outcome: AttemptOutcome,
    pub reason: String,
    pub failure: Failure,
    /// The client's request is at fault: return this upstream answer.
    pub rejected: Option<(StatusCode, Bytes)>,
}

impl Failed {
    /// Reports the failure to the provider's circuit breaker. A rejected
    /// request or a 429 says nothing about the upstream's health.
    pub fn settle(self, permit: crate::upstream::Permit<'_>, record: &AttemptRecord<'_>) -> Self {
        if self.rejected.is_some() || record.status == Some(429) {
            drop(permit);
        } else {
            permit.failure();
        }
        self
    }
}

/// Sends one attempt and returns the response once it is a 200.
pub async fn send(
    call: &Call,
    record: &mut AttemptRecord<'_>,
    body: &Value,
    timeout: Duration,
) -> Result<http::Response<Incoming>, Failed> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON value serialises"));
    let provider = &record.target.provider;
    let affinity = call
        .episode_id
        .as_deref()
        .or(call.user.as_deref())
        .unwrap_or(&call.id);
    let response = match provider
        .post(call.op.path(), bytes, timeout, affinity.as_bytes())
        .await
    {
        Ok(r) => r,
        Err(UpstreamError::Timeout) => {
            return Err(Failed {
                outcome: AttemptOutcome::Timeout,
                reason: format!("no response within {} ms", timeout.as_millis()),
                failure: Failure::Retryable { retry_after: None },
                rejected: None,
            })
        }
        Err(UpstreamError::Connect(e)) => {
            return Err(Failed {
                outcome: AttemptOutcome::ConnectError,
                reason: e,
                failure: Failure::Retryable { retry_after: None },
                rejected: None,
            })
        }
    };
    let status = response.status();
    record.status = Some(status.as_u16());
    if status == StatusCode::OK {
        return Ok(response);
    }
    let wait = retry_after(response.headers());
    // The error body explains the failure; read a bounded amount of it.
    let body = read_body(response.into_body(), 64 * 1024, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let reason = format!(
        "upstream status {}: {}",
        status.as_u16(),
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    if is_retryable(status) {
        Err(Failed {
            outcome: AttemptOutcome::ErrorStatus,
            reason,
            failure: Failure::Retryable { retry_after: wait },
            rejected: None,
        })
    } else if status.is_client_error() {
        Err(Failed {
            outcome: AttemptOutcome::ErrorStatus,
            reason,
            failure: Failure::NextTarget,
            rejected: Some((status, body)),
        })
    } else {
        // 1xx/3xx and other oddities: try elsewhere.
        Err(Failed {
            outcome: AttemptOutcome::BadResponse,
            reason,
            failure: Failure::NextTarget,
            rejected: None,
        })
    }
}

/// Reads a whole body within a size limit and a deadline.
pub async fn read_body(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(format!("reading the answer failed: {e}")),
        Err(_) => Err("timed out reading the answer".to_owned()),
    }
}

/// The error for a request whose every attempt failed: 504 when the last
/// failure was a deadline, 503 when no upstream could be reached, 502 when
/// upstreams answered badly.
pub fn exhausted_error(call: &Call, ledger: &Ledger) -> GatewayError {
    let attempts: Vec<AttemptSummary> = ledger.attempts.iter().map(AttemptSummary::from).collect();
    let last = ledger.attempts.last().map(|a| a.outcome);
    let unreachable = ledger.attempts.iter().all(|a| {
        matches!(
            a.outcome,
            AttemptOutcome::CircuitOpen | AttemptOutcome::ConnectError
        )
    });
    let (status, what) =
        if last == Some(AttemptOutcome::Timeout) || Instant::now() >= call.deadline() {
            (StatusCode::GATEWAY_TIMEOUT, "timed out")
        } else if unreachable {
            (StatusCode::SERVICE_UNAVAILABLE, "no upstream is reachable")
        } else {
            (StatusCode::BAD_GATEWAY, "every upstream attempt failed")
        };
    GatewayError::Upstream {
        status,
        message: format!(
            "{what} for model `{}` after {} attempt(s)",
            call.route.name,
            attempts.len()
        ),
        attempts,
    }
}

/// `usage.{prompt_tokens, completion_tokens}` of an answer, if present.
pub fn usage_of(answer: &Value) -> Option<(u64, u64)> {
    let usage = answer.get("usage")?;
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some((prompt, completion))
}

/// Sleeps for a backoff, counted as waiting rather than overhead.
pub async fn backoff(ledger: &mut Ledger, wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
        ledger.waited += wait;
    }
}
