//! The likelihood heads on CUDA (the CUDA side of [`crate::heads`]; the math is
//! [`crate::heads::gaussian`]'s and [`crate::heads::mdn`]'s), f32 storage, every value computed in f64
//! inside the kernels as the CPU computes. Layouts are heads.cu's header.
//!
//! - Gaussian: one thread per row (`head_gaussian`, `head_gaussian_grad`).
//! - MDN: a group of G lanes of one warp per row, G = K rounded up to a power of two, at most 32, lane j
//!   taking components j, j + G, …; the log-softmax's and the log-sum-exp's max and sum are butterfly
//!   shuffles over the group (`head_mdn`, `head_mdn_grad`).
//!
//! Where the op keeps gradients the forward pass also writes ∂NLL/∂raw `[rows, S]` (f32), which stays on
//! the device until backward; backward scales it by the upstream gradient (`head_scale`). The fused
//! linear layer: `raw` = the bias in every row (`head_bias_rows`) + `h · Wᵀ` by cuBLAS, then the head
//! kernel; backward `dW = Gᵀ h` and `dh = G W` by cuBLAS and `db = Σ_rows G` by `head_colsum`, summed in a
//! fixed order, so every result is the same on every run.

use super::blas::{gemm, handle, Mat};
use super::{elementwise, f32_only, int, launch, tensor, view, with_views, Kernel, HEADS};
use crate::heads::Head;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Tensor};

/// Threads per block of `head_mdn` (a multiple of 32, so no group straddles two warps).
const MDN_THREADS: usize = 256;
/// Block shape of `head_colsum`: `HEAD_COLS` × `HEAD_ROWS` in heads.cu.
const COLSUM_COLS: usize = 32;
const COLSUM_ROWS: usize = 32;

/// `what` of the named head: the prefix of its errors, as on the CPU.
fn label(head: Head) -> String {
    format!("{} head", head.name())
}

/// The per-row NLL `[rows]` of `raw [rows, S]` against `y [rows, D]` and, with `keep`, ∂NLL/∂raw
/// `[rows, S]`.
fn rows_nll(
    dev: &CudaDevice,
    head: Head,
    raw: &CudaView<f32>,
    y: &CudaView<f32>,
    rows: usize,
    keep: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<f32>>)> {
    let (size, dim) = (head.output_size(), head.dim());
    if rows == 0 {
        bail!("{}: the CUDA kernels need at least one row", label(head));
    }
    if raw.len() != rows * size || y.len() != rows * dim {
        bail!(
            "{}: {} raw outputs and {} targets are not {rows} rows of {size} and {dim}",
            label(head),
            raw.len(),
            y.len()
        );
    }
    let mut nll = dev.alloc_zeros::<f32>(rows)?;
    let mut grad = if keep { Some(dev.alloc_zeros::<f32>(rows * size)?) } else { None };
    let (n_i, dim_i) = (int(rows, "rows")?, int(dim, "D")?);
    int(rows * size, "raw outputs")?;
    match head {
        Head::Gaussian { .. } => {
            let f = Kernel::new(dev, &HEADS, if keep { "head_gaussian_grad" } else { "head_gaussian" })?;
            let mut args = f.args();
            args.arg(raw).arg(y).arg(&mut nll);
            if let Some(g) = grad.as_mut() {
                args.arg(g);
            }
            args.arg(&n_i).arg(&dim_i);
            launch(args, elementwise(rows)?)?;
        }
        Head::Mdn { components, .. } => {
            let group = components.next_power_of_two().min(32);
            let blocks = rows.div_ceil(MDN_THREADS / group);
            let (k_i, group_i) = (int(components, "K")?, int(group, "group")?);
            let f = Kernel::new(dev, &HEADS, if keep { "head_mdn_grad" } else { "head_mdn" })?;
            let mut args = f.args();
            args.arg(raw).arg(y).arg(&mut nll);
            if let Some(g) = grad.as_mut() {
                args.arg(g);
            }
            args.arg(&n_i).arg(&dim_i).arg(&k_i).arg(&group_i);
            let cfg = LaunchConfig {
                grid_dim: (int(blocks, "blocks")? as u32, 1, 1),
                block_dim: (MDN_THREADS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            launch(args, cfg)?;
        }
    }
    Ok((nll, grad))
}

/// `G = diag(up) · grad` `[rows, size]` from the forward pass's ∂NLL/∂raw and the upstream gradient `up
/// [rows]`.
fn scaled(
    dev: &CudaDevice,
    saved: &CudaSlice<f32>,
    up: &CudaView<f32>,
    (rows, size): (usize, usize),
) -> Result<CudaSlice<f32>> {
    if saved.len() != rows * size || up.len() != rows {
        bail!(
            "likelihood head: backward over {rows} rows of {size} with {} kept gradients and {} upstream values",
            saved.len(),
            up.len()
        );
    }
    let mut g = dev.alloc_zeros::<f32>(rows * size)?;
    let (len, size_i) = ((rows * size) as i64, int(size, "raw outputs per row")?);
    let f = Kernel::new(dev, &HEADS, "head_scale")?;
    let mut args = f.args();
    args.arg(saved).arg(up).arg(&mut g).arg(&len).arg(&size_i);
    launch(args, elementwise(rows * size)?)?;
    Ok(g)
}

/// The upstream gradient, made f32 (the op's output type).
fn upstream(grad: &Tensor) -> Result<Tensor> {
    match grad.dtype() {
        DType::F32 => Ok(grad.clone()),
        dtype => bail!("likelihood head: the CUDA backward needs an f32 upstream gradient, got {dtype:?}"),
    }
}

/// The head op's CUDA forward over `raw [rows, S]` and `y [rows, D]`: the per-row NLL (a `[rows]`
/// storage) and, with `keep`, ∂NLL/∂raw for [`backward`].
pub(crate) fn forward(
    head: Head,
    raw: (&CudaStorage, &Layout),
    y: (&CudaStorage, &Layout),
    keep: bool,
) -> Result<(CudaStorage, Option<CudaSlice<f32>>)> {
    f32_only(raw.0, &label(head))?;
    f32_only(y.0, &label(head))?;
    let dev = &raw.0.device;
    let rows = raw.1.dims().first().copied().unwrap_or(0);
    let (nll, grad) =
        rows_nll(dev, head, &view(raw.0, raw.1, "raw outputs")?, &view(y.0, y.1, "targets")?, rows, keep)?;
    Ok((CudaStorage::wrap_cuda_slice(nll, dev.clone()), grad))
}

/// The head op's CUDA backward: ∂L/∂raw `[rows, S]` from the forward pass's `saved` ∂NLL/∂raw and the
/// upstream gradient `grad [rows]`.
pub(crate) fn backward(saved: Option<&CudaSlice<f32>>, raw: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let Some(saved) = saved else { bail!("likelihood head: backward without a forward pass that kept gradients") };
    let (rows, size) = raw.dims2()?;
    let d = with_views(&[&upstream(grad)?], |dev, v| scaled(dev, saved, &v[0], (rows, size)))?;
    tensor(raw, d, (rows, size))
}

/// The fused linear head's CUDA forward: `raw = h [rows, H] · Wᵀ + b` (`params = [W (S × H), b (S)]`),
/// then the head against `y [rows, D]`: the per-row NLL storage and, with `keep`, ∂NLL/∂raw for
/// [`linear_backward`].
pub(crate) fn linear_forward(
    head: Head,
    (rows, hidden): (usize, usize),
    h: (&CudaStorage, &Layout),
    params: (&CudaStorage, &Layout),
    y: (&CudaStorage, &Layout),
    keep: bool,
) -> Result<(CudaStorage, Option<CudaSlice<f32>>)> {
    for s in [h.0, params.0, y.0] {
        f32_only(s, &label(head))?;
    }
    let out = head.output_size();
    if rows == 0 || hidden == 0 {
        bail!("{}: the CUDA kernels need at least one row and one hidden value, got {rows} × {hidden}", label(head));
    }
    let dev = &h.0.device;
    let (hv, pv, yv) = (view(h.0, h.1, "h")?, view(params.0, params.1, "params")?, view(y.0, y.1, "targets")?);
    if hv.len() != rows * hidden || pv.len() != out * hidden + out {
        bail!("{}: h and params hold {} and {} values for {rows} rows, H = {hidden}", label(head), hv.len(), pv.len());
    }
    let mut raw = dev.alloc_zeros::<f32>(rows * out)?;
    let fill = Kernel::new(dev, &HEADS, "head_bias_rows")?;
    let (len, out_i) = ((rows * out) as i64, int(out, "raw outputs per row")?);
    let bias = pv.slice(out * hidden..);
    let mut args = fill.args();
    args.arg(&bias).arg(&mut raw).arg(&len).arg(&out_i);
    launch(args, elementwise(rows * out)?)?;
    let blas = handle(dev)?;
    let (a, b) = (Mat::n(hv.slice(..), hidden), Mat::t(pv.slice(..out * hidden), hidden));
    gemm(&blas, (rows, out, hidden), a, b, &mut raw.slice_mut(..), out, 1.0)?;
    let (nll, grad) = rows_nll(dev, head, &raw.slice(..), &yv, rows, keep)?;
    Ok((CudaStorage::wrap_cuda_slice(nll, dev.clone()), grad))
}

/// The fused linear head's CUDA backward: `(dh [rows, H], dparams [S·H + S])` from the forward pass's
/// `saved` ∂NLL/∂raw and the upstream gradient `grad [rows]`, the operands on one CUDA device (read in
/// place where contiguous).
pub(crate) fn linear_backward(
    head: Head,
    (rows, hidden): (usize, usize),
    saved: Option<&CudaSlice<f32>>,
    h: &Tensor,
    params: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let Some(saved) = saved else { bail!("linear head: backward without a forward pass that kept gradients") };
    if let Some(t) = [h, params].into_iter().find(|t| t.dtype() != DType::F32) {
        bail!("{}: the CUDA kernels are f32 only, got {:?}; use f32 or device cpu", label(head), t.dtype());
    }
    let out = head.output_size();
    let (dh, dp) = with_views(&[h, params, &upstream(grad)?], |dev, v| {
        if v[0].len() != rows * hidden || v[1].len() != out * hidden + out {
            bail!("{}: backward operands do not fit {rows} rows, H = {hidden}", label(head));
        }
        let g = scaled(dev, saved, &v[2], (rows, out))?;
        let blas = handle(dev)?;
        let mut dp = dev.alloc_zeros::<f32>(out * hidden + out)?;
        // dW [S, H] = Gᵀ h.
        let (a, b) = (Mat::t(g.slice(..), out), Mat::n(v[0].slice(..), hidden));
        gemm(&blas, (out, hidden, rows), a, b, &mut dp.slice_mut(..out * hidden), hidden, 0.0)?;
        // db [S] = Σ_rows G.
        let colsum = Kernel::new(dev, &HEADS, "head_colsum")?;
        let (n_i, out_i) = (int(rows, "rows")?, int(out, "raw outputs per row")?);
        let mut db = dp.slice_mut(out * hidden..);
        let mut args = colsum.args();
        args.arg(&g).arg(&mut db).arg(&n_i).arg(&out_i);
        let cfg = LaunchConfig {
            grid_dim: (int(out.div_ceil(COLSUM_COLS), "column blocks")? as u32, 1, 1),
            block_dim: (COLSUM_COLS as u32, COLSUM_ROWS as u32, 1),
            shared_mem_bytes: 0,
        };
        launch(args, cfg)?;
        // dh [rows, H] = G W.
        let mut dh = dev.alloc_zeros::<f32>(rows * hidden)?;
        let (a, b) = (Mat::n(g.slice(..), out), Mat::n(v[1].slice(..out * hidden), hidden));
        gemm(&blas, (rows, hidden, out), a, b, &mut dh.slice_mut(..), hidden, 0.0)?;
        Ok((dh, dp))
    })?;
    Ok((tensor(h, dh, h.shape())?, tensor(h, dp, params.shape())?))
}
