//! The fused LSTM layer: forward over a whole sequence and its hand-written backward through time.
//!
//! PyTorch `nn.LSTM` semantics, gate order (i, f, g, o):
//! ```text
//! i  = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
//! g  = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
//! c' = f ⊙ c + i ⊙ g                         h' = o ⊙ tanh(c')
//! ```
//! The state is (h, c): the initial state is `[B, 2H]` and the output `[B, T, 2H]`, each row h_t then
//! c_t, so the cell states reach backward (and a final c reaches the caller) without a second output.
//! Forward saves `[i, f, g, o]` (4H per position); tanh(c_t) is recomputed in backward from the c_t of
//! the output. Backward walks t = T−1 … 0: one fused pass for the four gate gradients (the same w.r.t.
//! both projections, which are added before any nonlinearity) and one GEMM for dh_{t−1}.
//!
//! Memory: the saved buffer is the only `[B·T, ·]` scratch of a training pass. Forward projects the
//! inputs into it and each cell overwrites its row with the gates; backward overwrites each row with
//! its gate gradients, which the weight gradients then read in place.

use super::common::{
    avx2_dispatch, broadcast_rows, check, input_grad, input_projection_into, pack_w_hh, pack_w_hh_t, rows_per_part,
    weight_grads, Cols, GateGrads,
};
use super::{RnnDims, RnnGrads, RnnWeights};
use crate::real::{sigmoid, Real};
use rayon::prelude::*;

/// One fused LSTM cell over a row: `row [4H]` enters holding the input projection (with b_ih) and
/// leaves holding the gates `[i, f, g, o]` (each position is read before it is written); `gh` is the
/// hidden projection (with b_hh), `c_prev` the previous cell state. Writes (h', c') into `hc_out`.
#[inline(always)]
fn cell_impl<T: Real>(row: &mut [T], gh: &[T], c_prev: &[T], hc_out: &mut [T]) {
    let h = c_prev.len();
    let (h_out, c_out) = hc_out[..2 * h].split_at_mut(h);
    let (s_i, s) = row[..4 * h].split_at_mut(h);
    let (s_f, s) = s.split_at_mut(h);
    let (s_g, s_o) = s.split_at_mut(h);
    let gh = &gh[..4 * h];
    for j in 0..h {
        let i = sigmoid(s_i[j] + gh[j]);
        let f = sigmoid(s_f[j] + gh[h + j]);
        let g = (s_g[j] + gh[2 * h + j]).tanh_();
        let o = sigmoid(s_o[j] + gh[3 * h + j]);
        let c = f * c_prev[j] + i * g;
        c_out[j] = c;
        h_out[j] = o * c.tanh_();
        s_i[j] = i;
        s_f[j] = f;
        s_g[j] = g;
        s_o[j] = o;
    }
}

/// Gate gradients of one row at one step. `row [4H]` enters holding the saved gates and leaves holding
/// (da_i, da_f, da_g, da_o); `dy` is dL/d(h_t, c_t) from above, `dh_next` dL/dh_t through step t+1,
/// `dc` enters as dL/dc_t through step t+1 and leaves as dL/dc_{t−1}.
#[inline(always)]
fn gate_grads_impl<T: Real>(row: &mut [T], c: &[T], c_prev: &[T], dy: &[T], dh_next: &[T], dc: &mut [T]) {
    let h = dc.len();
    let (s_i, s) = row[..4 * h].split_at_mut(h);
    let (s_f, s) = s.split_at_mut(h);
    let (s_g, s_o) = s.split_at_mut(h);
    let (c, c_prev, dy, dh_next) = (&c[..h], &c_prev[..h], &dy[..2 * h], &dh_next[..h]);
    let one = T::one();
    for j in 0..h {
        let (i, f, g, o) = (s_i[j], s_f[j], s_g[j], s_o[j]);
        let tc = c[j].tanh_();
        let dht = dy[j] + dh_next[j];
        // h' = o ⊙ tanh(c'): the cell state receives dh' through tanh.
        let dct = dy[h + j] + dc[j] + dht * o * (one - tc * tc);
        s_o[j] = dht * tc * o * (one - o);
        // c' = f ⊙ c + i ⊙ g
        s_i[j] = dct * g * i * (one - i);
        s_f[j] = dct * c_prev[j] * f * (one - f);
        s_g[j] = dct * i * (one - g * g);
        dc[j] = dct * f;
    }
}

avx2_dispatch! {
    fn cell(row: &mut [T], gh: &[T], c_prev: &[T], hc_out: &mut [T]) => cell_impl;
    fn gate_grads(row: &mut [T], c: &[T], c_prev: &[T], dy: &[T], dh_next: &[T], dc: &mut [T]) => gate_grads_impl;
}

/// One step of one row, as the forward pass computes it (bit for bit): (h', c') into `hc_out [2H]`
/// from the projections `gi`, `gh` (biases included) and `c_prev`; `scratch [4H]` receives the gates.
pub(crate) fn step_row<T: Real>(gi: &[T], gh: &[T], c_prev: &[T], hc_out: &mut [T], scratch: &mut [T]) {
    scratch[..gi.len()].copy_from_slice(gi);
    cell(scratch, gh, c_prev, hc_out)
}

/// Runs the layer over the whole sequence from `s0 [B, 2H]` (h0 then c0 per row). Writes
/// `[B, T, 2H]` into `out`; when `save` is given it is filled with `[B·T, 4H]` gates for backward.
pub fn lstm_forward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    s0: &[T],
    w: &RnnWeights<T>,
    out: &mut [T],
    save: Option<&mut Vec<T>>,
) {
    check(dims, x, s0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let (g, s) = (4 * nh, 2 * nh);
    assert_eq!(out.len(), nb * nt * s, "lstm: out must be [B, T, 2H]");
    if nb == 0 || nt == 0 {
        return;
    }
    // Input projection of every step at once, gi = x · W_ihᵀ + b_ih, `[B·T, 4H]`: the saved buffer when
    // backward will want the gates, else a scratch buffer; the cells overwrite each row with its gates.
    let mut scratch = Vec::new();
    let gates = save.unwrap_or(&mut scratch);
    gates.clear();
    gates.resize(nb * nt * g, T::zero());
    input_projection_into(dims, x, w, gates, g);
    let per = rows_per_part(nb, nh);
    let w_hh_t = pack_w_hh_t(dims, w);
    out.par_chunks_mut(per * nt * s).zip(gates.par_chunks_mut(per * nt * g)).enumerate().for_each(|(p, (o, gt))| {
        let (b0, nbp) = (p * per, o.len() / (nt * s));
        recur_forward(nbp, nt, nh, gt, &s0[b0 * s..(b0 + nbp) * s], &w_hh_t, w.b_hh, o);
    });
}

/// The time loop of the forward pass over `nb` batch rows: `gates` `[nb·T, 4H]` enter as the input
/// projections and leave as the gates, `s0` `[nb, 2H]`, `out` `[nb, T, 2H]`.
#[allow(clippy::too_many_arguments)]
fn recur_forward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    gates: &mut [T],
    s0: &[T],
    w_hh_t: &T::Packed,
    b_hh: &[T],
    out: &mut [T],
) {
    let (g, s) = (4 * nh, 2 * nh);
    let bias_hh = broadcast_rows(b_hh, nb);
    let mut gh = vec![T::zero(); nb * g];
    for t in 0..nt {
        // gh = h_{t−1} · W_hhᵀ + b_hh, reading h_{t−1} in place (row stride T·2H in the output).
        gh.copy_from_slice(&bias_hh);
        if t == 0 {
            T::packed_matmul(w_hh_t, nb, s0, s, &mut gh, g, true);
        } else {
            T::packed_matmul(w_hh_t, nb, &out[(t - 1) * s..], nt * s, &mut gh, g, true);
        }
        for b in 0..nb {
            let row = b * nt + t;
            let (before, now) = out[b * nt * s..(b + 1) * nt * s].split_at_mut(t * s);
            let c_prev = if t == 0 { &s0[b * s + nh..(b + 1) * s] } else { &before[(t - 1) * s + nh..t * s] };
            cell(&mut gates[row * g..(row + 1) * g], &gh[b * g..(b + 1) * g], c_prev, &mut now[..s]);
        }
    }
}

/// The time loop of backward over `nb` batch rows (t = T−1 … 0): overwrites the saved gates
/// `[nb·T, 4H]` with their gradients and leaves dL/d(h0, c0) in `ds` `[nb, 2H]`.
#[allow(clippy::too_many_arguments)]
fn recur_backward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    s0: &[T],
    w_hh: &T::Packed,
    out: &[T],
    saved: &mut [T],
    d_out: &[T],
    ds: &mut [T],
) {
    let (g, s) = (4 * nh, 2 * nh);
    // dL/dh_t through step t+1 (h reaches the next step only through W_hh); dc lives in ds's c half.
    let mut dh = vec![T::zero(); nb * nh];
    for t in (0..nt).rev() {
        for b in 0..nb {
            let row = b * nt + t;
            let c_prev = if t == 0 { &s0[b * s + nh..(b + 1) * s] } else { &out[(row - 1) * s + nh..row * s] };
            gate_grads(
                &mut saved[row * g..(row + 1) * g],
                &out[row * s + nh..(row + 1) * s],
                c_prev,
                &d_out[row * s..(row + 1) * s],
                &dh[b * nh..(b + 1) * nh],
                &mut ds[b * s + nh..(b + 1) * s],
            );
        }
        // dh_{t−1} = dg_t · W_hh   ([nb, 4H] · [4H, H]); dg_t's rows are T·4H apart.
        T::packed_matmul(w_hh, nb, &saved[t * g..], nt * g, &mut dh, nh, false);
    }
    for b in 0..nb {
        ds[b * s..b * s + nh].copy_from_slice(&dh[b * nh..(b + 1) * nh]);
    }
}

/// Backward through time. `out` and `saved` are what [`lstm_forward`] produced, `d_out` is
/// dL/d(out) `[B, T, 2H]` (h and c parts). Returns dL/dx, dL/d(h0, c0) `[B, 2H]` and the packed
/// parameter gradient; `saved` is used up (overwritten with the gate gradients).
pub fn lstm_backward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    s0: &[T],
    w: &RnnWeights<T>,
    out: &[T],
    saved: &mut [T],
    d_out: &[T],
) -> RnnGrads<T> {
    check(dims, x, s0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let (g, s, rows) = (4 * nh, 2 * nh, nb * nt);
    assert_eq!(out.len(), rows * s, "lstm backward: out must be [B, T, 2H]");
    assert_eq!(d_out.len(), rows * s, "lstm backward: d_out must be [B, T, 2H]");
    assert_eq!(saved.len(), rows * g, "lstm backward: saved activations have the wrong size");
    let mut ds0 = vec![T::zero(); nb * s];
    let per = rows_per_part(nb, nh);
    let w_hh = pack_w_hh(dims, w);
    ds0.par_chunks_mut(per * s).zip(saved.par_chunks_mut(per * nt * g)).enumerate().for_each(|(p, (ds_p, sv_p))| {
        let (b0, nbp) = (p * per, ds_p.len() / s);
        let r = b0 * nt..(b0 + nbp) * nt;
        recur_backward(
            nbp,
            nt,
            nh,
            &s0[b0 * s..(b0 + nbp) * s],
            &w_hh,
            &out[r.start * s..r.end * s],
            sv_p,
            &d_out[r.start * s..r.end * s],
            ds_p,
        );
    });
    let all = Cols::all(g);
    let dg = GateGrads { data: saved, ld: g, gi: &all, gh: &all };
    let dparams = weight_grads(dims, x, s0, out, &dg);
    let dx = input_grad(dims, &dg, w);
    RnnGrads { dx, dh0: ds0, dparams }
}
