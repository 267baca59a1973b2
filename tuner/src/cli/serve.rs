//! `flywheel-tuner serve`: the tuner service (see
//! [`flywheel_tuner::service`]).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use flywheel_canary_controller::{engines::EngineAdmin, CanaryStore, Weights};
use flywheel_tuner::{
    eval::client::Gateway,
    service::{config::ServiceConfig, serve, stages::Deps},
};

use super::{
    options::{ClickHouseArgs, GraderArgs},
    runtime,
};

#[derive(clap::Args)]
pub struct Args {
    /// The service's TOML, with a `[tuner]` table (`flywheel-tuner jobs`
    /// checks it; `config/tuner.example.toml` documents every key).
    #[arg(long, env = "FLYWHEEL_TUNER_CONFIG")]
    config: PathBuf,
    /// Redis the gateways poll for weights (the canary controller's).
    #[arg(
        long,
        env = "FLYWHEEL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
    /// Prefix of every Redis key (the gateways' redis.key_prefix).
    #[arg(long, env = "FLYWHEEL_REDIS_PREFIX", default_value = "flywheel:")]
    redis_prefix: String,
    /// The gateway key the offline gate sends with: it must have
    /// `pin_variants = true` (the gate sends each held-out prompt to the
    /// candidate's, the incumbent's and the chain's variant).
    #[arg(long, env = "FLYWHEEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The engines' admin token (their --admin-token): deploys versions and
    /// points the slot aliases at them.
    #[arg(long, env = "FLYWHEEL_ENGINE_ADMIN_TOKEN", hide_env_values = true)]
    engine_admin_token: Option<String>,
    /// Limit of one deploy or unload call on an engine, seconds (a deploy
    /// answers once the version serves).
    #[arg(long, default_value_t = 300)]
    engine_timeout_secs: u64,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    grader: GraderArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = ServiceConfig::from_file(&args.config)?;
    let store = args.clickhouse.store()?;
    // The Redis connection manager spawns its task: inside the runtime.
    let runtime = runtime()?;
    let _inside = runtime.enter();
    let deps = Deps {
        canary: CanaryStore::new(store.clone()),
        weights: Weights::connect(&args.redis_url, &args.redis_prefix).context("the Redis URL")?,
        gateway: Gateway::new(&format!("{}/v1", config.gateway_url), args.api_key),
        engines: EngineAdmin::new(
            args.engine_admin_token,
            Duration::from_secs(args.engine_timeout_secs),
        )?,
        grader_options: args.grader.options()?,
        tuner_exe: std::env::current_exe().context("finding flywheel-tuner's own path")?,
        store,
        config,
    };
    runtime.block_on(async {
        serve::serve(deps, flywheel_listener::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
