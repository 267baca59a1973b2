//! Quantized matmul of many rows at once on the CPU: a prompt's prefill, or a decode step
//! of several sequences. Bit for bit what candle's kernel gives row by row.
//!
//! candle's CPU kernel (`k_quants::matmul`) runs one parallel loop per input row, and
//! each loop reads the whole weight matrix: a prompt of N tokens costs nearly N decode
//! steps, and a batch of 8 decode steps reads the weights 8 times. Here the weights are
//! cut into tiles of a few rows, and each tile is multiplied with every input row
//! while it is in cache, in one parallel loop.
//!
//! Every output element is still `T::vec_dot` of one weight row and one input row
//! quantized by `T::VecDotType::from_float`, exactly as candle computes it. So the
//! result does not depend on how many rows a call holds: a sequence's logits are the
//! same alone, in a batch, or resumed from the prefix cache with one position left.
//! (An earlier version of this patch multiplied prompts as a dense F32 matmul over
//! dequantized weights; its sums ran in another order, and at near ties 1 in 40
//! batched greedy answers differed from the answer given alone.)

use candle_core::{
    bail,
    quantized::{
        k_quants::{
            BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
            BlockQ6K, BlockQ8_0, GgmlType,
        },
        GgmlDType, QTensor,
    },
    DType, Result, Tensor,
};
use rayon::prelude::*;

/// Inputs of at least this many rows take the tiled kernel; one row (a decode step
/// alone) keeps candle's, which is the same computation.
pub(crate) const MIN_ROWS: usize = 2;

/// Weight rows per tile. 16 rows of Q8_0 with k = 1536 are 26 KiB, so a tile stays in
/// L1/L2 while every input row passes it, and a 576-wide layer still makes 36 tasks for
/// the pool.
const TILE: usize = 16;

/// `a @ q^T` (q of shape (n, k), a of shape (..., k)) with the tiled kernel, or `None`
/// where this kernel does not apply (not the CPU, not F32, fewer than [`MIN_ROWS`] rows,
/// or a block type it does not cover) and candle's kernel should run.
pub(crate) fn matmul(a: &Tensor, q: &QTensor) -> Result<Option<Tensor>> {
    if !a.device().is_cpu() || !q.device().is_cpu() || a.dtype() != DType::F32 {
        return Ok(None);
    }
    let (n, k) = q.shape().dims2()?;
    let dims = a.dims();
    // A mismatched k is left to candle, which reports it.
    if k == 0 || dims.last() != Some(&k) {
        return Ok(None);
    }
    let m = a.elem_count() / k;
    if m < MIN_ROWS {
        return Ok(None);
    }
    let data = q.data()?;
    let lhs = || a.flatten_all()?.to_vec1::<f32>();
    let out = match q.dtype() {
        GgmlDType::Q4_0 => tiled::<BlockQ4_0>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q4_1 => tiled::<BlockQ4_1>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q5_0 => tiled::<BlockQ5_0>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q5_1 => tiled::<BlockQ5_1>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q8_0 => tiled::<BlockQ8_0>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q2K => tiled::<BlockQ2K>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q3K => tiled::<BlockQ3K>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q4K => tiled::<BlockQ4K>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q5K => tiled::<BlockQ5K>(m, k, n, &lhs()?, blocks(&data)?)?,
        GgmlDType::Q6K => tiled::<BlockQ6K>(m, k, n, &lhs()?, blocks(&data)?)?,
        _ => return Ok(None),
    };
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Tensor::from_vec(out, shape, a.device()).map(Some)
}

/// The blocks of a CPU `QTensor`'s storage (candle keeps it as a `Vec<T>` and lends it
/// out as bytes).
fn blocks<T: GgmlType>(bytes: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if bytes.len() % size != 0 || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        bail!("quantized storage is not a whole, aligned slice of {:?} blocks", T::DTYPE);
    }
    // SAFETY: the bytes are the storage of a `Vec<T>` (length and alignment checked
    // above), and every `T` here is a plain-old-data block of integers and halves.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// (m, k) rows times the transposed (n, k) weights, as candle's `k_quants::matmul`
/// computes each element, tile by tile.
fn tiled<T: GgmlType>(m: usize, k: usize, n: usize, lhs: &[f32], rhs_t: &[T]) -> Result<Vec<f32>> {
    let kb = k.div_ceil(T::BLCK_SIZE);
    if rhs_t.len() != n * kb || lhs.len() != m * k {
        bail!("tiled quantized matmul: ({m}, {k}) x ({n}, {k}) does not match its storage");
    }
    // The rows quantized as candle quantizes them, one row at a time.
    let mut lhs_b = vec![T::VecDotType::zeros(); m * kb];
    lhs_b
        .par_chunks_mut(kb)
        .zip(lhs.par_chunks(k))
        .for_each(|(b, row)| T::VecDotType::from_float(row, b));
    // Transposed output, so that each tile writes one contiguous chunk.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(TILE * m)
        .zip(rhs_t.par_chunks(TILE * kb))
        .for_each(|(out, w)| {
            for (r, x) in lhs_b.chunks_exact(kb).enumerate() {
                let mut c = 0;
                #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
                if T::DTYPE == GgmlDType::Q8_0 && k % 32 == 0 {
                    // SAFETY: T is BlockQ8_0 (checked by its dtype): a repr(C) block of
                    // 34 bytes; `w` holds w.len() / kb whole rows of kb blocks, `x` one.
                    let (w8, x8) = (w.as_ptr().cast::<u8>(), x.as_ptr().cast::<u8>());
                    let mut four = [0f32; 4];
                    while c + 4 <= w.len() / kb {
                        unsafe { q8_0_avx2::dot4(w8.add(c * kb * q8_0_avx2::BLOCK), kb, x8, &mut four) };
                        for (j, v) in four.iter().enumerate() {
                            out[(c + j) * m + r] = *v;
                        }
                        c += 4;
                    }
                }
                for (cc, wc) in w.chunks_exact(kb).enumerate().skip(c) {
                    out[cc * m + r] = T::vec_dot(k, wc, x);
                }
            }
        });
    let mut out = vec![0f32; m * n];
    out.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        for (c, v) in row.iter_mut().enumerate() {
            *v = out_t[c * m + r];
        }
    });
    Ok(out)
}

/// candle's AVX2 `vec_dot_q8_0_q8_0` (candle-core 0.10.2, `quantized/avx.rs`) for four
/// weight rows against one input row, the same instructions in the same order for each
/// of them, so each result is bit for bit candle's; the input block is loaded once for
/// the four, and the calls' overhead is paid once.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod q8_0_avx2 {
    use half::f16;
    use std::arch::x86_64::*;

    /// `BlockQ8_0`: an f16 scale, then 32 i8 (repr(C), asserted 34 bytes by candle).
    pub(super) const BLOCK: usize = 34;

    #[inline(always)]
    unsafe fn scale(block: *const u8) -> f32 {
        f16::from_bits(block.cast::<u16>().read_unaligned()).to_f32()
    }

    /// `out[j] = vec_dot(w_j, x)` for the four rows of `kb` blocks that start at `w`.
    ///
    /// # Safety
    /// `w` points at 4 * kb blocks and `x` at kb blocks of `BlockQ8_0`.
    #[inline]
    pub(super) unsafe fn dot4(w: *const u8, kb: usize, x: *const u8, out: &mut [f32; 4]) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..kb {
            let xb = x.add(b * BLOCK);
            let dy = scale(xb);
            let by = _mm256_loadu_si256(xb.add(2).cast::<__m256i>());
            for (j, acc) in acc.iter_mut().enumerate() {
                let wb = w.add((j * kb + b) * BLOCK);
                // candle: `f16::to_f32(x.d) * f16::to_f32(y.d)`, x the weights.
                let d = _mm256_set1_ps(scale(wb) * dy);
                let bx = _mm256_loadu_si256(wb.add(2).cast::<__m256i>());
                // mul_sum_i8_pairs_float: |x| times y with x's signs, pairs summed.
                let ax = _mm256_sign_epi8(bx, bx);
                let sy = _mm256_sign_epi8(by, bx);
                let dot = _mm256_maddubs_epi16(ax, sy);
                let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, dot));
                *acc = _mm256_fmadd_ps(d, q, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            // hsum_float_8
            let res = _mm256_extractf128_ps(acc, 1);
            let res = _mm_add_ps(res, _mm256_castps256_ps128(acc));
            let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
            let res = _mm_add_ss(res, _mm_movehdup_ps(res));
            *o = _mm_cvtss_f32(res);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{quantized::QMatMul, Device, Module};
    use std::sync::Arc;

    /// Every element of the tiled product equals candle's kernel run one row at a time,
    /// bit for bit, for every block type, with a partial last tile and k over one block.
    #[test]
    fn many_rows_give_exactly_what_each_row_gets_alone() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            // n = 3 tiles and a bit; k = 2 super-blocks of 256.
            let (n, k) = (TILE * 3 + 5, 512);
            let q = Arc::new(QTensor::quantize(&Tensor::randn(0f32, 1f32, (n, k), &dev)?, dtype)?);
            for (batch, positions) in [(1, 37), (3, 2), (8, 1)] {
                let x = Tensor::randn(0f32, 1f32, (batch, positions, k), &dev)?;
                let got = matmul(&x, &q)?.expect("the tiled kernel covers this type");
                let alone = (0..batch)
                    .map(|b| {
                        let rows = (0..positions)
                            .map(|p| {
                                QMatMul::QTensor(q.clone()).forward(&x.narrow(0, b, 1)?.narrow(1, p, 1)?)
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Tensor::cat(&rows, 1)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let alone = Tensor::cat(&alone, 0)?;
                assert_eq!(got.dims(), alone.dims());
                let (got, alone) = (got.flatten_all()?.to_vec1::<f32>()?, alone.flatten_all()?.to_vec1::<f32>()?);
                let differing = got.iter().zip(&alone).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert_eq!(differing, 0, "{dtype:?} {batch}x{positions}: {differing} elements differ");
            }
        }
        Ok(())
    }

    #[test]
    fn one_row_and_other_types_are_left_to_candle() -> Result<()> {
        let dev = Device::Cpu;
        let q = QTensor::quantize(&Tensor::randn(0f32, 1f32, (32, 64), &dev)?, GgmlDType::Q8_0)?;
        assert!(matmul(&Tensor::randn(0f32, 1f32, (1, 1, 64), &dev)?, &q)?.is_none());
        let f16 = QTensor::quantize(&Tensor::randn(0f32, 1f32, (32, 64), &dev)?, GgmlDType::F16)?;
        assert!(matmul(&Tensor::randn(0f32, 1f32, (1, 4, 64), &dev)?, &f16)?.is_none());
        // A k that does not match is candle's to report.
        assert!(matmul(&Tensor::randn(0f32, 1f32, (1, 4, 32), &dev)?, &q)?.is_none());
        Ok(())
    }
}
