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
//!
//! Memory: the saved buffer is the only `[B·T, ·]` scratch of a training pass. Forward projects the
//! inputs into it (gi in the first 3H of each row) and each cell overwrites its row with what backward
//! needs; backward overwrites each row with its gate gradients `[da_r, da_z, r ⊙ da_n, da_n]` (the
//! first 3H are the gradient w.r.t. the hidden projection, columns 0..2H and 3H..4H the one w.r.t. the
//! input projection), which the weight gradients then read in place.

use super::common::{
    avx2_dispatch, broadcast_rows, check, input_grad, input_projection, input_projection_into, pack_w_hh, pack_w_hh_t,
    rows_per_part, weight_grads, Cols, GateGrads,
};
use super::{RnnDims, RnnGrads, RnnWeights};
use crate::real::{sigmoid, Real};
use rayon::prelude::*;

/// One fused GRU cell over a row: `gi` and `gh` hold the two projections (with biases), `h_prev` the
/// previous state. Writes h' into `h_out`. Every slice is cut to its exact length first, so the loop has
/// no bounds checks and vectorises.
#[inline(always)]
fn cell_impl<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T]) {
    let h = h_out.len();
    let (gi_r, gi_z, gi_n) = (&gi[..h], &gi[h..2 * h], &gi[2 * h..3 * h]);
    let (gh_r, gh_z, gh_n) = (&gh[..h], &gh[h..2 * h], &gh[2 * h..3 * h]);
    let h_prev = &h_prev[..h];
    for j in 0..h {
        let r = sigmoid(gi_r[j] + gh_r[j]);
        let z = sigmoid(gi_z[j] + gh_z[j]);
        let n = (gi_n[j] + r * gh_n[j]).tanh_();
        h_out[j] = (T::one() - z) * n + z * h_prev[j];
    }
}

/// The same cell, bit for bit, for a pass that keeps activations: `row [4H]` enters holding gi in its
/// first 3H and leaves holding `[r, z, n, hn]` (each position is read before it is written).
#[inline(always)]
fn cell_saving_impl<T: Real>(row: &mut [T], gh: &[T], h_prev: &[T], h_out: &mut [T]) {
    let h = h_out.len();
    let (s_r, s) = row[..4 * h].split_at_mut(h);
    let (s_z, s) = s.split_at_mut(h);
    let (s_n, s_hn) = s.split_at_mut(h);
    let (gh_r, gh_z, gh_n) = (&gh[..h], &gh[h..2 * h], &gh[2 * h..3 * h]);
    let h_prev = &h_prev[..h];
    for j in 0..h {
        let r = sigmoid(s_r[j] + gh_r[j]);
        let z = sigmoid(s_z[j] + gh_z[j]);
        let hn = gh_n[j];
        let n = (s_n[j] + r * hn).tanh_();
        h_out[j] = (T::one() - z) * n + z * h_prev[j];
        s_r[j] = r;
        s_z[j] = z;
        s_n[j] = n;
        s_hn[j] = hn;
    }
}

/// Gate gradients of one row at one step (see [`gru_backward`]): `row [4H]` enters holding the saved
/// `[r, z, n, hn]` and leaves holding `[da_r, da_z, r ⊙ da_n, da_n]`; `dh` enters as dL/dh_t from above
/// and from step t+1, and leaves holding the direct path dL/dh_{t−1} = dL/dh_t ⊙ z.
#[inline(always)]
fn gate_grads_impl<T: Real>(row: &mut [T], h_prev: &[T], dy: &[T], dh: &mut [T]) {
    let h = dh.len();
    let (s_r, s) = row[..4 * h].split_at_mut(h);
    let (s_z, s) = s.split_at_mut(h);
    let (s_n, s_hn) = s.split_at_mut(h);
    let (h_prev, dy) = (&h_prev[..h], &dy[..h]);
    for j in 0..h {
        let (r, z, n, hn) = (s_r[j], s_z[j], s_n[j], s_hn[j]);
        let dht = dy[j] + dh[j];
        // h' = (1 − z) n + z h
        let dn = dht * (T::one() - z);
        let dz = dht * (h_prev[j] - n);
        // n = tanh(a_n), a_n = gi_n + r ⊙ hn;  r, z = σ(a_r), σ(a_z)
        let da_n = dn * (T::one() - n * n);
        s_r[j] = da_n * hn * r * (T::one() - r);
        s_z[j] = dz * z * (T::one() - z);
        s_n[j] = da_n * r;
        s_hn[j] = da_n;
        dh[j] = dht * z;
    }
}

avx2_dispatch! {
    fn cell(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T]) => cell_impl;
    fn cell_saving(row: &mut [T], gh: &[T], h_prev: &[T], h_out: &mut [T]) => cell_saving_impl;
    fn gate_grads(row: &mut [T], h_prev: &[T], dy: &[T], dh: &mut [T]) => gate_grads_impl;
}

/// One step of one row, as the forward pass computes it (the same fused pass, bit for bit): h' into
/// `h_out` from the projections `gi`, `gh` (biases included) and `h_prev`. The sampling step's cell.
pub(crate) fn step_row<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T]) {
    cell(gi, gh, h_prev, h_out)
}

/// Where a forward time loop finds its input projections: a buffer of its own, or the rows of the
/// saved buffer that its cells overwrite.
enum Gates<'a, T> {
    Plain(&'a [T]),
    Saving(&'a mut [T]),
}

/// Runs the layer over the whole sequence. Writes `[B, T, H]` into `out`; when `save` is given it is
/// filled with `[B·T, 4H]` activations for [`gru_backward`].
pub fn gru_forward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &mut [T],
    save: Option<&mut Vec<T>>,
) {
    check(dims, x, h0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let g = 3 * nh;
    assert_eq!(out.len(), nb * nt * nh, "gru: out must be [B, T, H]");
    if nb == 0 || nt == 0 {
        return;
    }
    // The recurrence is independent per batch element: each thread takes a slice of the batch and runs
    // its whole time loop with serial GEMMs, so there is no fork/join per time step.
    let per = rows_per_part(nb, nh);
    let w_hh_t = pack_w_hh_t(dims, w);
    let run = |p: usize, out_p: &mut [T], gates: Gates<T>| {
        let b0 = p * per;
        let nbp = out_p.len() / (nt * nh);
        recur_forward(nbp, nt, nh, gates, &h0[b0 * nh..(b0 + nbp) * nh], &w_hh_t, w.b_hh, out_p);
    };
    match save {
        Some(s) => {
            // Input projection of every step at once, gi = x · W_ihᵀ + b_ih, into the saved rows.
            s.clear();
            s.resize(nb * nt * 4 * nh, T::zero());
            input_projection_into(dims, x, w, s, 4 * nh);
            out.par_chunks_mut(per * nt * nh)
                .zip(s.par_chunks_mut(per * nt * 4 * nh))
                .enumerate()
                .for_each(|(p, (o, s))| run(p, o, Gates::Saving(s)))
        }
        None => {
            let gi = input_projection(dims, x, w);
            out.par_chunks_mut(per * nt * nh).enumerate().for_each(|(p, o)| {
                let rows = p * per * nt..p * per * nt + o.len() / nh;
                run(p, o, Gates::Plain(&gi[rows.start * g..rows.end * g]))
            })
        }
    }
}

/// The time loop of the forward pass over `nb` batch rows: `gates` `[nb·T, 3H]` (input projections
/// with b_ih) or `[nb·T, 4H]` (the same in the first 3H, overwritten with the saved activations),
/// `out` `[nb, T, H]`.
#[allow(clippy::too_many_arguments)]
fn recur_forward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    mut gates: Gates<T>,
    h0: &[T],
    w_hh_t: &T::Packed,
    b_hh: &[T],
    out: &mut [T],
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
            let gh_b = &gh[b * g..(b + 1) * g];
            match &mut gates {
                Gates::Plain(gi) => cell(&gi[row * g..(row + 1) * g], gh_b, h_prev, &mut now[..nh]),
                Gates::Saving(s) => cell_saving(&mut s[row * 4 * nh..(row + 1) * 4 * nh], gh_b, h_prev, &mut now[..nh]),
            }
        }
    }
}

/// The time loop of backward over `nb` batch rows (t = T−1 … 0): overwrites the saved rows
/// `[nb·T, 4H]` with the gate gradients and leaves dL/dh0 in `dh` `[nb, H]`.
#[allow(clippy::too_many_arguments)]
fn recur_backward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    h0: &[T],
    w_hh: &T::Packed,
    out: &[T],
    saved: &mut [T],
    d_out: &[T],
    dh: &mut [T],
) {
    let w4 = 4 * nh;
    for t in (0..nt).rev() {
        for b in 0..nb {
            let row = b * nt + t;
            let h_prev = if t == 0 { &h0[b * nh..(b + 1) * nh] } else { &out[(row - 1) * nh..row * nh] };
            gate_grads(
                &mut saved[row * w4..(row + 1) * w4],
                h_prev,
                &d_out[row * nh..(row + 1) * nh],
                &mut dh[b * nh..(b + 1) * nh],
            );
        }
        // dh_{t−1} += dgh_t · W_hh   ([nb, 3H] · [3H, H]); dgh_t is the first 3H of rows T·4H apart.
        T::packed_matmul(w_hh, nb, &saved[t * w4..], nt * w4, dh, nh, true);
    }
}

/// Backward through time. `out` and `saved` are what [`gru_forward`] produced, `d_out` is dL/d(out)
/// `[B, T, H]` (including the gradient reaching the final state). Returns dL/dx, dL/dh0 and the packed
/// parameter gradient; `saved` is used up (overwritten with the gate gradients).
pub fn gru_backward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &[T],
    saved: &mut [T],
    d_out: &[T],
) -> RnnGrads<T> {
    check(dims, x, h0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let (rows, w4) = (nb * nt, 4 * nh);
    assert_eq!(out.len(), rows * nh, "gru backward: out must be [B, T, H]");
    assert_eq!(d_out.len(), rows * nh, "gru backward: d_out must be [B, T, H]");
    assert_eq!(saved.len(), rows * w4, "gru backward: saved activations have the wrong size");

    // dh carried from step t+1 to step t: dL/dh_t through everything after t.
    let mut dh = vec![T::zero(); nb * nh];
    let per = rows_per_part(nb, nh);
    let w_hh = pack_w_hh(dims, w);
    dh.par_chunks_mut(per * nh).zip(saved.par_chunks_mut(per * nt * w4)).enumerate().for_each(|(p, (dh_p, s_p))| {
        let (b0, nbp) = (p * per, dh_p.len() / nh);
        let rows = b0 * nt..(b0 + nbp) * nt;
        recur_backward(
            nbp,
            nt,
            nh,
            &h0[b0 * nh..(b0 + nbp) * nh],
            &w_hh,
            &out[rows.start * nh..rows.end * nh],
            s_p,
            &d_out[rows.start * nh..rows.end * nh],
            dh_p,
        );
    });

    // W.r.t. the input projection: (da_r, da_z) then da_n; w.r.t. the hidden one: (da_r, da_z, r ⊙ da_n).
    let gi = [Cols { col: 0, gate: 0, width: 2 * nh }, Cols { col: 3 * nh, gate: 2 * nh, width: nh }];
    let dg = GateGrads { data: saved, ld: w4, gi: &gi, gh: &Cols::all(3 * nh) };
    let dparams = weight_grads(dims, x, h0, out, &dg);
    let dx = input_grad(dims, &dg, w);
    RnnGrads { dx, dh0: dh, dparams }
}
