//! The recurrent layer on CUDA, the CUDA side of [`crate::rnn::op`]: the dispatch by cell to [`super::gru`],
//! [`super::lstm`] and [`super::tanh`], and what their backward passes share, as [`crate::rnn::common`]
//! does on the CPU: the weight, bias and input gradients as whole-sequence GEMMs over the gate gradients.
//! f32, batch-first; every size must be at least 1.

use super::blas::{gemm, Mat};
use super::{elementwise, gru, int, launch, lstm, tanh, Kernel, RNN};
use crate::rnn::common::Cols;
use crate::rnn::{CellKind, RnnDims};
use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, Result};

/// What a forward pass keeps for backward: the activations `[B·T, 4H]` of the GRU and the LSTM; nothing
/// for the tanh RNN, whose backward needs only its output.
pub(crate) struct Saved(Option<CudaSlice<f32>>);

/// What [`backward`] returns: dL/dx `[B, T, I]`, dL/d(initial state) `[B, S]` and the packed parameter
/// gradient.
pub(crate) struct Grads {
    pub dx: CudaSlice<f32>,
    pub dh0: CudaSlice<f32>,
    pub dparams: CudaSlice<f32>,
}

/// Errors unless the buffers have the sizes of `dims` (the kernels index them without bounds checks).
pub(crate) fn check_sizes(dims: &RnnDims, bufs: &[(&str, usize, usize)]) -> Result<()> {
    for &(what, len, want) in bufs {
        if len != want {
            bail!("{}: {what} holds {len} values, a layer of {dims:?} needs {want}", dims.cell.name());
        }
    }
    Ok(())
}

/// Errors unless `x [B, T, I]`, the initial state `s0 [B, S]` and the packed parameters fit `dims`, every
/// size at least 1.
fn check_inputs(dims: &RnnDims, x: &CudaView<f32>, s0: &CudaView<f32>, p: &CudaView<f32>) -> Result<()> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, cell } = *dims;
    if nb == 0 || nt == 0 || ni == 0 || nh == 0 {
        bail!(
            "{}: the CUDA kernels need a batch, sequence, input and hidden size of at least 1, got {dims:?}",
            cell.name()
        );
    }
    check_sizes(
        dims,
        &[
            ("x", x.len(), nb * nt * ni),
            ("the initial state", s0.len(), nb * dims.state_len()),
            ("params", p.len(), dims.param_len()),
        ],
    )
}

/// Runs the layer of `dims.cell`: `x [B, T, I]`, `s0 [B, S]`, `p` packed `[w_ih, w_hh, b_ih, b_hh]`.
/// Returns the states `[B, T, S]` and, with `save`, what [`backward`] needs.
pub(crate) fn forward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    s0: &CudaView<f32>,
    p: &CudaView<f32>,
    save: bool,
) -> Result<(CudaSlice<f32>, Option<Saved>)> {
    check_inputs(dims, x, s0, p)?;
    let (out, saved) = match dims.cell {
        CellKind::Gru => gru::forward(dev, dims, x, s0, p, save)?,
        CellKind::Lstm => lstm::forward(dev, dims, x, s0, p, save)?,
        CellKind::Rnn => (tanh::forward(dev, dims, x, s0, p)?, None),
    };
    Ok((out, save.then_some(Saved(saved))))
}

/// Backward through time, given the layer's inputs, its output `out [B, T, S]`, what [`forward`] saved
/// (used up: the gates are overwritten with their gradients) and `d_out` = dL/d(out).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    dev: &CudaDevice,
    dims: &RnnDims,
    x: &CudaView<f32>,
    s0: &CudaView<f32>,
    p: &CudaView<f32>,
    out: &CudaView<f32>,
    d_out: &CudaView<f32>,
    saved: Saved,
) -> Result<Grads> {
    check_inputs(dims, x, s0, p)?;
    let outs = dims.batch * dims.seq * dims.state_len();
    check_sizes(dims, &[("out", out.len(), outs), ("dL/d(out)", d_out.len(), outs)])?;
    match (dims.cell, saved.0) {
        (CellKind::Gru, Some(gates)) => gru::backward(dev, dims, x, s0, p, out, d_out, gates),
        (CellKind::Lstm, Some(gates)) => lstm::backward(dev, dims, x, s0, p, out, d_out, gates),
        (CellKind::Rnn, None) => tanh::backward(dev, dims, x, s0, p, out, d_out),
        (cell, _) => bail!("{}: the saved activations are not this cell's", cell.name()),
    }
}

/// The per-position gate gradients of a layer on the device, `[B·T, ld]` (rows b·T + t), and which of
/// their columns are the gradient w.r.t. the input projection and w.r.t. the hidden projection: the
/// device twin of [`crate::rnn::common::GateGrads`].
pub(crate) struct GateGrads<'a> {
    pub data: CudaView<'a, f32>,
    pub ld: usize,
    pub gi: &'a [Cols],
    pub gh: &'a [Cols],
}

/// The packed parameter gradient, single GEMMs over all B·T positions, as
/// [`crate::rnn::common::weight_grads`] computes it: `dW_ih = dgiᵀ · x`, `dW_hh = dghᵀ · h_prev`,
/// `db_ih = Σ dgi`, `db_hh = Σ dgh`. h_prev is never materialised: dg rows 1 .. B·T against out rows
/// 0 .. B·T − 2, then the t = 0 rows against `delta_b = h0_b − (last h of element b − 1)`. The bias sums
/// are `ones [1, B·T] · dg`.
pub(crate) fn weight_grads(
    dev: &CudaDevice,
    blas: &CudaBlas,
    dims: &RnnDims,
    (x, s0, out): (&CudaView<f32>, &CudaView<f32>, &CudaView<f32>),
    dg: &GateGrads,
) -> Result<CudaSlice<f32>> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g, s, ld) = (nb * nt, dims.gate_width(), dims.state_len(), dg.ld);
    let mut dparams = dev.alloc_zeros::<f32>(dims.param_len())?;
    let (w_hh, db_ih, db_hh) = (g * ni, g * ni + g * nh, g * ni + g * nh + g);
    for c in dg.gi {
        let a = Mat::t(dg.data.slice(c.col..), ld);
        gemm(blas, (c.width, ni, rows), a, Mat::n(x.slice(..), ni), &mut dparams.slice_mut(c.gate * ni..), ni, 0.0)?;
    }

    let mut delta = dev.alloc_zeros::<f32>(nb * nh)?;
    let delta_k = Kernel::new(dev, &RNN, "rnn_h0_delta")?;
    let mut args = delta_k.args();
    let (b_, t_, h_, s_) = (int(nb, "batch")?, int(nt, "seq")?, int(nh, "hidden")?, int(s, "state")?);
    args.arg(s0).arg(out).arg(&mut delta).arg(&b_).arg(&t_).arg(&h_).arg(&s_);
    launch(args, elementwise(nb * nh)?)?;
    for c in dg.gh {
        let mut dw = dparams.slice_mut(w_hh + c.gate * nh..);
        if rows > 1 {
            let (a, h_rest) = (Mat::t(dg.data.slice(ld + c.col..), ld), Mat::n(out.slice(..), s));
            gemm(blas, (c.width, nh, rows - 1), a, h_rest, &mut dw, nh, 0.0)?;
        }
        let first_steps = Mat::t(dg.data.slice(c.col..), nt * ld);
        let beta = if rows > 1 { 1.0 } else { 0.0 };
        gemm(blas, (c.width, nh, nb), first_steps, Mat::n(delta.slice(..), nh), &mut dw, nh, beta)?;
    }

    let ones = ones(dev, rows)?;
    for (cols, db) in [(dg.gi, db_ih), (dg.gh, db_hh)] {
        for c in cols {
            let sums = Mat::n(dg.data.slice(c.col..), ld);
            let dst = &mut dparams.slice_mut(db + c.gate..);
            gemm(blas, (1, c.width, rows), Mat::n(ones.slice(..), rows), sums, dst, c.width, 0.0)?;
        }
    }
    Ok(dparams)
}

/// `dx = dgi · W_ih`, `[B·T, G·H] · [G·H, I]`, one product per block of columns, as
/// [`crate::rnn::common::input_grad`]. `w_ih` is `[G·H, I]`.
pub(crate) fn input_grad(
    dev: &CudaDevice,
    blas: &CudaBlas,
    dims: &RnnDims,
    dg: &GateGrads,
    w_ih: &CudaView<f32>,
) -> Result<CudaSlice<f32>> {
    let (rows, ni) = (dims.batch * dims.seq, dims.input);
    let mut dx = dev.alloc_zeros::<f32>(rows * ni)?;
    for (k, c) in dg.gi.iter().enumerate() {
        let (a, w) = (Mat::n(dg.data.slice(c.col..), dg.ld), Mat::n(w_ih.slice(c.gate * ni..), ni));
        let beta = if k > 0 { 1.0 } else { 0.0 };
        gemm(blas, (rows, ni, c.width), a, w, &mut dx.slice_mut(..), ni, beta)?;
    }
    Ok(dx)
}

/// `n` ones on the device.
fn ones(dev: &CudaDevice, n: usize) -> Result<CudaSlice<f32>> {
    let mut v = dev.alloc_zeros::<f32>(n)?;
    let fill = Kernel::new(dev, &RNN, "fill_f32")?;
    let mut args = fill.args();
    let (one, n_i) = (1.0f32, int(n, "B·T")?);
    args.arg(&mut v).arg(&one).arg(&n_i);
    launch(args, elementwise(n)?)?;
    Ok(v)
}
