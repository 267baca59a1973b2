//! LoRA adapters on frozen linear layers.
//!
//! `y = x W^T + b + scale * dropout(x) A^T B^T`, `scale = alpha / rank`. `A` starts
//! like PEFT (kaiming-uniform, bound `1/sqrt(in)`) and `B` at zero, so an untrained
//! adapter is the identity on the base model. The KL reference policy is the same
//! model run with LoRA switched off ([`ForwardCtx::lora`] = false), so no second
//! copy of the weights is kept.
//!
//! Trainable variables live in a [`candle_nn::VarMap`] under their PEFT names
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, ...), which
//! is exactly what `adapter_model.safetensors` needs.

use std::cell::RefCell;

use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{ops::frozen_linear, rng::Rng};

/// The projections LoRA may target, with the HF sub-module that holds them.
pub const ALL_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// `self_attn` or `mlp`: the HF parent module of a projection.
pub fn module_group(target: &str) -> &'static str {
    match target {
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => "self_attn",
    }
}

/// PEFT tensor name, e.g. `base_model.model.model.layers.3.mlp.up_proj.lora_B.weight`.
pub fn peft_name(layer: usize, target: &str, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{target}.lora_{which}.weight",
        module_group(target)
    )
}

/// LoRA hyper-parameters (PEFT `LoraConfig` subset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout probability on the LoRA input path (training forward only).
    pub dropout: f32,
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: ALL_TARGETS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.rank > 0, "LoRA rank must be > 0");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "LoRA dropout must be in [0, 1)"
        );
        for t in &self.targets {
            anyhow::ensure!(
                ALL_TARGETS.contains(&t.as_str()),
                "unknown LoRA target {t:?}"
            );
        }
        Ok(())
    }

    pub fn targets(&self, module: &str) -> bool {
        self.targets.iter().any(|t| t == module)
    }
}

/// Per-forward switches shared by every layer.
pub struct ForwardCtx {
    /// Apply the LoRA deltas (false gives the frozen base model = KL reference).
    pub lora: bool,
    /// When set (and dropout > 0), sample dropout masks from this RNG: training mode.
    pub dropout_rng: Option<RefCell<Rng>>,
}

impl ForwardCtx {
    /// Inference with adapters on, no dropout.
    pub fn eval() -> Self {
        Self {
            lora: true,
            dropout_rng: None,
        }
    }
    /// Frozen base model (adapters off).
    pub fn base() -> Self {
        Self {
            lora: false,
            dropout_rng: None,
        }
    }
    /// Training forward: adapters on, dropout drawn from `rng`.
    pub fn train(rng: Rng) -> Self {
        Self {
            lora: true,
            dropout_rng: Some(RefCell::new(rng)),
        }
    }
}

/// The trainable pair of one adapted projection.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// [rank, in]
    pub a: Var,
    /// [out, rank]
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

/// A frozen projection with an optional LoRA adapter.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// [out, in], frozen.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraAdapter>,
}

impl LoraLinear {
    /// Wraps `weight`; when `cfg` targets it, creates `A`/`B` under their PEFT names in `varmap`.
    /// `A` ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a=sqrt 5)), `B` = 0.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        adapter: Option<(&LoraConfig, String, String)>,
        varmap: &candle_nn::VarMap,
        rng: &mut Rng,
    ) -> Result<Self> {
        let lora = match adapter {
            None => None,
            Some((cfg, name_a, name_b)) => {
                let (out, inp) = weight.dims2()?;
                let bound = 1.0 / (inp as f32).sqrt();
                let dev = weight.device();
                let a = Var::from_vec(
                    rng.uniform_vec(cfg.rank * inp, -bound, bound),
                    (cfg.rank, inp),
                    dev,
                )?;
                let b = Var::zeros((out, cfg.rank), DType::F32, dev)?;
                let mut data = varmap
                    .data()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                data.insert(name_a, a.clone());
                data.insert(name_b, b.clone());
                Some(LoraAdapter {
                    a,
                    b,
                    scale: cfg.scale(),
                    dropout: cfg.dropout,
                })
            }
        };
        Ok(Self { weight, bias, lora })
    }

    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let y = frozen_linear(x, &self.weight, self.bias.as_ref())?;
        let l = match (&self.lora, ctx.lora) {
            (Some(l), true) => l,
            _ => return Ok(y),
        };
        let xin = match &ctx.dropout_rng {
            Some(rng) if l.dropout > 0.0 => {
                let keep = 1.0 - l.dropout;
                let mut rng = rng.borrow_mut();
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| {
                        if rng.next_f32() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                (x * Tensor::from_vec(mask, x.shape(), x.device())?)?
            }
            _ => x.clone(),
        };
        // 2-D matmuls against the transposed (strided) factors: a 3-D `broadcast_matmul`
        // would materialise A^T and B^T once per batch row on every call.
        let in_dim = x.dims().last().copied().unwrap_or(1);
        let x2 = xin.reshape(((), in_dim))?;
        let h = x2.matmul(&l.a.as_tensor().t()?)?;
        let d = h.matmul(&l.b.as_tensor().t()?)?;
        let shape = y.shape().clone();
        y + (d * l.scale)?.reshape(shape)?
    }

    /// `W + scale * B A` (the weight a merged model stores).
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.lora {
            None => Ok(self.weight.clone()),
            Some(l) => self
                .weight
                .add(&(l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?),
        }
    }
}
