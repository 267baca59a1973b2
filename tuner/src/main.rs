//! `flywheel-tuner`: datasets, graders and the verifiable task suite.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flywheel_tuner::dataset::{self, jsonl, pii};
use flywheel_tuner::grader::Grader;
use flywheel_tuner::tasks::Task;
use flywheel_tuner::{Item, Sample};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "flywheel-tuner", about = "Datasets, graders and the verifiable task suite for reinforcement fine-tuning")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        Command::Grade { grader, dataset, samples, references } => grade(&grader, &dataset, samples.as_deref(), references),
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

fn grade(grader: &Path, dataset: &Path, samples: Option<&Path>, references: bool) -> Result<ExitCode> {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(grader).with_context(|| format!("reading {}", grader.display()))?)
        .with_context(|| format!("{} is not JSON", grader.display()))?;
    let grader = Grader::from_config(&config).map_err(|e| anyhow::anyhow!("invalid grader config: {e}"))?;
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
    for (sample, item) in &pairs {
        match grader.grade(sample, item) {
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
