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

use super::common::{
    avx2_dispatch, broadcast_rows, check, input_grad, input_projection, pack_w_hh, pack_w_hh_t, rows_per_part,
    weight_grads,
};
use super::{RnnDims, RnnGrads, RnnWeights};
use crate::real::{sigmoid, Real};
use rayon::prelude::*;

/// One fused LSTM cell over a row: `gi`, `gh` the two projections (with biases), `c_prev` the previous
/// cell state. Writes (h', c') into `hc_out` and `[i, f, g, o]` into `save`.
#[inline(always)]
fn cell_impl<T: Real>(gi: &[T], gh: &[T], c_prev: &[T], hc_out: &mut [T], save: &mut [T]) {
    let h = c_prev.len();
    let (h_out, c_out) = hc_out[..2 * h].split_at_mut(h);
    let (s_i, s) = save[..4 * h].split_at_mut(h);
    let (s_f, s) = s.split_at_mut(h);
    let (s_g, s_o) = s.split_at_mut(h);
    let (gi, gh) = (&gi[..4 * h], &gh[..4 * h]);
    for j in 0..h {
        let i = sigmoid(gi[j] + gh[j]);
        let f = sigmoid(gi[h + j] + gh[h + j]);
        let g = (gi[2 * h + j] + gh[2 * h + j]).tanh_();
        let o = sigmoid(gi[3 * h + j] + gh[3 * h + j]);
        let c = f * c_prev[j] + i * g;
        c_out[j] = c;
        h_out[j] = o * c.tanh_();
        s_i[j] = i;
        s_f[j] = f;
        s_g[j] = g;
        s_o[j] = o;
    }
}

/// Gate gradients of one row at one step. `dy` is dL/d(h_t, c_t) from above, `dh_next` dL/dh_t through
/// step t+1, `dc` enters as dL/dc_t through step t+1 and leaves as dL/dc_{t−1}; `dg` receives
/// (da_i, da_f, da_g, da_o).
#[inline(always)]
fn gate_grads_impl<T: Real>(saved: &[T], c: &[T], c_prev: &[T], dy: &[T], dh_next: &[T], dc: &mut [T], dg: &mut [T]) {
    let h = dc.len();
    let (i, f, g, o) = (&saved[..h], &saved[h..2 * h], &saved[2 * h..3 * h], &saved[3 * h..4 * h]);
    let (c, c_prev, dy, dh_next) = (&c[..h], &c_prev[..h], &dy[..2 * h], &dh_next[..h]);
    let (dg_i, rest) = dg[..4 * h].split_at_mut(h);
    let (dg_f, rest) = rest.split_at_mut(h);
    let (dg_g, dg_o) = rest.split_at_mut(h);
    let one = T::one();
    for j in 0..h {
        let tc = c[j].tanh_();
        let dht = dy[j] + dh_next[j];
        // h' = o ⊙ tanh(c'): the cell state receives dh' through tanh.
        let dct = dy[h + j] + dc[j] + dht * o[j] * (one - tc * tc);
        dg_o[j] = dht * tc * o[j] * (one - o[j]);
        // c' = f ⊙ c + i ⊙ g
        dg_i[j] = dct * g[j] * i[j] * (one - i[j]);
        dg_f[j] = dct * c_prev[j] * f[j] * (one - f[j]);
        dg_g[j] = dct * i[j] * (one - g[j] * g[j]);
        dc[j] = dct * f[j];
    }
}

avx2_dispatch! {
    fn cell(gi: &[T], gh: &[T], c_prev: &[T], hc_out: &mut [T], save: &mut [T]) => cell_impl;
    fn gate_grads(saved: &[T], c: &[T], c_prev: &[T], dy: &[T], dh_next: &[T], dc: &mut [T], dg: &mut [T]) => gate_grads_impl;
}

/// One step of one row, as the forward pass computes it (bit for bit): (h', c') into `hc_out [2H]`
/// from the projections `gi`, `gh` (biases included) and `c_prev`; `scratch [4H]` receives the gates.
pub(crate) fn step_row<T: Real>(gi: &[T], gh: &[T], c_prev: &[T], hc_out: &mut [T], scratch: &mut [T]) {
    cell(gi, gh, c_prev, hc_out, scratch)
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
    let gi = input_projection(dims, x, w);
    let per = rows_per_part(nb, nh);
    let w_hh_t = pack_w_hh_t(dims, w);
    let run = |p: usize, out_p: &mut [T], save_p: Option<&mut [T]>| {
        let (b0, nbp) = (p * per, out_p.len() / (nt * s));
        let gi_p = &gi[b0 * nt * g..(b0 + nbp) * nt * g];
        recur_forward(nbp, nt, nh, gi_p, &s0[b0 * s..(b0 + nbp) * s], &w_hh_t, w.b_hh, out_p, save_p);
    };
    match save {
        Some(sv) => {
            sv.clear();
            sv.resize(nb * nt * 4 * nh, T::zero());
            out.par_chunks_mut(per * nt * s)
                .zip(sv.par_chunks_mut(per * nt * 4 * nh))
                .enumerate()
                .for_each(|(p, (o, sv))| run(p, o, Some(sv)))
        }
        None => out.par_chunks_mut(per * nt * s).enumerate().for_each(|(p, o)| run(p, o, None)),
    }
}

/// The time loop of the forward pass over `nb` batch rows: `gi` `[nb·T, 4H]`, `s0` `[nb, 2H]`,
/// `out` `[nb, T, 2H]`, `save` `[nb·T, 4H]` (a scratch row stands in when no save is wanted).
#[allow(clippy::too_many_arguments)]
fn recur_forward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    gi: &[T],
    s0: &[T],
    w_hh_t: &T::Packed,
    b_hh: &[T],
    out: &mut [T],
    mut save: Option<&mut [T]>,
) {
    let (g, s) = (4 * nh, 2 * nh);
    let bias_hh = broadcast_rows(b_hh, nb);
    let mut gh = vec![T::zero(); nb * g];
    let mut scratch = vec![T::zero(); 4 * nh];
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
            let save_row = match save.as_deref_mut() {
                Some(sv) => &mut sv[row * 4 * nh..(row + 1) * 4 * nh],
                None => &mut scratch[..],
            };
            cell(&gi[row * g..(row + 1) * g], &gh[b * g..(b + 1) * g], c_prev, &mut now[..s], save_row);
        }
    }
}

/// The time loop of backward over `nb` batch rows (t = T−1 … 0): fills the gate gradients `dg`
/// `[nb·T, 4H]` and leaves dL/d(h0, c0) in `ds` `[nb, 2H]`.
#[allow(clippy::too_many_arguments)]
fn recur_backward<T: Real>(
    nb: usize,
    nt: usize,
    nh: usize,
    s0: &[T],
    w_hh: &T::Packed,
    out: &[T],
    saved: &[T],
    d_out: &[T],
    ds: &mut [T],
    dg: &mut [T],
) {
    let (g, s) = (4 * nh, 2 * nh);
    // dL/dh_t through step t+1 (h reaches the next step only through W_hh); dc lives in ds's c half.
    let mut dh = vec![T::zero(); nb * nh];
    for t in (0..nt).rev() {
        for b in 0..nb {
            let row = b * nt + t;
            let c_prev = if t == 0 { &s0[b * s + nh..(b + 1) * s] } else { &out[(row - 1) * s + nh..row * s] };
            gate_grads(
                &saved[row * 4 * nh..(row + 1) * 4 * nh],
                &out[row * s + nh..(row + 1) * s],
                c_prev,
                &d_out[row * s..(row + 1) * s],
                &dh[b * nh..(b + 1) * nh],
                &mut ds[b * s + nh..(b + 1) * s],
                &mut dg[row * g..(row + 1) * g],
            );
        }
        // dh_{t−1} = dg_t · W_hh   ([nb, 4H] · [4H, H]); dg_t's rows are T·4H apart.
        T::packed_matmul(w_hh, nb, &dg[t * g..], nt * g, &mut dh, nh, false);
    }
    for b in 0..nb {
        ds[b * s..b * s + nh].copy_from_slice(&dh[b * nh..(b + 1) * nh]);
    }
}

/// Backward through time. `out` and `saved` are what [`lstm_forward`] produced, `d_out` is
/// dL/d(out) `[B, T, 2H]` (h and c parts). Returns dL/dx, dL/d(h0, c0) `[B, 2H]` and the packed
/// parameter gradient.
pub fn lstm_backward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    s0: &[T],
    w: &RnnWeights<T>,
    out: &[T],
    saved: &[T],
    d_out: &[T],
) -> RnnGrads<T> {
    check(dims, x, s0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let (g, s, rows) = (4 * nh, 2 * nh, nb * nt);
    assert_eq!(out.len(), rows * s, "lstm backward: out must be [B, T, 2H]");
    assert_eq!(d_out.len(), rows * s, "lstm backward: d_out must be [B, T, 2H]");
    assert_eq!(saved.len(), rows * 4 * nh, "lstm backward: saved activations have the wrong size");
    let mut dg = vec![T::zero(); rows * g];
    let mut ds0 = vec![T::zero(); nb * s];
    let per = rows_per_part(nb, nh);
    let w_hh = pack_w_hh(dims, w);
    ds0.par_chunks_mut(per * s).zip(dg.par_chunks_mut(per * nt * g)).enumerate().for_each(|(p, (ds_p, dg_p))| {
        let (b0, nbp) = (p * per, ds_p.len() / s);
        let r = b0 * nt..(b0 + nbp) * nt;
        recur_backward(
            nbp,
            nt,
            nh,
            &s0[b0 * s..(b0 + nbp) * s],
            &w_hh,
            &out[r.start * s..r.end * s],
            &saved[r.start * 4 * nh..r.end * 4 * nh],
            &d_out[r.start * s..r.end * s],
            ds_p,
            dg_p,
        );
    });
    let dparams = weight_grads(dims, x, s0, out, &dg, None);
    let dx = input_grad(dims, &dg, w);
    RnnGrads { dx, dh0: ds0, dparams }
}
