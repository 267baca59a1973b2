//! `flywheel-tuner`: datasets, graders and the verifiable task suite.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flywheel_tuner::dataset::{self, jsonl, pii};
use flywheel_tuner::grader::{Grader, GraderOptions};
use flywheel_tuner::tasks::Task;
use flywheel_tuner::{Item, Sample};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "flywheel-tuner", about = "Datasets, graders and the verifiable task suite for reinforcement fine-tuning")]
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
        Command::Tasks { out, seed, n, tasks } => generate_tasks(&out, seed, n, &tasks),
        Command::Check { file } => {
            let read = read_jsonl(&file)?;
            for e in &read.errors {
                println!("{}:{e}", file.display());
            }
            println!("{} items, {} bad lines", read.items.len(), read.errors.len());
            Ok(if read.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Clean { input, out, mask, patterns } => clean(&input, &out, mask, &patterns),
        Command::Grade { grader, dataset, samples, references, options } => {
            grade(&grader, &dataset, samples.as_deref(), references, &options.options()?)
        }
        Command::ServeReward { grader, listen, options } => serve_reward(&grader, listen, &options.options()?),
    }
}

fn read_jsonl(path: &Path) -> Result<jsonl::Read> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(jsonl::read(BufReader::new(file))?)
}

/// Reads a dataset that must be clean: bad lines are listed and fatal.
fn read_dataset(path: &Path) -> Result<Vec<Item>> {
    let read = read_jsonl(path)?;
    if let Some(first) = read.errors.first() {
        bail!("{}: {} bad lines, first {first}", path.display(), read.errors.len());
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
        write_jsonl(&out.join(format!("{}.heldout.jsonl", task.name())), &heldout)?;
        std::fs::write(out.join(format!("{}.grader.json", task.name())), serde_json::to_string_pretty(&task.grader())?)?;
        println!("{:<13} train {:>4}  heldout {:>4}", task.name(), train.len(), heldout.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn clean(input: &Path, out: &Path, mask: bool, patterns: &[String]) -> Result<ExitCode> {
    let extra = patterns
        .iter()
        .map(|p| p.split_once('=').map(|(n, r)| (n.to_owned(), r.to_owned())).context("--pattern takes NAME=REGEX"))
        .collect::<Result<Vec<_>>>()?;
    let filter = pii::PiiFilter::new(&extra)?;
    let mut items = read_dataset(input)?;
    let total = items.len();
    let action = if mask { pii::PiiAction::Mask } else { pii::PiiAction::Drop };
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
    println!("{flagged} rows with PII {}", if mask { "masked" } else { "dropped" });
    for (name, n) in &found {
        println!("  {name}: {n}");
    }
    println!("{duplicates} duplicate prompts dropped");
    println!("wrote {} rows to {}", items.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

fn load_grader(path: &Path, options: &GraderOptions) -> Result<Grader> {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    Grader::from_config_with(&config, options).map_err(|e| anyhow::anyhow!("invalid grader config: {e}"))
}

fn serve_reward(grader: &Path, listen: SocketAddr, options: &GraderOptions) -> Result<ExitCode> {
    let grader = Arc::new(load_grader(grader, options)?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!("serving grader `{}` ({}) on http://{addr}/ (POST / or /reward)", grader.name(), grader.kind());
        if let Some(layers) = grader.python_sandbox() {
            eprintln!("python sandbox: {layers}");
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        flywheel_tuner::grader::serve::serve(listener, grader, shutdown).await.context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn grade(grader: &Path, dataset: &Path, samples: Option<&Path>, references: bool, options: &GraderOptions) -> Result<ExitCode> {
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
        let Some(path) = samples else { bail!("give --samples FILE or --references") };
        let by_id: HashMap<String, &Item> = items.iter().map(|i| (i.id(), i)).collect();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).with_context(|| format!("{}: line {}", path.display(), n + 1))?;
            let id = v.get("id").and_then(Value::as_str).with_context(|| format!("{}: line {}: no \"id\"", path.display(), n + 1))?;
            let item = by_id.get(id).with_context(|| format!("{}: line {}: no item with id {id:?} in the dataset", path.display(), n + 1))?;
            let sample = match (v.get("output_text").and_then(Value::as_str), v.get("answer")) {
                (Some(t), _) => Sample::from_text(t),
                (None, Some(answer)) => Sample::from_chat_answer(answer),
                _ => bail!("{}: line {}: needs \"output_text\" or \"answer\"", path.display(), n + 1),
            };
            pairs.push((sample, *item));
        }
        pairs
    };
    let (mut sum, mut graded, mut passed, mut errors) = (0.0, 0usize, 0usize, 0usize);
    // One batch: an `endpoint` grader makes one request, a `python` one
    // starts one worker, a `score_model` one asks the judge concurrently.
    let owned: Vec<(Sample, Item)> = pairs.iter().map(|(s, i)| (s.clone(), (*i).clone())).collect();
    let results = grader.grade_batch(&owned);
    for ((_, item), result) in pairs.iter().zip(results) {
        match result {
            Ok(g) => {
                println!("{}\t{:.3}\t{}\t{}", item.id(), g.score, if g.passed { "pass" } else { "fail" }, g.reason);
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
    let mean = if graded > 0 { sum / graded as f64 } else { f64::NAN };
    println!("grader {}: {graded} graded, mean {mean:.3}, pass rate {}/{graded}, {errors} errors (not counted in the mean)", grader.name(), passed);
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
