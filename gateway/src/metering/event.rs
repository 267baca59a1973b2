//! The event model of one client request and its upstream attempts.

use serde::Serialize;

/// Why an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Ok,
    /// The upstream answered with an error status.
    ErrorStatus,
    /// Could not connect or the connection failed before an answer.
    ConnectError,
    Timeout,
    /// The answer was not valid for the requested `response_format`.
    ValidationFailed,
    /// A stream broke (cut, stalled, malformed chunk) after it started; the
    /// answer continued on the next attempt.
    MidStreamFailover,
    /// The provider's circuit breaker was open; nothing was sent.
    CircuitOpen,
    /// The upstream answered 200 with a body that is not an OpenAI answer.
    BadResponse,
    /// The client went away while this attempt was running.
    ClientClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// The request asked for no structured output.
    NotRequested,
    Passed,
    /// Every attempt's answer failed validation.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptEvent {
    pub provider: String,
    pub model: String,
    /// Position in the variant's fallback chain (0 = first target).
    pub target_index: u32,
    /// Attempt number on this target (0 = first try).
    pub try_index: u32,
    pub outcome: AttemptOutcome,
    /// Upstream HTTP status, when one arrived.
    pub status: Option<u16>,
    /// Human-readable reason for a failed attempt.
    pub reason: Option<String>,
    pub started_ms: u64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens_estimated: bool,
    pub cost_usd: f64,
}

/// What an error body lists about the attempts made.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptSummary {
    pub provider: String,
    pub model: String,
    pub outcome: AttemptOutcome,
    pub status: Option<u16>,
    pub reason: Option<String>,
}

impl From<&AttemptEvent> for AttemptSummary {
    fn from(a: &AttemptEvent) -> Self {
        Self {
            provider: a.provider.clone(),
            model: a.model.clone(),
            outcome: a.outcome,
            status: a.status,
            reason: a.reason.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InferenceEvent {
    pub id: String,
    /// Unix time of arrival, milliseconds.
    pub ts_ms: u64,
    pub tenant: String,
    pub endpoint: &'static str,
    pub route: String,
    pub variant: String,
    /// Provider and model of the attempt that answered (empty when none did).
    pub provider: String,
    pub model: String,
    pub episode_id: Option<String>,
    pub user: Option<String>,
    pub stream: bool,
    /// HTTP status returned to the client.
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens_estimated: bool,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    /// Time spent in the gateway itself: total minus time waiting on
    /// upstreams and in backoff.
    pub overhead_ms: f64,
    /// Attempts after the first one.
    pub retries: u32,
    /// Index in the fallback chain of the target that answered.
    pub fallback_depth: u32,
    pub failovers: u32,
    pub failover_diverged: bool,
    pub validation: Validation,
    pub cost_usd: f64,
    pub attempts: Vec<AttemptEvent>,
}
