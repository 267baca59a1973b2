//! `flywheel-tuner runs`: the tuner service's runs, newest first, or the
//! whole story of one run.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use flywheel_canary_controller::report::{duration, utc};
use flywheel_tuner::service::{
    config::ServiceConfig,
    journal::{describe, state, Journal},
};

#[derive(clap::Args)]
pub struct Args {
    /// The tuner service's TOML (its `[tuner] state_dir` holds the runs).
    #[arg(long, env = "FLYWHEEL_TUNER_CONFIG")]
    config: PathBuf,
    /// A run id (as listed): print its journal, newest event first, with
    /// each stage's lineage (dataset counts, training summary, gate table,
    /// version, experiment).
    run: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = ServiceConfig::from_file(&args.config)?;
    let journal = Journal::open(&config.state_dir)?;
    match &args.run {
        None => {
            let runs = journal.runs()?;
            if runs.is_empty() {
                println!("no runs yet in {}", config.state_dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<32} {:<20} {:<20} {:>9}  state",
                "run", "job", "started (UTC)", "took"
            );
            for r in runs {
                println!(
                    "{:<32} {:<20} {:<20} {:>9}  {}",
                    r.id,
                    r.job,
                    utc(r.started_ms),
                    duration(r.last_ms.saturating_sub(r.started_ms) / 1000),
                    state(&r.next)
                );
            }
        }
        Some(id) => {
            let records = journal.read(id)?;
            println!("run {id} ({})", journal.run_dir(id).display());
            for r in records.iter().rev() {
                println!("{}  {}", utc(r.at_ms), describe(&r.event));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
