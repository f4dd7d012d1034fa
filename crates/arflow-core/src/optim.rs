//! AdamW (Loshchilov & Hutter, 2019) with PyTorch's update order, and clipping by global norm.
//! Written with tensor ops so the same code runs on every device; f32 parameters take a fused update
//! instead: on the host (`HostStep`), and on a CUDA device (the `cuda` feature) the kernels of
//! `crate::cuda::adamw`, which also compute the global norm.

use candle_core::{backprop::GradStore, bail, CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor, Var};
use std::sync::Mutex;

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

/// Hyper-parameters of one fused host update, with the step's clipping scale and bias corrections.
#[derive(Clone, Copy)]
struct HostStep {
    cfg: AdamWConfig,
    scale: f64,
    bc1: f64,
    bc2: f64,
}

/// Elements per rayon task of the host update: below this, splitting costs more than it saves.
const UPDATE_CHUNK: usize = 1 << 14;

impl HostStep {
    /// `p`, `m`, `s` updated in place from `g`, in f64 arithmetic, split across the kernel threads.
    fn run(&self, p: &mut [f32], g: &[f32], m: &mut [f32], s: &mut [f32]) {
        use rayon::prelude::*;
        let HostStep { cfg, scale, bc1, bc2 } = *self;
        let decay = 1.0 - cfg.lr * cfg.weight_decay;
        type Chunk<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);
        let chunk = |(((p, g), m), s): Chunk| {
            for (((p, &g), m), s) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(s.iter_mut()) {
                let g = g as f64 * scale;
                let mt = cfg.beta1 * *m as f64 + (1.0 - cfg.beta1) * g;
                let st = cfg.beta2 * *s as f64 + (1.0 - cfg.beta2) * g * g;
                *p = (*p as f64 * decay - cfg.lr * (mt / bc1) / ((st / bc2).sqrt() + cfg.eps)) as f32;
                *m = mt as f32;
                *s = st as f32;
            }
        };
        if p.len() <= UPDATE_CHUNK {
            chunk((((p, g), m), s));
        } else {
            p.par_chunks_mut(UPDATE_CHUNK)
                .zip(g.par_chunks(UPDATE_CHUNK))
                .zip(m.par_chunks_mut(UPDATE_CHUNK))
                .zip(s.par_chunks_mut(UPDATE_CHUNK))
                .for_each(chunk);
        }
    }
}

/// The contiguous f32 elements of a CPU storage under `layout`.
fn host_slice<'a>(st: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let Some((a, b)) = layout.contiguous_offsets() else { bail!("adamw: a tensor of the update is not contiguous") };
    Ok(&st.as_slice::<f32>()?[a..b])
}

fn host_slice_mut<'a>(st: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let Some((a, b)) = layout.contiguous_offsets() else { bail!("adamw: a tensor of the update is not contiguous") };
    match st {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => bail!("adamw: the host update takes f32 tensors"),
    }
}

/// The update writes three tensors in place, and candle lends one storage mutably per in-place op,
/// so three ops nest: [`OnMoment1`] holds m (and reads g), [`OnMoment2`] holds s, [`OnParam`] holds p
/// and runs the fused pass. Each takes its own tensor's lock: the four tensors have distinct storages
/// (the moments are the optimizer's own, and backprop's gradients are fresh tensors, never a view of
/// the parameter).
struct OnMoment1<'a> {
    step: HostStep,
    p: &'a Tensor,
    s: &'a Tensor,
}

struct OnMoment2<'a> {
    step: HostStep,
    p: &'a Tensor,
    g: &'a [f32],
    m: Mutex<&'a mut [f32]>,
}

struct OnParam<'a> {
    step: HostStep,
    g: &'a [f32],
    m: Mutex<&'a mut [f32]>,
    s: Mutex<&'a mut [f32]>,
}

impl InplaceOp2 for OnMoment1<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(&self, m: &mut CpuStorage, lm: &Layout, g: &CpuStorage, lg: &Layout) -> Result<()> {
        let op = OnMoment2 { step: self.step, p: self.p, g: host_slice(g, lg)?, m: Mutex::new(host_slice_mut(m, lm)?) };
        self.s.inplace_op1(&op)
    }
}

impl InplaceOp1 for OnMoment2<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, ls: &Layout) -> Result<()> {
        let mut m = self.m.lock().map_err(|_| candle_core::Error::msg("adamw: poisoned lock"))?;
        let op = OnParam { step: self.step, g: self.g, m: Mutex::new(&mut **m), s: Mutex::new(host_slice_mut(s, ls)?) };
        self.p.inplace_op1(&op)
    }
}

impl InplaceOp1 for OnParam<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(&self, p: &mut CpuStorage, lp: &Layout) -> Result<()> {
        let poisoned = |_| candle_core::Error::msg("adamw: poisoned lock");
        let (mut m, mut s) = (self.m.lock().map_err(poisoned)?, self.s.lock().map_err(poisoned)?);
        let p = host_slice_mut(p, lp)?;
        if !(p.len() == self.g.len() && p.len() == m.len() && p.len() == s.len()) {
            bail!("adamw: parameter, gradient and moments differ in size");
        }
        self.step.run(p, self.g, &mut m, &mut s);
        Ok(())
    }
}

impl AdamW {
    /// The same update as one fused pass over host memory (CPU, f32), in f64 arithmetic, written in
    /// place into the parameter and both moments: no copies, no allocation, split across threads.
    /// (It was a copy of each tensor out to a Vec and a new tensor back: at 2.7M parameters that and
    /// the single-threaded loop were an eighth of a vector Real NVP step.)
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
        let step = HostStep { cfg: *cfg, scale, bc1, bc2 };
        let g = g.contiguous()?;
        let op = OnMoment1 { step, p: v.as_tensor(), s: &self.exp_avg_sq[i] };
        self.exp_avg[i].inplace_op2(&g, &op)
    }

    pub fn new(vars: &[Var]) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            exp_avg: vars.iter().map(zeros).collect::<Result<_>>()?,
            exp_avg_sq: vars.iter().map(zeros).collect::<Result<_>>()?,
            step: 0,
        })
    }

    /// The gradient of each of `vars` in `grads`, in order (`None` where none reached it).
    pub fn grads_of(vars: &[Var], grads: &GradStore) -> Vec<Option<Tensor>> {
        vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect()
    }

    /// The global L2 norm of `grads` (missing gradients count as zero).
    pub fn grad_norm(grads: &[Option<Tensor>]) -> Result<f64> {
        #[cfg(feature = "cuda")]
        if let Some(norm) = crate::cuda::adamw::grad_norm(grads)? {
            return Ok(norm);
        }
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
        Ok(sq.sqrt())
    }

    /// One update: gradients scaled by `scale` (the clipping factor), then
    /// `p ← p(1 − lr·wd) − lr · m̂ / (√v̂ + eps)` with bias-corrected moments m̂, v̂.
    /// `grads[i]` is the gradient of `vars[i]`; a var without one is left as it is.
    pub fn update(&mut self, vars: &[Var], grads: &[Option<Tensor>], cfg: &AdamWConfig, scale: f64) -> Result<()> {
        self.step += 1;
        // A real exponent, as PyTorch's `1 - beta ** step`: `powi` takes an i32, which a restored step
        // count past 2³¹ would wrap negative (bias corrections of ±∞, then NaN parameters).
        let t = self.step as f64;
        let bc1 = 1.0 - cfg.beta1.powf(t);
        let bc2 = 1.0 - cfg.beta2.powf(t);
        for (i, (v, g)) in vars.iter().zip(grads).enumerate() {
            let Some(g) = g else {
                continue;
            };
            if v.device().is_cpu() && v.dtype() == DType::F32 {
                self.update_cpu(i, v, g, cfg, scale, bc1, bc2)?;
                continue;
            }
            #[cfg(feature = "cuda")]
            if v.device().is_cuda() && v.dtype() == DType::F32 {
                let moments = (&self.exp_avg[i], &self.exp_avg_sq[i]);
                crate::cuda::adamw::update(v.as_tensor(), g, moments, cfg, (scale, bc1, bc2))?;
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
    /// A step count restored from a checkpoint can be far past 2³¹: the bias corrections are then 1
    /// and the update is finite, the plain AdamW step without warm-up correction.
    #[test]
    fn update_after_a_huge_restored_step_is_finite() -> Result<()> {
        let dev = Device::Cpu;
        let v = Var::from_vec(vec![1f32, -2.0, 0.5], 3, &dev)?;
        let mut opt = AdamW::new(std::slice::from_ref(&v))?;
        opt.step = (1u64 << 53) - 1;
        let cfg = AdamWConfig { lr: 0.1, ..Default::default() };
        let g = (v.as_tensor().sqr()?.sum_all()? * 0.5)?.backward()?;
        opt.update(std::slice::from_ref(&v), &AdamW::grads_of(std::slice::from_ref(&v), &g), &cfg, 1.0)?;
        // m = 0.1·g, s = 0.001·g², no bias correction: p − lr·0.1·g/(√0.001·|g| + eps) per element.
        let want = [1.0f64, -2.0, 0.5].map(|p| p - 0.1 * 0.1 * p / (0.001f64.sqrt() * p.abs() + 1e-8));
        let got = v.as_tensor().to_vec1::<f32>()?;
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn fused_cpu_update_matches_tensor_update() -> Result<()> {
        // One chunk (serial), and several chunks with a ragged last one (split across threads).
        for n in [37, 3 * UPDATE_CHUNK + 5] {
            fused_matches_tensor_update(n)?;
        }
        Ok(())
    }

    fn fused_matches_tensor_update(n: usize) -> Result<()> {
        let dev = Device::Cpu;
        let init: Vec<f64> = (0..n).map(|i| ((i * 13 % 17) as f64 - 8.0) * 0.1).collect();
        let v32 = Var::from_vec(init.iter().map(|&x| x as f32).collect::<Vec<_>>(), n, &dev)?;
        let v64 = Var::from_vec(init.clone(), n, &dev)?;
        let (mut o32, mut o64) = (AdamW::new(std::slice::from_ref(&v32))?, AdamW::new(std::slice::from_ref(&v64))?);
        let cfg = AdamWConfig { lr: 0.01, weight_decay: 0.1, ..Default::default() };
        for step in 0..5 {
            // loss = Σ c·p², a different c each step
            let c: Vec<f64> = (0..n).map(|i| ((i + step) % 5) as f64 - 2.0).collect();
            let c32 = Tensor::from_vec(c.iter().map(|&x| x as f32).collect::<Vec<_>>(), n, &dev)?;
            let c64 = Tensor::from_vec(c, n, &dev)?;
            let g32 = (v32.as_tensor().sqr()? * &c32)?.sum_all()?.backward()?;
            let g64 = (v64.as_tensor().sqr()? * &c64)?.sum_all()?.backward()?;
            let (v32s, v64s) = (std::slice::from_ref(&v32), std::slice::from_ref(&v64));
            o32.update(v32s, &AdamW::grads_of(v32s, &g32), &cfg, 0.5)?;
            o64.update(v64s, &AdamW::grads_of(v64s, &g64), &cfg, 0.5)?;
        }
        let a = v32.as_tensor().to_vec1::<f32>()?;
        let b = v64.as_tensor().to_vec1::<f64>()?;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((*x as f64 - y).abs() < 1e-6, "param {i}: {x} vs {y}");
        }
        let moved = a.iter().zip(&init).filter(|(x, y)| (**x as f64 - **y).abs() > 1e-3).count();
        assert!(moved > n / 2, "only {moved} of {n} parameters moved");
        // The first moment mixes gradients of either sign (|g| ≤ 2 here) and can cancel to near 0: its
        // f32 rounding is relative to |g|, not to itself. The second moment is a sum of squares.
        let m = o32.exp_avg[0].to_vec1::<f32>()?;
        let m64 = o64.exp_avg[0].to_vec1::<f64>()?;
        assert!(m.iter().zip(&m64).all(|(x, y)| (*x as f64 - y).abs() < 1e-6));
        let s = o32.exp_avg_sq[0].to_vec1::<f32>()?;
        let s64 = o64.exp_avg_sq[0].to_vec1::<f64>()?;
        assert!(s.iter().zip(&s64).all(|(x, y)| (*x as f64 - y).abs() < 1e-6 * y.abs().max(1e-3)));
        Ok(())
    }
}
