//! `flywheel-tuner dataset`: builds an RFT dataset from captured traffic in
//! ClickHouse.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use flywheel_tuner::dataset::{self, pii};

use super::{
    files::write_jsonl,
    options::{parse_pattern, ClickHouseArgs, KeyArgs},
    runtime,
};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    route: String,
    /// Only this variant (default: all).
    #[arg(long)]
    variant: Option<String>,
    /// Window start, ms since the epoch (default: 0).
    #[arg(long, default_value_t = 0)]
    from_ms: u64,
    /// Window end (exclusive), ms since the epoch (default: now).
    #[arg(long)]
    to_ms: Option<u64>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Dataset name in `training_usage` (default: `<route>-<now ms>`).
    #[arg(long)]
    name: Option<String>,
    /// Mask PII instead of dropping the row.
    #[arg(long)]
    mask: bool,
    /// Extra PII detector, `NAME=REGEX` (repeatable).
    #[arg(long = "pattern", value_parser = parse_pattern)]
    patterns: Vec<(String, String)>,
    /// Drop requests whose answers failed `response_format` validation
    /// (kept by default: those prompts are what RFT should fix).
    #[arg(long)]
    drop_validation_failures: bool,
    /// Keep the canary's shadow mirrors (`shadow = 1`; left out by
    /// default: a mirror repeats a prompt that was served, with the
    /// candidate's answer).
    #[arg(long)]
    include_shadow: bool,
    /// Seed of the train / held-out split.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 0.2)]
    heldout_fraction: f64,
    /// Most rows read (newest first).
    #[arg(long, default_value_t = 100_000)]
    limit: u64,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Seals `train.jsonl` and `heldout.jsonl` (they hold captured prompts
    /// and answers); `train`, `eval` and the rest read them with the key.
    #[command(flatten)]
    keys: KeyArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if !(0.0..1.0).contains(&args.heldout_fraction) {
        bail!("--heldout-fraction must be in [0, 1)");
    }
    let now = flywheel_feedback::now_ms();
    let name = args.name.unwrap_or_else(|| format!("{}-{now}", args.route));
    let query = dataset::captured::Query {
        route: args.route,
        variant: args.variant,
        from_ms: args.from_ms,
        to_ms: args.to_ms.unwrap_or(now + 1),
        keep_validation_failures: !args.drop_validation_failures,
        include_shadow: args.include_shadow,
        pii: if args.mask {
            pii::PiiAction::Mask
        } else {
            pii::PiiAction::Drop
        },
        seed: args.seed,
        heldout_fraction: args.heldout_fraction,
        limit: args.limit,
    };
    build(
        &query,
        &pii::PiiFilter::new(&args.patterns)?,
        &args.out,
        &name,
        &args.clickhouse.store()?,
        args.keys.keyring()?.as_ref(),
    )
}

fn build(
    query: &dataset::captured::Query,
    filter: &pii::PiiFilter,
    out: &Path,
    name: &str,
    store: &flywheel_feedback::Store,
    keys: Option<&flywheel_feedback::wal::Keyring>,
) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let built = dataset::captured::build(store, query, filter)
            .await
            .with_context(|| {
                format!(
                    "reading captured traffic from ClickHouse ({})",
                    store.database()
                )
            })?;
        std::fs::create_dir_all(out)?;
        write_jsonl(&out.join("train.jsonl"), &built.train, keys)?;
        write_jsonl(&out.join("heldout.jsonl"), &built.heldout, keys)?;
        std::fs::write(
            out.join("counts.json"),
            serde_json::to_string_pretty(&built.counts)?,
        )?;
        for line in built.counts.lines() {
            println!("{line}");
        }
        let ids = built.inference_ids();
        store
            .record_training_usage(name, &ids)
            .await
            .context("recording training usage")?;
        println!(
            "dataset {name}: {} inferences recorded in training_usage",
            ids.len()
        );
        Ok(ExitCode::SUCCESS)
    })
}
