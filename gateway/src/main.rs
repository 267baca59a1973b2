use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use flywheel_api::keys;
use flywheel_gateway::{app, config::Config, AppState};
use tracing_subscriber::EnvFilter;

/// Flywheel's OpenAI-compatible LLM gateway.
///
/// Routes each request to weighted variants, each an ordered fallback chain
/// of upstream providers, with retries, circuit breakers, output validation
/// for `response_format`, mid-stream failover, metering and Prometheus
/// metrics. Every config key is documented in the README's configuration
/// reference. Log verbosity: RUST_LOG (default `info`).
#[derive(Parser)]
#[command(name = "flywheel-gateway", version)]
struct Cli {
    /// Path of the TOML config file.
    #[arg(long, short, env = "FLYWHEEL_CONFIG", default_value = "flywheel.toml")]
    config: PathBuf,
    /// Overrides `server.listen` (port 0 picks a free port; the bound address
    /// is printed as `listening on ADDR`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the SHA-256 of an API token, the value for `auth.keys[].sha256`.
    HashKey { token: String },
    /// Validates the config file and exits.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::HashKey { token }) = &cli.command {
        println!("{}", keys::sha256_hex(token));
        return ExitCode::SUCCESS;
    }
    let mut config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        println!(
            "config OK: {} route(s), {} provider(s)",
            config.routes.len(),
            config.providers.len()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let server_cfg = config.server.clone();
    let state = AppState::new(config)?;
    // Tests and scripts read this line to find the port.
    println!("listening on {addr}");
    tracing::info!(%addr, tls = server_cfg.tls.is_some(), "flywheel gateway started");
    flywheel_listener::serve(
        listener,
        app(state.clone()),
        &server_cfg.limits,
        server_cfg.tls.as_ref(),
        flywheel_listener::shutdown_signal(),
    )
    .await;
    state.sink.shutdown().await;
    if let Some(capture) = state.capture.clone() {
        // Ship what can be shipped now; the rest stays in the log for the
        // next start.
        let deadline = server_cfg
            .limits
            .shutdown_grace
            .min(std::time::Duration::from_secs(10));
        match std::sync::Arc::try_unwrap(capture) {
            Ok(capture) => {
                let report = capture.shutdown(deadline).await;
                tracing::info!(?report, "capture stopped");
            }
            Err(_) => tracing::warn!(
                "capture still in use at shutdown; the log keeps what was not shipped"
            ),
        }
    }
    tracing::info!("stopped");
    Ok(())
}
