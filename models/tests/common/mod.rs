//! Shared test helpers.

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, path::Path};

use candle_core::{DType, Device, Tensor, D};
use serde_json::Value;

/// A plain F32 llama/qwen2 forward pass over an HF-style directory (HF layout: rotate_half
/// rope; q/k/v biases when present), no KV cache: test code only, to check converted weights.
pub struct RefModel {
    w: HashMap<String, Tensor>,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    theta: f64,
}

impl RefModel {
    pub fn load(dir: &Path) -> RefModel {
        let c: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let hidden = c["hidden_size"].as_u64().unwrap() as usize;
        let heads = c["num_attention_heads"].as_u64().unwrap() as usize;
        RefModel {
            w: candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap(),
            layers: c["num_hidden_layers"].as_u64().unwrap() as usize,
            heads,
            kv_heads: c["num_key_value_heads"].as_u64().unwrap() as usize,
            head_dim: hidden / heads,
            eps: c["rms_norm_eps"].as_f64().unwrap(),
            theta: c["rope_theta"].as_f64().unwrap(),
        }
    }

    fn w(&self, name: &str) -> &Tensor {
        self.w.get(name).unwrap_or_else(|| panic!("missing {name}"))
    }

    /// `x @ W^T (+ b)`, the bias taken from `<name>.bias` when the directory has one.
    fn linear(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.w(&format!("{name}.weight")).t()?)?;
        match self.w.get(&format!("{name}.bias")) {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn rms_norm(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(self.w(name))
    }

    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
    }

    /// Logits of the last position.
    pub fn forward(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let dev = Device::Cpu;
        let t = ids.len();
        let (hd, nh, nkv) = (self.head_dim, self.heads, self.kv_heads);
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| (1.0 / self.theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, hd / 2), &dev)?;
        let pos = Tensor::arange(0u32, t as u32, &dev)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let angles = pos.broadcast_mul(&inv_freq)?;
        let angles = Tensor::cat(&[&angles, &angles], 1)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev)?;

        let ids_t = Tensor::new(ids, &dev)?;
        let mut x = self
            .w("model.embed_tokens.weight")
            .index_select(&ids_t, 0)?;
        for l in 0..self.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let h = self.rms_norm(&x, &p("input_layernorm.weight"))?;
            let heads = |name: &str, n: usize| -> candle_core::Result<Tensor> {
                self.linear(&h, &p(name))?
                    .reshape((t, n, hd))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let q = Self::rope(&heads("self_attn.q_proj", nh)?, &cos, &sin)?;
            let k = Self::rope(&heads("self_attn.k_proj", nkv)?, &cos, &sin)?;
            let v = heads("self_attn.v_proj", nkv)?;
            let rep = |x: Tensor| -> candle_core::Result<Tensor> {
                x.unsqueeze(1)?
                    .broadcast_as((nkv, nh / nkv, t, hd))?
                    .contiguous()?
                    .reshape((nh, t, hd))
            };
            let (k, v) = (rep(k)?, rep(v)?);
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let max = att.max_keepdim(D::Minus1)?;
            let e = att.broadcast_sub(&max)?.exp()?;
            let att = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let o = att
                .matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((t, nh * hd))?;
            x = (x + self.linear(&o, &p("self_attn.o_proj"))?)?;
            let h = self.rms_norm(&x, &p("post_attention_layernorm.weight"))?;
            let gate = self.linear(&h, &p("mlp.gate_proj"))?.silu()?;
            let up = self.linear(&h, &p("mlp.up_proj"))?;
            x = (x + self.linear(&(gate * up)?, &p("mlp.down_proj"))?)?;
        }
        let x = self
            .rms_norm(&x, "model.norm.weight")?
            .narrow(0, t - 1, 1)?;
        let head = self
            .w
            .get("lm_head.weight")
            .unwrap_or(self.w("model.embed_tokens.weight"));
        x.matmul(&head.t()?)?.squeeze(0)
    }

    /// Greedy decoding of up to `max_new` tokens after `prompt`, stopping at `stop`.
    pub fn greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Vec<u32> {
        let mut ids = prompt.to_vec();
        for _ in 0..max_new {
            let logits = self.forward(&ids).unwrap();
            let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            if stop.contains(&next) {
                break;
            }
            ids.push(next);
        }
        ids.split_off(prompt.len())
    }
}
