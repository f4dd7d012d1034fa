//! The AVX-512F kernels of [`super`]: forward tiles of up to [`MR`] pixels × 32 channels (2 zmm a
//! row), weight-gradient tiles of up to [`DW_MR`] input channels × 32, narrow kernels over vectors
//! of 16.

use super::{narrow_width, row_blocks, Weights, DW_BAND_PIXELS, NARROW};
use std::arch::x86_64::*;

/// Output pixels per forward tile (at most): 7 × 2 zmm = 14 accumulators at width 28 or 14 (the rows
/// split into balanced blocks of 7), 7 at width 7.
const MR: usize = 8;
/// Input channels per weight-gradient tile (at most): 12 × 2 zmm = 24 accumulators + 2 loads of g.
const DW_MR: usize = 12;

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
