//! 3×3 convolutions (stride 1, zero padding 1) straight off a zero-padded channels-last input: the
//! f32 path of [`super::conv`] on AVX-512 CPUs, with no im2col at all.
//!
//! With the input padded once to `[N, H + 2, W + 2, C]` (one copy, where im2col writes nine), the
//! window of output pixel (y, x) at tap (kh, kw) is padded pixel (y + kh, x + kw): a run of output
//! pixels along a row reads, for each tap, a run of padded pixels `C` floats apart, whatever the
//! border. So an `MR × 16·NT` tile of the output is the GEMM microkernel of [`crate::packed`] whose
//! k loop walks the nine taps, broadcasting its A values from nine offsets of the padded input
//! instead of from a gathered block. Per tap and channel: NT vector loads of the weight row and MR
//! broadcast FMAs per vector, as in the packed GEMM; the weight (`9·Cin × Cout`, 36 KB at 32 → 32)
//! stays in L1.
//!
//! - [`forward`]: `y = conv(x) + b`, one task per image. The backward's dL/dx is the same
//!   convolution of the padded dL/dy with the kernel turned 180° and its channels swapped
//!   ([`Weights::turned`]), so it is [`forward`] too.
//! - [`weight_grad`]: `dW[tap, i, o] = Σ_pixels xpad[pixel + tap, i] · g[pixel, o]`, tiles of MR input
//!   channels × 16·NT output channels held in registers over a band of rows, accumulated into one
//!   partial per fixed group of images; the partials are added in order, so dW does not depend on
//!   how rayon schedules the groups.
//!
//! Every lane of every output is one FMA chain in a fixed order, so results do not depend on the
//! thread count either.

use crate::packed::row_blocks;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output pixels per forward tile (at most): 7 × 2 zmm = 14 accumulators at width 28 or 14 (the rows
/// split into balanced blocks of 7), 7 at width 7.
const MR: usize = 8;
/// Input channels per weight-gradient tile (at most): 12 × 2 zmm = 24 accumulators + 2 loads of g.
const DW_MR: usize = 12;
/// Output pixels a weight-gradient band covers (about): its rows of padded x and of g stay in L1
/// while the nine taps and every channel tile sweep them.
const DW_BAND_PIXELS: usize = 128;
/// Images per weight-gradient partial: fixed, so the order of the sums is too.
const DW_GROUP: usize = 4;

/// Whether this CPU runs these kernels (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
                    // A select the compiler vectorises, no branch per value.
                    for (d, &s) in dst.iter_mut().zip(src) {
                        d.write(if s > 0.0 { s } else { 0.0 });
                    }
                } else {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        d.write(s);
                    }
                }
            }
        });
    }
    // SAFETY: every entry of the first `len` was written above (borders, then each row's interior);
    // with no channels or no pixels `len` is 0.
    unsafe { out.set_len(len) };
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
    run(xp, dims, wts, out, false);
}

/// `out [N, H, W, Cout] +=` the convolution of `xp` by `wts`, plus its bias (a residual connection
/// added in the store). As [`forward`] otherwise.
pub fn forward_add(xp: &[f32], dims: [usize; 3], wts: &Weights, out: &mut [f32]) {
    // SAFETY: the kernels write only initialised values, so the slice stays initialised.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    run(xp, dims, wts, out, true);
}

fn run(xp: &[f32], [n, h, w]: [usize; 3], wts: &Weights, out: &mut [MaybeUninit<f32>], add: bool) {
    assert!(available(), "conv_direct::forward needs AVX-512F");
    let (cin, cout) = (wts.cin, wts.cout);
    assert_eq!(xp.len(), n * (h + 2) * (w + 2) * cin, "conv forward: padded input size");
    assert_eq!(out.len(), n * h * w * cout, "conv forward: output size");
    if out.is_empty() {
        return;
    }
    let img_in = (h + 2) * (w + 2) * cin;
    out.par_chunks_mut(h * w * cout).enumerate().for_each(|(img, o)| {
        let a = &xp[img * img_in..(img + 1) * img_in];
        // SAFETY: AVX-512F is present (asserted); the slices hold one image each, sized as checked.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::image(a, [h, w], wts, o.as_mut_ptr().cast::<f32>(), add)
        };
    });
}

/// `dW [9·Cin, Cout]` (row `tap·Cin + i`) and `db [Cout]` of the convolution of the padded
/// `xp [N, H + 2, W + 2, Cin]` whose output gradient is `g [N, H, W, Cout]`. Panics unless
/// [`available`] and the sizes agree.
pub fn weight_grad(xp: &[f32], g: &[f32], [n, h, w, cin, cout]: [usize; 5]) -> (Vec<f32>, Vec<f32>) {
    assert!(available(), "conv_direct::weight_grad needs AVX-512F");
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
                // SAFETY: AVX-512F is present (asserted); one image of each, sized as checked.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    x86::image_weight_grad(a, gimg, [h, w, cin, cout], &mut dw)
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
mod x86 {
    use super::{narrow_width, row_blocks, Weights, DW_BAND_PIXELS, DW_MR, MR, NARROW};
    use std::arch::x86_64::*;

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

    /// The lanes of vector `v` that fall before `cols`.
    fn lanes(cols: usize, v: usize) -> __mmask16 {
        let live = cols.saturating_sub(16 * v).min(16);
        if live == 16 {
            !0
        } else {
            (1u16 << live) - 1
        }
    }

    /// One image of [`super::forward`]: `a` its padded input, `c` its `H·W·Cout` outputs (added to
    /// with `add`).
    ///
    /// # Safety
    /// AVX-512F; `a` holds `(H + 2)(W + 2)·Cin` floats, `c` is writable (and with `add` readable) for
    /// `H·W·Cout`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image(a: &[f32], [h, w]: [usize; 2], wts: &Weights, c: *mut f32, add: bool) {
        let (cin, cout, ld) = (wts.cin, wts.cout, wts.ld);
        let row = (w + 2) * cin;
        if cout <= NARROW {
            // SAFETY: the caller's contract, passed on.
            unsafe { image_narrow(a, [h, w], wts, c, add) };
            return;
        }
        for y in 0..h {
            for (x0, m) in row_blocks(w, MR) {
                for j0 in (0..cout).step_by(32) {
                    let cols = (cout - j0).min(32);
                    // SAFETY: the tile reads padded rows y .. y + 2, pixels x0 .. x0 + m + 2 (inside the
                    // image's padded input), weight columns j0 .. j0 + 32 (ld ≥ j0 + 16·NT), and writes
                    // rows of output pixels (y, x0 ..) at columns < cols.
                    unsafe {
                        let ap = a.as_ptr().add(y * row + x0 * cin);
                        let (bp, biasp) = (wts.rows.as_ptr().add(j0), wts.bias.as_ptr().add(j0));
                        let cp = c.add((y * w + x0) * cout + j0);
                        let args = (ap, row, cin, bp, ld, biasp, cp, cout, cols, add);
                        // 32 channels in (the hidden width of the bench's flows) as a constant, so each
                        // row's broadcast is a fixed displacement rather than address arithmetic.
                        match (cols > 16, cin) {
                            (true, 32) => by_rows!(m, tile, 2, 32, (args)),
                            (true, _) => by_rows!(m, tile, 2, 0, (args)),
                            (false, 32) => by_rows!(m, tile, 1, 32, (args)),
                            (false, _) => by_rows!(m, tile, 1, 0, (args)),
                        }
                    }
                }
            }
        }
    }

    /// An `M × 16·NT` output tile: M pixels along a row, from the bias, through the nine taps.
    ///
    /// `C`: the input channels, when fixed at compile time (0: `cin_any` at run time).
    ///
    /// # Safety
    /// AVX-512F; C is 0 or cin_any; `a` is the tile's first pixel's top-left neighbour in the padded input, readable at
    /// `kh·row + (kw + i)·cin + ci` for kh, kw < 3, i < M, ci < cin; `b` readable at `r·ld + 16·v + l`
    /// for r < 9·cin, v < NT, l < 16; `bias` for 16·NT floats; `c` writable at `i·ldc + j`, j < cols.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize, const NT: usize, const C: usize>(
        (a, row, cin_any, b, ld, bias, c, ldc, cols, add): (
            *const f32,
            usize,
            usize,
            *const f32,
            usize,
            *const f32,
            *mut f32,
            usize,
            usize,
            bool,
        ),
    ) {
        // C = cin_any when C > 0: then the compiler folds every `i·cin` below into a displacement.
        let cin = if C > 0 { C } else { cin_any };
        // SAFETY: in bounds by the caller's contract throughout.
        unsafe {
            let mut init = [_mm512_setzero_ps(); NT];
            for (v, s) in init.iter_mut().enumerate() {
                *s = _mm512_loadu_ps(bias.add(16 * v));
            }
            let mut acc = [init; M];
            for tap in 0..9 {
                let at = a.add((tap / 3) * row + (tap % 3) * cin);
                let mut bp = b.add(tap * cin * ld);
                for ci in 0..cin {
                    let mut bv = [_mm512_setzero_ps(); NT];
                    for (v, bv) in bv.iter_mut().enumerate() {
                        *bv = _mm512_loadu_ps(bp.add(16 * v));
                    }
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*at.add(i * cin + ci));
                        for (s, &bv) in acc.iter_mut().zip(&bv) {
                            *s = _mm512_fmadd_ps(x, bv, *s);
                        }
                    }
                    bp = bp.add(ld);
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                for (v, &s) in acc.iter().enumerate() {
                    let (dst, mask) = (c.add(i * ldc + 16 * v), lanes(cols, v));
                    let s = if add { _mm512_add_ps(s, _mm512_maskz_loadu_ps(mask, dst)) } else { s };
                    _mm512_mask_storeu_ps(dst, mask, s);
                }
            }
        }
    }

    /// [`image`] for at most [`NARROW`] outputs: tiles of pixels × all outputs, each output a dot
    /// product over the 3·Cin contiguous inputs of each kernel row, 16 lanes of partial sums added
    /// across at the end.
    ///
    /// # Safety
    /// As [`image`], with Cout ≤ [`NARROW`].
    #[target_feature(enable = "avx512f")]
    unsafe fn image_narrow(a: &[f32], [h, w]: [usize; 2], wts: &Weights, c: *mut f32, add: bool) {
        let (cin, cout) = (wts.cin, wts.cout);
        let row = (w + 2) * cin;
        let co = narrow_width(cout);
        // Rows per tile: M·CO ≤ 16 accumulators (12 for a single output), + CO weight vectors + 1 input.
        let mr = match co {
            1 => 12,
            2 => 8,
            4 => 4,
            _ => 2,
        };
        for y in 0..h {
            for (x0, m) in row_blocks(w, mr) {
                // SAFETY: the tile reads padded rows y .. y + 2, pixels x0 .. x0 + m + 2, the transposed
                // weight (CO·3·lp floats) and the bias (ld ≥ Cout floats), and writes output pixels
                // (y, x0 ..) at columns < cout.
                unsafe {
                    let args = (a.as_ptr().add(y * row + x0 * cin), row, cin, wts, c.add((y * w + x0) * cout), add);
                    match co {
                        1 => by_rows!(m, narrow_tile, 1, (args)),
                        2 => by_rows!(m, narrow_tile, 2, (args)),
                        4 => match m {
                            1 => narrow_tile::<1, 4>(args),
                            2 => narrow_tile::<2, 4>(args),
                            3 => narrow_tile::<3, 4>(args),
                            _ => narrow_tile::<4, 4>(args),
                        },
                        _ => match m {
                            1 => narrow_tile::<1, 8>(args),
                            _ => narrow_tile::<2, 8>(args),
                        },
                    }
                }
            }
        }
    }

    /// M pixels × CO outputs (the first `wts.cout` stored) of [`image_narrow`].
    ///
    /// # Safety
    /// AVX-512F; `a` as in [`tile`] (the tile's first pixel's top-left neighbour); `c` writable at
    /// `i·Cout + o` for i < M, o < Cout; `wts.cols` laid out for CO outputs.
    #[target_feature(enable = "avx512f")]
    unsafe fn narrow_tile<const M: usize, const CO: usize>(
        (a, row, cin, wts, c, add): (*const f32, usize, usize, &Weights, *mut f32, bool),
    ) {
        let l = 3 * cin;
        let (nv, lp) = (l.div_ceil(16), l.div_ceil(16) * 16);
        let last = lanes(l, nv - 1);
        let wp = wts.cols.as_ptr();
        // SAFETY: in bounds by the caller's contract throughout: input loads past 3·Cin are masked off
        // (never read); the transposed weight is zero-padded to lp.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); CO]; M];
            for kh in 0..3 {
                let at = a.add(kh * row);
                for v in 0..nv {
                    let mask = if v + 1 < nv { !0 } else { last };
                    let mut wv = [_mm512_setzero_ps(); CO];
                    for (o, wv) in wv.iter_mut().enumerate() {
                        *wv = _mm512_loadu_ps(wp.add((o * 3 + kh) * lp + 16 * v));
                    }
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm512_maskz_loadu_ps(mask, at.add(i * cin + 16 * v));
                        for (s, &wv) in acc.iter_mut().zip(&wv) {
                            *s = _mm512_fmadd_ps(xv, wv, *s);
                        }
                    }
                }
            }
            let cout = wts.cout;
            for (i, acc) in acc.iter().enumerate() {
                for (o, &s) in acc.iter().enumerate().take(cout) {
                    let y = wts.bias[o] + _mm512_reduce_add_ps(s);
                    let dst = c.add(i * cout + o);
                    *dst = if add { *dst + y } else { y };
                }
            }
        }
    }

    /// One image's share of [`super::weight_grad`], added into `dw [9·Cin, Cout]`: `a` its padded
    /// input, `g` its `H·W·Cout` output gradient.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `(H + 2)(W + 2)·Cin` floats, `g` `H·W·Cout`, `dw` `9·Cin·Cout`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_weight_grad(a: &[f32], g: &[f32], [h, w, cin, cout]: [usize; 4], dw: &mut [f32]) {
        let row = (w + 2) * cin;
        let band = (DW_BAND_PIXELS / w.max(1)).clamp(1, h.max(1));
        for y0 in (0..h).step_by(band) {
            let rows = band.min(h - y0);
            // The three taps of kernel row kh read 3·Cin contiguous values at each pixel (its padded
            // neighbours x − 1, x, x + 1), and their dW rows kh·3·Cin + (kw·Cin + i) are contiguous
            // too: one run of 3·Cin rows per kernel row, in tiles of DW_MR.
            for kh in 0..3 {
                if cout <= NARROW {
                    // SAFETY: the caller's contract, passed on (rows y0 .. y0 + rows of the image).
                    unsafe { narrow_weight_grad(a, g, [h, w, cin, cout], [y0, rows, kh], dw) };
                    continue;
                }
                for (i0, m) in row_blocks(3 * cin, DW_MR) {
                    for j0 in (0..cout).step_by(32) {
                        let cols = (cout - j0).min(32);
                        // SAFETY: the tile reads padded pixels (y0 + y + kh, x + kw) for y < rows, x < w,
                        // values i0 .. i0 + m of their 3·Cin; gradient rows of pixels (y0 + y, x) at
                        // columns < cols (masked); and adds into dW rows kh·3·Cin + i0 + i, columns < cols.
                        unsafe {
                            let ap = a.as_ptr().add((y0 + kh) * row + i0);
                            let gp = g.as_ptr().add(y0 * w * cout + j0);
                            let dp = dw.as_mut_ptr().add((kh * 3 * cin + i0) * cout + j0);
                            let args = (ap, row, cin, gp, cout, rows, w, cols, dp);
                            if cols > 16 {
                                by_rows!(m, dw_tile, 2, (args));
                            } else {
                                by_rows!(m, dw_tile, 1, (args));
                            }
                        }
                    }
                }
            }
        }
    }

    /// The dW rows of kernel row `kh` over output rows `y0 .. y0 + rows` for at most [`NARROW`]
    /// outputs: vectorised over the 3·Cin inputs (up to 6 vectors a tile), each output's gradient
    /// broadcast, the tile's sums added into dW's columns at the end.
    ///
    /// # Safety
    /// As [`image_weight_grad`], with Cout ≤ [`NARROW`] and y0 + rows ≤ H.
    #[target_feature(enable = "avx512f")]
    unsafe fn narrow_weight_grad(
        a: &[f32],
        g: &[f32],
        [_h, w, cin, cout]: [usize; 4],
        [y0, rows, kh]: [usize; 3],
        dw: &mut [f32],
    ) {
        let row = (w + 2) * cin;
        let l = 3 * cin;
        let kv = if cout <= 4 { 6 } else { 3 };
        for v0 in (0..l.div_ceil(16)).step_by(kv) {
            let mut sums = [0.0f32; 6 * 16 * NARROW];
            // SAFETY: reads padded pixels (y0 + y + kh, x + kw), values 16·v0 .. of their 3·Cin (loads
            // past 3·Cin masked off), gradients of pixels (y0 + y, x) at columns < cout; writes `sums`.
            unsafe {
                let args =
                    (a.as_ptr().add((y0 + kh) * row + 16 * v0), row, cin, l - 16 * v0, g.as_ptr().add(y0 * w * cout));
                let args = (args, rows, w, sums.as_mut_ptr());
                match cout {
                    1 => narrow_dw_tile::<6, 1>(args),
                    2 => narrow_dw_tile::<6, 2>(args),
                    3 => narrow_dw_tile::<6, 3>(args),
                    4 => narrow_dw_tile::<6, 4>(args),
                    5 => narrow_dw_tile::<3, 5>(args),
                    6 => narrow_dw_tile::<3, 6>(args),
                    7 => narrow_dw_tile::<3, 7>(args),
                    _ => narrow_dw_tile::<3, 8>(args),
                }
            }
            // sums[(v·CO + o)·16 + lane] is dW row kh·3·Cin + 16·(v0 + v) + lane, column o.
            for v in 0..kv {
                for lane in 0..16 {
                    let k = 16 * (v0 + v) + lane;
                    if k >= l {
                        break;
                    }
                    for o in 0..cout {
                        dw[(kh * l + k) * cout + o] += sums[(v * cout + o) * 16 + lane];
                    }
                }
            }
        }
    }

    /// `sums[(v·CO + o)·16 + lane] = Σ_pixels a[pixel, 16·v + lane] · g[pixel, o]` for v < KV over
    /// `rows × w` pixels, values past `l` (the live length from `a`) left out.
    ///
    /// # Safety
    /// AVX-512F; `a` readable at `y·row + x·cin + k` for k < min(l, 16·KV), `g` at `(y·w + x)·CO + o`
    /// for y < rows, x < w, o < CO; `sums` writable for 16·KV·CO floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::type_complexity)]
    unsafe fn narrow_dw_tile<const KV: usize, const CO: usize>(
        ((a, row, cin, l, g), rows, w, sums): ((*const f32, usize, usize, usize, *const f32), usize, usize, *mut f32),
    ) {
        let mut masks = [0 as __mmask16; KV];
        for (v, k) in masks.iter_mut().enumerate() {
            *k = lanes(l, v);
        }
        // SAFETY: in bounds by the caller's contract throughout (masked lanes are never read).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); CO]; KV];
            for y in 0..rows {
                for x in 0..w {
                    let ap = a.add(y * row + x * cin);
                    let gp = g.add((y * w + x) * CO);
                    let mut xv = [_mm512_setzero_ps(); KV];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        *xv = _mm512_maskz_loadu_ps(masks[v], ap.add(16 * v));
                    }
                    for o in 0..CO {
                        let gv = _mm512_set1_ps(*gp.add(o));
                        for (acc, &xv) in acc.iter_mut().zip(&xv) {
                            acc[o] = _mm512_fmadd_ps(xv, gv, acc[o]);
                        }
                    }
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                for (o, &s) in acc.iter().enumerate() {
                    _mm512_storeu_ps(sums.add((v * CO + o) * 16), s);
                }
            }
        }
    }

    /// `d[i, ·] += Σ_pixels a[pixel, i] · g[pixel, ·]` for M input channels × 16·NT output channels
    /// over `rows × w` pixels.
    ///
    /// # Safety
    /// AVX-512F; `a` readable at `y·row + x·cin + i` and `g` at `(y·w + x)·ldg + j` for y < rows,
    /// x < w, i < M, j < cols; `d` readable and writable at `i·ldg + j`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::type_complexity)]
    unsafe fn dw_tile<const M: usize, const NT: usize>(
        (a, row, cin, g, ldg, rows, w, cols, d): (
            *const f32,
            usize,
            usize,
            *const f32,
            usize,
            usize,
            usize,
            usize,
            *mut f32,
        ),
    ) {
        let mut masks = [0 as __mmask16; NT];
        for (v, k) in masks.iter_mut().enumerate() {
            *k = lanes(cols, v);
        }
        // SAFETY: in bounds by the caller's contract throughout (masked lanes are never touched).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NT]; M];
            for y in 0..rows {
                for x in 0..w {
                    let gp = g.add((y * w + x) * ldg);
                    let ap = a.add(y * row + x * cin);
                    let mut gv = [_mm512_setzero_ps(); NT];
                    for (v, gv) in gv.iter_mut().enumerate() {
                        *gv = _mm512_maskz_loadu_ps(masks[v], gp.add(16 * v));
                    }
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*ap.add(i));
                        for (s, &gv) in acc.iter_mut().zip(&gv) {
                            *s = _mm512_fmadd_ps(xv, gv, *s);
                        }
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                for (v, &s) in acc.iter().enumerate() {
                    let p = d.add(i * ldg + 16 * v);
                    _mm512_mask_storeu_ps(p, masks[v], _mm512_add_ps(s, _mm512_maskz_loadu_ps(masks[v], p)));
                }
            }
        }
    }
}
