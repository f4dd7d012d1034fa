//! 3×3 convolutions (stride 1, zero padding 1) as one fused candle op over im2col + GEMM, channels-last.
//! In f32 on AVX-512 or AVX2 CPUs the op runs the direct kernels of [`super::conv_direct`] instead
//! (no im2col); the ResNet conditioners of the flows go further and run whole as one op
//! ([`super::net::resnet`]), so this op serves f64 (the gradient checks), CPUs without AVX2, and
//! CUDA devices.
//!
//! candle's CPU `conv2d` backward runs `conv_transpose2d`, a direct loop far slower than a GEMM, and
//! an im2col built from candle ops leaves `[N·H·W, 9C]` tensors in the autograd graph, each of whose
//! gradients candle allocates and adds to zeros. Here the op's inputs are x and the weight matrix and
//! its backward is GEMMs too. The im2col columns never exist whole: each task gathers the rows of one
//! block of [`ROW_BLOCK`] pixels into a buffer that stays in cache and multiplies it at once.
//! dL/dx is the same convolution of dL/dy with the kernel turned 180° and its channels swapped, so it
//! needs no scatter of column gradients back onto pixels.

use super::conv_direct::{self, Weights};
use crate::gemm::{matmul_serial, View};
use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

/// The 3×3 windows of a channels-last `[N, H, W, C]` stack, as im2col rows: row r (pixel r of the
/// stack, image-major) holds at column `(kh·3 + kw)·C + c` the value `x[h + kh − 1, w + kw − 1, c]`
/// of its image, zero outside it, then a 1 when `ones` (the column the bias row of the weight meets,
/// so the bias rides in the GEMM); with `relu`, of `max(x, 0)`.
#[derive(Clone, Copy)]
struct Taps {
    h: usize,
    w: usize,
    c: usize,
    ones: bool,
    relu: bool,
}

impl Taps {
    fn width(&self) -> usize {
        9 * self.c + usize::from(self.ones)
    }

    /// Writes the rows of pixels `r0 .. r0 + m` into `out`, resized to fit: every entry is written,
    /// so `out` can be a reused buffer, never re-zeroed.
    fn gather<T: Real>(&self, x: &[T], r0: usize, m: usize, out: &mut Vec<T>) {
        let Taps { h, w, c, ones, relu } = *self;
        let (hw, row) = (h * w, self.width());
        // A copy, or max(·, 0) on the way (a select the compiler vectorises, no branch per value).
        let put = |dst: &mut [T], src: &[T]| {
            if relu {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = if s > T::zero() { s } else { T::zero() };
                }
            } else {
                dst.copy_from_slice(src);
            }
        };
        out.resize(m * row, T::zero());
        for (j, o) in out.chunks_exact_mut(row).enumerate() {
            let (img, pix) = ((r0 + j) / hw, (r0 + j) % hw);
            let (y, xx) = (pix / w, pix % w);
            let x = &x[img * hw * c..(img + 1) * hw * c];
            // Each kernel row's three taps are three neighbouring pixels, 3C contiguous values, when
            // the window lies inside the image across; only the border columns go tap by tap.
            let inside = xx >= 1 && xx + 1 < w;
            for (kh, dst) in o[..9 * c].chunks_exact_mut(3 * c.max(1)).enumerate() {
                let Some(sy) = (y + kh).checked_sub(1).filter(|&sy| sy < h) else {
                    dst.fill(T::zero());
                    continue;
                };
                if inside {
                    put(dst, &x[(sy * w + xx - 1) * c..(sy * w + xx + 2) * c]);
                    continue;
                }
                for (kw, dst) in dst.chunks_exact_mut(c.max(1)).enumerate() {
                    match (xx + kw).checked_sub(1).filter(|&sx| sx < w) {
                        Some(sx) => put(dst, &x[(sy * w + sx) * c..(sy * w + sx + 1) * c]),
                        None => dst.fill(T::zero()),
                    }
                }
            }
            if ones {
                o[9 * c] = T::one();
            }
        }
    }
}

fn slice<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("conv3x3: {what} must be contiguous"),
    }
}

thread_local! {
    /// The im2col block buffers of the last task on this thread, by element type and use, kept for the
    /// next: a fresh buffer per call was zero-filled (`resize`) before every entry was overwritten
    /// anyway, ~7% of a Glow training step in `memset` (perf, Fashion-MNIST, batch 64).
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

/// Pixels per task: its im2col rows (at most 192 × (9·Cin + 1) values) stay in the core's cache
/// between the gather and the product.
const ROW_BLOCK: usize = 192;

/// Pixels per partial sum of the weight gradient: the partials are added in order, so dW does not
/// depend on how rayon schedules the tasks.
const DW_ROWS: usize = 16 * ROW_BLOCK;

/// `x [N, H, W, Cin]`, `wmat [9·Cin + 1, Cout]` (the weight in im2col's row order, then the bias) ↦
/// `[N, H, W, Cout]`; with `relu_in`, the convolution of `max(x, 0)`.
struct Conv3x3 {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    relu_in: bool,
}

impl Conv3x3 {
    fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    /// The windows of the input (`ones`: with the bias column; it is the input the ReLU applies to).
    fn taps(&self, c: usize, ones: bool) -> Taps {
        Taps { h: self.h, w: self.w, c, ones, relu: ones && self.relu_in }
    }

    fn forward<T: Real>(&self, x: &[T], wmat: &[T]) -> Vec<T> {
        let (k, co) = (9 * self.cin + 1, self.cout);
        let taps = self.taps(self.cin, true);
        let mut out = vec![T::zero(); self.rows() * co];
        // The weight is packed once for the packed-panel microkernels (AVX-512 8×32 / AVX2 6×16):
        // a conv's output width is a panel or two, so every row block streams its im2col rows once.
        let packed = T::pack(k, co, wmat, co, 1);
        out.par_chunks_mut(ROW_BLOCK * co).enumerate().for_each(|(b, c)| {
            let m = c.len() / co;
            with_scratch(0, |cols: &mut Vec<T>| {
                taps.gather(x, b * ROW_BLOCK, m, cols);
                T::packed_matmul(&packed, m, cols, k, c, co, false);
            });
        });
        out
    }

    /// [`Self::forward`] in f32: the direct kernels of [`conv_direct`] where the CPU has AVX-512 or AVX2
    /// (no im2col), else im2col + GEMM.
    fn forward_f32(&self, x: &[f32], wmat: &[f32]) -> Vec<f32> {
        if !conv_direct::available() {
            return self.forward(x, wmat);
        }
        let Conv3x3 { n, h, w, cin, cout, relu_in } = *self;
        let wts = Weights::new(&wmat[..9 * cin * cout], Some(&wmat[9 * cin * cout..]), cin, cout);
        with_scratch(3, |xp: &mut Vec<f32>| {
            conv_direct::pad(x, [n, h, w, cin], relu_in, xp);
            let len = self.rows() * cout;
            // Not zero-filled first: the kernel writes every entry.
            let mut out = Vec::with_capacity(len);
            conv_direct::forward(xp, [n, h, w], &wts, &mut out.spare_capacity_mut()[..len]);
            // SAFETY: `forward` initialised all `len` entries.
            unsafe { out.set_len(len) };
            out
        })
    }

    /// [`Self::backward`] in f32, by the direct kernels where the CPU has AVX-512 or AVX2: dL/dx is the
    /// convolution of the padded dL/dy by the turned kernel, dW a product over the padded input.
    fn backward_f32(&self, x: &[f32], wmat: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>) {
        if !conv_direct::available() {
            return self.backward(x, wmat, g);
        }
        let Conv3x3 { n, h, w, cin, cout, relu_in } = *self;
        let turned = Weights::turned(&wmat[..9 * cin * cout], cin, cout);
        let mut dx = with_scratch(4, |gp: &mut Vec<f32>| {
            conv_direct::pad(g, [n, h, w, cout], false, gp);
            let len = self.rows() * cin;
            let mut dx = Vec::with_capacity(len);
            conv_direct::forward(gp, [n, h, w], &turned, &mut dx.spare_capacity_mut()[..len]);
            // SAFETY: `forward` initialised all `len` entries.
            unsafe { dx.set_len(len) };
            dx
        });
        if relu_in {
            // Through max(x, 0): candle's ReLU passes the gradient where x ≥ 0 (selects, no branch).
            dx.par_chunks_mut(ROW_BLOCK * cin).zip(x.par_chunks(ROW_BLOCK * cin)).for_each(|(dx, x)| {
                for (d, &x) in dx.iter_mut().zip(x) {
                    *d = if x < 0.0 { 0.0 } else { *d };
                }
            });
        }
        let (mut dw, db) = with_scratch(3, |xp: &mut Vec<f32>| {
            conv_direct::pad(x, [n, h, w, cin], relu_in, xp);
            conv_direct::weight_grad(xp, g, [n, h, w, cin, cout])
        });
        dw.extend_from_slice(&db);
        (dx, dw)
    }

    /// `(dx, dwmat)` from the output gradient `g [N·H·W, Cout]`.
    fn backward<T: Real>(&self, x: &[T], wmat: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
        let (cin, co, rows) = (self.cin, self.cout, self.rows());
        let k = 9 * cin + 1;
        // dx[q, i] = Σ_tap Σ_o g[q − off(tap), o] · W[tap, i, o], and −off(tap) = off(8 − tap): the
        // im2col of g times Wᵀ turned, `[9·Cout, Cin]` with row (tap·Cout + o) = W[8 − tap, ·, o].
        let mut wt = vec![T::zero(); 9 * co * cin];
        for tap in 0..9 {
            for o in 0..co {
                for i in 0..cin {
                    wt[(tap * co + o) * cin + i] = wmat[((8 - tap) * cin + i) * co + o];
                }
            }
        }
        let packed_t = T::pack(9 * co, cin, &wt, cin, 1);
        let g_taps = self.taps(co, false);
        let mut dx = vec![T::zero(); rows * cin];
        // One pass over parts of DW_ROWS pixels, block by block: the im2col rows of g give dx (times Wᵀ
        // turned) and dW too, with a = x (or max(x, 0)): dW[tap, i, o] = Σ_q a[q, i] · g[q − off(tap), o]
        // = (aᵀ · gcols)[i, (8 − tap)·Cout + o], so x is never gathered again. Per part [Cin, 9·Cout]
        // and the bias's Σ g, added in order below (dW does not depend on rayon's scheduling).
        let parts: Vec<(Vec<T>, Vec<T>)> = dx
            .par_chunks_mut(DW_ROWS * cin)
            .enumerate()
            .map(|(p, dx_p)| {
                let (mut dwt, mut db) = (vec![T::zero(); cin * 9 * co], vec![T::zero(); co]);
                with_scratch(1, |gcols: &mut Vec<T>| {
                    with_scratch(2, |relu_x: &mut Vec<T>| {
                        for (bi, d) in dx_p.chunks_mut(ROW_BLOCK * cin).enumerate() {
                            let (r0, m) = (p * DW_ROWS + bi * ROW_BLOCK, d.len() / cin);
                            g_taps.gather(g, r0, m, gcols);
                            T::packed_matmul(&packed_t, m, gcols, 9 * co, d, cin, false);
                            let xb = &x[r0 * cin..(r0 + m) * cin];
                            let a: &[T] = if self.relu_in {
                                // Through max(x, 0): candle's ReLU passes the gradient where x ≥ 0 (selects,
                                // no branch per value).
                                for (d, &x) in d.iter_mut().zip(xb) {
                                    *d = if x < T::zero() { T::zero() } else { *d };
                                }
                                relu_x.clear();
                                relu_x.extend(xb.iter().map(|&x| if x > T::zero() { x } else { T::zero() }));
                                relu_x
                            } else {
                                xb
                            };
                            let (at, gc) = (View::transposed(a, cin), View::rows(&gcols[..], 9 * co));
                            matmul_serial(cin, 9 * co, m, &mut dwt, 9 * co, true, at, gc);
                            for row in g[r0 * co..(r0 + m) * co].chunks_exact(co) {
                                for (d, &v) in db.iter_mut().zip(row) {
                                    *d = *d + v;
                                }
                            }
                        }
                    })
                });
                (dwt, db)
            })
            .collect();
        let (mut dwt, mut db) = (vec![T::zero(); cin * 9 * co], vec![T::zero(); co]);
        for (pw, pb) in parts {
            for (d, v) in dwt.iter_mut().zip(pw) {
                *d = *d + v;
            }
            for (d, v) in db.iter_mut().zip(pb) {
                *d = *d + v;
            }
        }
        // Into the weight matrix's layout: row (tap·Cin + i) holds dW[tap, i, ·], then the bias row.
        let mut dw = vec![T::zero(); k * co];
        for tap in 0..9 {
            for i in 0..cin {
                let src = &dwt[i * 9 * co + (8 - tap) * co..][..co];
                dw[(tap * cin + i) * co..(tap * cin + i + 1) * co].copy_from_slice(src);
            }
        }
        dw[9 * cin * co..].copy_from_slice(&db);
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
                CpuStorage::F32(self.forward_f32(slice(x, l1, "x")?, slice(w, l2, "w")?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(self.forward(slice(x, l1, "x")?, slice(w, l2, "w")?))
            }
            _ => bail!("conv3x3: x and the weight must both be f32 or both f64"),
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
        let Conv3x3 { n, h, w, cin, cout, relu_in } = *self;
        let dims = crate::cuda::conv::Dims { n, h, w, cin, cout, relu_in };
        Ok((crate::cuda::conv::forward(&dims, (s1, l1), (s2, l2))?, Shape::from((n, h, w, cout))))
    }

    fn bwd(&self, x: &Tensor, wmat: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let Conv3x3 { n, h, w, cin, cout, relu_in } = *self;
            let dims = crate::cuda::conv::Dims { n, h, w, cin, cout, relu_in };
            let (dx, dw) = crate::cuda::conv::backward(&dims, x, wmat, grad)?;
            return Ok((Some(dx), Some(dw)));
        }
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sw, lw) = wmat.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let dev = x.device();
        let k = 9 * self.cin + 1;
        macro_rules! run {
            ($f:ident, $x:expr, $w:expr, $g:expr) => {{
                let (dx, dw) = self.$f(slice($x, lx, "x")?, slice($w, lw, "w")?, slice($g, lg, "grad")?);
                (Tensor::from_vec(dx, x.shape(), dev)?, Tensor::from_vec(dw, (k, self.cout), dev)?)
            }};
        }
        let (dx, dw) = match (&*sx, &*sw, &*sg) {
            (Storage::Cpu(CpuStorage::F32(x)), Storage::Cpu(CpuStorage::F32(w)), Storage::Cpu(CpuStorage::F32(g))) => {
                run!(backward_f32, x, w, g)
            }
            (Storage::Cpu(CpuStorage::F64(x)), Storage::Cpu(CpuStorage::F64(w)), Storage::Cpu(CpuStorage::F64(g))) => {
                run!(backward, x, w, g)
            }
            _ => bail!("conv3x3: backward runs on the CPU, with x, weight and gradient all f32 or all f64"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// A 3×3 convolution, stride 1, zero padding 1, on channels-last `x [N, H, W, Cin]` with a PyTorch
/// weight `[Cout, Cin, 3, 3]` and bias `[Cout]`; returns `[N, H, W, Cout]`. Differentiable in all three.
pub fn conv3x3_nhwc(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv3x3(x, weight, bias, false)
}

/// [`conv3x3_nhwc`] of `relu(x)`, the ReLU fused into the convolution's gather (and its gradient
/// into the convolution's backward): no ReLU tensor, no separate passes.
pub fn conv3x3_nhwc_relu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv3x3(x, weight, bias, true)
}

fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor, relu_in: bool) -> Result<Tensor> {
    let (n, h, w, cin) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if (wcin, kh, kw) != (cin, 3, 3) {
        bail!("conv3x3: weight {:?} does not fit input channels {cin}", weight.dims());
    }
    // [Cout, Cin, 3, 3] → [3, 3, Cin, Cout] → [9·Cin, Cout], rows in im2col's column order, then the
    // bias as the row that meets im2col's column of ones.
    let wmat = weight.permute((2, 3, 1, 0))?.reshape((9 * cin, cout))?;
    let wmat = Tensor::cat(&[&wmat, &bias.reshape((1, cout))?], 0)?;
    x.contiguous()?.apply_op2(&wmat.contiguous()?, Conv3x3 { n, h, w, cin, cout, relu_in })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3 convolution (zero padding 1) of channels-last `x`, with `wmat` in im2col's row
    /// order plus the bias row, and its adjoints: the definition the im2col + GEMM op must meet.
    fn direct(c: &Conv3x3, x: &[f64], wmat: &[f64], g: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let Conv3x3 { n, h, w, cin, cout, relu_in } = *c;
        let act = |v: f64| if relu_in { v.max(0.0) } else { v };
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
                                y[o + co] += act(x[src + ci]) * wmat[wi];
                                if !relu_in || x[src + ci] >= 0.0 {
                                    dx[src + ci] += g[o + co] * wmat[wi];
                                }
                                dw[wi] += g[o + co] * act(x[src + ci]);
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    /// Enough pixels for three weight-gradient partials, the last one short, over row blocks that
    /// straddle images: every block gathers its own rows, and the partial sums add up.
    #[test]
    fn conv_matches_direct_convolution_across_blocks() {
        for relu_in in [false, true] {
            matches_direct(relu_in);
        }
    }

    /// The f32 path (the direct kernels, each this CPU runs: AVX-512 and AVX2; im2col + GEMM without
    /// either) against the f64 definition: widths that split into uneven row blocks; output channels
    /// of every narrow width (1 ..= 8, whose dL/dx is narrow too), between one and two vectors and past
    /// two (a second column pass); 3·Cin inputs per kernel row below a vector and past several; more
    /// images than one weight-gradient group; 5 to 8 outputs over a row longer than 12 pixels (AVX2's
    /// one-vector tiles).
    #[test]
    fn f32_conv_matches_direct_convolution() {
        let kernels: Vec<Option<conv_direct::ConvKernel>> = match conv_direct::ConvKernel::all_available() {
            k if k.is_empty() => vec![None],
            k => k.into_iter().map(Some).collect(),
        };
        for kernel in kernels {
            f32_conv_matches_direct_convolution_on(kernel);
        }
    }

    fn f32_conv_matches_direct_convolution_on(kernel: Option<conv_direct::ConvKernel>) {
        for &(n, h, w, cin, cout) in &[
            (5, 5, 7, 3, 4),
            (2, 4, 13, 1, 32),
            (9, 3, 3, 32, 2),
            (3, 6, 9, 17, 40),
            (1, 1, 1, 2, 3),
            (2, 5, 6, 32, 8),
            (2, 3, 5, 5, 1),
            (2, 4, 4, 6, 7),
            (2, 3, 23, 5, 6),
        ] {
            for relu_in in [false, true] {
                let conv = Conv3x3 { n, h, w, cin, cout, relu_in };
                let val = |i: usize, k: usize| ((i * k) % 23) as f64 / 11.0 - 1.0;
                let x: Vec<f64> = (0..n * h * w * cin).map(|i| val(i, 7)).collect();
                let wmat: Vec<f64> = (0..(9 * cin + 1) * cout).map(|i| val(i, 5)).collect();
                let g: Vec<f64> = (0..n * h * w * cout).map(|i| val(i, 3)).collect();
                let (y_ref, dx_ref, dw_ref) = direct(&conv, &x, &wmat, &g);
                let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                let run = || (conv.forward_f32(&f(&x), &f(&wmat)), conv.backward_f32(&f(&x), &f(&wmat), &f(&g)));
                let (y, (dx, dw)) = match kernel {
                    Some(k) => {
                        let (out, calls) = conv_direct::with_kernel(k, run);
                        // forward; dL/dx and dW.
                        assert_eq!(calls, 3, "{k:?}: direct kernel calls");
                        out
                    }
                    None => run(),
                };
                let terms = [9 * cin + 1, 9 * cout, n * h * w];
                for ((what, got, want), t) in
                    [("y", &y, &y_ref), ("dx", &dx, &dx_ref), ("dw", &dw, &dw_ref)].into_iter().zip(terms)
                {
                    assert_eq!(got.len(), want.len(), "{what}: size");
                    let tol = 4.0 * t as f64 * f32::EPSILON as f64;
                    let worst = got
                        .iter()
                        .zip(want.iter())
                        .map(|(&a, b)| (a as f64 - b).abs() / b.abs().max(1.0))
                        .fold(0.0, f64::max);
                    assert!(
                        worst < tol,
                        "{what} at {n}×{h}×{w}×{cin}→{cout}, relu {relu_in}, {kernel:?}: worst {worst} (bound {tol})"
                    );
                }
            }
        }
    }

    fn matches_direct(relu_in: bool) {
        let (h, w, cin, cout) = (5, 7, 3, 4);
        let conv = Conv3x3 { n: (2 * DW_ROWS + 3 * ROW_BLOCK + 11) / (h * w) + 1, h, w, cin, cout, relu_in };
        assert!(conv.rows() > 2 * DW_ROWS + 3 * ROW_BLOCK && !conv.rows().is_multiple_of(ROW_BLOCK));
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
