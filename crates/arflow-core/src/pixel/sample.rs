//! Sampling in raster order with O(1) work per pixel. Logits (i, j) depend only on pixels before
//! (i, j) (see `src/backend/js/pixel.ts`, "Causality"), and within a row nothing is carried from
//! left to right but the convolutions, so column j of row i needs only
//! - y_0[i, j]: the 24 taps of mask A over pixels already drawn (one GEMM row `[25] · [25, H]`);
//! - layer l at (i, j): is from y_{l−1}[i, j−1 … j] (two taps), ss from the previous row's h_{i−1}
//!   at columns j−1 … j+1 — computed for the whole row at its start, one GEMM, since h_{i−1} is known
//!   by then — and the cell at column j with c_{i−1}[j] / h_{i−1}[j];
//! - the head at (i, j).
//!
//! Each layer carries its previous row's h (and c) from row to row. The `n` images go through every
//! GEMM together (rows of the same product), split across threads in slices that run independently.
//! Draws follow `pixelDrawValue` of the reference, in f64 from the f32 logits.

use super::head::{HeadWeights, PixelOutput};
use super::input_conv::{gather, weight_matrix, COLS};
use super::model::PixelConfig;
use super::row::{conv_matrix, gru_cell, is_bias, lstm_cell, RowWeights, ROW_KERNEL};
use super::MASK_B_TAPS;
use crate::packed::PackedB;
use crate::rnn::CellKind;
use rayon::prelude::*;

/// What to draw (checked by the caller): `uniforms [n, R, C]`, `labels [n]` exactly when the model has
/// classes, and the given top rows `top [n, top_rows, C]`.
pub struct SampleRequest<'a> {
    pub n: usize,
    pub uniforms: &'a [f32],
    pub labels: Option<&'a [usize]>,
    pub top_rows: usize,
    pub top: &'a [u8],
}

/// A pixel value drawn with `u ∈ [0, 1)` from one position's logits, as the reference's
/// `pixelDrawValue`: categorical, the smallest v with u·S < Σ_{w ≤ v} e^{ℓ_w − max ℓ} (S the full sum;
/// if rounding leaves none, the largest v of nonzero weight); Bernoulli, 1 if u < σ(s).
pub fn draw_value(output: PixelOutput, logits: &[f32], u: f64) -> u8 {
    if output == PixelOutput::Bernoulli {
        return u8::from(u < 1.0 / (1.0 + (-(logits[0] as f64)).exp()));
    }
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let target = u * total;
    let (mut acc, mut last) = (0.0, 0);
    for (v, &l) in logits.iter().enumerate() {
        let e = (l as f64 - max).exp();
        acc += e;
        if e > 0.0 {
            last = v;
        }
        if target < acc {
            return v as u8;
        }
    }
    last as u8
}

/// The weights every slice of images shares, packed once.
struct Prepared<'a> {
    cfg: PixelConfig,
    /// `[25, H]`, the kept taps of mask A and the bias.
    w0: PackedB,
    /// Per layer: `W_is₂ [2H, G·H]`, `W_ss₃ [3H, G·H]`, the unpacked weights.
    w_is: Vec<PackedB>,
    w_ss: Vec<PackedB>,
    rows: Vec<RowWeights<'a, f32>>,
    /// `W1ᵀ [H, H]`, `W2ᵀ [H, O]`.
    w1: PackedB,
    w2: PackedB,
    head: HeadWeights<'a, f32>,
}

/// Draws the images of `req` with the model's parameters `p` (one vector per variable).
pub fn sample_images(cfg: &PixelConfig, p: &[Vec<f32>], req: &SampleRequest) -> Vec<u8> {
    let (nh, nl) = (cfg.hidden, cfg.layers);
    let g = cfg.cell.gates() * nh;
    let d = cfg.row_dims(1);
    let rows: Vec<RowWeights<f32>> = (0..nl).map(|l| RowWeights::unpack(&d, &p[1 + l])).collect();
    let head = HeadWeights::unpack(nh, cfg.output, &p[nl + 1]);
    let o = cfg.output.width();
    let prep = Prepared {
        cfg: *cfg,
        w0: PackedB::new(COLS, nh, &weight_matrix(&p[0], nh), nh, 1),
        w_is: rows.iter().map(|w| PackedB::new(2 * nh, g, &conv_matrix(w.w_is, nh, g, &MASK_B_TAPS), g, 1)).collect(),
        w_ss: rows
            .iter()
            .map(|w| PackedB::new(ROW_KERNEL * nh, g, &conv_matrix(w.w_ss, nh, g, &[0, 1, 2]), g, 1))
            .collect(),
        w1: PackedB::new(nh, nh, head.w1, 1, nh),
        w2: PackedB::new(nh, o, head.w2, 1, nh),
        rows,
        head,
    };
    let pixels = cfg.pixels();
    let mut out = vec![0u8; req.n * pixels];
    let per = req.n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    out.par_chunks_mut(per * pixels).enumerate().for_each(|(k, out)| prep.run(req, k * per, out));
    out
}

impl Prepared<'_> {
    /// Draws images `first …` into `out [nb, R, C]`.
    fn run(&self, req: &SampleRequest, first: usize, out: &mut [u8]) {
        let PixelConfig { rows: nr, cols: nc, hidden: nh, layers: nl, output, .. } = self.cfg;
        let lstm = self.cfg.cell == CellKind::Lstm;
        let (g, o) = (self.cfg.cell.gates() * nh, output.width());
        let nb = out.len() / (nr * nc);
        let prow = (nc + 2) * nh;
        let labels = req.labels.map(|l| &l[first..first + nb]);
        let bias: Vec<Vec<f32>> = self.rows.iter().map(|w| is_bias(&self.cfg.row_dims(nb), w, labels)).collect();
        // The model inputs drawn so far, and per layer the previous row's state, the row being built,
        // and the maps y_0 … y_L of the current row (padded, `[nb, C + 2, H]`).
        let mut x = vec![0f32; nb * nr * nc];
        let zeros = || vec![0f32; nb * prow];
        let (mut h_prev, mut h_next): (Vec<_>, Vec<_>) = (0..nl).map(|_| (zeros(), zeros())).unzip();
        let cells = if lstm { nb * nc * nh } else { 0 };
        let (mut c_prev, mut c_next): (Vec<_>, Vec<_>) =
            (0..nl).map(|_| (vec![0f32; cells], vec![0f32; cells])).unzip();
        let mut y: Vec<Vec<f32>> = (0..=nl).map(|_| zeros()).collect();
        let mut ss: Vec<Vec<f32>> = (0..nl).map(|_| vec![0f32; nb * (nc + 2) * g]).collect();
        let mut cols = vec![0f32; nb * COLS];
        let mut gi = vec![0f32; nb * g];
        let mut save = vec![0f32; 4 * nh];
        let (mut a, mut z1, mut logits) = (vec![0f32; nb * nh], vec![0f32; nb * nh], vec![0f32; nb * o]);
        for i in 0..nr {
            // ss of the whole row from h_{i−1}, one window GEMM per layer (pad rows computed, unused).
            for l in 0..nl {
                for row in ss[l].chunks_exact_mut(g) {
                    row.copy_from_slice(self.rows[l].b_ss);
                }
                self.w_ss[l].matmul(nb * (nc + 2) - 2, &h_prev[l], nh, &mut ss[l][g..], g, true);
            }
            for j in 0..nc {
                for (b, col) in cols.chunks_exact_mut(COLS).enumerate() {
                    gather(&x[b * nr * nc..(b + 1) * nr * nc], nr, nc, i, j, col);
                }
                self.w0.matmul(nb, &cols, COLS, &mut y[0][(1 + j) * nh..], prow, false);
                for l in 0..nl {
                    for (row, bias) in gi.chunks_exact_mut(g).zip(bias[l].chunks_exact(g)) {
                        row.copy_from_slice(bias);
                    }
                    self.w_is[l].matmul(nb, &y[l][j * nh..], prow, &mut gi, g, true);
                    let (below, above) = y.split_at_mut(l + 1);
                    let (y_in, y_out) = (&below[l], &mut above[0]);
                    for b in 0..nb {
                        let at = b * prow + (1 + j) * nh;
                        let gh = &ss[l][(b * (nc + 2) + 1 + j) * g..];
                        let h_out = &mut h_next[l][at..at + nh];
                        if lstm {
                            let cj = (b * nc + j) * nh;
                            let c_out = &mut c_next[l][cj..cj + nh];
                            lstm_cell(&gi[b * g..], gh, &c_prev[l][cj..], h_out, c_out, &mut save);
                        } else {
                            gru_cell(&gi[b * g..], gh, &h_prev[l][at..], h_out, &mut save);
                        }
                        for u in 0..nh {
                            y_out[at + u] = h_out[u] + y_in[at + u];
                        }
                    }
                }
                for b in 0..nb {
                    let s = first + b;
                    let v = if i < req.top_rows {
                        req.top[(s * req.top_rows + i) * nc + j]
                    } else {
                        if b == 0 {
                            self.head_column(&y[nl], j, nb, &mut a, &mut z1, &mut logits);
                        }
                        draw_value(output, &logits[b * o..(b + 1) * o], req.uniforms[(s * nr + i) * nc + j] as f64)
                    };
                    out[(b * nr + i) * nc + j] = v;
                    x[(b * nr + i) * nc + j] = output.input_value(v);
                }
            }
            std::mem::swap(&mut h_prev, &mut h_next);
            std::mem::swap(&mut c_prev, &mut c_next);
        }
    }

    /// The head on column j of y_L `[nb, C + 2, H]` for every image: logits `[nb, O]`.
    fn head_column(&self, y: &[f32], j: usize, nb: usize, a: &mut [f32], z1: &mut [f32], logits: &mut [f32]) {
        let (nh, nc, o) = (self.cfg.hidden, self.cfg.cols, self.cfg.output.width());
        for (b, a) in a.chunks_exact_mut(nh).enumerate() {
            for (a, &v) in a.iter_mut().zip(&y[(b * (nc + 2) + 1 + j) * nh..]) {
                *a = v.max(0.0);
            }
        }
        for row in z1.chunks_exact_mut(nh) {
            row.copy_from_slice(self.head.b1);
        }
        self.w1.matmul(nb, a, nh, z1, nh, true);
        for (a, &z) in a.iter_mut().zip(z1.iter()) {
            *a = z.max(0.0);
        }
        for row in logits.chunks_exact_mut(o) {
            row.copy_from_slice(self.head.b2);
        }
        self.w2.matmul(nb, a, nh, logits, o, true);
    }
}
