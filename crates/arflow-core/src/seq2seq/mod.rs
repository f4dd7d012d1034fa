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
//! The decoder half (target embedding, decoder stack, head, loss, scheduled sampling, the single step
//! of greedy and beam search) is [`decoder::Decoder`], which the image captioner shares.

use crate::device::Dev;
use crate::optim::AdamWConfig;
use crate::params::{check_layer_counts, NamedGrads, ParamSpec, ParamStore, StepStats};
use crate::rnn::{run_stack, CellKind, StackOut};
use candle_core::{bail, DType, Result, Tensor};

pub mod decoder;

use decoder::{embed, flat, id_tensor, recurrent_specs, Decoder, DecoderBatch, DecoderConfig};
pub use decoder::{sample_inverse_cdf, BOS, EOS, PAD};

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
        check_layer_counts("seq2seq", &[("layers", self.layers)])?;
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
        self.decoder().state_len()
    }

    fn decoder(&self) -> DecoderConfig {
        DecoderConfig {
            vocab: self.tgt_vocab,
            embed: self.embed,
            hidden: self.hidden,
            layers: self.layers,
            cell: self.cell,
        }
    }
}

/// Where the encoder's parameters live in the store's variables.
struct Vars {
    src_emb: usize,
    /// `encoder[l][dir]`
    encoder: Vec<Vec<usize>>,
    /// `(weight, bias)` of each layer's bridge.
    bridge: Vec<(usize, usize)>,
}

pub struct Seq2Seq {
    pub cfg: Seq2SeqConfig,
    store: ParamStore,
    vars: Vars,
    decoder: Decoder,
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
        let Seq2SeqConfig { src_vocab, embed, hidden, layers, cell, .. } = cfg;
        let (dirs, s) = (cfg.directions(), cfg.state_len());
        let mut specs = Vec::new();
        specs.push(ParamSpec { name: "src_embedding.weight".into(), shape: vec![src_vocab, embed], var: 0, offset: 0 });
        let mut var = 1;
        let mut encoder = Vec::new();
        for l in 0..layers {
            let input = if l == 0 { embed } else { dirs * hidden };
            let mut per = Vec::new();
            for dir in 0..dirs {
                recurrent_specs(&mut specs, "encoder", (l, dir), cell, (input, hidden), var);
                per.push(var);
                var += 1;
            }
            encoder.push(per);
        }
        let mut bridge = Vec::new();
        for l in 0..layers {
            specs.push(ParamSpec { name: format!("bridge.{l}.weight"), shape: vec![s, dirs * s], var, offset: 0 });
            specs.push(ParamSpec { name: format!("bridge.{l}.bias"), shape: vec![s], var: var + 1, offset: 0 });
            bridge.push((var, var + 1));
            var += 2;
        }
        let (decoder, _) = Decoder::register(cfg.decoder(), &mut specs, var);
        let vars = Vars { src_emb: 0, encoder, bridge };
        Ok(Seq2Seq { cfg, store: ParamStore::new(specs, device, "seq2seq")?, vars, decoder })
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

    fn source(&self, src: &[u32], batch: usize, src_len: usize) -> Result<Tensor> {
        id_tensor(&self.store.device, src, (batch, src_len), self.cfg.src_vocab, "source")
    }

    /// The decoder's initial state of every layer `[B, S]`, from the source `[B, Ts]`.
    fn encode_tensor(&self, src: &Tensor) -> Result<Vec<Tensor>> {
        let c = self.cfg;
        let batch = src.dim(0)?;
        let (dirs, s) = (c.directions(), c.state_len());
        let x = embed(self.var(self.vars.src_emb), (c.src_vocab, c.embed), src)?;
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
        let src = self.source(src, batch, src_len)?;
        let b = DecoderBatch { dec_in, targets, batch, len: tgt_len, sampling };
        self.decoder.check(&self.store.device, &b)?;
        let s0 = self.encode_tensor(&src)?;
        self.decoder.batch_loss(&self.store, &s0, &b)
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
        flat(&self.encode_tensor(&self.source(src, batch, src_len)?)?)
    }

    /// One decoder step of `N` hypotheses: feeds `tokens [N]` from `state [L, N, S]` and returns the
    /// new state and the log-probabilities `[N, V]` of the next token.
    pub fn decode_step(&self, state: &[f32], tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.decoder.decode_step(&self.store, state, tokens)
    }
}

#[cfg(test)]
mod tests;
