//! The fused GRU layer: forward over a whole sequence and its hand-written backward through time.
//!
//! PyTorch `nn.GRU` semantics, gate order (r, z, n):
//! ```text
//! r  = σ(W_ir x + b_ir + W_hr h + b_hr)
//! z  = σ(W_iz x + b_iz + W_hz h + b_hz)
//! n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//! Layout is batch-first: `x` is `[B, T, I]`, the output `[B, T, H]`, both row-major, so row `b·T + t`
//! of a `[B·T, ·]` matrix is batch element `b` at time `t`. Weights are PyTorch's: `w_ih [3H, I]`,
//! `w_hh [3H, H]`, `b_ih [3H]`, `b_hh [3H]`.
//!
//! Forward: one GEMM projects the inputs of all T steps; each step is one GEMM `h·W_hhᵀ` and one fused
//! elementwise pass that writes h' and saves `[r, z, n, W_hn h + b_hn]` (4H per row) for backward.
//! Backward walks t = T−1 … 0 with one fused pass for the gate gradients and one GEMM for dh_{t−1};
//! weight gradients are single GEMMs over all steps at the end.

use crate::gemm::{matmul, View};
use crate::real::{sigmoid, Real};
use rayon::prelude::*;

/// Sizes of one GRU layer applied to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruDims {
    pub batch: usize,
    pub seq: usize,
    pub input: usize,
    pub hidden: usize,
}

impl GruDims {
    /// Length of the packed parameter vector `[w_ih, w_hh, b_ih, b_hh]`.
    pub fn param_len(&self) -> usize {
        let g = 3 * self.hidden;
        g * self.input + g * self.hidden + 2 * g
    }
}

/// One layer's parameters, borrowed from a packed `[w_ih, w_hh, b_ih, b_hh]` vector.
#[derive(Clone, Copy)]
pub struct GruWeights<'a, T> {
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    pub b_ih: &'a [T],
    pub b_hh: &'a [T],
}

impl<'a, T> GruWeights<'a, T> {
    pub fn unpack(dims: &GruDims, packed: &'a [T]) -> Self {
        let g = 3 * dims.hidden;
        let (w_ih, rest) = packed.split_at(g * dims.input);
        let (w_hh, rest) = rest.split_at(g * dims.hidden);
        let (b_ih, b_hh) = rest.split_at(g);
        GruWeights { w_ih, w_hh, b_ih, b_hh: &b_hh[..g] }
    }
}

/// Gradients of one layer, the parameter part packed like the parameters.
pub struct GruGrads<T> {
    pub dx: Vec<T>,
    pub dh0: Vec<T>,
    pub dparams: Vec<T>,
}

/// Rows of work below this many elements run on one thread: rayon's fork/join costs more.
const PAR_MIN_ELEMS: usize = 4096;

fn check(dims: &GruDims, x: &[impl Sized], h0: &[impl Sized], w: &GruWeights<impl Sized>) {
    let GruDims { batch: b, seq: t, input: i, hidden: h } = *dims;
    assert_eq!(x.len(), b * t * i, "gru: x must be [B, T, I]");
    assert_eq!(h0.len(), b * h, "gru: h0 must be [B, H]");
    assert_eq!(w.w_ih.len(), 3 * h * i, "gru: w_ih must be [3H, I]");
    assert_eq!(w.w_hh.len(), 3 * h * h, "gru: w_hh must be [3H, H]");
    assert_eq!(w.b_ih.len(), 3 * h, "gru: b_ih must be [3H]");
    assert_eq!(w.b_hh.len(), 3 * h, "gru: b_hh must be [3H]");
}

/// One fused GRU cell over a row: `gi` and `gh` hold the two projections (with biases), `h_prev` the
/// previous state. Writes h' into `h_out` and, when given, `[r, z, n, hn]` into `save`.
/// Every slice is cut to its exact length first, so the loop has no bounds checks and vectorises.
#[inline(always)]
fn cell_impl<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: Option<&mut [T]>) {
    let h = h_out.len();
    let (gi_r, gi_z, gi_n) = (&gi[..h], &gi[h..2 * h], &gi[2 * h..3 * h]);
    let (gh_r, gh_z, gh_n) = (&gh[..h], &gh[h..2 * h], &gh[2 * h..3 * h]);
    let h_prev = &h_prev[..h];
    match save {
        Some(save) => {
            let (s_r, s) = save[..4 * h].split_at_mut(h);
            let (s_z, s) = s.split_at_mut(h);
            let (s_n, s_hn) = s.split_at_mut(h);
            for j in 0..h {
                let r = sigmoid(gi_r[j] + gh_r[j]);
                let z = sigmoid(gi_z[j] + gh_z[j]);
                let hn = gh_n[j];
                let n = (gi_n[j] + r * hn).tanh_();
                h_out[j] = (T::one() - z) * n + z * h_prev[j];
                s_r[j] = r;
                s_z[j] = z;
                s_n[j] = n;
                s_hn[j] = hn;
            }
        }
        None => {
            for j in 0..h {
                let r = sigmoid(gi_r[j] + gh_r[j]);
                let z = sigmoid(gi_z[j] + gh_z[j]);
                let n = (gi_n[j] + r * gh_n[j]).tanh_();
                h_out[j] = (T::one() - z) * n + z * h_prev[j];
            }
        }
    }
}

/// Gate gradients of one row at one step (see [`gru_backward`]); `dh` enters as dL/dh_t from above
/// and from step t+1, and leaves holding the direct path dL/dh_{t−1} = dL/dh_t ⊙ z.
#[inline(always)]
fn gate_grads_impl<T: Real>(saved: &[T], h_prev: &[T], dy: &[T], dh: &mut [T], dgi: &mut [T], dgh: &mut [T]) {
    let h = dh.len();
    let (r, z, n, hn) = (&saved[..h], &saved[h..2 * h], &saved[2 * h..3 * h], &saved[3 * h..4 * h]);
    let (h_prev, dy) = (&h_prev[..h], &dy[..h]);
    let (dgi_r, rest) = dgi[..3 * h].split_at_mut(h);
    let (dgi_z, dgi_n) = rest.split_at_mut(h);
    let (dgh_r, rest) = dgh[..3 * h].split_at_mut(h);
    let (dgh_z, dgh_n) = rest.split_at_mut(h);
    for j in 0..h {
        let dht = dy[j] + dh[j];
        // h' = (1 − z) n + z h
        let dn = dht * (T::one() - z[j]);
        let dz = dht * (h_prev[j] - n[j]);
        // n = tanh(a_n), a_n = gi_n + r ⊙ hn;  r, z = σ(a_r), σ(a_z)
        let da_n = dn * (T::one() - n[j] * n[j]);
        let da_r = da_n * hn[j] * r[j] * (T::one() - r[j]);
        let da_z = dz * z[j] * (T::one() - z[j]);
        dgi_r[j] = da_r;
        dgi_z[j] = da_z;
        dgi_n[j] = da_n;
        dgh_r[j] = da_r;
        dgh_z[j] = da_z;
        dgh_n[j] = da_n * r[j];
        dh[j] = dht * z[j];
    }
}

/// The portable build targets baseline x86-64 (SSE2); these copies of the elementwise passes are
/// compiled for AVX2 + FMA and chosen at run time when the CPU has them.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn cell<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: Option<&mut [T]>) {
        cell_impl(gi, gh, h_prev, h_out, save)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gate_grads<T: Real>(saved: &[T], h_prev: &[T], dy: &[T], dh: &mut [T], dgi: &mut [T], dgh: &mut [T]) {
        gate_grads_impl(saved, h_prev, dy, dh, dgi, dgh)
    }

    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
}

#[inline]
fn cell<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: Option<&mut [T]>) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { avx2::cell(gi, gh, h_prev, h_out, save) };
    }
    cell_impl(gi, gh, h_prev, h_out, save)
}

#[inline]
fn gate_grads<T: Real>(saved: &[T], h_prev: &[T], dy: &[T], dh: &mut [T], dgi: &mut [T], dgh: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { avx2::gate_grads(saved, h_prev, dy, dh, dgi, dgh) };
    }
    gate_grads_impl(saved, h_prev, dy, dh, dgi, dgh)
}

/// `rows × cols` matrix whose every row is `bias`.
fn broadcast_rows<T: Real>(bias: &[T], rows: usize) -> Vec<T> {
    let mut m = Vec::with_capacity(rows * bias.len());
    for _ in 0..rows {
        m.extend_from_slice(bias);
    }
    m
}

/// Runs the layer over the whole sequence. Writes `[B, T, H]` into `out`; when `save` is given it is
/// filled with `[B·T, 4H]` activations for [`gru_backward`].
pub fn gru_forward<T: Real>(
    dims: &GruDims,
    x: &[T],
    h0: &[T],
    w: &GruWeights<T>,
    out: &mut [T],
    mut save: Option<&mut Vec<T>>,
) {
    check(dims, x, h0, w);
    let GruDims { batch: nb, seq: nt, input: ni, hidden: nh } = *dims;
    let g = 3 * nh;
    assert_eq!(out.len(), nb * nt * nh, "gru: out must be [B, T, H]");
    if nb == 0 || nt == 0 {
        return;
    }
    // Input projection of every step at once: gi = x · W_ihᵀ + b_ih, [B·T, 3H].
    let mut gi = broadcast_rows(w.b_ih, nb * nt);
    par_packed_matmul(&T::pack(ni, g, w.w_ih, 1, ni), nb * nt, x, ni, &mut gi, g, true);
    if let Some(s) = save.as_deref_mut() {
        s.clear();
        s.resize(nb * nt * 4 * nh, T::zero());
    }
    // The recurrence is independent per batch element: each thread takes a slice of the batch and runs
    // its whole time loop with serial GEMMs, so there is no fork/join per time step.
    let per = rows_per_part(nb, nh);
    // W_hhᵀ [H, 3H], packed once and shared by every thread and step.
    let w_hh_t = T::pack(nh, g, w.w_hh, 1, nh);
    let run = |p: usize, out_p: &mut [T], save_p: Option<&mut [T]>| {
        let (b0, nbp) = (p * per, out_p.len() / (nt * nh));
        let gi_p = &gi[b0 * nt * g..(b0 + nbp) * nt * g];
        recur_forward(nbp, nt, nh, gi_p, &h0[b0 * nh..(b0 + nbp) * nh], &w_hh_t, w.b_hh, out_p, save_p);
    };
    match save {
        Some(s) => out
            .par_chunks_mut(per * nt * nh)
            .zip(s.par_chunks_mut(per * nt * 4 * nh))
            .enumerate()
            .for_each(|(p, (o, s))| run(p, o, Some(s))),
        None => out.par_chunks_mut(per * nt * nh).enumerate().for_each(|(p, o)| run(p, o, None)),
    }
}

/// `c (+)= a · B` for many rows (all time steps at once), the rows split across the kernel threads.
#[allow(clippy::too_many_arguments)]
fn par_packed_matmul<T: Real>(b: &T::Packed, m: usize, a: &[T], lda: usize, c: &mut [T], ldc: usize, accumulate: bool) {
    let per = m.div_ceil(rayon::current_num_threads().max(1)).max(1);
    c[..m * ldc].par_chunks_mut(per * ldc).enumerate().for_each(|(p, c_p)| {
        let rows = c_p.len() / ldc;
        T::packed_matmul(b, rows, &a[p * per * lda..], lda, c_p, ldc, accumulate);
    });
}

/// Batch rows per thread for the recurrent loops: one slice per kernel thread when the work is big
/// enough to pay for a thread, else the whole batch on one.
fn rows_per_part(nb: usize, nh: usize) -> usize {
    let threads = rayon::current_num_threads().min(nb).max(1);
    let parts = if nb * nh >= PAR_MIN_ELEMS { threads } else { 1 };
    nb.div_ceil(parts)
}

/// The time loop of the forward pass over `nb` batch rows: `gi` `[nb·T, 3H]` (input projections with
/// b_ih), `out` `[nb, T, H]`, `save` `[nb·T, 4H]`.
#[allow(clippy::too_many_arguments)]
fn recur_forward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    gi: &[T],
    h0: &[T],
    w_hh_t: &T::Packed,
    b_hh: &[T],
    out: &mut [T],
    mut save: Option<&mut [T]>,
) {
    let g = 3 * nh;
    let bias_hh = broadcast_rows(b_hh, nb);
    let mut gh = vec![T::zero(); nb * g];
    for t in 0..nt {
        // gh = h_{t−1} · W_hhᵀ + b_hh, reading h_{t−1} in place from the output (row stride T·H).
        gh.copy_from_slice(&bias_hh);
        if t == 0 {
            T::packed_matmul(w_hh_t, nb, h0, nh, &mut gh, g, true);
        } else {
            T::packed_matmul(w_hh_t, nb, &out[(t - 1) * nh..], nt * nh, &mut gh, g, true);
        }
        for b in 0..nb {
            let row = b * nt + t;
            let out_b = &mut out[b * nt * nh..(b + 1) * nt * nh];
            let (before, now) = out_b.split_at_mut(t * nh);
            let h_prev = if t == 0 { &h0[b * nh..(b + 1) * nh] } else { &before[(t - 1) * nh..] };
            let save_row = save.as_deref_mut().map(|s| &mut s[row * 4 * nh..(row + 1) * 4 * nh]);
            cell(&gi[row * g..(row + 1) * g], &gh[b * g..(b + 1) * g], h_prev, &mut now[..nh], save_row);
        }
    }
}

/// The time loop of backward over `nb` batch rows (t = T−1 … 0): fills the gate gradients `dgi`, `dgh`
/// `[nb·T, 3H]` and leaves dL/dh0 in `dh` `[nb, H]`.
#[allow(clippy::too_many_arguments)]
fn recur_backward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    h0: &[T],
    w_hh: &T::Packed,
    out: &[T],
    saved: &[T],
    d_out: &[T],
    dh: &mut [T],
    dgi: &mut [T],
    dgh: &mut [T],
) {
    let g = 3 * nh;
    for t in (0..nt).rev() {
        for b in 0..nb {
            let row = b * nt + t;
            let h_prev = if t == 0 { &h0[b * nh..(b + 1) * nh] } else { &out[(row - 1) * nh..row * nh] };
            gate_grads(
                &saved[row * 4 * nh..(row + 1) * 4 * nh],
                h_prev,
                &d_out[row * nh..(row + 1) * nh],
                &mut dh[b * nh..(b + 1) * nh],
                &mut dgi[row * g..(row + 1) * g],
                &mut dgh[row * g..(row + 1) * g],
            );
        }
        // dh_{t−1} += dgh_t · W_hh   ([nb, 3H] · [3H, H]); dgh_t's rows are T·3H apart.
        T::packed_matmul(w_hh, nb, &dgh[t * g..], nt * g, dh, nh, true);
    }
}

/// Backward through time. `out` and `saved` are what [`gru_forward`] produced, `d_out` is dL/d(out)
/// `[B, T, H]` (including the gradient reaching the final state). Returns dL/dx, dL/dh0 and the packed
/// parameter gradient.
pub fn gru_backward<T: Real>(
    dims: &GruDims,
    x: &[T],
    h0: &[T],
    w: &GruWeights<T>,
    out: &[T],
    saved: &[T],
    d_out: &[T],
) -> GruGrads<T> {
    check(dims, x, h0, w);
    let GruDims { batch: nb, seq: nt, input: ni, hidden: nh } = *dims;
    let g = 3 * nh;
    let rows = nb * nt;
    assert_eq!(out.len(), rows * nh, "gru backward: out must be [B, T, H]");
    assert_eq!(d_out.len(), rows * nh, "gru backward: d_out must be [B, T, H]");
    assert_eq!(saved.len(), rows * 4 * nh, "gru backward: saved activations have the wrong size");

    // Gate gradients of every step, rows b·T + t: w.r.t. the input projection (da_r, da_z, da_n) and
    // w.r.t. the hidden projection (da_r, da_z, r ⊙ da_n).
    let mut dgi = vec![T::zero(); rows * g];
    let mut dgh = vec![T::zero(); rows * g];
    // dh carried from step t+1 to step t: dL/dh_t through everything after t.
    let mut dh = vec![T::zero(); nb * nh];
    let per = rows_per_part(nb, nh);
    let w_hh = T::pack(g, nh, w.w_hh, nh, 1);
    dh.par_chunks_mut(per * nh)
        .zip(dgi.par_chunks_mut(per * nt * g).zip(dgh.par_chunks_mut(per * nt * g)))
        .enumerate()
        .for_each(|(p, (dh_p, (dgi_p, dgh_p)))| {
            let (b0, nbp) = (p * per, dh_p.len() / nh);
            let rows = b0 * nt..(b0 + nbp) * nt;
            recur_backward(
                nbp,
                nt,
                nh,
                &h0[b0 * nh..(b0 + nbp) * nh],
                &w_hh,
                &out[rows.start * nh..rows.end * nh],
                &saved[rows.start * 4 * nh..rows.end * 4 * nh],
                &d_out[rows.start * nh..rows.end * nh],
                dh_p,
                dgi_p,
                dgh_p,
            );
        });

    let mut dparams = vec![T::zero(); dims.param_len()];
    {
        let (dw_ih, rest) = dparams.split_at_mut(g * ni);
        let (dw_hh, rest) = rest.split_at_mut(g * nh);
        let (db_ih, db_hh) = rest.split_at_mut(g);
        // dW_ih = dgiᵀ · x   ([3H, B·T] · [B·T, I])
        matmul(g, ni, rows, dw_ih, ni, false, View::transposed(&dgi, g), View::rows(x, ni));
        // dW_hh = dghᵀ · h_prev, with h_prev the output shifted one step and h0 in front.
        let mut h_prev = vec![T::zero(); rows * nh];
        for b in 0..nb {
            h_prev[b * nt * nh..(b * nt + 1) * nh].copy_from_slice(&h0[b * nh..(b + 1) * nh]);
            if nt > 1 {
                h_prev[(b * nt + 1) * nh..(b + 1) * nt * nh]
                    .copy_from_slice(&out[b * nt * nh..((b + 1) * nt - 1) * nh]);
            }
        }
        matmul(g, nh, rows, dw_hh, nh, false, View::transposed(&dgh, g), View::rows(&h_prev, nh));
        for (gi_row, gh_row) in dgi.chunks_exact(g).zip(dgh.chunks_exact(g)) {
            for (d, &v) in db_ih.iter_mut().zip(gi_row) {
                *d = *d + v;
            }
            for (d, &v) in db_hh.iter_mut().zip(gh_row) {
                *d = *d + v;
            }
        }
    }
    // dx = dgi · W_ih   ([B·T, 3H] · [3H, I])
    let mut dx = vec![T::zero(); rows * ni];
    par_packed_matmul(&T::pack(g, ni, w.w_ih, ni, 1), rows, &dgi, g, &mut dx, ni, false);
    GruGrads { dx, dh0: dh, dparams }
}
