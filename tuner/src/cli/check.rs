//! `flywheel-tuner check`: lists a JSONL dataset's bad lines.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;

use super::{files::read_jsonl, options::KeyArgs};

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    #[command(flatten)]
    keys: KeyArgs,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let file = &args.file;
    let read = read_jsonl(file, args.keys.keyring()?.as_ref())?;
    for e in &read.errors {
        println!("{}:{e}", file.display());
    }
    println!(
        "{} items, {} bad lines",
        read.items.len(),
        read.errors.len()
    );
    Ok(if read.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
