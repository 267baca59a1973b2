//! Reading and writing the files the subcommands take: JSONL datasets and
//! grader configs.

use std::{
    fs::File,
    io::{BufReader, BufWriter},
    path::Path,
};

use anyhow::{bail, Context, Result};
use flywheel_tuner::{
    dataset::jsonl,
    grader::{Grader, GraderOptions},
    Item,
};
use serde_json::Value;

/// A JSONL dataset: its items and its bad lines.
pub fn read_jsonl(path: &Path) -> Result<jsonl::Read> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(jsonl::read(BufReader::new(file))?)
}

/// Reads a dataset that must be clean: bad lines are listed and fatal.
pub fn read_dataset(path: &Path) -> Result<Vec<Item>> {
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

pub fn write_jsonl(path: &Path, items: &[Item]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    jsonl::write(BufWriter::new(file), items)?;
    Ok(())
}

/// A grader from its config file (OpenAI grader JSON).
pub fn load_grader(path: &Path, options: &GraderOptions) -> Result<Grader> {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    Grader::from_config_with(&config, options)
        .map_err(|e| anyhow::anyhow!("invalid grader config: {e}"))
}
