//! One recurrent layer (GRU, LSTM or tanh RNN) over a whole sequence as a single candle op, so candle's
//! autograd sees one node per layer (a shallow graph) and calls our backward through time instead of a
//! per-step graph. On a CUDA device (the `cuda` feature) every cell runs the kernels of `crate::cuda::rnn`
//! (f32).

use super::{rnn_backward, rnn_forward, CellKind, RnnDims, RnnWeights};
use crate::host::with_slices;
use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use std::sync::Mutex;

/// Activations the forward pass keeps for backward (`[B·T, saved_width·H]`, see each cell).
enum Saved {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// On the CUDA device, f32 (`crate::cuda::rnn`).
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::rnn::Saved),
}

struct RnnLayerOp {
    dims: RnnDims,
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("rnn: {what} must be contiguous"),
    }
}

impl RnnLayerOp {
    fn forward<T: Real>(&self, x: &[T], h0: &[T], p: &[T]) -> (Vec<T>, Option<Vec<T>>) {
        let w = RnnWeights::unpack(&self.dims, p);
        let d = self.dims;
        let mut out = vec![T::zero(); d.batch * d.seq * d.state_len()];
        let mut save = self.keep.then(Vec::new);
        rnn_forward(&self.dims, x, h0, &w, &mut out, save.as_mut());
        (out, save)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward<T: Real + WithDType>(
        &self,
        saved: &mut [T],
        x: &Tensor,
        h0: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // x, out and dL/dout are read in place: copying them would add three [B, T, ·] buffers.
        let g = with_slices::<T, _>(&[x, h0, params, res, grad], |s| {
            let w = RnnWeights::unpack(&self.dims, s[2]);
            Ok(rnn_backward(&self.dims, s[0], s[1], &w, s[3], saved, s[4]))
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(g.dx, x.shape(), dev)?),
            Some(Tensor::from_vec(g.dh0, h0.shape(), dev)?),
            Some(Tensor::from_vec(g.dparams, params.shape(), dev)?),
        ))
    }
}

impl CustomOp3 for RnnLayerOp {
    fn name(&self) -> &'static str {
        "arflow-rnn-layer"
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
        let d = self.dims;
        let shape = Shape::from((d.batch, d.seq, d.state_len()));
        let (storage, saved) = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(h0), CpuStorage::F32(p)) => {
                let (x, h0, p) = (contiguous(x, l1, "x")?, contiguous(h0, l2, "h0")?, contiguous(p, l3, "params")?);
                let (out, save) = self.forward(x, h0, p);
                (CpuStorage::F32(out), save.map(Saved::F32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(h0), CpuStorage::F64(p)) => {
                let (x, h0, p) = (contiguous(x, l1, "x")?, contiguous(h0, l2, "h0")?, contiguous(p, l3, "params")?);
                let (out, save) = self.forward(x, h0, p);
                (CpuStorage::F64(out), save.map(Saved::F64))
            }
            _ => bail!("rnn: x, h0 and params must all be f32 or all f64"),
        };
        *self.saved.lock().expect("rnn saved state poisoned") = saved;
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
        use crate::cuda::{rnn, view};
        let d = self.dims;
        crate::cuda::f32_only(s1, d.cell.name())?;
        let (x, h0, p) = (view(s1, l1, "x")?, view(s2, l2, "h0")?, view(s3, l3, "params")?);
        let (out, saved) = rnn::forward(&s1.device, &d, &x, &h0, &p, self.keep)?;
        *self.saved.lock().expect("rnn saved state poisoned") = saved.map(Saved::Cuda);
        let storage = candle_core::CudaStorage::wrap_cuda_slice(out, s1.device.clone());
        Ok((storage, Shape::from((d.batch, d.seq, d.state_len()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        h0: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Backward uses the saved activations up (it writes the gate gradients over them).
        let saved = self.saved.lock().expect("rnn saved state poisoned").take();
        match saved {
            Some(Saved::F32(mut s)) => self.backward(&mut s, x, h0, params, res, grad_res),
            Some(Saved::F64(mut s)) => self.backward(&mut s, x, h0, params, res, grad_res),
            #[cfg(feature = "cuda")]
            Some(Saved::Cuda(s)) => {
                let g = crate::cuda::with_views(&[x, h0, params, res, grad_res], |dev, v| {
                    crate::cuda::rnn::backward(dev, &self.dims, &v[0], &v[1], &v[2], &v[3], &v[4], s)
                })?;
                Ok((
                    Some(crate::cuda::tensor(x, g.dx, x.shape())?),
                    Some(crate::cuda::tensor(x, g.dh0, h0.shape())?),
                    Some(crate::cuda::tensor(x, g.dparams, params.shape())?),
                ))
            }
            None => bail!("rnn: backward called twice, or on a forward pass that saved no activations"),
        }
    }
}

/// Applies one GRU layer: `x [B, T, I]`, `h0 [B, H]`, `params` packed `[w_ih, w_hh, b_ih, b_hh]`;
/// returns the hidden states `[B, T, H]` (the last time step is the final state).
pub fn gru_layer(x: &Tensor, h0: &Tensor, params: &Tensor) -> Result<Tensor> {
    rnn_layer(CellKind::Gru, x, h0, params)
}

/// Applies one layer of `cell`: `x [B, T, I]`, the initial state `s0 [B, S]` and `params` packed
/// `[w_ih, w_hh, b_ih, b_hh]`; returns the states `[B, T, S]` (the last time step is the final state).
/// S is H, or 2H for the LSTM, whose rows are (h, c). Activations for backward are kept only when some
/// input takes part in a gradient.
pub fn rnn_layer(cell: CellKind, x: &Tensor, s0: &Tensor, params: &Tensor) -> Result<Tensor> {
    let name = cell.name();
    let (batch, seq, input) = x.dims3()?;
    let (hb, width) = s0.dims2()?;
    if hb != batch {
        bail!("{name}: h0 has batch {hb} but x has batch {batch}");
    }
    let sw = cell.state_width();
    if width % sw != 0 || width == 0 {
        bail!("{name}: the initial state has {width} values per row, not a multiple of {sw}");
    }
    let dims = RnnDims { cell, batch, seq, input, hidden: width / sw };
    if params.elem_count() != dims.param_len() {
        bail!(
            "{name}: params hold {} values, a layer with input {input} and hidden {} needs {}",
            params.elem_count(),
            dims.hidden,
            dims.param_len()
        );
    }
    if x.dtype() != s0.dtype() || x.dtype() != params.dtype() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        bail!("{name}: x, h0 and params must all be f32 or all f64");
    }
    let keep = x.track_op() || s0.track_op() || params.track_op();
    let op = RnnLayerOp { dims, keep, saved: Mutex::new(None) };
    let (x, s0, params) = (x.contiguous()?, s0.contiguous()?, params.contiguous()?);
    if keep {
        x.apply_op3(&s0, &params, op)
    } else {
        x.apply_op3_no_bwd(&s0, &params, &op)
    }
}
