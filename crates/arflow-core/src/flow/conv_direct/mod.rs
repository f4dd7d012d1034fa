//! 3×3 convolutions (stride 1, zero padding 1) straight off a zero-padded channels-last input: the
//! f32 path of [`super::conv`] on AVX-512 and AVX2+FMA CPUs, with no im2col at all.
//!
//! With the input padded once to `[N, H + 2, W + 2, C]` (one copy, where im2col writes nine), the
//! window of output pixel (y, x) at tap (kh, kw) is padded pixel (y + kh, x + kw): a run of output
//! pixels along a row reads, for each tap, a run of padded pixels `C` floats apart, whatever the
//! border. So an `MR × L·NT` tile of the output (L lanes a vector) is the GEMM microkernel of
//! [`crate::packed`] whose k loop walks the nine taps, broadcasting its A values from nine offsets
//! of the padded input instead of from a gathered block. Per tap and channel: NT vector loads of the
//! weight row and MR broadcast FMAs per vector, as in the packed GEMM; the weight (`9·Cin × Cout`,
//! 36 KB at 32 → 32) stays in L1.
//!
//! - [`forward`]: `y = conv(x) + b`, one task per image. The backward's dL/dx is the same
//!   convolution of the padded dL/dy with the kernel turned 180° and its channels swapped
//!   ([`Weights::turned`]), so it is [`forward`] too.
//! - [`weight_grad`]: `dW[tap, i, o] = Σ_pixels xpad[pixel + tap, i] · g[pixel, o]`, tiles of MR input
//!   channels × L·NT output channels held in registers over a band of rows, accumulated into one
//!   partial per fixed group of images; the partials are added in order, so dW does not depend on
//!   how rayon schedules the groups.
//!
//! Every lane of every output is one FMA chain in a fixed order, so results do not depend on the
//! thread count either.
//!
//! Two instruction sets, picked at run time ([`ConvKernel::detect`], AVX-512 first; the crate is
//! built for baseline x86-64), with the same drivers and kinds of tile:
//! - AVX-512F (`avx512`, L = 16): forward tiles of up to 8 pixels × 32 channels, dW tiles of up to 12
//!   input channels × 32, narrow kernels (vectorised over the 3·Cin inputs of a kernel row) for up to
//!   8 outputs;
//! - AVX2+FMA (`avx2`, L = 8, 16 ymm registers where AVX-512 has 32 zmm): forward tiles of up to 6
//!   pixels × 16 channels, dW tiles of up to 6 input channels × 16, one-vector tiles of up to 12 rows
//!   for 5 to 8 outputs, narrow kernels for up to 4.
//!
//! The two round differently (the sums split differently); each is deterministic.

use crate::packed::row_blocks;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output pixels a weight-gradient band covers (about): its rows of padded x and of g stay in L1
/// while the nine taps and every channel tile sweep them.
const DW_BAND_PIXELS: usize = 128;
/// Images per weight-gradient partial: fixed, so the order of the sums is too.
const DW_GROUP: usize = 4;

/// Which instruction set the kernels run on. [`forward`], [`forward_add`] and [`weight_grad`] use
/// [`ConvKernel::detect`]'s; the `_with` forms let benchmarks and tests choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// AVX-512F: forward tiles of up to 8 pixels × 32 channels (16 zmm accumulators).
    Avx512,
    /// AVX2 + FMA: forward tiles of up to 6 pixels × 16 channels (12 ymm accumulators).
    Avx2,
}

impl ConvKernel {
    /// The best kernel this CPU runs (AVX-512 before AVX2), if any.
    pub fn detect() -> Option<ConvKernel> {
        [ConvKernel::Avx512, ConvKernel::Avx2].into_iter().find(|k| k.available())
    }

    /// Whether this CPU runs the kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                ConvKernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                ConvKernel::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// Every kernel this CPU runs, the preferred one first.
    pub fn all_available() -> Vec<ConvKernel> {
        [ConvKernel::Avx512, ConvKernel::Avx2].into_iter().filter(|k| k.available()).collect()
    }
}

/// Whether this CPU runs these kernels (AVX-512F, or AVX2 and FMA).
pub fn available() -> bool {
    ConvKernel::detect().is_some()
}

#[cfg(test)]
thread_local! {
    /// [`with_kernel`]'s choice on this thread, and how many kernel calls used it.
    static FORCED: std::cell::Cell<(Option<ConvKernel>, usize)> = const { std::cell::Cell::new((None, 0)) };
}

/// The kernel [`forward`], [`forward_add`] and [`weight_grad`] run: [`ConvKernel::detect`]'s (in tests,
/// [`with_kernel`]'s where set on this thread).
fn chosen() -> ConvKernel {
    #[cfg(test)]
    if let (Some(k), calls) = FORCED.get() {
        FORCED.set((Some(k), calls + 1));
        return k;
    }
    ConvKernel::detect().expect("conv_direct: this CPU has neither AVX-512F nor AVX2+FMA (see `available`)")
}

/// Runs `f` with [`forward`], [`forward_add`] and [`weight_grad`] called on this thread using `kernel`
/// (so tests can run the callers, conv ops and the fused ResNet conditioner, on every kernel this
/// CPU has); returns `f`'s result and how many of those calls it made.
#[cfg(test)]
pub(crate) fn with_kernel<R>(kernel: ConvKernel, f: impl FnOnce() -> R) -> (R, usize) {
    assert!(kernel.available(), "conv_direct: this CPU does not run the {kernel:?} kernels");
    /// Puts the previous choice back, on unwinding too.
    struct Restore(Option<ConvKernel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.set((self.0, 0));
        }
    }
    let restore = Restore(FORCED.replace((Some(kernel), 0)).0);
    let r = f();
    let calls = FORCED.get().1;
    drop(restore);
    (r, calls)
}

/// `[N, H, W, C]` ↦ `[N, H + 2, W + 2, C]` with a zero border (of `max(x, 0)` with `relu`), into `out`
/// (its old contents dropped; every entry written once, none zero-filled first, so a reused buffer
/// costs one pass).
pub fn pad(x: &[f32], [n, h, w, c]: [usize; 4], relu: bool, out: &mut Vec<f32>) {
    assert_eq!(x.len(), n * h * w * c, "conv pad: input size");
    let (pw, ph) = (w + 2, h + 2);
    let len = n * ph * pw * c;
    out.clear();
    out.reserve(len);
    let row = pw * c;
    if row > 0 {
        let zero = |d: &mut [MaybeUninit<f32>]| {
            for d in d {
                d.write(0.0);
            }
        };
        out.spare_capacity_mut()[..len].par_chunks_exact_mut(ph * row).enumerate().for_each(|(img, o)| {
            zero(&mut o[..row]);
            zero(&mut o[(ph - 1) * row..]);
            for y in 0..h {
                let dst = &mut o[(y + 1) * row..(y + 2) * row];
                zero(&mut dst[..c]);
                zero(&mut dst[(pw - 1) * c..]);
                let src = &x[(img * h + y) * w * c..][..w * c];
                let dst = &mut dst[c..(pw - 1) * c];
                if relu {
                    relu_into(dst, src);
                } else {
                    dst.write_copy_of_slice(src);
                }
            }
        });
    }
    // SAFETY: every entry of the first `len` was written above (borders, then each row's interior);
    // with no channels or no pixels `len` is 0.
    unsafe { out.set_len(len) };
}

/// `dst = max(src, 0)`: a select the compiler vectorises (no branch per value), compiled for AVX2 where
/// the CPU has it (the crate builds for SSE2).
fn relu_into(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    #[inline(always)]
    fn imp(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            d.write(if s > 0.0 { s } else { 0.0 });
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn fast(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
            imp(dst, src)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { fast(dst, src) };
        }
    }
    imp(dst, src)
}

/// A convolution weight `[9·Cin, Cout]` (row `tap·Cin + i` = W[tap, i, ·], tap = kh·3 + kw) with its
/// bias, the columns zero-padded to a multiple of 16 so every tile loads whole vectors.
pub struct Weights {
    cin: usize,
    cout: usize,
    /// Floats per row (Cout rounded up to 16).
    ld: usize,
    rows: Vec<f32>,
    /// `[ld]`, zero past Cout; all zeros without a bias.
    bias: Vec<f32>,
    /// For outputs narrower than [`NARROW`]: the weight transposed, `[CO][3][lp]` with CO = Cout rounded
    /// up to 1, 2, 4 or 8 and `lp` = 3·Cin rounded up to 16 (kernel row kh of output o holds
    /// W[kh·3 + kw, i, o] at kw·Cin + i, zeros elsewhere); empty otherwise.
    cols: Vec<f32>,
}

/// Outputs up to this many channels run the narrow kernels, which vectorise over the 3·Cin inputs of a
/// kernel row instead of over the outputs (a vector of 16 outputs would be mostly idle lanes).
const NARROW: usize = 8;

/// `cout` rounded up to the narrow kernels' output counts (1, 2, 4, 8).
fn narrow_width(cout: usize) -> usize {
    cout.next_power_of_two()
}

impl Weights {
    /// From `w [9·Cin, Cout]` in that row order and an optional bias `[Cout]`.
    pub fn new(w: &[f32], bias: Option<&[f32]>, cin: usize, cout: usize) -> Self {
        assert_eq!(w.len(), 9 * cin * cout, "conv weights: size");
        let ld = cout.div_ceil(16) * 16;
        let mut rows = vec![0.0; 9 * cin * ld];
        for (dst, src) in rows.chunks_exact_mut(ld).zip(w.chunks_exact(cout.max(1))) {
            dst[..cout].copy_from_slice(src);
        }
        let mut b = vec![0.0; ld];
        if let Some(bias) = bias {
            b[..cout].copy_from_slice(bias);
        }
        let mut cols = Vec::new();
        if cout <= NARROW {
            let lp = (3 * cin).div_ceil(16) * 16;
            cols = vec![0.0; narrow_width(cout) * 3 * lp];
            for o in 0..cout {
                for kh in 0..3 {
                    for k in 0..3 * cin {
                        cols[(o * 3 + kh) * lp + k] = w[(kh * 3 * cin + k) * cout + o];
                    }
                }
            }
        }
        Weights { cin, cout, ld, rows, bias: b, cols }
    }

    /// The weight that maps dL/dy to dL/dx (no bias): dx[q, i] = Σ_tap Σ_o g[q − off(tap), o] ·
    /// W[tap, i, o], and −off(tap) = off(8 − tap), so row `tap·Cout + o` holds W[8 − tap, ·, o].
    pub fn turned(w: &[f32], cin: usize, cout: usize) -> Self {
        assert_eq!(w.len(), 9 * cin * cout, "conv weights: size");
        let mut t = vec![0.0; 9 * cout * cin];
        for tap in 0..9 {
            for o in 0..cout {
                for i in 0..cin {
                    t[(tap * cout + o) * cin + i] = w[((8 - tap) * cin + i) * cout + o];
                }
            }
        }
        Weights::new(&t, None, cout, cin)
    }
}

/// `out [N, H, W, Cout]` = the convolution of the padded `xp [N, H + 2, W + 2, Cin]` (from [`pad`])
/// by `wts`, plus its bias. Every entry of `out` is written. Panics unless [`available`] and the
/// sizes agree.
pub fn forward(xp: &[f32], dims: [usize; 3], wts: &Weights, out: &mut [MaybeUninit<f32>]) {
    run(chosen(), xp, dims, wts, out, false);
}

/// [`forward`] on `kernel`'s instruction set (panics unless this CPU has it).
pub fn forward_with(kernel: ConvKernel, xp: &[f32], dims: [usize; 3], wts: &Weights, out: &mut [MaybeUninit<f32>]) {
    run(kernel, xp, dims, wts, out, false);
}

/// `out [N, H, W, Cout] +=` the convolution of `xp` by `wts`, plus its bias (a residual connection
/// added in the store). As [`forward`] otherwise.
pub fn forward_add(xp: &[f32], dims: [usize; 3], wts: &Weights, out: &mut [f32]) {
    forward_add_with(chosen(), xp, dims, wts, out);
}

/// [`forward_add`] on `kernel`'s instruction set (panics unless this CPU has it).
pub fn forward_add_with(kernel: ConvKernel, xp: &[f32], dims: [usize; 3], wts: &Weights, out: &mut [f32]) {
    // SAFETY: the kernels write only initialised values, so the slice stays initialised.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    run(kernel, xp, dims, wts, out, true);
}

fn run(kernel: ConvKernel, xp: &[f32], [n, h, w]: [usize; 3], wts: &Weights, out: &mut [MaybeUninit<f32>], add: bool) {
    assert!(kernel.available(), "conv_direct::forward: this CPU does not run the {kernel:?} kernels");
    let (cin, cout) = (wts.cin, wts.cout);
    assert_eq!(xp.len(), n * (h + 2) * (w + 2) * cin, "conv forward: padded input size");
    assert_eq!(out.len(), n * h * w * cout, "conv forward: output size");
    if out.is_empty() {
        return;
    }
    let img_in = (h + 2) * (w + 2) * cin;
    out.par_chunks_mut(h * w * cout).enumerate().for_each(|(img, o)| {
        let a = &xp[img * img_in..(img + 1) * img_in];
        let c = o.as_mut_ptr().cast::<f32>();
        // SAFETY: the kernel's instruction set is present (asserted); the slices hold one image each,
        // sized as checked.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match kernel {
                ConvKernel::Avx512 => avx512::image(a, [h, w], wts, c, add),
                ConvKernel::Avx2 => avx2::image(a, [h, w], wts, c, add),
            }
        };
    });
}

/// `dW [9·Cin, Cout]` (row `tap·Cin + i`) and `db [Cout]` of the convolution of the padded
/// `xp [N, H + 2, W + 2, Cin]` whose output gradient is `g [N, H, W, Cout]`. Panics unless
/// [`available`] and the sizes agree.
pub fn weight_grad(xp: &[f32], g: &[f32], dims: [usize; 5]) -> (Vec<f32>, Vec<f32>) {
    weight_grad_with(chosen(), xp, g, dims)
}

/// [`weight_grad`] on `kernel`'s instruction set (panics unless this CPU has it).
pub fn weight_grad_with(
    kernel: ConvKernel,
    xp: &[f32],
    g: &[f32],
    [n, h, w, cin, cout]: [usize; 5],
) -> (Vec<f32>, Vec<f32>) {
    assert!(kernel.available(), "conv_direct::weight_grad: this CPU does not run the {kernel:?} kernels");
    let img_in = (h + 2) * (w + 2) * cin;
    let img_out = h * w * cout;
    assert_eq!(xp.len(), n * img_in, "conv weight grad: padded input size");
    assert_eq!(g.len(), n * img_out, "conv weight grad: gradient size");
    let groups = n.div_ceil(DW_GROUP);
    let parts: Vec<(Vec<f32>, Vec<f32>)> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let (mut dw, mut db) = (vec![0.0f32; 9 * cin * cout], vec![0.0f32; cout]);
            for img in gi * DW_GROUP..n.min((gi + 1) * DW_GROUP) {
                let (a, gimg) = (&xp[img * img_in..][..img_in], &g[img * img_out..][..img_out]);
                let dims = [h, w, cin, cout];
                // SAFETY: the kernel's instruction set is present (asserted); one image of each, sized
                // as checked.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    match kernel {
                        ConvKernel::Avx512 => avx512::image_weight_grad(a, gimg, dims, &mut dw),
                        ConvKernel::Avx2 => avx2::image_weight_grad(a, gimg, dims, &mut dw),
                    }
                };
                for row in gimg.chunks_exact(cout.max(1)) {
                    for (d, &v) in db.iter_mut().zip(row) {
                        *d += v;
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0.0f32; 9 * cin * cout], vec![0.0f32; cout]);
    for (pw, pb) in parts {
        for (d, v) in dw.iter_mut().zip(pw) {
            *d += v;
        }
        for (d, v) in db.iter_mut().zip(pb) {
            *d += v;
        }
    }
    (dw, db)
}

#[cfg(target_arch = "x86_64")]
/// Calls `$f::<ROWS, $nt[, $c]>($args)` for a row count known only at run time (1 ..= 8 with `$c`,
/// else 1 ..= 12).
macro_rules! by_rows {
    ($rows:expr, $f:ident, $nt:expr, $c:expr, ($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1, $nt, $c>($($arg),*),
            2 => $f::<2, $nt, $c>($($arg),*),
            3 => $f::<3, $nt, $c>($($arg),*),
            4 => $f::<4, $nt, $c>($($arg),*),
            5 => $f::<5, $nt, $c>($($arg),*),
            6 => $f::<6, $nt, $c>($($arg),*),
            7 => $f::<7, $nt, $c>($($arg),*),
            8 => $f::<8, $nt, $c>($($arg),*),
            r => unreachable!("row block of {r}"),
        }
    };
    ($rows:expr, $f:ident, $nt:expr, ($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1, $nt>($($arg),*),
            2 => $f::<2, $nt>($($arg),*),
            3 => $f::<3, $nt>($($arg),*),
            4 => $f::<4, $nt>($($arg),*),
            5 => $f::<5, $nt>($($arg),*),
            6 => $f::<6, $nt>($($arg),*),
            7 => $f::<7, $nt>($($arg),*),
            8 => $f::<8, $nt>($($arg),*),
            9 => $f::<9, $nt>($($arg),*),
            10 => $f::<10, $nt>($($arg),*),
            11 => $f::<11, $nt>($($arg),*),
            12 => $f::<12, $nt>($($arg),*),
            r => unreachable!("row block of {r}"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
