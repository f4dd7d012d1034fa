//! One Pixel-RNN row layer (Row LSTM or Row GRU) on CUDA, the CUDA side of [`crate::pixel::row`] (read its
//! module comment for the passes), f32. Kernels and the layout of every buffer in pixel_row.cu.
//!
//! The layer's maps are padded as on the CPU (a zero column either side of every image row) and ordered
//! *image row first*: image row i of all B images is one run of B·(C + 2) padded positions. A 1×3 convolution
//! over consecutive padded positions then needs no gather at all: it is one accumulating GEMM per tap, tap t
//! reading the same matrix t positions further on (rows H or G·H values apart), the outputs at the pad
//! columns computed and ignored — over one image row of the whole batch (the recurrence) or over every
//! position at once (the whole-map products).
//!
//! Forward: `prow_pad` lays y out padded, `prow_is_bias` fills `gis` with b_is + E[label], and two GEMMs (the
//! taps mask B keeps) add the input-to-state convolution of every position. Then per image row i, for all
//! images together: three GEMMs `ss = window₃(h_{i−1}) · W_ss₃` (`[B·(C+2), H] · [H, G·H]` each) and one fused
//! gate kernel (`prow_lstm_fwd` / `prow_gru_fwd`: b_ss, the cell, h_i into the map of previous-row states,
//! `y_out = h_i + y`, and with saving the gates).
//! Backward, i = R−1 … 0: one fused kernel for the gate gradients of the row (`prow_lstm_bwd` /
//! `prow_gru_bwd`) and, for i > 0, three GEMMs `dh_{i−1} (+)= window₃(dss) · W_ss₃ᵀ` with the taps reversed.
//! Then the whole-map products: `dW_is₂ = window₂(y_pad)ᵀ · dgi` and `dW_ss₃ = window₃(h_prev)ᵀ · dgh` (one
//! GEMM per tap, scattered into the PyTorch layout by `prow_scatter`), the bias gradients as `ones · dg` and
//! the label bias gradient as `onehot · dgi` (GEMMs over all positions; the pads hold 0), and
//! `dL/dy = dOut + window₂(dgi) · W_is₂ᵀ` (two GEMMs, then `prow_unpad_add`).

use super::blas::{gemm, handle, Mat};
use super::pixel::{check_sizes, f32_tensors, filled};
use super::{elementwise, f32_only, int, launch, tensor, view, with_views, Kernel, PIXEL_ROW};
use crate::pixel::row::{RowDims, ROW_KERNEL};
use crate::rnn::CellKind;
use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, CudaViewMut, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, CudaStorage, Layout, Result, Tensor};

/// What the forward pass keeps for backward (on the device, for as long as the op lives).
pub(crate) struct RowSaved {
    /// `[R, B, C + 2, H]`: at image row i, h_{i−1} (zeros at i = 0 and at the pads).
    h_prev: CudaSlice<f32>,
    /// `[R, B, C, H]` cell states (LSTM only).
    c: Option<CudaSlice<f32>>,
    /// `[R, B, C, 4H]` gates.
    gates: CudaSlice<f32>,
}

/// The sizes every pass derives from [`RowDims`], and the offsets of the packed parameters
/// `[w_is, b_is, w_ss, b_ss, label_bias]`.
struct Sizes {
    lstm: bool,
    nb: usize,
    nr: usize,
    nc: usize,
    nh: usize,
    /// G·H.
    gw: usize,
    /// Padded positions of one image row of the batch, B·(C + 2).
    row: usize,
    /// Padded positions of the map, R·B·(C + 2).
    np: usize,
    /// Values of one 1×3 kernel, G·H·H·3.
    wlen: usize,
    b_is: usize,
    w_ss: usize,
    b_ss: usize,
    label_bias: usize,
    /// The kernels' int arguments B, R, C, H.
    ints: [i32; 4],
}

impl Sizes {
    fn new(d: &RowDims) -> Result<Self> {
        let RowDims { cell, batch: nb, rows: nr, cols: nc, hidden: nh, .. } = *d;
        if nb == 0 || nr == 0 || nc == 0 || nh == 0 {
            bail!("pixel row: the CUDA kernels need every size at least 1, got {d:?}");
        }
        if !matches!(cell, CellKind::Lstm | CellKind::Gru) {
            bail!("pixel row: a row layer is an lstm or a gru, not {}", cell.name());
        }
        let gw = d.gate_width();
        let wlen = gw * nh * ROW_KERNEL;
        let row = nb * (nc + 2);
        let ints = [int(nb, "batch")?, int(nr, "rows")?, int(nc, "cols")?, int(nh, "hidden")?];
        Ok(Sizes {
            lstm: cell == CellKind::Lstm,
            nb,
            nr,
            nc,
            nh,
            gw,
            row,
            np: nr * row,
            wlen,
            b_is: wlen,
            w_ss: wlen + gw,
            b_ss: 2 * wlen + gw,
            label_bias: 2 * wlen + 2 * gw,
            ints,
        })
    }

    /// B·C·H: the threads of a cell kernel (one image row).
    fn cells(&self) -> usize {
        self.nb * self.nc * self.nh
    }
}

/// Each image's label on the device and whether there are any (a one-value placeholder without classes).
fn device_labels(dev: &CudaDevice, d: &RowDims, labels: Option<&[usize]>) -> Result<(CudaSlice<i32>, i32)> {
    match labels {
        Some(l) if d.classes > 0 && l.len() == d.batch && l.iter().all(|&k| k < d.classes) => {
            let l: Vec<i32> = l.iter().map(|&k| k as i32).collect();
            Ok((dev.memcpy_stod(&l)?, 1))
        }
        None if d.classes == 0 => Ok((dev.alloc_zeros::<i32>(1)?, 0)),
        _ => bail!("pixel row: labels must be [batch {}] in 0…{} exactly when there are classes", d.batch, d.classes),
    }
}

/// The GEMM matrix of `taps` taps of the 1×3 kernel `w [G·H, H, 1, 3]`, tap t being kernel column
/// `tap0 + t·tstep`: `[taps·H, G·H]`, or with `transposed` the adjoint's `[taps·G·H, H]`.
fn wmat(
    dev: &CudaDevice,
    s: &Sizes,
    w: &CudaView<f32>,
    (taps, tap0, tstep): (usize, i32, i32),
    transposed: bool,
) -> Result<CudaSlice<f32>> {
    let len = taps * s.nh * s.gw;
    let mut out = dev.alloc_zeros::<f32>(len)?;
    let k = Kernel::new(dev, &PIXEL_ROW, "prow_wmat")?;
    let (gw, taps_i, tr) = (int(s.gw, "gate width")?, int(taps, "taps")?, i32::from(transposed));
    let mut args = k.args();
    args.arg(w).arg(&mut out).arg(&s.ints[3]).arg(&gw).arg(&taps_i).arg(&tap0).arg(&tstep).arg(&tr);
    launch(args, elementwise(len)?)?;
    Ok(out)
}

/// y `[B, R, C, H]` laid out padded, image row first: `[R, B, C + 2, H]`.
fn pad(dev: &CudaDevice, s: &Sizes, y: &CudaView<f32>) -> Result<CudaSlice<f32>> {
    let mut y_pad = dev.alloc_zeros::<f32>(s.np * s.nh)?;
    let k = Kernel::new(dev, &PIXEL_ROW, "prow_pad")?;
    let [b, r, c, h] = &s.ints;
    let mut args = k.args();
    args.arg(y).arg(&mut y_pad).arg(b).arg(r).arg(c).arg(h);
    launch(args, elementwise(s.np * s.nh)?)?;
    Ok(y_pad)
}

/// A 1×3 convolution over consecutive padded positions as one GEMM per tap: `out[p] (β)= Σ_t src[p + t] ·
/// mat_t` for p < m, where `src` rows are `k` values apart, `mat` is `[taps·k, n]` (block t = tap t) and
/// `out` rows `n` apart. The first tap's GEMM scales `out` by `beta`, the others accumulate.
#[allow(clippy::too_many_arguments)]
fn window_gemm(
    blas: &CudaBlas,
    (m, n, k): (usize, usize, usize),
    src: &CudaView<f32>,
    mat: &CudaSlice<f32>,
    taps: usize,
    out: &mut CudaViewMut<f32>,
    beta: f32,
) -> Result<()> {
    for t in 0..taps {
        let (a, b) = (Mat::n(src.slice(t * k..), k), Mat::n(mat.slice(t * k * n..(t + 1) * k * n), n));
        gemm(blas, (m, n, k), a, b, out, n, if t == 0 { beta } else { 1.0 })?;
    }
    Ok(())
}

/// The layer's CUDA forward: `y_out = h + y`, `[B, R, C, H]` (the caller gives it its shape), of `y` under the
/// packed parameters and `labels` (exactly when the layer has classes); with `keep`, what [`backward`] needs.
pub(crate) fn forward(
    d: &RowDims,
    labels: Option<&[usize]>,
    y: (&CudaStorage, &Layout),
    p: (&CudaStorage, &Layout),
    keep: bool,
) -> Result<(CudaStorage, Option<RowSaved>)> {
    f32_only(y.0, "pixel row")?;
    f32_only(p.0, "pixel row")?;
    let dev = &y.0.device;
    let (out, saved) = forward_views(dev, d, labels, &view(y.0, y.1, "y")?, &view(p.0, p.1, "params")?, keep)?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), saved))
}

fn forward_views(
    dev: &CudaDevice,
    d: &RowDims,
    labels: Option<&[usize]>,
    y: &CudaView<f32>,
    p: &CudaView<f32>,
    keep: bool,
) -> Result<(CudaSlice<f32>, Option<RowSaved>)> {
    let s = Sizes::new(d)?;
    check_sizes("pixel row", &[("y", y.len(), d.map_len()), ("params", p.len(), d.param_len())])?;
    let (nh, gw) = (s.nh, s.gw);
    let blas = handle(dev)?;
    let (labels, has_labels) = device_labels(dev, d, labels)?;

    // gis = b_is + E[label] + window₂(y_pad) · W_is₂ at every padded position.
    let mut gis = dev.alloc_zeros::<f32>(s.np * gw)?;
    let k = Kernel::new(dev, &PIXEL_ROW, "prow_is_bias")?;
    let (b_is, label_bias) = (p.slice(s.b_is..s.b_is + gw), p.slice(s.label_bias..));
    let [b_, r_, c_, h_] = &s.ints;
    let gw_i = int(gw, "gate width")?;
    let mut args = k.args();
    args.arg(&b_is).arg(&label_bias).arg(&labels).arg(&mut gis).arg(b_).arg(r_).arg(c_).arg(&gw_i).arg(&has_labels);
    launch(args, elementwise(s.np * gw)?)?;
    let w_is = wmat(dev, &s, &p.slice(..s.wlen), (2, 0, 1), false)?;
    let y_pad = pad(dev, &s, y)?;
    window_gemm(&blas, (s.np - 2, gw, nh), &y_pad.slice(..), &w_is, 2, &mut gis.slice_mut(gw..), 1.0)?;
    drop((y_pad, w_is));

    let w_ss = wmat(dev, &s, &p.slice(s.w_ss..s.w_ss + s.wlen), (3, 0, 1), false)?;
    let b_ss = p.slice(s.b_ss..s.b_ss + gw);
    let mut h_prev = dev.alloc_zeros::<f32>(s.np * nh)?;
    let mut c = if s.lstm { Some(dev.alloc_zeros::<f32>(s.nr * s.cells())?) } else { None };
    let mut gates = dev.alloc_zeros::<f32>(if keep { 4 * s.nr * s.cells() } else { 1 })?;
    let mut ss = dev.alloc_zeros::<f32>(s.row * gw)?;
    let mut out = dev.alloc_zeros::<f32>(d.map_len())?;
    let cell = Kernel::new(dev, &PIXEL_ROW, if s.lstm { "prow_lstm_fwd" } else { "prow_gru_fwd" })?;
    let cfg = elementwise(s.cells())?;
    let save = i32::from(keep);
    for i in 0..s.nr {
        // ss = window₃(h_{i−1}) · W_ss₃ over image row i of every image (zeros at i = 0).
        let h_row = h_prev.slice(i * s.row * nh..);
        window_gemm(&blas, (s.row - 2, gw, nh), &h_row, &w_ss, 3, &mut ss.slice_mut(gw..), 0.0)?;
        let i_ = int(i, "row")?;
        let mut args = cell.args();
        args.arg(&gis).arg(&ss).arg(&b_ss).arg(y).arg(&mut h_prev);
        if let Some(c) = c.as_mut() {
            args.arg(c);
        }
        args.arg(&mut out).arg(&mut gates).arg(b_).arg(r_).arg(c_).arg(h_).arg(&i_).arg(&save);
        launch(args, cfg)?;
    }
    Ok((out, keep.then_some(RowSaved { h_prev, c, gates })))
}

/// The layer's CUDA backward: `(dL/dy [B, R, C, H], dL/d(params))` from what [`forward`] kept (left as it was),
/// the layer's input `y`, the packed parameters and `grad` = dL/d(y_out), on one CUDA device.
pub(crate) fn backward(
    d: &RowDims,
    labels: Option<&[usize]>,
    saved: &RowSaved,
    y: &Tensor,
    p: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    f32_tensors("pixel row", &[y, p, grad])?;
    let (dy, dp) = with_views(&[y, p, grad], |dev, v| backward_views(dev, d, labels, saved, (&v[0], &v[1], &v[2])))?;
    Ok((tensor(y, dy, y.shape())?, tensor(y, dp, p.shape())?))
}

fn backward_views(
    dev: &CudaDevice,
    d: &RowDims,
    labels: Option<&[usize]>,
    saved: &RowSaved,
    (y, p, d_out): (&CudaView<f32>, &CudaView<f32>, &CudaView<f32>),
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let s = Sizes::new(d)?;
    let (nh, gw, np) = (s.nh, s.gw, s.np);
    check_sizes(
        "pixel row",
        &[
            ("y", y.len(), d.map_len()),
            ("params", p.len(), d.param_len()),
            ("dL/d(out)", d_out.len(), d.map_len()),
            ("the saved previous-row states", saved.h_prev.len(), np * nh),
            ("the saved gates", saved.gates.len(), 4 * s.nr * s.cells()),
            (
                "the saved cell states",
                saved.c.as_ref().map_or(0, |c| c.len()),
                if s.lstm { s.nr * s.cells() } else { 0 },
            ),
        ],
    )?;
    let blas = handle(dev)?;
    let [b_, r_, c_, h_] = &s.ints;

    // Gate gradients on the padded map (0 at the pads): w.r.t. the input-to-state convolution, and (GRU only;
    // the LSTM's are the same) w.r.t. the state-to-state one.
    let mut dgi = dev.alloc_zeros::<f32>(np * gw)?;
    let mut dgh = if s.lstm { None } else { Some(dev.alloc_zeros::<f32>(np * gw)?) };
    let mut dh = dev.alloc_zeros::<f32>(s.row * nh)?;
    let mut dc = if s.lstm { Some(dev.alloc_zeros::<f32>(s.cells())?) } else { None };
    // dh_{i−1} = window₃(dss) · W_ss₃ᵀ, taps reversed: window position t reads kernel column 2 − t.
    let w_ss_t = wmat(dev, &s, &p.slice(s.w_ss..s.w_ss + s.wlen), (3, 2, -1), true)?;
    let cell = Kernel::new(dev, &PIXEL_ROW, if s.lstm { "prow_lstm_bwd" } else { "prow_gru_bwd" })?;
    let cfg = elementwise(s.cells())?;
    for i in (0..s.nr).rev() {
        let i_ = int(i, "row")?;
        let mut args = cell.args();
        match (&saved.c, dc.as_mut(), dgh.as_mut()) {
            (Some(c), Some(dc), None) => {
                args.arg(&saved.gates).arg(c).arg(d_out).arg(&dh).arg(dc).arg(&mut dgi);
            }
            (None, None, Some(dgh)) => {
                args.arg(&saved.gates).arg(&saved.h_prev).arg(d_out).arg(&mut dh).arg(&mut dgi).arg(dgh);
            }
            _ => bail!("pixel row: the saved activations are not this cell's"),
        }
        args.arg(b_).arg(r_).arg(c_).arg(h_).arg(&i_);
        launch(args, cfg)?;
        // Row 0's dh_{−1} would be the gradient of the fixed zero state: not needed. The LSTM's dh is
        // overwritten, the GRU's holds the direct path dh_i ⊙ z and accumulates.
        if i > 0 {
            let dss = dgh.as_ref().unwrap_or(&dgi).slice(i * s.row * gw..);
            let beta = if s.lstm { 0.0 } else { 1.0 };
            window_gemm(&blas, (s.row - 2, nh, gw), &dss, &w_ss_t, 3, &mut dh.slice_mut(nh..), beta)?;
        }
    }
    drop((dh, dc, w_ss_t));
    let dgh = dgh.as_ref().unwrap_or(&dgi);

    let mut dp = dev.alloc_zeros::<f32>(d.param_len())?;
    // Weight gradients, one GEMM per tap over every padded position (the pads' gate gradients are 0):
    // block t of dW_is₂ = Σ_q y_pad[q − 1 + t]ᵀ dgi[q], of dW_ss₃ = Σ_q h_prev[q − 1 + t]ᵀ dgh[q].
    let mut m = dev.alloc_zeros::<f32>(ROW_KERNEL * nh * gw)?;
    let scatter = Kernel::new(dev, &PIXEL_ROW, "prow_scatter")?;
    let gw_i = int(gw, "gate width")?;
    let y_pad = pad(dev, &s, y)?;
    for (src, dg, taps, at) in [(&y_pad, &dgi, 2, 0), (&saved.h_prev, dgh, 3, s.w_ss)] {
        for t in 0..taps {
            let (a, b) = (Mat::t(src.slice(t * nh..), nh), Mat::n(dg.slice(gw..), gw));
            gemm(&blas, (nh, gw, np - 2), a, b, &mut m.slice_mut(t * nh * gw..), gw, 0.0)?;
        }
        let taps_i = int(taps, "taps")?;
        let mut args = scatter.args();
        let mut dw = dp.slice_mut(at..at + s.wlen);
        args.arg(&m).arg(&mut dw).arg(h_).arg(&gw_i).arg(&taps_i);
        launch(args, elementwise(s.wlen)?)?;
    }
    drop((y_pad, m));
    // db_is = Σ dgi, db_ss = Σ dgh, label_bias[k] = Σ of dgi over the images of class k.
    let ones = filled(dev, np, 1.0)?;
    for (dg, at) in [(&dgi, s.b_is), (dgh, s.b_ss)] {
        let (a, b) = (Mat::n(ones.slice(..), np), Mat::n(dg.slice(..), gw));
        gemm(&blas, (1, gw, np), a, b, &mut dp.slice_mut(at..at + gw), gw, 0.0)?;
    }
    if d.classes > 0 {
        let (labels, _) = device_labels(dev, d, labels)?;
        let mut onehot = dev.alloc_zeros::<f32>(d.classes * np)?;
        let k = Kernel::new(dev, &PIXEL_ROW, "prow_label_onehot")?;
        let classes = int(d.classes, "classes")?;
        let mut args = k.args();
        args.arg(&labels).arg(&mut onehot).arg(&classes).arg(b_).arg(r_).arg(c_);
        launch(args, elementwise(d.classes * np)?)?;
        let (a, b) = (Mat::n(onehot.slice(..), np), Mat::n(dgi.slice(..), gw));
        gemm(&blas, (d.classes, gw, np), a, b, &mut dp.slice_mut(s.label_bias..), gw, 0.0)?;
    }

    // dL/dy = dOut + window₂(dgi) · W_is₂ᵀ: position q reads dgi at q (kernel column 1) and q + 1 (column 0).
    let w_is_t = wmat(dev, &s, &p.slice(..s.wlen), (2, 1, -1), true)?;
    let mut dy_pad = dev.alloc_zeros::<f32>(np * nh)?;
    window_gemm(&blas, (np - 1, nh, gw), &dgi.slice(..), &w_is_t, 2, &mut dy_pad.slice_mut(..), 0.0)?;
    let mut dy = dev.alloc_zeros::<f32>(d.map_len())?;
    let k = Kernel::new(dev, &PIXEL_ROW, "prow_unpad_add")?;
    let mut args = k.args();
    args.arg(&dy_pad).arg(d_out).arg(&mut dy).arg(b_).arg(r_).arg(c_).arg(h_);
    launch(args, elementwise(d.map_len())?)?;
    Ok((dy, dp))
}
