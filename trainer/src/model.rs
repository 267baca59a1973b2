//! Differentiable Llama / Qwen2 causal LM with LoRA, plus a KV-cache decoder.
//!
//! One forward serves training (batched, padded, with gradients into the LoRA
//! vars only) and sampling (incremental with a KV cache, same ops). Base weights
//! are frozen plain tensors loaded from `model.safetensors` (F32); grouped-query
//! attention reshapes queries to `[B, kv_heads, n_rep*T, D]` instead of copying
//! keys/values `n_rep` times.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use crate::{
    config::ModelConfig,
    lora::{peft_name, ForwardCtx, LoraConfig, LoraLinear},
    ops::{apply_rope, causal_mask, frozen_linear, rms_norm, silu, softmax_last_dim, RopeTables},
    rng::Rng,
};

/// One decoder block.
#[derive(Debug, Clone)]
pub struct Layer {
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub o_proj: LoraLinear,
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
    pub input_layernorm: Tensor,
    pub post_attention_layernorm: Tensor,
}

impl Layer {
    /// The projection called `name` (`q_proj`, ..., `down_proj`).
    pub fn proj(&self, name: &str) -> Option<&LoraLinear> {
        Some(match name {
            "q_proj" => &self.q_proj,
            "k_proj" => &self.k_proj,
            "v_proj" => &self.v_proj,
            "o_proj" => &self.o_proj,
            "gate_proj" => &self.gate_proj,
            "up_proj" => &self.up_proj,
            "down_proj" => &self.down_proj,
            _ => return None,
        })
    }
}

/// Per-layer key/value cache for incremental decoding: `[B, kv_heads, S, D]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub kv: Vec<Option<(Tensor, Tensor)>>,
    /// Number of cached positions.
    pub len: usize,
}

impl KvCache {
    /// Repeats a batch-1 cache `n` times along the batch dim (one prompt, G samples).
    pub fn expand(&self, n: usize) -> Result<KvCache> {
        let kv = self
            .kv
            .iter()
            .map(|e| {
                e.as_ref()
                    .map(|(k, v)| -> Result<(Tensor, Tensor)> {
                        let (_, h, s, d) = k.dims4()?;
                        Ok((
                            k.broadcast_as((n, h, s, d))?.contiguous()?,
                            v.broadcast_as((n, h, s, d))?.contiguous()?,
                        ))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache { kv, len: self.len })
    }

    /// Keeps only the batch rows in `rows` (drops finished samples).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        let dev = match self.kv.iter().flatten().next() {
            Some((k, _)) => k.device().clone(),
            None => return Ok(()),
        };
        let idx = Tensor::new(rows, &dev)?;
        for (k, v) in self.kv.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

/// A padded batch ready for the training forward.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// [B, T] token ids (pads replaced by `pad_id`).
    pub ids: Tensor,
    /// [B, T] RoPE positions (count of real tokens before each column).
    pub positions: Tensor,
    /// [B, T] 1 for real tokens, 0 for padding.
    pub valid: Vec<Vec<u8>>,
}

impl PaddedBatch {
    /// Builds a batch from rows of optional tokens (`None` = padding, anywhere in the row).
    pub fn from_rows(rows: &[Vec<Option<u32>>], pad_id: u32, dev: &Device) -> Result<Self> {
        let b = rows.len();
        let t = rows.first().map(|r| r.len()).unwrap_or(0);
        let mut ids = Vec::with_capacity(b * t);
        let mut pos = Vec::with_capacity(b * t);
        let mut valid = Vec::with_capacity(b);
        for r in rows {
            if r.len() != t {
                candle_core::bail!("PaddedBatch: rows of unequal length");
            }
            let mut p = 0u32;
            let mut vrow = Vec::with_capacity(t);
            for tok in r {
                ids.push(tok.unwrap_or(pad_id));
                pos.push(if tok.is_some() { p } else { 0 });
                if tok.is_some() {
                    p += 1;
                }
                vrow.push(tok.is_some() as u8);
            }
            valid.push(vrow);
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, t), dev)?,
            positions: Tensor::from_vec(pos, (b, t), dev)?,
            valid,
        })
    }
}

/// A decoder-only LM: frozen base weights + LoRA variables.
pub struct CausalLm {
    pub cfg: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// [V, H]; the embedding when `tie_word_embeddings`.
    pub lm_head: Tensor,
    pub rope: RopeTables,
    pub lora_cfg: Option<LoraConfig>,
    /// Trainable LoRA variables keyed by PEFT name (empty without LoRA).
    pub varmap: VarMap,
    pub device: Device,
}

impl CausalLm {
    /// Loads `config.json` + `model.safetensors` (mmap) from an HF model directory.
    pub fn load(
        dir: impl AsRef<Path>,
        lora: Option<&LoraConfig>,
        rng: &mut Rng,
        dev: &Device,
    ) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        let cfg = ModelConfig::from_file(dir.join("config.json"))?;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading model dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        anyhow::ensure!(!files.is_empty(), "no *.safetensors in {}", dir.display());
        // SAFETY: the weight files are not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, dev)? };
        Self::from_varbuilder(cfg, vb, lora, rng)
    }

    /// Builds the model from HF-named tensors in `vb`; LoRA vars (if any) are created with `rng`.
    pub fn from_varbuilder(
        cfg: ModelConfig,
        vb: VarBuilder,
        lora: Option<&LoraConfig>,
        rng: &mut Rng,
    ) -> anyhow::Result<Self> {
        if let Some(l) = lora {
            l.validate()?;
        }
        let dev = vb.device().clone();
        let varmap = VarMap::new();
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = vb.get((v, h), "model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("model.layers.{i}");
            let mut mk = |group: &str, name: &str, bias: bool| -> anyhow::Result<LoraLinear> {
                let (out, inp) = cfg
                    .proj_shape(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown projection {name}"))?;
                let w = vb.get((out, inp), &format!("{lp}.{group}.{name}.weight"))?;
                let b = if bias {
                    Some(vb.get(out, &format!("{lp}.{group}.{name}.bias"))?)
                } else {
                    None
                };
                let adapter = lora
                    .filter(|l| l.targets(name))
                    .map(|l| (l, peft_name(i, name, 'A'), peft_name(i, name, 'B')));
                Ok(LoraLinear::new(w, b, adapter, &varmap, rng)?)
            };
            let ab = cfg.attention_bias;
            layers.push(Layer {
                q_proj: mk("self_attn", "q_proj", ab)?,
                k_proj: mk("self_attn", "k_proj", ab)?,
                v_proj: mk("self_attn", "v_proj", ab)?,
                o_proj: mk("self_attn", "o_proj", false)?,
                gate_proj: mk("mlp", "gate_proj", false)?,
                up_proj: mk("mlp", "up_proj", false)?,
                down_proj: mk("mlp", "down_proj", false)?,
                input_layernorm: vb.get(h, &format!("{lp}.input_layernorm.weight"))?,
                post_attention_layernorm: vb
                    .get(h, &format!("{lp}.post_attention_layernorm.weight"))?,
            });
        }
        let norm = vb.get(h, "model.norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings || !vb.contains_tensor("lm_head.weight") {
            embed_tokens.clone()
        } else {
            vb.get((v, h), "lm_head.weight")?
        };
        let rope = RopeTables::new(
            cfg.head_dim,
            cfg.max_position_embeddings.min(32768),
            cfg.rope_theta,
            &dev,
        )?;
        Ok(Self {
            cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            lora_cfg: lora.cloned(),
            varmap,
            device: dev,
        })
    }

    /// The LoRA variables sorted by name (a stable order for the optimizer and checkpoints).
    pub fn lora_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self
            .varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let q = l
            .q_proj
            .forward(x, ctx)?
            .reshape((b, t, nh, hd))?
            .transpose(1, 2)?;
        let k = l
            .k_proj
            .forward(x, ctx)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let v = l
            .v_proj
            .forward(x, ctx)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let q = apply_rope(&q, cos, sin)?;
        let k = apply_rope(&k, cos, sin)?;
        let v = v.contiguous()?;
        let (k, v) = match cache {
            None => (k, v),
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                // The cache serves decoding only (training runs
                // `forward_shared_prefix`), so it holds no graph: with LoRA vars
                // every op is tracked, and each step's `cat` would keep all
                // earlier steps' caches alive (tool_call rollouts, 8 x 64 tokens
                // after a 400-token prompt: ~9 GB).
                *slot = Some((k.detach(), v.detach()));
                (k, v)
            }
        };
        let o = self.attend(&q, &k, &v, mask)?;
        l.o_proj.forward(&o, ctx)
    }

    /// Scaled dot-product attention. `q` [B, nh, T, D] (roped), `k`/`v` [B, nkv, S, D],
    /// `mask` additive [B, 1, 1, T, S]. Returns [B, T, nh*D].
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let (b, _, t, _) = q.dims4()?;
        let s = k.dim(2)?;
        let n_rep = nh / nkv;
        // GQA: query head h uses kv head h / n_rep, so heads are kv-major.
        let q = q.contiguous()?.reshape((b, nkv, n_rep * t, hd))?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let scores = scores.reshape((b, nkv, n_rep, t, s))?.broadcast_add(mask)?;
        let p = softmax_last_dim(&scores)?.reshape((b, nkv, n_rep * t, s))?;
        p.matmul(&v.contiguous()?)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))
    }

    /// Training forward for G continuations of one shared prompt, running the prompt
    /// once instead of G times (the projections see `P + G*S` tokens, not `G*(P+S)`).
    ///
    /// `prompt`: P tokens; `suffix`: G rows of S tokens (right-padded; `suffix_valid`
    /// marks real ones) that follow the prompt. Returns the final-normed hidden state of
    /// the last prompt position [1, H] and of every suffix position [G, S, H].
    /// Gradients flow through the prompt's keys/values from every row (the broadcast's
    /// backward sums them), so this equals G separate forwards.
    pub fn forward_shared_prefix(
        &self,
        prompt: &[u32],
        suffix: &[Vec<u32>],
        suffix_valid: &[Vec<u8>],
        ctx: &ForwardCtx,
    ) -> Result<(Tensor, Tensor)> {
        let c = &self.cfg;
        let dev = &self.device;
        let (nh, nkv, hd, hsz) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.hidden_size,
        );
        let p = prompt.len();
        let g = suffix.len();
        let s = suffix.first().map(|r| r.len()).unwrap_or(0);
        if p == 0 || suffix.iter().any(|r| r.len() != s) || suffix_valid.len() != g {
            candle_core::bail!("forward_shared_prefix: empty prompt or ragged suffix rows");
        }
        let ns = g * s;
        let mut ids: Vec<u32> = prompt.to_vec();
        for r in suffix {
            ids.extend_from_slice(r);
        }
        let n = ids.len();
        // Flat token matrix [N, H]: every projection runs once over all tokens.
        let mut x = self
            .embed_tokens
            .index_select(&Tensor::from_vec(ids, n, dev)?, 0)?;
        let pos_p = Tensor::from_vec((0..p as u32).collect::<Vec<_>>(), (1, p), dev)?;
        let (cos_p, sin_p) = self.rope.gather(&pos_p)?;
        let pos_s = Tensor::from_vec((p as u32..(p + s) as u32).collect::<Vec<_>>(), (1, s), dev)?;
        let (cos_s, sin_s) = self.rope.gather(&pos_s)?;
        let mask_p = Tensor::from_vec(causal_mask(&[vec![1u8; p]], 0, p)?, (1, 1, 1, p, p), dev)?;
        // Suffix queries see the whole prompt plus earlier real suffix tokens.
        let rows: Vec<Vec<u8>> = suffix_valid
            .iter()
            .map(|v| [vec![1u8; p], v.clone()].concat())
            .collect();
        let mask_s = Tensor::from_vec(causal_mask(&rows, p, s)?, (g, 1, 1, s, p + s), dev)?;
        let eps = c.rms_norm_eps;
        for l in &self.layers {
            let h = rms_norm(&x, &l.input_layernorm, eps)?;
            let q = l.q_proj.forward(&h, ctx)?;
            let k = l.k_proj.forward(&h, ctx)?;
            let v = l.v_proj.forward(&h, ctx)?;
            let split = |t: &Tensor, heads: usize| -> Result<(Tensor, Tensor)> {
                let tp = t
                    .narrow(0, 0, p)?
                    .reshape((1, p, heads, hd))?
                    .transpose(1, 2)?;
                let ts = t
                    .narrow(0, p, ns)?
                    .reshape((g, s, heads, hd))?
                    .transpose(1, 2)?;
                Ok((tp, ts))
            };
            let (qp, qs) = split(&q, nh)?;
            let (kp, ks) = split(&k, nkv)?;
            let (vp, vs) = split(&v, nkv)?;
            let (qp, kp) = (
                apply_rope(&qp, &cos_p, &sin_p)?,
                apply_rope(&kp, &cos_p, &sin_p)?,
            );
            let op = self.attend(&qp, &kp, &vp, &mask_p)?.reshape((p, nh * hd))?;
            let o = if s > 0 {
                let (qs, ks) = (
                    apply_rope(&qs, &cos_s, &sin_s)?,
                    apply_rope(&ks, &cos_s, &sin_s)?,
                );
                // Contiguous inputs: candle's `cat` on a non-zero dim otherwise returns a
                // transposed view whose layout its matmul backward rejects.
                let kall = Tensor::cat(
                    &[
                        &kp.broadcast_as((g, nkv, p, hd))?.contiguous()?,
                        &ks.contiguous()?,
                    ],
                    2,
                )?;
                let vall = Tensor::cat(
                    &[
                        &vp.broadcast_as((g, nkv, p, hd))?.contiguous()?,
                        &vs.contiguous()?,
                    ],
                    2,
                )?;
                let os = self
                    .attend(&qs, &kall, &vall, &mask_s)?
                    .reshape((ns, nh * hd))?;
                Tensor::cat(&[&op, &os], 0)?
            } else {
                op
            };
            x = (x + l.o_proj.forward(&o, ctx)?)?;
            let h = rms_norm(&x, &l.post_attention_layernorm, eps)?;
            x = (x + self.mlp(l, &h, ctx)?)?;
        }
        let x = rms_norm(&x, &self.norm, eps)?;
        let last = x.narrow(0, p - 1, 1)?;
        let sx = x.narrow(0, p, ns)?.reshape((g, s, hsz))?;
        Ok((last, sx))
    }

    fn mlp(&self, l: &Layer, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let g = silu(&l.gate_proj.forward(x, ctx)?)?;
        let u = l.up_proj.forward(x, ctx)?;
        l.down_proj.forward(&(g * u)?, ctx)
    }

    /// Runs the decoder over `ids` [B, T] and returns the final-normed hidden states [B, T, H].
    /// `mask` is additive, [B, 1, T, S] with S = cached + T; `cache` enables incremental decoding.
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let (cos, sin) = self.rope.gather(positions)?;
        let s = mask.dim(D::Minus1)?;
        let mask = mask.reshape((b, 1, 1, t, s))?;
        let mut x = self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        if let Some(c) = cache.as_deref_mut() {
            if c.kv.len() != self.layers.len() {
                c.kv = vec![None; self.layers.len()];
            }
        }
        let eps = self.cfg.rms_norm_eps;
        for (i, l) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.kv[i]);
            let h = rms_norm(&x, &l.input_layernorm, eps)?;
            x = (x + self.attention(l, &h, &cos, &sin, &mask, slot, ctx)?)?;
            let h = rms_norm(&x, &l.post_attention_layernorm, eps)?;
            x = (x + self.mlp(l, &h, ctx)?)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        rms_norm(&x, &self.norm, eps)
    }

    /// Logits for hidden states [..., H] -> [..., V].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        frozen_linear(hidden, &self.lm_head, None)
    }

    /// Full forward of a padded batch: logits [B, T, V].
    pub fn forward_batch(&self, batch: &PaddedBatch, ctx: &ForwardCtx) -> Result<Tensor> {
        let (b, t) = batch.ids.dims2()?;
        let mask = Tensor::from_vec(causal_mask(&batch.valid, 0, t)?, (b, 1, t, t), &self.device)?;
        let h = self.forward_hidden(&batch.ids, &batch.positions, &mask, None, ctx)?;
        self.logits(&h)
    }

    /// Incremental step for unpadded rows that all sit at `cache.len`: feeds `ids` [B, t]
    /// and returns the logits of the last fed position, [B, V].
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let past = cache.len;
        let pos: Vec<u32> = (0..b)
            .flat_map(|_| (past..past + t).map(|p| p as u32))
            .collect();
        let positions = Tensor::from_vec(pos, (b, t), &self.device)?;
        let valid = vec![vec![1u8; past + t]; b];
        let mask = Tensor::from_vec(
            causal_mask(&valid, past, t)?,
            (b, 1, t, past + t),
            &self.device,
        )?;
        let h = self.forward_hidden(ids, &positions, &mask, Some(cache), ctx)?;
        self.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// Greedy decoding of one prompt (for tests and smoke checks).
    pub fn greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        ctx: &ForwardCtx,
    ) -> Result<Vec<u32>> {
        let mut cache = KvCache::default();
        let mut logits = self.forward_cached(
            &Tensor::new(prompt, &self.device)?.unsqueeze(0)?,
            &mut cache,
            ctx,
        )?;
        let mut out = Vec::new();
        for _ in 0..max_new {
            let next = logits.argmax(D::Minus1)?.to_vec1::<u32>()?[0];
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            logits =
                self.forward_cached(&Tensor::new(&[[next]], &self.device)?, &mut cache, ctx)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        config::Arch,
        testing::{random_weights, tiny_config},
    };

    /// Tiny model from in-memory random weights; with `lora`, B is randomised so
    /// the adapters actually change the output (B = 0 would make them no-ops).
    pub(crate) fn tiny(arch: Arch, lora: Option<&LoraConfig>, seed: u64) -> CausalLm {
        let cfg = tiny_config(arch, 97);
        let w = random_weights(&cfg, seed, 1.0, 1.0).unwrap();
        let vb = VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
        let m = CausalLm::from_varbuilder(cfg, vb, lora, &mut Rng::new(seed + 1)).unwrap();
        let mut rng = Rng::new(seed + 2);
        for (name, var) in m.lora_vars() {
            if name.contains("lora_B") {
                let n = var.elem_count();
                let t = Tensor::from_vec(rng.uniform_vec(n, -0.1, 0.1), var.shape(), &Device::Cpu)
                    .unwrap();
                var.set(&t).unwrap();
            }
        }
        m
    }

    pub(crate) use crate::testing::max_diff;

    fn ids(n: usize, seed: u64) -> Vec<u32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| (r.next_u64() % 97) as u32).collect()
    }

    #[test]
    fn kv_cache_matches_full_forward() {
        for arch in [Arch::Llama, Arch::Qwen2] {
            let m = tiny(
                arch,
                Some(&LoraConfig {
                    rank: 4,
                    ..Default::default()
                }),
                3,
            );
            let toks = ids(11, 5);
            let rows = vec![toks.iter().map(|&t| Some(t)).collect::<Vec<_>>()];
            let batch = PaddedBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
            let full = m
                .forward_batch(&batch, &ForwardCtx::eval())
                .unwrap()
                .squeeze(0)
                .unwrap();
            let mut cache = KvCache::default();
            let prefill = 4;
            let l = m
                .forward_cached(
                    &Tensor::new(&toks[..prefill], &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                    &mut cache,
                    &ForwardCtx::eval(),
                )
                .unwrap();
            let mut worst = max_diff(&l.squeeze(0).unwrap(), &full.get(prefill - 1).unwrap());
            for (i, &t) in toks.iter().enumerate().skip(prefill) {
                let l = m
                    .forward_cached(
                        &Tensor::new(&[[t]], &Device::Cpu).unwrap(),
                        &mut cache,
                        &ForwardCtx::eval(),
                    )
                    .unwrap();
                worst = worst.max(max_diff(&l.squeeze(0).unwrap(), &full.get(i).unwrap()));
            }
            assert!(worst < 1e-4, "{arch:?}: kv-cache logits differ by {worst}");
            // A cache that kept its graph would hold every decoding step alive.
            assert!(
                cache
                    .kv
                    .iter()
                    .flatten()
                    .all(|(k, v)| !k.track_op() && !v.track_op()),
                "{arch:?}: the kv cache holds autograd history"
            );
        }
    }

    #[test]
    fn padding_does_not_change_logits() {
        let m = tiny(
            Arch::Llama,
            Some(&LoraConfig {
                rank: 4,
                ..Default::default()
            }),
            4,
        );
        let a = ids(6, 1);
        let b = ids(9, 2);
        // Row 0 is left-padded by 2 and right-padded by 1; row 1 is full.
        let mut r0: Vec<Option<u32>> = vec![None, None];
        r0.extend(a.iter().map(|&t| Some(t)));
        r0.push(None);
        let r1: Vec<Option<u32>> = b.iter().map(|&t| Some(t)).collect();
        let batch = PaddedBatch::from_rows(&[r0, r1], 0, &Device::Cpu).unwrap();
        let both = m.forward_batch(&batch, &ForwardCtx::eval()).unwrap();
        for (row, toks, off) in [(0usize, &a, 2usize), (1, &b, 0)] {
            let single =
                PaddedBatch::from_rows(&[toks.iter().map(|&t| Some(t)).collect()], 0, &Device::Cpu)
                    .unwrap();
            let s = m
                .forward_batch(&single, &ForwardCtx::eval())
                .unwrap()
                .squeeze(0)
                .unwrap();
            let p = both.get(row).unwrap().narrow(0, off, toks.len()).unwrap();
            assert!(max_diff(&s, &p) < 1e-4, "row {row}: {}", max_diff(&s, &p));
        }
    }

    #[test]
    fn lora_off_equals_base_exactly() {
        let lora = LoraConfig {
            rank: 4,
            ..Default::default()
        };
        let with = tiny(Arch::Qwen2, Some(&lora), 9);
        let base = tiny(Arch::Qwen2, None, 9);
        let rows = vec![ids(7, 3).into_iter().map(Some).collect::<Vec<_>>()];
        let batch = PaddedBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
        let off = with.forward_batch(&batch, &ForwardCtx::base()).unwrap();
        let b = base.forward_batch(&batch, &ForwardCtx::eval()).unwrap();
        assert_eq!(
            off.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let on = with.forward_batch(&batch, &ForwardCtx::eval()).unwrap();
        assert!(max_diff(&on, &b) > 1e-3, "LoRA on must change the logits");
    }

    #[test]
    fn every_lora_param_gets_gradient() {
        // B is random here (see `tiny`): with PEFT's B = 0 init, dL/dA = (dL/dh) B scale = 0,
        // so A would legitimately get a zero gradient on the first step.
        let lora = LoraConfig {
            rank: 4,
            dropout: 0.1,
            ..Default::default()
        };
        let m = tiny(Arch::Llama, Some(&lora), 11);
        let rows = vec![
            ids(8, 4).into_iter().map(Some).collect::<Vec<_>>(),
            ids(8, 5).into_iter().map(Some).collect(),
        ];
        let batch = PaddedBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
        let logits = m
            .forward_batch(&batch, &ForwardCtx::train(Rng::new(1)))
            .unwrap();
        let lp = crate::ops::log_softmax_last_dim(&logits).unwrap();
        let loss = lp.narrow(2, 5, 1).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = m.lora_vars();
        assert_eq!(vars.len(), 2 * 7 * 2);
        for (name, v) in vars {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0 && n.is_finite(), "{name}: gradient norm {n}");
        }
        // Base weights are frozen: no gradient recorded for them.
        assert!(grads.get(&m.layers[0].q_proj.weight).is_none());
        assert!(grads.get(&m.lm_head).is_none());
    }

    /// The shared-prompt training forward equals the padded batch forward, in values
    /// and in LoRA gradients.
    #[test]
    fn shared_prefix_matches_padded_batch() {
        let m = tiny(
            Arch::Qwen2,
            Some(&LoraConfig {
                rank: 4,
                ..Default::default()
            }),
            13,
        );
        let prompt = ids(5, 8);
        let suffix = [ids(4, 9), ids(2, 10), ids(4, 11)];
        let s = 4;
        let padded: Vec<Vec<u32>> = suffix
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.resize(s, 0);
                r
            })
            .collect();
        let valid: Vec<Vec<u8>> = suffix
            .iter()
            .map(|r| {
                let mut v = vec![1u8; r.len()];
                v.resize(s, 0);
                v
            })
            .collect();
        let ctx = ForwardCtx::eval();
        let (last, sx) = m
            .forward_shared_prefix(&prompt, &padded, &valid, &ctx)
            .unwrap();
        let rows: Vec<Vec<Option<u32>>> = suffix
            .iter()
            .map(|r| {
                let mut x: Vec<Option<u32>> = prompt.iter().chain(r).map(|&t| Some(t)).collect();
                x.resize(prompt.len() + s, None);
                x
            })
            .collect();
        let batch = PaddedBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
        let (b, t) = batch.ids.dims2().unwrap();
        let mask = Tensor::from_vec(
            causal_mask(&batch.valid, 0, t).unwrap(),
            (b, 1, t, t),
            &Device::Cpu,
        )
        .unwrap();
        let full = m
            .forward_hidden(&batch.ids, &batch.positions, &mask, None, &ctx)
            .unwrap();
        for (i, r) in suffix.iter().enumerate() {
            let want = full
                .get(i)
                .unwrap()
                .narrow(0, prompt.len(), r.len())
                .unwrap();
            let got = sx.get(i).unwrap().narrow(0, 0, r.len()).unwrap();
            assert!(max_diff(&want, &got) < 1e-4, "row {i}");
            let wl = full.get(i).unwrap().get(prompt.len() - 1).unwrap();
            assert!(max_diff(&wl, &last.squeeze(0).unwrap()) < 1e-4);
        }
        // Gradients of a loss over real suffix positions agree.
        let wsel = Tensor::from_vec(
            valid
                .iter()
                .flatten()
                .map(|&v| v as f32)
                .collect::<Vec<_>>(),
            (3, s, 1),
            &Device::Cpu,
        )
        .unwrap();
        let g1 = (sx
            .broadcast_mul(&wsel)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            + last.sum_all().unwrap())
        .unwrap()
        .backward()
        .unwrap();
        let fs = full.narrow(1, prompt.len(), s).unwrap();
        let fl = full.get(0).unwrap().get(prompt.len() - 1).unwrap();
        let g2 = (fs
            .broadcast_mul(&wsel)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            + fl.sum_all().unwrap())
        .unwrap()
        .backward()
        .unwrap();
        for (name, v) in m.lora_vars() {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(1e-3);
            assert!(
                max_diff(a, b) / scale < 1e-3,
                "{name}: {} (scale {scale})",
                max_diff(a, b)
            );
        }
    }
}
