//! `flywheel-tuner grade-online`: scores a sampled fraction of a route's
//! live answers with a grader and writes the scores as feedback (the
//! loop is [`flywheel_tuner::online`]).

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use flywheel_tuner::online::{OnlineError, OnlineGrader, Pass, Settings, Skip};

use super::{
    files::load_grader,
    options::{parse_duration, ClickHouseArgs, GraderArgs},
    runtime,
};

#[derive(clap::Args)]
pub struct Args {
    /// The route whose answers are graded (served requests and canary
    /// shadow mirrors alike; successful chat requests).
    #[arg(long)]
    route: String,
    /// The grader config (JSON file, as for `grade`).
    #[arg(long)]
    grader: PathBuf,
    /// Share of the route's inferences graded, in [0, 1]; chosen by a hash
    /// of the inference id, so restarts and several workers pick the same.
    #[arg(long, default_value_t = 0.1)]
    fraction: f64,
    /// The feedback metric of the scores [default: grader_<grader name>].
    #[arg(long)]
    metric: Option<String>,
    /// Pause between passes when nothing is pending, in ms.
    #[arg(long, default_value_t = 10_000)]
    interval_ms: u64,
    /// How far back from now to grade (`90s`, `15m`, `1h`, `2d`, `500ms`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    lookback: Duration,
    /// Most inferences graded per pass (one grader batch).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Grade what is pending now, pass after pass, then exit (status 1 if
    /// the grader failed on any inference).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    options: GraderArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let grader = Arc::new(load_grader(&args.grader, &args.options.options()?)?);
    let settings = Settings {
        metric: args
            .metric
            .clone()
            .unwrap_or_else(|| Settings::default_metric(&grader)),
        route: args.route.clone(),
        fraction: args.fraction,
        lookback: args.lookback,
        batch: args.batch,
    };
    let mut online = OnlineGrader::new(args.clickhouse.store()?, grader, settings)?;
    runtime()?.block_on(async {
        if args.once {
            let mut errors = 0;
            loop {
                let pass = online.tick().await.context("grading pass")?;
                print_pass(online.settings(), &Ok(pass.clone()));
                errors += pass.errors;
                if pass.pending == 0 {
                    break;
                }
            }
            return Ok(if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        let settings = online.settings().clone();
        online
            .run(
                Duration::from_millis(args.interval_ms),
                flywheel_listener::shutdown_signal(),
                |result| print_pass(&settings, result),
            )
            .await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The pass's one-line summary on stdout; what it could not grade, and
/// a failed pass, on stderr.
fn print_pass(settings: &Settings, result: &Result<Pass, OnlineError>) {
    match result {
        Ok(pass) => {
            for (id, why) in &pass.not_graded {
                match why {
                    Skip::NoBody => eprintln!(
                        "grade-online: skipped inference {id}: no captured request or answer"
                    ),
                    Skip::GraderError(e) => {
                        eprintln!(
                            "grade-online: grader error on inference {id} (no score written): {e}"
                        )
                    }
                }
            }
            println!("{}", pass.summary(&settings.route, &settings.metric));
        }
        Err(e) => eprintln!("grade-online: pass failed, retrying at the next interval: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn flags_and_defaults() {
        let cli = Cli::try_parse_from([
            "flywheel-tuner",
            "grade-online",
            "--route",
            "chat",
            "--grader",
            "g.json",
        ])
        .unwrap();
        let Command::GradeOnline(args) = cli.command else {
            panic!("not grade-online")
        };
        assert_eq!(args.fraction, 0.1);
        assert_eq!(args.metric, None);
        assert_eq!(args.interval_ms, 10_000);
        assert_eq!(args.lookback, Duration::from_secs(3600));
        assert_eq!(args.batch, 100);
        assert!(!args.once);

        let cli = Cli::try_parse_from([
            "flywheel-tuner",
            "grade-online",
            "--route",
            "chat",
            "--grader",
            "g.json",
            "--fraction",
            "1",
            "--metric",
            "quality",
            "--interval-ms",
            "200",
            "--lookback",
            "15m",
            "--batch",
            "7",
            "--once",
            "--database",
            "other",
            "--python-timeout-secs",
            "3",
        ])
        .unwrap();
        let Command::GradeOnline(args) = cli.command else {
            panic!("not grade-online")
        };
        assert_eq!(
            (
                args.fraction,
                args.metric.as_deref(),
                args.interval_ms,
                args.batch
            ),
            (1.0, Some("quality"), 200, 7)
        );
        assert_eq!(args.lookback, Duration::from_secs(900));
        assert!(args.once);
        assert_eq!(
            args.options.options().unwrap().python_timeout,
            Duration::from_secs(3)
        );
    }
}
