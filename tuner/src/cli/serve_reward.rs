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
    /// Hex SHA-256 of the bearer token reward requests must carry (or
    /// FLYWHEEL_REWARD_TOKEN_SHA256). Required unless listening on a
    /// loopback address.
    #[arg(long, env = "FLYWHEEL_REWARD_TOKEN_SHA256")]
    token_sha256: Option<String>,
    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = flywheel_tuner::grader::serve::BODY_LIMIT)]
    max_body_bytes: usize,
    /// Requests graded at once; past it a request is answered 503.
    #[arg(long, default_value_t = flywheel_tuner::grader::serve::MAX_CONCURRENT)]
    max_concurrent: usize,
    #[command(flatten)]
    tls: flywheel_listener::TlsArgs,
    #[command(flatten)]
    options: GraderArgs,
}

impl Args {
    fn serve_options(&self) -> Result<flywheel_tuner::grader::serve::ServeOptions> {
        let token_sha256 = match &self.token_sha256 {
            None if !self.listen.ip().is_loopback() => anyhow::bail!(
                "--token-sha256 (or FLYWHEEL_REWARD_TOKEN_SHA256) is required to listen on {}",
                self.listen
            ),
            None => None,
            Some(hex) => Some(flywheel_api::keys::parse_sha256_hex(hex).with_context(|| {
                "--token-sha256 must be 64 lower-case hex characters".to_owned()
            })?),
        };
        anyhow::ensure!(
            self.max_concurrent > 0,
            "--max-concurrent must be at least 1"
        );
        anyhow::ensure!(
            self.max_body_bytes > 0,
            "--max-body-bytes must be at least 1"
        );
        Ok(flywheel_tuner::grader::serve::ServeOptions {
            token_sha256,
            body_limit: self.max_body_bytes,
            max_concurrent: self.max_concurrent,
        })
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let serve_options = args.serve_options()?;
    let tls = args.tls.load()?;
    let grader = Arc::new(load_grader(&args.grader, &args.options.options()?)?);
    let listen = args.listen;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "serving grader `{}` ({}) on {scheme}://{addr}/ (POST / or /reward)",
            grader.name(),
            grader.kind()
        );
        if let Some(layers) = grader.python_sandbox() {
            eprintln!("python sandbox: {layers}");
        }
        flywheel_tuner::grader::serve::serve(
            listener,
            grader,
            &serve_options,
            tls.as_ref(),
            flywheel_listener::shutdown_signal(),
        )
        .await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn a_public_listener_needs_a_token() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["flywheel-tuner", "serve-reward", "--grader", "g"];
            argv.extend_from_slice(extra);
            let Command::ServeReward(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not serve-reward")
            };
            args.serve_options()
        };
        let o = parse(&[]).unwrap();
        assert_eq!(o.body_limit, 4 << 20);
        assert!(o.token_sha256.is_none());
        assert!(parse(&["--listen", "0.0.0.0:8090"]).is_err());
        let hex = flywheel_api::keys::sha256_hex("t");
        let o = parse(&["--listen", "0.0.0.0:8090", "--token-sha256", &hex]).unwrap();
        assert_eq!(o.token_sha256, Some(flywheel_api::keys::digest("t")));
        assert!(parse(&["--token-sha256", "abc"]).is_err());
    }
}
