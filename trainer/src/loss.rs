//! The GRPO objective (TRL `GRPOTrainer` semantics) and its metrics.
//!
//! Per token: `ratio = exp(logp - old_logp)`, clipped PPO surrogate with
//! `[1 - epsilon_low, 1 + epsilon_high]` (DAPO's clip-higher when they differ),
//! plus `beta * k3` KL to the reference (LoRA-off) policy. Token losses are
//! reduced by [`LossType`]. Every reduction is written as `sum(loss * weight)` with
//! per-token weights computed from step-wide totals ([`LossNorm`]), so summing the
//! micro-batch losses of a step gives exactly the full-batch loss.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// How token losses are reduced to the step loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over each sequence's tokens, then mean over sequences (original GRPO).
    Grpo,
    /// Sum over all tokens / (num_sequences * max_completion_length) (Dr. GRPO).
    DrGrpo,
    /// Sum over all tokens / total tokens (DAPO token-level mean).
    Dapo,
}

/// How rewards are scaled into advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// `(r - mean_group) / (std_group + eps)` (GRPO).
    Group,
    /// `(r - mean_group) / (std_batch + eps)`.
    Batch,
    /// `r - mean_group` (Dr. GRPO: no std scaling).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub loss_type: LossType,
    pub scale_rewards: ScaleRewards,
    pub epsilon_low: f64,
    /// Upper clip; DAPO uses 0.28 with epsilon_low 0.2.
    pub epsilon_high: f64,
    /// KL coefficient (0 disables the reference forward entirely).
    pub beta: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            loss_type: LossType::Dapo,
            scale_rewards: ScaleRewards::Group,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
        }
    }
}

/// Added to the std before dividing (TRL uses 1e-4).
pub const ADV_EPS: f64 = 1e-4;

/// Group-normalised advantages; `rewards` are grouped consecutively in groups of `group_size`.
/// Std is the unbiased sample std, as `torch.std` in TRL.
pub fn advantages(rewards: &[f64], group_size: usize, scale: ScaleRewards) -> Vec<f64> {
    assert!(
        group_size > 0 && rewards.len().is_multiple_of(group_size),
        "rewards not a multiple of group size"
    );
    let std = |xs: &[f64]| {
        let n = xs.len() as f64;
        if xs.len() < 2 {
            return 0.0;
        }
        let m = xs.iter().sum::<f64>() / n;
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let batch_std = std(rewards);
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        if g.iter().all(|&r| r == g[0]) {
            // No signal: exactly zero (rounding in `mean` would leave ~1e-17 residues
            // that the std division blows up, and the trainer skips exact zeros).
            out.extend(std::iter::repeat_n(0.0, g.len()));
            continue;
        }
        let denom = match scale {
            ScaleRewards::Group => std(g) + ADV_EPS,
            ScaleRewards::Batch => batch_std + ADV_EPS,
            ScaleRewards::None => 1.0,
        };
        out.extend(g.iter().map(|r| (r - mean) / denom));
    }
    out
}

/// Step-wide totals the reduction divides by (over all micro-batches of a step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossNorm {
    pub num_sequences: usize,
    pub num_tokens: usize,
    pub max_completion_length: usize,
}

/// One micro-batch of completions.
pub struct LossInputs<'a> {
    /// [B, C] log-probs of the completion tokens under the current policy (with grad).
    pub logp: &'a Tensor,
    /// [B, C] log-probs under the policy that sampled; `None` = `logp` detached
    /// (one gradient step per generation, where the ratio is exactly 1).
    pub old_logp: Option<&'a Tensor>,
    /// [B, C] reference (LoRA-off) log-probs; required when beta > 0.
    pub ref_logp: Option<&'a Tensor>,
    /// Per-sequence advantage.
    pub advantages: &'a [f64],
    /// Completion length of each row (tokens beyond are padding).
    pub lengths: &'a [usize],
}

/// The micro-batch loss and raw sums for metrics.
pub struct LossOutput {
    /// Scalar, differentiable; sum these over micro-batches.
    pub loss: Tensor,
    pub tokens: usize,
    /// Sum over real tokens of the k3 KL estimate (0 when no reference).
    pub kl_sum: f64,
    /// Tokens whose ratio was clipped on the low / high side (and so had no gradient).
    pub clipped_low: usize,
    pub clipped_high: usize,
}

/// Per-token reduction weights for `cfg.loss_type`.
pub fn token_weights(
    lengths: &[usize],
    c: usize,
    loss_type: LossType,
    norm: &LossNorm,
) -> Vec<f32> {
    let mut w = vec![0f32; lengths.len() * c];
    for (b, &len) in lengths.iter().enumerate() {
        let per = match loss_type {
            LossType::Grpo => 1.0 / (len.max(1) as f64 * norm.num_sequences.max(1) as f64),
            LossType::DrGrpo => {
                1.0 / (norm.num_sequences.max(1) * norm.max_completion_length.max(1)) as f64
            }
            LossType::Dapo => 1.0 / norm.num_tokens.max(1) as f64,
        };
        for t in 0..len.min(c) {
            w[b * c + t] = per as f32;
        }
    }
    w
}

/// The GRPO loss of one micro-batch.
pub fn grpo_loss(inp: &LossInputs, cfg: &LossConfig, norm: &LossNorm) -> Result<LossOutput> {
    let (b, c) = inp.logp.dims2()?;
    let dev: &Device = inp.logp.device();
    let detached = inp.logp.detach();
    let old = inp.old_logp.unwrap_or(&detached);
    let ratio = (inp.logp - old)?.exp()?;
    let r = ratio.to_vec2::<f32>()?;
    // Which tokens keep a gradient: PPO's min(ratio*A, clip(ratio)*A) picks the clipped
    // (constant) branch when ratio < 1-eps_low with A < 0 or ratio > 1+eps_high with A > 0.
    let (lo, hi) = (1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
    let mut adv_unclipped = vec![0f32; b * c];
    let mut clipped_const = vec![0f32; b * c];
    let (mut clipped_low, mut clipped_high, mut tokens) = (0, 0, 0);
    for i in 0..b {
        let a = inp.advantages[i];
        for t in 0..c {
            let x = r[i][t] as f64;
            let valid = t < inp.lengths[i];
            if valid {
                tokens += 1;
            }
            let low = x < lo && a < 0.0;
            let high = x > hi && a > 0.0;
            if low || high {
                clipped_const[i * c + t] = (x.clamp(lo, hi) * a) as f32;
                if valid {
                    if low {
                        clipped_low += 1
                    } else {
                        clipped_high += 1
                    }
                }
            } else {
                adv_unclipped[i * c + t] = a as f32;
            }
        }
    }
    let adv_unclipped = Tensor::from_vec(adv_unclipped, (b, c), dev)?;
    let clipped_const = Tensor::from_vec(clipped_const, (b, c), dev)?;
    let mut per_token = (ratio.mul(&adv_unclipped)? + clipped_const)?.neg()?;
    let mut kl_sum = 0.0;
    if cfg.beta != 0.0 {
        let rl = inp
            .ref_logp
            .ok_or_else(|| candle_core::Error::Msg("beta > 0 needs ref_logp".into()))?;
        let d = (rl - inp.logp)?;
        let kl = ((d.exp()? - &d)? - 1.0)?;
        let kv = kl.to_vec2::<f32>()?;
        for i in 0..b {
            kl_sum += kv[i][..inp.lengths[i].min(c)]
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>();
        }
        per_token = (per_token + (kl * cfg.beta)?)?;
    }
    let w = Tensor::from_vec(
        token_weights(inp.lengths, c, cfg.loss_type, norm),
        (b, c),
        dev,
    )?;
    let loss = per_token.mul(&w)?.sum_all()?;
    Ok(LossOutput {
        loss,
        tokens,
        kl_sum,
        clipped_low,
        clipped_high,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;

    #[test]
    fn advantages_group_normalised() {
        let a = advantages(
            &[1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0],
            4,
            ScaleRewards::Group,
        );
        let s = (1.0f64 / 3.0).sqrt(); // unbiased std of [1,0,1,0]
        assert!((a[0] - 0.5 / (s + ADV_EPS)).abs() < 1e-9);
        assert!((a[1] + 0.5 / (s + ADV_EPS)).abs() < 1e-9);
        assert_eq!(&a[4..], &[0.0; 4]);
        let d = advantages(&[1.0, 0.0, 1.0, 0.0], 4, ScaleRewards::None);
        assert_eq!(d, vec![0.5, -0.5, 0.5, -0.5]);
    }

    fn run(
        loss_type: LossType,
        lp: &[[f32; 3]; 2],
        old: Option<&[[f32; 3]; 2]>,
        beta: f64,
    ) -> (f32, Vec<Vec<f32>>, LossOutput) {
        let dev = Device::Cpu;
        let v = Var::from_tensor(&Tensor::new(lp, &dev).unwrap()).unwrap();
        let old_t = old.map(|o| Tensor::new(o, &dev).unwrap());
        let reft = Tensor::new(&[[-1.0f32, -1.0, -1.0], [-1.0, -1.0, -1.0]], &dev).unwrap();
        let cfg = LossConfig {
            loss_type,
            beta,
            ..Default::default()
        };
        let norm = LossNorm {
            num_sequences: 2,
            num_tokens: 5,
            max_completion_length: 4,
        };
        let out = grpo_loss(
            &LossInputs {
                logp: v.as_tensor(),
                old_logp: old_t.as_ref(),
                ref_logp: Some(&reft),
                advantages: &[1.0, -2.0],
                lengths: &[3, 2],
            },
            &cfg,
            &norm,
        )
        .unwrap();
        let g = out
            .loss
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        (out.loss.to_scalar::<f32>().unwrap(), g, out)
    }

    #[test]
    fn reductions_match_hand_computation() {
        let lp = [[-1.0f32, -2.0, -0.5], [-0.3, -0.7, -9.0]];
        // Ratio 1 everywhere: loss = -sum(A * w); d loss / d logp = -A * w.
        let (l, g, out) = run(LossType::Grpo, &lp, None, 0.0);
        assert!(
            (l - (-(1.0 * 3.0 / 3.0 - 2.0 * 2.0 / 2.0) / 2.0)).abs() < 1e-6,
            "{l}"
        );
        assert!((g[0][0] + 1.0 / 6.0).abs() < 1e-6 && (g[1][0] - 2.0 / 4.0).abs() < 1e-6);
        assert_eq!(g[1][2], 0.0, "padding has no gradient");
        assert_eq!(out.tokens, 5);
        let (l, g, _) = run(LossType::DrGrpo, &lp, None, 0.0);
        assert!((l - (-(3.0 - 4.0) / 8.0)).abs() < 1e-6);
        assert!((g[0][1] + 1.0 / 8.0).abs() < 1e-6);
        let (l, g, _) = run(LossType::Dapo, &lp, None, 0.0);
        assert!((l - (-(3.0 - 4.0) / 5.0)).abs() < 1e-6);
        assert!((g[1][1] - 2.0 / 5.0).abs() < 1e-6);
    }

    #[test]
    fn clipping_and_kl() {
        let lp = [[-1.0f32, -1.0, -1.0], [-1.0, -1.0, -1.0]];
        // Row 0 (A=+1): ratio e^0.5 > 1.2 -> clipped high, no grad; row 1 (A=-2): ratio e^-0.5 < 0.8 -> clipped low.
        let old = [[-1.5f32, -1.0, -1.0], [-0.5, -1.0, -1.0]];
        let (_, g, out) = run(LossType::Dapo, &lp, Some(&old), 0.0);
        assert_eq!((out.clipped_low, out.clipped_high), (1, 1));
        assert_eq!(g[0][0], 0.0);
        assert_eq!(g[1][0], 0.0);
        assert!(g[0][1] != 0.0);
        // KL: logp == ref -> k3 = 0 and its gradient is 0 too.
        let (_, g2, out) = run(LossType::Dapo, &lp, None, 0.5);
        assert!(out.kl_sum.abs() < 1e-7);
        let (_, g0, _) = run(LossType::Dapo, &lp, None, 0.0);
        assert!((g2[0][1] - g0[0][1]).abs() < 1e-6);
        // logp above ref: positive KL.
        let lp2 = [[-0.5f32, -0.5, -0.5], [-0.5, -0.5, -0.5]];
        let (_, _, out) = run(LossType::Dapo, &lp2, None, 0.5);
        let k3 = (-0.5f64).exp() + 0.5 - 1.0;
        assert!((out.kl_sum - 5.0 * k3).abs() < 1e-5, "{}", out.kl_sum);
    }
}
