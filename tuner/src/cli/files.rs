//! Reading and writing the files the subcommands take: JSONL datasets and
//! grader configs.

use std::path::Path;

use anyhow::{bail, Context, Result};
use flywheel_feedback::wal::Keyring;
use flywheel_tuner::{
    dataset::jsonl,
    grader::{Grader, GraderOptions},
    Item,
};
use serde_json::Value;

/// A JSONL dataset, plain or sealed: its items and its bad lines.
pub fn read_jsonl(path: &Path, keys: Option<&Keyring>) -> Result<jsonl::Read> {
    Ok(jsonl::read_file(path, keys)?)
}

/// Reads a dataset that must be clean: bad lines are listed and fatal.
pub fn read_dataset(path: &Path, keys: Option<&Keyring>) -> Result<Vec<Item>> {
    let read = read_jsonl(path, keys)?;
    if let Some(first) = read.errors.first() {
        bail!(
            "{}: {} bad lines, first {first}",
            path.display(),
            read.errors.len()
        );
    }
    Ok(read.items)
}

/// Writes a dataset, sealed when `keys` is given.
pub fn write_jsonl(path: &Path, items: &[Item], keys: Option<&Keyring>) -> Result<()> {
    jsonl::write_file(path, items, keys)?;
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
