//! The parts every recurrent cell shares: the all-steps input projection, the split of the batch across
//! threads, the weight and input gradients as whole-sequence GEMMs, and run-time AVX2 dispatch of the
//! fused elementwise passes.

use super::{RnnDims, RnnWeights};
use crate::gemm::{matmul, View};
use crate::real::Real;
use rayon::prelude::*;

/// Rows of work below this many elements run on one thread: rayon's fork/join costs more.
const PAR_MIN_ELEMS: usize = 4096;

/// Checks the slice sizes of a layer call against its dims (a caller bug, hence a panic).
pub fn check<T>(dims: &RnnDims, x: &[T], h0: &[T], w: &RnnWeights<T>) {
    let RnnDims { cell, batch: b, seq: t, input: i, hidden: h } = *dims;
    let (g, s) = (dims.gate_width(), dims.state_len());
    let name = cell.name();
    assert_eq!(x.len(), b * t * i, "{name}: x must be [B, T, I]");
    assert_eq!(h0.len(), b * s, "{name}: the initial state must be [B, {s}]");
    assert_eq!(w.w_ih.len(), g * i, "{name}: w_ih must be [{g}, I]");
    assert_eq!(w.w_hh.len(), g * h, "{name}: w_hh must be [{g}, H]");
    assert_eq!(w.b_ih.len(), g, "{name}: b_ih must be [{g}]");
    assert_eq!(w.b_hh.len(), g, "{name}: b_hh must be [{g}]");
}

/// `rows × cols` matrix whose every row is `bias`.
pub fn broadcast_rows<T: Real>(bias: &[T], rows: usize) -> Vec<T> {
    let mut m = Vec::with_capacity(rows * bias.len());
    for _ in 0..rows {
        m.extend_from_slice(bias);
    }
    m
}

/// `c (+)= a · B` for many rows (all time steps at once), the rows split across the kernel threads.
#[allow(clippy::too_many_arguments)]
pub fn par_packed_matmul<T: Real>(
    b: &T::Packed,
    m: usize,
    a: &[T],
    lda: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    let per = m.div_ceil(rayon::current_num_threads().max(1)).max(1);
    c[..m * ldc].par_chunks_mut(per * ldc).enumerate().for_each(|(p, c_p)| {
        let rows = c_p.len() / ldc;
        T::packed_matmul(b, rows, &a[p * per * lda..], lda, c_p, ldc, accumulate);
    });
}

/// Batch rows per thread for the recurrent loops: one slice per kernel thread when the work is big
/// enough to pay for a thread, else the whole batch on one. The recurrence of each batch element is
/// independent, so each thread runs its slice's whole time loop with no per-step synchronisation.
pub fn rows_per_part(nb: usize, nh: usize) -> usize {
    let threads = rayon::current_num_threads().min(nb).max(1);
    let parts = if nb * nh >= PAR_MIN_ELEMS { threads } else { 1 };
    nb.div_ceil(parts)
}

/// The input projection of every step at once: `gi = x · W_ihᵀ + b_ih`, `[B·T, G·H]`.
pub fn input_projection<T: Real>(dims: &RnnDims, x: &[T], w: &RnnWeights<T>) -> Vec<T> {
    let (rows, g, ni) = (dims.batch * dims.seq, dims.gate_width(), dims.input);
    let mut gi = broadcast_rows(w.b_ih, rows);
    par_packed_matmul(&T::pack(ni, g, w.w_ih, 1, ni), rows, x, ni, &mut gi, g, true);
    gi
}

/// `W_hhᵀ [H, G·H]` packed once for the forward recurrence, shared by every thread and step.
pub fn pack_w_hh_t<T: Real>(dims: &RnnDims, w: &RnnWeights<T>) -> T::Packed {
    T::pack(dims.hidden, dims.gate_width(), w.w_hh, 1, dims.hidden)
}

/// `W_hh [G·H, H]` packed for backward's `dh_{t−1} = dg_t · W_hh`.
pub fn pack_w_hh<T: Real>(dims: &RnnDims, w: &RnnWeights<T>) -> T::Packed {
    T::pack(dims.gate_width(), dims.hidden, w.w_hh, dims.hidden, 1)
}

/// The hidden state entering every position, `[B·T, H]`: h0 at t = 0, else the previous output's h
/// (the first H values of each `state_len`-wide row of `out` and `h0`).
fn h_prev_rows<T: Real>(dims: &RnnDims, h0: &[T], out: &[T]) -> Vec<T> {
    let RnnDims { batch: nb, seq: nt, hidden: nh, .. } = *dims;
    let s = dims.state_len();
    let mut h_prev = vec![T::zero(); nb * nt * nh];
    for b in 0..nb {
        for t in 0..nt {
            let src =
                if t == 0 { &h0[b * s..b * s + nh] } else { &out[(b * nt + t - 1) * s..(b * nt + t - 1) * s + nh] };
            h_prev[(b * nt + t) * nh..(b * nt + t + 1) * nh].copy_from_slice(src);
        }
    }
    h_prev
}

/// The packed parameter gradient from the per-position gate gradients: `dgi` w.r.t. the input
/// projection and `dgh` w.r.t. the hidden one (`None`: the same as `dgi`, true for every cell whose
/// gates add the two projections before any nonlinearity). Single GEMMs over all B·T positions:
/// `dW_ih = dgiᵀ · x`, `dW_hh = dghᵀ · h_prev`, `db_ih = Σ dgi`, `db_hh = Σ dgh`.
pub fn weight_grads<T: Real>(dims: &RnnDims, x: &[T], h0: &[T], out: &[T], dgi: &[T], dgh: Option<&[T]>) -> Vec<T> {
    let (rows, g, ni, nh) = (dims.batch * dims.seq, dims.gate_width(), dims.input, dims.hidden);
    let dgh = dgh.unwrap_or(dgi);
    let mut dparams = vec![T::zero(); dims.param_len()];
    let (dw_ih, rest) = dparams.split_at_mut(g * ni);
    let (dw_hh, rest) = rest.split_at_mut(g * nh);
    let (db_ih, db_hh) = rest.split_at_mut(g);
    matmul(g, ni, rows, dw_ih, ni, false, View::transposed(dgi, g), View::rows(x, ni));
    let h_prev = h_prev_rows(dims, h0, out);
    matmul(g, nh, rows, dw_hh, nh, false, View::transposed(dgh, g), View::rows(&h_prev, nh));
    for (gi_row, gh_row) in dgi.chunks_exact(g).zip(dgh.chunks_exact(g)) {
        for (d, &v) in db_ih.iter_mut().zip(gi_row) {
            *d = *d + v;
        }
        for (d, &v) in db_hh.iter_mut().zip(gh_row) {
            *d = *d + v;
        }
    }
    dparams
}

/// `dx = dgi · W_ih`, `[B·T, G·H] · [G·H, I]`.
pub fn input_grad<T: Real>(dims: &RnnDims, dgi: &[T], w: &RnnWeights<T>) -> Vec<T> {
    let (rows, g, ni) = (dims.batch * dims.seq, dims.gate_width(), dims.input);
    let mut dx = vec![T::zero(); rows * ni];
    par_packed_matmul(&T::pack(g, ni, w.w_ih, ni, 1), rows, dgi, g, &mut dx, ni, false);
    dx
}

/// Whether the CPU has AVX2 and FMA (checked once by std, then cached).
#[cfg(target_arch = "x86_64")]
pub fn avx2_available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Defines `fn $name<T: Real>(args)` that runs `$imp` (an `#[inline(always)]` elementwise pass) through a
/// copy compiled for AVX2 + FMA when the CPU has them: the portable build targets baseline x86-64 (SSE2).
macro_rules! avx2_dispatch {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $imp:ident;)*) => {$(
        #[inline]
        fn $name<T: $crate::real::Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast<T: $crate::real::Real>($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                if $crate::rnn::common::avx2_available() {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { fast($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    )*};
}
pub(crate) use avx2_dispatch;
