//! The GRU layer on CUDA: the same passes as [`crate::rnn::gru`] (read it for the math), f32, batch-first.
//!
//! Forward: one GEMM projects the inputs of all T steps into the saved buffer `[B·T, 4H]` (gi in the
//! first 3H of each row); each step is one GEMM `gh = h_{t−1}·W_hhᵀ` and one fused kernel
//! (`gru_cell_fwd`: both biases, the gates, h_t, and the saved `[r, z, n, hn]`).
//! Backward: t = T−1 … 0, one fused kernel (`gru_cell_bwd`: the gate gradients `[da_r, da_z, r ⊙ da_n,
//! da_n]` over the saved row, and dh_t ⊙ z) and one GEMM `dh += dgh_t · W_hh`; then the weight, bias and
//! input gradients as whole-sequence GEMMs over the gate gradients, as [`crate::rnn::common`] does.
//! The saved buffer stays on the device between the two passes (the op keeps it).

use super::blas::{gemm, handle, Mat};
use super::rnn::{check_sizes, input_grad, weight_grads, GateGrads, Grads};
use super::{elementwise, int, launch, Kernel, GRU};
use crate::rnn::common::Cols;
use crate::rnn::RnnDims;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::Result;

/// Offset of `w_hh` and of the biases (`b_ih` then `b_hh`, 6H) in the packed parameters.
struct Offsets {
    w_hh: usize,
    bias: usize,
}

fn offsets(dims: &RnnDims) -> Offsets {
    let g = dims.gate_width();
    Offsets { w_hh: g * dims.input, bias: g * dims.input + g * dims.hidden }
}

/// Runs the layer: `x [B, T, I]`, `h0 [B, H]`, `p` packed `[w_ih, w_hh, b_ih, b_hh]`, sizes checked by
/// [`super::rnn::forward`]. Returns the states `[B, T, H]` and, with `save`, the activations
/// `[B·T, 4H]` that [`backward`] needs.
pub(crate) fn forward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    h0: &CudaView<f32>,
    p: &CudaView<f32>,
    save: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<f32>>)> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g) = (nb * nt, 3 * nh);
    let ld = if save { 4 * nh } else { g };
    let o = offsets(dims);
    let mut out = dev.alloc_zeros::<f32>(rows * nh)?;
    let mut gates = dev.alloc_zeros::<f32>(rows * ld)?;
    let blas = handle(dev)?;
    // gi = x · W_ihᵀ for every step at once, into the first 3H columns of the gate rows (b_ih is added
    // by the cell kernel).
    let w_ih = Mat::t(p.slice(..g * ni), ni);
    gemm(&blas, (rows, g, ni), Mat::n(x.slice(..), ni), w_ih, &mut gates.slice_mut(..), ld, 0.0)?;

    let mut gh = dev.alloc_zeros::<f32>(nb * g)?;
    let cell = Kernel::new(dev, &GRU, "gru_cell_fwd")?;
    let cfg = elementwise(nb * nh)?;
    let bias = p.slice(o.bias..o.bias + 2 * g);
    let (b_, t_, h_, ld_, save_) =
        (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?, int(ld, "ld")?, i32::from(save));
    for t in 0..nt {
        // gh = h_{t−1} · W_hhᵀ, h_{t−1} read in place: h0, or out's step t − 1 (rows T·H apart).
        let h_prev = if t == 0 { Mat::n(h0.slice(..), nh) } else { Mat::n(out.slice((t - 1) * nh..), nt * nh) };
        let w_hh_t = Mat::t(p.slice(o.w_hh..o.w_hh + g * nh), nh);
        gemm(&blas, (nb, g, nh), h_prev, w_hh_t, &mut gh.slice_mut(..), g, 0.0)?;
        let t_i = int(t, "t")?;
        let mut args = cell.args();
        args.arg(&gh).arg(&bias).arg(h0).arg(&mut out).arg(&mut gates);
        args.arg(&b_).arg(&t_).arg(&h_).arg(&t_i).arg(&ld_).arg(&save_);
        launch(args, cfg)?;
    }
    Ok((out, save.then_some(gates)))
}

/// Backward through time, given the layer's inputs, its output `out [B, T, H]`, the activations
/// [`forward`] saved (used up: overwritten with the gate gradients) and `d_out` = dL/d(out), sizes but
/// the saved ones checked by [`super::rnn::backward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    h0: &CudaView<f32>,
    p: &CudaView<f32>,
    out: &CudaView<f32>,
    d_out: &CudaView<f32>,
    mut saved: CudaSlice<f32>,
) -> Result<Grads> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g, w4) = (nb * nt, 3 * nh, 4 * nh);
    check_sizes(dims, &[("the saved activations", saved.len(), rows * w4)])?;
    let o = offsets(dims);
    let mut dh = dev.alloc_zeros::<f32>(nb * nh)?;
    let blas = handle(dev)?;
    let w_ih = p.slice(..g * ni);
    let w_hh = p.slice(o.w_hh..o.w_hh + g * nh);

    // The time loop: gate gradients over the saved rows of step t, then dh_{t−1} += dgh_t · W_hh
    // ([B, 3H] · [3H, H], dgh_t the first 3H of rows T·4H apart).
    let cell = Kernel::new(dev, &GRU, "gru_cell_bwd")?;
    let cfg = elementwise(nb * nh)?;
    let (b_, t_, h_) = (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?);
    for t in (0..nt).rev() {
        let t_i = int(t, "t")?;
        let mut args = cell.args();
        args.arg(&mut saved).arg(h0).arg(out).arg(d_out).arg(&mut dh);
        args.arg(&b_).arg(&t_).arg(&h_).arg(&t_i);
        launch(args, cfg)?;
        let dgh = Mat::n(saved.slice(t * w4..), nt * w4);
        gemm(&blas, (nb, nh, g), dgh, Mat::n(w_hh.slice(..), nh), &mut dh.slice_mut(..), nh, 1.0)?;
    }

    // The gate gradients, [B·T, 4H]: w.r.t. the input projection columns 0..2H (r, z) and 3H..4H (n);
    // w.r.t. the hidden projection columns 0..3H.
    let gi = [Cols { col: 0, gate: 0, width: 2 * nh }, Cols { col: 3 * nh, gate: 2 * nh, width: nh }];
    let dg = GateGrads { data: saved.slice(..), ld: w4, gi: &gi, gh: &Cols::all(g) };
    let dparams = weight_grads(dev, &blas, dims, (x, h0, out), &dg)?;
    let dx = input_grad(dev, &blas, dims, &dg, &w_ih)?;
    Ok(Grads { dx, dh0: dh, dparams })
}
