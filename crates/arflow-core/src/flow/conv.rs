//! 3×3 convolutions (stride 1, zero padding 1) as im2col + one GEMM, channels-last.
//!
//! candle's CPU `conv2d` backward runs `conv_transpose2d`, a direct loop far slower than a GEMM; here
//! both passes are GEMMs and the only non-GEMM work is the [`Im2col3x3`] op (a gather) and its backward
//! (the matching scatter-add), each one pass over `[N, H, W, 9C]`.

use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `[N, H, W, C]` ↦ `[N, H, W, 9C]`: column `(kh·3 + kw)·C + c` of pixel (h, w) holds
/// `x[h + kh − 1, w + kw − 1, c]`, zero outside the image.
#[derive(Clone, Copy)]
struct Im2col3x3 {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

/// Calls `f(pixel, column, source)` for every in-image tap of a 3×3 window over an `h × w` image:
/// the tap at `column` (in units of C) of output `pixel` reads input pixel `source`.
fn for_each_tap(h: usize, w: usize, mut f: impl FnMut(usize, usize, usize)) {
    for y in 0..h {
        for x in 0..w {
            for kh in 0..3 {
                let Some(sy) = (y + kh).checked_sub(1).filter(|&sy| sy < h) else { continue };
                for kw in 0..3 {
                    let Some(sx) = (x + kw).checked_sub(1).filter(|&sx| sx < w) else { continue };
                    f(y * w + x, kh * 3 + kw, sy * w + sx);
                }
            }
        }
    }
}

impl Im2col3x3 {
    fn gather<T: Real>(&self, x: &[T]) -> Vec<T> {
        let Im2col3x3 { n, h, w, c } = *self;
        let img = h * w * c;
        let mut out = vec![T::zero(); n * h * w * 9 * c];
        out.par_chunks_mut(h * w * 9 * c).enumerate().for_each(|(i, o)| {
            let x = &x[i * img..(i + 1) * img];
            for_each_tap(h, w, |pix, col, src| {
                let dst = (pix * 9 + col) * c;
                o[dst..dst + c].copy_from_slice(&x[src * c..(src + 1) * c]);
            });
        });
        out
    }

    /// The adjoint of [`Self::gather`]: every column entry is added back to the pixel it came from.
    fn scatter<T: Real>(&self, g: &[T]) -> Vec<T> {
        let Im2col3x3 { n, h, w, c } = *self;
        let img = h * w * c;
        let mut dx = vec![T::zero(); n * img];
        dx.par_chunks_mut(img).enumerate().for_each(|(i, dx)| {
            let g = &g[i * h * w * 9 * c..(i + 1) * h * w * 9 * c];
            for_each_tap(h, w, |pix, col, src| {
                let from = (pix * 9 + col) * c;
                for (d, s) in dx[src * c..(src + 1) * c].iter_mut().zip(&g[from..from + c]) {
                    *d = *d + *s;
                }
            });
        });
        dx
    }
}

fn slice<'a, T>(s: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("im2col: input must be contiguous"),
    }
}

impl CustomOp1 for Im2col3x3 {
    fn name(&self) -> &'static str {
        "arflow-im2col3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((self.n, self.h, self.w, 9 * self.c));
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(self.gather(slice(x, l)?)),
            CpuStorage::F64(x) => CpuStorage::F64(self.gather(slice(x, l)?)),
            _ => bail!("im2col: only f32 and f64"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let back = Col2im3x3 { inner: *self };
        Ok(Some(grad.apply_op1_no_bwd(&back)?))
    }
}

/// The backward of [`Im2col3x3`] as an op of its own (its own backward is never needed).
struct Col2im3x3 {
    inner: Im2col3x3,
}

impl CustomOp1 for Col2im3x3 {
    fn name(&self) -> &'static str {
        "arflow-col2im3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Im2col3x3 { n, h, w, c } = self.inner;
        let out = match s {
            CpuStorage::F32(g) => CpuStorage::F32(self.inner.scatter(slice(g, l)?)),
            CpuStorage::F64(g) => CpuStorage::F64(self.inner.scatter(slice(g, l)?)),
            _ => bail!("col2im: only f32 and f64"),
        };
        Ok((out, Shape::from((n, h, w, c))))
    }
}

/// `x [N, H, W, C]` ↦ `[N, H, W, 9C]` (see [`Im2col3x3`]); differentiable.
pub fn im2col3x3(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.contiguous()?.apply_op1(Im2col3x3 { n, h, w, c })
}

/// A 3×3 convolution, stride 1, zero padding 1, on channels-last `x [N, H, W, Cin]` with a PyTorch
/// weight `[Cout, Cin, 3, 3]` and bias `[Cout]`; returns `[N, H, W, Cout]`.
pub fn conv3x3_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, h, w, cin) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if (wcin, kh, kw) != (cin, 3, 3) {
        bail!("conv3x3: weight {:?} does not fit input channels {cin}", weight.dims());
    }
    // [Cout, Cin, 3, 3] → [3, 3, Cin, Cout] → [9·Cin, Cout], rows in im2col's column order.
    let wmat = weight.permute((2, 3, 1, 0))?.reshape((9 * cin, cout))?;
    let cols = im2col3x3(x)?.reshape((n * h * w, 9 * cin))?;
    cols.matmul(&wmat)?.broadcast_add(bias)?.reshape((n, h, w, cout))
}
