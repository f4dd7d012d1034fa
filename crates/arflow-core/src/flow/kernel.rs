//! The fused affine coupling of Real NVP (Dinh et al., 2016): forward, inverse and the forward's
//! hand-written backward, each one pass over the rows.
//!
//! With `x [N, D]`, a binary mask `b [D]` (1 = passes through, and is what the conditioner sees), the
//! conditioner's raw outputs `s_raw [N, D]`, `t [N, D]` and a learned `scale [D]`:
//! ```text
//! s         = scale ⊙ tanh(s_raw)                         (bounded log-scale)
//! y         = b ⊙ x + (1 − b) ⊙ (x ⊙ exp(s) + t)
//! logdet[n] = Σ_d (1 − b_d) · s[n, d]
//! x         = b ⊙ y + (1 − b) ⊙ ((y − t) ⊙ exp(−s))        (inverse, log-det −logdet)
//! ```
//! Backward of the forward map, with m = 1 − b and e = exp(s), given dy `[N, D]` and dlogdet `[N]`:
//! ```text
//! dx       = dy ⊙ (b + m ⊙ e)
//! ds       = m ⊙ (dy ⊙ x ⊙ e + dlogdet)
//! dt       = m ⊙ dy
//! ds_raw   = ds ⊙ scale ⊙ (1 − tanh²(s_raw))
//! dscale_d = Σ_n ds[n, d] · tanh(s_raw[n, d])
//! ```
//! The mask must be exactly 0 or 1 (checked). Pass-through columns are copied, never computed, so
//! their `s_raw` and `t` are not read and a non-finite value there cannot leak in as `0 · inf`; their
//! gradients are dy for x and exactly 0 for s_raw, t and scale. Backward recomputes tanh and exp from
//! the inputs rather than keeping `[N, D]` activations from the forward pass.
//!
//! Two layouts: the slice API (`coupling_*`) takes each operand as its own row-major `[N, D]` slice;
//! the packed API (`coupling_*_packed`) is the candle op's, `st = [s_raw | t]` `[N, 2D]`,
//! `params = [mask; scale]` `[2, D]`, `out = [y | logdet]` `[N, D + 1]`, so the op copies nothing.

use crate::real::Real;
use rayon::prelude::*;

/// Rows of work below this many elements run on one thread: rayon's fork/join costs more.
const PAR_MIN_ELEMS: usize = 4096;

/// Rows per parallel part: one part per kernel thread when the work pays for a thread, else one part.
fn rows_per_part(n: usize, d: usize) -> usize {
    let parts = if n * d >= PAR_MIN_ELEMS { rayon::current_num_threads().min(n).max(1) } else { 1 };
    n.div_ceil(parts).max(1)
}

fn check_mask<T: Real>(mask: &[T]) {
    assert!(
        mask.iter().all(|&b| b == T::zero() || b == T::one()),
        "affine coupling: mask entries must be 0 or 1, got {mask:?}"
    );
}

/// Asserts that `what`, of shape `dims` (in symbols), holds the product of `shape` values.
fn expect_len(what: &str, dims: &str, got: usize, shape: &[usize]) {
    let want: usize = shape.iter().product();
    assert_eq!(got, want, "affine coupling: {what} must be {dims} = {shape:?}, got {got} values");
}

/// Sizes of the slice API's operands: `rows` are the `[N, D]` matrices, `cols` the `[D]` vectors.
fn check<T: Real>(n: usize, d: usize, rows: &[(&str, usize)], cols: &[(&str, usize)], mask: &[T]) {
    for &(what, len) in rows {
        expect_len(what, "[N, D]", len, &[n, d]);
    }
    for &(what, len) in cols {
        expect_len(what, "[D]", len, &[d]);
    }
    check_mask(mask);
}

fn check_packed<T: Real>(n: usize, d: usize, input: &[T], st: &[T], params: &[T]) {
    expect_len("input", "[N, D]", input.len(), &[n, d]);
    expect_len("st", "[N, 2D]", st.len(), &[n, 2 * d]);
    expect_len("params", "[2, D]", params.len(), &[2, d]);
    check_mask(&params[..d]);
}

/// One row of the forward map: writes y, returns the row's log-det.
/// Every slice is cut to the row's length first, so the loop has no bounds checks.
#[inline(always)]
fn forward_row<T: Real>(x: &[T], mask: &[T], s_raw: &[T], t: &[T], scale: &[T], y: &mut [T]) -> T {
    let d = y.len();
    let (x, mask, s_raw, t, scale) = (&x[..d], &mask[..d], &s_raw[..d], &t[..d], &scale[..d]);
    let mut logdet = T::zero();
    for j in 0..d {
        y[j] = if mask[j] == T::one() {
            x[j]
        } else {
            let s = scale[j] * s_raw[j].tanh_();
            logdet = logdet + s;
            x[j] * s.exp() + t[j]
        };
    }
    logdet
}

/// One row of the inverse map: writes x, returns the inverse's log-det (minus the forward's).
#[inline(always)]
fn inverse_row<T: Real>(y: &[T], mask: &[T], s_raw: &[T], t: &[T], scale: &[T], x: &mut [T]) -> T {
    let d = x.len();
    let (y, mask, s_raw, t, scale) = (&y[..d], &mask[..d], &s_raw[..d], &t[..d], &scale[..d]);
    let mut logdet = T::zero();
    for j in 0..d {
        x[j] = if mask[j] == T::one() {
            y[j]
        } else {
            let s = scale[j] * s_raw[j].tanh_();
            logdet = logdet + s;
            (y[j] - t[j]) * (-s).exp()
        };
    }
    -logdet
}

/// One row of backward: writes dx, ds_raw, dt and adds the row's share of dscale into `dscale`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_row<T: Real>(
    x: &[T],
    mask: &[T],
    s_raw: &[T],
    scale: &[T],
    dy: &[T],
    dlogdet: T,
    dx: &mut [T],
    ds_raw: &mut [T],
    dt: &mut [T],
    dscale: &mut [T],
) {
    let d = dx.len();
    let (x, mask, s_raw, scale, dy) = (&x[..d], &mask[..d], &s_raw[..d], &scale[..d], &dy[..d]);
    let (ds_raw, dt, dscale) = (&mut ds_raw[..d], &mut dt[..d], &mut dscale[..d]);
    for j in 0..d {
        if mask[j] == T::one() {
            dx[j] = dy[j];
            ds_raw[j] = T::zero();
            dt[j] = T::zero();
        } else {
            let th = s_raw[j].tanh_();
            let e = (scale[j] * th).exp();
            // y = x e^s + t, logdet += s;  s = scale · tanh(s_raw)
            let ds = dy[j] * x[j] * e + dlogdet;
            dx[j] = dy[j] * e;
            dt[j] = dy[j];
            ds_raw[j] = ds * scale[j] * (T::one() - th * th);
            dscale[j] = dscale[j] + ds * th;
        }
    }
}

type RowFn<T> = fn(&[T], &[T], &[T], &[T], &[T], &mut [T]) -> T;

/// Runs `row` (forward or inverse) over separate `[N, D]` slices and a `[N]` log-det.
#[allow(clippy::too_many_arguments)]
fn map_rows<T: Real>(
    n: usize,
    d: usize,
    input: &[T],
    mask: &[T],
    s_raw: &[T],
    t: &[T],
    scale: &[T],
    output: &mut [T],
    logdet: &mut [T],
    row: RowFn<T>,
) {
    let rows = [("input", input.len()), ("s_raw", s_raw.len()), ("t", t.len()), ("output", output.len())];
    check(n, d, &rows, &[("mask", mask.len()), ("scale", scale.len())], mask);
    expect_len("logdet", "[N]", logdet.len(), &[n]);
    if d == 0 {
        logdet.fill(T::zero());
        return;
    }
    let per = rows_per_part(n, d);
    output.par_chunks_mut(per * d).zip(logdet.par_chunks_mut(per)).enumerate().for_each(|(p, (out_p, ld_p))| {
        for (i, (out_r, ld)) in out_p.chunks_exact_mut(d).zip(ld_p).enumerate() {
            let r = (p * per + i) * d..(p * per + i + 1) * d;
            *ld = row(&input[r.clone()], mask, &s_raw[r.clone()], &t[r], scale, out_r);
        }
    });
}

/// Runs `row` (forward or inverse) in the packed layout: `out = [output | logdet]` `[N, D + 1]`.
fn map_rows_packed<T: Real>(n: usize, d: usize, input: &[T], st: &[T], params: &[T], out: &mut [T], row: RowFn<T>) {
    check_packed(n, d, input, st, params);
    let w = d + 1;
    expect_len("out", "[N, D + 1]", out.len(), &[n, w]);
    let (mask, scale) = params.split_at(d);
    let per = rows_per_part(n, d);
    out.par_chunks_mut(per * w).enumerate().for_each(|(p, out_p)| {
        for (i, out_r) in out_p.chunks_exact_mut(w).enumerate() {
            let r = p * per + i;
            let (out_r, ld) = out_r.split_at_mut(d);
            let st_r = &st[r * 2 * d..(r + 1) * 2 * d];
            ld[0] = row(&input[r * d..(r + 1) * d], mask, &st_r[..d], &st_r[d..], scale, out_r);
        }
    });
}

/// Sums per-part partial dscale vectors in part order (deterministic for a given thread count).
fn reduce_into<T: Real>(dscale: &mut [T], partials: Vec<Vec<T>>) {
    dscale.fill(T::zero());
    for part in partials {
        for (a, v) in dscale.iter_mut().zip(part) {
            *a = *a + v;
        }
    }
}

/// Forward map over `n` rows of `d`: writes `y [N, D]` and `logdet [N]`.
#[allow(clippy::too_many_arguments)]
pub fn coupling_forward<T: Real>(
    n: usize,
    d: usize,
    x: &[T],
    mask: &[T],
    s_raw: &[T],
    t: &[T],
    scale: &[T],
    y: &mut [T],
    logdet: &mut [T],
) {
    map_rows(n, d, x, mask, s_raw, t, scale, y, logdet, forward_row)
}

/// Inverse map: writes `x [N, D]` and the inverse's log-det `[N]` (minus the forward's).
#[allow(clippy::too_many_arguments)]
pub fn coupling_inverse<T: Real>(
    n: usize,
    d: usize,
    y: &[T],
    mask: &[T],
    s_raw: &[T],
    t: &[T],
    scale: &[T],
    x: &mut [T],
    logdet: &mut [T],
) {
    map_rows(n, d, y, mask, s_raw, t, scale, x, logdet, inverse_row)
}

/// Backward of [`coupling_forward`] given `dy [N, D]` and `dlogdet [N]`: overwrites `dx`, `ds_raw`,
/// `dt` `[N, D]` and `dscale [D]`. (t does not enter any gradient, so it is not an argument.)
#[allow(clippy::too_many_arguments)]
pub fn coupling_backward<T: Real>(
    n: usize,
    d: usize,
    x: &[T],
    mask: &[T],
    s_raw: &[T],
    scale: &[T],
    dy: &[T],
    dlogdet: &[T],
    dx: &mut [T],
    ds_raw: &mut [T],
    dt: &mut [T],
    dscale: &mut [T],
) {
    let rows = [("x", x.len()), ("s_raw", s_raw.len()), ("dy", dy.len()), ("dx", dx.len())];
    let rows = [rows.as_slice(), &[("ds_raw", ds_raw.len()), ("dt", dt.len())]].concat();
    let cols = [("mask", mask.len()), ("scale", scale.len()), ("dscale", dscale.len())];
    check(n, d, &rows, &cols, mask);
    expect_len("dlogdet", "[N]", dlogdet.len(), &[n]);
    if d == 0 {
        return;
    }
    let per = rows_per_part(n, d);
    let partials = dx
        .par_chunks_mut(per * d)
        .zip(ds_raw.par_chunks_mut(per * d).zip(dt.par_chunks_mut(per * d)))
        .enumerate()
        .map(|(p, (dx_p, (dsr_p, dt_p)))| {
            let mut acc = vec![T::zero(); d];
            let rows = dx_p.chunks_exact_mut(d).zip(dsr_p.chunks_exact_mut(d).zip(dt_p.chunks_exact_mut(d)));
            for (i, (dx_r, (dsr_r, dt_r))) in rows.enumerate() {
                let row = p * per + i;
                let r = row * d..(row + 1) * d;
                backward_row(
                    &x[r.clone()],
                    mask,
                    &s_raw[r.clone()],
                    scale,
                    &dy[r],
                    dlogdet[row],
                    dx_r,
                    dsr_r,
                    dt_r,
                    &mut acc,
                );
            }
            acc
        })
        .collect();
    reduce_into(dscale, partials);
}

/// [`coupling_forward`] in the packed layout: `st = [s_raw | t]` `[N, 2D]`, `params = [mask; scale]`
/// `[2, D]`; writes `out = [y | logdet]` `[N, D + 1]`.
pub fn coupling_forward_packed<T: Real>(n: usize, d: usize, x: &[T], st: &[T], params: &[T], out: &mut [T]) {
    map_rows_packed(n, d, x, st, params, out, forward_row)
}

/// [`coupling_inverse`] in the packed layout: writes `out = [x | −logdet]` `[N, D + 1]`.
pub fn coupling_inverse_packed<T: Real>(n: usize, d: usize, y: &[T], st: &[T], params: &[T], out: &mut [T]) {
    map_rows_packed(n, d, y, st, params, out, inverse_row)
}

/// [`coupling_backward`] in the packed layout: `grad = [dy | dlogdet]` `[N, D + 1]`; overwrites
/// `dx [N, D]`, `dst = [ds_raw | dt]` `[N, 2D]` and `dparams = [0; dscale]` `[2, D]` (the mask gets a
/// zero gradient).
#[allow(clippy::too_many_arguments)]
pub fn coupling_backward_packed<T: Real>(
    n: usize,
    d: usize,
    x: &[T],
    st: &[T],
    params: &[T],
    grad: &[T],
    dx: &mut [T],
    dst: &mut [T],
    dparams: &mut [T],
) {
    check_packed(n, d, x, st, params);
    let w = d + 1;
    expect_len("grad", "[N, D + 1]", grad.len(), &[n, w]);
    expect_len("dx", "[N, D]", dx.len(), &[n, d]);
    expect_len("dst", "[N, 2D]", dst.len(), &[n, 2 * d]);
    expect_len("dparams", "[2, D]", dparams.len(), &[2, d]);
    if d == 0 {
        return;
    }
    let (mask, scale) = params.split_at(d);
    let per = rows_per_part(n, d);
    let partials = dx
        .par_chunks_mut(per * d)
        .zip(dst.par_chunks_mut(per * 2 * d))
        .enumerate()
        .map(|(p, (dx_p, dst_p))| {
            let mut acc = vec![T::zero(); d];
            for (i, (dx_r, dst_r)) in dx_p.chunks_exact_mut(d).zip(dst_p.chunks_exact_mut(2 * d)).enumerate() {
                let row = p * per + i;
                let (dsr_r, dt_r) = dst_r.split_at_mut(d);
                let g = &grad[row * w..(row + 1) * w];
                let s_raw = &st[row * 2 * d..row * 2 * d + d];
                backward_row(
                    &x[row * d..(row + 1) * d],
                    mask,
                    s_raw,
                    scale,
                    &g[..d],
                    g[d],
                    dx_r,
                    dsr_r,
                    dt_r,
                    &mut acc,
                );
            }
            acc
        })
        .collect();
    let (dmask, dscale) = dparams.split_at_mut(d);
    dmask.fill(T::zero());
    reduce_into(dscale, partials);
}

/// Samples per second of [`coupling_forward`] + [`coupling_backward`] on `[n, d]` f32 inputs
/// (alternating mask), `reps` times on buffers allocated once, after one warm-up pass: the kernel's
/// own rate, for the benchmark.
pub fn bench_samples_per_sec(n: usize, d: usize, reps: usize) -> f64 {
    let val = |len: usize, k: usize| -> Vec<f32> { (0..len).map(|i| ((i * k) % 1999) as f32 / 1000.0 - 1.0).collect() };
    let (x, s, t, dy, dl, sc) = (val(n * d, 7), val(n * d, 11), val(n * d, 13), val(n * d, 17), val(n, 19), val(d, 23));
    let m: Vec<f32> = (0..d).map(|j| (j % 2) as f32).collect();
    let (mut y, mut ld) = (vec![0f32; n * d], vec![0f32; n]);
    let (mut dx, mut ds, mut dt, mut dsc) = (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d], vec![0f32; d]);
    let mut run = || {
        coupling_forward(n, d, &x, &m, &s, &t, &sc, &mut y, &mut ld);
        coupling_backward(n, d, &x, &m, &s, &sc, &dy, &dl, &mut dx, &mut ds, &mut dt, &mut dsc);
    };
    run();
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        run();
    }
    (reps * n) as f64 / t0.elapsed().as_secs_f64()
}
