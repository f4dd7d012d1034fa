//! The output head and the per-pixel loss, fused into one candle op: two 1×1 convolutions with ReLUs,
//! `logits = W2 · relu(W1 · relu(y_L) + b1) + b2`, then the NLL of each pixel's target — categorical
//! `logsumexp(logits) − logits[t]` over 256 values, or Bernoulli `softplus(s) − t·s` on one logit.
//! Each position is a row, so both convolutions are GEMMs over all B·R·C positions. The op returns the
//! NLL of every position (`[N]`), so the model can sum it per image or average it over the batch.
//! Parameters: `out1.weight [H, H]`, `out1.bias [H]`, `out2.weight [O, H]`, `out2.bias [O]`, packed.

use super::{contiguous, host, Saved, PIXEL_LEVELS};
use crate::gemm::{matmul, View};
use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// The per-pixel distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelOutput {
    /// 256-way softmax over 8-bit values; inputs are value/255.
    Categorical,
    /// One logit of a binarised pixel; inputs are 0/1.
    Bernoulli,
}

impl PixelOutput {
    pub fn name(self) -> &'static str {
        match self {
            PixelOutput::Categorical => "categorical",
            PixelOutput::Bernoulli => "bernoulli",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "categorical" => Ok(PixelOutput::Categorical),
            "bernoulli" => Ok(PixelOutput::Bernoulli),
            _ => bail!("config: unknown pixel output {name:?}: expected categorical or bernoulli"),
        }
    }

    /// O, the logits per pixel.
    pub fn width(self) -> usize {
        match self {
            PixelOutput::Categorical => PIXEL_LEVELS,
            PixelOutput::Bernoulli => 1,
        }
    }

    /// Values a pixel takes: 256, or 2.
    pub fn levels(self) -> usize {
        match self {
            PixelOutput::Categorical => PIXEL_LEVELS,
            PixelOutput::Bernoulli => 2,
        }
    }

    /// The model input of pixel value `v`: v/255, or v itself for binarised data.
    pub fn input_value(self, v: u8) -> f32 {
        match self {
            PixelOutput::Categorical => (v as f64 / (PIXEL_LEVELS - 1) as f64) as f32,
            PixelOutput::Bernoulli => v as f32,
        }
    }
}

/// Sizes of the head over `rows` positions.
#[derive(Clone, Copy, Debug)]
pub struct HeadDims {
    pub rows: usize,
    pub hidden: usize,
    pub output: PixelOutput,
}

impl HeadDims {
    pub fn param_len(&self) -> usize {
        let (h, o) = (self.hidden, self.output.width());
        h * h + h + o * h + o
    }
}

/// The head's parameters, borrowed from the packed vector.
pub struct HeadWeights<'a, T> {
    pub w1: &'a [T],
    pub b1: &'a [T],
    pub w2: &'a [T],
    pub b2: &'a [T],
}

impl<'a, T> HeadWeights<'a, T> {
    pub fn unpack(hidden: usize, output: PixelOutput, p: &'a [T]) -> Self {
        let o = output.width();
        let (w1, rest) = p.split_at(hidden * hidden);
        let (b1, rest) = rest.split_at(hidden);
        let (w2, b2) = rest.split_at(o * hidden);
        HeadWeights { w1, b1, w2, b2: &b2[..o] }
    }
}

fn relu<T: Real>(v: &[T]) -> Vec<T> {
    v.iter().map(|&x| if x > T::zero() { x } else { T::zero() }).collect()
}

/// `z1 [N, H]` (before the second ReLU) and the logits `[N, O]` of `y [N, H]`.
pub fn head_forward<T: Real>(d: &HeadDims, y: &[T], w: &HeadWeights<T>) -> (Vec<T>, Vec<T>) {
    let (n, h, o) = (d.rows, d.hidden, d.output.width());
    let mut z1 = crate::rnn::common::broadcast_rows(w.b1, n);
    matmul(n, h, h, &mut z1, h, true, View::rows(&relu(y), h), View::transposed(w.w1, h));
    let mut logits = crate::rnn::common::broadcast_rows(w.b2, n);
    matmul(n, o, h, &mut logits, o, true, View::rows(&relu(&z1), h), View::transposed(w.w2, h));
    (z1, logits)
}

/// softplus(s) = log(1 + e^s), without overflow.
fn softplus(s: f64) -> f64 {
    if s > 0.0 {
        s + (-s).exp().ln_1p()
    } else {
        s.exp().ln_1p()
    }
}

/// The NLL (nats, in f64) of target `t` under one position's `logits`; writes ∂NLL/∂logits into `grad`.
pub fn pixel_nll<T: Real>(output: PixelOutput, logits: &[T], t: usize, grad: &mut [T]) -> f64 {
    match output {
        PixelOutput::Bernoulli => {
            let s = logits[0].to_f64().unwrap_or(f64::NAN);
            let t = t as f64;
            grad[0] = T::of(1.0 / (1.0 + (-s).exp()) - t);
            softplus(s) - t * s
        }
        PixelOutput::Categorical => {
            let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64().unwrap_or(f64::NAN)));
            let sum: f64 = logits.iter().map(|&v| (v.to_f64().unwrap_or(f64::NAN) - max).exp()).sum();
            let lse = max + sum.ln();
            for (k, (g, &v)) in grad.iter_mut().zip(logits).enumerate() {
                let p = (v.to_f64().unwrap_or(f64::NAN) - lse).exp();
                *g = T::of(if k == t { p - 1.0 } else { p });
            }
            lse - logits[t].to_f64().unwrap_or(f64::NAN)
        }
    }
}

/// Positions per rayon task of the loss pass.
const ROWS_PER_TASK: usize = 256;

/// The NLL of every position, `[N]`, and ∂NLL_r/∂logits_r `[N, O]`.
pub fn head_nll<T: Real>(d: &HeadDims, logits: &[T], targets: &[u32]) -> (Vec<T>, Vec<T>) {
    let o = d.output.width();
    let mut nll = vec![T::zero(); d.rows];
    let mut dlogits = vec![T::zero(); d.rows * o];
    nll.par_chunks_mut(ROWS_PER_TASK).zip(dlogits.par_chunks_mut(ROWS_PER_TASK * o)).enumerate().for_each(
        |(c, (nll, dl))| {
            for (k, (n, g)) in nll.iter_mut().zip(dl.chunks_exact_mut(o)).enumerate() {
                let r = c * ROWS_PER_TASK + k;
                *n = T::of(pixel_nll(d.output, &logits[r * o..(r + 1) * o], targets[r] as usize, g));
            }
        },
    );
    (nll, dlogits)
}

/// Backward of the head: from `dlogits` (already scaled by the upstream gradient of each row),
/// returns dL/dy `[N, H]` and the packed parameter gradient.
pub fn head_backward<T: Real>(d: &HeadDims, y: &[T], w: &HeadWeights<T>, z1: &[T], dlogits: &[T]) -> (Vec<T>, Vec<T>) {
    let (n, h, o) = (d.rows, d.hidden, d.output.width());
    let (a1, a2) = (relu(y), relu(z1));
    let mut dp = vec![T::zero(); d.param_len()];
    let (dw1, rest) = dp.split_at_mut(h * h);
    let (db1, rest) = rest.split_at_mut(h);
    let (dw2, db2) = rest.split_at_mut(o * h);
    // logits = a2 · W2ᵀ + b2
    matmul(o, h, n, dw2, h, false, View::transposed(dlogits, o), View::rows(&a2, h));
    column_sums(dlogits, o, db2);
    let mut dz1 = vec![T::zero(); n * h];
    matmul(n, h, o, &mut dz1, h, false, View::rows(dlogits, o), View::rows(w.w2, h));
    // a2 = relu(z1), z1 = a1 · W1ᵀ + b1
    for (d, &z) in dz1.iter_mut().zip(z1) {
        if z <= T::zero() {
            *d = T::zero();
        }
    }
    matmul(h, h, n, dw1, h, false, View::transposed(&dz1, h), View::rows(&a1, h));
    column_sums(&dz1, h, db1);
    let mut dy = vec![T::zero(); n * h];
    matmul(n, h, h, &mut dy, h, false, View::rows(&dz1, h), View::rows(w.w1, h));
    // a1 = relu(y)
    for (d, &v) in dy.iter_mut().zip(y) {
        if v <= T::zero() {
            *d = T::zero();
        }
    }
    (dy, dp)
}

/// `out[c] = Σ_r m[r, c]` of a row-major `[·, width]` matrix.
fn column_sums<T: Real>(m: &[T], width: usize, out: &mut [T]) {
    for row in m.chunks_exact(width) {
        for (s, &v) in out.iter_mut().zip(row) {
            *s = *s + v;
        }
    }
}

/// What forward keeps for backward: z1 and ∂NLL/∂logits.
struct HeadSaved<T> {
    z1: Vec<T>,
    dlogits: Vec<T>,
}

struct HeadNllOp {
    dims: HeadDims,
    keep: bool,
    saved: Saved,
}

impl HeadNllOp {
    fn forward<T: Real>(&self, y: &[T], p: &[T], targets: &[u32]) -> Vec<T> {
        let w = HeadWeights::unpack(self.dims.hidden, self.dims.output, p);
        let (z1, logits) = head_forward(&self.dims, y, &w);
        let (nll, dlogits) = head_nll(&self.dims, &logits, targets);
        if self.keep {
            self.saved.put(HeadSaved { z1, dlogits });
        }
        nll
    }

    fn backward<T: Real + WithDType>(
        &self,
        y: &Tensor,
        p: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.saved.with("pixel head", |saved: &HeadSaved<T>| {
            let (yv, pv, gv) = (host::<T>(y)?, host::<T>(p)?, host::<T>(grad)?);
            let o = self.dims.output.width();
            // ∂NLL_r/∂logits_r from forward, times the upstream gradient of row r.
            let mut dlogits = saved.dlogits.clone();
            for (row, &g) in dlogits.chunks_exact_mut(o).zip(&gv) {
                for v in row {
                    *v *= g;
                }
            }
            let w = HeadWeights::unpack(self.dims.hidden, self.dims.output, &pv);
            let (dy, dp) = head_backward(&self.dims, &yv, &w, &saved.z1, &dlogits);
            Ok((Some(Tensor::from_vec(dy, y.shape(), y.device())?), Some(Tensor::from_vec(dp, p.shape(), p.device())?)))
        })
    }
}

impl CustomOp3 for HeadNllOp {
    fn name(&self) -> &'static str {
        "arflow-pixel-head-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let t = match s3 {
            CpuStorage::U32(t) => contiguous(t, l3, "targets")?,
            _ => bail!("pixel head: targets must be u32"),
        };
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(p)) => {
                CpuStorage::F32(self.forward(contiguous(y, l1, "y")?, contiguous(p, l2, "params")?, t))
            }
            (CpuStorage::F64(y), CpuStorage::F64(p)) => {
                CpuStorage::F64(self.forward(contiguous(y, l1, "y")?, contiguous(p, l2, "params")?, t))
            }
            _ => bail!("pixel head: y and params must both be f32 or both f64"),
        };
        Ok((out, Shape::from(self.dims.rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (nll, saved) = crate::cuda::pixel::head_forward(&self.dims, (s1, l1), (s2, l2), (s3, l3), self.keep)?;
        if let Some(saved) = saved {
            self.saved.put(saved);
        }
        Ok((nll, Shape::from(self.dims.rows)))
    }

    fn bwd(
        &self,
        y: &Tensor,
        p: &Tensor,
        _targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            return self.saved.with("pixel head", |saved: &crate::cuda::pixel::HeadSaved| {
                let (dy, dp) = crate::cuda::pixel::head_backward(&self.dims, saved, y, p, grad)?;
                Ok((Some(dy), Some(dp), None))
            });
        }
        let (dy, dp) = match y.dtype() {
            DType::F32 => self.backward::<f32>(y, p, grad)?,
            _ => self.backward::<f64>(y, p, grad)?,
        };
        Ok((dy, dp, None))
    }
}

/// The NLL `[N]` of every position's target (`targets [N]` u32, checked by the caller to lie in the
/// output's range) under the head applied to `y [N, H]` with the packed `params`.
pub fn head_nll_op(output: PixelOutput, y: &Tensor, params: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, hidden) = y.dims2()?;
    let dims = HeadDims { rows, hidden, output };
    if params.elem_count() != dims.param_len() || targets.elem_count() != rows {
        bail!("pixel head: params or targets have the wrong size");
    }
    let keep = y.track_op() || params.track_op();
    let op = HeadNllOp { dims, keep, saved: Saved::default() };
    let (y, params, targets) = (y.contiguous()?, params.contiguous()?, targets.contiguous()?);
    if keep {
        y.apply_op3(&params, &targets, op)
    } else {
        y.apply_op3_no_bwd(&params, &targets, &op)
    }
}
