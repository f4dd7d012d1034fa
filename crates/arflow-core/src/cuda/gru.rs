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
use super::{elementwise, int, launch, Kernel, GRU};
use crate::rnn::{CellKind, RnnDims};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, Result};

/// Offsets of `w_ih`, `w_hh` and the biases (`b_ih` then `b_hh`, 6H) in the packed parameters.
struct Offsets {
    w_hh: usize,
    bias: usize,
}

/// Errors unless `dims` is a GRU layer (the only cell with CUDA kernels so far).
pub(crate) fn check_cell(dims: &RnnDims) -> Result<()> {
    match dims.cell {
        CellKind::Gru => Ok(()),
        cell => bail!(
            "{}: no CUDA kernel yet for this cell (the CUDA build runs the GRU only); use device cpu",
            cell.name()
        ),
    }
}

/// Errors unless the buffers have the sizes of `dims` (the kernels index them without bounds checks).
fn check_sizes(dims: &RnnDims, bufs: &[(&str, usize, usize)]) -> Result<()> {
    for &(what, len, want) in bufs {
        if len != want {
            bail!("gru: {what} holds {len} values, a layer of {dims:?} needs {want}");
        }
    }
    Ok(())
}

fn offsets(dims: &RnnDims) -> Offsets {
    let g = dims.gate_width();
    Offsets { w_hh: g * dims.input, bias: g * dims.input + g * dims.hidden }
}

/// Runs the layer: `x [B, T, I]`, `h0 [B, H]`, `p` packed `[w_ih, w_hh, b_ih, b_hh]`. Returns the
/// states `[B, T, H]` and, with `save`, the activations `[B·T, 4H]` that [`backward`] needs.
pub(crate) fn forward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    h0: &CudaView<f32>,
    p: &CudaView<f32>,
    save: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<f32>>)> {
    check_cell(dims)?;
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    if nb == 0 || nt == 0 || ni == 0 || nh == 0 {
        bail!("gru: the CUDA kernels need a batch, sequence, input and hidden size of at least 1, got {dims:?}");
    }
    let (rows, g) = (nb * nt, 3 * nh);
    check_sizes(dims, &[("x", x.len(), rows * ni), ("h0", h0.len(), nb * nh), ("params", p.len(), dims.param_len())])?;
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

/// What [`backward`] returns: dL/dx `[B, T, I]`, dL/dh0 `[B, H]` and the packed parameter gradient.
pub(crate) struct Grads {
    pub dx: CudaSlice<f32>,
    pub dh0: CudaSlice<f32>,
    pub dparams: CudaSlice<f32>,
}

/// Backward through time, given the layer's inputs, its output `out [B, T, H]`, the activations
/// [`forward`] saved (used up: overwritten with the gate gradients) and `d_out` = dL/d(out).
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
    check_cell(dims)?;
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g, w4) = (nb * nt, 3 * nh, 4 * nh);
    check_sizes(
        dims,
        &[
            ("x", x.len(), rows * ni),
            ("h0", h0.len(), nb * nh),
            ("params", p.len(), dims.param_len()),
            ("out", out.len(), rows * nh),
            ("dL/d(out)", d_out.len(), rows * nh),
            ("the saved activations", saved.len(), rows * w4),
        ],
    )?;
    let o = offsets(dims);
    // Sizes are at least 1: forward refused anything else.
    let mut dh = dev.alloc_zeros::<f32>(nb * nh)?;
    let mut dparams = dev.alloc_zeros::<f32>(dims.param_len())?;
    let mut dx = dev.alloc_zeros::<f32>(rows * ni)?;
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
    let dg = |col: usize| Mat::t(saved.slice(col..), w4);
    // dW_ih = dgiᵀ · x, by gate block.
    gemm(&blas, (2 * nh, ni, rows), dg(0), Mat::n(x.slice(..), ni), &mut dparams.slice_mut(..), ni, 0.0)?;
    gemm(&blas, (nh, ni, rows), dg(3 * nh), Mat::n(x.slice(..), ni), &mut dparams.slice_mut(2 * nh * ni..), ni, 0.0)?;

    // dW_hh = dghᵀ · h_prev, h_prev never materialised: dg rows 1 .. B·T against out rows 0 .. B·T − 2,
    // then the t = 0 rows against delta_b = h0_b − (last h of element b − 1) (see rnn::common::weight_grads).
    let mut delta = dev.alloc_zeros::<f32>(nb * nh)?;
    let delta_k = Kernel::new(dev, &GRU, "rnn_h0_delta")?;
    let mut args = delta_k.args();
    args.arg(h0).arg(out).arg(&mut delta).arg(&b_).arg(&t_).arg(&h_);
    launch(args, cfg)?;
    {
        let mut dw_hh = dparams.slice_mut(o.w_hh..o.w_hh + g * nh);
        if rows > 1 {
            let (dg_rest, h_rest) = (Mat::t(saved.slice(w4..), w4), Mat::n(out.slice(..), nh));
            gemm(&blas, (g, nh, rows - 1), dg_rest, h_rest, &mut dw_hh, nh, 0.0)?;
        }
        let first_steps = Mat::t(saved.slice(..), nt * w4);
        let beta = if rows > 1 { 1.0 } else { 0.0 };
        gemm(&blas, (g, nh, nb), first_steps, Mat::n(delta.slice(..), nh), &mut dw_hh, nh, beta)?;
    }

    // Bias gradients: column sums of the gate gradients, as ones[1, B·T] · dg.
    let mut ones = dev.alloc_zeros::<f32>(rows)?;
    let fill = Kernel::new(dev, &GRU, "fill_f32")?;
    let mut args = fill.args();
    let (one, rows_i) = (1.0f32, int(rows, "B·T")?);
    args.arg(&mut ones).arg(&one).arg(&rows_i);
    launch(args, elementwise(rows)?)?;
    let db = o.bias;
    for (col, dst, width) in [(0, db, 2 * nh), (3 * nh, db + 2 * nh, nh), (0, db + g, g)] {
        let sums = Mat::n(saved.slice(col..), w4);
        gemm(&blas, (1, width, rows), Mat::n(ones.slice(..), rows), sums, &mut dparams.slice_mut(dst..), width, 0.0)?;
    }

    // dx = dgi · W_ih, by gate block: [B·T, 2H] · W_ih[0..2H] + [B·T, H] · W_ih[2H..3H].
    let dgi_rz = Mat::n(saved.slice(..), w4);
    gemm(&blas, (rows, ni, 2 * nh), dgi_rz, Mat::n(w_ih.slice(..), ni), &mut dx.slice_mut(..), ni, 0.0)?;
    let dgi_n = Mat::n(saved.slice(3 * nh..), w4);
    gemm(&blas, (rows, ni, nh), dgi_n, Mat::n(w_ih.slice(2 * nh * ni..), ni), &mut dx.slice_mut(..), ni, 1.0)?;
    Ok(Grads { dx, dh0: dh, dparams })
}
