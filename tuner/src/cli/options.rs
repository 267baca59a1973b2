//! Flag groups that several subcommands flatten into their own: the
//! graders' outside reach ([`GraderArgs`]), the capture's ClickHouse
//! ([`ClickHouseArgs`]) and the keys of sealed datasets ([`KeyArgs`]).

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Result};
use flywheel_tuner::grader::{GraderOptions, PythonSandbox};

/// The keys of datasets encrypted at rest (SECURITY.md, "Encryption at
/// rest"): a dataset written with one is sealed; sealed and plain datasets
/// both read.
#[derive(clap::Args, Default)]
pub struct KeyArgs {
    /// Key file (64 hex digits, `openssl rand -hex 32`) that seals the
    /// datasets written and opens the ones read. Repeat it to rotate: the
    /// first seals, every one opens.
    #[arg(
        long = "encryption-key-file",
        value_name = "FILE",
        env = "FLYWHEEL_ENCRYPTION_KEY_FILE",
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,
}

impl KeyArgs {
    /// `None` without a key file.
    pub fn keyring(&self) -> Result<Option<flywheel_feedback::wal::Keyring>> {
        Ok(flywheel_feedback::sealed_file::keyring_from_files(
            &self.files,
        )?)
    }
}

/// Where graders that reach outside the process go: the `score_model`
/// judge, the `python` interpreter and its limits, `endpoint` timeouts.
#[derive(clap::Args)]
pub struct GraderArgs {
    /// OpenAI-compatible API that `score_model` graders call (the Flywheel gateway by default).
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    judge_url: String,
    /// Bearer key for the judge.
    #[arg(long, env = "FLYWHEEL_API_KEY", hide_env_values = true)]
    judge_api_key: Option<String>,
    /// Seconds before a judge request is abandoned (a grading error).
    #[arg(long, default_value_t = 120.0)]
    judge_timeout_secs: f64,
    /// Directory for the `score_model` reply cache (`score_model.cache.jsonl`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Interpreter for `python` graders.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Wall-clock limit per sample for `python` graders.
    #[arg(long, default_value_t = 10.0)]
    python_timeout_secs: f64,
    /// Address-space limit of a `python` grader worker, in MiB.
    #[arg(long, default_value_t = 512)]
    python_memory_mib: u64,
    /// How `python` graders are isolated: `bwrap` (bubblewrap: no network,
    /// own namespaces, read-only filesystem, rlimits; a python grader fails
    /// to load where it cannot run) or `none` (no sandbox: trusted graders
    /// only, logged as a warning). See SECURITY.md.
    #[arg(long, default_value = "bwrap", value_parser = ["bwrap", "none"])]
    python_sandbox: String,
    /// Seconds before an `endpoint` request is abandoned.
    #[arg(long, default_value_t = 60.0)]
    endpoint_timeout_secs: f64,
}

impl GraderArgs {
    pub fn options(&self) -> Result<GraderOptions> {
        let secs = |name: &str, s: f64| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                bail!("--{name} must be a positive number of seconds")
            }
        };
        Ok(GraderOptions {
            judge_base_url: self.judge_url.clone(),
            judge_api_key: self.judge_api_key.clone().filter(|k| !k.is_empty()),
            judge_timeout: secs("judge-timeout-secs", self.judge_timeout_secs)?,
            cache_dir: self.cache_dir.clone(),
            python: self.python.clone(),
            python_timeout: secs("python-timeout-secs", self.python_timeout_secs)?,
            python_memory_bytes: self.python_memory_mib << 20,
            python_sandbox: self
                .python_sandbox
                .parse::<PythonSandbox>()
                .map_err(anyhow::Error::msg)?,
            endpoint_timeout: secs("endpoint-timeout-secs", self.endpoint_timeout_secs)?,
            ..GraderOptions::default()
        })
    }
}

/// The ClickHouse of the capture (same variables as `flywheel-feedback`).
#[derive(clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
    #[arg(
        long = "clickhouse-url",
        env = "FLYWHEEL_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    url: String,
    /// The gateway's `capture.database` (`--database` as in `flywheel-canary`).
    #[arg(
        long = "clickhouse-database",
        visible_alias = "database",
        env = "FLYWHEEL_CLICKHOUSE_DATABASE",
        default_value = "flywheel"
    )]
    database: String,
    /// ClickHouse user.
    #[arg(long = "clickhouse-user", env = "FLYWHEEL_CLICKHOUSE_USER")]
    user: Option<String>,
    /// ClickHouse password (prefer the environment variable).
    #[arg(
        long = "clickhouse-password",
        env = "FLYWHEEL_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
}

impl ClickHouseArgs {
    pub fn store(&self) -> Result<flywheel_feedback::Store> {
        Ok(flywheel_feedback::Store::try_new(
            &flywheel_feedback::StoreConfig {
                url: self.url.clone(),
                database: self.database.clone(),
                user: self.user.clone(),
                password: self.password.clone(),
            },
        )?)
    }
}

/// A duration with its unit: `500ms`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (ms, s, m, h, d)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// A `--pattern NAME=REGEX` value (an extra PII detector).
pub fn parse_pattern(p: &str) -> Result<(String, String), String> {
    p.split_once('=')
        .map(|(n, r)| (n.to_owned(), r.to_owned()))
        .ok_or_else(|| "--pattern takes NAME=REGEX".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn python_sandbox_flag() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: GraderArgs,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from([&["t"], args].concat())
                .map(|c| c.options.options().unwrap().python_sandbox)
        };
        assert_eq!(parse(&[]).unwrap(), PythonSandbox::Bwrap);
        assert_eq!(
            parse(&["--python-sandbox", "none"]).unwrap(),
            PythonSandbox::None
        );
        assert!(parse(&["--python-sandbox", "docker"]).is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(
            parse_pattern("ssn=\\d{3}-\\d{2}").unwrap(),
            ("ssn".to_owned(), "\\d{3}-\\d{2}".to_owned())
        );
        assert!(parse_pattern("no-equals").is_err());
    }
}
