//! `flywheel-tuner serve-reward`: a grader as an HTTP reward function.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};

use super::{files::load_grader, options::GraderArgs, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// The grader config (JSON file).
    #[arg(long)]
    grader: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[command(flatten)]
    options: GraderArgs,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let grader = Arc::new(load_grader(&args.grader, &args.options.options()?)?);
    let listen = args.listen;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "serving grader `{}` ({}) on http://{addr}/ (POST / or /reward)",
            grader.name(),
            grader.kind()
        );
        if let Some(layers) = grader.python_sandbox() {
            eprintln!("python sandbox: {layers}");
        }
        flywheel_tuner::grader::serve::serve(listener, grader, shutdown_signal())
            .await
            .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use flywheel_tuner::grader::GraderOptions;

    use crate::cli::{Cli, Command};

    #[test]
    fn defaults_match_grader_options() {
        let cli = Cli::try_parse_from([
            "flywheel-tuner",
            "serve-reward",
            "--grader",
            "g.json",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let Command::ServeReward(args) = cli.command else {
            panic!("not serve-reward")
        };
        assert_eq!(args.listen.port(), 0);
        let (o, d) = (args.options.options().unwrap(), GraderOptions::default());
        assert_eq!(o.judge_base_url, d.judge_base_url);
        assert_eq!(o.judge_timeout, d.judge_timeout);
        assert_eq!(o.python, d.python);
        assert_eq!(o.python_timeout, d.python_timeout);
        assert_eq!(o.python_memory_bytes, d.python_memory_bytes);
        assert_eq!(o.endpoint_timeout, d.endpoint_timeout);
        let cli = Cli::try_parse_from([
            "flywheel-tuner",
            "serve-reward",
            "--grader",
            "g",
            "--python-timeout-secs",
            "0",
        ])
        .unwrap();
        let Command::ServeReward(args) = cli.command else {
            panic!("not serve-reward")
        };
        assert!(args.options.options().is_err());
    }
}
