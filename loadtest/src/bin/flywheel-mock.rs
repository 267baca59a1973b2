//! `flywheel-mock`: mock OpenAI provider. See `flywheel-mock --help`.

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use flywheel_loadtest::mock::{cli::MockArgs, server, state::MockState};

fn main() -> ExitCode {
    let args = MockArgs::parse();
    let knobs = match args.knobs() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("flywheel-mock: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flywheel-mock: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let listener = match server::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("flywheel-mock: {e}");
                return ExitCode::FAILURE;
            }
        };
        server::serve(listener, Arc::new(MockState::new(knobs, args.seed))).await;
        ExitCode::SUCCESS
    })
}
