//! AdamW on CUDA (the CUDA side of [`crate::optim`]), f32: the update of one parameter is one kernel
//! (`adamw_step`) writing the parameter and both moments in place, and the global gradient norm for
//! clipping is a deterministic two-pass reduction (`sq_sum_partial` per gradient into f64 partials, then
//! `sum_partials` in one block) read back as one value.
//!
//! The update writes three tensors in place, and candle lends one storage mutably per in-place op, so
//! three ops nest as on the host: [`OnMoment1`] holds m (and reads g), [`OnMoment2`] holds s, [`OnParam`]
//! holds p and launches the kernel.

use super::{elementwise, view, with_views, Kernel, ADAMW};
use crate::optim::AdamWConfig;
use candle_core::cuda::cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use candle_core::{bail, CpuStorage, CudaStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor};
use std::sync::Mutex;

/// Threads per block of the norm's kernels: `NORM_THREADS` in adamw.cu.
const NORM_THREADS: usize = 256;
/// Most blocks of `sq_sum_partial` for one gradient (each thread strides over the rest).
const NORM_MAX_BLOCKS: usize = 1024;

/// The kernel's scalar arguments for one step, f32, from the host's f64 hyper-parameters.
#[derive(Clone, Copy)]
struct Step {
    scale: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    lr: f32,
    eps: f32,
    decay: f32,
    bc1: f32,
    bc2: f32,
}

/// The f32 values of a CUDA storage under a contiguous layout, writable.
fn view_mut<'a>(s: &'a mut CudaStorage, l: &Layout, what: &str) -> Result<CudaViewMut<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("adamw: {what} must be contiguous") };
    Ok(s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b))
}

fn host_refused() -> Result<()> {
    bail!("adamw: the CUDA update's tensors must all be on the CUDA device")
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::msg("adamw: poisoned lock")
}

struct OnMoment1<'a> {
    step: Step,
    p: &'a Tensor,
    s: &'a Tensor,
}

struct OnMoment2<'a> {
    step: Step,
    p: &'a Tensor,
    g: CudaView<'a, f32>,
    m: Mutex<CudaViewMut<'a, f32>>,
}

struct OnParam<'a, 'b> {
    step: Step,
    g: &'a CudaView<'b, f32>,
    m: Mutex<&'a mut CudaViewMut<'b, f32>>,
    s: Mutex<CudaViewMut<'a, f32>>,
}

impl InplaceOp2 for OnMoment1<'_> {
    fn name(&self) -> &'static str {
        "adamw-update-cuda"
    }
    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        host_refused()
    }
    fn cuda_fwd(&self, m: &mut CudaStorage, lm: &Layout, g: &CudaStorage, lg: &Layout) -> Result<()> {
        let g = view(g, lg, "the gradient")?;
        let op = OnMoment2 { step: self.step, p: self.p, g, m: Mutex::new(view_mut(m, lm, "exp_avg")?) };
        self.s.inplace_op1(&op)
    }
}

impl InplaceOp1 for OnMoment2<'_> {
    fn name(&self) -> &'static str {
        "adamw-update-cuda"
    }
    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> Result<()> {
        host_refused()
    }
    fn cuda_fwd(&self, s: &mut CudaStorage, ls: &Layout) -> Result<()> {
        let mut m = self.m.lock().map_err(poisoned)?;
        let op = OnParam {
            step: self.step,
            g: &self.g,
            m: Mutex::new(&mut *m),
            s: Mutex::new(view_mut(s, ls, "exp_avg_sq")?),
        };
        self.p.inplace_op1(&op)
    }
}

impl InplaceOp1 for OnParam<'_, '_> {
    fn name(&self) -> &'static str {
        "adamw-update-cuda"
    }
    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> Result<()> {
        host_refused()
    }
    fn cuda_fwd(&self, p: &mut CudaStorage, lp: &Layout) -> Result<()> {
        let dev = p.device.clone();
        let mut p = view_mut(p, lp, "the parameter")?;
        let (mut m, mut s) = (self.m.lock().map_err(poisoned)?, self.s.lock().map_err(poisoned)?);
        let n = p.len();
        if !(n == self.g.len() && n == m.len() && n == s.len()) {
            bail!("adamw: parameter, gradient and moments differ in size");
        }
        let Step { scale, beta1, one_minus_beta1, beta2, one_minus_beta2, lr, eps, decay, bc1, bc2 } = self.step;
        let f = Kernel::new(&dev, &ADAMW, "adamw_step")?;
        let n_i = n as i64;
        let mut args = f.args();
        args.arg(&mut p).arg(self.g).arg(&mut **m).arg(&mut *s).arg(&n_i);
        args.arg(&scale).arg(&beta1).arg(&one_minus_beta1).arg(&beta2).arg(&one_minus_beta2);
        args.arg(&lr).arg(&eps).arg(&decay).arg(&bc1).arg(&bc2);
        super::launch(args, elementwise(n)?)
    }
}

/// One AdamW update of the f32 CUDA parameter `p` from its gradient `g`, written in place into `p` and
/// its moments `m`, `s`: the update of [`crate::optim::AdamW::update`], the gradient scaled by `scale`
/// (the clipping factor), `bc1`, `bc2` the step's bias corrections.
pub(crate) fn update(
    p: &Tensor,
    g: &Tensor,
    (m, s): (&Tensor, &Tensor),
    cfg: &AdamWConfig,
    (scale, bc1, bc2): (f64, f64, f64),
) -> Result<()> {
    for (what, t) in [("parameter", p), ("gradient", g), ("exp_avg", m), ("exp_avg_sq", s)] {
        if t.dtype() != DType::F32 || !t.device().is_cuda() {
            bail!(
                "adamw: the CUDA update takes f32 tensors on the device, the {what} is {:?} on {:?}",
                t.dtype(),
                t.device()
            );
        }
    }
    let step = Step {
        scale: scale as f32,
        beta1: cfg.beta1 as f32,
        one_minus_beta1: (1.0 - cfg.beta1) as f32,
        beta2: cfg.beta2 as f32,
        one_minus_beta2: (1.0 - cfg.beta2) as f32,
        lr: cfg.lr as f32,
        eps: cfg.eps as f32,
        decay: (1.0 - cfg.lr * cfg.weight_decay) as f32,
        bc1: bc1 as f32,
        bc2: bc2 as f32,
    };
    let g = g.contiguous()?;
    m.inplace_op2(&g, &OnMoment1 { step, p, s })
}

/// The global L2 norm of `grads` (missing gradients count as zero) computed on the device, or `None`
/// where they are not all f32 CUDA tensors (or there are none): then the caller's tensor ops do it.
pub(crate) fn grad_norm(grads: &[Option<Tensor>]) -> Result<Option<f64>> {
    let gs: Vec<&Tensor> = grads.iter().flatten().collect();
    if gs.is_empty() || gs.iter().any(|g| g.dtype() != DType::F32 || !g.device().is_cuda()) {
        return Ok(None);
    }
    let blocks: Vec<usize> = gs.iter().map(|g| g.elem_count().div_ceil(NORM_THREADS).min(NORM_MAX_BLOCKS)).collect();
    let total: usize = blocks.iter().sum();
    if total == 0 {
        return Ok(Some(0.0));
    }
    let sq = with_views(&gs, |dev, views| {
        let mut partial = dev.alloc_zeros::<f64>(total)?;
        let part = Kernel::new(dev, &ADAMW, "sq_sum_partial")?;
        let mut at = 0;
        for (v, &k) in views.iter().zip(&blocks) {
            if k == 0 {
                continue;
            }
            let n = v.len() as i64;
            let mut dst = partial.slice_mut(at..at + k);
            let mut args = part.args();
            args.arg(v).arg(&n).arg(&mut dst);
            let cfg = LaunchConfig {
                grid_dim: (k as u32, 1, 1),
                block_dim: (NORM_THREADS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            super::launch(args, cfg)?;
            at += k;
        }
        let mut out = dev.alloc_zeros::<f64>(1)?;
        let sum = Kernel::new(dev, &ADAMW, "sum_partials")?;
        let total_i = super::int(total, "partial sums")?;
        let mut args = sum.args();
        args.arg(&partial).arg(&total_i).arg(&mut out);
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (NORM_THREADS as u32, 1, 1), shared_mem_bytes: 0 };
        super::launch(args, cfg)?;
        Ok(dev.memcpy_dtov(&out)?[0])
    })?;
    Ok(Some(sq.sqrt()))
}
