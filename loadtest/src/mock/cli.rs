//! Command line of `flywheel-mock`. Every fault knob has a flag that sets the
//! process-wide default; the matching `x-mock-*` request header overrides it
//! for a single request.

use std::net::SocketAddr;

use clap::Parser;

use super::knobs::{Knobs, DEFAULT_TEXT};

#[derive(Debug, Parser)]
#[command(
    name = "flywheel-mock",
    version,
    about = "Mock OpenAI-compatible provider with fault injection, for Flywheel tests and benchmarks",
    long_about = "Mock OpenAI-compatible provider with fault injection, for Flywheel tests and benchmarks.\n\n\
Endpoints: POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, GET /v1/models, \
GET /mock/stats, POST /mock/reset, GET /health.\n\n\
Each knob flag below sets the default; the request header named in its help overrides it per request. \
Header `x-mock-scenario: KEY` keys the counters of fail-first, fault-times and /mock/stats (default \"\"). \
Unknown x-mock-* headers and bad values get a 400. The first stdout line is always `listening on ADDR`."
)]
pub struct MockArgs {
    /// Address to listen on; port 0 picks a free port (see the first stdout line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Worker threads of the runtime (default: one per CPU core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Non-streaming: delay before the whole response, in ms; also delays injected errors [header x-mock-latency-ms].
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Streaming: delay before the first content chunk, in ms [header x-mock-ttft-ms].
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,

    /// Streaming: pace content chunks after the first at this rate; 0 = no pacing [header x-mock-tokens-per-s].
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_s: f64,

    /// Assistant output text; setting it disables the JSON output of JSON mode
    /// [header x-mock-text] (default: "Hello! This is the mock provider answering your request.").
    #[arg(long)]
    pub text: Option<String>,

    /// JSON mode (response_format json_object/json_schema, no explicit text):
    /// probability in [0,1] that the output is valid JSON rather than truncated [header x-mock-json-valid-ratio].
    #[arg(long, default_value_t = 1.0)]
    pub json_valid_ratio: f64,

    /// Probability in [0,1] of answering with an injected error [header x-mock-error-rate].
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,

    /// HTTP status of injected errors [header x-mock-error-status].
    #[arg(long, default_value_t = 500)]
    pub error_status: u16,

    /// The first N requests of each scenario fail with the error status [header x-mock-fail-first].
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,

    /// Add `Retry-After: SECS` to injected errors [header x-mock-retry-after].
    #[arg(long)]
    pub retry_after: Option<u64>,

    /// Streaming: after N content chunks, drop the connection abruptly [header x-mock-cut-after].
    #[arg(long)]
    pub cut_after: Option<u64>,

    /// Streaming: after N content chunks, stop sending for --stall-ms, then go on [header x-mock-stall-after].
    #[arg(long)]
    pub stall_after: Option<u64>,

    /// Length of the stall of --stall-after, in ms [header x-mock-stall-ms].
    #[arg(long, default_value_t = 60_000)]
    pub stall_ms: u64,

    /// Streaming: after N content chunks, send `data: {this is not json` and end the stream [header x-mock-malformed-after].
    #[arg(long)]
    pub malformed_after: Option<u64>,

    /// Mid-stream faults (cut/stall/malformed) apply only to the first N streaming requests of a scenario;
    /// default unlimited [header x-mock-fault-times].
    #[arg(long)]
    pub fault_times: Option<u64>,

    /// Omit `usage` from responses and from the final stream chunk [header x-mock-no-usage: 1].
    #[arg(long)]
    pub no_usage: bool,

    /// Dimensions of embedding vectors [header x-mock-embedding-dim].
    #[arg(long, default_value_t = 8)]
    pub embedding_dim: usize,

    /// Seed of the deterministic RNG behind --error-rate and --json-valid-ratio.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl MockArgs {
    /// The process-wide default knobs, validated like header values.
    pub fn knobs(&self) -> Result<Knobs, super::knobs::KnobError> {
        let mut k = Knobs {
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            tokens_per_s: self.tokens_per_s,
            text: self.text.as_deref().map(Into::into),
            json_valid_ratio: self.json_valid_ratio,
            error_rate: self.error_rate,
            error_status: http::StatusCode::INTERNAL_SERVER_ERROR,
            fail_first: self.fail_first,
            retry_after: self.retry_after,
            scenario: String::new(),
            cut_after: self.cut_after,
            stall_after: self.stall_after,
            stall_ms: self.stall_ms,
            malformed_after: self.malformed_after,
            fault_times: self.fault_times,
            no_usage: self.no_usage,
            embedding_dim: self.embedding_dim,
        };
        // Reuse the header validation so flags and headers accept the same values.
        k.set("x-mock-error-status", &self.error_status.to_string())?;
        k.set(
            "x-mock-json-valid-ratio",
            &self.json_valid_ratio.to_string(),
        )?;
        k.set("x-mock-error-rate", &self.error_rate.to_string())?;
        k.set("x-mock-tokens-per-s", &self.tokens_per_s.to_string())?;
        k.set("x-mock-embedding-dim", &self.embedding_dim.to_string())?;
        debug_assert!(!DEFAULT_TEXT.is_empty());
        Ok(k)
    }
}
