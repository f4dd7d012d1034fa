//! AdamW (Loshchilov & Hutter, 2019) with PyTorch's update order, and clipping by global norm.
//! Written with tensor ops so the same code runs on every device.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};

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
    /// The same update as one fused pass over host memory (CPU, f32), in f64 arithmetic.
    #[allow(clippy::too_many_arguments)]
    fn update_cpu(
        &mut self,
        i: usize,
        v: &Var,
        g: &Tensor,
        cfg: &AdamWConfig,
        scale: f64,
        bc1: f64,
        bc2: f64,
    ) -> Result<()> {
        let shape = v.as_tensor().shape().clone();
        let dev = v.device().clone();
        let mut p = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let mut m = self.exp_avg[i].flatten_all()?.to_vec1::<f32>()?;
        let mut s = self.exp_avg_sq[i].flatten_all()?.to_vec1::<f32>()?;
        let decay = 1.0 - cfg.lr * cfg.weight_decay;
        for (((p, &g), m), s) in p.iter_mut().zip(&g).zip(m.iter_mut()).zip(s.iter_mut()) {
            let g = g as f64 * scale;
            let mt = cfg.beta1 * *m as f64 + (1.0 - cfg.beta1) * g;
            let st = cfg.beta2 * *s as f64 + (1.0 - cfg.beta2) * g * g;
            *p = (*p as f64 * decay - cfg.lr * (mt / bc1) / ((st / bc2).sqrt() + cfg.eps)) as f32;
            *m = mt as f32;
            *s = st as f32;
        }
        v.set(&Tensor::from_vec(p, shape.clone(), &dev)?)?;
        self.exp_avg[i] = Tensor::from_vec(m, shape.clone(), &dev)?;
        self.exp_avg_sq[i] = Tensor::from_vec(s, shape, &dev)?;
        Ok(())
    }

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
            if v.device().is_cpu() && v.dtype() == DType::F32 {
                self.update_cpu(i, v, g, cfg, scale, bc1, bc2)?;
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused host update (f32 vars) and the tensor-op update (taken by f64 vars, and by every
    /// var on other devices) are the same AdamW, step after step.
    #[test]
    fn fused_cpu_update_matches_tensor_update() -> Result<()> {
        let dev = Device::Cpu;
        let init: Vec<f64> = (0..37).map(|i| ((i * 13 % 17) as f64 - 8.0) * 0.1).collect();
        let v32 = Var::from_vec(init.iter().map(|&x| x as f32).collect::<Vec<_>>(), 37, &dev)?;
        let v64 = Var::from_vec(init.clone(), 37, &dev)?;
        let (mut o32, mut o64) = (AdamW::new(std::slice::from_ref(&v32))?, AdamW::new(std::slice::from_ref(&v64))?);
        let cfg = AdamWConfig { lr: 0.01, weight_decay: 0.1, ..Default::default() };
        for step in 0..5 {
            // loss = Σ c·p², a different c each step
            let c: Vec<f64> = (0..37).map(|i| ((i + step) % 5) as f64 - 2.0).collect();
            let c32 = Tensor::from_vec(c.iter().map(|&x| x as f32).collect::<Vec<_>>(), 37, &dev)?;
            let c64 = Tensor::from_vec(c, 37, &dev)?;
            let g32 = (v32.as_tensor().sqr()? * &c32)?.sum_all()?.backward()?;
            let g64 = (v64.as_tensor().sqr()? * &c64)?.sum_all()?.backward()?;
            o32.update(std::slice::from_ref(&v32), &g32, &cfg, 0.5)?;
            o64.update(std::slice::from_ref(&v64), &g64, &cfg, 0.5)?;
        }
        let a = v32.as_tensor().to_vec1::<f32>()?;
        let b = v64.as_tensor().to_vec1::<f64>()?;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((*x as f64 - y).abs() < 1e-6, "param {i}: {x} vs {y}");
        }
        let m = o32.exp_avg_sq[0].to_vec1::<f32>()?;
        let n = o64.exp_avg_sq[0].to_vec1::<f64>()?;
        assert!(m.iter().zip(&n).all(|(x, y)| (*x as f64 - y).abs() < 1e-6 * y.abs().max(1e-3)));
        Ok(())
    }
}
