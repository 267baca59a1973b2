//! The config file as TOML gives it: serde structs with the defaults, before
//! any check. [`UninitializedConfig::load`] turns them into
//! the runtime [`Config`](super::Config) once; nothing else reads them.
//!
//! Tables whose values need no parsing (numbers, enums, plain strings) are
//! used as they are at run time too; the others (`Uninitialized*`) have a
//! runtime counterpart in [`super`] holding parsed URLs, header maps,
//! durations and digests.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedConfig {
    #[serde(default)]
    pub server: UninitializedServerConfig,
    #[serde(default)]
    pub auth: UninitializedAuthConfig,
    #[serde(default)]
    pub admin: UninitializedAdminConfig,
    #[serde(default)]
    pub metering: MeteringConfig,
    #[serde(default)]
    pub redis: UninitializedRedisConfig,
    #[serde(default)]
    pub feedback: FeedbackConfig,
    /// Lossless capture: write-ahead log shipped to ClickHouse. Absent = no
    /// capture (events go to `[metering]` only).
    #[serde(default)]
    pub capture: Option<flywheel_feedback::CaptureConfig>,
    /// Defaults for every route; a route may override any of them.
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Upstreams by name.
    #[serde(default)]
    pub providers: BTreeMap<String, UninitializedProviderConfig>,
    /// Public model names that clients send in `model`.
    #[serde(default)]
    pub routes: Vec<UninitializedRouteConfig>,
    /// The tuner service's jobs (`flywheel-tuner serve`), which may share
    /// this file; the gateway does not read it (`flywheel-tuner jobs`
    /// checks it).
    #[serde(default)]
    pub tuner: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UninitializedServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Time allowed for a client to send the request headers (> 0). It also
    /// bounds how long an idle HTTP/1 keep-alive connection is held open,
    /// and how long a new connection of either protocol may go without
    /// starting a request: a client that connects and sends nothing, or
    /// stalls before its HTTP/2 handshake ends, is closed after it.
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive the whole request body once headers arrived.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed,
    /// whatever its protocol (> 0). It bounds idle HTTP/2 connections,
    /// which have no header timeout between requests.
    pub idle_timeout_ms: u64,
    /// Most client connections open at once (> 0). Over it, new connections
    /// are not refused: they wait in the listen backlog until an open one
    /// closes (the timeouts above bound how long that takes). Keep it below
    /// the process's open-file limit (`ulimit -n`), which upstream
    /// connections and log files share.
    pub max_connections: usize,
    /// HTTP/2 keep-alive: a ping every this often on each connection;
    /// 0 = no pings.
    pub http2_keep_alive_interval_ms: u64,
    /// HTTP/2 keep-alive: a connection whose ping is not acknowledged
    /// within this time is closed (a dead peer), requests in flight included.
    pub http2_keep_alive_timeout_ms: u64,
    /// Most requests (streams) in flight at once on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// On SIGINT/SIGTERM, stop accepting and wait this long for in-flight
    /// requests to finish before exiting anyway.
    pub shutdown_grace_ms: u64,
    /// Serve HTTPS (TLS 1.2/1.3, HTTP/2 by ALPN) with this PEM certificate
    /// chain, leaf first; needs `tls_key_file`. Unset = plain HTTP. Checked
    /// at start (a relative path from the working directory), then reread
    /// every 10 s and on SIGHUP: a rotated pair reaches new connections
    /// without a restart.
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for UninitializedServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            max_connections: 4_096,
            http2_keep_alive_interval_ms: 20_000,
            http2_keep_alive_timeout_ms: 10_000,
            http2_max_concurrent_streams: 128,
            shutdown_grace_ms: 30_000,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// `[upstream]`: limits on what the gateway reads from upstreams, so that an
/// upstream's bytes cannot exhaust its memory.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Largest server-sent event (or line of one) accepted in a streamed
    /// answer (> 0); a larger one fails the attempt as `bad_response`.
    pub max_sse_event_bytes: usize,
    /// Largest answer held in memory (> 0): a non-streamed answer, or a
    /// streamed one held back until it passes output validation, or the
    /// text of a streamed one (kept to continue it on another attempt). A
    /// larger one fails the attempt as `bad_response`.
    pub max_response_bytes: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            max_sse_event_bytes: 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UninitializedAuthConfig {
    /// When false, requests need no API key and are attributed to the
    /// tenant `anonymous`. Meant for local development only.
    pub enabled: bool,
    pub keys: Vec<UninitializedApiKeyConfig>,
}

impl Default for UninitializedAuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedApiKeyConfig {
    /// Tenant that requests with this key are attributed to.
    pub tenant: String,
    /// Lower-case hex SHA-256 of the bearer token. The token itself is never
    /// stored: `flywheel-gateway hash-key TOKEN` prints this value.
    pub sha256: String,
    /// Requests per minute allowed for this key; 0 = no limit. Shared by
    /// all gateway processes through Redis, per process without it.
    #[serde(default)]
    pub requests_per_minute: u32,
    /// Prompt + completion tokens per minute for this key; 0 = no limit.
    /// Each request reserves its prompt estimate plus `max_tokens` × `n`
    /// before it runs (429 when that does not fit in the minute's window)
    /// and is charged what it used when it ends.
    #[serde(default)]
    pub tokens_per_minute: u64,
    /// May requests with this key pin a route's variant with the
    /// `x-flywheel-variant` header (weights, stickiness and the shadow
    /// mirror skipped)? Pinning bypasses experiments and can pick the
    /// expensive fallback chain, so only trusted callers (the tuner's
    /// offline eval) should have it; others get 403.
    #[serde(default)]
    pub pin_variants: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UninitializedAdminConfig {
    /// Hex SHA-256 of the admin bearer token for `/admin/*`. Unset = the
    /// admin API is disabled (404).
    pub token_sha256: Option<String>,
    /// Hex SHA-256 of a bearer token that may read `/metrics` only (for a
    /// Prometheus scraper). Whenever this or `token_sha256` is set,
    /// `/metrics` needs one of the two tokens (401); with neither set it is
    /// open, as there is no secret to ask for.
    pub metrics_token_sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UninitializedRedisConfig {
    /// `redis://127.0.0.1:6379/0`; unset = no Redis (per-process limits,
    /// weights from the config and the admin API only).
    pub url: Option<String>,
    /// Prefix of every key the gateway reads or writes.
    pub key_prefix: String,
    /// Timeout of one Redis command; past it the request falls back to the
    /// per-process limit. Keep it well below request latencies.
    pub command_timeout_ms: u64,
    /// How often route weights are read from Redis.
    pub weights_poll_ms: u64,
}

impl Default for UninitializedRedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "flywheel:".into(),
            command_timeout_ms: 50,
            weights_poll_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Recent inferences whose owner is kept in memory for feedback
    /// authorization (older ones are looked up in ClickHouse).
    pub recent_capacity: usize,
    /// Memory that index may use, in bytes (estimated per entry: ids,
    /// names and bookkeeping); the oldest entries go first past either
    /// limit.
    pub recent_max_bytes: usize,
    /// Metrics that `POST /v1/feedback` accepts.
    pub metrics: Vec<MetricConfig>,
    pub implicit: ImplicitConfig,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            recent_capacity: 500_000,
            recent_max_bytes: 128 * 1024 * 1024,
            metrics: Vec::new(),
            implicit: ImplicitConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    /// Whether feedback targets one inference or a whole episode.
    #[serde(default)]
    pub level: MetricLevel,
    /// Which direction is better; the tuner and the canary read it.
    #[serde(default)]
    pub optimize: Optimize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// JSON `true`/`false` (thumbs up/down, task success).
    Boolean,
    /// A JSON number (a score, a rating).
    Float,
    /// A text comment.
    Comment,
    /// The ideal answer: an assistant message, or its content as a string.
    Demonstration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricLevel {
    #[default]
    Inference,
    Episode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimize {
    #[default]
    Max,
    Min,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImplicitConfig {
    /// Record implicit signals (re-ask, regeneration, validation) as feedback.
    pub enabled: bool,
    /// A repeat within this many seconds of the previous turn counts.
    pub window_s: u64,
    /// Word-set Jaccard similarity at or above which a new question is a
    /// re-ask of the previous one.
    pub reask_similarity: f64,
    /// Users/episodes tracked at once per process.
    pub max_tracked: usize,
}

impl Default for ImplicitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 300,
            reask_similarity: 0.8,
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    /// `jsonl` appends one JSON event per request to `path`; `none` only
    /// updates Prometheus metrics.
    pub sink: SinkKind,
    pub path: PathBuf,
    /// `jsonl`: events waiting for the writer may hold at most this many
    /// bytes (as written). When the disk falls that far behind, new events
    /// are left out of the file (counted in
    /// `flywheel_metering_events_dropped_total` and logged) rather than
    /// held in memory or blocking requests; `[capture]` is the lossless path.
    pub max_queued_bytes: usize,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            sink: SinkKind::None,
            path: PathBuf::from("flywheel-events.jsonl"),
            max_queued_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    None,
    Jsonl,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries on the same target after a retryable failure (connect error,
    /// timeout, 429, 5xx, cut stream) before moving down the fallback chain.
    pub max_retries: u32,
    /// Retries on the same target after an answer failed output validation.
    pub validation_retries: u32,
    /// First backoff; doubled on each retry, with full jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Longest `Retry-After` the gateway honours; a longer one moves on to
    /// the next target instead of waiting.
    pub max_retry_after_ms: u64,
    /// Deadline of one upstream attempt (non-streaming: the whole answer;
    /// streaming: until the first token).
    pub attempt_timeout_ms: u64,
    /// Deadline of the whole request, all attempts and backoffs included,
    /// and a stream too: one still running then is cut, and the client's
    /// stream ends with an error event.
    pub total_timeout_ms: u64,
    /// A stream that sends nothing for this long is treated as stalled and
    /// continued on the next attempt.
    pub stream_idle_timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            validation_retries: 1,
            initial_backoff_ms: 100,
            max_backoff_ms: 2_000,
            max_retry_after_ms: 10_000,
            attempt_timeout_ms: 60_000,
            total_timeout_ms: 120_000,
            stream_idle_timeout_ms: 20_000,
        }
    }
}

impl RetryConfig {
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
    pub fn total_timeout(&self) -> Duration {
        Duration::from_millis(self.total_timeout_ms)
    }
    pub fn stream_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_idle_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Number of most recent attempts per provider the error ratio is taken over.
    pub window: usize,
    /// The breaker needs at least this many attempts in the window to open.
    pub min_requests: usize,
    /// Error ratio (0..1] that opens the breaker.
    pub error_ratio: f64,
    /// How long an open breaker rejects attempts before letting probes through.
    pub open_ms: u64,
    /// Concurrent probe attempts allowed while half-open.
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_requests: 10,
            error_ratio: 0.5,
            open_ms: 5_000,
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedProviderConfig {
    /// OpenAI-compatible base URL including the version prefix, for example
    /// `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable that holds the provider's API key; unset = no
    /// `Authorization` header is sent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request to this provider.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// USD per 1M prompt tokens.
    #[serde(default)]
    pub price_input_per_1m: f64,
    /// USD per 1M completion tokens.
    #[serde(default)]
    pub price_output_per_1m: f64,
    /// USD per second of an attempt's upstream time (connect to last byte),
    /// for self-hosted engines priced by compute: e.g. a $0.10/hour CPU
    /// replica serving one request at a time is 0.10 / 3600. Added to the
    /// token prices.
    #[serde(default)]
    pub price_per_second: f64,
    /// Send the client's `response_format` to this provider. `false`: the
    /// gateway still validates the answer against it (and retries or falls
    /// back on failure), but the provider answers unconstrained, as a
    /// provider without structured outputs would.
    #[serde(default = "default_true")]
    pub forward_response_format: bool,
    /// How a stream cut mid-answer is continued on this provider.
    #[serde(default)]
    pub continuation: Continuation,
    /// A pool of replicas (`IP:PORT`) serving this provider, e.g. engine
    /// replicas. Requests go to the replica of their episode (consistent
    /// hashing), `base_url` then gives only the scheme and path prefix.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Path of the replicas' health check (any 200 is healthy).
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// How often replicas are health-checked.
    #[serde(default = "default_health_check_ms")]
    pub health_check_ms: u64,
    /// PEM file of CA certificates to trust for this provider's `https`,
    /// besides the public roots: e.g. the private CA of an engine started
    /// with `--tls-cert`. Unset = public roots only.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

fn default_health_path() -> String {
    "/health".to_owned()
}

fn default_health_check_ms() -> u64 {
    1_000
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

/// How the gateway continues a stream that broke after it already sent part
/// of the answer to the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// Resend the conversation with the partial answer as a final assistant
    /// message; the provider continues from it (assistant prefill, as served
    /// by vLLM, llama.cpp, mistral.rs and the mock).
    #[default]
    AssistantPrefix,
    /// Ask again from scratch and drop the part of the new answer that the
    /// client already has. If the new answer does not start with it, the
    /// rest is sent anyway and the event records `failover_diverged`.
    Restart,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedRouteConfig {
    /// Public model name.
    pub name: String,
    pub variants: Vec<VariantConfig>,
    /// Overrides of the global `[retry]` table for this route.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    pub name: String,
    /// Relative share of traffic; 0 takes the variant out of the split.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Ordered fallback chain: the first target is tried first.
    pub targets: Vec<TargetConfig>,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Name of a `[providers.*]` entry.
    pub provider: String,
    /// Model name sent to that provider.
    pub model: String,
}
