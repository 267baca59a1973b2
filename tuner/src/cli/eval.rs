//! `flywheel-tuner eval`: runs a dataset through gateway configurations and
//! reports quality, cost and quality per dollar.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use flywheel_tuner::eval::{
    client::{Gateway, RequestParams},
    Config,
};

use super::{
    files::{load_grader, read_dataset},
    options::{ClickHouseArgs, GraderArgs, KeyArgs},
    runtime,
};

#[derive(clap::Args)]
pub struct Args {
    /// The dataset (JSONL).
    #[arg(long)]
    dataset: PathBuf,
    /// The grader config (JSON).
    #[arg(long)]
    grader: PathBuf,
    /// Configurations, `NAME=MODEL` (repeatable, in report order).
    #[arg(long = "config", required = true)]
    configs: Vec<Config>,
    /// The gateway's OpenAI base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    gateway: String,
    /// Gateway API key.
    #[arg(long, env = "FLYWHEEL_GATEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Do not send the items' `response_format` (no gateway validation).
    #[arg(long)]
    no_response_format: bool,
    /// A configuration (by NAME) asked without `response_format`: its
    /// raw answers are graded, with no gateway validation (repeatable).
    #[arg(long = "raw")]
    raw: Vec<String>,
    /// Requests in flight per configuration.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds before one request is abandoned (it scores 0).
    #[arg(long, default_value_t = 300.0)]
    request_timeout_secs: f64,
    /// Only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory for report.md and report.json.
    #[arg(long)]
    out: PathBuf,
    /// Also store the results in ClickHouse (`eval_results`).
    #[arg(long)]
    store: bool,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    options: GraderArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut configs = args.configs;
    for name in &args.raw {
        let c = configs
            .iter_mut()
            .find(|c| &c.name == name)
            .with_context(|| format!("--raw {name}: no such --config"))?;
        c.raw = true;
    }
    let dataset = &args.dataset;
    let mut items = read_dataset(dataset, args.keys.keyring()?.as_ref())?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    if items.is_empty() {
        bail!("{}: no items", dataset.display());
    }
    let grader = Arc::new(load_grader(&args.grader, &args.options.options()?)?);
    let params = RequestParams {
        temperature: args.temperature,
        max_tokens: args.max_tokens,
        response_format: !args.no_response_format,
        timeout: Duration::try_from_secs_f64(args.request_timeout_secs)
            .context("--request-timeout-secs")?,
    };
    let gateway = Gateway::new(&args.gateway, args.api_key);
    let store = args.store.then(|| args.clickhouse.store()).transpose()?;
    let out = &args.out;
    runtime()?.block_on(async {
        let progress = |config: &str, done: usize, total: usize| {
            if done == total || done.is_multiple_of(10) {
                eprintln!("{config}: {done}/{total}");
            }
        };
        let name = dataset.file_name().map_or_else(
            || dataset.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let report = flywheel_tuner::eval::run(
            &gateway,
            grader,
            &items,
            &configs,
            &params,
            args.concurrency,
            &name,
            &progress,
        )
        .await;
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("report.md"), report.to_markdown())?;
        std::fs::write(out.join("report.json"), report.to_json()?)?;
        print!("{}", report.to_markdown());
        if let Some(store) = &store {
            // Idempotent; creates eval_results on a database the capture never migrated.
            store.migrate().await.context("migrating ClickHouse")?;
            store
                .insert_rows("eval_results", &report.rows()?)
                .await
                .context("storing eval_results")?;
            println!(
                "stored run {} in {}.eval_results",
                report.run_id,
                store.database()
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
