//! 3×3 convolutions (stride 1, zero padding 1) as one fused candle op over im2col + GEMM, channels-last.
//!
//! candle's CPU `conv2d` backward runs `conv_transpose2d`, a direct loop far slower than a GEMM, and
//! an im2col built from candle ops leaves `[N·H·W, 9C]` tensors in the autograd graph, each of whose
//! gradients candle allocates and adds to zeros. Here the op's inputs are x and the weight matrix, its
//! backward is two GEMMs and a scatter-add, and the im2col columns live only inside the op, built a
//! few images at a time into buffers small enough for the allocator to recycle.

use crate::gemm::{matmul, View};
use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

/// `[N, H, W, C]` ↦ `[N, H, W, 9C + 1]`: column `(kh·3 + kw)·C + c` of pixel (h, w) holds
/// `x[h + kh − 1, w + kw − 1, c]`, zero outside the image; the last column is 1, so the bias rides in
/// the GEMM (no separate broadcast add, forward or backward).
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
    /// Writes the columns of `x` into `out`, resized to fit: every entry is written (taps outside the
    /// image as zeros), so `out` can be a buffer reused from the previous chunk, never re-zeroed.
    /// (Zero-filling a fresh buffer per chunk was ~5% of a Real NVP training step.)
    fn gather_into<T: Real>(&self, x: &[T], out: &mut Vec<T>) {
        let Im2col3x3 { n, h, w, c } = *self;
        let img = h * w * c;
        let row = 9 * c + 1;
        out.resize(n * h * w * row, T::zero());
        out.par_chunks_mut(h * w * row).enumerate().for_each(|(i, o)| {
            let x = &x[i * img..(i + 1) * img];
            for (pix, o) in o.chunks_exact_mut(row).enumerate() {
                let (y, xx) = (pix / w, pix % w);
                for (tap, dst) in o[..9 * c].chunks_exact_mut(c.max(1)).enumerate() {
                    let sy = (y + tap / 3).checked_sub(1).filter(|&sy| sy < h);
                    let sx = (xx + tap % 3).checked_sub(1).filter(|&sx| sx < w);
                    match sy.zip(sx) {
                        Some((sy, sx)) => dst.copy_from_slice(&x[(sy * w + sx) * c..(sy * w + sx + 1) * c]),
                        None => dst.fill(T::zero()),
                    }
                }
                o[9 * c] = T::one();
            }
        });
    }

    /// The adjoint of [`Self::gather_into`]: every column entry of `g` is added onto the pixel of
    /// `dx` it came from.
    fn scatter_add<T: Real>(&self, g: &[T], dx: &mut [T]) {
        let Im2col3x3 { h, w, c, .. } = *self;
        let img = h * w * c;
        dx.par_chunks_mut(img).enumerate().for_each(|(i, dx)| {
            let row = 9 * c + 1;
            let g = &g[i * h * w * row..(i + 1) * h * w * row];
            for_each_tap(h, w, |pix, col, src| {
                let from = pix * row + col * c;
                for (d, s) in dx[src * c..(src + 1) * c].iter_mut().zip(&g[from..from + c]) {
                    *d = *d + *s;
                }
            });
        });
    }
}

fn slice<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("conv3x3: {what} must be contiguous"),
    }
}

/// Values per im2col chunk: 2 Mi f32 = 8 MiB, well under glibc's mmap threshold.
const CHUNK_VALUES: usize = 1 << 21;

thread_local! {
    /// The im2col buffers of the last call on this thread, by element type and use, kept for the next:
    /// a fresh buffer per call was zero-filled (`resize`) before every entry was overwritten anyway,
    /// ~7% of a Glow training step in `memset` (perf, Fashion-MNIST, batch 64).
    static SCRATCH: RefCell<HashMap<(TypeId, u8), Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Runs `f` with this thread's scratch buffer `slot` for `T` (empty the first time), kept afterwards.
/// Its length on entry is whatever the last user left: callers `resize` it and overwrite every entry.
fn with_scratch<T: Real, R>(slot: u8, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    let key = (TypeId::of::<T>(), slot);
    let mut buf: Vec<T> = SCRATCH
        .with(|s| s.borrow_mut().remove(&key))
        .and_then(|b| b.downcast::<Vec<T>>().ok())
        .map_or_else(Vec::new, |b| *b);
    let out = f(&mut buf);
    SCRATCH.with(|s| s.borrow_mut().insert(key, Box::new(buf)));
    out
}

/// Rows per task of the packed products (each task runs one thread's microkernel loop).
const ROW_BLOCK: usize = 192;

/// `x [N, H, W, Cin]`, `wmat [9·Cin + 1, Cout]` (the weight in im2col's row order, then the bias) ↦
/// `[N, H, W, Cout]`.
struct Conv3x3 {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
}

impl Conv3x3 {
    fn geometry(&self, imgs: usize) -> Im2col3x3 {
        Im2col3x3 { n: imgs, h: self.h, w: self.w, c: self.cin }
    }

    /// Images per chunk.
    fn chunk(&self) -> usize {
        (CHUNK_VALUES / (self.h * self.w * (9 * self.cin + 1))).clamp(1, self.n.max(1))
    }

    fn forward<T: Real>(&self, x: &[T], wmat: &[T]) -> Vec<T> {
        let (hw, k, co) = (self.h * self.w, 9 * self.cin + 1, self.cout);
        let img = hw * self.cin;
        let mut out = vec![T::zero(); self.n * hw * co];
        // The weight is packed once for the packed-panel microkernels (AVX-512 8×32 / AVX2 6×16):
        // a conv's output width is a panel or two, so every row block streams its im2col rows once.
        let packed = T::pack(k, co, wmat, co, 1);
        let step = self.chunk();
        with_scratch(0, |cols: &mut Vec<T>| {
            for s in (0..self.n).step_by(step) {
                let e = (s + step).min(self.n);
                self.geometry(e - s).gather_into(&x[s * img..e * img], cols);
                let c = &mut out[s * hw * co..e * hw * co];
                c.par_chunks_mut(ROW_BLOCK * co).enumerate().for_each(|(b, c)| {
                    let a = &cols[b * ROW_BLOCK * k..];
                    T::packed_matmul(&packed, c.len() / co, a, k, c, co, false);
                });
            }
        });
        out
    }

    /// `(dx, dwmat)` from the output gradient `g [N·H·W, Cout]`.
    fn backward<T: Real>(&self, x: &[T], wmat: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
        let (hw, k, co) = (self.h * self.w, 9 * self.cin + 1, self.cout);
        let img = hw * self.cin;
        let mut dx = vec![T::zero(); self.n * img];
        let mut dw = vec![T::zero(); k * co];
        let step = self.chunk();
        // dcols = g · Wᵀ through the packed kernels too: Wᵀ [Cout × 9·Cin + 1] packed once.
        let packed_t = T::pack(co, k, wmat, 1, co);
        with_scratch(0, |cols: &mut Vec<T>| {
            with_scratch(1, |dcols: &mut Vec<T>| {
                for s in (0..self.n).step_by(step) {
                    let e = (s + step).min(self.n);
                    let rows = (e - s) * hw;
                    let geo = self.geometry(e - s);
                    geo.gather_into(&x[s * img..e * img], cols);
                    let gs = &g[s * hw * co..e * hw * co];
                    // dW += colsᵀ · g
                    matmul(k, co, rows, &mut dw, co, s > 0, View::transposed(cols, k), View::rows(gs, co));
                    // dcols = g · Wᵀ (every entry written), then scattered back onto the pixels.
                    dcols.resize(rows * k, T::zero());
                    dcols.par_chunks_mut(ROW_BLOCK * k).enumerate().for_each(|(b, d)| {
                        let a = &gs[b * ROW_BLOCK * co..];
                        T::packed_matmul(&packed_t, d.len() / k, a, co, d, k, false);
                    });
                    geo.scatter_add(dcols, &mut dx[s * img..e * img]);
                }
            })
        });
        (dx, dw)
    }
}

impl CustomOp2 for Conv3x3 {
    fn name(&self) -> &'static str {
        "arflow-conv3x3"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((self.n, self.h, self.w, self.cout));
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(self.forward(slice(x, l1, "x")?, slice(w, l2, "w")?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(self.forward(slice(x, l1, "x")?, slice(w, l2, "w")?))
            }
            _ => bail!("conv3x3: x and the weight must both be f32 or both f64"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, wmat: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sw, lw) = wmat.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let dev = x.device();
        let k = 9 * self.cin + 1;
        macro_rules! run {
            ($x:expr, $w:expr, $g:expr) => {{
                let (dx, dw) = self.backward(slice($x, lx, "x")?, slice($w, lw, "w")?, slice($g, lg, "grad")?);
                (Tensor::from_vec(dx, x.shape(), dev)?, Tensor::from_vec(dw, (k, self.cout), dev)?)
            }};
        }
        let (dx, dw) = match (&*sx, &*sw, &*sg) {
            (Storage::Cpu(CpuStorage::F32(x)), Storage::Cpu(CpuStorage::F32(w)), Storage::Cpu(CpuStorage::F32(g))) => {
                run!(x, w, g)
            }
            (Storage::Cpu(CpuStorage::F64(x)), Storage::Cpu(CpuStorage::F64(w)), Storage::Cpu(CpuStorage::F64(g))) => {
                run!(x, w, g)
            }
            _ => bail!("conv3x3: backward runs on the CPU, with x, weight and gradient all f32 or all f64"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// A 3×3 convolution, stride 1, zero padding 1, on channels-last `x [N, H, W, Cin]` with a PyTorch
/// weight `[Cout, Cin, 3, 3]` and bias `[Cout]`; returns `[N, H, W, Cout]`. Differentiable in all three.
pub fn conv3x3_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, h, w, cin) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if (wcin, kh, kw) != (cin, 3, 3) {
        bail!("conv3x3: weight {:?} does not fit input channels {cin}", weight.dims());
    }
    // [Cout, Cin, 3, 3] → [3, 3, Cin, Cout] → [9·Cin, Cout], rows in im2col's column order, then the
    // bias as the row that meets im2col's column of ones.
    let wmat = weight.permute((2, 3, 1, 0))?.reshape((9 * cin, cout))?;
    let wmat = Tensor::cat(&[&wmat, &bias.reshape((1, cout))?], 0)?;
    x.contiguous()?.apply_op2(&wmat.contiguous()?, Conv3x3 { n, h, w, cin, cout })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3 convolution (zero padding 1) of channels-last `x`, with `wmat` in im2col's row
    /// order plus the bias row, and its adjoints: the definition the im2col + GEMM op must meet.
    fn direct(c: &Conv3x3, x: &[f64], wmat: &[f64], g: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let Conv3x3 { n, h, w, cin, cout } = *c;
        let (mut y, mut dx, mut dw) = (vec![0.0; n * h * w * cout], vec![0.0; x.len()], vec![0.0; wmat.len()]);
        for i in 0..n {
            for py in 0..h {
                for px in 0..w {
                    let o = ((i * h + py) * w + px) * cout;
                    for co in 0..cout {
                        y[o + co] += wmat[9 * cin * cout + co];
                        dw[9 * cin * cout + co] += g[o + co];
                    }
                    for tap in 0..9 {
                        let (sy, sx) = (py as isize + (tap / 3) as isize - 1, px as isize + (tap % 3) as isize - 1);
                        if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                            continue;
                        }
                        let src = ((i * h + sy as usize) * w + sx as usize) * cin;
                        for ci in 0..cin {
                            for co in 0..cout {
                                let wi = (tap * cin + ci) * cout + co;
                                y[o + co] += x[src + ci] * wmat[wi];
                                dx[src + ci] += g[o + co] * wmat[wi];
                                dw[wi] += g[o + co] * x[src + ci];
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    /// Enough images for three im2col chunks, the last one short: the column buffer is reused across
    /// chunks and the gradient scattered into each chunk's slice of dx.
    #[test]
    fn conv_matches_direct_convolution_across_chunks() {
        let (h, w, cin, cout) = (5, 7, 3, 4);
        let per_chunk = CHUNK_VALUES / (h * w * (9 * cin + 1));
        let conv = Conv3x3 { n: 2 * per_chunk + 3, h, w, cin, cout };
        assert_eq!(conv.chunk(), per_chunk);
        let val = |i: usize, k: usize| ((i * k) % 23) as f64 / 11.0 - 1.0;
        let x: Vec<f64> = (0..conv.n * h * w * cin).map(|i| val(i, 7)).collect();
        let wmat: Vec<f64> = (0..(9 * cin + 1) * cout).map(|i| val(i, 5)).collect();
        let g: Vec<f64> = (0..conv.n * h * w * cout).map(|i| val(i, 3)).collect();
        let (y_ref, dx_ref, dw_ref) = direct(&conv, &x, &wmat, &g);
        let y = conv.forward(&x, &wmat);
        let (dx, dw) = conv.backward(&x, &wmat, &g);
        // Rounding grows with the terms summed into each value (terms of magnitude ≤ 1 here): 9·Cin + 1
        // for y, 9·Cout for dx, every pixel of every image for dw.
        let terms = [9 * cin + 1, 9 * cout, conv.n * h * w];
        for ((what, got, want), t) in
            [("y", &y, &y_ref), ("dx", &dx, &dx_ref), ("dw", &dw, &dw_ref)].into_iter().zip(terms)
        {
            let tol = 4.0 * t as f64 * f64::EPSILON;
            let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max);
            assert!(worst < tol, "{what}: worst relative error {worst} (bound {tol})");
        }
    }
}
