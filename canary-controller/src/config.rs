//! `flywheel-canary`'s connections and loop settings: an optional TOML file
//! (`--config`), each key overridable by a flag or its environment
//! variable. Precedence: flag or env > file > default.
//!
//! ```toml
//! [clickhouse]
//! url = "http://127.0.0.1:8123"
//! database = "flywheel"
//! user = "canary"          # optional
//! password = "…"           # optional; prefer FLYWHEEL_CLICKHOUSE_PASSWORD
//!
//! [redis]
//! url = "redis://127.0.0.1:6379/0"
//! key_prefix = "flywheel:" # the gateway's redis.key_prefix
//!
//! [controller]
//! interval_ms = 10000
//! settle_ms = 5000
//! latency_samples = 2000
//!
//! [engines]
//! admin_token = "…"        # prefer FLYWHEEL_ENGINE_ADMIN_TOKEN
//! unload_timeout_ms = 300000
//! ```

use std::{path::Path, time::Duration};

use serde::Deserialize;

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub clickhouse: ClickHouseFile,
    #[serde(default)]
    pub redis: RedisFile,
    #[serde(default)]
    pub controller: ControllerFile,
    #[serde(default)]
    pub engines: EnginesFile,
}

/// The engines' admin API, for unloading versions (never stored with an
/// experiment).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnginesFile {
    pub admin_token: Option<String>,
    pub unload_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseFile {
    pub url: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    pub url: Option<String>,
    pub key_prefix: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerFile {
    pub interval_ms: Option<u64>,
    pub settle_ms: Option<u64>,
    pub latency_samples: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Connections, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Connections {
    pub clickhouse_url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub redis_url: String,
    pub redis_prefix: String,
}

pub const DEFAULT_CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
pub const DEFAULT_DATABASE: &str = "flywheel";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_REDIS_PREFIX: &str = "flywheel:";
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_SETTLE_MS: u64 = 5_000;
pub const DEFAULT_LATENCY_SAMPLES: u64 = 2_000;

/// What the flags say (None: not given).
#[derive(Debug, Default, Clone)]
pub struct ConnectionFlags {
    pub clickhouse_url: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
}

impl Connections {
    pub fn resolve(flags: ConnectionFlags, file: &FileConfig) -> Self {
        let f = file.clone();
        Self {
            clickhouse_url: flags
                .clickhouse_url
                .or(f.clickhouse.url)
                .unwrap_or_else(|| DEFAULT_CLICKHOUSE_URL.into()),
            database: flags
                .database
                .or(f.clickhouse.database)
                .unwrap_or_else(|| DEFAULT_DATABASE.into()),
            user: flags.user.or(f.clickhouse.user),
            password: flags.password.or(f.clickhouse.password),
            redis_url: flags
                .redis_url
                .or(f.redis.url)
                .unwrap_or_else(|| DEFAULT_REDIS_URL.into()),
            redis_prefix: flags
                .redis_prefix
                .or(f.redis.key_prefix)
                .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.into()),
        }
    }
}

/// The loop's settings, resolved.
pub fn controller_settings(
    interval_ms: Option<u64>,
    settle_ms: Option<u64>,
    latency_samples: Option<u64>,
    file: &FileConfig,
) -> crate::ControllerConfig {
    let c = &file.controller;
    crate::ControllerConfig {
        interval: Duration::from_millis(
            interval_ms
                .or(c.interval_ms)
                .unwrap_or(DEFAULT_INTERVAL_MS)
                .max(1),
        ),
        settle: Duration::from_millis(settle_ms.or(c.settle_ms).unwrap_or(DEFAULT_SETTLE_MS)),
        latency_samples: latency_samples
            .or(c.latency_samples)
            .unwrap_or(DEFAULT_LATENCY_SAMPLES),
        actor: "controller".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            "[clickhouse]\nurl = \"http://ch:8123\"\ndatabase = \"fw\"\n[redis]\nkey_prefix = \"x:\"\n[controller]\ninterval_ms = 500\n",
        )
        .unwrap();
        let c = Connections::resolve(
            ConnectionFlags {
                database: Some("other".into()),
                ..ConnectionFlags::default()
            },
            &file,
        );
        assert_eq!(c.clickhouse_url, "http://ch:8123");
        assert_eq!(c.database, "other");
        assert_eq!(c.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(c.redis_prefix, "x:");
        let s = controller_settings(None, Some(0), None, &file);
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.settle, Duration::ZERO);
        assert_eq!(s.latency_samples, DEFAULT_LATENCY_SAMPLES);
        assert!(toml::from_str::<FileConfig>("[redis]\nurll = 1\n").is_err());
        let e: FileConfig =
            toml::from_str("[engines]\nadmin_token = \"t\"\nunload_timeout_ms = 5\n").unwrap();
        assert_eq!(e.engines.admin_token.as_deref(), Some("t"));
        assert_eq!(e.engines.unload_timeout_ms, Some(5));
    }
}
