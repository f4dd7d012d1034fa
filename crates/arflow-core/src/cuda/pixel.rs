//! The Pixel-RNN's masked input convolution and its output head with the per-pixel NLL on CUDA (the CUDA
//! side of [`crate::pixel::input_conv`] and [`crate::pixel::head`]), f32; the row layers are in
//! [`super::pixel_row`]. Kernels in pixel.cu.
//!
//! Input convolution (`x [B, R, C]`, N = B·R·C pixels): `pconv_im2col` gathers each pixel's 24 taps that
//! mask A keeps and a 1 (`[N, 25]`), `pconv_weight` the matching weight `[25, H]` (the bias in its last row),
//! and y_0 is one GEMM `[N, 25] · [25, H]`. Backward: the same gather, `dW = colsᵀ · dy_0` (one GEMM
//! `[25, N] · [N, H]`), scattered by `pconv_scatter` into the packed 7×7 layout (masked taps exactly 0).
//! No gradient flows to the image.
//!
//! Head (`y [N, H]`): `z1 = relu(y) · W1ᵀ + b1` and `logits = relu(z1) · W2ᵀ + b2` (the bias broadcast into
//! the output, the GEMM accumulating onto it), then one fused pass per pixel — categorical: one block per
//! row, the softmax over the 256 levels as loss.cu's cross-entropy; Bernoulli: one thread per row — writing
//! the NLL and ∂NLL/∂logits. z1 and ∂NLL/∂logits stay on the device for backward: ∂NLL/∂logits scaled by
//! each row's upstream gradient, then `dW2 = dlᵀ · relu(z1)`, `dz1 = dl · W2` (masked where z1 ≤ 0),
//! `dW1 = dz1ᵀ · relu(y)`, `dy = dz1 · W1` (masked where y ≤ 0), the bias gradients as `ones · d` GEMMs.

use super::blas::{gemm, handle, Mat};
use super::{elementwise, f32_only, int, launch, tensor, view, view_u32, with_views, Kernel, PIXEL};
use crate::pixel::head::{HeadDims, PixelOutput};
use crate::pixel::input_conv::{ConvDims, COLS};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Tensor};

/// Threads per block of `pix_nll_categorical`: `PIX_THREADS` in pixel.cu.
const PIX_THREADS: u32 = 256;

/// Errors unless every buffer `(what, len, want)` holds exactly the values the kernels index (they do not
/// check bounds).
pub(crate) fn check_sizes(op: &str, bufs: &[(&str, usize, usize)]) -> Result<()> {
    for &(what, len, want) in bufs {
        if len != want {
            bail!("{op}: {what} holds {len} values, the CUDA kernels need {want}");
        }
    }
    Ok(())
}

/// Errors unless every tensor is f32 (the backward passes' check; forward checks the storages).
pub(crate) fn f32_tensors(op: &str, ts: &[&Tensor]) -> Result<()> {
    match ts.iter().find(|t| t.dtype() != DType::F32) {
        Some(t) => bail!("{op}: the CUDA kernels are f32 only, got {:?}; use f32 or device cpu", t.dtype()),
        None => Ok(()),
    }
}

/// `n` copies of `v` on the device (`ones` for the column sums of the bias gradients).
pub(crate) fn filled(dev: &CudaDevice, n: usize, v: f32) -> Result<CudaSlice<f32>> {
    let mut out = dev.alloc_zeros::<f32>(n)?;
    let fill = Kernel::new(dev, &PIXEL, "pix_fill")?;
    let n_i = n as i64;
    let mut args = fill.args();
    args.arg(&mut out).arg(&v).arg(&n_i);
    launch(args, elementwise(n)?)?;
    Ok(out)
}

/// max(x, 0), elementwise.
fn relu(dev: &CudaDevice, x: &CudaView<f32>) -> Result<CudaSlice<f32>> {
    let mut out = dev.alloc_zeros::<f32>(x.len())?;
    let k = Kernel::new(dev, &PIXEL, "pix_relu")?;
    let n = x.len() as i64;
    let mut args = k.args();
    args.arg(x).arg(&mut out).arg(&n);
    launch(args, elementwise(x.len())?)?;
    Ok(out)
}

/// `d` zeroed where `x` ≤ 0: the gradient through max(x, 0), in place.
fn relu_grad(dev: &CudaDevice, x: &CudaView<f32>, d: &mut CudaSlice<f32>) -> Result<()> {
    if d.len() != x.len() {
        bail!("pixel head: a ReLU gradient of {} values over {} inputs", d.len(), x.len());
    }
    let k = Kernel::new(dev, &PIXEL, "pix_relu_grad")?;
    let n = x.len() as i64;
    let mut args = k.args();
    args.arg(x).arg(d).arg(&n);
    launch(args, elementwise(x.len())?)
}

/// `[rows, bias.len()]`, every row `bias`.
fn bias_rows(dev: &CudaDevice, bias: &CudaView<f32>, rows: usize) -> Result<CudaSlice<f32>> {
    let width = bias.len();
    let mut out = dev.alloc_zeros::<f32>(rows * width)?;
    let k = Kernel::new(dev, &PIXEL, "pix_bias_rows")?;
    let (rows_i, width_i) = (rows as i64, int(width, "bias width")?);
    let mut args = k.args();
    args.arg(bias).arg(&mut out).arg(&rows_i).arg(&width_i);
    launch(args, elementwise(rows * width)?)?;
    Ok(out)
}

/// Pixels of the convolution, erroring unless every size is at least 1.
fn conv_pixels(d: &ConvDims) -> Result<usize> {
    if d.images == 0 || d.rows == 0 || d.cols == 0 || d.hidden == 0 {
        bail!("pixel input conv: the CUDA kernels need every size at least 1, got {d:?}");
    }
    Ok(d.images * d.rows * d.cols)
}

/// The im2col matrix `[N, 25]` of the images `x [B, R, C]`.
fn im2col(dev: &CudaDevice, d: &ConvDims, x: &CudaView<f32>) -> Result<CudaSlice<f32>> {
    let n = conv_pixels(d)?;
    let mut cols = dev.alloc_zeros::<f32>(n * COLS)?;
    let k = Kernel::new(dev, &PIXEL, "pconv_im2col")?;
    let (b, r, c) = (int(d.images, "images")?, int(d.rows, "rows")?, int(d.cols, "cols")?);
    let mut args = k.args();
    args.arg(x).arg(&mut cols).arg(&b).arg(&r).arg(&c);
    launch(args, elementwise(n * COLS)?)?;
    Ok(cols)
}

/// The input convolution's CUDA forward: y_0 `[B, R, C, H]` (the caller gives it its shape) of the images
/// `x [B, R, C]` under the packed parameters.
pub(crate) fn input_conv_forward(
    d: &ConvDims,
    x: (&CudaStorage, &Layout),
    p: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    f32_only(x.0, "pixel input conv")?;
    f32_only(p.0, "pixel input conv")?;
    let dev = &x.0.device;
    let (x, p) = (view(x.0, x.1, "x")?, view(p.0, p.1, "params")?);
    let (n, h) = (conv_pixels(d)?, d.hidden);
    check_sizes("pixel input conv", &[("x", x.len(), n), ("params", p.len(), d.param_len())])?;
    let cols = im2col(dev, d, &x)?;
    let mut wmat = dev.alloc_zeros::<f32>(COLS * h)?;
    let k = Kernel::new(dev, &PIXEL, "pconv_weight")?;
    let h_i = int(h, "hidden")?;
    let mut args = k.args();
    args.arg(&p).arg(&mut wmat).arg(&h_i);
    launch(args, elementwise(COLS * h)?)?;
    let mut y = dev.alloc_zeros::<f32>(n * h)?;
    let (a, b) = (Mat::n(cols.slice(..), COLS), Mat::n(wmat.slice(..), h));
    gemm(&*handle(dev)?, (n, h, COLS), a, b, &mut y.slice_mut(..), h, 0.0)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// The input convolution's CUDA backward: dL/d(params) from the images `x` and `grad` = dL/dy_0, on one
/// CUDA device.
pub(crate) fn input_conv_backward(d: &ConvDims, x: &Tensor, p: &Tensor, grad: &Tensor) -> Result<Tensor> {
    f32_tensors("pixel input conv", &[x, p, grad])?;
    let (n, h) = (conv_pixels(d)?, d.hidden);
    let dp = with_views(&[x, grad], |dev, v| {
        let (x, g) = (&v[0], &v[1]);
        check_sizes("pixel input conv", &[("x", x.len(), n), ("dL/dy", g.len(), n * h)])?;
        let cols = im2col(dev, d, x)?;
        let mut dw = dev.alloc_zeros::<f32>(COLS * h)?;
        let (a, b) = (Mat::t(cols.slice(..), COLS), Mat::n(g.slice(..), h));
        gemm(&*handle(dev)?, (COLS, h, n), a, b, &mut dw.slice_mut(..), h, 0.0)?;
        let mut dp = dev.alloc_zeros::<f32>(d.param_len())?;
        let k = Kernel::new(dev, &PIXEL, "pconv_scatter")?;
        let h_i = int(h, "hidden")?;
        let mut args = k.args();
        args.arg(&dw).arg(&mut dp).arg(&h_i);
        launch(args, elementwise(d.param_len())?)?;
        Ok(dp)
    })?;
    tensor(x, dp, p.shape())
}

/// What the head's forward keeps for backward: z1 `[N, H]` and ∂NLL/∂logits `[N, O]`.
pub(crate) struct HeadSaved {
    z1: CudaSlice<f32>,
    dlogits: CudaSlice<f32>,
}

/// Offsets of W1, b1, W2, b2 in the packed head parameters.
fn head_offsets(d: &HeadDims) -> [usize; 4] {
    let (h, o) = (d.hidden, d.output.width());
    [0, h * h, h * h + h, h * h + h + o * h]
}

fn head_check(d: &HeadDims) -> Result<()> {
    if d.rows == 0 || d.hidden == 0 {
        bail!("pixel head: the CUDA kernels need at least one row and one channel, got {d:?}");
    }
    Ok(())
}

/// The head's CUDA forward: the NLL `[N]` of each row's target under the head applied to `y [N, H]`, and
/// with `keep` what [`head_backward`] needs.
pub(crate) fn head_forward(
    d: &HeadDims,
    y: (&CudaStorage, &Layout),
    p: (&CudaStorage, &Layout),
    targets: (&CudaStorage, &Layout),
    keep: bool,
) -> Result<(CudaStorage, Option<HeadSaved>)> {
    f32_only(y.0, "pixel head")?;
    f32_only(p.0, "pixel head")?;
    head_check(d)?;
    let dev = &y.0.device;
    let (y, p, t) = (view(y.0, y.1, "y")?, view(p.0, p.1, "params")?, view_u32(targets.0, targets.1, "targets")?);
    let (n, h, o) = (d.rows, d.hidden, d.output.width());
    check_sizes("pixel head", &[("y", y.len(), n * h), ("params", p.len(), d.param_len()), ("targets", t.len(), n)])?;
    let [w1, b1, w2, b2] = head_offsets(d);
    let blas = handle(dev)?;
    let a1 = relu(dev, &y)?;
    let mut z1 = bias_rows(dev, &p.slice(b1..b1 + h), n)?;
    gemm(&blas, (n, h, h), Mat::n(a1.slice(..), h), Mat::t(p.slice(w1..w1 + h * h), h), &mut z1.slice_mut(..), h, 1.0)?;
    drop(a1);
    let a2 = relu(dev, &z1.slice(..))?;
    let mut logits = bias_rows(dev, &p.slice(b2..b2 + o), n)?;
    gemm(
        &blas,
        (n, o, h),
        Mat::n(a2.slice(..), h),
        Mat::t(p.slice(w2..w2 + o * h), h),
        &mut logits.slice_mut(..),
        o,
        1.0,
    )?;
    drop(a2);
    let mut nll = dev.alloc_zeros::<f32>(n)?;
    let mut dlogits = dev.alloc_zeros::<f32>(n * o)?;
    match d.output {
        PixelOutput::Categorical => {
            let k = Kernel::new(dev, &PIXEL, "pix_nll_categorical")?;
            let (rows, o_i) = (int(n, "rows")?, int(o, "levels")?);
            let mut args = k.args();
            args.arg(&logits).arg(&t).arg(&mut nll).arg(&mut dlogits).arg(&o_i);
            let cfg =
                LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (PIX_THREADS, 1, 1), shared_mem_bytes: 0 };
            launch(args, cfg)?;
        }
        PixelOutput::Bernoulli => {
            let k = Kernel::new(dev, &PIXEL, "pix_nll_bernoulli")?;
            let rows = n as i64;
            let mut args = k.args();
            args.arg(&logits).arg(&t).arg(&mut nll).arg(&mut dlogits).arg(&rows);
            launch(args, elementwise(n)?)?;
        }
    }
    Ok((CudaStorage::wrap_cuda_slice(nll, dev.clone()), keep.then_some(HeadSaved { z1, dlogits })))
}

/// The head's CUDA backward: `(dL/dy [N, H], dL/d(params))` from what [`head_forward`] kept (left as it was),
/// `y`, the packed parameters and `grad` = dL/d(nll) `[N]`, on one CUDA device.
pub(crate) fn head_backward(
    d: &HeadDims,
    saved: &HeadSaved,
    y: &Tensor,
    p: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    f32_tensors("pixel head", &[y, p, grad])?;
    head_check(d)?;
    let (n, h, o) = (d.rows, d.hidden, d.output.width());
    let [w1, b1, w2, b2] = head_offsets(d);
    let (dy, dp) = with_views(&[y, p, grad], |dev, v| {
        let (y, p, g) = (&v[0], &v[1], &v[2]);
        check_sizes(
            "pixel head",
            &[
                ("y", y.len(), n * h),
                ("params", p.len(), d.param_len()),
                ("dL/d(nll)", g.len(), n),
                ("the saved z1", saved.z1.len(), n * h),
                ("the saved dNLL/dlogits", saved.dlogits.len(), n * o),
            ],
        )?;
        let blas = handle(dev)?;
        // dl = ∂NLL_r/∂logits_r · grad_r.
        let mut dl = dev.alloc_zeros::<f32>(n * o)?;
        let k = Kernel::new(dev, &PIXEL, "pix_scale_rows")?;
        let (rows, o_i) = (n as i64, int(o, "outputs")?);
        let mut args = k.args();
        args.arg(&saved.dlogits).arg(g).arg(&mut dl).arg(&rows).arg(&o_i);
        launch(args, elementwise(n * o)?)?;

        let ones = filled(dev, n, 1.0)?;
        let mut dp = dev.alloc_zeros::<f32>(d.param_len())?;
        // logits = a2 · W2ᵀ + b2: dW2 = dlᵀ · a2, db2 = ones · dl.
        let a2 = relu(dev, &saved.z1.slice(..))?;
        gemm(&blas, (o, h, n), Mat::t(dl.slice(..), o), Mat::n(a2.slice(..), h), &mut dp.slice_mut(w2..), h, 0.0)?;
        drop(a2);
        gemm(&blas, (1, o, n), Mat::n(ones.slice(..), n), Mat::n(dl.slice(..), o), &mut dp.slice_mut(b2..), o, 0.0)?;
        // a2 = relu(z1): dz1 = dl · W2 where z1 > 0.
        let mut dz1 = dev.alloc_zeros::<f32>(n * h)?;
        let w2m = Mat::n(p.slice(w2..w2 + o * h), h);
        gemm(&blas, (n, h, o), Mat::n(dl.slice(..), o), w2m, &mut dz1.slice_mut(..), h, 0.0)?;
        drop(dl);
        relu_grad(dev, &saved.z1.slice(..), &mut dz1)?;
        // z1 = a1 · W1ᵀ + b1: dW1 = dz1ᵀ · a1, db1 = ones · dz1.
        let a1 = relu(dev, y)?;
        gemm(&blas, (h, h, n), Mat::t(dz1.slice(..), h), Mat::n(a1.slice(..), h), &mut dp.slice_mut(w1..), h, 0.0)?;
        drop(a1);
        gemm(&blas, (1, h, n), Mat::n(ones.slice(..), n), Mat::n(dz1.slice(..), h), &mut dp.slice_mut(b1..), h, 0.0)?;
        // a1 = relu(y): dy = dz1 · W1 where y > 0.
        let mut dy = dev.alloc_zeros::<f32>(n * h)?;
        let w1m = Mat::n(p.slice(w1..w1 + h * h), h);
        gemm(&blas, (n, h, h), Mat::n(dz1.slice(..), h), w1m, &mut dy.slice_mut(..), h, 0.0)?;
        relu_grad(dev, y, &mut dy)?;
        Ok((dy, dp))
    })?;
    Ok((tensor(y, dy, y.shape())?, tensor(y, dp, p.shape())?))
}
