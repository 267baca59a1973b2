//! Helpers for tests and examples: tiny random-weight models in HF layout and the
//! location of the real test model.
//!
//! A tiny model (2 layers, hidden 32) runs the full code path in milliseconds; the
//! real model is only needed for end-to-end checks.

// A test harness: a failed setup step should fail the test loudly, so it
// may unwrap and sleep (clippy.toml only exempts #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor};

use crate::{
    config::{Arch, ModelConfig},
    rng::Rng,
};

/// Env var naming the real test model directory.
pub const MODEL_DIR_ENV: &str = "FLYWHEEL_MODEL_DIR";
/// Default real test model directory (SmolLM2-135M-Instruct, HF layout, F32).
pub const DEFAULT_MODEL_DIR: &str = "/var/tmp/flywheel/models/smollm2/hf";

/// The real model directory; panics with a clear message when it is missing.
/// Largest absolute difference between two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of the same shape and dtype")
}

pub fn real_model_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var(MODEL_DIR_ENV).unwrap_or_else(|_| DEFAULT_MODEL_DIR.to_string()),
    );
    assert!(
        dir.join("model.safetensors").exists() && dir.join("tokenizer.json").exists(),
        "real model missing: {} has no model.safetensors/tokenizer.json (set {MODEL_DIR_ENV} to an HF \
         model dir, e.g. SmolLM2-135M-Instruct; CI fetches it)",
        dir.display()
    );
    dir
}

/// A tiny Llama (or Qwen2 with q/k/v biases) config with GQA (4 heads, 2 KV heads).
pub fn tiny_config(arch: Arch, vocab_size: usize) -> ModelConfig {
    ModelConfig {
        arch,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        vocab_size,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 512,
        tie_word_embeddings: true,
        attention_bias: arch == Arch::Qwen2,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// Random HF-named weights for `cfg`: projections with std `scale/sqrt(in)`, embeddings
/// with std `embed_std` (this sets how peaked the initial next-token distribution is),
/// norms around 1.
pub fn random_weights(
    cfg: &ModelConfig,
    seed: u64,
    scale: f32,
    embed_std: f32,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut rng = Rng::new(seed);
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    // Sum of 3 uniforms: cheap, roughly normal; std of U(-a,a) is a/sqrt(3).
    let randn = |shape: &[usize], std: f32, rng: &mut Rng| -> candle_core::Result<Tensor> {
        let n: usize = shape.iter().product();
        let a = std; // std of sum of 3 U(-a, a) is a.
        let v: Vec<f32> = (0..n)
            .map(|_| (0..3).map(|_| a * (2.0 * rng.next_f32() - 1.0)).sum())
            .collect();
        Tensor::from_vec(v, shape, &dev)
    };
    let h = cfg.hidden_size;
    t.insert(
        "model.embed_tokens.weight".into(),
        randn(&[cfg.vocab_size, h], embed_std, &mut rng)?,
    );
    for i in 0..cfg.num_hidden_layers {
        for name in crate::lora::ALL_TARGETS {
            let (out, inp) = cfg.proj_shape(name).unwrap();
            let group = crate::lora::module_group(name);
            let std = scale / (inp as f32).sqrt();
            t.insert(
                format!("model.layers.{i}.{group}.{name}.weight"),
                randn(&[out, inp], std, &mut rng)?,
            );
            if cfg.attention_bias && matches!(name, "q_proj" | "k_proj" | "v_proj") {
                t.insert(
                    format!("model.layers.{i}.{group}.{name}.bias"),
                    randn(&[out], 0.1, &mut rng)?,
                );
            }
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            t.insert(
                format!("model.layers.{i}.{n}.weight"),
                (randn(&[h], 0.1, &mut rng)? + 1.0)?,
            );
        }
    }
    t.insert(
        "model.norm.weight".into(),
        (randn(&[h], 0.1, &mut rng)? + 1.0)?,
    );
    if !cfg.tie_word_embeddings {
        t.insert(
            "lm_head.weight".into(),
            randn(&[cfg.vocab_size, h], 1.0 / (h as f32).sqrt(), &mut rng)?,
        );
    }
    Ok(t)
}

/// Writes a tiny random model as an HF directory (`config.json`, `model.safetensors`),
/// copying tokenizer/generation files from `tokenizer_from` when given.
pub fn write_tiny_model(
    dir: &Path,
    cfg: &ModelConfig,
    seed: u64,
    embed_std: f32,
    tokenizer_from: Option<&Path>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_json())?,
    )?;
    let w = random_weights(cfg, seed, 1.0, embed_std)?;
    candle_core::safetensors::save(&w, dir.join("model.safetensors"))?;
    if let Some(src) = tokenizer_from {
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            if src.join(f).exists() {
                std::fs::copy(src.join(f), dir.join(f))?;
            }
        }
    }
    Ok(())
}
