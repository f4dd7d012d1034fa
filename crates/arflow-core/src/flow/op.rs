//! The affine coupling as one candle op: forward and inverse are a single pass each, and the forward's
//! backward is the fused kernel rather than candle's graph of a dozen elementwise ops.
//!
//! Operands are packed so the op has three inputs and one output: `st = [s_raw | t]` `[N, 2D]`,
//! `params = [mask; scale]` `[2, D]`, output `[y | logdet]` `[N, D + 1]`. Backward needs nothing but
//! the inputs (it recomputes tanh and exp), so no activations are kept between the passes.
//!
//! On a CUDA device (the `cuda` feature) forward, inverse and backward run the kernels of
//! `crate::cuda::coupling` (f32).

use super::kernel::{coupling_backward_packed, coupling_forward_packed, coupling_inverse_packed};
use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Forward,
    Inverse,
}

struct AffineCoupling {
    n: usize,
    d: usize,
    direction: Direction,
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("affine coupling: {what} must be contiguous"),
    }
}

fn check_mask<T: Real>(params: &[T], d: usize) -> Result<()> {
    if let Some(b) = params[..d].iter().find(|&&b| b != T::zero() && b != T::one()) {
        bail!("affine coupling: mask entries must be 0 or 1, found {b:?}");
    }
    Ok(())
}

impl AffineCoupling {
    fn run<T: Real>(&self, input: &[T], st: &[T], params: &[T]) -> Result<Vec<T>> {
        let (n, d) = (self.n, self.d);
        check_mask(params, d)?;
        let mut out = vec![T::zero(); n * (d + 1)];
        match self.direction {
            Direction::Forward => coupling_forward_packed(n, d, input, st, params, &mut out),
            Direction::Inverse => coupling_inverse_packed(n, d, input, st, params, &mut out),
        }
        Ok(out)
    }
}

impl CustomOp3 for AffineCoupling {
    fn name(&self) -> &'static str {
        match self.direction {
            Direction::Forward => "arflow-affine-coupling",
            Direction::Inverse => "arflow-affine-coupling-inverse",
        }
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
        let shape = Shape::from((self.n, self.d + 1));
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(st), CpuStorage::F32(p)) => {
                let (x, st, p) = (contiguous(x, l1, "x")?, contiguous(st, l2, "st")?, contiguous(p, l3, "params")?);
                CpuStorage::F32(self.run(x, st, p)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(st), CpuStorage::F64(p)) => {
                let (x, st, p) = (contiguous(x, l1, "x")?, contiguous(st, l2, "st")?, contiguous(p, l3, "params")?);
                CpuStorage::F64(self.run(x, st, p)?)
            }
            _ => bail!("affine coupling: x, st and params must all be f32 or all f64"),
        };
        Ok((storage, shape))
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
        let inverse = self.direction == Direction::Inverse;
        let storage = crate::cuda::coupling::map((s1, l1), (s2, l2), (s3, l3), (self.n, self.d), inverse)?;
        Ok((storage, Shape::from((self.n, self.d + 1))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        st: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.direction != Direction::Forward {
            bail!("affine coupling: the inverse has no backward");
        }
        let (dx, dst, dparams) = backward(self.n, self.d, x, st, params, &grad_res.contiguous()?)?;
        Ok((Some(dx), Some(dst), Some(dparams)))
    }
}

/// Gradients `(dx [N, D], dst [N, 2D], dparams [2, D])` of the forward map from the upstream gradient
/// `grad = [dy | dlogdet]` `[N, D + 1]`, all operands contiguous. Reads candle's storage in place.
fn backward(
    n: usize,
    d: usize,
    x: &Tensor,
    st: &Tensor,
    params: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    // The CUDA kernels read the storages themselves (and make the gradients' tensors), so they are
    // dispatched before this function borrows them.
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return crate::cuda::coupling::backward(n, d, x, st, params, grad);
    }
    let (sx, lx) = x.storage_and_layout();
    let (ss, ls) = st.storage_and_layout();
    let (sp, lp) = params.storage_and_layout();
    let (sg, lg) = grad.storage_and_layout();
    let dev = x.device();
    match (&*sx, &*ss, &*sp, &*sg) {
        (
            Storage::Cpu(CpuStorage::F32(x)),
            Storage::Cpu(CpuStorage::F32(st)),
            Storage::Cpu(CpuStorage::F32(p)),
            Storage::Cpu(CpuStorage::F32(g)),
        ) => backward_cpu(
            n,
            d,
            contiguous(x, lx, "x")?,
            contiguous(st, ls, "st")?,
            contiguous(p, lp, "params")?,
            contiguous(g, lg, "grad")?,
            dev,
        ),
        (
            Storage::Cpu(CpuStorage::F64(x)),
            Storage::Cpu(CpuStorage::F64(st)),
            Storage::Cpu(CpuStorage::F64(p)),
            Storage::Cpu(CpuStorage::F64(g)),
        ) => backward_cpu(
            n,
            d,
            contiguous(x, lx, "x")?,
            contiguous(st, ls, "st")?,
            contiguous(p, lp, "params")?,
            contiguous(g, lg, "grad")?,
            dev,
        ),
        (Storage::Cpu(_), Storage::Cpu(_), Storage::Cpu(_), Storage::Cpu(_)) => {
            bail!("affine coupling: x, st, params and the gradient must all be f32 or all f64")
        }
        _ => bail!("affine coupling: x, st, params and the gradient must all be on one device"),
    }
}

fn backward_cpu<T: Real + candle_core::WithDType>(
    n: usize,
    d: usize,
    x: &[T],
    st: &[T],
    params: &[T],
    grad: &[T],
    dev: &candle_core::Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut dx = vec![T::zero(); n * d];
    let mut dst = vec![T::zero(); n * 2 * d];
    let mut dparams = vec![T::zero(); 2 * d];
    coupling_backward_packed(n, d, x, st, params, grad, &mut dx, &mut dst, &mut dparams);
    Ok((
        Tensor::from_vec(dx, (n, d), dev)?,
        Tensor::from_vec(dst, (n, 2 * d), dev)?,
        Tensor::from_vec(dparams, (2, d), dev)?,
    ))
}

/// `(N, D)` of a coupling call, with every shape and dtype checked.
fn dims(x: &Tensor, st: &Tensor, params: &Tensor, what: &str) -> Result<(usize, usize)> {
    let Ok((n, d)) = x.dims2() else { bail!("affine coupling: {what} must be [N, D], got shape {:?}", x.dims()) };
    if st.dims() != [n, 2 * d] {
        bail!("affine coupling: st = [s_raw | t] must be [N, 2D] = [{n}, {}], got shape {:?}", 2 * d, st.dims());
    }
    if params.dims() != [2, d] {
        bail!("affine coupling: params = [mask; scale] must be [2, D] = [2, {d}], got shape {:?}", params.dims());
    }
    let dt = x.dtype();
    if st.dtype() != dt || params.dtype() != dt || !matches!(dt, DType::F32 | DType::F64) {
        bail!(
            "affine coupling: {what}, st and params must all be f32 or all f64, got {:?}, {:?} and {:?}",
            dt,
            st.dtype(),
            params.dtype()
        );
    }
    Ok((n, d))
}

/// Splits the op's `[N, D + 1]` output into `([N, D], [N])`.
fn split(out: Tensor, d: usize) -> Result<(Tensor, Tensor)> {
    // With no rows any column is the (empty) log-det; column 0 keeps the view's offset at 0, where
    // candle's `to_vec1` would index past an empty storage at offset D.
    let col = if out.dim(0)? == 0 { 0 } else { d };
    Ok((out.narrow(1, 0, d)?, out.narrow(1, col, 1)?.squeeze(1)?))
}

/// The affine coupling of Real NVP, `x [N, D]` ↦ `(y [N, D], logdet [N])`, with `st = [s_raw | t]`
/// `[N, 2D]` from the conditioner and `params = [mask; scale]` `[2, D]` (mask entries 0 or 1):
/// `s = scale ⊙ tanh(s_raw)`, `y = b⊙x + (1−b)⊙(x⊙exp(s) + t)`, `logdet = Σ_d (1−b_d)·s`.
/// Differentiable in x, st and params (the mask's gradient is zero). y and logdet are views of one
/// `[N, D + 1]` tensor.
pub fn affine_coupling(x: &Tensor, st: &Tensor, params: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d) = dims(x, st, params, "x")?;
    let op = AffineCoupling { n, d, direction: Direction::Forward };
    let out = x.contiguous()?.apply_op3(&st.contiguous()?, &params.contiguous()?, op)?;
    split(out, d)
}

/// The inverse of [`affine_coupling`]: `y [N, D]` ↦ `(x [N, D], −logdet [N])`, the log-det of the
/// inverse map. Not differentiable (sampling needs no gradient).
pub fn affine_coupling_inverse(y: &Tensor, st: &Tensor, params: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d) = dims(y, st, params, "y")?;
    let op = AffineCoupling { n, d, direction: Direction::Inverse };
    let out = y.contiguous()?.apply_op3_no_bwd(&st.contiguous()?, &params.contiguous()?, &op)?;
    split(out, d)
}
