//! The vanilla RNN layer (`nn.RNN`, tanh) on CUDA: the same passes as [`crate::rnn::tanh`], f32,
//! batch-first, `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
//!
//! Forward: one GEMM projects the inputs of all T steps straight into the output `[B, T, H]` (its rows
//! are the positions' rows); each step is one GEMM `gh = h_{t−1}·W_hhᵀ` and one fused kernel
//! (`rnn_tanh_cell_fwd`: both biases and the tanh, over the step's projection). Nothing is saved.
//! Backward: t = T−1 … 0, one fused kernel (`rnn_tanh_cell_bwd`: `dg = (dy + dh) ⊙ (1 − h²)`, tanh' from
//! the output) and one GEMM `dh_{t−1} = dg_t · W_hh`; then the weight, bias and input gradients as
//! whole-sequence GEMMs over dg `[B·T, H]` ([`super::rnn::weight_grads`]).

use super::blas::{gemm, handle, Mat};
use super::rnn::{input_grad, weight_grads, GateGrads, Grads};
use super::{elementwise, int, launch, Kernel, TANH};
use crate::rnn::common::Cols;
use crate::rnn::RnnDims;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::Result;

/// Runs the layer: `x [B, T, I]`, `h0 [B, H]`, `p` packed `[w_ih, w_hh, b_ih, b_hh]`, sizes checked by
/// [`super::rnn::forward`]. Returns the states `[B, T, H]`.
pub(crate) fn forward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    h0: &CudaView<f32>,
    p: &CudaView<f32>,
) -> Result<CudaSlice<f32>> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let rows = nb * nt;
    let (w_hh, bias) = (nh * ni, nh * ni + nh * nh);
    let mut out = dev.alloc_zeros::<f32>(rows * nh)?;
    let blas = handle(dev)?;
    // gi = x · W_ihᵀ for every step at once, into out (b_ih is added by the cell kernel).
    let w_ih = Mat::t(p.slice(..nh * ni), ni);
    gemm(&blas, (rows, nh, ni), Mat::n(x.slice(..), ni), w_ih, &mut out.slice_mut(..), nh, 0.0)?;

    let mut gh = dev.alloc_zeros::<f32>(nb * nh)?;
    let cell = Kernel::new(dev, &TANH, "rnn_tanh_cell_fwd")?;
    let cfg = elementwise(nb * nh)?;
    let bias = p.slice(bias..bias + 2 * nh);
    let (b_, t_, h_) = (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?);
    for t in 0..nt {
        // gh = h_{t−1} · W_hhᵀ, h_{t−1} read in place: h0, or out's step t − 1 (rows T·H apart).
        let h_prev = if t == 0 { Mat::n(h0.slice(..), nh) } else { Mat::n(out.slice((t - 1) * nh..), nt * nh) };
        let w_hh_t = Mat::t(p.slice(w_hh..w_hh + nh * nh), nh);
        gemm(&blas, (nb, nh, nh), h_prev, w_hh_t, &mut gh.slice_mut(..), nh, 0.0)?;
        let t_i = int(t, "t")?;
        let mut args = cell.args();
        args.arg(&gh).arg(&bias).arg(&mut out);
        args.arg(&b_).arg(&t_).arg(&h_).arg(&t_i);
        launch(args, cfg)?;
    }
    Ok(out)
}

/// Backward through time from dL/d(out) `[B, T, H]`, given the layer's inputs and output (sizes checked
/// by [`super::rnn::backward`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    h0: &CudaView<f32>,
    p: &CudaView<f32>,
    out: &CudaView<f32>,
    d_out: &CudaView<f32>,
) -> Result<Grads> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let rows = nb * nt;
    let w_hh = p.slice(nh * ni..nh * ni + nh * nh);
    let mut dg = dev.alloc_zeros::<f32>(rows * nh)?;
    // dL/dh_t through step t+1, finally dL/dh0.
    let mut dh = dev.alloc_zeros::<f32>(nb * nh)?;
    let blas = handle(dev)?;

    let cell = Kernel::new(dev, &TANH, "rnn_tanh_cell_bwd")?;
    let cfg = elementwise(nb * nh)?;
    let (b_, t_, h_) = (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?);
    for t in (0..nt).rev() {
        let t_i = int(t, "t")?;
        let mut args = cell.args();
        args.arg(out).arg(d_out).arg(&dh).arg(&mut dg);
        args.arg(&b_).arg(&t_).arg(&h_).arg(&t_i);
        launch(args, cfg)?;
        // dh_{t−1} = dg_t · W_hh   ([B, H] · [H, H]); dg_t's rows are T·H apart.
        let dg_t = Mat::n(dg.slice(t * nh..), nt * nh);
        gemm(&blas, (nb, nh, nh), dg_t, Mat::n(w_hh.slice(..), nh), &mut dh.slice_mut(..), nh, 0.0)?;
    }

    let all = Cols::all(nh);
    let g = GateGrads { data: dg.slice(..), ld: nh, gi: &all, gh: &all };
    let dparams = weight_grads(dev, &blas, dims, (x, h0, out), &g)?;
    let dx = input_grad(dev, &blas, dims, &g, &p.slice(..nh * ni))?;
    Ok(Grads { dx, dh0: dh, dparams })
}
