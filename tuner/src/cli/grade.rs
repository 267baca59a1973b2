//! `flywheel-tuner grade`: runs a grader on samples (or on the dataset's
//! reference answers) and prints each score.

use std::{collections::HashMap, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use flywheel_tuner::{Item, Sample};
use serde_json::Value;

use super::{
    files::{load_grader, read_dataset},
    options::{GraderArgs, KeyArgs},
};

#[derive(clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    keys: KeyArgs,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let grader = load_grader(&args.grader, &args.options.options()?)?;
    let items = read_dataset(&args.dataset, args.keys.keyring()?.as_ref())?;
    let pairs: Vec<(Sample, &Item)> = if args.references {
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
        let Some(path) = &args.samples else {
            bail!("give --samples FILE or --references")
        };
        read_samples(path, &items)?
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

/// The samples of a `--samples` file, each with the item it answers.
fn read_samples<'a>(path: &std::path::Path, items: &'a [Item]) -> Result<Vec<(Sample, &'a Item)>> {
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
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use clap::Parser;

    use crate::cli::{Cli, Command};

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
        let Command::Grade(args) = cli.command else {
            panic!("not grade")
        };
        assert!(args.references);
        let o = args.options.options().unwrap();
        assert_eq!(o.judge_base_url, "http://judge:9/v1");
        assert_eq!(o.judge_api_key.as_deref(), Some("k"));
        assert_eq!(o.cache_dir, Some(PathBuf::from("/tmp/c")));
        assert_eq!(o.python, PathBuf::from("/usr/bin/python3.11"));
        assert_eq!(o.python_timeout, Duration::from_millis(2500));
        assert_eq!(o.python_memory_bytes, 256 << 20);
    }

    #[test]
    fn samples_conflict_with_references() {
        assert!(Cli::try_parse_from([
            "flywheel-tuner",
            "grade",
            "--grader",
            "g.json",
            "--dataset",
            "d.jsonl",
            "--references",
            "--samples",
            "s.jsonl",
        ])
        .is_err());
    }
}
