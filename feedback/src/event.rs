//! The event model: one client request and its upstream attempts
//! ([`InferenceEvent`]), feedback on a request or an episode
//! ([`FeedbackEvent`]), and [`Record`], what the write-ahead log stores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// The request asked for no structured output.
    NotRequested,
    Passed,
    /// Every attempt's answer failed validation.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceEvent {
    pub id: String,
    /// Unix time of arrival, milliseconds.
    pub ts_ms: u64,
    pub tenant: String,
    pub endpoint: String,
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
    /// The client's request body as received (JSON text), when the gateway
    /// captures bodies. What reaches ClickHouse is decided by the capture
    /// config's `bodies` policy (store, redact, skip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// The answer returned to the client (JSON text; for streams, the
    /// assembled answer), when the gateway captures bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// A shadow request: the canary's mirror of a served request to the
    /// candidate variant. Its answer was never returned and it counts
    /// against no tenant limit; `tenant` says whose request it mirrored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Joins a shadow request to the served request it mirrors: the served
    /// request's id, on both events. None for requests without a mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_id: Option<String>,
}

/// What a feedback event is about: one inference, or a whole episode (a
/// multi-turn interaction whose requests share an `episode_id`). Exactly one
/// of the two is normally set; [`FeedbackTarget::is_valid`] checks it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FeedbackTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode_id: Option<String>,
}

impl FeedbackTarget {
    pub fn inference(id: impl Into<String>) -> Self {
        Self {
            inference_id: Some(id.into()),
            episode_id: None,
        }
    }

    pub fn episode(id: impl Into<String>) -> Self {
        Self {
            inference_id: None,
            episode_id: Some(id.into()),
        }
    }

    /// Exactly one of inference and episode is set.
    pub fn is_valid(&self) -> bool {
        self.inference_id.is_some() != self.episode_id.is_some()
    }
}

/// The value of a feedback metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackValue {
    Boolean(bool),
    /// Must be finite: JSON (the log's encoding) has no NaN or infinity.
    Float(f64),
    Comment(String),
    /// A corrected answer: an assistant message
    /// (`{"role": "assistant", "content": ...}`).
    Demonstration(serde_json::Value),
}

impl FeedbackValue {
    /// The value as a number, for booleans (0/1) and floats; what means and
    /// rollups average.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
            Self::Float(f) => Some(*f),
            Self::Comment(_) | Self::Demonstration(_) => None,
        }
    }
}

/// Where a feedback event came from: `api` (the feedback endpoint) or an
/// implicit signal the gateway inferred.
pub mod feedback_source {
    pub const API: &str = "api";
    /// The user asked again in the same episode.
    pub const IMPLICIT_REASK: &str = "implicit:reask";
    /// The client regenerated the answer.
    pub const IMPLICIT_REGENERATE: &str = "implicit:regenerate";
    /// Structured output failed or passed validation.
    pub const IMPLICIT_VALIDATION: &str = "implicit:validation";
}

/// Feedback on an inference or an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    /// UUIDv7 ([`FeedbackEvent::new_id`]); the deduplication key.
    pub id: String,
    /// Unix time the feedback arrived, milliseconds.
    pub ts_ms: u64,
    pub tenant: String,
    pub target: FeedbackTarget,
    /// Route and variant of the target, filled by the gateway from the
    /// target's owner lookup ([`crate::Store::inference_owner`]); they let
    /// rollups and the canary group feedback per variant without a join.
    /// Empty when unknown.
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub variant: String,
    pub metric: String,
    pub value: FeedbackValue,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The client's idempotency key, if it sent one. Deduplication is by
    /// `id`; a gateway that wants retried API calls to count once derives
    /// the id from the key ([`FeedbackEvent::id_for_idempotency_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// See [`feedback_source`].
    pub source: String,
}

impl FeedbackEvent {
    /// A fresh UUIDv7: time-ordered, which keeps ClickHouse's `ORDER BY id`
    /// clustered by time.
    pub fn new_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// A stable id for a tenant's idempotency key: a UUIDv8 made of the
    /// first 16 bytes of SHA-256(tenant, key), so a retried call with the
    /// same key gets the same id and is stored once. (Not time-ordered,
    /// unlike [`FeedbackEvent::new_id`]; feedback is rare enough.)
    pub fn id_for_idempotency_key(tenant: &str, key: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        uuid::Builder::from_custom_bytes(b).into_uuid().to_string()
    }
}

/// One entry of the write-ahead log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Inference(InferenceEvent),
    Feedback(FeedbackEvent),
}

impl Record {
    /// The event id: the deduplication key in ClickHouse.
    pub fn id(&self) -> &str {
        match self {
            Self::Inference(e) => &e.id,
            Self::Feedback(e) => &e.id,
        }
    }

    /// The event's Unix time, milliseconds.
    pub fn ts_ms(&self) -> u64 {
        match self {
            Self::Inference(e) => e.ts_ms,
            Self::Feedback(e) => e.ts_ms,
        }
    }
}

impl From<InferenceEvent> for Record {
    fn from(e: InferenceEvent) -> Self {
        Self::Inference(e)
    }
}

impl From<FeedbackEvent> for Record {
    fn from(e: FeedbackEvent) -> Self {
        Self::Feedback(e)
    }
}
