//! The first layer: a 7×7 convolution of the image with mask A, `y_0 = b0 + (W0 ⊙ M_A) ⊛ x`, as one
//! candle op. Only the 24 taps mask A keeps are gathered (im2col rows of 24 values and a 1 for the
//! bias), so a masked tap never takes part in the arithmetic and its gradient is exactly 0; the
//! convolution is then one GEMM `[B·R·C, 25] · [25, H]`, and its weight gradient one GEMM back.
//! Parameters: `input_conv.weight [H, 1, 7, 7]` then `input_conv.bias [H]`, packed in one vector.

use super::{contiguous, host, mask_a_taps, INPUT_KERNEL, INPUT_PAD};
use crate::gemm::{matmul, View};
use crate::real::Real;
use crate::rnn::common::par_packed_matmul;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Taps of the 7×7 kernel that mask A keeps.
pub const TAPS: usize = 24;
/// Columns of one im2col row: the kept taps, then a 1 that carries the bias.
pub const COLS: usize = TAPS + 1;

/// Image sizes of the convolution: `images` of `rows × cols` pixels into `hidden` channels.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub images: usize,
    pub rows: usize,
    pub cols: usize,
    pub hidden: usize,
}

impl ConvDims {
    /// Values of the packed parameters: weight `[H, 49]` then bias `[H]`.
    pub fn param_len(&self) -> usize {
        self.hidden * (INPUT_KERNEL * INPUT_KERNEL + 1)
    }
}

/// The im2col row of pixel (i, j) of one image `x [rows, cols]` into `out [COLS]`: the kept taps in
/// [`mask_a_taps`] order (0 where they fall outside the image), then 1. Reads only pixels before
/// (i, j) in raster order.
#[inline]
pub fn gather<T: Real>(x: &[T], rows: usize, cols: usize, i: usize, j: usize, out: &mut [T]) {
    for ((ky, kx), o) in mask_a_taps().zip(out.iter_mut()) {
        let r = (i + ky).checked_sub(INPUT_PAD).filter(|&r| r < rows);
        let c = (j + kx).checked_sub(INPUT_PAD).filter(|&c| c < cols);
        *o = match r.zip(c) {
            Some((r, c)) => x[r * cols + c],
            None => T::zero(),
        };
    }
    out[TAPS] = T::one();
}

/// The im2col matrix `[B·R·C, COLS]` of every pixel.
fn im2col<T: Real>(d: &ConvDims, x: &[T]) -> Vec<T> {
    let (r, c) = (d.rows, d.cols);
    let mut cols = vec![T::zero(); d.images * r * c * COLS];
    cols.par_chunks_mut(r * c * COLS).zip(x.par_chunks(r * c)).for_each(|(out, img)| {
        for (p, row) in out.chunks_exact_mut(COLS).enumerate() {
            gather(img, r, c, p / c, p % c, row);
        }
    });
    cols
}

/// The GEMM weight `[COLS, H]`: row t holds kept tap t of every output channel, the last row the bias.
pub fn weight_matrix<T: Real>(p: &[T], hidden: usize) -> Vec<T> {
    let k2 = INPUT_KERNEL * INPUT_KERNEL;
    let mut w = Vec::with_capacity(COLS * hidden);
    for (ky, kx) in mask_a_taps() {
        w.extend((0..hidden).map(|h| p[h * k2 + ky * INPUT_KERNEL + kx]));
    }
    w.extend_from_slice(&p[hidden * k2..hidden * (k2 + 1)]);
    w
}

/// `y_0 [B·R·C, H]` of `x [B, R, C]`.
pub fn conv_forward<T: Real>(d: &ConvDims, x: &[T], p: &[T]) -> Vec<T> {
    let n = d.images * d.rows * d.cols;
    let mut y = vec![T::zero(); n * d.hidden];
    let w = T::pack(COLS, d.hidden, &weight_matrix(p, d.hidden), d.hidden, 1);
    par_packed_matmul(&w, n, &im2col(d, x), COLS, &mut y, d.hidden, false);
    y
}

/// dL/d(params) from dL/dy_0 `[B·R·C, H]`: `dW = colsᵀ · dy`, scattered back to the 7×7 layout (masked
/// taps 0), and the bias gradient from the ones column.
pub fn conv_backward<T: Real>(d: &ConvDims, x: &[T], dy: &[T]) -> Vec<T> {
    let (n, h) = (d.images * d.rows * d.cols, d.hidden);
    let mut dw = vec![T::zero(); COLS * h];
    matmul(COLS, h, n, &mut dw, h, false, View::transposed(&im2col(d, x), COLS), View::rows(dy, h));
    let k2 = INPUT_KERNEL * INPUT_KERNEL;
    let mut dp = vec![T::zero(); d.param_len()];
    for (t, (ky, kx)) in mask_a_taps().enumerate() {
        for u in 0..h {
            dp[u * k2 + ky * INPUT_KERNEL + kx] = dw[t * h + u];
        }
    }
    dp[h * k2..].copy_from_slice(&dw[TAPS * h..]);
    dp
}

struct InputConvOp {
    dims: ConvDims,
}

impl InputConvOp {
    fn backward<T: Real + WithDType>(&self, x: &Tensor, p: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dp = conv_backward(&self.dims, &host::<T>(x)?, &host::<T>(grad)?);
        Ok(Some(Tensor::from_vec(dp, p.shape(), p.device())?))
    }
}

impl CustomOp2 for InputConvOp {
    fn name(&self) -> &'static str {
        "arflow-pixel-input-conv"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let shape = Shape::from((d.images, d.rows, d.cols, d.hidden));
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(p)) => {
                CpuStorage::F32(conv_forward(&d, contiguous(x, l1, "x")?, contiguous(p, l2, "params")?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(p)) => {
                CpuStorage::F64(conv_forward(&d, contiguous(x, l1, "x")?, contiguous(p, l2, "params")?))
            }
            _ => bail!("pixel input conv: x and params must both be f32 or both f64"),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let d = self.dims;
        let y = crate::cuda::pixel::input_conv_forward(&d, (s1, l1), (s2, l2))?;
        Ok((y, Shape::from((d.images, d.rows, d.cols, d.hidden))))
    }

    fn bwd(&self, x: &Tensor, p: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The image is data: no gradient flows to it.
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return Ok((None, Some(crate::cuda::pixel::input_conv_backward(&self.dims, x, p, grad)?)));
        }
        let dp = match x.dtype() {
            candle_core::DType::F32 => self.backward::<f32>(x, p, grad)?,
            _ => self.backward::<f64>(x, p, grad)?,
        };
        Ok((None, dp))
    }
}

/// `y_0 [B, R, C, H]` of the images `x [B, R, C]` under the packed `params` (weight, bias).
pub fn input_conv(x: &Tensor, params: &Tensor, hidden: usize) -> Result<Tensor> {
    let (images, rows, cols) = x.dims3()?;
    let dims = ConvDims { images, rows, cols, hidden };
    if params.elem_count() != dims.param_len() {
        bail!(
            "pixel input conv: params hold {} values, hidden {hidden} needs {}",
            params.elem_count(),
            dims.param_len()
        );
    }
    let op = InputConvOp { dims };
    let (x, params) = (x.contiguous()?, params.contiguous()?);
    if params.track_op() {
        x.apply_op2(&params, op)
    } else {
        x.apply_op2_no_bwd(&params, &op)
    }
}
