//! The gateway's one TOML config file.
//!
//! Two forms, as in TensorZero: the file parses into the serde structs of
//! [`uninitialized`] (every key with its default, documented on the field
//! and in the README's configuration reference), and
//! [`UninitializedConfig::load`] checks them and yields [`Config`], the
//! runtime form: base URLs as [`Uri`]s, provider headers as [`HeaderMap`]s,
//! timeouts as [`Duration`]s, key hashes as 32-byte digests, each route's
//! retry policy resolved. Whatever can be wrong in a config is therefore
//! found at start (and by `check-config`), with an error that names the key;
//! code that runs later reads parsed values and has nothing left to check.
//!
//! Only providers, routes and API keys have no sensible default. Unknown keys
//! are rejected so that a typo is an error that names the key instead of a
//! silently ignored setting.

pub mod uninitialized;
mod validate;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use http::{HeaderMap, HeaderValue, Uri};
pub use uninitialized::{
    CircuitBreakerConfig, Continuation, FeedbackConfig, ImplicitConfig, MeteringConfig,
    MetricConfig, MetricKind, MetricLevel, Optimize, RetryConfig, SinkKind, TargetConfig,
    UninitializedConfig, UpstreamConfig, VariantConfig,
};
pub use validate::ConfigError;

/// The validated config the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub metering: MeteringConfig,
    pub redis: RedisConfig,
    pub feedback: FeedbackConfig,
    /// Lossless capture: write-ahead log shipped to ClickHouse. Absent = no
    /// capture (events go to `[metering]` only).
    pub capture: Option<flywheel_feedback::CaptureConfig>,
    pub circuit_breaker: CircuitBreakerConfig,
    /// Limits on what is read from upstreams (every size > 0).
    pub upstream: UpstreamConfig,
    /// Upstreams by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Public model names that clients send in `model`.
    pub routes: Vec<RouteConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Larger request bodies get 413 (> 0).
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    /// What bounds each connection (validated: every timeout > 0).
    pub limits: flywheel_listener::Limits,
    /// Loaded and checked: `None` = plain HTTP.
    pub tls: Option<flywheel_listener::Tls>,
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// False: no key needed, every request is tenant `anonymous`.
    pub enabled: bool,
    /// Not empty when `enabled`.
    pub keys: Vec<ApiKeyConfig>,
}

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// Not empty.
    pub tenant: String,
    /// SHA-256 of the bearer token.
    pub sha256: [u8; 32],
    /// 0 = no limit.
    pub requests_per_minute: u32,
    /// 0 = no limit.
    pub tokens_per_minute: u64,
    /// May pin a route's variant with `x-flywheel-variant`.
    pub pin_variants: bool,
}

/// `[admin]`.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// SHA-256 of the admin bearer token; `None` = admin API disabled (404).
    pub token_sha256: Option<[u8; 32]>,
    /// SHA-256 of the `/metrics`-only bearer token.
    pub metrics_token_sha256: Option<[u8; 32]>,
}

/// `[redis]`.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The parsed `redis.url`; `None` = no Redis.
    pub url: Option<redis::ConnectionInfo>,
    pub key_prefix: String,
    pub command_timeout: Duration,
    pub weights_poll: Duration,
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `http` or `https`, with a host; the path is the version prefix.
    pub base_url: Uri,
    /// `Bearer <value of api_key_env>`, marked sensitive; `None` when
    /// `api_key_env` is unset.
    pub authorization: Option<HeaderValue>,
    /// The configured extra headers.
    pub headers: HeaderMap,
    pub connect_timeout: Duration,
    /// USD per 1M prompt tokens (≥ 0).
    pub price_input_per_1m: f64,
    /// USD per 1M completion tokens (≥ 0).
    pub price_output_per_1m: f64,
    /// USD per second of upstream time (≥ 0).
    pub price_per_second: f64,
    pub forward_response_format: bool,
    pub continuation: Continuation,
    /// Replica addresses; empty = `base_url`'s host serves the provider.
    pub replicas: Vec<SocketAddr>,
    /// Starts with `/`.
    pub health_path: String,
    /// > 0.
    pub health_check: Duration,
    /// The client TLS setup for `https`: the public roots (webpki), plus
    /// the certificates of `ca_file`.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

/// One `[[routes]]` entry. Every target names a provider of
/// [`Config::providers`]; at least one variant has a weight > 0.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub variants: Vec<VariantConfig>,
    /// The route's own `[retry]` table, or the global one.
    pub retry: RetryConfig,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: PathBuf::from(path),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: UninitializedConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.load()
    }
}
