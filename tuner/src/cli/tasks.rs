//! `flywheel-tuner tasks`: writes the verifiable task suite.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use flywheel_tuner::tasks::Task;

use super::files::write_jsonl;

#[derive(clap::Args)]
pub struct Args {
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
    #[arg(long = "task", value_parser = parse_task)]
    tasks: Vec<Task>,
}

fn parse_task(name: &str) -> Result<Task, String> {
    Task::parse(name).ok_or_else(|| format!("unknown task {name:?}"))
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let tasks = if args.tasks.is_empty() {
        Task::ALL.to_vec()
    } else {
        args.tasks.clone()
    };
    let out = &args.out;
    std::fs::create_dir_all(out)?;
    for task in tasks {
        let (train, heldout) = task.generate_split(args.seed, args.n);
        write_jsonl(
            &out.join(format!("{}.train.jsonl", task.name())),
            &train,
            None,
        )?;
        write_jsonl(
            &out.join(format!("{}.heldout.jsonl", task.name())),
            &heldout,
            None,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn tasks_are_parsed_by_name() {
        let cli = Cli::try_parse_from([
            "flywheel-tuner",
            "tasks",
            "--out",
            "o",
            "--task",
            "tool_call",
            "--task",
            "policy",
        ])
        .unwrap();
        let Command::Tasks(args) = cli.command else {
            panic!("not tasks")
        };
        assert_eq!(
            args.tasks,
            [
                flywheel_tuner::tasks::Task::ToolCall,
                flywheel_tuner::tasks::Task::Policy
            ]
        );
        assert!(
            Cli::try_parse_from(["flywheel-tuner", "tasks", "--out", "o", "--task", "nope"])
                .is_err()
        );
    }
}
