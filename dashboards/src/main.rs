//! `flywheel-dashboards`: serves the dashboards' pages and JSON API.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use flywheel_canary_controller::{
    config::{ConnectionFlags, Connections, FileConfig},
    Weights,
};
use flywheel_dashboards::{app, auth::Access, state, Options};
use flywheel_feedback::store::{Store, StoreConfig};
use tracing_subscriber::EnvFilter;

/// Flywheel's dashboards: the pages and their JSON API (dashboards/API.md)
/// over ClickHouse, the canary controller's experiments and the tuner's
/// journal. Callers authenticate with a bearer token of the gateway config:
/// an API key (its tenant's rows only) or the admin token.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[command(flatten)]
    tls: flywheel_listener::TlsArgs,
    /// The gateway's TOML config: its `auth.keys` (tenants), `admin.token_sha256`
    /// and `routes` are read (nothing else).
    #[arg(long)]
    gateway_config: PathBuf,
    /// The gateway's base URL (`http://127.0.0.1:8080`): the playground and
    /// the circuits. Unset: no playground, no circuits.
    #[arg(long, env = "FLYWHEEL_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// The bearer token the gateway's `/metrics` needs (its admin token or
    /// its `admin.metrics_token_sha256` token). Unset: none is sent.
    #[arg(long, env = "FLYWHEEL_GATEWAY_METRICS_TOKEN", hide_env_values = true)]
    gateway_metrics_token: Option<String>,
    /// An API key of the gateway config that the admin's playground calls
    /// use (it needs `pin_variants`). Unset: the admin has no playground.
    #[arg(long, env = "FLYWHEEL_PLAYGROUND_KEY", hide_env_values = true)]
    playground_key: Option<String>,
    /// The tuner service's state directory (its `runs/` journal). Unset:
    /// `/api/runs` answers an empty list saying so.
    #[arg(long)]
    tuner_state: Option<PathBuf>,
    /// ClickHouse HTTP URL [default: http://127.0.0.1:8123].
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// ClickHouse database [default: flywheel].
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_DATABASE")]
    database: Option<String>,
    /// ClickHouse user [default: the server's default user].
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// ClickHouse password [default: none].
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    clickhouse_password: Option<String>,
    /// Redis of the route weights, where experiment actions write
    /// [default: redis://127.0.0.1:6379/0].
    #[arg(long, env = "FLYWHEEL_REDIS_URL")]
    redis_url: Option<String>,
    /// The gateway's `redis.key_prefix` [default: flywheel:].
    #[arg(long)]
    redis_prefix: Option<String>,
    /// Do not apply the schema migrations at start (another service does).
    /// Default: apply them (idempotent), since the pages read migration
    /// 0008's rollups.
    #[arg(long)]
    no_migrate: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let tls = cli.tls.load()?;
    let access = Access::load(&cli.gateway_config)?;
    let conn = Connections::resolve(
        ConnectionFlags {
            clickhouse_url: cli.clickhouse_url,
            database: cli.database,
            user: cli.clickhouse_user,
            password: cli.clickhouse_password,
            redis_url: cli.redis_url,
            redis_prefix: cli.redis_prefix,
        },
        &FileConfig::default(),
    );
    let store = Store::try_new(&StoreConfig {
        url: conn.clickhouse_url.clone(),
        database: conn.database.clone(),
        user: conn.user.clone(),
        password: conn.password.clone(),
    })?;
    if !cli.no_migrate {
        // A ClickHouse that is down now is not fatal: the pages answer 500
        // until it is back and some service has migrated.
        match store.migrate().await {
            Ok(applied) if !applied.is_empty() => {
                tracing::info!(?applied, "migrations applied")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "migrations not applied"),
        }
    }
    let weights = Weights::connect(&conn.redis_url, &conn.redis_prefix)?;
    let st = state(
        store,
        weights,
        access,
        Options {
            gateway_url: cli.gateway_url,
            gateway_metrics_token: cli.gateway_metrics_token,
            tuner_state: cli.tuner_state,
            playground_key: cli.playground_key,
        },
    )?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    tracing::info!(addr = %listener.local_addr()?, database = conn.database, "dashboards listening");
    flywheel_listener::serve_until_signal(listener, app(st), tls.as_ref()).await;
    Ok(())
}
