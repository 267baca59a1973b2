//! F32 linear layers on the CPU: `a @ w^T` with each output element summed in one fixed
//! order, whatever the number of rows. A decode step reads the weights once, in order.
//!
//! candle sends `a.matmul(&w.t())` to the `gemm` crate. For one input row (a decode step
//! alone, the common case) its path reads the transposed weights at about 9 GB/s on a
//! 2-core VM that streams 22 GB/s, and F32 decode is bound by those reads (SmolLM2-135M
//! reads 540 MB per token): 17-21 tok/s where the weights could be read 40 times a
//! second. Here each weight row is read contiguously and meets every input row while it
//! is in L1: four weight rows against three input rows at a time, 12 accumulators of
//! 8 lanes.
//!
//! Every output element is the same sum in the same order (8 lanes over k in steps of
//! 8, fused multiply-adds, then candle's `hsum_float_8` order, then the tail), whichever
//! tile it falls in. So a sequence's logits do not depend on how many rows its step
//! shared: alone, batched with others, or resumed from the prefix cache with one
//! position left, which `gemm`'s blocking does not promise between one row and many.

use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;

/// Weight rows per parallel task: 16 rows of k = 1536 are 96 KiB, read once per task,
/// and a 576-wide layer still makes 36 tasks for the pool.
const TILE: usize = 16;

/// Input floats per row block: 256 KiB, well inside a core's L2 next to the tile.
const ROW_BLOCK_FLOATS: usize = 64 * 1024;

/// `a @ w^T` (w of shape (n, k), a of shape (..., k)) with this kernel, or `None` where
/// it does not apply (not the CPU, not F32 on both sides, weights not contiguous, k not
/// matching) and candle's matmul should run.
pub(crate) fn matmul(a: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !a.device().is_cpu()
        || !w.device().is_cpu()
        || a.dtype() != DType::F32
        || w.dtype() != DType::F32
    {
        return Ok(None);
    }
    let Ok((n, k)) = w.dims2() else {
        return Ok(None);
    };
    let dims = a.dims();
    // A mismatched k is left to candle, which reports it, and so is an empty product.
    if k == 0 || n == 0 || dims.last() != Some(&k) || a.elem_count() == 0 {
        return Ok(None);
    }
    let m = a.elem_count() / k;
    let lhs = a.flatten_all()?.to_vec1::<f32>()?;
    let out = {
        let (storage, layout) = w.storage_and_layout();
        let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        rows(m, k, n, &lhs, &cpu.as_slice::<f32>()?[start..end])
    };
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Tensor::from_vec(out, shape, a.device()).map(Some)
}

/// (m, k) rows times the transposed (n, k) weights, tile by tile.
fn rows(m: usize, k: usize, n: usize, lhs: &[f32], w: &[f32]) -> Vec<f32> {
    debug_assert_eq!((lhs.len(), w.len()), (m * k, n * k));
    // Transposed output, so that each tile writes one contiguous chunk.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(TILE * m)
        .zip(w.par_chunks(TILE * k))
        .for_each(|(out, w)| {
            let rows_w = w.len() / k;
            // Input rows a block at a time, so that a long prompt's block stays in L2 while
            // the tile's weight rows pass it, four at a time from L1.
            let block = (ROW_BLOCK_FLOATS / k).max(3);
            for r0 in (0..m).step_by(block) {
                let r1 = (r0 + block).min(m);
                let mut c = 0;
                while c + 4 <= rows_w {
                    let mut r = r0;
                    while r < r1 {
                        // Three input rows at a time (12 accumulators and 4 loads in the 16
                        // AVX2 registers), then the one or two left.
                        r += match r1 - r {
                            1 => tile::<1>(out, w, lhs, (c, r), (k, m)),
                            2 => tile::<2>(out, w, lhs, (c, r), (k, m)),
                            _ => tile::<3>(out, w, lhs, (c, r), (k, m)),
                        };
                    }
                    c += 4;
                }
                for j in c..rows_w {
                    for r in r0..r1 {
                        out[j * m + r] = dot::one(&w[j * k..(j + 1) * k], &lhs[r * k..(r + 1) * k]);
                    }
                }
            }
        });
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    out.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        for (c, v) in row.iter_mut().enumerate() {
            *v = out_t[c * m + r];
        }
    });
    out
}

/// Weight rows c..c+4 against input rows r..r+R into the transposed output; returns R.
#[inline(always)]
fn tile<const R: usize>(
    out: &mut [f32],
    w: &[f32],
    lhs: &[f32],
    (c, r): (usize, usize),
    (k, m): (usize, usize),
) -> usize {
    let mut sums = [[0f32; R]; 4];
    dot::tile(
        &w[c * k..(c + 4) * k],
        &lhs[r * k..(r + R) * k],
        k,
        &mut sums,
    );
    for (j, s) in sums.iter().enumerate() {
        out[(c + j) * m + r..(c + j) * m + r + R].copy_from_slice(s);
    }
    R
}

/// The dot products, AVX2 + FMA. Built only with those target features (the engine's
/// build sets them where the CPU has them); elsewhere [`super::matmul`] is not called.
mod dot {
    use std::arch::x86_64::*;

    /// candle's `hsum_float_8`: the order every element's 8 lanes are added in.
    #[inline(always)]
    unsafe fn hsum(acc: __m256) -> f32 {
        let res = _mm256_extractf128_ps(acc, 1);
        let res = _mm_add_ps(res, _mm256_castps256_ps128(acc));
        let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        let res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }

    /// The tail past the last multiple of 8, in order, after the lanes.
    #[inline(always)]
    fn tail(sum: f32, w: &[f32], x: &[f32], from: usize, k: usize) -> f32 {
        (from..k).fold(sum, |s, i| w[i].mul_add(x[i], s))
    }

    /// One weight row against one input row.
    pub(super) fn one(w: &[f32], x: &[f32]) -> f32 {
        let k = w.len().min(x.len());
        let k8 = k - k % 8;
        // SAFETY: every load reads 8 floats at i < k8 <= len of both slices.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i < k8 {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(w.as_ptr().add(i)),
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    acc,
                );
                i += 8;
            }
            tail(hsum(acc), w, x, k8, k)
        }
    }

    /// `sums[j][r]` = weight row j (of four, `k` apart in `w`) against input row r (of
    /// R, `k` apart in `x`): for each element the same operations as [`one`].
    #[inline(always)]
    pub(super) fn tile<const R: usize>(w: &[f32], x: &[f32], k: usize, sums: &mut [[f32; R]; 4]) {
        assert!(w.len() >= 4 * k && x.len() >= R * k);
        let k8 = k - k % 8;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        // SAFETY: every load reads 8 floats at j * k + i or r * k + i with i < k8 <= k,
        // inside the slices (asserted above).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); R]; 4];
            let mut i = 0;
            while i < k8 {
                let mut xs = [_mm256_setzero_ps(); R];
                for (r, xv) in xs.iter_mut().enumerate() {
                    *xv = _mm256_loadu_ps(xp.add(r * k + i));
                }
                for (j, acc) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(wp.add(j * k + i));
                    for (a, xv) in acc.iter_mut().zip(xs) {
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                }
                i += 8;
            }
            for (j, (s, acc)) in sums.iter_mut().zip(acc).enumerate() {
                for (r, (s, acc)) in s.iter_mut().zip(acc).enumerate() {
                    *s = tail(
                        hsum(acc),
                        &w[j * k..(j + 1) * k],
                        &x[r * k..(r + 1) * k],
                        k8,
                        k,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every element equals the same row computed alone, bit for bit, whatever the
    /// number of rows (partial tiles of both sides, a k with a tail), and candle's
    /// matmul within rounding.
    #[test]
    fn many_rows_give_exactly_what_each_row_gets_alone() -> Result<()> {
        let dev = Device::Cpu;
        for k in [576, 77] {
            let n = TILE * 3 + 5;
            let w = Tensor::randn(0f32, 1f32, (n, k), &dev)?;
            for (batch, positions) in [(1, 1), (1, 37), (3, 2), (8, 1), (2, 5)] {
                let x = Tensor::randn(0f32, 1f32, (batch, positions, k), &dev)?;
                let got = matmul(&x, &w)?.expect("an F32 CPU layer takes this kernel");
                assert_eq!(got.dims(), &[batch, positions, n]);
                let alone = (0..batch)
                    .map(|b| {
                        let rows = (0..positions)
                            .map(|p| -> Result<Tensor> {
                                Ok(matmul(&x.narrow(0, b, 1)?.narrow(1, p, 1)?, &w)?
                                    .expect("one row too"))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Tensor::cat(&rows, 1)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let alone = Tensor::cat(&alone, 0)?;
                let (got, alone) = (
                    got.flatten_all()?.to_vec1::<f32>()?,
                    alone.flatten_all()?.to_vec1::<f32>()?,
                );
                let differing = got
                    .iter()
                    .zip(&alone)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differing, 0,
                    "k {k}, {batch}x{positions}: {differing} elements differ"
                );
                let reference = x
                    .broadcast_matmul(&w.t()?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for (g, r) in got.iter().zip(&reference) {
                    assert!(
                        (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                        "k {k}: {g} against candle's {r}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn other_types_and_mismatched_shapes_are_left_to_candle() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1f32, (32, 64), &dev)?;
        assert!(matmul(&Tensor::randn(0f32, 1f32, (1, 4, 32), &dev)?, &w)?.is_none());
        let bf16 = w.to_dtype(DType::BF16)?;
        assert!(matmul(
            &Tensor::randn(0f32, 1f32, (1, 4, 64), &dev)?.to_dtype(DType::BF16)?,
            &bf16
        )?
        .is_none());
        // A transposed (not contiguous) weight view.
        let wt = Tensor::randn(0f32, 1f32, (64, 32), &dev)?.t()?;
        assert!(matmul(&Tensor::randn(0f32, 1f32, (1, 4, 64), &dev)?, &wt)?.is_none());
        // No rows at all.
        assert!(matmul(&Tensor::zeros((1, 0, 64), DType::F32, &dev)?, &w)?.is_none());
        Ok(())
    }
}
