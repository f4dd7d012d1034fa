//! The LSTM layer on CUDA: the same passes as [`crate::rnn::lstm`] (read it for the math), f32, batch-first.
//! The state is (h, c): the initial state is `[B, 2H]` and the output `[B, T, 2H]`, each row h_t then c_t.
//!
//! Forward: one GEMM projects the inputs of all T steps into the gate buffer `[B·T, 4H]`; each step is
//! one GEMM `gh = h_{t−1}·W_hhᵀ` and one fused kernel (`lstm_cell_fwd`: both biases, the gates, (h_t, c_t),
//! and with saving the gates `[i, f, g, o]` over the row's projection).
//! Backward: t = T−1 … 0, one fused kernel (`lstm_cell_bwd`: the gate gradients over the saved row, and
//! dL/dc_{t−1}) and one GEMM `dh_{t−1} = dg_t · W_hh`; then the weight, bias and input gradients as
//! whole-sequence GEMMs over the gate gradients ([`super::rnn::weight_grads`]), the same columns w.r.t.
//! both projections (they are added before any nonlinearity). The saved buffer stays on the device
//! between the two passes (the op keeps it).

use super::blas::{gemm, handle, Mat};
use super::rnn::{check_sizes, input_grad, weight_grads, GateGrads, Grads};
use super::{elementwise, int, launch, Kernel, LSTM};
use crate::rnn::common::Cols;
use crate::rnn::RnnDims;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::Result;

/// Runs the layer: `x [B, T, I]`, `s0 [B, 2H]` (h0 then c0 per row), `p` packed `[w_ih, w_hh, b_ih,
/// b_hh]`, sizes checked by [`super::rnn::forward`]. Returns the states `[B, T, 2H]` and, with `save`,
/// the gates `[B·T, 4H]` that [`backward`] needs.
pub(crate) fn forward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    s0: &CudaView<f32>,
    p: &CudaView<f32>,
    save: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<f32>>)> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g, s) = (nb * nt, 4 * nh, 2 * nh);
    let (w_hh, bias) = (g * ni, g * ni + g * nh);
    let mut out = dev.alloc_zeros::<f32>(rows * s)?;
    let mut gates = dev.alloc_zeros::<f32>(rows * g)?;
    let blas = handle(dev)?;
    // gi = x · W_ihᵀ for every step at once (b_ih is added by the cell kernel).
    let w_ih = Mat::t(p.slice(..g * ni), ni);
    gemm(&blas, (rows, g, ni), Mat::n(x.slice(..), ni), w_ih, &mut gates.slice_mut(..), g, 0.0)?;

    let mut gh = dev.alloc_zeros::<f32>(nb * g)?;
    let cell = Kernel::new(dev, &LSTM, "lstm_cell_fwd")?;
    let cfg = elementwise(nb * nh)?;
    let bias = p.slice(bias..bias + 2 * g);
    let (b_, t_, h_, save_) = (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?, i32::from(save));
    for t in 0..nt {
        // gh = h_{t−1} · W_hhᵀ, h_{t−1} read in place: the h half of s0 (rows 2H apart), or of out's step
        // t − 1 (rows T·2H apart).
        let h_prev = if t == 0 { Mat::n(s0.slice(..), s) } else { Mat::n(out.slice((t - 1) * s..), nt * s) };
        let w_hh_t = Mat::t(p.slice(w_hh..w_hh + g * nh), nh);
        gemm(&blas, (nb, g, nh), h_prev, w_hh_t, &mut gh.slice_mut(..), g, 0.0)?;
        let t_i = int(t, "t")?;
        let mut args = cell.args();
        args.arg(&gh).arg(&bias).arg(s0).arg(&mut out).arg(&mut gates);
        args.arg(&b_).arg(&t_).arg(&h_).arg(&t_i).arg(&save_);
        launch(args, cfg)?;
    }
    Ok((out, save.then_some(gates)))
}

/// Backward through time, given the layer's inputs, its output `out [B, T, 2H]`, the gates [`forward`]
/// saved (used up: overwritten with their gradients) and `d_out` = dL/d(out) (h and c parts), sizes but
/// the saved ones checked by [`super::rnn::backward`]. dL/d(s0) is `[B, 2H]`, dh then dc per row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    s0: &CudaView<f32>,
    p: &CudaView<f32>,
    out: &CudaView<f32>,
    d_out: &CudaView<f32>,
    mut saved: CudaSlice<f32>,
) -> Result<Grads> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g, s) = (nb * nt, 4 * nh, 2 * nh);
    check_sizes(dims, &[("the saved activations", saved.len(), rows * g)])?;
    let w_hh = p.slice(g * ni..g * ni + g * nh);
    // dL/d(h, c) of the previous step, rows (dh, dc): finally dL/d(h0, c0). The kernel reads dh and keeps
    // dc up to date; the GEMM writes dh in place (rows 2H apart).
    let mut ds = dev.alloc_zeros::<f32>(nb * s)?;
    let blas = handle(dev)?;

    let cell = Kernel::new(dev, &LSTM, "lstm_cell_bwd")?;
    let cfg = elementwise(nb * nh)?;
    let (b_, t_, h_) = (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?);
    for t in (0..nt).rev() {
        let t_i = int(t, "t")?;
        let mut args = cell.args();
        args.arg(&mut saved).arg(s0).arg(out).arg(d_out).arg(&mut ds);
        args.arg(&b_).arg(&t_).arg(&h_).arg(&t_i);
        launch(args, cfg)?;
        // dh_{t−1} = dg_t · W_hh   ([B, 4H] · [4H, H]); dg_t's rows are T·4H apart.
        let dg_t = Mat::n(saved.slice(t * g..), nt * g);
        gemm(&blas, (nb, nh, g), dg_t, Mat::n(w_hh.slice(..), nh), &mut ds.slice_mut(..), s, 0.0)?;
    }

    let all = Cols::all(g);
    let dg = GateGrads { data: saved.slice(..), ld: g, gi: &all, gh: &all };
    let dparams = weight_grads(dev, &blas, dims, (x, s0, out), &dg)?;
    let dx = input_grad(dev, &blas, dims, &dg, &p.slice(..g * ni))?;
    Ok(Grads { dx, dh0: ds, dparams })
}
