//! Reading GGUF metadata into the values the converter needs.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{Error, Result};

/// Architectures the converter handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    pub fn hf_architecture(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    pub fn model_type(self) -> &'static str {
        self.gguf_name()
    }

    /// llama.cpp permutes the Q/K rows of llama models (interleaved rope); qwen2 uses NEOX
    /// rope and its GGUFs keep the HF row order.
    pub fn qk_permuted(self) -> bool {
        matches!(self, Arch::Llama)
    }
}

/// Typed access to a GGUF's metadata, with errors that name the file and key.
pub struct Meta<'a> {
    pub path: PathBuf,
    pub content: &'a Content,
}

impl<'a> Meta<'a> {
    pub fn new(path: &Path, content: &'a Content) -> Self {
        Meta {
            path: path.to_path_buf(),
            content,
        }
    }

    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.content.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => value_u64(v)
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` is not an unsigned integer: {v:?}"))),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        Ok(self.u64(key)? as usize)
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            // Shortest decimal form, so that an f32 1e-5 becomes 1e-5 and not 9.99999974e-6.
            Some(Value::F32(v)) => Ok(Some(v.to_string().parse().unwrap_or(*v as f64))),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(v) => match value_u64(v) {
                Some(n) => Ok(Some(n as f64)),
                None => Err(self.err(format!("`{key}` is not a number: {v:?}"))),
            },
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(format!("`{key}` is not a bool: {v:?}"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(format!("`{key}` is not a string: {v:?}"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str> {
        self.opt_str(key)?
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>> {
        match self.require(key)? {
            Value::Array(items) => Ok(items),
            v => Err(self.err(format!("`{key}` is not an array: {:?}", v.value_type()))),
        }
    }

    pub fn string_array(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(self.err(format!("`{key}`[{i}] is not a string: {v:?}"))),
            })
            .collect()
    }

    pub fn int_array(&self, key: &str) -> Result<Vec<i64>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                value_i64(v)
                    .ok_or_else(|| self.err(format!("`{key}`[{i}] is not an integer: {v:?}")))
            })
            .collect()
    }
}

fn value_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(n) => Some(n as u64),
        Value::U16(n) => Some(n as u64),
        Value::U32(n) => Some(n as u64),
        Value::U64(n) => Some(n),
        Value::I8(n) if n >= 0 => Some(n as u64),
        Value::I16(n) if n >= 0 => Some(n as u64),
        Value::I32(n) if n >= 0 => Some(n as u64),
        Value::I64(n) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

fn value_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(n) => Some(n as i64),
        Value::I16(n) => Some(n as i64),
        Value::I32(n) => Some(n as i64),
        Value::I64(n) => Some(n),
        Value::U8(n) => Some(n as i64),
        Value::U16(n) => Some(n as i64),
        Value::U32(n) => Some(n as i64),
        Value::U64(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

/// The hyperparameters of a llama-family GGUF.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub arch: Arch,
    pub name: Option<String>,
    pub n_layer: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub context_length: usize,
}

impl Hparams {
    pub fn read(meta: &Meta<'_>) -> Result<Self> {
        let arch_name = meta.str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(meta.err(format!("architecture `{other}` (supported: llama, qwen2)")))
            }
        };
        let k = |suffix: &str| format!("{arch_name}.{suffix}");
        let hidden = meta.usize(&k("embedding_length"))?;
        let n_head = meta.usize(&k("attention.head_count"))?;
        let n_kv_head = meta
            .opt_u64(&k("attention.head_count_kv"))?
            .map(|n| n as usize)
            .unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || hidden % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(meta.err(format!(
                "inconsistent heads: hidden {hidden}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = meta
            .opt_u64(&k("attention.key_length"))?
            .map(|n| n as usize)
            .unwrap_or(hidden / n_head);
        if head_dim != hidden / n_head {
            return Err(meta.err(format!(
                "head dim {head_dim} != hidden {hidden} / heads {n_head} (not supported)"
            )));
        }
        if let Some(rope_dims) = meta.opt_u64(&k("rope.dimension_count"))? {
            if rope_dims as usize != head_dim {
                return Err(meta.err(format!(
                    "partial rope ({rope_dims} of {head_dim} dims) is not supported"
                )));
            }
        }
        if let Some(scaling) = meta.opt_str(&k("rope.scaling.type"))? {
            if scaling != "none" {
                return Err(meta.err(format!("rope scaling `{scaling}` is not supported")));
            }
        }
        let default_theta = match arch {
            Arch::Llama => 10_000.0,
            Arch::Qwen2 => 1_000_000.0,
        };
        Ok(Hparams {
            arch,
            name: meta.opt_str("general.name")?.map(str::to_string),
            n_layer: meta.usize(&k("block_count"))?,
            hidden,
            intermediate: meta.usize(&k("feed_forward_length"))?,
            n_head,
            n_kv_head,
            head_dim,
            rms_eps: meta.f64(&k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.opt_f64(&k("rope.freq_base"))?.unwrap_or(default_theta),
            context_length: meta.usize(&k("context_length"))?,
        })
    }
}
