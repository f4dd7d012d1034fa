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
    let mut gi = vec![T::zero(); dims.batch * dims.seq * dims.gate_width()];
    input_projection_into(dims, x, w, &mut gi, dims.gate_width());
    gi
}

/// [`input_projection`] written into the first G·H columns of `dst`, whose rows are `ld` apart: the
/// cells that save activations project straight into the buffer the gates then overwrite.
pub fn input_projection_into<T: Real>(dims: &RnnDims, x: &[T], w: &RnnWeights<T>, dst: &mut [T], ld: usize) {
    let (rows, g, ni) = (dims.batch * dims.seq, dims.gate_width(), dims.input);
    for row in dst[..rows * ld].chunks_exact_mut(ld) {
        row[..g].copy_from_slice(w.b_ih);
    }
    par_packed_matmul(&T::pack(ni, g, w.w_ih, 1, ni), rows, x, ni, dst, ld, true);
}

/// `W_hhᵀ [H, G·H]` packed once for the forward recurrence, shared by every thread and step.
pub fn pack_w_hh_t<T: Real>(dims: &RnnDims, w: &RnnWeights<T>) -> T::Packed {
    T::pack(dims.hidden, dims.gate_width(), w.w_hh, 1, dims.hidden)
}

/// `W_hh [G·H, H]` packed for backward's `dh_{t−1} = dg_t · W_hh`.
pub fn pack_w_hh<T: Real>(dims: &RnnDims, w: &RnnWeights<T>) -> T::Packed {
    T::pack(dims.gate_width(), dims.hidden, w.w_hh, dims.hidden, 1)
}

/// `width` columns of a gate-gradient matrix, starting at column `col`, that are the gradient of the
/// gate rows `gate .. gate + width` of a weight matrix.
#[derive(Clone, Copy, Debug)]
pub struct Cols {
    pub col: usize,
    pub gate: usize,
    pub width: usize,
}

impl Cols {
    /// All G·H gate rows, in order, from column 0.
    pub fn all(width: usize) -> [Cols; 1] {
        [Cols { col: 0, gate: 0, width }]
    }
}

/// The per-position gate gradients of a layer, `[B·T, ld]` (rows b·T + t): the columns that are the
/// gradient w.r.t. the input projection (`gi`) and w.r.t. the hidden projection (`gh`). The two are
/// the same columns for every cell whose gates add both projections before any nonlinearity; the GRU's
/// n gate differs. Backward writes them over the saved activations, so `ld` is the saved width.
pub struct GateGrads<'a, T> {
    pub data: &'a [T],
    pub ld: usize,
    pub gi: &'a [Cols],
    pub gh: &'a [Cols],
}

/// The packed parameter gradient, single GEMMs over all B·T positions: `dW_ih = dgiᵀ · x`,
/// `dW_hh = dghᵀ · h_prev`, `db_ih = Σ dgi`, `db_hh = Σ dgh`.
///
/// h_prev (h0 at t = 0, else the previous output's h) is never materialised: one GEMM pairs dg rows
/// 1 .. B·T with output rows 0 .. B·T − 1, which is h_prev everywhere except at t = 0, where batch
/// element b ≥ 1 met the last h of element b − 1. One small GEMM over the t = 0 rows adds
/// `dg_{b,0}ᵀ · (h0_b − that h)` (h0_0 for b = 0, which the first GEMM never saw).
pub fn weight_grads<T: Real>(dims: &RnnDims, x: &[T], h0: &[T], out: &[T], dg: &GateGrads<T>) -> Vec<T> {
    let RnnDims { batch: nb, seq: nt, input: ni, hidden: nh, .. } = *dims;
    let (rows, g, s, ld) = (nb * nt, dims.gate_width(), dims.state_len(), dg.ld);
    let mut dparams = vec![T::zero(); dims.param_len()];
    if rows == 0 {
        return dparams;
    }
    let (dw_ih, rest) = dparams.split_at_mut(g * ni);
    let (dw_hh, rest) = rest.split_at_mut(g * nh);
    let (db_ih, db_hh) = rest.split_at_mut(g);
    for c in dg.gi {
        let a = View::transposed(&dg.data[c.col..], ld);
        matmul(c.width, ni, rows, &mut dw_ih[c.gate * ni..], ni, false, a, View::rows(x, ni));
    }
    let mut delta = vec![T::zero(); nb * nh];
    for (b, d) in delta.chunks_exact_mut(nh).enumerate() {
        d.copy_from_slice(&h0[b * s..b * s + nh]);
        if b > 0 {
            let last = &out[(b * nt - 1) * s..(b * nt - 1) * s + nh];
            for (d, &o) in d.iter_mut().zip(last) {
                *d = *d - o;
            }
        }
    }
    for c in dg.gh {
        let dw = &mut dw_hh[c.gate * nh..];
        if rows > 1 {
            let a = View::transposed(&dg.data[ld + c.col..], ld);
            matmul(c.width, nh, rows - 1, dw, nh, false, a, View::rows(out, s));
        }
        let a0 = View::transposed(&dg.data[c.col..], nt * ld);
        matmul(c.width, nh, nb, dw, nh, rows > 1, a0, View::rows(&delta, nh));
    }
    for row in dg.data[..rows * ld].chunks_exact(ld) {
        for (cols, db) in [(dg.gi, &mut *db_ih), (dg.gh, &mut *db_hh)] {
            for c in cols {
                for (d, &v) in db[c.gate..c.gate + c.width].iter_mut().zip(&row[c.col..c.col + c.width]) {
                    *d = *d + v;
                }
            }
        }
    }
    dparams
}

/// `dx = dgi · W_ih`, `[B·T, G·H] · [G·H, I]`, one product per block of columns.
pub fn input_grad<T: Real>(dims: &RnnDims, dg: &GateGrads<T>, w: &RnnWeights<T>) -> Vec<T> {
    let (rows, ni) = (dims.batch * dims.seq, dims.input);
    let mut dx = vec![T::zero(); rows * ni];
    for (k, c) in dg.gi.iter().enumerate() {
        let w_c = T::pack(c.width, ni, &w.w_ih[c.gate * ni..], ni, 1);
        par_packed_matmul(&w_c, rows, &dg.data[c.col..], dg.ld, &mut dx, ni, k > 0);
    }
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
