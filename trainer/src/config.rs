//! Model configuration read from a Hugging Face `config.json`.
//!
//! Only the two decoder families the trainer supports are accepted: Llama
//! (`LlamaForCausalLM`, e.g. SmolLM2) and Qwen2 (`Qwen2ForCausalLM`). They share
//! one forward; Qwen2 differs only by biases on the q/k/v projections. Anything
//! else is rejected up front with a clear error instead of producing garbage.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors raised while reading a model configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "unsupported architecture {0:?}: the trainer supports LlamaForCausalLM and Qwen2ForCausalLM"
    )]
    UnsupportedArchitecture(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Decoder family; decides the only architectural differences we handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    Llama,
    Qwen2,
}

/// The subset of `config.json` the forward needs, with defaults resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v projections (always true for Qwen2, `attention_bias` for Llama).
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    /// All end-of-sequence ids (`eos_token_id` may be a number or a list).
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

impl ModelConfig {
    /// Reads `config.json` from a file path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// Parses the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or_else(|| raw.model_type.clone())
            .unwrap_or_default();
        let arch = match arch_name.as_str() {
            "LlamaForCausalLM" | "llama" => Arch::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
            other => return Err(ConfigError::UnsupportedArchitecture(other.to_string())),
        };
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(ConfigError::Invalid(format!(
                    "hidden_act {act:?} (only silu)"
                )));
            }
        }
        if raw.mlp_bias == Some(true) {
            return Err(ConfigError::Invalid(
                "mlp_bias = true is not supported".into(),
            ));
        }
        if let Some(rs) = &raw.rope_scaling {
            if !rs.is_null() {
                return Err(ConfigError::Invalid(format!(
                    "rope_scaling {rs} is not supported"
                )));
            }
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ConfigError::Invalid(format!(
                "num_attention_heads {heads} must be a positive multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if !head_dim.is_multiple_of(2) {
            return Err(ConfigError::Invalid(format!(
                "head_dim {head_dim} must be even for RoPE"
            )));
        }
        Ok(Self {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: match arch {
                Arch::Qwen2 => true,
                Arch::Llama => raw.attention_bias.unwrap_or(false),
            },
            bos_token_id: ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: ids(&raw.eos_token_id),
        })
    }

    /// Query heads per key/value head (grouped-query attention factor).
    pub fn n_rep(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Output width of a projection by its module name (`q_proj`, `gate_proj`, ...).
    pub fn proj_shape(&self, module: &str) -> Option<(usize, usize)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        // (out, in) like the HF weight layout.
        Some(match module {
            "q_proj" => (q, h),
            "k_proj" | "v_proj" => (kv, h),
            "o_proj" => (h, q),
            "gate_proj" | "up_proj" => (i, h),
            "down_proj" => (h, i),
            _ => return None,
        })
    }

    /// A `config.json` text for this configuration (used to write tiny test models).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let arch = match self.arch {
            Arch::Llama => ("LlamaForCausalLM", "llama"),
            Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        serde_json::json!({
            "architectures": [arch.0],
            "model_type": arch.1,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids.first(),
            "torch_dtype": "float32",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_defaults_and_qwen_bias() {
        let c = ModelConfig::from_json_str(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,
            "tie_word_embeddings":true,"eos_token_id":[2,3]}"#,
        )
        .unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(c.head_dim, 16);
        assert!(!c.attention_bias);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert_eq!(c.n_rep(), 2);
        let q = ModelConfig::from_json_str(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100}"#,
        )
        .unwrap();
        assert!(q.attention_bias);
        assert!(!q.tie_word_embeddings);
    }

    #[test]
    fn rejects_other_architectures() {
        let e = ModelConfig::from_json_str(
            r#"{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("MistralForCausalLM"), "{e}");
    }

    #[test]
    fn real_configs_parse() {
        for d in ["smollm2", "qwen2.5-coder-0.5b"] {
            let p = format!("/var/tmp/flywheel/models/{d}/hf/config.json");
            if std::path::Path::new(&p).exists() {
                let c = ModelConfig::from_file(&p).unwrap();
                assert_eq!(c.head_dim, 64);
            }
        }
    }
}
