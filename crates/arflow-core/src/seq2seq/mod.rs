//! Encoder–decoder (Sutskever et al. 2014; Cho et al. 2014) over token sequences, for grapheme-to-phoneme
//! conversion and any `source → target` task:
//!
//! ```text
//! source ids → src_embedding → encoder (L layers, uni- or bidirectional)
//!            → bridge: decoder layer l's initial state s0_l = tanh(W_l [final states of encoder layer l] + b_l)
//! target     → tgt_embedding → decoder (L layers, from s0) → head → softmax over target tokens
//! ```
//! The decoder's h0 is computed from the encoder (`h0: 'external'`). Parameter names are PyTorch's for
//! `src_embedding = nn.Embedding`, `encoder = nn.GRU/LSTM/RNN(bidirectional=…, batch_first=True)`,
//! `bridge = nn.ModuleList([nn.Linear…])`, `tgt_embedding`, `decoder`, `head = nn.Linear`.
//!
//! Batches are bucketed by source length, so sources carry no padding and the encoder needs no mask.
//! Targets are padded with PAD (id 0) after EOS; padded positions add nothing to the loss.
//!
//! Scheduled sampling (Bengio et al. 2015) runs inside the training step: given per-token coin flips,
//! the decoder inputs are first decided by a sequential no-gradient pass that feeds the model's own
//! samples (inverse CDF of the softmax, with caller-drawn uniforms) where a flip says so; the loss and
//! gradients are then those of the whole-sequence pass over the mixed inputs, exactly what a
//! per-step graph would give since no gradient flows through a sampled choice. With every flip 1 the
//! first pass is skipped: the step is teacher forcing, bit for bit.

use crate::device::Dev;
use crate::optim::AdamWConfig;
use crate::params::{NamedGrads, ParamSpec, ParamStore, StepStats};
use crate::rnn::{run_stack, CellKind, RnnDims, StackOut};
use candle_core::{bail, DType, Result, Tensor, D};

/// Token ids every vocabulary of an encoder–decoder reserves.
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq2SeqConfig {
    pub src_vocab: usize,
    pub tgt_vocab: usize,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub cell: CellKind,
    pub bidirectional: bool,
}

impl Seq2SeqConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("embed", self.embed), ("hidden", self.hidden), ("layers", self.layers)] {
            if v == 0 {
                bail!("seq2seq config: {name} must be at least 1");
            }
        }
        for (name, v) in [("source", self.src_vocab), ("target", self.tgt_vocab)] {
            if v <= EOS as usize + 1 {
                bail!("seq2seq config: the {name} vocabulary must hold PAD, BOS, EOS and at least one token, got {v}");
            }
        }
        Ok(())
    }

    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// State values per layer and batch row: H, or 2H for the LSTM's (h, c).
    pub fn state_len(&self) -> usize {
        self.cell.state_width() * self.hidden
    }
}

/// Where each group of parameters lives in the store's variables.
struct Vars {
    src_emb: usize,
    /// `encoder[l][dir]`
    encoder: Vec<Vec<usize>>,
    /// `(weight, bias)` of each layer's bridge.
    bridge: Vec<(usize, usize)>,
    tgt_emb: usize,
    decoder: Vec<usize>,
    head_w: usize,
    head_b: usize,
}

pub struct Seq2Seq {
    pub cfg: Seq2SeqConfig,
    store: ParamStore,
    vars: Vars,
}

/// What a training step or a gradient evaluation reports besides the loss.
pub struct Seq2SeqStep {
    pub stats: StepStats,
    /// Non-PAD target tokens the loss averages over.
    pub tokens: usize,
    /// The decoder inputs actually fed `[B, T]` (the ground truth where teacher-forced, else samples).
    pub inputs: Vec<u32>,
}

impl Seq2Seq {
    /// A model with all parameters zero; callers load an initialisation with [`ParamStore::set_param`].
    pub fn new(cfg: Seq2SeqConfig, dev: Dev) -> Result<Self> {
        cfg.validate()?;
        let device = dev.device()?;
        let Seq2SeqConfig { src_vocab, tgt_vocab, embed, hidden, layers, cell, .. } = cfg;
        let (dirs, s) = (cfg.directions(), cfg.state_len());
        let mut specs = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, var: usize, offset: usize| {
            specs.push(ParamSpec { name, shape, var, offset });
        };
        let mut var = 0;
        let mut next = || {
            var += 1;
            var - 1
        };
        let src_emb = next();
        add("src_embedding.weight".into(), vec![src_vocab, embed], src_emb, 0);
        let recurrent = |module: &str,
                         l: usize,
                         dir: usize,
                         input: usize,
                         v: usize,
                         add: &mut dyn FnMut(String, Vec<usize>, usize, usize)| {
            let g = RnnDims { cell, batch: 1, seq: 1, input, hidden }.gate_width();
            let suffix = if dir == 1 { "_reverse" } else { "" };
            let mut offset = 0;
            for (part, shape) in [
                ("weight_ih", vec![g, input]),
                ("weight_hh", vec![g, hidden]),
                ("bias_ih", vec![g]),
                ("bias_hh", vec![g]),
            ] {
                let n: usize = shape.iter().product();
                add(format!("{module}.{part}_l{l}{suffix}"), shape, v, offset);
                offset += n;
            }
        };
        let mut encoder = Vec::new();
        for l in 0..layers {
            let input = if l == 0 { embed } else { dirs * hidden };
            let mut per = Vec::new();
            for dir in 0..dirs {
                let v = next();
                recurrent("encoder", l, dir, input, v, &mut add);
                per.push(v);
            }
            encoder.push(per);
        }
        let mut bridge = Vec::new();
        for l in 0..layers {
            let (w, b) = (next(), next());
            add(format!("bridge.{l}.weight"), vec![s, dirs * s], w, 0);
            add(format!("bridge.{l}.bias"), vec![s], b, 0);
            bridge.push((w, b));
        }
        let tgt_emb = next();
        add("tgt_embedding.weight".into(), vec![tgt_vocab, embed], tgt_emb, 0);
        let mut decoder = Vec::new();
        for l in 0..layers {
            let v = next();
            recurrent("decoder", l, 0, if l == 0 { embed } else { hidden }, v, &mut add);
            decoder.push(v);
        }
        let (head_w, head_b) = (next(), next());
        add("head.weight".into(), vec![tgt_vocab, hidden], head_w, 0);
        add("head.bias".into(), vec![tgt_vocab], head_b, 0);
        let vars = Vars { src_emb, encoder, bridge, tgt_emb, decoder, head_w, head_b };
        Ok(Seq2Seq { cfg, store: ParamStore::new(specs, device, "seq2seq")?, vars })
    }

    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    fn var(&self, i: usize) -> &Tensor {
        self.store.vars[i].as_tensor()
    }

    fn ids(&self, ids: &[u32], batch: usize, seq: usize, vocab: usize, what: &str) -> Result<Tensor> {
        if batch == 0 || seq == 0 {
            bail!("{what}: batch and sequence length must be at least 1");
        }
        if ids.len() != batch * seq {
            bail!("{what}: expected batch {batch} × length {seq} = {} ids, got {}", batch * seq, ids.len());
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            bail!("{what}: id {bad} is outside the vocabulary of {vocab}");
        }
        Tensor::from_slice(ids, (batch, seq), &self.store.device)
    }

    fn embed(&self, table: usize, vocab: usize, ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let e = self.cfg.embed;
        self.var(table).reshape((vocab, e))?.index_select(&ids.flatten_all()?, 0)?.reshape((batch, seq, e))
    }

    /// The decoder's initial state of every layer `[B, S]`, from the source `[B, Ts]`.
    fn encode_tensor(&self, src: &Tensor) -> Result<Vec<Tensor>> {
        let c = self.cfg;
        let batch = src.dim(0)?;
        let (dirs, s) = (c.directions(), c.state_len());
        let x = self.embed(self.vars.src_emb, c.src_vocab, src)?;
        let params: Vec<Vec<&Tensor>> =
            self.vars.encoder.iter().map(|per| per.iter().map(|&v| self.var(v)).collect()).collect();
        let zeros = Tensor::zeros((batch, s), DType::F32, &self.store.device)?;
        let StackOut { finals, .. } = run_stack(c.cell, c.hidden, &x, &params, &vec![zeros; c.layers * dirs])?;
        (0..c.layers)
            .map(|l| {
                let fin = Tensor::cat(&finals[l * dirs..(l + 1) * dirs], 1)?;
                let (w, b) = self.vars.bridge[l];
                let w = self.var(w).reshape((s, dirs * s))?;
                fin.matmul(&w.t()?)?.broadcast_add(self.var(b))?.tanh()
            })
            .collect()
    }

    /// Logits `[B·T, V]` of the decoder over inputs `[B, T]` from `s0`, and its final states.
    fn decode_tensor(&self, dec_in: &Tensor, s0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let c = self.cfg;
        let (batch, seq) = dec_in.dims2()?;
        let y = self.embed(self.vars.tgt_emb, c.tgt_vocab, dec_in)?;
        let params: Vec<Vec<&Tensor>> = self.vars.decoder.iter().map(|&v| vec![self.var(v)]).collect();
        let StackOut { top, finals } = run_stack(c.cell, c.hidden, &y, &params, s0)?;
        let hs = top.contiguous()?.reshape((batch * seq, c.hidden))?;
        let head = self.var(self.vars.head_w).reshape((c.tgt_vocab, c.hidden))?;
        let logits = hs.matmul(&head.t()?)?.broadcast_add(self.var(self.vars.head_b))?;
        Ok((logits, finals))
    }

    /// The decoder inputs fed under scheduled sampling: position 0 and every position whose flip is 1
    /// (or whose input is PAD) keep the given input; the others take a sample from the softmax the
    /// model predicts at the previous position, given the mixed prefix (inverse CDF at `uniforms`).
    fn mix_inputs(
        &self,
        s0: &[Tensor],
        dec_in: &[u32],
        batch: usize,
        seq: usize,
        flips: &[u8],
        uniforms: &[f32],
    ) -> Result<Vec<u32>> {
        let v = self.cfg.tgt_vocab;
        let mut inputs = dec_in.to_vec();
        let mut state: Vec<Tensor> = s0.iter().map(|t| t.detach()).collect();
        for t in 0..seq - 1 {
            let tokens: Vec<u32> = (0..batch).map(|b| inputs[b * seq + t]).collect();
            let (logits, next) =
                self.decode_tensor(&Tensor::from_vec(tokens, (batch, 1), &self.store.device)?, &state)?;
            state = next;
            let logits = logits.to_vec2::<f32>()?;
            for (b, row) in logits.iter().enumerate() {
                let at = b * seq + t + 1;
                if dec_in[at] != PAD && flips[at] == 0 {
                    inputs[at] = sample_inverse_cdf(row, uniforms[at] as f64);
                }
            }
            debug_assert_eq!(logits.len(), batch);
            debug_assert!(logits.iter().all(|r| r.len() == v));
        }
        Ok(inputs)
    }

    /// Mean cross-entropy over the non-PAD targets, and their count.
    fn loss(&self, logits: &Tensor, targets: &[u32]) -> Result<(Tensor, usize)> {
        let keep: Vec<u32> = (0..targets.len() as u32).filter(|&i| targets[i as usize] != PAD).collect();
        if keep.is_empty() {
            bail!("targets: every position is PAD; a batch needs at least one target token");
        }
        let n = keep.len();
        let rows = Tensor::from_vec(keep.clone(), n, &self.store.device)?;
        let y: Vec<u32> = keep.iter().map(|&i| targets[i as usize]).collect();
        let y = Tensor::from_vec(y, n, &self.store.device)?;
        Ok((crate::loss::cross_entropy(&logits.index_select(&rows, 0)?, &y)?, n))
    }

    /// Checks a batch and runs everything up to the loss: `(loss, tokens, mixed inputs)`.
    #[allow(clippy::too_many_arguments)]
    fn batch_loss(
        &self,
        src: &[u32],
        dec_in: &[u32],
        targets: &[u32],
        batch: usize,
        src_len: usize,
        tgt_len: usize,
        sampling: Option<(&[u8], &[f32])>,
    ) -> Result<(Tensor, usize, Vec<u32>)> {
        let c = self.cfg;
        let src = self.ids(src, batch, src_len, c.src_vocab, "source")?;
        self.ids(dec_in, batch, tgt_len, c.tgt_vocab, "decoder inputs")?;
        self.ids(targets, batch, tgt_len, c.tgt_vocab, "targets")?;
        let s0 = self.encode_tensor(&src)?;
        let inputs = match sampling {
            Some((flips, uniforms)) => {
                let n = batch * tgt_len;
                if flips.len() != n || uniforms.len() != n {
                    bail!(
                        "scheduled sampling: flips and uniforms need {n} values each, got {} and {}",
                        flips.len(),
                        uniforms.len()
                    );
                }
                if let Some(f) = flips.iter().find(|&&f| f > 1) {
                    bail!("scheduled sampling: flips must be 0 (sample) or 1 (ground truth), got {f}");
                }
                if let Some(u) = uniforms.iter().find(|u| !(0.0..1.0).contains(*u)) {
                    bail!("scheduled sampling: uniforms must lie in [0, 1), got {u}");
                }
                if flips.iter().all(|&f| f == 1) {
                    dec_in.to_vec()
                } else {
                    self.mix_inputs(&s0, dec_in, batch, tgt_len, flips, uniforms)?
                }
            }
            None => dec_in.to_vec(),
        };
        let dec = Tensor::from_slice(&inputs, (batch, tgt_len), &self.store.device)?;
        let (logits, _) = self.decode_tensor(&dec, &s0)?;
        let (loss, tokens) = self.loss(&logits, targets)?;
        Ok((loss, tokens, inputs))
    }

    /// One training step: encoder, bridge, decoder (teacher-forced or scheduled-sampled), mean
    /// cross-entropy over the non-PAD targets, backward, clipping, AdamW. A non-finite loss or gradient
    /// is an error and leaves every parameter untouched.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        src: &[u32],
        dec_in: &[u32],
        targets: &[u32],
        batch: usize,
        src_len: usize,
        tgt_len: usize,
        sampling: Option<(&[u8], &[f32])>,
        cfg: &AdamWConfig,
    ) -> Result<Seq2SeqStep> {
        crate::params::check_lr(cfg)?;
        let (loss, tokens, inputs) = self.batch_loss(src, dec_in, targets, batch, src_len, tgt_len, sampling)?;
        let stats = self.store.train_step(&loss, cfg)?;
        Ok(Seq2SeqStep { stats, tokens, inputs })
    }

    /// The mean loss and its gradient for every parameter; changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads(
        &self,
        src: &[u32],
        dec_in: &[u32],
        targets: &[u32],
        batch: usize,
        src_len: usize,
        tgt_len: usize,
        sampling: Option<(&[u8], &[f32])>,
    ) -> Result<(f64, NamedGrads, Vec<u32>)> {
        let (loss, _, inputs) = self.batch_loss(src, dec_in, targets, batch, src_len, tgt_len, sampling)?;
        let grads = self.store.named_grads(&loss.backward()?)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads, inputs))
    }

    /// Summed NLL (nats) of the non-PAD targets under teacher forcing, and their count.
    #[allow(clippy::too_many_arguments)]
    pub fn nll(
        &self,
        src: &[u32],
        dec_in: &[u32],
        targets: &[u32],
        batch: usize,
        src_len: usize,
        tgt_len: usize,
    ) -> Result<(f64, usize)> {
        let (loss, tokens, _) = self.batch_loss(src, dec_in, targets, batch, src_len, tgt_len, None)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * tokens as f64, tokens))
    }

    /// The decoder's initial state `[L, B, S]` for sources `[B, Ts]` (no gradient).
    pub fn encode(&self, src: &[u32], batch: usize, src_len: usize) -> Result<Vec<f32>> {
        let src = self.ids(src, batch, src_len, self.cfg.src_vocab, "source")?;
        flat(&self.encode_tensor(&src)?)
    }

    /// One decoder step of `N` hypotheses: feeds `tokens [N]` from `state [L, N, S]` and returns the
    /// new state and the log-probabilities `[N, V]` of the next token.
    pub fn decode_step(&self, state: &[f32], tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = self.cfg;
        let (n, s) = (tokens.len(), c.state_len());
        if state.len() != c.layers * n * s {
            bail!(
                "decoder state holds {} values; [layers {}, hypotheses {n}, state {s}] needs {}",
                state.len(),
                c.layers,
                c.layers * n * s
            );
        }
        let ids = self.ids(tokens, n, 1, c.tgt_vocab, "decoder tokens")?;
        let s0 = (0..c.layers)
            .map(|l| Tensor::from_slice(&state[l * n * s..(l + 1) * n * s], (n, s), &self.store.device))
            .collect::<Result<Vec<_>>>()?;
        let (logits, finals) = self.decode_tensor(&ids, &s0)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        Ok((flat(&finals)?, log_probs.flatten_all()?.to_vec1::<f32>()?))
    }
}

fn flat(ts: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for t in ts {
        out.extend(t.detach().flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// The smallest k with Σ_{j≤k} softmax(logits)_j > u, summed in f64 in vocabulary order (the last
/// token of non-zero probability if rounding leaves the total at or below u).
pub fn sample_inverse_cdf(logits: &[f32], u: f64) -> u32 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let weights: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut cum = 0.0;
    let mut last = 0;
    for (k, w) in weights.iter().enumerate() {
        let p = w / total;
        cum += p;
        if p > 0.0 {
            last = k;
        }
        if cum > u {
            return k as u32;
        }
    }
    last as u32
}

#[cfg(test)]
mod tests;
