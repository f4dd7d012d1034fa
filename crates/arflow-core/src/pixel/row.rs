//! One row layer (Row LSTM or Row GRU) over whole images, its hand-written backward through the rows,
//! and the candle op that wraps both (one op per layer).
//!
//! Forward, for a batch of B images (maps padded as described in [`super`]):
//! - the input-to-state convolution of every position at once: one GEMM over the padded map,
//!   `gis [B·R·(C+2), G·H] = window₂(y_pad) · W_is₂ + b_is + E[label]`, `W_is₂ [2H, G·H]` the two
//!   taps mask B keeps;
//! - rows i = 0 … R−1 in order, per image: `ss [C, G·H] = window₃(h_pad_{i−1}) · W_ss₃ + b_ss`, one GEMM
//!   `[C, 3H] · [3H, G·H]` off a weight packed once, then one fused gate pass over the row that writes
//!   h_i (, c_i), `y = h + y_in`, and the gates backward needs. Images are independent, so each thread
//!   takes a slice of the batch and runs its whole row loop with no synchronisation per row.
//!
//! Backward walks i = R−1 … 0 per image: one fused pass for the gate gradients of the row and one GEMM
//! for dL/dh_{i−1} through the state-to-state convolution, itself a window GEMM over the padded gate
//! gradients: `dh_{i−1} = window₃(dss_pad) · W_ss₃ᵀ` with the taps reversed (`[3·G·H, H]`). The weight
//! gradients are whole-map GEMMs at the end, `dW_is₂ = window₂(y_pad)ᵀ · dgis`, `dW_ss₃ =
//! window₃(h_pad_prev)ᵀ · dss`, and dL/dy_in = dOut (the residual) + `window₂(dgis_pad) · W_is₂ᵀ`.
//!
//! Saved per position: LSTM `[i, f, g, o]`, GRU `[r, z, n, ss_n]` (4H), the cell states (LSTM), and the
//! map of previous-row states h_{i−1} (padded), which the recurrence writes as it goes.

use super::{contiguous, host, pad_rows, Saved, MASK_B_TAPS};
use crate::gemm::{matmul, View};
use crate::real::{sigmoid, Real};
use crate::rnn::common::{avx2_dispatch, broadcast_rows, par_packed_matmul, rows_per_part};
use crate::rnn::CellKind;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Taps of the 1×3 kernel.
pub const ROW_KERNEL: usize = 3;

/// Sizes of one row layer applied to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowDims {
    /// [`CellKind::Lstm`] or [`CellKind::Gru`].
    pub cell: CellKind,
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub hidden: usize,
    /// Classes K of the label bias, 0 without conditioning.
    pub classes: usize,
}

impl RowDims {
    /// G·H, gate pre-activations per position.
    pub fn gate_width(&self) -> usize {
        self.cell.gates() * self.hidden
    }

    /// Values of the packed parameters `[w_is, b_is, w_ss, b_ss, label_bias]`.
    pub fn param_len(&self) -> usize {
        let g = self.gate_width();
        2 * g * self.hidden * ROW_KERNEL + 2 * g + self.classes * g
    }

    /// Rows of a padded map: B·R image rows of C + 2 positions.
    fn padded(&self) -> usize {
        self.batch * self.rows * (self.cols + 2)
    }

    /// Values of an unpadded map `[B, R, C, H]`.
    pub fn map_len(&self) -> usize {
        self.batch * self.rows * self.cols * self.hidden
    }
}

/// One layer's parameters borrowed from the packed vector, PyTorch layouts: `w_is`, `w_ss`
/// `[G·H, H, 1, 3]`, `b_is`, `b_ss` `[G·H]`, `label_bias [K, G·H]`.
#[derive(Clone, Copy)]
pub struct RowWeights<'a, T> {
    pub w_is: &'a [T],
    pub b_is: &'a [T],
    pub w_ss: &'a [T],
    pub b_ss: &'a [T],
    pub label_bias: &'a [T],
}

impl<'a, T> RowWeights<'a, T> {
    pub fn unpack(d: &RowDims, p: &'a [T]) -> Self {
        let (g, w) = (d.gate_width(), d.gate_width() * d.hidden * ROW_KERNEL);
        let (w_is, rest) = p.split_at(w);
        let (b_is, rest) = rest.split_at(g);
        let (w_ss, rest) = rest.split_at(w);
        let (b_ss, label_bias) = rest.split_at(g);
        RowWeights { w_is, b_is, w_ss, b_ss, label_bias: &label_bias[..d.classes * g] }
    }
}

/// The GEMM matrix `[taps·H, G·H]` of a 1×3 convolution: row t·H + c, column g holds
/// `w[g, c, 0, taps[t]]`, so a window of `taps.len()` consecutive positions times it is the convolution.
pub fn conv_matrix<T: Real>(w: &[T], hidden: usize, gates: usize, taps: &[usize]) -> Vec<T> {
    let mut m = Vec::with_capacity(taps.len() * hidden * gates);
    for &kx in taps {
        for c in 0..hidden {
            m.extend((0..gates).map(|g| w[(g * hidden + c) * ROW_KERNEL + kx]));
        }
    }
    m
}

/// The adjoint's matrix `[taps·G·H, H]`: row t·G·H + g, column c holds `w[g, c, 0, taps[t]]`.
fn conv_matrix_t<T: Real>(w: &[T], hidden: usize, gates: usize, taps: &[usize]) -> Vec<T> {
    let mut m = Vec::with_capacity(taps.len() * hidden * gates);
    for &kx in taps {
        for g in 0..gates {
            m.extend((0..hidden).map(|c| w[(g * hidden + c) * ROW_KERNEL + kx]));
        }
    }
    m
}

/// The input-to-state bias of each image, b_is + E[label], `[B, G·H]`.
pub fn is_bias<T: Real>(d: &RowDims, w: &RowWeights<T>, labels: Option<&[usize]>) -> Vec<T> {
    let g = d.gate_width();
    let mut bias = broadcast_rows(w.b_is, d.batch);
    if let Some(labels) = labels {
        for (row, &k) in bias.chunks_exact_mut(g).zip(labels) {
            for (b, &e) in row.iter_mut().zip(&w.label_bias[k * g..(k + 1) * g]) {
                *b = *b + e;
            }
        }
    }
    bias
}

/// The LSTM on one position: from `gi`, `gh` (the two convolutions, `[4H]` each) and c_{i−1}, writes
/// h_i, c_i and `[i, f, g, o]`. Every slice is cut to length first so the loop vectorises.
#[inline(always)]
pub fn lstm_cell<T: Real>(gi: &[T], gh: &[T], c_prev: &[T], h_out: &mut [T], c_out: &mut [T], save: &mut [T]) {
    let h = h_out.len();
    let (gi, gh, c_prev, c_out) = (&gi[..4 * h], &gh[..4 * h], &c_prev[..h], &mut c_out[..h]);
    let (s_i, s) = save[..4 * h].split_at_mut(h);
    let (s_f, s) = s.split_at_mut(h);
    let (s_g, s_o) = s.split_at_mut(h);
    for u in 0..h {
        let i = sigmoid(gi[u] + gh[u]);
        let f = sigmoid(gi[h + u] + gh[h + u]);
        let g = (gi[2 * h + u] + gh[2 * h + u]).tanh_();
        let o = sigmoid(gi[3 * h + u] + gh[3 * h + u]);
        let c = f * c_prev[u] + i * g;
        c_out[u] = c;
        h_out[u] = o * c.tanh_();
        s_i[u] = i;
        s_f[u] = f;
        s_g[u] = g;
        s_o[u] = o;
    }
}

/// The GRU on one position: from `gi`, `gh` (`[3H]` each) and h_{i−1}, writes h_i and `[r, z, n, ss_n]`.
#[inline(always)]
pub fn gru_cell<T: Real>(gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: &mut [T]) {
    let h = h_out.len();
    let (gi, gh, h_prev) = (&gi[..3 * h], &gh[..3 * h], &h_prev[..h]);
    let (s_r, s) = save[..4 * h].split_at_mut(h);
    let (s_z, s) = s.split_at_mut(h);
    let (s_n, s_hn) = s.split_at_mut(h);
    for u in 0..h {
        let r = sigmoid(gi[u] + gh[u]);
        let z = sigmoid(gi[h + u] + gh[h + u]);
        let hn = gh[2 * h + u];
        let n = (gi[2 * h + u] + r * hn).tanh_();
        h_out[u] = (T::one() - z) * n + z * h_prev[u];
        s_r[u] = r;
        s_z[u] = z;
        s_n[u] = n;
        s_hn[u] = hn;
    }
}

/// The LSTM over a row of positions: `gi`, `gh` `[C, 4H]`, `c_prev`, `h_out`, `c_out` `[C, H]`,
/// `save` `[C, 4H]`.
#[inline(always)]
fn lstm_row_impl<T: Real>(
    nh: usize,
    gi: &[T],
    gh: &[T],
    c_prev: &[T],
    h_out: &mut [T],
    c_out: &mut [T],
    save: &mut [T],
) {
    let g = 4 * nh;
    let positions = h_out.len() / nh;
    for (j, (h_out, c_out)) in h_out.chunks_exact_mut(nh).zip(c_out.chunks_exact_mut(nh)).take(positions).enumerate() {
        lstm_cell(&gi[j * g..], &gh[j * g..], &c_prev[j * nh..], h_out, c_out, &mut save[j * g..]);
    }
}

/// The GRU over a row of positions: `gi`, `gh` `[C, 3H]`, `h_prev`, `h_out` `[C, H]`, `save` `[C, 4H]`.
#[inline(always)]
fn gru_row_impl<T: Real>(nh: usize, gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: &mut [T]) {
    let g = 3 * nh;
    for (j, h_out) in h_out.chunks_exact_mut(nh).enumerate() {
        gru_cell(&gi[j * g..], &gh[j * g..], &h_prev[j * nh..], h_out, &mut save[j * 4 * nh..]);
    }
}

/// Gate gradients of the LSTM over a row, from the cell states `(c_i, c_{i−1})`. `d_out` is dL/dh_i
/// from above (the layer's output), `dh` dL/dh_i through row i+1; `dc` enters as dL/dc_i through row i+1 and leaves as dL/dc_{i−1}; `dg`
/// `[C, 4H]` receives (da_i, da_f, da_g, da_o), the same w.r.t. both convolutions.
#[inline(always)]
fn lstm_grad_row_impl<T: Real>(
    nh: usize,
    save: &[T],
    (c, c_prev): (&[T], &[T]),
    d_out: &[T],
    dh: &[T],
    dc: &mut [T],
    dg: &mut [T],
) {
    let one = T::one();
    for (j, (dc, dg)) in dc.chunks_exact_mut(nh).zip(dg.chunks_exact_mut(4 * nh)).enumerate() {
        let s = &save[j * 4 * nh..(j + 1) * 4 * nh];
        let (i, f, g, o) = (&s[..nh], &s[nh..2 * nh], &s[2 * nh..3 * nh], &s[3 * nh..]);
        let r = j * nh..(j + 1) * nh;
        let (c, c_prev, d_out, dh) = (&c[r.clone()], &c_prev[r.clone()], &d_out[r.clone()], &dh[r]);
        let (dg_i, rest) = dg.split_at_mut(nh);
        let (dg_f, rest) = rest.split_at_mut(nh);
        let (dg_g, dg_o) = rest.split_at_mut(nh);
        for u in 0..nh {
            let tc = c[u].tanh_();
            let dht = d_out[u] + dh[u];
            // h = o ⊙ tanh(c): c is reached from row i+1 and through h.
            let dct = dc[u] + dht * o[u] * (one - tc * tc);
            dg_o[u] = dht * tc * o[u] * (one - o[u]);
            // c = f ⊙ c_{i−1} + i ⊙ g
            dg_i[u] = dct * g[u] * i[u] * (one - i[u]);
            dg_f[u] = dct * c_prev[u] * f[u] * (one - f[u]);
            dg_g[u] = dct * i[u] * (one - g[u] * g[u]);
            dc[u] = dct * f[u];
        }
    }
}

/// Gate gradients of the GRU over a row: `dh` enters as dL/dh_i through row i+1 and leaves holding
/// the direct path dL/dh_{i−1} = dL/dh_i ⊙ z; `dgi`, `dgh` `[C, 3H]` receive the gradients w.r.t. the
/// two convolutions (they differ in the n block, where r multiplies ss_n).
#[inline(always)]
fn gru_grad_row_impl<T: Real>(
    nh: usize,
    save: &[T],
    h_prev: &[T],
    d_out: &[T],
    dh: &mut [T],
    dgi: &mut [T],
    dgh: &mut [T],
) {
    let one = T::one();
    let rows = dh.chunks_exact_mut(nh).zip(dgi.chunks_exact_mut(3 * nh)).zip(dgh.chunks_exact_mut(3 * nh));
    for (j, ((dh, dgi), dgh)) in rows.enumerate() {
        let s = &save[j * 4 * nh..(j + 1) * 4 * nh];
        let (r, z, n, hn) = (&s[..nh], &s[nh..2 * nh], &s[2 * nh..3 * nh], &s[3 * nh..]);
        let (h_prev, d_out) = (&h_prev[j * nh..(j + 1) * nh], &d_out[j * nh..(j + 1) * nh]);
        let (dgi_r, rest) = dgi.split_at_mut(nh);
        let (dgi_z, dgi_n) = rest.split_at_mut(nh);
        let (dgh_r, rest) = dgh.split_at_mut(nh);
        let (dgh_z, dgh_n) = rest.split_at_mut(nh);
        for u in 0..nh {
            let dht = d_out[u] + dh[u];
            // h = (1 − z) ⊙ n + z ⊙ h_{i−1}
            let dn = dht * (one - z[u]);
            let dz = dht * (h_prev[u] - n[u]);
            // n = tanh(is_n + r ⊙ ss_n);  r = σ(is_r + ss_r), z = σ(is_z + ss_z)
            let dan = dn * (one - n[u] * n[u]);
            let dar = dan * hn[u] * r[u] * (one - r[u]);
            let daz = dz * z[u] * (one - z[u]);
            dgi_r[u] = dar;
            dgh_r[u] = dar;
            dgi_z[u] = daz;
            dgh_z[u] = daz;
            dgi_n[u] = dan;
            dgh_n[u] = dan * r[u];
            dh[u] = dht * z[u];
        }
    }
}

avx2_dispatch! {
    fn lstm_row(nh: usize, gi: &[T], gh: &[T], c_prev: &[T], h_out: &mut [T], c_out: &mut [T], save: &mut [T]) => lstm_row_impl;
    fn gru_row(nh: usize, gi: &[T], gh: &[T], h_prev: &[T], h_out: &mut [T], save: &mut [T]) => gru_row_impl;
    fn lstm_grad_row(nh: usize, save: &[T], cells: (&[T], &[T]), d_out: &[T], dh: &[T], dc: &mut [T], dg: &mut [T]) => lstm_grad_row_impl;
    fn gru_grad_row(nh: usize, save: &[T], h_prev: &[T], d_out: &[T], dh: &mut [T], dgi: &mut [T], dgh: &mut [T]) => gru_grad_row_impl;
}

/// What the forward pass keeps for backward.
pub struct RowSaved<T> {
    /// `[B·R, C + 2, H]`: at image row i, the state h_{i−1} (zeros at i = 0 and at the pad columns).
    pub h_prev: Vec<T>,
    /// `[B, R, C, H]` cell states (LSTM; empty for the GRU).
    pub c: Vec<T>,
    /// `[B, R, C, 4H]` gates (empty when not kept).
    pub gates: Vec<T>,
}

/// `v` cut into `parts` chunks of `len` (empty chunks when `v` is empty), for zipping per-thread work.
fn chunks<T>(v: &mut [T], len: usize, parts: usize) -> Vec<&mut [T]> {
    if v.is_empty() {
        return (0..parts).map(|_| &mut [][..]).collect();
    }
    v.chunks_mut(len).collect()
}

/// Forward over whole images: `y_in [B, R, C, H]` ↦ `y_out = h + y_in`, `[B, R, C, H]`. `labels`
/// `[B]` exactly when the layer has classes. Gates are kept for backward when `keep`.
pub fn row_forward<T: Real>(
    d: &RowDims,
    y_in: &[T],
    w: &RowWeights<T>,
    labels: Option<&[usize]>,
    keep: bool,
) -> (Vec<T>, RowSaved<T>) {
    let RowDims { batch: nb, rows: nr, cols: nc, hidden: nh, .. } = *d;
    let (g, lstm) = (d.gate_width(), d.cell == CellKind::Lstm);
    assert_eq!(y_in.len(), d.map_len(), "pixel row: y must be [B, R, C, H]");
    let padded = d.padded();
    // gis = window₂(y_pad) · W_is₂ + b_is + E[label], every position at once.
    let mut gis = Vec::with_capacity(padded * g);
    for bias in is_bias(d, w, labels).chunks_exact(g) {
        for _ in 0..nr * (nc + 2) {
            gis.extend_from_slice(bias);
        }
    }
    let y_pad = pad_rows(y_in, nb * nr, nc, nh);
    let w_is = T::pack(2 * nh, g, &conv_matrix(w.w_is, nh, g, &MASK_B_TAPS), g, 1);
    par_packed_matmul(&w_is, padded - 2, &y_pad, nh, &mut gis[g..], g, true);
    drop(y_pad);

    let w_ss = T::pack(ROW_KERNEL * nh, g, &conv_matrix(w.w_ss, nh, g, &[0, 1, 2]), g, 1);
    let bias_ss = broadcast_rows(w.b_ss, nc);
    let mut y_out = vec![T::zero(); d.map_len()];
    let mut saved = RowSaved {
        h_prev: vec![T::zero(); padded * nh],
        c: if lstm { vec![T::zero(); d.map_len()] } else { Vec::new() },
        gates: if keep { vec![T::zero(); d.map_len() * 4] } else { Vec::new() },
    };
    let per = rows_per_part(nb, nr * nc * nh);
    let parts = nb.div_ceil(per);
    let (img, pimg) = (nr * nc * nh, nr * (nc + 2) * nh);
    let jobs = chunks(&mut y_out, per * img, parts)
        .into_iter()
        .zip(chunks(&mut saved.h_prev, per * pimg, parts))
        .zip(chunks(&mut saved.c, per * img, parts))
        .zip(chunks(&mut saved.gates, per * 4 * img, parts))
        .enumerate()
        .collect::<Vec<_>>();
    jobs.into_par_iter().for_each(|(p, (((y_out, h_prev), c), gates))| {
        let (prow, row) = ((nc + 2) * nh, nc * nh);
        let mut ss = vec![T::zero(); nc * g];
        let mut scratch = if keep { Vec::new() } else { vec![T::zero(); 4 * row] };
        let zeros = vec![T::zero(); row];
        for b in 0..y_out.len() / img {
            for i in 0..nr {
                // q: this image row among the thread's; gq: among the batch.
                let q = b * nr + i;
                let gq = (p * per + b) * nr + i;
                ss.copy_from_slice(&bias_ss);
                T::packed_matmul(&w_ss, nc, &h_prev[q * prow..], nh, &mut ss, g, true);
                let gi = &gis[(gq * (nc + 2) + 1) * g..(gq * (nc + 2) + 1 + nc) * g];
                let save = if keep { &mut gates[q * 4 * row..(q + 1) * 4 * row] } else { &mut scratch[..] };
                let out = &mut y_out[q * row..(q + 1) * row];
                if lstm {
                    let (before, now) = c.split_at_mut(q * row);
                    let c_prev = if i == 0 { &zeros[..] } else { &before[(q - 1) * row..] };
                    lstm_row(nh, gi, &ss, c_prev, out, &mut now[..row], save);
                } else {
                    gru_row(nh, gi, &ss, &h_prev[q * prow + nh..q * prow + nh + row], out, save);
                }
                if i + 1 < nr {
                    h_prev[(q + 1) * prow + nh..(q + 1) * prow + nh + row].copy_from_slice(out);
                }
                let y_in = &y_in[gq * row..(gq + 1) * row];
                for (o, &x) in out.iter_mut().zip(y_in) {
                    *o = *o + x;
                }
            }
        }
    });
    (y_out, saved)
}

/// Gradients of one layer: dL/dy_in `[B, R, C, H]` and the packed parameter gradient.
pub struct RowGrads<T> {
    pub dy_in: Vec<T>,
    pub dparams: Vec<T>,
}

/// Backward through the rows, given `saved` from [`row_forward`] (with `keep`) and dL/dy_out.
pub fn row_backward<T: Real>(
    d: &RowDims,
    y_in: &[T],
    w: &RowWeights<T>,
    labels: Option<&[usize]>,
    saved: &RowSaved<T>,
    d_out: &[T],
) -> RowGrads<T> {
    let RowDims { batch: nb, rows: nr, cols: nc, hidden: nh, .. } = *d;
    let (g, lstm, padded) = (d.gate_width(), d.cell == CellKind::Lstm, d.padded());
    assert_eq!(d_out.len(), d.map_len(), "pixel row backward: dOut must be [B, R, C, H]");
    assert_eq!(saved.gates.len(), 4 * d.map_len(), "pixel row backward: the forward pass kept no gates");
    // Gate gradients on the padded grid (zeros at the pads): w.r.t. the input-to-state convolution,
    // and (GRU only; the LSTM's are the same) w.r.t. the state-to-state one.
    let mut dgi = vec![T::zero(); padded * g];
    let mut dgh = if lstm { Vec::new() } else { vec![T::zero(); padded * g] };
    // dh_{i−1} = window₃(dss_pad) · W_ss₃ᵀ, taps reversed: window position t reads tap 2 − t.
    let w_ss_t = T::pack(ROW_KERNEL * g, nh, &conv_matrix_t(w.w_ss, nh, g, &[2, 1, 0]), nh, 1);
    let per = rows_per_part(nb, nr * nc * nh);
    let parts = nb.div_ceil(per);
    let pg = nr * (nc + 2) * g;
    let jobs = chunks(&mut dgi, per * pg, parts).into_iter().zip(chunks(&mut dgh, per * pg, parts)).enumerate();
    jobs.collect::<Vec<_>>().into_par_iter().for_each(|(p, (dgi, dgh))| {
        let (prow, row, grow) = ((nc + 2) * nh, nc * nh, (nc + 2) * g);
        let zeros = vec![T::zero(); row];
        let mut dh = vec![T::zero(); row];
        let mut dc = vec![T::zero(); row];
        for b in 0..dgi.len() / pg {
            dh.fill(T::zero());
            dc.fill(T::zero());
            for i in (0..nr).rev() {
                let (q, gq) = (b * nr + i, (p * per + b) * nr + i);
                let cells = gq * row..(gq + 1) * row;
                let (gates, d_out) = (&saved.gates[4 * cells.start..4 * cells.end], &d_out[cells.clone()]);
                let span = (q * (nc + 2) + 1) * g..(q * (nc + 2) + 1 + nc) * g;
                if lstm {
                    let c_prev = if i == 0 { &zeros[..] } else { &saved.c[cells.start - row..cells.start] };
                    lstm_grad_row(nh, gates, (&saved.c[cells], c_prev), d_out, &dh, &mut dc, &mut dgi[span]);
                } else {
                    let h_prev = &saved.h_prev[gq * prow + nh..gq * prow + nh + row];
                    gru_grad_row(nh, gates, h_prev, d_out, &mut dh, &mut dgi[span.clone()], &mut dgh[span]);
                }
                // Row 0's dh_{−1} would be the gradient of the fixed zero state: not needed.
                if i > 0 {
                    let dss = if lstm { &dgi[..] } else { &dgh[..] };
                    T::packed_matmul(&w_ss_t, nc, &dss[q * grow..], g, &mut dh, nh, !lstm);
                }
            }
        }
    });
    let dgh = if lstm { &dgi[..] } else { &dgh[..] };

    let mut dparams = vec![T::zero(); d.param_len()];
    let wlen = g * nh * ROW_KERNEL;
    let (dw_is, rest) = dparams.split_at_mut(wlen);
    let (db_is, rest) = rest.split_at_mut(g);
    let (dw_ss, rest) = rest.split_at_mut(wlen);
    let (db_ss, de) = rest.split_at_mut(g);
    // Weight gradients as whole-map GEMMs over every padded position p (pads contribute 0):
    // dW_is₂ = Σ_p window₂(y_pad, p)ᵀ dgi[p], dW_ss₃ = Σ_p window₃(h_pad_prev, p)ᵀ dgh[p].
    let y_pad = pad_rows(y_in, nb * nr, nc, nh);
    let mut m_is = vec![T::zero(); 2 * nh * g];
    let win = |data| View { data, rs: 1, cs: nh };
    matmul(2 * nh, g, padded - 2, &mut m_is, g, false, win(&y_pad), View::rows(&dgi[g..], g));
    let mut m_ss = vec![T::zero(); ROW_KERNEL * nh * g];
    matmul(ROW_KERNEL * nh, g, padded - 2, &mut m_ss, g, false, win(&saved.h_prev), View::rows(&dgh[g..], g));
    for (t, &kx) in MASK_B_TAPS.iter().enumerate() {
        scatter_conv_grad(&m_is[t * nh * g..(t + 1) * nh * g], nh, g, kx, dw_is);
    }
    for kx in 0..ROW_KERNEL {
        scatter_conv_grad(&m_ss[kx * nh * g..(kx + 1) * nh * g], nh, g, kx, dw_ss);
    }
    let per_image = nr * (nc + 2) * g;
    for (b, (gi, gh)) in dgi.chunks_exact(per_image).zip(dgh.chunks_exact(per_image)).enumerate() {
        let mut sum = vec![T::zero(); g];
        for row in gi.chunks_exact(g) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s = *s + v;
            }
        }
        for row in gh.chunks_exact(g) {
            for (s, &v) in db_ss.iter_mut().zip(row) {
                *s = *s + v;
            }
        }
        for (s, &v) in db_is.iter_mut().zip(&sum) {
            *s = *s + v;
        }
        if let Some(labels) = labels {
            for (s, &v) in de[labels[b] * g..(labels[b] + 1) * g].iter_mut().zip(&sum) {
                *s = *s + v;
            }
        }
    }
    // dL/dy_in = dOut + window₂(dgi_pad) · W_is₂ᵀ: position p reads dgi at p (tap 1) and p + 1 (tap 0).
    let w_is_t = T::pack(2 * g, nh, &conv_matrix_t(w.w_is, nh, g, &[1, 0]), nh, 1);
    let mut dy_pad = vec![T::zero(); padded * nh];
    par_packed_matmul(&w_is_t, padded - 1, &dgi, g, &mut dy_pad, nh, false);
    let mut dy_in = d_out.to_vec();
    for (dst, src) in dy_in.chunks_exact_mut(nc * nh).zip(dy_pad.chunks_exact((nc + 2) * nh)) {
        for (d, &s) in dst.iter_mut().zip(&src[nh..(nc + 1) * nh]) {
            *d = *d + s;
        }
    }
    RowGrads { dy_in, dparams }
}

/// Adds tap `kx`'s block `m [H, G·H]` (row c, column g) of a GEMM weight gradient into the PyTorch
/// layout `dw [G·H, H, 1, 3]`.
fn scatter_conv_grad<T: Real>(m: &[T], nh: usize, g: usize, kx: usize, dw: &mut [T]) {
    for c in 0..nh {
        for gate in 0..g {
            dw[(gate * nh + c) * ROW_KERNEL + kx] = m[c * g + gate];
        }
    }
}

struct RowLayerOp {
    dims: RowDims,
    labels: Option<Vec<usize>>,
    keep: bool,
    /// A `RowSaved<f32>` or `RowSaved<f64>` from the forward pass.
    saved: Saved,
}

impl RowLayerOp {
    fn forward<T: Real>(&self, y: &[T], p: &[T]) -> Vec<T> {
        let w = RowWeights::unpack(&self.dims, p);
        let (out, saved) = row_forward(&self.dims, y, &w, self.labels.as_deref(), self.keep);
        if self.keep {
            self.saved.put(saved);
        }
        out
    }

    fn backward<T: Real + WithDType>(
        &self,
        y: &Tensor,
        p: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.saved.with("pixel row", |saved: &RowSaved<T>| {
            let (yv, pv, dv) = (host::<T>(y)?, host::<T>(p)?, host::<T>(grad)?);
            let w = RowWeights::unpack(&self.dims, &pv);
            let g = row_backward(&self.dims, &yv, &w, self.labels.as_deref(), saved, &dv);
            Ok((
                Some(Tensor::from_vec(g.dy_in, y.shape(), y.device())?),
                Some(Tensor::from_vec(g.dparams, p.shape(), p.device())?),
            ))
        })
    }
}

impl CustomOp2 for RowLayerOp {
    fn name(&self) -> &'static str {
        "arflow-pixel-row-layer"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let shape = Shape::from((d.batch, d.rows, d.cols, d.hidden));
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(p)) => {
                CpuStorage::F32(self.forward(contiguous(y, l1, "y")?, contiguous(p, l2, "params")?))
            }
            (CpuStorage::F64(y), CpuStorage::F64(p)) => {
                CpuStorage::F64(self.forward(contiguous(y, l1, "y")?, contiguous(p, l2, "params")?))
            }
            _ => bail!("pixel row: y and params must both be f32 or both f64"),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let d = self.dims;
        let (out, saved) = crate::cuda::pixel_row::forward(&d, self.labels.as_deref(), (s1, l1), (s2, l2), self.keep)?;
        if let Some(saved) = saved {
            self.saved.put(saved);
        }
        Ok((out, Shape::from((d.batch, d.rows, d.cols, d.hidden))))
    }

    fn bwd(&self, y: &Tensor, p: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            return self.saved.with("pixel row", |saved: &crate::cuda::pixel_row::RowSaved| {
                let labels = self.labels.as_deref();
                let (dy, dp) = crate::cuda::pixel_row::backward(&self.dims, labels, saved, y, p, grad)?;
                Ok((Some(dy), Some(dp)))
            });
        }
        match y.dtype() {
            DType::F32 => self.backward::<f32>(y, p, grad),
            _ => self.backward::<f64>(y, p, grad),
        }
    }
}

/// Applies one row layer of `cell` (LSTM or GRU) to `y [B, R, C, H]` with the packed `params`
/// `[w_is, b_is, w_ss, b_ss, label_bias]` and `labels [B]` (exactly when `classes` > 0); returns
/// `y + h`, `[B, R, C, H]`.
pub fn row_layer(
    cell: CellKind,
    y: &Tensor,
    params: &Tensor,
    classes: usize,
    labels: Option<&[usize]>,
) -> Result<Tensor> {
    let (batch, rows, cols, hidden) = y.dims4()?;
    if !matches!(cell, CellKind::Lstm | CellKind::Gru) {
        bail!("config: a pixel row layer is an lstm or a gru, not {}", cell.name());
    }
    let dims = RowDims { cell, batch, rows, cols, hidden, classes };
    if params.elem_count() != dims.param_len() {
        bail!("pixel row: params hold {} values, the layer needs {}", params.elem_count(), dims.param_len());
    }
    match labels {
        Some(l) if classes == 0 || l.len() != batch || l.iter().any(|&k| k >= classes) => {
            bail!("pixel row: labels must be [batch {batch}] in 0…{}", classes.saturating_sub(1))
        }
        None if classes > 0 => bail!("pixel row: a class-conditional layer needs labels"),
        _ => {}
    }
    let keep = y.track_op() || params.track_op();
    let op = RowLayerOp { dims, labels: labels.map(|l| l.to_vec()), keep, saved: Saved::default() };
    let (y, params) = (y.contiguous()?, params.contiguous()?);
    if keep {
        y.apply_op2(&params, op)
    } else {
        y.apply_op2_no_bwd(&params, &op)
    }
}
