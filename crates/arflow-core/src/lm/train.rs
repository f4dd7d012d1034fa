//! The char LM's training pass on CPU, written out: embedding, the recurrent stack's fused layers
//! ([`crate::rnn`]), the heads with their softmax cross-entropy, then backward through all of them, with
//! no tensor graph.
//!
//! Memory is what backward needs and little more: per layer its output and its saved activations
//! (which backward overwrites with the gate gradients); the heads score [`HEAD_ROWS`] positions at a
//! time, so the logits never exist for the whole batch; each layer's buffers are freed as backward
//! leaves it, back into the model's [`crate::alloc::BufferPool`] for the next step. The tensor-graph path ([`super::GradPath::Graph`]) computes the same loss and
//! gradients through candle's autograd and stays the path of other devices; a test holds the two
//! together.

use super::{CharLm, CharLmConfig};
use crate::gemm::{matmul, View};
use crate::host::with_slices;
use crate::loss::{ce_grad_in_place, softmax_nll_in_place, IGNORE};
use crate::rnn::{rnn_backward, rnn_forward, RnnWeights};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Positions a head scores at once: bounds its logits to `HEAD_ROWS × V`.
const HEAD_ROWS: usize = 512;

/// Loss, gradients and final state of one batch.
pub(super) struct Pass {
    /// Σ_k mean cross-entropy of head k, summed in f32 as the graph path sums it.
    pub loss: f64,
    /// The gradient of each variable of the store, in order; `None` where the batch reaches none
    /// (the learned h0 when a state is given).
    pub grads: Vec<Option<Vec<f32>>>,
    /// dL/d(initial state) `[L, B, S]`.
    pub ds0: Vec<f32>,
    /// The state after each stream's last position `[L, B, S]`.
    pub finals: Vec<f32>,
}

impl Pass {
    /// The gradients as tensors shaped like the store's variables.
    pub fn grad_tensors(&mut self, lm: &CharLm) -> Result<Vec<Option<Tensor>>> {
        let vars = &lm.store.vars;
        std::mem::take(&mut self.grads)
            .into_iter()
            .zip(vars)
            .map(|(g, v)| g.map(|g| Tensor::from_vec(g, v.shape(), &lm.store.device)).transpose())
            .collect()
    }
}

/// Forward and backward over `ids [B, T]` against the target blocks (`[B·T]` each, block k−1 for head
/// k; [`IGNORE`] marks an unscored position), from `state [L, B, S]` (the learned h0 or zeros when
/// `None`). The caller has checked every id and size.
pub(super) fn pass(
    lm: &CharLm,
    ids: &[u32],
    targets: &[&[u32]],
    batch: usize,
    seq: usize,
    state: Option<&[f32]>,
) -> Result<Pass> {
    let cfg = lm.cfg;
    let CharLmConfig { vocab: nv, embed: ne, hidden: nh, layers: nl, learned_h0, .. } = cfg;
    let (s, rows) = (cfg.state_len(), batch * seq);
    let vars: Vec<&Tensor> = lm.store.vars.iter().map(|v| v.as_tensor()).collect();
    let pool = &lm.buffers;
    with_slices::<f32, _>(&vars, |p| {
        let mut x0 = pool.take(rows * ne);
        for (x, &id) in x0.chunks_exact_mut(ne).zip(ids) {
            x.copy_from_slice(&p[0][id as usize * ne..(id as usize + 1) * ne]);
        }
        let s0: Vec<Vec<f32>> = (0..nl)
            .map(|l| match state {
                Some(st) => st[l * batch * s..(l + 1) * batch * s].to_vec(),
                None if learned_h0 => p[3 + nl][l * s..(l + 1) * s].repeat(batch),
                None => vec![0f32; batch * s],
            })
            .collect();

        // Forward. Layer l reads the h of layer l − 1: its output, or for the LSTM (rows h then c) a
        // copy of the h halves.
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(nl);
        let mut saved: Vec<Vec<f32>> = Vec::with_capacity(nl);
        let mut h_only: Vec<Vec<f32>> = Vec::new();
        for l in 0..nl {
            let d = cfg.layer_dims(l, batch, seq);
            let mut out = pool.take(rows * s);
            let mut sv = pool.take(rows * cfg.cell.saved_width() * nh);
            let input = layer_input(l, &x0, &outs, &h_only, s == nh);
            rnn_forward(&d, input, &s0[l], &RnnWeights::unpack(&d, p[1 + l]), &mut out, Some(&mut sv));
            if s != nh {
                let mut h = pool.take(rows * nh);
                for (h, r) in h.chunks_exact_mut(nh).zip(out.chunks_exact(s)) {
                    h.copy_from_slice(&r[..nh]);
                }
                h_only.push(h);
            }
            outs.push(out);
            saved.push(sv);
        }
        let mut finals = Vec::with_capacity(nl * batch * s);
        for out in &outs {
            for b in 0..batch {
                finals.extend_from_slice(&out[((b + 1) * seq - 1) * s..(b + 1) * seq * s]);
            }
        }

        // The heads, forward and backward, adding up dL/dh of the top layer.
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; p.len()];
        let top = layer_input(nl, &x0, &outs, &h_only, s == nh);
        let mut d_h = pool.take(rows * nh);
        let mut loss = 0f32;
        for (k, tg) in targets.iter().enumerate() {
            let var = cfg.head_var(k + 1);
            let (dw, db, mean) = head(top, p[var], p[var + 1], tg, nv, nh, &mut d_h);
            loss += mean as f32;
            grads[var] = Some(dw);
            grads[var + 1] = Some(db);
        }
        if s != nh {
            pool.give(std::mem::take(&mut h_only[nl - 1]));
        }

        // Backward through the layers, top down, freeing each layer's buffers as it is done.
        let mut ds0 = vec![0f32; nl * batch * s];
        for l in (0..nl).rev() {
            let d = cfg.layer_dims(l, batch, seq);
            let d_out = if s == nh {
                std::mem::take(&mut d_h)
            } else {
                // dL/dc of the outputs is zero: only the h halves feed what comes after.
                let mut d_out = pool.take(rows * s);
                for (o, g) in d_out.chunks_exact_mut(s).zip(d_h.chunks_exact(nh)) {
                    o[..nh].copy_from_slice(g);
                }
                pool.give(std::mem::take(&mut d_h));
                d_out
            };
            let input = layer_input(l, &x0, &outs, &h_only, s == nh);
            let w = RnnWeights::unpack(&d, p[1 + l]);
            let g = rnn_backward(&d, input, &s0[l], &w, &outs[l], &mut saved[l], &d_out);
            pool.give(d_out);
            pool.give(std::mem::take(&mut saved[l]));
            pool.give(std::mem::take(&mut outs[l]));
            if s != nh && l > 0 {
                pool.give(std::mem::take(&mut h_only[l - 1]));
            }
            ds0[l * batch * s..(l + 1) * batch * s].copy_from_slice(&g.dh0);
            grads[1 + l] = Some(g.dparams);
            d_h = g.dx;
        }
        pool.give(x0);
        let mut d_table = vec![0f32; nv * ne];
        for (dx, &id) in d_h.chunks_exact(ne).zip(ids) {
            for (t, &v) in d_table[id as usize * ne..(id as usize + 1) * ne].iter_mut().zip(dx) {
                *t += v;
            }
        }
        pool.give(d_h);
        grads[0] = Some(d_table);
        if learned_h0 && state.is_none() {
            let mut dh0 = vec![0f32; nl * s];
            for (l, d) in dh0.chunks_exact_mut(s).enumerate() {
                for row in ds0[l * batch * s..(l + 1) * batch * s].chunks_exact(s) {
                    for (a, &v) in d.iter_mut().zip(row) {
                        *a += v;
                    }
                }
            }
            grads[3 + nl] = Some(dh0);
        }
        Ok(Pass { loss: loss as f64, grads, ds0, finals })
    })
}

/// What layer `l` reads, `[B·T, ·]`: the embedded inputs for layer 0, else the h of layer l − 1
/// (`l` = L gives the top layer's h, what the heads read).
fn layer_input<'a>(l: usize, x0: &'a [f32], outs: &'a [Vec<f32>], h_only: &'a [Vec<f32>], h_is_out: bool) -> &'a [f32] {
    match l {
        0 => x0,
        _ if h_is_out => &outs[l - 1],
        _ => &h_only[l - 1],
    }
}

/// One head `logits = h·Wᵀ + b` with its mean cross-entropy over the scored positions, [`HEAD_ROWS`]
/// positions at a time: adds dL/dh into `d_h` and returns (dW, db, mean cross-entropy).
fn head(
    h: &[f32],
    w: &[f32],
    bias: &[f32],
    targets: &[u32],
    nv: usize,
    nh: usize,
    d_h: &mut [f32],
) -> (Vec<f32>, Vec<f32>, f64) {
    let rows = targets.len();
    let scored = targets.iter().filter(|&&t| t != IGNORE).count().max(1);
    let scale = (1.0 / scored as f64) as f32;
    let (mut dw, mut db) = (vec![0f32; nv * nh], vec![0f32; nv]);
    let block = HEAD_ROWS.min(rows);
    let (mut logits, mut nll) = (vec![0f32; block * nv], vec![0f64; block]);
    let mut total = 0f64;
    for start in (0..rows).step_by(HEAD_ROWS) {
        let m = HEAD_ROWS.min(rows - start);
        let (lg, hs, tg) = (&mut logits[..m * nv], &h[start * nh..(start + m) * nh], &targets[start..start + m]);
        for row in lg.chunks_exact_mut(nv) {
            row.copy_from_slice(bias);
        }
        matmul(m, nv, nh, lg, nv, true, View::rows(hs, nh), View::transposed(w, nh));
        // Each row's softmax, its −log p[target], then (p − onehot)/N in place: dL/dlogits.
        lg.par_chunks_mut(nv).zip(&mut nll[..m]).zip(tg).for_each(|((row, nll), &t)| {
            let t = (t != IGNORE).then_some(t as usize);
            *nll = t.map_or(0.0, |t| softmax_nll_in_place(row, t));
            ce_grad_in_place(row, t, scale);
        });
        // Summed in position order, as the fused cross-entropy op sums.
        for &v in &nll[..m] {
            total += v;
        }
        matmul(m, nh, nv, &mut d_h[start * nh..], nh, true, View::rows(lg, nv), View::rows(w, nh));
        matmul(nv, nh, m, &mut dw, nh, true, View::transposed(lg, nv), View::rows(hs, nh));
        for row in lg.chunks_exact(nv) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
    (dw, db, total / scored as f64)
}
