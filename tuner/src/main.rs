//! `flywheel-tuner`: datasets, graders and the verifiable task suite.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, BufWriter},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flywheel_tuner::{
    dataset::{self, jsonl, pii},
    grader::{Grader, GraderOptions},
    tasks::Task,
    Item, Sample,
};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "flywheel-tuner",
    about = "Datasets, graders and the verifiable task suite for reinforcement fine-tuning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where graders that reach outside the process go: the `score_model`
/// judge, the `python` interpreter and its limits, `endpoint` timeouts.
#[derive(clap::Args)]
struct GraderArgs {
    /// OpenAI-compatible API that `score_model` graders call (the Flywheel gateway by default).
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    judge_url: String,
    /// Bearer key for the judge.
    #[arg(long, env = "FLYWHEEL_API_KEY", hide_env_values = true)]
    judge_api_key: Option<String>,
    /// Seconds before a judge request is abandoned (a grading error).
    #[arg(long, default_value_t = 120.0)]
    judge_timeout_secs: f64,
    /// Directory for the `score_model` reply cache (`score_model.cache.jsonl`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Interpreter for `python` graders.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Wall-clock limit per sample for `python` graders.
    #[arg(long, default_value_t = 10.0)]
    python_timeout_secs: f64,
    /// Address-space limit of a `python` grader worker, in MiB.
    #[arg(long, default_value_t = 512)]
    python_memory_mib: u64,
    /// Seconds before an `endpoint` request is abandoned.
    #[arg(long, default_value_t = 60.0)]
    endpoint_timeout_secs: f64,
}

impl GraderArgs {
    fn options(&self) -> Result<GraderOptions> {
        let secs = |name: &str, s: f64| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                bail!("--{name} must be a positive number of seconds")
            }
        };
        Ok(GraderOptions {
            judge_base_url: self.judge_url.clone(),
            judge_api_key: self.judge_api_key.clone().filter(|k| !k.is_empty()),
            judge_timeout: secs("judge-timeout-secs", self.judge_timeout_secs)?,
            cache_dir: self.cache_dir.clone(),
            python: self.python.clone(),
            python_timeout: secs("python-timeout-secs", self.python_timeout_secs)?,
            python_memory_bytes: self.python_memory_mib << 20,
            endpoint_timeout: secs("endpoint-timeout-secs", self.endpoint_timeout_secs)?,
            ..GraderOptions::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generates the verifiable task suite: for each task
    /// `<task>.train.jsonl`, `<task>.heldout.jsonl` (20 % of prompts, by
    /// prompt hash) and `<task>.grader.json`.
    Tasks {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Same seed, same suite.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Items per task, before the split.
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Tasks to generate (default: all): extraction, arithmetic, instructions, policy, tool_call.
        #[arg(long = "task")]
        tasks: Vec<String>,
    },
    /// Checks a JSONL dataset (OpenAI / Bedrock RFT chat format); every bad
    /// line is printed with its number, and any makes the exit status 1.
    Check { file: PathBuf },
    /// Filters PII out of a JSONL dataset: emails, phone numbers, card
    /// numbers, secret keys and `--pattern NAME=REGEX`; rows with a hit are
    /// dropped, or masked with `--mask`. Also drops duplicate prompts.
    Clean {
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        mask: bool,
        /// Extra detector, `NAME=REGEX` (repeatable).
        #[arg(long = "pattern")]
        patterns: Vec<String>,
    },
    /// Validates a grader config (OpenAI grader JSON) and runs it on
    /// samples, printing each score with its reason. A grader error is
    /// reported as an error, never counted as a 0.
    Grade {
        /// The grader config (JSON file).
        #[arg(long)]
        grader: PathBuf,
        /// The dataset the samples answer (JSONL).
        #[arg(long)]
        dataset: PathBuf,
        /// Samples as JSONL: `{"id": <item id>, "output_text": ...}` or
        /// `{"id": ..., "answer": <OpenAI chat completion>}`.
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Grade each item's own `reference_answer` (checks a grader against its data).
        #[arg(long, conflicts_with = "samples")]
        references: bool,
        #[command(flatten)]
        options: GraderArgs,
    },
    /// Serves a grader as an HTTP reward function speaking the Bedrock RFT
    /// reward-Lambda contract (`POST /` or `/reward` with a JSON array of
    /// `{"id", "messages": [..., assistant answer], "reference_answer", ...}`,
    /// answered with `{"id", "aggregate_reward_score", "metrics_list"}`s).
    ServeReward {
        /// The grader config (JSON file).
        #[arg(long)]
        grader: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        #[command(flatten)]
        options: GraderArgs,
    },
    /// Builds an RFT dataset from captured traffic in ClickHouse: the chat
    /// inferences of a route (and variant) in a time window, joined to
    /// their feedback, filtered (errors, provider outages, failed tool
    /// calls, optionally validation failures, PII), deduplicated by prompt
    /// and split into `train.jsonl` / `heldout.jsonl`. Prints every
    /// filter's count (also in `counts.json`) and records the kept
    /// inferences as used by the dataset, so retention keeps them.
    Dataset {
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
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// Drop requests whose answers failed `response_format` validation
        /// (kept by default: those prompts are what RFT should fix).
        #[arg(long)]
        drop_validation_failures: bool,
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
    },
    /// Reinforcement fine-tuning: GRPO with LoRA on a local model directory,
    /// rewards from a grader, held-out reward tracked (the best is exported
    /// as a PEFT adapter and as a merged model directory the engine can
    /// deploy), checkpoints every step, metrics to the console, to
    /// `metrics.jsonl` and with `--store` to ClickHouse.
    Train(Box<TrainArgs>),
    /// Runs a dataset through gateway configurations (`--config NAME=MODEL`,
    /// e.g. `base=tasks-base`, `chain=tasks-chain`) and reports for each:
    /// mean score and pass rate with 95% intervals, tokens, retries and
    /// fallbacks per request, p50/p95 latency, cost per request and quality
    /// per dollar. Writes `report.md` and `report.json` to `--out` and, with
    /// `--store`, one `eval_results` row per configuration to ClickHouse.
    Eval {
        /// The dataset (JSONL).
        #[arg(long)]
        dataset: PathBuf,
        /// The grader config (JSON).
        #[arg(long)]
        grader: PathBuf,
        /// Configurations, `NAME=MODEL` (repeatable, in report order).
        #[arg(long = "config", required = true)]
        configs: Vec<flywheel_tuner::eval::Config>,
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
    },
}

/// `flywheel-tuner train` flags (the GRPO LoRA trainer's knobs).
#[derive(clap::Args)]
struct TrainArgs {
    /// HF-style model directory to train (e.g. the engine's SmolLM2 dir).
    #[arg(long)]
    model: PathBuf,
    /// Training prompts (JSONL).
    #[arg(long)]
    train: PathBuf,
    /// Held-out prompts (JSONL), scored greedily every --eval-every steps.
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// The reward: a grader config (JSON).
    #[arg(long)]
    grader: PathBuf,
    /// Run directory: checkpoint/, best/adapter (PEFT), best/merged (HF dir
    /// the engine deploys), metrics.jsonl, summary.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue from `<out>/checkpoint` (same data and flags).
    #[arg(long)]
    resume: bool,
    /// Optimizer steps in all.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    prompts_per_step: usize,
    /// Completions per prompt (G).
    #[arg(long, default_value_t = 8)]
    generations: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// constant, linear or cosine (HF semantics), after --warmup-steps.
    #[arg(long, default_value = "constant")]
    schedule: String,
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 16)]
    rank: usize,
    #[arg(long, default_value_t = 32.0)]
    alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// grpo, dr_grpo or dapo (how the token losses are normalised).
    #[arg(long, default_value = "dapo")]
    loss: String,
    /// group, batch or none (advantage std scaling; none = Dr. GRPO).
    #[arg(long, default_value = "group")]
    scale_rewards: String,
    #[arg(long, default_value_t = 0.2)]
    epsilon: f64,
    /// Upper clip (DAPO: 0.28).
    #[arg(long, default_value_t = 0.2)]
    epsilon_high: f64,
    /// KL coefficient against the base (LoRA off); 0 skips the reference pass.
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// When no completion of a group passes, train on the item's reference
    /// answer in place of one completion (mixed-policy GRPO): for answers
    /// the model never samples on its own. Needs reference answers.
    #[arg(long)]
    guide: bool,
    /// Sequences per forward/backward pass (gradients accumulate over them).
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    #[arg(long, default_value_t = 10)]
    eval_every: usize,
    #[arg(long, default_value_t = 20)]
    eval_items: usize,
    #[arg(long, default_value_t = 96)]
    eval_max_tokens: usize,
    /// Held-out evaluations without improvement before stopping (0: never).
    #[arg(long, default_value_t = 0)]
    patience: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write every step to ClickHouse (`training_steps`).
    #[arg(long)]
    store: bool,
    /// Run id in `training_steps` (default: the --out directory name).
    #[arg(long)]
    run_id: Option<String>,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    options: GraderArgs,
}

/// A snake_case enum of the trainer's config from a flag value.
fn enum_flag<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> Result<T> {
    serde_json::from_value(Value::String(value.to_owned()))
        .map_err(|_| anyhow::anyhow!("--{flag}: unknown value {value:?}"))
}

/// The ClickHouse of the capture (same variables as `flywheel-feedback`).
#[derive(clap::Args)]
struct ClickHouseArgs {
    #[arg(
        long = "clickhouse-url",
        env = "FLYWHEEL_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    url: String,
    #[arg(
        long = "clickhouse-database",
        env = "FLYWHEEL_CLICKHOUSE_DATABASE",
        default_value = "flywheel"
    )]
    database: String,
    #[arg(long = "clickhouse-user", env = "FLYWHEEL_CLICKHOUSE_USER")]
    user: Option<String>,
    #[arg(
        long = "clickhouse-password",
        env = "FLYWHEEL_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
}

impl ClickHouseArgs {
    fn store(&self) -> Result<flywheel_feedback::Store> {
        Ok(flywheel_feedback::Store::try_new(
            &flywheel_feedback::StoreConfig {
                url: self.url.clone(),
                database: self.database.clone(),
                user: self.user.clone(),
                password: self.password.clone(),
            },
        )?)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Tasks {
            out,
            seed,
            n,
            tasks,
        } => generate_tasks(&out, seed, n, &tasks),
        Command::Check { file } => {
            let read = read_jsonl(&file)?;
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
        Command::Clean {
            input,
            out,
            mask,
            patterns,
        } => clean(&input, &out, mask, &patterns),
        Command::Grade {
            grader,
            dataset,
            samples,
            references,
            options,
        } => grade(
            &grader,
            &dataset,
            samples.as_deref(),
            references,
            &options.options()?,
        ),
        Command::ServeReward {
            grader,
            listen,
            options,
        } => serve_reward(&grader, listen, &options.options()?),
        Command::Dataset {
            route,
            variant,
            from_ms,
            to_ms,
            out,
            name,
            mask,
            patterns,
            drop_validation_failures,
            seed,
            heldout_fraction,
            limit,
            clickhouse,
        } => {
            if !(0.0..1.0).contains(&heldout_fraction) {
                bail!("--heldout-fraction must be in [0, 1)");
            }
            let now = now_ms();
            let query = dataset::captured::Query {
                route: route.clone(),
                variant,
                from_ms,
                to_ms: to_ms.unwrap_or(now + 1),
                keep_validation_failures: !drop_validation_failures,
                pii: if mask {
                    pii::PiiAction::Mask
                } else {
                    pii::PiiAction::Drop
                },
                seed,
                heldout_fraction,
                limit,
            };
            let name = name.unwrap_or_else(|| format!("{route}-{now}"));
            build_dataset(
                &query,
                &pii::PiiFilter::new(&parse_patterns(&patterns)?)?,
                &out,
                &name,
                &clickhouse.store()?,
            )
        }
        Command::Train(args) => train(*args),
        Command::Eval {
            dataset,
            grader,
            configs,
            gateway,
            api_key,
            temperature,
            max_tokens,
            no_response_format,
            raw,
            concurrency,
            request_timeout_secs,
            limit,
            out,
            store,
            clickhouse,
            options,
        } => {
            let mut configs = configs;
            for name in &raw {
                let c = configs
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .with_context(|| format!("--raw {name}: no such --config"))?;
                c.raw = true;
            }
            let mut items = read_dataset(&dataset)?;
            if let Some(n) = limit {
                items.truncate(n);
            }
            if items.is_empty() {
                bail!("{}: no items", dataset.display());
            }
            let grader = Arc::new(load_grader(&grader, &options.options()?)?);
            let params = flywheel_tuner::eval::client::RequestParams {
                temperature,
                max_tokens,
                response_format: !no_response_format,
                timeout: Duration::try_from_secs_f64(request_timeout_secs)
                    .context("--request-timeout-secs")?,
            };
            let gateway = flywheel_tuner::eval::client::Gateway::new(&gateway, api_key);
            let store = store.then(|| clickhouse.store()).transpose()?;
            eval(
                &gateway,
                grader,
                &items,
                &configs,
                &params,
                concurrency,
                &dataset,
                &out,
                store.as_ref(),
            )
        }
    }
}

fn train(a: TrainArgs) -> Result<ExitCode> {
    use flywheel_trainer::{LoraConfig, SamplingConfig, Trainer, TrainerConfig};
    let train_items = read_dataset(&a.train)?;
    let heldout = a
        .heldout
        .as_deref()
        .map(read_dataset)
        .transpose()?
        .unwrap_or_default();
    if a.guide && train_items.iter().all(|i| i.reference_answer.is_none()) {
        bail!(
            "--guide: no item of {} has a reference_answer to guide with",
            a.train.display()
        );
    }
    let grader = Arc::new(load_grader(&a.grader, &a.options.options()?)?);
    let ckpt = a.out.join("checkpoint");
    let mut trainer = if a.resume {
        Trainer::resume(&ckpt).with_context(|| format!("resuming from {}", ckpt.display()))?
    } else {
        if !a.model.join("config.json").is_file() {
            bail!(
                "--model {}: not a model directory (no config.json)",
                a.model.display()
            );
        }
        let mut cfg = TrainerConfig::default();
        cfg.lora = LoraConfig {
            rank: a.rank,
            alpha: a.alpha,
            dropout: a.dropout,
            ..LoraConfig::default()
        };
        cfg.loss.loss_type = enum_flag("loss", &a.loss)?;
        cfg.loss.scale_rewards = enum_flag("scale-rewards", &a.scale_rewards)?;
        cfg.loss.epsilon_low = a.epsilon;
        cfg.loss.epsilon_high = a.epsilon_high;
        cfg.loss.beta = a.beta;
        cfg.sampling = SamplingConfig {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: 0,
            max_new_tokens: a.max_new_tokens,
        };
        cfg.num_generations = a.generations;
        cfg.optim.lr = a.lr;
        cfg.optim.weight_decay = a.weight_decay;
        cfg.schedule.kind = enum_flag("schedule", &a.schedule)?;
        cfg.schedule.warmup_steps = a.warmup_steps;
        cfg.schedule.total_steps = a.steps;
        cfg.max_grad_norm = a.max_grad_norm;
        cfg.guide_failed_groups = a.guide;
        cfg.micro_batch_size = a.micro_batch;
        cfg.pass_threshold = grader.pass_threshold();
        cfg.seed = a.seed;
        Trainer::new(&a.model, cfg)?
    };
    std::fs::create_dir_all(&a.out)?;
    let run_id = a.run_id.clone().unwrap_or_else(|| {
        a.out
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned())
    });
    let store = a.store.then(|| a.clickhouse.store()).transpose()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Some(store) = &store {
        runtime
            .block_on(store.migrate())
            .context("migrating ClickHouse")?;
    }
    let loop_cfg = flywheel_tuner::rft::LoopConfig {
        steps: a.steps,
        prompts_per_step: a.prompts_per_step,
        eval_every: a.eval_every,
        eval_items: a.eval_items,
        eval_max_tokens: a.eval_max_tokens,
        patience: a.patience,
        seed: a.seed,
        out: a.out.clone(),
    };
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("metrics.jsonl"))?;
    let mut store_error = None;
    let mut on_step = |r: &flywheel_tuner::rft::StepRecord| {
        use std::io::Write;
        let m = &r.metrics;
        let bar_len = 24;
        let filled = (r.step * bar_len / a.steps.max(1)).min(bar_len);
        eprintln!(
            "[{}{}] step {:>4}/{}  reward {:.3}±{:.3}  pass {:.2}  kl {:.4}  entropy {:.2}  |g| {:.3}  len {:.1}  {:.1}s  {:.1} tok/s{}{}",
            "#".repeat(filled),
            ".".repeat(bar_len - filled),
            r.step,
            a.steps,
            m.reward_mean,
            m.reward_std,
            m.pass_rate,
            m.kl,
            m.entropy,
            m.grad_norm,
            m.response_len_mean,
            m.step_secs,
            m.tokens_per_sec,
            if m.guided > 0 { format!("  guided {}", m.guided) } else { String::new() },
            r.heldout_reward.map_or(String::new(), |h| format!("  held-out {h:.3}")),
        );
        let _ = writeln!(
            metrics_file,
            "{}",
            serde_json::to_string(r).unwrap_or_default()
        );
        if let Some(store) = &store {
            let row = r.row(&run_id, now_ms());
            if let Err(e) = runtime.block_on(store.insert_rows("training_steps", &[row])) {
                // Training goes on; the metrics are in metrics.jsonl too.
                store_error.get_or_insert_with(|| e.to_string());
            }
        }
    };
    let summary = flywheel_tuner::rft::run(
        &mut trainer,
        grader,
        &train_items,
        &heldout,
        &loop_cfg,
        &mut on_step,
    )?;
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(e) = store_error {
        eprintln!(
            "warning: some steps were not stored in ClickHouse ({e}); metrics.jsonl has them all"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_patterns(patterns: &[String]) -> Result<Vec<(String, String)>> {
    patterns
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(n, r)| (n.to_owned(), r.to_owned()))
                .context("--pattern takes NAME=REGEX")
        })
        .collect()
}

fn build_dataset(
    query: &dataset::captured::Query,
    filter: &pii::PiiFilter,
    out: &Path,
    name: &str,
    store: &flywheel_feedback::Store,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let built = dataset::captured::build(store, query, filter)
            .await
            .with_context(|| {
                format!(
                    "reading captured traffic from ClickHouse ({})",
                    store.database()
                )
            })?;
        std::fs::create_dir_all(out)?;
        write_jsonl(&out.join("train.jsonl"), &built.train)?;
        write_jsonl(&out.join("heldout.jsonl"), &built.heldout)?;
        std::fs::write(
            out.join("counts.json"),
            serde_json::to_string_pretty(&built.counts)?,
        )?;
        for line in built.counts.lines() {
            println!("{line}");
        }
        let ids: Vec<String> = built
            .train
            .iter()
            .chain(&built.heldout)
            .filter_map(|i| i.get_str("inference_id"))
            .map(str::to_owned)
            .collect();
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

#[allow(clippy::too_many_arguments)]
fn eval(
    gateway: &flywheel_tuner::eval::client::Gateway,
    grader: Arc<Grader>,
    items: &[Item],
    configs: &[flywheel_tuner::eval::Config],
    params: &flywheel_tuner::eval::client::RequestParams,
    concurrency: usize,
    dataset: &Path,
    out: &Path,
    store: Option<&flywheel_feedback::Store>,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let progress = |config: &str, done: usize, total: usize| {
            if done == total || done % 10 == 0 {
                eprintln!("{config}: {done}/{total}");
            }
        };
        let name = dataset.file_name().map_or_else(
            || dataset.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let report = flywheel_tuner::eval::run(
            gateway,
            grader,
            items,
            configs,
            params,
            concurrency,
            &name,
            &progress,
        )
        .await;
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("report.md"), report.to_markdown())?;
        std::fs::write(out.join("report.json"), report.to_json())?;
        print!("{}", report.to_markdown());
        if let Some(store) = store {
            // Idempotent; creates eval_results on a database the capture never migrated.
            store.migrate().await.context("migrating ClickHouse")?;
            store
                .insert_rows("eval_results", &report.rows())
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

fn read_jsonl(path: &Path) -> Result<jsonl::Read> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(jsonl::read(BufReader::new(file))?)
}

/// Reads a dataset that must be clean: bad lines are listed and fatal.
fn read_dataset(path: &Path) -> Result<Vec<Item>> {
    let read = read_jsonl(path)?;
    if let Some(first) = read.errors.first() {
        bail!(
            "{}: {} bad lines, first {first}",
            path.display(),
            read.errors.len()
        );
    }
    Ok(read.items)
}

fn write_jsonl(path: &Path, items: &[Item]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    jsonl::write(BufWriter::new(file), items)?;
    Ok(())
}

fn generate_tasks(out: &Path, seed: u64, n: usize, names: &[String]) -> Result<ExitCode> {
    let tasks = if names.is_empty() {
        Task::ALL.to_vec()
    } else {
        names
            .iter()
            .map(|n| Task::parse(n).with_context(|| format!("unknown task {n:?}")))
            .collect::<Result<Vec<_>>>()?
    };
    std::fs::create_dir_all(out)?;
    for task in tasks {
        let (train, heldout) = task.generate_split(seed, n);
        write_jsonl(&out.join(format!("{}.train.jsonl", task.name())), &train)?;
        write_jsonl(
            &out.join(format!("{}.heldout.jsonl", task.name())),
            &heldout,
        )?;
        std::fs::write(
            out.join(format!("{}.grader.json", task.name())),
            serde_json::to_string_pretty(&task.grader())?,
        )?;
        println!(
            "{:<13} train {:>4}  heldout {:>4}",
            task.name(),
            train.len(),
            heldout.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn clean(input: &Path, out: &Path, mask: bool, patterns: &[String]) -> Result<ExitCode> {
    let filter = pii::PiiFilter::new(&parse_patterns(patterns)?)?;
    let mut items = read_dataset(input)?;
    let total = items.len();
    let action = if mask {
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
    write_jsonl(out, &items)?;
    println!("read {total} rows");
    println!(
        "{flagged} rows with PII {}",
        if mask { "masked" } else { "dropped" }
    );
    for (name, n) in &found {
        println!("  {name}: {n}");
    }
    println!("{duplicates} duplicate prompts dropped");
    println!("wrote {} rows to {}", items.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

fn load_grader(path: &Path, options: &GraderOptions) -> Result<Grader> {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    Grader::from_config_with(&config, options)
        .map_err(|e| anyhow::anyhow!("invalid grader config: {e}"))
}

fn serve_reward(grader: &Path, listen: SocketAddr, options: &GraderOptions) -> Result<ExitCode> {
    let grader = Arc::new(load_grader(grader, options)?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "serving grader `{}` ({}) on http://{addr}/ (POST / or /reward)",
            grader.name(),
            grader.kind()
        );
        if let Some(layers) = grader.python_sandbox() {
            eprintln!("python sandbox: {layers}");
        }
        let shutdown = async {
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let term = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        };
        flywheel_tuner::grader::serve::serve(listener, grader, shutdown)
            .await
            .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn grade(
    grader: &Path,
    dataset: &Path,
    samples: Option<&Path>,
    references: bool,
    options: &GraderOptions,
) -> Result<ExitCode> {
    let grader = load_grader(grader, options)?;
    let items = read_dataset(dataset)?;
    let pairs: Vec<(Sample, &Item)> = if references {
        items
            .iter()
            .map(|item| {
                let text = match &item.reference_answer {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                (Sample::from_text(text), item)
            })
            .collect()
    } else {
        let Some(path) = samples else {
            bail!("give --samples FILE or --references")
        };
        let by_id: HashMap<String, &Item> = items.iter().map(|i| (i.id(), i)).collect();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut pairs = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .with_context(|| format!("{}: line {}: no \"id\"", path.display(), n + 1))?;
            let item = by_id.get(id).with_context(|| {
                format!(
                    "{}: line {}: no item with id {id:?} in the dataset",
                    path.display(),
                    n + 1
                )
            })?;
            let sample = match (
                v.get("output_text").and_then(Value::as_str),
                v.get("answer"),
            ) {
                (Some(t), _) => Sample::from_text(t),
                (None, Some(answer)) => Sample::from_chat_answer(answer),
                _ => bail!(
                    "{}: line {}: needs \"output_text\" or \"answer\"",
                    path.display(),
                    n + 1
                ),
            };
            pairs.push((sample, *item));
        }
        pairs
    };
    let (mut sum, mut graded, mut passed, mut errors) = (0.0, 0usize, 0usize, 0usize);
    // One batch: an `endpoint` grader makes one request, a `python` one
    // starts one worker, a `score_model` one asks the judge concurrently.
    let owned: Vec<(Sample, Item)> = pairs
        .iter()
        .map(|(s, i)| (s.clone(), (*i).clone()))
        .collect();
    let results = grader.grade_batch(&owned);
    for ((_, item), result) in pairs.iter().zip(results) {
        match result {
            Ok(g) => {
                println!(
                    "{}\t{:.3}\t{}\t{}",
                    item.id(),
                    g.score,
                    if g.passed { "pass" } else { "fail" },
                    g.reason
                );
                sum += g.score;
                graded += 1;
                passed += usize::from(g.passed);
            }
            Err(e) => {
                println!("{}\terror\t{e}", item.id());
                errors += 1;
            }
        }
    }
    let mean = if graded > 0 {
        sum / graded as f64
    } else {
        f64::NAN
    };
    println!("grader {}: {graded} graded, mean {mean:.3}, pass rate {}/{graded}, {errors} errors (not counted in the mean)", grader.name(), passed);
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_takes_the_grader_options() {
        let cli = Cli::try_parse_from([
            "flywheel-tuner",
            "grade",
            "--grader",
            "g.json",
            "--dataset",
            "d.jsonl",
            "--references",
            "--judge-url",
            "http://judge:9/v1",
            "--judge-api-key",
            "k",
            "--cache-dir",
            "/tmp/c",
            "--python",
            "/usr/bin/python3.11",
            "--python-timeout-secs",
            "2.5",
            "--python-memory-mib",
            "256",
        ])
        .unwrap();
        let Command::Grade {
            options,
            references,
            ..
        } = cli.command
        else {
            panic!("not grade")
        };
        assert!(references);
        let o = options.options().unwrap();
        assert_eq!(o.judge_base_url, "http://judge:9/v1");
        assert_eq!(o.judge_api_key.as_deref(), Some("k"));
        assert_eq!(o.cache_dir, Some(PathBuf::from("/tmp/c")));
        assert_eq!(o.python, PathBuf::from("/usr/bin/python3.11"));
        assert_eq!(o.python_timeout, Duration::from_millis(2500));
        assert_eq!(o.python_memory_bytes, 256 << 20);
    }

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
        let Command::ServeReward {
            options, listen, ..
        } = cli.command
        else {
            panic!("not serve-reward")
        };
        assert_eq!(listen.port(), 0);
        let (o, d) = (options.options().unwrap(), GraderOptions::default());
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
        let Command::ServeReward { options, .. } = cli.command else {
            panic!()
        };
        assert!(options.options().is_err());
    }
}
