//! AdamW (Loshchilov & Hutter, 2019) with PyTorch's update order, and clipping by global norm.
//! Written with tensor ops so the same code runs on every device.

use candle_core::{backprop::GradStore, Result, Tensor, Var};

/// Hyper-parameters of one update; the learning rate comes from the caller's schedule each step.
#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Largest global gradient norm let through; `0` disables clipping.
    pub clip: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, clip: 1.0 }
    }
}

/// First and second moments per parameter, and the step count.
pub struct AdamW {
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub step: u64,
}

impl AdamW {
    pub fn new(vars: &[Var]) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            exp_avg: vars.iter().map(zeros).collect::<Result<_>>()?,
            exp_avg_sq: vars.iter().map(zeros).collect::<Result<_>>()?,
            step: 0,
        })
    }

    /// The global L2 norm of the gradients of `vars` (missing gradients count as zero).
    pub fn grad_norm(vars: &[Var], grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    /// One update: gradients scaled by `scale` (the clipping factor), then
    /// `p ← p(1 − lr·wd) − lr · m̂ / (√v̂ + eps)` with bias-corrected moments m̂, v̂.
    pub fn update(&mut self, vars: &[Var], grads: &GradStore, cfg: &AdamWConfig, scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        for (i, v) in vars.iter().enumerate() {
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            let g = g.affine(scale, 0.0)?;
            let m = ((&self.exp_avg[i] * cfg.beta1)? + (&g * (1.0 - cfg.beta1))?)?;
            let s = ((&self.exp_avg_sq[i] * cfg.beta2)? + (g.sqr()? * (1.0 - cfg.beta2))?)?;
            let denom = ((&s / bc2)?.sqrt()? + cfg.eps)?;
            let update = ((&m / bc1)? / denom)?;
            let p = v.as_tensor().affine(1.0 - cfg.lr * cfg.weight_decay, 0.0)?;
            v.set(&(p - (update * cfg.lr)?)?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = s;
        }
        Ok(())
    }
}
