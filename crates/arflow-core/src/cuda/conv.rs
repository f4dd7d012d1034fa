//! The 3×3 convolution (stride 1, zero padding 1, channels-last) on CUDA, the CUDA side of
//! [`crate::flow::conv`]'s op, f32: `x [N, H, W, Cin]`, `wmat [9·Cin + 1, Cout]` (the weight in im2col's
//! row order, then the bias) ↦ `y [N, H, W, Cout]`, with `relu_in` the convolution of `max(x, 0)`.
//!
//! im2col + cuBLAS, over chunks of pixels whose im2col rows fit a scratch buffer of [`CHUNK_VALUES`] (the
//! columns never exist whole; one buffer serves every chunk, stream-ordered). Per chunk of M pixels:
//! - forward: `conv_im2col` of x (ReLU applied, a trailing 1) into `[M, 9·Cin + 1]`, then one GEMM
//!   against wmat into the chunk's rows of y (the bias rides in the GEMM);
//! - backward: `conv_im2col` of dL/dy into `[M, 9·Cout]`, one GEMM against the kernel turned 180° with its
//!   channels swapped (`conv_turn`, `[9·Cout, Cin]`, as the CPU op's `wt`) into the chunk's rows of dx; then
//!   `conv_im2col` of x again (as the forward) and `dwmat += colsᵀ · dL/dy` (`[9·Cin + 1, Cout]`, the bias
//!   gradient in the last row from the ones column), accumulated over the chunks in order (beta = 1).
//!   With `relu_in`, `conv_relu_grad` then zeroes dx where x < 0.
//!
//! Deterministic: the chunking depends on the sizes only, and cuBLAS GEMMs of fixed sizes give the same
//! bits on every run.

use super::blas::{gemm, handle, Mat};
use super::{elementwise, f32_only, int, launch, tensor, view, with_views, Kernel, CONV};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Tensor};

/// im2col values per chunk (64 MiB of f32): the scratch buffer's size where the stack is large.
pub(crate) const CHUNK_VALUES: usize = 16 << 20;

/// The convolution's sizes, as the CPU op's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub relu_in: bool,
}

impl Dims {
    fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    /// Errors unless every size is at least 1 and the operands hold `(what, len, want)` values (the kernels
    /// index them without bounds checks).
    fn check(&self, bufs: &[(&str, usize, usize)]) -> Result<()> {
        let Dims { n, h, w, cin, cout, .. } = *self;
        if n == 0 || h == 0 || w == 0 || cin == 0 || cout == 0 {
            bail!("conv3x3: the CUDA kernels need every size at least 1, got {self:?}");
        }
        for &(what, len, want) in bufs {
            if len != want {
                bail!("conv3x3: {what} holds {len} values, {self:?} needs {want}");
            }
        }
        Ok(())
    }
}

/// Pixels per chunk: as many im2col rows of `width` as `chunk_values` holds, at least 1, at most all.
fn chunk_rows(rows: usize, width: usize, chunk_values: usize) -> usize {
    (chunk_values / width).clamp(1, rows)
}

/// The im2col gather of one chunk (`conv_im2col`), for a stack of `c` channels.
struct Gather {
    kernel: Kernel,
    h: i32,
    w: i32,
}

impl Gather {
    fn new(dev: &CudaDevice, d: &Dims) -> Result<Self> {
        Ok(Gather { kernel: Kernel::new(dev, &CONV, "conv_im2col")?, h: int(d.h, "H")?, w: int(d.w, "W")? })
    }

    /// Rows `r0 .. r0 + m` of the im2col of `src [N, H, W, c]` into the first `m · (9c + ones)` values of
    /// `cols`, which must hold that many.
    fn run(
        &self,
        src: &CudaView<f32>,
        cols: &mut CudaSlice<f32>,
        c: usize,
        (r0, m): (usize, usize),
        ones: bool,
        relu: bool,
    ) -> Result<()> {
        let width = 9 * c + usize::from(ones);
        if cols.len() < m * width {
            bail!("conv3x3: a scratch buffer of {} values cannot hold {m} im2col rows of {width}", cols.len());
        }
        let (c_i, m_i, ones_i, relu_i) = (int(c, "channels")?, int(m, "chunk rows")?, i32::from(ones), i32::from(relu));
        let r0_i = r0 as i64;
        let mut args = self.kernel.args();
        args.arg(src).arg(cols).arg(&self.h).arg(&self.w).arg(&c_i).arg(&r0_i).arg(&m_i).arg(&ones_i).arg(&relu_i);
        launch(args, elementwise(m * width)?)
    }
}

/// `y [N·H·W, Cout]` from `x [N·H·W, Cin]` and `wmat [9·Cin + 1, Cout]`, over chunks of `chunk_values`.
fn forward_views(
    dev: &CudaDevice,
    d: &Dims,
    x: &CudaView<f32>,
    wmat: &CudaView<f32>,
    chunk_values: usize,
) -> Result<CudaSlice<f32>> {
    let (rows, k, co) = (d.rows(), 9 * d.cin + 1, d.cout);
    d.check(&[("x", x.len(), rows * d.cin), ("the weight matrix", wmat.len(), k * co)])?;
    let blas = handle(dev)?;
    let gather = Gather::new(dev, d)?;
    let chunk = chunk_rows(rows, k, chunk_values);
    let mut cols = dev.alloc_zeros::<f32>(chunk * k)?;
    let mut y = dev.alloc_zeros::<f32>(rows * co)?;
    for r0 in (0..rows).step_by(chunk) {
        let m = chunk.min(rows - r0);
        gather.run(x, &mut cols, d.cin, (r0, m), true, d.relu_in)?;
        let a = Mat::n(cols.slice(..m * k), k);
        gemm(&blas, (m, co, k), a, Mat::n(wmat.slice(..), co), &mut y.slice_mut(r0 * co..(r0 + m) * co), co, 0.0)?;
    }
    Ok(y)
}

/// `(dx [N·H·W, Cin], dwmat [9·Cin + 1, Cout])` from x, wmat and `g` = dL/dy `[N·H·W, Cout]`, over chunks of
/// `chunk_values`.
fn backward_views(
    dev: &CudaDevice,
    d: &Dims,
    x: &CudaView<f32>,
    wmat: &CudaView<f32>,
    g: &CudaView<f32>,
    chunk_values: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let (rows, ci, co) = (d.rows(), d.cin, d.cout);
    let (kx, kg) = (9 * ci + 1, 9 * co);
    d.check(&[("x", x.len(), rows * ci), ("the weight matrix", wmat.len(), kx * co), ("dL/dy", g.len(), rows * co)])?;
    let blas = handle(dev)?;
    let (ci_i, co_i) = (int(ci, "Cin")?, int(co, "Cout")?);

    // The turned kernel, [9·Cout, Cin].
    let mut wt = dev.alloc_zeros::<f32>(kg * ci)?;
    let turn = Kernel::new(dev, &CONV, "conv_turn")?;
    let mut args = turn.args();
    args.arg(wmat).arg(&mut wt).arg(&ci_i).arg(&co_i);
    launch(args, elementwise(kg * ci)?)?;

    let gather = Gather::new(dev, d)?;
    let chunk = chunk_rows(rows, kx.max(kg), chunk_values);
    let mut cols = dev.alloc_zeros::<f32>(chunk * kx.max(kg))?;
    let mut dx = dev.alloc_zeros::<f32>(rows * ci)?;
    let mut dw = dev.alloc_zeros::<f32>(kx * co)?;
    for r0 in (0..rows).step_by(chunk) {
        let m = chunk.min(rows - r0);
        // dx rows = im2col(dL/dy) · wt.
        gather.run(g, &mut cols, co, (r0, m), false, false)?;
        let (a, b) = (Mat::n(cols.slice(..m * kg), kg), Mat::n(wt.slice(..), ci));
        gemm(&blas, (m, ci, kg), a, b, &mut dx.slice_mut(r0 * ci..(r0 + m) * ci), ci, 0.0)?;
        // dwmat (+)= im2col(x)ᵀ · dL/dy rows, the first chunk overwriting.
        gather.run(x, &mut cols, ci, (r0, m), true, d.relu_in)?;
        let (a, b) = (Mat::t(cols.slice(..m * kx), kx), Mat::n(g.slice(r0 * co..(r0 + m) * co), co));
        gemm(&blas, (kx, co, m), a, b, &mut dw.slice_mut(..), co, if r0 == 0 { 0.0 } else { 1.0 })?;
    }
    if d.relu_in {
        let mask = Kernel::new(dev, &CONV, "conv_relu_grad")?;
        let len = (rows * ci) as i64;
        let mut args = mask.args();
        args.arg(x).arg(&mut dx).arg(&len);
        launch(args, elementwise(rows * ci)?)?;
    }
    Ok((dx, dw))
}

/// The op's CUDA forward: `y [N, H, W, Cout]` (the caller gives it its shape).
pub(crate) fn forward(d: &Dims, x: (&CudaStorage, &Layout), wmat: (&CudaStorage, &Layout)) -> Result<CudaStorage> {
    f32_only(x.0, "conv3x3")?;
    f32_only(wmat.0, "conv3x3")?;
    let dev = &x.0.device;
    let y = forward_views(dev, d, &view(x.0, x.1, "x")?, &view(wmat.0, wmat.1, "the weight matrix")?, CHUNK_VALUES)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// [`forward`] on tensors, over chunks of `chunk_values` im2col values (the tests' way to many chunks).
#[cfg(test)]
pub(crate) fn forward_chunked(d: &Dims, x: &Tensor, wmat: &Tensor, chunk_values: usize) -> Result<Tensor> {
    let y = with_views(&[x, wmat], |dev, v| forward_views(dev, d, &v[0], &v[1], chunk_values))?;
    tensor(x, y, (d.n, d.h, d.w, d.cout))
}

/// The op's CUDA backward: `(dx [N, H, W, Cin], dwmat [9·Cin + 1, Cout])` from the upstream gradient
/// `grad [N, H, W, Cout]`, the operands on one CUDA device (read in place where contiguous).
pub(crate) fn backward(d: &Dims, x: &Tensor, wmat: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    backward_chunked(d, x, wmat, grad, CHUNK_VALUES)
}

/// [`backward`] over chunks of `chunk_values` im2col values.
pub(crate) fn backward_chunked(
    d: &Dims,
    x: &Tensor,
    wmat: &Tensor,
    grad: &Tensor,
    chunk_values: usize,
) -> Result<(Tensor, Tensor)> {
    if let Some(t) = [x, wmat, grad].into_iter().find(|t| t.dtype() != DType::F32) {
        bail!("conv3x3: the CUDA kernels are f32 only, got {:?}; use f32 or device cpu", t.dtype());
    }
    let (dx, dw) = with_views(&[x, wmat, grad], |dev, v| backward_views(dev, d, &v[0], &v[1], &v[2], chunk_values))?;
    Ok((tensor(x, dx, (d.n, d.h, d.w, d.cin))?, tensor(x, dw, (9 * d.cin + 1, d.cout))?))
}
