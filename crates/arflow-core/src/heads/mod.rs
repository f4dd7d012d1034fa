//! Likelihood heads for real-valued outputs: the negative log-likelihood of targets `y [rows, D]` under
//! the distribution that a network's raw outputs `raw [rows, outSize]` parameterise, per row, as one
//! candle op with a hand-written backward.
//!
//! - [`gaussian`]: diagonal Gaussian, `[μ (D), s (D)]`, σ = exp(s).
//! - [`mdn`]: mixture density network (Graves 2013), K components, bivariate with correlation for D = 2.
//! - [`linear`]: a model's linear output layer fused with either head (what the series model trains).
//!
//! Layouts, formulas and numerical safeguards are those of the TypeScript reference,
//! `src/backend/js/mixture.ts`: the tests check the two against each other value for value. The op
//! computes in f64 whatever the storage type, and keeps ∂NLL/∂raw from the forward pass (the row's
//! responsibilities are at hand there), so backward is one scaling pass.

pub mod gaussian;
pub mod linear;
pub mod mdn;

pub use linear::{linear_head_nll, linear_raw};

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// ½ log 2π.
pub const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// ρ = RHO_SCALE · tanh(raw) bounds |ρ| away from 1: 1 − ρ² ≥ ~2e-6 for every raw value.
pub const RHO_SCALE: f64 = 1.0 - 1e-6;

/// The distribution a head's raw outputs parameterise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Diagonal Gaussian over D variables.
    Gaussian { dim: usize },
    /// Mixture of K Gaussians over D variables (full 2 × 2 covariance when D = 2, else diagonal).
    Mdn { dim: usize, components: usize },
}

impl Head {
    /// `"gaussian"` or `"mdn"`: the names configs and checkpoints use.
    pub fn name(&self) -> &'static str {
        match self {
            Head::Gaussian { .. } => "gaussian",
            Head::Mdn { .. } => "mdn",
        }
    }

    /// The head called `name` (`gaussian` or `mdn`); `components` is K and applies to the mixture only.
    pub fn parse(name: &str, dim: usize, components: Option<usize>) -> Result<Head> {
        let head = match (name, components) {
            ("gaussian", None) => Head::Gaussian { dim },
            ("gaussian", Some(k)) => bail!("config: components (K = {k}) apply to the mdn likelihood only"),
            ("mdn", Some(components)) => Head::Mdn { dim, components },
            ("mdn", None) => bail!("config: the mdn likelihood needs its number of components K"),
            _ => bail!("config: unknown likelihood {name:?}: expected gaussian or mdn"),
        };
        head.validate()?;
        Ok(head)
    }

    pub fn validate(&self) -> Result<()> {
        if self.dim() == 0 {
            bail!("config: a likelihood head needs dim ≥ 1");
        }
        if let Head::Mdn { components: 0, .. } = self {
            bail!("config: components (K) must be at least 1, got 0");
        }
        Ok(())
    }

    /// D, the variables of one target row.
    pub fn dim(&self) -> usize {
        match *self {
            Head::Gaussian { dim } | Head::Mdn { dim, .. } => dim,
        }
    }

    /// Raw outputs per row.
    pub fn output_size(&self) -> usize {
        match *self {
            Head::Gaussian { dim } => gaussian::output_size(dim),
            Head::Mdn { dim, components } => mdn::output_size(dim, components),
        }
    }

    /// NLL (nats) of one target row under one raw row; ∂NLL/∂raw into `grad` when given.
    pub fn row_nll(&self, raw: &[f64], y: &[f64], grad: Option<&mut [f64]>, sc: &mut mdn::Scratch) -> f64 {
        match *self {
            Head::Gaussian { dim } => gaussian::row_nll(dim, raw, y, grad),
            Head::Mdn { dim, components } => mdn::row_nll(dim, components, raw, y, grad, sc),
        }
    }

    /// Per-row NLL of `raw [rows, outSize]` against `y [rows, D]`, and ∂NLL_r/∂raw_r when `keep`.
    pub fn rows_nll(&self, raw: &[f64], y: &[f64], keep: bool) -> (Vec<f64>, Option<Vec<f64>>) {
        let (size, dim) = (self.output_size(), self.dim());
        let rows = raw.len() / size;
        let mut nll = vec![0.0; rows];
        let mut grad = keep.then(|| vec![0.0; rows * size]);
        let block = |first: usize, nll: &mut [f64], mut grad: Option<&mut [f64]>| {
            let mut sc = mdn::Scratch::default();
            for (i, n) in nll.iter_mut().enumerate() {
                let r = first + i;
                let g = grad.as_deref_mut().map(|g| &mut g[i * size..(i + 1) * size]);
                *n = self.row_nll(&raw[r * size..(r + 1) * size], &y[r * dim..(r + 1) * dim], g, &mut sc);
            }
        };
        match grad.as_mut() {
            Some(g) => nll
                .par_chunks_mut(ROWS_PER_TASK)
                .zip(g.par_chunks_mut(ROWS_PER_TASK * size))
                .enumerate()
                .for_each(|(c, (n, g))| block(c * ROWS_PER_TASK, n, Some(g))),
            None => nll.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(c, n)| block(c * ROWS_PER_TASK, n, None)),
        }
        (nll, grad)
    }
}

/// Rows one thread scores at a time: a row is ~K·D exponentials, too little work to hand out alone.
const ROWS_PER_TASK: usize = 64;

struct HeadNllOp {
    head: Head,
    keep: bool,
    /// ∂NLL_r/∂raw `[rows, outSize]` from the forward pass, in f64.
    grad: Mutex<Option<Vec<f64>>>,
    /// The same from a forward pass on a CUDA device, f32 (`crate::cuda::heads`).
    #[cfg(feature = "cuda")]
    cuda_grad: Mutex<Option<candle_core::cuda::cudarc::driver::CudaSlice<f32>>>,
}

fn as_f64(s: &CpuStorage, l: &Layout, what: &str) -> Result<Vec<f64>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("likelihood head: {what} must be contiguous") };
    Ok(match s {
        CpuStorage::F32(v) => v[a..b].iter().map(|&x| x as f64).collect(),
        CpuStorage::F64(v) => v[a..b].to_vec(),
        _ => bail!("likelihood head: {what} must be f32 or f64"),
    })
}

impl CustomOp2 for HeadNllOp {
    fn name(&self) -> &'static str {
        "arflow-head-nll"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (raw, y) = (as_f64(s1, l1, "raw outputs")?, as_f64(s2, l2, "targets")?);
        let (nll, grad) = self.head.rows_nll(&raw, &y, self.keep);
        let rows = nll.len();
        *self.grad.lock().expect("head state poisoned") = grad;
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(nll.iter().map(|&v| v as f32).collect()),
            _ => CpuStorage::F64(nll),
        };
        Ok((out, Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (nll, grad) = crate::cuda::heads::forward(self.head, (s1, l1), (s2, l2), self.keep)?;
        *self.cuda_grad.lock().expect("head state poisoned") = grad;
        Ok((nll, Shape::from(l1.dims()[0])))
    }

    fn bwd(
        &self,
        raw: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if raw.device().is_cuda() {
            let saved = self.cuda_grad.lock().expect("head state poisoned");
            return Ok((Some(crate::cuda::heads::backward(saved.as_ref(), raw, grad_res)?), None));
        }
        let up = grad_res.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let saved = self.grad.lock().expect("head state poisoned");
        let Some(g) = saved.as_ref() else {
            bail!("likelihood head: backward without a forward pass that kept gradients")
        };
        let size = self.head.output_size();
        let d: Vec<f64> = g.chunks_exact(size).zip(&up).flat_map(|(row, &u)| row.iter().map(move |&v| v * u)).collect();
        let d = Tensor::from_vec(d, raw.shape(), raw.device())?.to_dtype(raw.dtype())?;
        Ok((Some(d), None))
    }
}

/// Per-row NLL `[rows]` (nats) of `y [rows, D]` under `raw [rows, outSize]`, differentiable in `raw`
/// (targets are data: no gradient). Both must be f32 or both f64; the arithmetic is f64 either way.
pub fn head_nll(head: Head, raw: &Tensor, y: &Tensor) -> Result<Tensor> {
    head.validate()?;
    let (rows, size) = raw.dims2()?;
    if size != head.output_size() {
        bail!("{} head: raw outputs have {size} values per row, expected {}", head.name(), head.output_size());
    }
    if y.dims() != [rows, head.dim()] {
        bail!("{} head: targets have shape {:?}, expected [{rows}, {}]", head.name(), y.dims(), head.dim());
    }
    if raw.dtype() != y.dtype() || !matches!(raw.dtype(), DType::F32 | DType::F64) {
        bail!("{} head: raw outputs and targets must both be f32 or both f64", head.name());
    }
    let keep = raw.track_op();
    let op = HeadNllOp {
        head,
        keep,
        grad: Mutex::new(None),
        #[cfg(feature = "cuda")]
        cuda_grad: Mutex::new(None),
    };
    let (raw, y) = (raw.contiguous()?, y.contiguous()?);
    if keep {
        raw.apply_op2(&y, op)
    } else {
        raw.apply_op2_no_bwd(&y, &op)
    }
}

/// [`head_nll`] forward and backward on f64 slices, through the candle op: the per-row NLL and
/// ∂(Σ rows NLL)/∂raw. What the binding exposes for the tests against the TypeScript reference.
pub fn head_nll_f64(head: Head, raw: &[f64], y: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    head.validate()?;
    let (size, dim) = (head.output_size(), head.dim());
    if !raw.len().is_multiple_of(size) || raw.len() / size * dim != y.len() {
        bail!(
            "{} head: {} raw outputs and {} targets are not rows of {size} and {dim}",
            head.name(),
            raw.len(),
            y.len()
        );
    }
    let rows = y.len() / dim;
    let dev = candle_core::Device::Cpu;
    let r = candle_core::Var::from_slice(raw, (rows, size), &dev)?;
    let t = Tensor::from_slice(y, (rows, dim), &dev)?;
    let nll = head_nll(head, r.as_tensor(), &t)?;
    let grad = match nll.sum_all()?.backward()?.get(r.as_tensor()) {
        Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
        None => vec![0.0; raw.len()],
    };
    Ok((nll.to_vec1::<f64>()?, grad))
}

#[cfg(test)]
mod tests;
