//! `flywheel-load`: open-loop load generator. See `flywheel-load --help`.

use std::process::ExitCode;

use clap::Parser;
use flywheel_loadtest::load::{cli::LoadArgs, runner};

fn main() -> ExitCode {
    let args = LoadArgs::parse();
    let body = match args.body() {
        Ok(b) => b,
        Err(e) => {
            // A missing body file is a bad argument, like clap's errors.
            eprintln!("flywheel-load: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flywheel-load: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runner::Run {
        report,
        answered_ids,
    } = rt.block_on(runner::run(&args, body));
    if let Some(path) = &args.ids_out {
        let text: String = answered_ids.iter().map(|id| format!("{id}\n")).collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("flywheel-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    ExitCode::SUCCESS
}
