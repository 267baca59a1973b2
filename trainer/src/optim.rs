//! AdamW with checkpointable state, LR schedules and global gradient clipping.
//!
//! A local AdamW (same update as `torch.optim.AdamW`) instead of
//! `candle_nn::AdamW` because the latter keeps its moments private, and resuming
//! a run identically needs them saved and restored.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over named variables (the LoRA vars, in a fixed order).
pub struct AdamW {
    pub cfg: AdamWConfig,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates applied (bias correction uses `step` after increment).
    pub step: usize,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            vars,
            m,
            v,
            step: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `vars()[i]` (None = no gradient).
    pub fn apply(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let g = match &grads[i] {
                Some(g) => g,
                None => continue,
            };
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
            let upd = (m.div(&denom)? * (lr / bc1))?;
            let p = var.as_tensor();
            let p = if c.weight_decay != 0.0 {
                (p * (1.0 - lr * c.weight_decay))?
            } else {
                p.clone()
            };
            var.set(&(p - upd)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments keyed `exp_avg.<name>` / `exp_avg_sq.<name>`.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut h = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            h.insert(format!("exp_avg.{name}"), self.m[i].clone());
            h.insert(format!("exp_avg_sq.{name}"), self.v[i].clone());
        }
        h
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
        step: usize,
    ) -> anyhow::Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("exp_avg", &mut self.m[i]), ("exp_avg_sq", &mut self.v[i])] {
                let t = state
                    .get(&format!("{prefix}.{name}"))
                    .ok_or_else(|| anyhow::anyhow!("optimizer state has no {prefix}.{name}"))?;
                anyhow::ensure!(
                    t.shape() == var.shape(),
                    "optimizer state {prefix}.{name} has wrong shape"
                );
                *slot = t.to_device(var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Global L2 norm of the gradients; scales them to `max_norm` when above (torch's
/// `clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter().flatten() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

/// LR schedule shape after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

/// LR schedule with HF semantics (`get_*_schedule_with_warmup`): the factor for
/// optimizer step `s` (0-based) is `s / warmup` during warmup, then constant, linear
/// to 0, or cosine to `min_lr_ratio` at `total_steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub min_lr_ratio: f64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Constant,
            warmup_steps: 0,
            total_steps: 0,
            min_lr_ratio: 0.0,
        }
    }
}

impl LrSchedule {
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let m = self.min_lr_ratio;
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => m + (1.0 - m) * (1.0 - progress),
            ScheduleKind::Cosine => {
                m + (1.0 - m) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn adamw_matches_torch_reference() {
        // torch.optim.AdamW(lr=0.1, weight_decay=0.01) on p=[1,-2] with grads [0.5,-1] then [0.1,0.2]
        // gives p = [0.79821..., -1.79642...] (closed form below).
        let v = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            vec![("p".into(), v.clone())],
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        let g1 = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        let g2 = Tensor::new(&[0.1f32, 0.2], &Device::Cpu).unwrap();
        opt.apply(&[Some(g1.clone())], 0.1).unwrap();
        opt.apply(&[Some(g2.clone())], 0.1).unwrap();
        let mut want = [1.0f64, -2.0];
        let (mut m, mut s) = ([0.0f64; 2], [0.0f64; 2]);
        for (t, g) in [[0.5, -1.0], [0.1, 0.2]].iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..2 {
                want[i] *= 1.0 - 0.1 * 0.01;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                s[i] = 0.999 * s[i] + 0.001 * g[i] * g[i];
                let denom = (s[i] / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8;
                want[i] -= 0.1 / (1.0 - 0.9f64.powi(t)) * m[i] / denom;
            }
        }
        let got = v.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!(
                (got[i] as f64 - want[i]).abs() < 1e-5,
                "{got:?} vs {want:?}"
            );
        }
        // State round trip.
        let st = opt.state_tensors();
        let mut opt2 = AdamW::new(vec![("p".into(), v.clone())], opt.cfg.clone()).unwrap();
        opt2.load_state(&st, opt.step).unwrap();
        assert_eq!(opt2.step, 2);
    }

    #[test]
    fn clipping_and_schedules() {
        let mut g = vec![
            Some(Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()),
            None,
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let v = g[0].as_ref().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5);
        let s = LrSchedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 2,
            total_steps: 12,
            min_lr_ratio: 0.0,
        };
        assert_eq!(s.factor(0), 0.0);
        assert_eq!(s.factor(1), 0.5);
        assert!((s.factor(2) - 1.0).abs() < 1e-12);
        assert!((s.factor(7) - 0.5).abs() < 1e-12);
        assert!(s.factor(12).abs() < 1e-12);
        let l = LrSchedule {
            kind: ScheduleKind::Linear,
            warmup_steps: 0,
            total_steps: 10,
            min_lr_ratio: 0.0,
        };
        assert!((l.factor(5) - 0.5).abs() < 1e-12);
        assert_eq!(LrSchedule::default().factor(100), 1.0);
    }
}
