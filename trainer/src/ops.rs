//! Differentiable building blocks for the forward pass.
//!
//! candle 0.10.2's fused kernels (`candle_nn::ops::softmax_last_dim`,
//! `candle_nn::ops::rms_norm`, `candle_nn::rotary_emb::rope*`) have no backward
//! and silently cut the gradient, so everything here is written with primitive
//! tensor ops whose backward candle implements (exp, sum, mul, narrow, cat, ...).
//!
//! [`frozen_linear`] is the exception: a custom op computing `x @ W^T` for a
//! frozen `W` whose backward returns only `dL/dx`. candle's own `Matmul`
//! backward always also computes `dL/dW` (a full extra matmul plus a stored
//! weight-sized gradient) even when `W` is not trainable; skipping it saves a
//! third of the backward work for every base projection and the LM head.

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor,
    D,
};

/// Softmax over the last dimension: `exp(x - max) / sum(exp(x - max))`.
/// The max is detached (softmax is invariant to it) so no gradient flows through it.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension: `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// RMS norm: `x / sqrt(mean(x^2) + eps) * w`, `w` broadcast over the last dim.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(w)
}

/// SiLU; candle's unary `silu` has a backward (checked by a test).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// `rotate_half` of HF Llama: `cat(-x2, x1)` where x1, x2 are the two halves of the last dim.
pub fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Applies rotary embeddings (HF "non-interleaved" layout).
/// `x`: [B, H, T, D]; `cos`/`sin`: [B, 1, T, D] (already gathered for each row's positions).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(cos)? + rotate_half(x)?.broadcast_mul(sin)?
}

/// Precomputed RoPE tables, `[max_pos, head_dim]`, halves duplicated like HF.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTables {
    pub fn new(
        head_dim: usize,
        max_pos: usize,
        theta: f64,
        dev: &candle_core::Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity(max_pos * head_dim);
        let mut sin = Vec::with_capacity(max_pos * head_dim);
        for p in 0..max_pos {
            for _half in 0..2 {
                for f in &inv {
                    let a = p as f64 * f;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_pos, head_dim), dev)?,
            sin: Tensor::from_vec(sin, (max_pos, head_dim), dev)?,
        })
    }

    /// Gathers tables for `positions` ([B, T], u32) into `[B, 1, T, D]` tensors.
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let d = self.cos.dim(1)?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, 1, t, d))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, 1, t, d))?;
        Ok((cos, sin))
    }
}

/// Row count up to which [`FrozenMatmul`] computes `(W x^T)^T` instead of `x W^T`.
const SMALL_M: usize = 64;

/// `x @ W^T` for a frozen weight `W` [out, in]; gradient flows to `x` only.
struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if !layout.is_contiguous() {
            candle_core::bail!("frozen-matmul: input must be contiguous");
        }
        let dims = layout.dims();
        let Some(&k) = dims.last() else {
            candle_core::bail!("frozen-matmul: input has no dimensions");
        };
        let m = layout.shape().elem_count() / k.max(1);
        let (out, inp) = self.w.dims2()?;
        if inp != k {
            candle_core::bail!("frozen-matmul: input width {k} != weight in {inp}");
        }
        let (ws, wl) = self.w.storage_and_layout();
        let ws = match &*ws {
            Storage::Cpu(c) => c,
            _ => candle_core::bail!("frozen-matmul: weight not on cpu"),
        };
        let res = if m <= SMALL_M {
            // Few rows (decoding): `(W x^T)^T` packs the small operand and is ~2x
            // faster in gemm than `x W^T` for m = 8 (measured), then a cheap transpose.
            let xt_l = Layout::new((k, m).into(), vec![1, k], layout.start_offset());
            let yt = ws.matmul(storage, (1, out, m, k), wl, &xt_l)?;
            let yt = yt.as_slice::<f32>()?;
            let mut y = vec![0f32; m * out];
            for (o, col) in yt.chunks_exact(m).enumerate() {
                for (r, &v) in col.iter().enumerate() {
                    y[r * out + o] = v;
                }
            }
            CpuStorage::F32(y)
        } else {
            let x_l = Layout::new((m, k).into(), vec![k, 1], layout.start_offset());
            let wt_l = wl.transpose(0, 1)?;
            storage.matmul(ws, (1, m, out, k), &x_l, &wt_l)?
        };
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok((res, shape.into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (out, inp) = self.w.dims2()?;
        let mut shape = grad.dims().to_vec();
        let m = grad.elem_count() / out;
        if let Some(last) = shape.last_mut() {
            *last = inp;
        }
        let g = grad.contiguous()?.reshape((m, out))?.matmul(&self.w)?;
        Ok(Some(g.reshape(shape)?))
    }
}

/// `x @ W^T (+ b)` where `W` (and `b`) are frozen: no gradient is computed for them.
/// `x`: [..., in]; `w`: [out, in] (contiguous). Falls back to plain matmul off-CPU.
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = if x.device().is_cpu() && w.dtype() == DType::F32 && x.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op1_arc(std::sync::Arc::new(Box::new(FrozenMatmul { w: w.clone() })))?
    } else {
        x.broadcast_matmul(&w.t()?)?
    };
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Additive attention mask `[B, 1, T, S]` for queries at absolute columns
/// `past..past+T` over `S = past+T` keys: 0 where the key is at or before the query
/// and is a real token (`key_valid[b, s] = 1`), `-1e9` elsewhere. A large finite
/// value (not -inf) keeps fully masked pad rows finite (they are never read).
pub fn causal_mask(key_valid: &[Vec<u8>], past: usize, t: usize) -> Result<Vec<f32>> {
    let s = past + t;
    let mut m = Vec::with_capacity(key_valid.len() * t * s);
    for row in key_valid {
        if row.len() != s {
            candle_core::bail!(
                "causal_mask: key row has {} entries, expected {s}",
                row.len()
            );
        }
        for q in 0..t {
            for (k, &valid) in row.iter().enumerate() {
                m.push(if k <= past + q && valid != 0 {
                    0.0
                } else {
                    -1e9
                });
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::testing::max_diff;

    #[test]
    fn softmax_matches_fused() {
        let x = Tensor::randn(0f32, 3.0, (4, 7, 33), &Device::Cpu).unwrap();
        let a = softmax_last_dim(&x).unwrap();
        let b = candle_nn::ops::softmax_last_dim(&x).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let la = log_softmax_last_dim(&x).unwrap();
        let lb = candle_nn::ops::log_softmax(&x, D::Minus1).unwrap();
        assert!(max_diff(&la, &lb) < 1e-5);
    }

    #[test]
    fn rms_norm_matches_fused() {
        let x = Tensor::randn(0f32, 1.0, (3, 5, 64), &Device::Cpu).unwrap();
        let w = Tensor::randn(1f32, 0.1, 64, &Device::Cpu).unwrap();
        let a = rms_norm(&x, &w, 1e-5).unwrap();
        let b = candle_nn::ops::rms_norm(&x, &w, 1e-5).unwrap();
        assert!(max_diff(&a, &b) < 1e-5, "{}", max_diff(&a, &b));
    }

    #[test]
    fn rope_matches_fused() {
        let (b, h, t, d) = (2, 3, 5, 16);
        let x = Tensor::randn(0f32, 1.0, (b, h, t, d), &Device::Cpu).unwrap();
        let tables = RopeTables::new(d, 32, 10000.0, &Device::Cpu).unwrap();
        let pos = Tensor::from_vec(
            (0..(b * t) as u32)
                .map(|i| i % t as u32)
                .collect::<Vec<_>>(),
            (b, t),
            &Device::Cpu,
        )
        .unwrap();
        let (cos, sin) = tables.gather(&pos).unwrap();
        let a = apply_rope(&x, &cos, &sin).unwrap();
        // The fused kernel takes [T, D/2] tables.
        let c = tables
            .cos
            .narrow(0, 0, t)
            .unwrap()
            .narrow(1, 0, d / 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let s = tables
            .sin
            .narrow(0, 0, t)
            .unwrap()
            .narrow(1, 0, d / 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let fused = candle_nn::rotary_emb::rope(&x, &c, &s).unwrap();
        assert!(max_diff(&a, &fused) < 1e-5, "{}", max_diff(&a, &fused));
    }

    /// The fused ops really have no gradient in this candle, and ours do.
    #[test]
    fn primitives_have_gradients() {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 8), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::ones(8, DType::F32, &Device::Cpu).unwrap();
        let wsel = Tensor::randn(0f32, 1.0, (2, 8), &Device::Cpu).unwrap();
        for (name, y) in [
            ("softmax", softmax_last_dim(x.as_tensor()).unwrap()),
            ("log_softmax", log_softmax_last_dim(x.as_tensor()).unwrap()),
            ("rms_norm", rms_norm(x.as_tensor(), &w, 1e-5).unwrap()),
            ("silu", silu(x.as_tensor()).unwrap()),
            ("rotate_half", rotate_half(x.as_tensor()).unwrap()),
        ] {
            let loss = (y * &wsel).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            let gx = g.get(x.as_tensor()).expect(name);
            let n = gx
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{name} has zero gradient");
        }
        // Sanity: the fused softmax gives none (documents why this module exists).
        let y = candle_nn::ops::softmax_last_dim(x.as_tensor()).unwrap();
        let g = (y * &wsel).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_none());
    }

    #[test]
    fn frozen_linear_matches_matmul_and_grad() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (6, 5), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 6, &dev).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5), &dev).unwrap()).unwrap();
        let a = frozen_linear(x.as_tensor(), &w, Some(&bias)).unwrap();
        let b = x
            .as_tensor()
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let sel = Tensor::randn(0f32, 1.0, (2, 3, 6), &dev).unwrap();
        let ga = (a * &sel).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &sel).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(ga, gb) < 1e-5);
        // Both gemm orientations (small and large row counts) agree with matmul.
        for m in [1usize, 63, 64, 65, 130] {
            let x = Tensor::randn(0f32, 1.0, (m, 5), &dev).unwrap();
            let a = frozen_linear(&x, &w, None).unwrap();
            let b = x.matmul(&w.t().unwrap()).unwrap();
            assert!(max_diff(&a, &b) < 1e-5, "m={m}");
        }
        // Narrowed (offset) input works too.
        let xn = x.as_tensor().narrow(1, 1, 2).unwrap();
        let a = frozen_linear(&xn, &w, None).unwrap();
        let b = xn.broadcast_matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
    }
}
