//! `flywheel-tuner`: datasets, graders and the verifiable task suite.
//!
//! Parses the command line and runs the subcommand; each one is a module of
//! [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match cli::Cli::parse().run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
