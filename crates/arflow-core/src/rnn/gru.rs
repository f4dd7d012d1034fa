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
//! weight gradients are single GEMMs over all steps at the end ([`super::common`]).

use super::common::{
    avx2_dispatch, broadcast_rows, check, input_grad, input_projection, pack_w_hh, pack_w_hh_t, rows_per_part,
    weight_grads,
};
use super::{RnnDims, RnnGrads, RnnWeights};
use crate::real::{sigmoid, Real};
use rayon::prelude::*;

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

avx2_dispatch! {
    fn cell(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: Option<&mut [T]>) => cell_impl;
    fn gate_grads(saved: &[T], h_prev: &[T], dy: &[T], dh: &mut [T], dgi: &mut [T], dgh: &mut [T]) => gate_grads_impl;
}

/// One step of one row, as the forward pass computes it (the same fused pass, bit for bit): h' into
/// `h_out` from the projections `gi`, `gh` (biases included) and `h_prev`. The sampling step's cell.
pub(crate) fn step_row<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T]) {
    cell(gi, gh, h_prev, h_out, None)
}

/// Runs the layer over the whole sequence. Writes `[B, T, H]` into `out`; when `save` is given it is
/// filled with `[B·T, 4H]` activations for [`gru_backward`].
pub fn gru_forward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &mut [T],
    mut save: Option<&mut Vec<T>>,
) {
    check(dims, x, h0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let g = 3 * nh;
    assert_eq!(out.len(), nb * nt * nh, "gru: out must be [B, T, H]");
    if nb == 0 || nt == 0 {
        return;
    }
    // Input projection of every step at once: gi = x · W_ihᵀ + b_ih, [B·T, 3H].
    let gi = input_projection(dims, x, w);
    if let Some(s) = save.as_deref_mut() {
        s.clear();
        s.resize(nb * nt * 4 * nh, T::zero());
    }
    // The recurrence is independent per batch element: each thread takes a slice of the batch and runs
    // its whole time loop with serial GEMMs, so there is no fork/join per time step.
    let per = rows_per_part(nb, nh);
    let w_hh_t = pack_w_hh_t(dims, w);
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
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &[T],
    saved: &[T],
    d_out: &[T],
) -> RnnGrads<T> {
    check(dims, x, h0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
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
    let w_hh = pack_w_hh(dims, w);
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

    let dparams = weight_grads(dims, x, h0, out, &dgi, Some(&dgh));
    let dx = input_grad(dims, &dgi, w);
    RnnGrads { dx, dh0: dh, dparams }
}
