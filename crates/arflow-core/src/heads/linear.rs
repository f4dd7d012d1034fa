//! The linear output layer and a likelihood head as one candle op: `raw = h · Wᵀ + b`, then the per-row
//! NLL of [`Head::rows_nll`]. Composed from candle's ops, the backward of the broadcast bias add and of
//! the transposed matmul over `[rows, outSize]` cost more than the whole recurrent layer for a mixture
//! head (outSize = 96 for K = 16, D = 2); here backward is two GEMMs and a column sum:
//!
//! G = diag(∂L/∂NLL) · ∂NLL/∂raw,  ∂L/∂W = Gᵀ h,  ∂L/∂b = Σ_rows G,  ∂L/∂h = G W.
//!
//! `params` packs `[W (outSize × H, row-major), b (outSize)]`, PyTorch's `Linear` weight and bias.

use super::Head;
use crate::gemm::{matmul, View};
use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use std::sync::Mutex;

struct LinearHeadOp {
    head: Head,
    rows: usize,
    hidden: usize,
    keep: bool,
    /// ∂NLL_r/∂raw `[rows, outSize]` from the forward pass, in f64.
    grad: Mutex<Option<Vec<f64>>>,
    /// The same from a forward pass on a CUDA device, f32 (`crate::cuda::heads`).
    #[cfg(feature = "cuda")]
    cuda_grad: Mutex<Option<candle_core::cuda::cudarc::driver::CudaSlice<f32>>>,
}

fn slice<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("linear head: {what} must be contiguous"),
    }
}

impl LinearHeadOp {
    fn forward<T: Real + WithDType>(&self, h: &[T], p: &[T], y: &[T]) -> (Vec<T>, Option<Vec<f64>>) {
        let (rows, hidden, out) = (self.rows, self.hidden, self.head.output_size());
        let (w, b) = p.split_at(out * hidden);
        let mut raw: Vec<T> = (0..rows).flat_map(|_| b.iter().copied()).collect();
        matmul(rows, out, hidden, &mut raw, out, true, View::rows(h, hidden), View::transposed(w, hidden));
        let raw64: Vec<f64> = raw.iter().map(|v| v.to_f64().unwrap_or(f64::NAN)).collect();
        let y64: Vec<f64> = y.iter().map(|v| v.to_f64().unwrap_or(f64::NAN)).collect();
        let (nll, grad) = self.head.rows_nll(&raw64, &y64, self.keep);
        (nll.into_iter().map(T::of).collect(), grad)
    }

    fn backward<T: Real + WithDType + std::ops::AddAssign>(
        &self,
        g: &[f64],
        h: &Tensor,
        params: &Tensor,
        up: &[f64],
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, hidden, out) = (self.rows, self.hidden, self.head.output_size());
        let hv = h.flatten_all()?.to_vec1::<T>()?;
        let pv = params.flatten_all()?.to_vec1::<T>()?;
        let w = &pv[..out * hidden];
        // G = diag(upstream) · ∂NLL/∂raw, in the storage type.
        let gs: Vec<T> =
            g.chunks_exact(out).zip(up).flat_map(|(row, &u)| row.iter().map(move |&v| T::of(v * u))).collect();
        let mut dp = vec![T::zero(); pv.len()];
        let (dw, db) = dp.split_at_mut(out * hidden);
        matmul(out, hidden, rows, dw, hidden, false, View::transposed(&gs, out), View::rows(&hv, hidden));
        for row in gs.chunks_exact(out) {
            for (d, &v) in db.iter_mut().zip(row) {
                *d += v;
            }
        }
        let mut dh = vec![T::zero(); rows * hidden];
        matmul(rows, hidden, out, &mut dh, hidden, false, View::rows(&gs, out), View::rows(w, hidden));
        let dev = h.device();
        Ok((Some(Tensor::from_vec(dh, h.shape(), dev)?), Some(Tensor::from_vec(dp, params.shape(), dev)?)))
    }
}

impl CustomOp3 for LinearHeadOp {
    fn name(&self) -> &'static str {
        "arflow-linear-head-nll"
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
        let (storage, grad) = match (s1, s2, s3) {
            (CpuStorage::F32(h), CpuStorage::F32(p), CpuStorage::F32(y)) => {
                let (nll, g) = self.forward(slice(h, l1, "h")?, slice(p, l2, "params")?, slice(y, l3, "targets")?);
                (CpuStorage::F32(nll), g)
            }
            (CpuStorage::F64(h), CpuStorage::F64(p), CpuStorage::F64(y)) => {
                let (nll, g) = self.forward(slice(h, l1, "h")?, slice(p, l2, "params")?, slice(y, l3, "targets")?);
                (CpuStorage::F64(nll), g)
            }
            _ => bail!("linear head: h, params and targets must all be f32 or all f64"),
        };
        *self.grad.lock().expect("linear head state poisoned") = grad;
        Ok((storage, Shape::from(self.rows)))
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
        let dims = (self.rows, self.hidden);
        let (nll, grad) = crate::cuda::heads::linear_forward(self.head, dims, (s1, l1), (s2, l2), (s3, l3), self.keep)?;
        *self.cuda_grad.lock().expect("linear head state poisoned") = grad;
        Ok((nll, Shape::from(self.rows)))
    }

    fn bwd(
        &self,
        h: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if h.device().is_cuda() {
            let saved = self.cuda_grad.lock().expect("linear head state poisoned");
            let dims = (self.rows, self.hidden);
            let (dh, dp) = crate::cuda::heads::linear_backward(self.head, dims, saved.as_ref(), h, params, grad_res)?;
            return Ok((Some(dh), Some(dp), None));
        }
        let up = grad_res.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let saved = self.grad.lock().expect("linear head state poisoned");
        let Some(g) = saved.as_ref() else { bail!("linear head: backward without a forward pass that kept gradients") };
        let (dh, dp) = match h.dtype() {
            DType::F32 => self.backward::<f32>(g, h, params, &up)?,
            _ => self.backward::<f64>(g, h, params, &up)?,
        };
        Ok((dh, dp, None))
    }
}

/// Per-row NLL `[rows]` (nats) of `y [rows, D]` under the head's distribution with raw outputs
/// `h [rows, H] · Wᵀ + b`, `params` packing `[W (outSize × H), b (outSize)]`; differentiable in `h` and
/// `params`. All three f32 or all f64; the likelihood arithmetic is f64 either way.
pub fn linear_head_nll(head: Head, h: &Tensor, params: &Tensor, y: &Tensor) -> Result<Tensor> {
    head.validate()?;
    let (rows, hidden) = h.dims2()?;
    let out = head.output_size();
    if params.elem_count() != out * hidden + out {
        bail!(
            "{} head: params hold {} values, a linear layer {hidden} → {out} needs {}",
            head.name(),
            params.elem_count(),
            out * hidden + out
        );
    }
    if y.dims() != [rows, head.dim()] {
        bail!("{} head: targets have shape {:?}, expected [{rows}, {}]", head.name(), y.dims(), head.dim());
    }
    if h.dtype() != params.dtype() || h.dtype() != y.dtype() || !matches!(h.dtype(), DType::F32 | DType::F64) {
        bail!("{} head: h, params and targets must all be f32 or all f64", head.name());
    }
    let keep = h.track_op() || params.track_op();
    let op = LinearHeadOp {
        head,
        rows,
        hidden,
        keep,
        grad: Mutex::new(None),
        #[cfg(feature = "cuda")]
        cuda_grad: Mutex::new(None),
    };
    let (h, params, y) = (h.contiguous()?, params.contiguous()?, y.contiguous()?);
    if keep {
        h.apply_op3(&params, &y, op)
    } else {
        h.apply_op3_no_bwd(&params, &y, &op)
    }
}

/// The raw outputs `h [rows, H] · Wᵀ + b` alone, `[rows, outSize]` f32, by the same GEMM as
/// [`linear_head_nll`] (no gradient): what sampling draws from.
pub fn linear_raw(head: Head, h: &Tensor, params: &Tensor) -> Result<Tensor> {
    let (rows, hidden) = h.dims2()?;
    let out = head.output_size();
    let hv = h.flatten_all()?.to_vec1::<f32>()?;
    let pv = params.flatten_all()?.to_vec1::<f32>()?;
    if pv.len() != out * hidden + out {
        bail!(
            "{} head: params hold {} values, a linear layer {hidden} → {out} needs {}",
            head.name(),
            pv.len(),
            out * hidden + out
        );
    }
    let (w, b) = pv.split_at(out * hidden);
    let mut raw: Vec<f32> = (0..rows).flat_map(|_| b.iter().copied()).collect();
    matmul(rows, out, hidden, &mut raw, out, true, View::rows(&hv, hidden), View::transposed(w, hidden));
    Tensor::from_vec(raw, (rows, out), h.device())
}
