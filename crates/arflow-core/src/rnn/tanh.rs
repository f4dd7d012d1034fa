//! The fused vanilla RNN layer (PyTorch `nn.RNN`, nonlinearity tanh) and its backward through time:
//! ```text
//! h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
//! ```
//! Nothing is saved beyond the output: tanh' = 1 − h'² comes from h' itself. The simplest recurrence,
//! and the one whose gradients vanish or explode fastest with the distance in time (Bengio et al. 1994).

use super::common::{
    avx2_dispatch, broadcast_rows, check, input_grad, input_projection, pack_w_hh, pack_w_hh_t, rows_per_part,
    weight_grads, Cols, GateGrads,
};
use super::{RnnDims, RnnGrads, RnnWeights};
use crate::real::Real;
use rayon::prelude::*;

#[inline(always)]
fn cell_impl<T: Real>(gi: &[T], gh: &[T], h_out: &mut [T]) {
    let h = h_out.len();
    let (gi, gh) = (&gi[..h], &gh[..h]);
    for j in 0..h {
        h_out[j] = (gi[j] + gh[j]).tanh_();
    }
}

/// `dg = (dy + dh) ⊙ (1 − h²)`: the gradient w.r.t. the pre-activation of one row.
#[inline(always)]
fn grad_impl<T: Real>(h_t: &[T], dy: &[T], dh: &[T], dg: &mut [T]) {
    let n = dg.len();
    let (h_t, dy, dh) = (&h_t[..n], &dy[..n], &dh[..n]);
    for j in 0..n {
        dg[j] = (dy[j] + dh[j]) * (T::one() - h_t[j] * h_t[j]);
    }
}

avx2_dispatch! {
    fn cell(gi: &[T], gh: &[T], h_out: &mut [T]) => cell_impl;
    fn grad(h_t: &[T], dy: &[T], dh: &[T], dg: &mut [T]) => grad_impl;
}

/// One step of one row, as the forward pass computes it (bit for bit): h' = tanh(gi + gh).
pub(crate) fn step_row<T: Real>(gi: &[T], gh: &[T], h_out: &mut [T]) {
    cell(gi, gh, h_out)
}

/// Runs the layer over the whole sequence from `h0 [B, H]`, writing `[B, T, H]` into `out`.
pub fn rnn_tanh_forward<T: Real>(dims: &RnnDims, x: &[T], h0: &[T], w: &RnnWeights<T>, out: &mut [T]) {
    check(dims, x, h0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    assert_eq!(out.len(), nb * nt * nh, "rnn: out must be [B, T, H]");
    if nb == 0 || nt == 0 {
        return;
    }
    let gi = input_projection(dims, x, w);
    let per = rows_per_part(nb, nh);
    let w_hh_t = pack_w_hh_t(dims, w);
    out.par_chunks_mut(per * nt * nh).enumerate().for_each(|(p, out_p)| {
        let (b0, nbp) = (p * per, out_p.len() / (nt * nh));
        let gi_p = &gi[b0 * nt * nh..(b0 + nbp) * nt * nh];
        let h0_p = &h0[b0 * nh..(b0 + nbp) * nh];
        let bias_hh = broadcast_rows(w.b_hh, nbp);
        let mut gh = vec![T::zero(); nbp * nh];
        for t in 0..nt {
            gh.copy_from_slice(&bias_hh);
            if t == 0 {
                T::packed_matmul(&w_hh_t, nbp, h0_p, nh, &mut gh, nh, true);
            } else {
                T::packed_matmul(&w_hh_t, nbp, &out_p[(t - 1) * nh..], nt * nh, &mut gh, nh, true);
            }
            for b in 0..nbp {
                let row = b * nt + t;
                cell(&gi_p[row * nh..(row + 1) * nh], &gh[b * nh..(b + 1) * nh], &mut out_p[row * nh..(row + 1) * nh]);
            }
        }
    });
}

/// Backward through time from dL/d(out) `[B, T, H]`: dL/dx, dL/dh0 and the packed parameter gradient.
pub fn rnn_tanh_backward<T: Real>(
    dims: &RnnDims,
    x: &[T],
    h0: &[T],
    w: &RnnWeights<T>,
    out: &[T],
    d_out: &[T],
) -> RnnGrads<T> {
    check(dims, x, h0, w);
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let rows = nb * nt;
    assert_eq!(out.len(), rows * nh, "rnn backward: out must be [B, T, H]");
    assert_eq!(d_out.len(), rows * nh, "rnn backward: d_out must be [B, T, H]");
    let mut dg = vec![T::zero(); rows * nh];
    // dh: dL/dh_t through step t+1, finally dL/dh0.
    let mut dh0 = vec![T::zero(); nb * nh];
    let per = rows_per_part(nb, nh);
    let w_hh = pack_w_hh(dims, w);
    dh0.par_chunks_mut(per * nh).zip(dg.par_chunks_mut(per * nt * nh)).enumerate().for_each(|(p, (dh, dg_p))| {
        let (b0, nbp) = (p * per, dh.len() / nh);
        let r = b0 * nt..(b0 + nbp) * nt;
        let (out_p, d_out_p) = (&out[r.start * nh..r.end * nh], &d_out[r.start * nh..r.end * nh]);
        for t in (0..nt).rev() {
            for b in 0..nbp {
                let row = b * nt + t;
                let cut = row * nh..(row + 1) * nh;
                grad(&out_p[cut.clone()], &d_out_p[cut.clone()], &dh[b * nh..(b + 1) * nh], &mut dg_p[cut]);
            }
            // dh_{t−1} = dg_t · W_hh
            T::packed_matmul(&w_hh, nbp, &dg_p[t * nh..], nt * nh, dh, nh, false);
        }
    });
    let all = Cols::all(nh);
    let dg = GateGrads { data: &dg, ld: nh, gi: &all, gh: &all };
    let dparams = weight_grads(dims, x, h0, out, &dg);
    let dx = input_grad(dims, &dg, w);
    RnnGrads { dx, dh0, dparams }
}
