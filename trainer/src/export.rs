//! Export: a PEFT adapter directory and a merged plain-HF model directory.
//!
//! The adapter directory (`adapter_config.json` + `adapter_model.safetensors`) is
//! what PEFT's `PeftModel.from_pretrained` and LoRA-aware servers load. The merged
//! directory folds `W + scale * B A` into every adapted weight and keeps every
//! other tensor byte-for-byte, so any HF loader (mistral.rs) sees a normal model.

use std::{borrow::Cow, collections::HashMap, path::Path};

use anyhow::Context as _;
use candle_core::Tensor;
use safetensors::tensor::{Dtype, TensorView, View};

use crate::{lora::module_group, model::CausalLm};

/// Files copied from the base model directory into a merged export.
pub const COPIED_FILES: [&str; 8] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

fn pt_metadata() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("format".to_string(), "pt".to_string())]))
}

/// `adapter_config.json` content for the model's LoRA config.
pub fn adapter_config_json(
    model: &CausalLm,
    base_model: &str,
) -> anyhow::Result<serde_json::Value> {
    let l = model
        .lora_cfg
        .as_ref()
        .context("model has no LoRA adapters")?;
    Ok(serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": l.rank,
        "lora_alpha": l.alpha,
        "lora_dropout": l.dropout,
        "target_modules": l.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
    }))
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT names,
/// `lora_A` [r, in], `lora_B` [out, r]) into `dir`.
pub fn export_adapter(model: &CausalLm, dir: &Path, base_model: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = adapter_config_json(model, base_model)?;
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&cfg)?,
    )?;
    let tensors: Vec<(String, Tensor)> = model
        .lora_vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    safetensors::serialize_to_file(
        tensors,
        pt_metadata(),
        &dir.join("adapter_model.safetensors"),
    )?;
    Ok(())
}

/// A tensor to write: either untouched bytes from the base file or a new tensor.
enum OutTensor<'a> {
    Base(TensorView<'a>),
    New(Tensor),
}

impl View for OutTensor<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Self::Base(v) => v.dtype(),
            Self::New(t) => View::dtype(t),
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Self::Base(v) => v.shape(),
            Self::New(t) => t.dims(),
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Self::Base(v) => Cow::Borrowed(v.data()),
            Self::New(t) => View::data(t),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Self::Base(v) => v.data().len(),
            Self::New(t) => View::data_len(t),
        }
    }
}

/// HF weight name -> merged weight, for every adapted projection.
pub fn merged_weights(model: &CausalLm) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (i, layer) in model.layers.iter().enumerate() {
        for name in crate::lora::ALL_TARGETS {
            let p = layer
                .proj(name)
                .ok_or_else(|| anyhow::anyhow!("layer {i} has no projection {name}"))?;
            if p.lora.is_some() {
                out.insert(
                    format!("model.layers.{i}.{}.{name}.weight", module_group(name)),
                    p.merged_weight()?,
                );
            }
        }
    }
    Ok(out)
}

/// Writes a merged model directory: base config/tokenizer files copied, and a single
/// `model.safetensors` with every adapted weight replaced by `W + scale * B A`
/// (cast to the base tensor's dtype) and every other tensor copied unchanged.
pub fn export_merged(model: &CausalLm, base_dir: &Path, out_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    for f in COPIED_FILES {
        let src = base_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, out_dir.join(f))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(base_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    // SAFETY: the base files are not modified while mapped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files)? };
    let mut merged = merged_weights(model)?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        match merged.remove(&name) {
            Some(w) => {
                let base_dtype = candle_core::DType::try_from(view.dtype())?;
                anyhow::ensure!(w.dims() == view.shape(), "merged {name} shape mismatch");
                out.push((name, OutTensor::New(w.to_dtype(base_dtype)?)));
            }
            None => out.push((name, OutTensor::Base(view))),
        }
    }
    anyhow::ensure!(
        merged.is_empty(),
        "base model lacks merged tensors: {:?}",
        merged.keys().collect::<Vec<_>>()
    );
    safetensors::serialize_to_file(out, pt_metadata(), &out_dir.join("model.safetensors"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::{
        config::Arch,
        lora::{ForwardCtx, LoraConfig},
        model::{tests::max_diff, PaddedBatch},
        rng::Rng,
        testing::{tiny_config, write_tiny_model},
    };

    /// Tiny Qwen2 (biases, untied head) on disk, loaded with LoRA on a subset of targets,
    /// B randomised so the adapters matter.
    fn setup(targets: &[&str]) -> (tempfile::TempDir, CausalLm, LoraConfig) {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = tiny_config(Arch::Qwen2, 101);
        cfg.tie_word_embeddings = false;
        write_tiny_model(d.path(), &cfg, 3, 1.0, None).unwrap();
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.05,
            targets: targets.iter().map(|s| s.to_string()).collect(),
        };
        let m = CausalLm::load(d.path(), Some(&lora), &mut Rng::new(1), &Device::Cpu).unwrap();
        let mut rng = Rng::new(9);
        for (name, v) in m.lora_vars() {
            if name.contains("lora_B") {
                v.set(
                    &Tensor::from_vec(
                        rng.uniform_vec(v.elem_count(), -0.2, 0.2),
                        v.shape(),
                        &Device::Cpu,
                    )
                    .unwrap(),
                )
                .unwrap();
            }
        }
        (d, m, lora)
    }

    #[test]
    fn adapter_has_peft_names_shapes_and_config() {
        let (_d, m, lora) = setup(&crate::lora::ALL_TARGETS);
        let out = tempfile::tempdir().unwrap();
        export_adapter(&m, out.path(), "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        let bytes = std::fs::read(out.path().join("adapter_model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let c = &m.cfg;
        assert_eq!(st.names().len(), c.num_hidden_layers * 7 * 2);
        for i in 0..c.num_hidden_layers {
            for (group, name) in [
                ("self_attn", "q_proj"),
                ("self_attn", "k_proj"),
                ("self_attn", "v_proj"),
                ("self_attn", "o_proj"),
                ("mlp", "gate_proj"),
                ("mlp", "up_proj"),
                ("mlp", "down_proj"),
            ] {
                let (o, inp) = c.proj_shape(name).unwrap();
                let a = st
                    .tensor(&format!(
                        "base_model.model.model.layers.{i}.{group}.{name}.lora_A.weight"
                    ))
                    .unwrap();
                let b = st
                    .tensor(&format!(
                        "base_model.model.model.layers.{i}.{group}.{name}.lora_B.weight"
                    ))
                    .unwrap();
                assert_eq!(a.shape(), &[lora.rank, inp], "{name} A");
                assert_eq!(b.shape(), &[o, lora.rank], "{name} B");
                assert_eq!(a.dtype(), Dtype::F32);
            }
        }
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["task_type"], "CAUSAL_LM");
        assert_eq!(cfg["r"], 4);
        assert_eq!(cfg["lora_alpha"], 8.0);
        assert_eq!(cfg["bias"], "none");
        assert_eq!(cfg["fan_in_fan_out"], false);
        assert_eq!(
            cfg["base_model_name_or_path"],
            "HuggingFaceTB/SmolLM2-135M-Instruct"
        );
        assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 7);
        // The values round-trip.
        let (name, v) = &m.lora_vars()[0];
        let back = candle_core::safetensors::load(
            out.path().join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(max_diff(&back[name], v.as_tensor()), 0.0);
    }

    #[test]
    fn merged_model_matches_lora_forward() {
        let (d, m, _) = setup(&["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]);
        let out = tempfile::tempdir().unwrap();
        export_merged(&m, d.path(), out.path()).unwrap();
        assert!(out.path().join("config.json").exists());
        let merged = CausalLm::load(out.path(), None, &mut Rng::new(0), &Device::Cpu).unwrap();
        let rows = vec![(0..9u32)
            .map(|i| Some((i * 7 + 3) % 101))
            .collect::<Vec<_>>()];
        let batch = PaddedBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
        let want = m.forward_batch(&batch, &ForwardCtx::eval()).unwrap();
        let got = merged.forward_batch(&batch, &ForwardCtx::eval()).unwrap();
        assert!(max_diff(&want, &got) < 1e-4, "{}", max_diff(&want, &got));
        let base = m.forward_batch(&batch, &ForwardCtx::base()).unwrap();
        assert!(max_diff(&base, &got) > 1e-3, "merge must change the model");
        // Untouched tensors are byte-identical; adapted ones changed.
        let a = candle_core::safetensors::load(d.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
        let b = candle_core::safetensors::load(out.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
        assert_eq!(a.len(), b.len());
        for k in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.1.self_attn.q_proj.bias",
        ] {
            assert_eq!(max_diff(&a[k], &b[k]), 0.0, "{k}");
        }
        assert!(
            max_diff(
                &a["model.layers.1.mlp.up_proj.weight"],
                &b["model.layers.1.mlp.up_proj.weight"]
            ) > 0.0
        );
    }
}
