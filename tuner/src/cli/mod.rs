//! The `flywheel-tuner` command line: one module per subcommand, each with
//! its clap `Args` and its `run`, plus the flag groups several share
//! ([`options`]) and the file helpers ([`files`]).
//!
//! These modules belong to the binary (declared from `main.rs`), not to the
//! `flywheel_tuner` library: they are flag parsing and wiring of library
//! calls to files, ClickHouse and the console, which no library user needs,
//! and keeping them out keeps clap and the process-level concerns (exit
//! codes, printing, tokio runtimes) out of the library's API. What they
//! need from the crate is library API ([`flywheel_tuner`]).

mod check;
mod clean;
mod dataset;
mod eval;
mod files;
mod grade;
mod grade_online;
mod jobs;
mod options;
mod runs;
mod serve;
mod serve_reward;
mod simulate;
mod tasks;
mod train;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flywheel-tuner",
    about = "Datasets, graders and the verifiable task suite for reinforcement fine-tuning"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generates the verifiable task suite: for each task
    /// `<task>.train.jsonl`, `<task>.heldout.jsonl` (20 % of prompts, by
    /// prompt hash) and `<task>.grader.json`.
    Tasks(tasks::Args),
    /// Checks a JSONL dataset (OpenAI / Bedrock RFT chat format); every bad
    /// line is printed with its number, and any makes the exit status 1.
    Check(check::Args),
    /// Filters PII out of a JSONL dataset: emails, phone numbers, card
    /// numbers, secret keys and `--pattern NAME=REGEX`; rows with a hit are
    /// dropped, or masked with `--mask`. Also drops duplicate prompts.
    Clean(clean::Args),
    /// Validates a grader config (OpenAI grader JSON) and runs it on
    /// samples, printing each score with its reason. A grader error is
    /// reported as an error, never counted as a 0.
    Grade(grade::Args),
    /// Online grading: scores a sampled fraction (`--fraction`, by a hash of
    /// the inference id) of a route's live answers, served and canary
    /// shadow mirrors alike, with a grader, and writes each score as
    /// feedback (`--metric`, default `grader_<name>`) on the inference,
    /// with its tenant, route, variant and episode. Idempotent: already
    /// graded inferences are skipped, a score's id is a hash of (inference,
    /// metric). A grader error, or an inference without captured bodies,
    /// writes nothing (no data, never a zero); each pass prints a summary.
    GradeOnline(Box<grade_online::Args>),
    /// Serves a grader as an HTTP reward function speaking the Bedrock RFT
    /// reward-Lambda contract (`POST /` or `/reward` with a JSON array of
    /// `{"id", "messages": [..., assistant answer], "reference_answer", ...}`,
    /// answered with `{"id", "aggregate_reward_score", "metrics_list"}`s).
    ServeReward(serve_reward::Args),
    /// Builds an RFT dataset from captured traffic in ClickHouse: the chat
    /// inferences of a route (and variant) in a time window, joined to
    /// their feedback, filtered (errors, provider outages, failed tool
    /// calls, optionally validation failures, PII), deduplicated by prompt
    /// and split into `train.jsonl` / `heldout.jsonl`. Prints every
    /// filter's count (also in `counts.json`) and records the kept
    /// inferences as used by the dataset, so retention keeps them.
    Dataset(Box<dataset::Args>),
    /// Reinforcement fine-tuning: GRPO with LoRA on a local model directory,
    /// rewards from a grader, held-out reward tracked (the best is exported
    /// as a PEFT adapter and as a merged model directory the engine can
    /// deploy), checkpoints every step, metrics to the console, to
    /// `metrics.jsonl` and with `--store` to ClickHouse.
    Train(Box<train::Args>),
    /// Runs a dataset through gateway configurations (`--config NAME=MODEL`,
    /// e.g. `base=tasks-base`, `chain=tasks-chain`) and reports for each:
    /// mean score and pass rate with 95% intervals, tokens, retries and
    /// fallbacks per request, p50/p95 latency, cost per request and quality
    /// per dollar. Writes `report.md` and `report.json` to `--out` and, with
    /// `--store`, one `eval_results` row per configuration to ClickHouse.
    Eval(Box<eval::Args>),
    /// Simulated users on a gateway route: prompts drawn from a dataset,
    /// sent open loop at `--rate` per second with episode and user ids;
    /// each answer judged by a grader, thumbs sent back with configurable
    /// rate, noise and delay, and some failed answers re-asked. Prints
    /// progress, then per variant: requests, errors, pass rate, thumbs,
    /// re-asks and cost per answer.
    Simulate(Box<simulate::Args>),
    /// Checks the tuner service's configuration (`--config`, a TOML file
    /// with a `[tuner]` table; every bad key or value is named with its
    /// path) and the files it names, and prints what each job would do:
    /// its triggers, dataset, training, offline gate and canary.
    Jobs(jobs::Args),
    /// The tuner service's runs, newest first (job, start, time taken,
    /// where each stands or how it ended), or with a run id the run's whole
    /// story, newest event first: each stage's start and end with its
    /// lineage, failures with their reasons, cleanups and the outcome.
    Runs(runs::Args),
    /// The tuner service: runs every job of `--config` unattended. A job's
    /// run starts when its trigger fires (a schedule, or N new graded or
    /// feedback rows on its route, never closer than a minimum interval;
    /// one training at a time) and goes dataset (from ClickHouse) → train
    /// (GRPO LoRA, a child process) → deploy (the merged version onto the
    /// engines, behind the free slot variant's alias) → offline gate
    /// (candidate vs incumbent vs chain on held-out items through the
    /// gateway) → canary (an experiment followed to promotion or
    /// rollback). Each step is journaled before and after it runs, so a
    /// restart carries on without losing or repeating a stage; failures
    /// are recorded with their reason and leave no version loaded. Also
    /// grades the routes' live answers online (the canary's quality).
    /// `runs` shows what it did. Stops on SIGINT/SIGTERM.
    Serve(Box<serve::Args>),
}

impl Cli {
    /// Runs the subcommand. An error is reported by `main` (exit status 2);
    /// a subcommand that ran but found problems returns [`ExitCode::FAILURE`].
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Tasks(args) => tasks::run(&args),
            Command::Check(args) => check::run(&args),
            Command::Clean(args) => clean::run(&args),
            Command::Grade(args) => grade::run(&args),
            Command::GradeOnline(args) => grade_online::run(*args),
            Command::ServeReward(args) => serve_reward::run(&args),
            Command::Dataset(args) => dataset::run(*args),
            Command::Train(args) => train::run(*args),
            Command::Eval(args) => eval::run(*args),
            Command::Simulate(args) => simulate::run(*args),
            Command::Jobs(args) => jobs::run(&args),
            Command::Runs(args) => runs::run(&args),
            Command::Serve(args) => serve::run(*args),
        }
    }
}

/// The tokio runtime of the subcommands that talk to ClickHouse, the
/// gateway or a judge.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}
