//! The single-step path of the char LM (sampling, `step`, `logits`): weights packed once, then each
//! step is a few packed products and fused passes on plain slices, with no tensor graph.
//!
//! Per step and layer: the input projection `gi` — for layer 0 a row of a table holding
//! `E·W_ihᵀ + b_ih` for every vocabulary entry (an embedding lookup followed by a product is a lookup
//! of the product), for the layers above one product with the layer below's new h —, the recurrent
//! projection `gh = h·W_hhᵀ + b_hh` (one product), the cell's fused pass, and at the top the head
//! `h·W_headᵀ + b` (one product). One stream makes every product a mat-vec, which `packed` runs with
//! several weight panels per tile; N streams make them N-row GEMMs through the same kernels.
//!
//! Every product goes through the packed kernels the training forward uses, whose result for a row
//! does not depend on the other rows (`packed`'s `packed_rows_do_not_depend_on_their_batch`), and
//! the same fused cells: the hidden states are bit for bit those of the tensor path
//! ([`super::CharLm::step_graph`]) and of a training forward over the same characters, and a stream's
//! states and logits are the same whether it runs alone or in a batch. Only the head differs from
//! the tensor path (candle's GEMM sums in another order): logits agree to f32 rounding.
//!
//! The packed copy is built on first use and dropped by every `&mut` access to the parameters
//! ([`super::CharLm::params_mut`], [`super::CharLm::train_step`]), so it never outlives the weights
//! it was packed from.

use super::CharLmConfig;
use crate::packed::PackedB;
use crate::params::ParamStore;
use crate::rnn::common::par_packed_matmul;
use crate::rnn::{gru, lstm, tanh, CellKind, RnnWeights};
use candle_core::Result;
use rayon::prelude::*;

/// The largest layer-0 table `[V, G·H]` built (16 MiB); past it, each step projects the embedding.
const TABLE_MAX_FLOATS: usize = 1 << 22;
/// Cell passes over fewer gate values than this run on the calling thread (~43 GRU streams at H 256).
const PAR_MIN_CELLS: usize = 1 << 15;
/// Products smaller than this many multiply-adds run on the calling thread: rayon's fork/join costs
/// more than it saves (a batch-1 step is ~0.2 M).
const PAR_MIN_MACS: usize = 1 << 21;

/// Layer 0's input projection.
enum Input0 {
    /// `E·W_ihᵀ + b_ih` of every vocabulary entry, `[V, G·H]`.
    Table(Vec<f32>),
    /// The embedding `[V, E]`, projected at each step (a vocabulary too large to tabulate).
    Project(Vec<f32>),
}

struct Layer {
    /// `W_ihᵀ [I, G·H]`.
    w_ih_t: PackedB,
    b_ih: Vec<f32>,
    /// `W_hhᵀ [H, G·H]`.
    w_hh_t: PackedB,
    b_hh: Vec<f32>,
}

/// The model's weights packed for single steps. See the module docs.
pub(crate) struct FastLm {
    cfg: CharLmConfig,
    input: Input0,
    layers: Vec<Layer>,
    /// `W_headᵀ [H, V]` of head 1 (the next character) and its bias.
    head_t: PackedB,
    head_b: Vec<f32>,
    /// The learned initial state `[L, S]`, if the model has one.
    h0: Option<Vec<f32>>,
}

/// Buffers a stepping loop reuses from step to step.
#[derive(Default)]
pub(crate) struct StepScratch {
    gi: Vec<f32>,
    gh: Vec<f32>,
    x: Vec<f32>,
    gates: Vec<f32>,
}

/// `c[m × n] += a · B` for `B` packed in `pb`, across the kernel threads when it is big enough.
fn product(pb: &PackedB, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize) {
    if m >= 2 * rayon::current_num_threads() && m * pb.k() * pb.n() >= PAR_MIN_MACS && rayon::current_num_threads() > 1
    {
        par_packed_matmul::<f32>(pb, m, a, lda, c, ldc, true)
    } else {
        pb.matmul(m, a, lda, c, ldc, true)
    }
}

/// Fills `buf` with `rows` copies of `bias`.
fn bias_rows(buf: &mut Vec<f32>, bias: &[f32], rows: usize) {
    buf.clear();
    for _ in 0..rows {
        buf.extend_from_slice(bias);
    }
}

impl FastLm {
    /// Packs the model's current parameters (CPU storage).
    pub(crate) fn new(cfg: &CharLmConfig, store: &ParamStore) -> Result<Self> {
        Self::with_table_limit(cfg, store, TABLE_MAX_FLOATS)
    }

    /// [`FastLm::new`] tabulating layer 0's input projection only up to `table_max` floats (tests
    /// reach the projecting path with it).
    pub(crate) fn with_table_limit(cfg: &CharLmConfig, store: &ParamStore, table_max: usize) -> Result<Self> {
        let CharLmConfig { vocab, embed, hidden, layers: nl, learned_h0, .. } = *cfg;
        let var = |i: usize| store.vars[i].as_tensor().flatten_all()?.to_vec1::<f32>();
        let mut layers = Vec::with_capacity(nl);
        for l in 0..nl {
            let d = cfg.layer_dims(l, 1, 1);
            let p = var(1 + l)?;
            let w = RnnWeights::unpack(&d, &p);
            let g = d.gate_width();
            // The packings of the training forward (`rnn::common`): W_ihᵀ and W_hhᵀ, read transposed.
            layers.push(Layer {
                w_ih_t: PackedB::new(d.input, g, w.w_ih, 1, d.input),
                b_ih: w.b_ih.to_vec(),
                w_hh_t: PackedB::new(hidden, g, w.w_hh, 1, hidden),
                b_hh: w.b_hh.to_vec(),
            });
        }
        let g = cfg.cell.gates() * hidden;
        let emb = var(0)?;
        let input = if vocab * g <= table_max {
            // The training forward's input projection of each vocabulary entry: the same bias rows,
            // the same packed product, so the same bits.
            let l0 = &layers[0];
            let mut table = Vec::with_capacity(vocab * g);
            bias_rows(&mut table, &l0.b_ih, vocab);
            par_packed_matmul::<f32>(&l0.w_ih_t, vocab, &emb, embed, &mut table, g, true);
            Input0::Table(table)
        } else {
            Input0::Project(emb)
        };
        let hv = cfg.head_var(1);
        let head_w = var(hv)?;
        let h0 = if learned_h0 { Some(var(3 + nl)?) } else { None };
        Ok(FastLm {
            cfg: *cfg,
            input,
            layers,
            head_t: PackedB::new(hidden, vocab, &head_w, 1, hidden),
            head_b: var(hv + 1)?,
            h0,
        })
    }

    /// The state `[L, n, S]` a stream starts from: the learned h0 for every stream, or zeros.
    pub(crate) fn initial(&self, n: usize) -> Vec<f32> {
        initial_state(&self.cfg, self.h0.as_deref(), n)
    }

    /// One step of `n = tokens.len()` streams (ids checked by the caller): from `state [L, n, S]`
    /// into `next [L, n, S]`, and the logits `[n, V]` of head 1 when asked for.
    pub(crate) fn step(
        &self,
        state: &[f32],
        tokens: &[u32],
        next: &mut [f32],
        logits: Option<&mut [f32]>,
        sc: &mut StepScratch,
    ) {
        let CharLmConfig { vocab, embed, hidden: h, cell, .. } = self.cfg;
        let n = tokens.len();
        let s = self.cfg.state_len();
        let g = cell.gates() * h;
        let block = n * s;
        assert_eq!(state.len(), self.layers.len() * block, "fast step: state size");
        assert_eq!(next.len(), state.len(), "fast step: next state size");
        for (l, w) in self.layers.iter().enumerate() {
            let (below, rest) = next.split_at_mut(l * block);
            let out = &mut rest[..block];
            let prev = &state[l * block..(l + 1) * block];
            // gh = h_{t−1}·W_hhᵀ + b_hh (h is the first H values of each state row).
            bias_rows(&mut sc.gh, &w.b_hh, n);
            product(&w.w_hh_t, n, prev, s, &mut sc.gh, g);
            // gi: a table row for layer 0, else the layer below's new h projected.
            let table = match (&self.input, l) {
                (Input0::Table(t), 0) => Some(t),
                (Input0::Project(emb), 0) => {
                    sc.x.clear();
                    for &t in tokens {
                        sc.x.extend_from_slice(&emb[t as usize * embed..(t as usize + 1) * embed]);
                    }
                    bias_rows(&mut sc.gi, &w.b_ih, n);
                    product(&w.w_ih_t, n, &sc.x, embed, &mut sc.gi, g);
                    None
                }
                _ => {
                    bias_rows(&mut sc.gi, &w.b_ih, n);
                    product(&w.w_ih_t, n, &below[(l - 1) * block..], s, &mut sc.gi, g);
                    None
                }
            };
            let gi_all = &sc.gi;
            let gh_all = &sc.gh;
            // The fused cell of rows b0 .. b0 + out.len() / s.
            let cells = |b0: usize, out: &mut [f32], gates: &mut Vec<f32>| {
                if cell == CellKind::Lstm {
                    gates.resize(4 * h, 0.0);
                }
                for (j, o) in out.chunks_exact_mut(s).enumerate() {
                    let b = b0 + j;
                    let gi = match table {
                        Some(t) => &t[tokens[b] as usize * g..(tokens[b] as usize + 1) * g],
                        None => &gi_all[b * g..(b + 1) * g],
                    };
                    let gh = &gh_all[b * g..(b + 1) * g];
                    let p = &prev[b * s..(b + 1) * s];
                    match cell {
                        CellKind::Gru => gru::step_row(gi, gh, p, o),
                        CellKind::Lstm => lstm::step_row(gi, gh, &p[h..], o, gates),
                        CellKind::Rnn => tanh::step_row(gi, gh, o),
                    }
                }
            };
            let threads = rayon::current_num_threads();
            if threads > 1 && n * g >= PAR_MIN_CELLS {
                let per = n.div_ceil(threads);
                out.par_chunks_mut(per * s)
                    .enumerate()
                    .for_each_init(Vec::new, |gates, (p, out)| cells(p * per, out, gates));
            } else {
                cells(0, out, &mut sc.gates);
            }
        }
        if let Some(logits) = logits {
            assert_eq!(logits.len(), n * vocab, "fast step: logits size");
            for row in logits.chunks_exact_mut(vocab) {
                row.copy_from_slice(&self.head_b);
            }
            let top = &next[(self.layers.len() - 1) * block..];
            product(&self.head_t, n, top, s, logits, vocab);
        }
    }
}

/// `[L, n, S]`: `h0 [L, S]` repeated for each of the n streams, or zeros.
pub(super) fn initial_state(cfg: &CharLmConfig, h0: Option<&[f32]>, n: usize) -> Vec<f32> {
    let s = cfg.state_len();
    match h0 {
        Some(h0) => {
            let mut out = Vec::with_capacity(cfg.layers * n * s);
            for row in h0.chunks_exact(s) {
                for _ in 0..n {
                    out.extend_from_slice(row);
                }
            }
            out
        }
        None => vec![0.0; cfg.layers * n * s],
    }
}
