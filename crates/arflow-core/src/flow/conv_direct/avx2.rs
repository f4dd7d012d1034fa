//! The AVX2+FMA kernels of [`super`]: the tiles of the AVX-512 kernels cut to 16 ymm registers of 8
//! lanes. Forward tiles of up to [`MR`] pixels × 16 channels (2 ymm a row: 12 accumulators + 2 weight
//! vectors + 1 broadcast), weight-gradient tiles of up to [`DW_MR`] input channels × 16. Outputs of 5
//! to 8 channels fill one ymm, so they run the same tiles one vector wide (up to 12 rows); only up to
//! [`NARROW`] outputs run the narrow kernels, over vectors of 8 inputs. Partial vectors (the last
//! columns of a pass, the last inputs of a kernel row) go through `maskload`/`maskstore`, which never
//! touch the masked-off lanes; whole ones through plain loads, chosen outside the inner loops.

use super::{narrow_width, row_blocks, Weights, DW_BAND_PIXELS};
use std::arch::x86_64::*;

/// Output pixels per forward tile (at most): 6 × 2 ymm = 12 accumulators at width 28 (blocks of 6 and
/// 5), 10 at width 14 (5, 5, 4).
const MR: usize = 6;
/// Input channels per weight-gradient tile (at most): 6 × 2 ymm = 12 accumulators + 2 loads of g + 1
/// broadcast.
const DW_MR: usize = 6;
/// Rows (pixels, or input channels) per tile one vector wide (5 to 8 outputs): 12 accumulators + 1
/// load + 1 broadcast.
const MR_ONE: usize = 12;
/// Outputs up to this many channels run the narrow kernels (a vector of 8 outputs would be mostly
/// idle lanes).
const NARROW: usize = 4;
/// Accumulators of a narrow weight-gradient tile (at most): `KV` input vectors × `CO` outputs.
const NARROW_DW_ACC: usize = 12;

/// Calls `$f::<ROWS, $g..>($args)` for a row count known only at run time (1 ..= 6).
macro_rules! upto6 {
    ($rows:expr, $f:ident, [$($g:tt),*], ($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1, $($g),*>($($arg),*),
            2 => $f::<2, $($g),*>($($arg),*),
            3 => $f::<3, $($g),*>($($arg),*),
            4 => $f::<4, $($g),*>($($arg),*),
            5 => $f::<5, $($g),*>($($arg),*),
            6 => $f::<6, $($g),*>($($arg),*),
            r => unreachable!("row block of {r}"),
        }
    };
}

/// Calls `$f::<ROWS, $g..>($args)` for a row count known only at run time (1 ..= 12).
macro_rules! upto12 {
    ($rows:expr, $f:ident, [$($g:tt),*], ($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1, $($g),*>($($arg),*),
            2 => $f::<2, $($g),*>($($arg),*),
            3 => $f::<3, $($g),*>($($arg),*),
            4 => $f::<4, $($g),*>($($arg),*),
            5 => $f::<5, $($g),*>($($arg),*),
            6 => $f::<6, $($g),*>($($arg),*),
            7 => $f::<7, $($g),*>($($arg),*),
            8 => $f::<8, $($g),*>($($arg),*),
            9 => $f::<9, $($g),*>($($arg),*),
            10 => $f::<10, $($g),*>($($arg),*),
            11 => $f::<11, $($g),*>($($arg),*),
            12 => $f::<12, $($g),*>($($arg),*),
            r => unreachable!("row block of {r}"),
        }
    };
}

/// The lanes of 8-lane vector `v` that fall before `cols`, as a `maskload`/`maskstore` mask (all bits
/// of a live lane set).
#[target_feature(enable = "avx2")]
fn lanes(cols: usize, v: usize) -> __m256i {
    let live = cols.saturating_sub(8 * v).min(8) as i32;
    _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// The sum of the 8 lanes of `v`, in a fixed order.
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// One image of [`super::forward`]: `a` its padded input, `c` its `H·W·Cout` outputs (added to with
/// `add`).
///
/// # Safety
/// AVX2 and FMA; `a` holds `(H + 2)(W + 2)·Cin` floats, `c` is writable (and with `add` readable) for
/// `H·W·Cout`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn image(a: &[f32], [h, w]: [usize; 2], wts: &Weights, c: *mut f32, add: bool) {
    let (cin, cout, ld) = (wts.cin, wts.cout, wts.ld);
    let row = (w + 2) * cin;
    if cout <= NARROW {
        // SAFETY: the caller's contract, passed on.
        unsafe { image_narrow(a, [h, w], wts, c, add) };
        return;
    }
    let mr = if cout <= 8 { MR_ONE } else { MR };
    for y in 0..h {
        for (x0, m) in row_blocks(w, mr) {
            for j0 in (0..cout).step_by(16) {
                let cols = (cout - j0).min(16);
                // SAFETY: the tile reads padded rows y .. y + 2, pixels x0 .. x0 + m + 2 (inside the
                // image's padded input), weight columns j0 .. j0 + 8·NT ≤ ld (ld is a multiple of 16),
                // and writes rows of output pixels (y, x0 ..) at columns < cols; m ≤ 6, or ≤ 12 with
                // NT = 1 (cols ≤ 8 then: one pass).
                unsafe {
                    let ap = a.as_ptr().add(y * row + x0 * cin);
                    let (bp, biasp) = (wts.rows.as_ptr().add(j0), wts.bias.as_ptr().add(j0));
                    let cp = c.add((y * w + x0) * cout + j0);
                    let args = (ap, row, cin, bp, ld, biasp, cp, cout, cols, add);
                    // 32 channels in as a constant, as in the AVX-512 kernel.
                    match (cols > 8, cin) {
                        (true, 32) => upto6!(m, tile, [2, 32], (args)),
                        (true, _) => upto6!(m, tile, [2, 0], (args)),
                        (false, 32) => upto12!(m, tile, [1, 32], (args)),
                        (false, _) => upto12!(m, tile, [1, 0], (args)),
                    }
                }
            }
        }
    }
}

/// An `M × 8·NT` output tile: M pixels along a row, from the bias, through the nine taps.
///
/// `C`: the input channels, when fixed at compile time (0: `cin_any` at run time).
///
/// # Safety
/// AVX2 and FMA; C is 0 or cin_any; `a` is the tile's first pixel's top-left neighbour in the padded
/// input, readable at `kh·row + (kw + i)·cin + ci` for kh, kw < 3, i < M, ci < cin; `b` readable at
/// `r·ld + 8·v + l` for r < 9·cin, v < NT, l < 8; `bias` for 8·NT floats; `c` writable (and with `add`
/// readable) at `i·ldc + j`, j < cols ≤ 8·NT.
#[target_feature(enable = "avx2,fma")]
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
    // SAFETY: in bounds by the caller's contract throughout (masked-off lanes are never touched).
    unsafe {
        let mut init = [_mm256_setzero_ps(); NT];
        for (v, s) in init.iter_mut().enumerate() {
            *s = _mm256_loadu_ps(bias.add(8 * v));
        }
        let mut acc = [init; M];
        for tap in 0..9 {
            let at = a.add((tap / 3) * row + (tap % 3) * cin);
            let mut bp = b.add(tap * cin * ld);
            for ci in 0..cin {
                let mut bv = [_mm256_setzero_ps(); NT];
                for (v, bv) in bv.iter_mut().enumerate() {
                    *bv = _mm256_loadu_ps(bp.add(8 * v));
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*at.add(i * cin + ci));
                    for (s, &bv) in acc.iter_mut().zip(&bv) {
                        *s = _mm256_fmadd_ps(x, bv, *s);
                    }
                }
                bp = bp.add(ld);
            }
        }
        if cols == 8 * NT {
            for (i, acc) in acc.iter().enumerate() {
                for (v, &s) in acc.iter().enumerate() {
                    let dst = c.add(i * ldc + 8 * v);
                    let s = if add { _mm256_add_ps(s, _mm256_loadu_ps(dst)) } else { s };
                    _mm256_storeu_ps(dst, s);
                }
            }
        } else {
            for (i, acc) in acc.iter().enumerate() {
                for (v, &s) in acc.iter().enumerate() {
                    let (dst, mask) = (c.add(i * ldc + 8 * v), lanes(cols, v));
                    let s = if add { _mm256_add_ps(s, _mm256_maskload_ps(dst, mask)) } else { s };
                    _mm256_maskstore_ps(dst, mask, s);
                }
            }
        }
    }
}

/// [`image`] for at most [`NARROW`] outputs: tiles of pixels × all outputs, each output a dot product
/// over the 3·Cin contiguous inputs of each kernel row, 8 lanes of partial sums added across at the
/// end.
///
/// # Safety
/// As [`image`], with Cout ≤ [`NARROW`].
#[target_feature(enable = "avx2,fma")]
unsafe fn image_narrow(a: &[f32], [h, w]: [usize; 2], wts: &Weights, c: *mut f32, add: bool) {
    let (cin, cout) = (wts.cin, wts.cout);
    let row = (w + 2) * cin;
    let co = narrow_width(cout);
    // Rows per tile: M·CO ≤ 12 accumulators + CO weight vectors + 1 input ≤ 16 registers (with one
    // output each input load feeds one FMA).
    let mr = match co {
        1 => 12,
        2 => 6,
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
                    2 => upto6!(m, narrow_tile, [2], (args)),
                    _ => match m {
                        1 => narrow_tile::<1, 4>(args),
                        _ => narrow_tile::<2, 4>(args),
                    },
                }
            }
        }
    }
}

/// M pixels × CO outputs (the first `wts.cout` stored) of [`image_narrow`].
///
/// # Safety
/// AVX2 and FMA; `a` as in [`tile`] (the tile's first pixel's top-left neighbour); `c` writable (and
/// with `add` readable) at `i·Cout + o` for i < M, o < Cout; `wts.cols` laid out for CO outputs.
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_tile<const M: usize, const CO: usize>(
    (a, row, cin, wts, c, add): (*const f32, usize, usize, &Weights, *mut f32, bool),
) {
    let l = 3 * cin;
    let (nv, lp) = (l.div_ceil(8), l.div_ceil(16) * 16);
    // The vectors read whole; the last is masked when 3·Cin is not a multiple of 8.
    let whole = l / 8;
    let last = lanes(l, nv - 1);
    let wp = wts.cols.as_ptr();
    // SAFETY: in bounds by the caller's contract throughout: input lanes past 3·Cin are masked off
    // (never read); the transposed weight is zero-padded to lp ≥ 8·nv.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); CO]; M];
        for kh in 0..3 {
            let at = a.add(kh * row);
            // One kernel row's vector v into the accumulators, its input at `$p` read by `$load`.
            macro_rules! step {
                ($v:expr, $p:ident => $load:expr) => {{
                    let v = $v;
                    let mut wv = [_mm256_setzero_ps(); CO];
                    for (o, wv) in wv.iter_mut().enumerate() {
                        *wv = _mm256_loadu_ps(wp.add((o * 3 + kh) * lp + 8 * v));
                    }
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let $p = at.add(i * cin + 8 * v);
                        let xv = $load;
                        for (s, &wv) in acc.iter_mut().zip(&wv) {
                            *s = _mm256_fmadd_ps(xv, wv, *s);
                        }
                    }
                }};
            }
            for v in 0..whole {
                step!(v, p => _mm256_loadu_ps(p));
            }
            if whole < nv {
                step!(whole, p => _mm256_maskload_ps(p, last));
            }
        }
        let cout = wts.cout;
        for (i, acc) in acc.iter().enumerate() {
            for (o, &s) in acc.iter().enumerate().take(cout) {
                let y = wts.bias[o] + hsum(s);
                let dst = c.add(i * cout + o);
                *dst = if add { *dst + y } else { y };
            }
        }
    }
}

/// One image's share of [`super::weight_grad`], added into `dw [9·Cin, Cout]`: `a` its padded input,
/// `g` its `H·W·Cout` output gradient.
///
/// # Safety
/// AVX2 and FMA; `a` holds `(H + 2)(W + 2)·Cin` floats, `g` `H·W·Cout`, `dw` `9·Cin·Cout`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn image_weight_grad(a: &[f32], g: &[f32], [h, w, cin, cout]: [usize; 4], dw: &mut [f32]) {
    let row = (w + 2) * cin;
    let band = (DW_BAND_PIXELS / w.max(1)).clamp(1, h.max(1));
    for y0 in (0..h).step_by(band) {
        let rows = band.min(h - y0);
        // As in the AVX-512 kernel: one run of 3·Cin dW rows per kernel row, in tiles of DW_MR (of
        // MR_ONE with one vector of outputs).
        for kh in 0..3 {
            if cout <= NARROW {
                // SAFETY: the caller's contract, passed on (rows y0 .. y0 + rows of the image).
                unsafe { narrow_weight_grad(a, g, [h, w, cin, cout], [y0, rows, kh], dw) };
                continue;
            }
            for (i0, m) in row_blocks(3 * cin, if cout <= 8 { MR_ONE } else { DW_MR }) {
                for j0 in (0..cout).step_by(16) {
                    let cols = (cout - j0).min(16);
                    // SAFETY: the tile reads padded pixels (y0 + y + kh, x + kw) for y < rows, x < w,
                    // values i0 .. i0 + m of their 3·Cin; gradient rows of pixels (y0 + y, x) at
                    // columns < cols (the rest masked off); and adds into dW rows kh·3·Cin + i0 + i,
                    // columns < cols; m ≤ 6, or ≤ 12 with NT = 1 (cols ≤ 8 then: one pass).
                    unsafe {
                        let ap = a.as_ptr().add((y0 + kh) * row + i0);
                        let gp = g.as_ptr().add(y0 * w * cout + j0);
                        let dp = dw.as_mut_ptr().add((kh * 3 * cin + i0) * cout + j0);
                        let args = (ap, row, cin, gp, cout, rows, w, cols, dp);
                        match (cols > 8, cols % 8 == 0) {
                            (true, true) => upto6!(m, dw_tile, [2, true], (args)),
                            (true, false) => upto6!(m, dw_tile, [2, false], (args)),
                            (false, true) => upto12!(m, dw_tile, [1, true], (args)),
                            (false, false) => upto12!(m, dw_tile, [1, false], (args)),
                        }
                    }
                }
            }
        }
    }
}

/// The dW rows of kernel row `kh` over output rows `y0 .. y0 + rows` for at most [`NARROW`] outputs:
/// vectorised over the 3·Cin inputs (up to 12 vectors a tile), each output's gradient broadcast, the
/// tile's sums added into dW's columns at the end.
///
/// # Safety
/// As [`image_weight_grad`], with Cout ≤ [`NARROW`] and y0 + rows ≤ H.
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_weight_grad(
    a: &[f32],
    g: &[f32],
    [_h, w, cin, cout]: [usize; 4],
    [y0, rows, kh]: [usize; 3],
    dw: &mut [f32],
) {
    let row = (w + 2) * cin;
    let l = 3 * cin;
    // Vectors per tile: KV·CO ≤ 12 accumulators + KV inputs + 1 broadcast ≤ 16 registers (with one
    // output each input load feeds one FMA).
    let kv = match cout {
        1 => 12,
        2 => 4,
        3 => 3,
        _ => 2,
    };
    for v0 in (0..l.div_ceil(8)).step_by(kv) {
        let mut sums = [0.0f32; NARROW_DW_ACC * 8];
        let live = l - 8 * v0;
        // SAFETY: reads padded pixels (y0 + y + kh, x + kw), values 8·v0 .. of their 3·Cin (loads past
        // 3·Cin masked off), gradients of pixels (y0 + y, x) at columns < cout; writes `sums`.
        unsafe {
            let args = (a.as_ptr().add((y0 + kh) * row + 8 * v0), row, cin, live, g.as_ptr().add(y0 * w * cout));
            let args = (args, rows, w, sums.as_mut_ptr());
            let whole = live >= 8 * kv;
            macro_rules! tile {
                ($kv:tt, $co:tt) => {
                    if whole {
                        narrow_dw_tile::<$kv, $co, true>(args)
                    } else {
                        narrow_dw_tile::<$kv, $co, false>(args)
                    }
                };
            }
            match cout {
                1 => tile!(12, 1),
                2 => tile!(4, 2),
                3 => tile!(3, 3),
                _ => tile!(2, 4),
            }
        }
        // sums[(v·CO + o)·8 + lane] is dW row kh·3·Cin + 8·(v0 + v) + lane, column o.
        for v in 0..kv {
            for lane in 0..8 {
                let k = 8 * (v0 + v) + lane;
                if k >= l {
                    break;
                }
                for o in 0..cout {
                    dw[(kh * l + k) * cout + o] += sums[(v * cout + o) * 8 + lane];
                }
            }
        }
    }
}

/// `sums[(v·CO + o)·8 + lane] = Σ_pixels a[pixel, 8·v + lane] · g[pixel, o]` for v < KV over
/// `rows × w` pixels, values past `l` (the live length from `a`) left out; `WHOLE`: l ≥ 8·KV (no
/// masks).
///
/// # Safety
/// AVX2 and FMA; `a` readable at `y·row + x·cin + k` for k < min(l, 8·KV), `g` at `(y·w + x)·CO + o`
/// for y < rows, x < w, o < CO; `sums` writable for 8·KV·CO ≤ 8·[`NARROW_DW_ACC`] floats.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::type_complexity)]
unsafe fn narrow_dw_tile<const KV: usize, const CO: usize, const WHOLE: bool>(
    ((a, row, cin, l, g), rows, w, sums): ((*const f32, usize, usize, usize, *const f32), usize, usize, *mut f32),
) {
    let mut masks = [_mm256_setzero_si256(); KV];
    for (v, k) in masks.iter_mut().enumerate() {
        *k = lanes(l, v);
    }
    // SAFETY: in bounds by the caller's contract throughout (masked-off lanes are never read; the
    // addresses of vectors wholly past `l` are formed with wrapping arithmetic and never read).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); CO]; KV];
        for y in 0..rows {
            for x in 0..w {
                let ap = a.add(y * row + x * cin);
                let gp = g.add((y * w + x) * CO);
                let mut xv = [_mm256_setzero_ps(); KV];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = if WHOLE {
                        _mm256_loadu_ps(ap.add(8 * v))
                    } else {
                        _mm256_maskload_ps(ap.wrapping_add(8 * v), masks[v])
                    };
                }
                for o in 0..CO {
                    let gv = _mm256_broadcast_ss(&*gp.add(o));
                    for (acc, &xv) in acc.iter_mut().zip(&xv) {
                        acc[o] = _mm256_fmadd_ps(xv, gv, acc[o]);
                    }
                }
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            for (o, &s) in acc.iter().enumerate() {
                _mm256_storeu_ps(sums.add((v * CO + o) * 8), s);
            }
        }
    }
}

/// `d[i, ·] += Σ_pixels a[pixel, i] · g[pixel, ·]` for M input channels × 8·NT output channels over
/// `rows × w` pixels; `WHOLE`: cols = 8·NT (no masks).
///
/// # Safety
/// AVX2 and FMA; `a` readable at `y·row + x·cin + i` and `g` at `(y·w + x)·ldg + j` for y < rows,
/// x < w, i < M, j < cols ≤ 8·NT; `d` readable and writable at `i·ldg + j`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::type_complexity)]
unsafe fn dw_tile<const M: usize, const NT: usize, const WHOLE: bool>(
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
    let mut masks = [_mm256_setzero_si256(); NT];
    for (v, k) in masks.iter_mut().enumerate() {
        *k = lanes(cols, v);
    }
    // SAFETY: in bounds by the caller's contract throughout (masked-off lanes are never touched).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NT]; M];
        for y in 0..rows {
            for x in 0..w {
                let gp = g.add((y * w + x) * ldg);
                let ap = a.add(y * row + x * cin);
                let mut gv = [_mm256_setzero_ps(); NT];
                for (v, gv) in gv.iter_mut().enumerate() {
                    *gv = if WHOLE {
                        _mm256_loadu_ps(gp.add(8 * v))
                    } else {
                        _mm256_maskload_ps(gp.add(8 * v), masks[v])
                    };
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*ap.add(i));
                    for (s, &gv) in acc.iter_mut().zip(&gv) {
                        *s = _mm256_fmadd_ps(xv, gv, *s);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &s) in acc.iter().enumerate() {
                let p = d.add(i * ldg + 8 * v);
                if WHOLE {
                    _mm256_storeu_ps(p, _mm256_add_ps(s, _mm256_loadu_ps(p)));
                } else {
                    _mm256_maskstore_ps(p, masks[v], _mm256_add_ps(s, _mm256_maskload_ps(p, masks[v])));
                }
            }
        }
    }
}
