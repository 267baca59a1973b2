//! `flywheel-tuner clean`: filters PII and duplicate prompts out of a dataset.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use flywheel_tuner::dataset::{self, pii};

use super::{
    files::{read_dataset, write_jsonl},
    options::{parse_pattern, KeyArgs},
};

#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    mask: bool,
    /// Extra detector, `NAME=REGEX` (repeatable).
    #[arg(long = "pattern", value_parser = parse_pattern)]
    patterns: Vec<(String, String)>,
    #[command(flatten)]
    keys: KeyArgs,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let filter = pii::PiiFilter::new(&args.patterns)?;
    let keys = args.keys.keyring()?;
    let mut items = read_dataset(&args.input, keys.as_ref())?;
    let total = items.len();
    let action = if args.mask {
        pii::PiiAction::Mask
    } else {
        pii::PiiAction::Drop
    };
    let mut found = pii::Hits::new();
    let mut flagged = 0;
    items.retain_mut(|item| {
        let hits = filter.apply(item, action);
        let hit = !hits.is_empty();
        flagged += usize::from(hit);
        for (k, v) in hits {
            *found.entry(k).or_default() += v;
        }
        !(hit && action == pii::PiiAction::Drop)
    });
    let duplicates = dataset::dedupe(&mut items);
    write_jsonl(&args.out, &items, keys.as_ref())?;
    println!("read {total} rows");
    println!(
        "{flagged} rows with PII {}",
        if args.mask { "masked" } else { "dropped" }
    );
    for (name, n) in &found {
        println!("  {name}: {n}");
    }
    println!("{duplicates} duplicate prompts dropped");
    println!("wrote {} rows to {}", items.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
