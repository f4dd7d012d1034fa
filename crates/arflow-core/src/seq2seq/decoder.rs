//! The recurrent decoder of a conditional sequence model, shared by the encoder–decoder over tokens
//! ([`super::Seq2Seq`]) and the image captioner ([`crate::caption::Captioner`]): whatever the encoder
//! reads, it hands the decoder one initial state per layer (`h0: 'external'`), and the rest is this:
//!
//! ```text
//! inputs [B, T] → tgt_embedding → decoder (L layers of the fused cell, from s0) → head → logits [B·T, V]
//! loss = mean softmax cross-entropy over the positions whose target is not PAD
//! ```
//! Parameter names are PyTorch's for `tgt_embedding = nn.Embedding`, `decoder = nn.GRU/LSTM/RNN
//! (batch_first=True)`, `head = nn.Linear`.
//!
//! Scheduled sampling (Bengio et al. 2015) runs inside the step: given per-token coin flips, the decoder
//! inputs are first decided by a sequential no-gradient pass that feeds the model's own samples (inverse
//! CDF of the softmax, with caller-drawn uniforms) where a flip says so; the loss and gradients are then
//! those of the whole-sequence pass over the mixed inputs, exactly what a per-step graph would give since
//! no gradient flows through a sampled choice. With every flip 1 the first pass is skipped: the step is
//! teacher forcing, bit for bit.

use crate::params::{ParamSpec, ParamStore};
use crate::rnn::{run_stack, CellKind, RnnDims, StackOut};
use candle_core::{bail, Device, Result, Tensor, D};

/// Token ids every vocabulary of a decoder reserves.
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

/// Sizes of the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Target vocabulary, PAD, BOS and EOS included.
    pub vocab: usize,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub cell: CellKind,
}

impl DecoderConfig {
    /// State values per layer and batch row: H, or 2H for the LSTM's (h, c).
    pub fn state_len(&self) -> usize {
        self.cell.state_width() * self.hidden
    }
}

/// Appends the specs of one recurrent layer and direction (`{module}.weight_ih_l{l}{_reverse}`, …),
/// packed into variable `var` as the fused layer op reads them.
pub(crate) fn recurrent_specs(
    specs: &mut Vec<ParamSpec>,
    module: &str,
    (l, dir): (usize, usize),
    cell: CellKind,
    (input, hidden): (usize, usize),
    var: usize,
) {
    let g = RnnDims { cell, batch: 1, seq: 1, input, hidden }.gate_width();
    let suffix = if dir == 1 { "_reverse" } else { "" };
    let mut offset = 0;
    for (part, shape) in
        [("weight_ih", vec![g, input]), ("weight_hh", vec![g, hidden]), ("bias_ih", vec![g]), ("bias_hh", vec![g])]
    {
        let n: usize = shape.iter().product();
        specs.push(ParamSpec { name: format!("{module}.{part}_l{l}{suffix}"), shape, var, offset });
        offset += n;
    }
}

/// `ids [batch, seq]` as a tensor, after checking the count and the range.
pub(crate) fn id_tensor(
    device: &Device,
    ids: &[u32],
    (batch, seq): (usize, usize),
    vocab: usize,
    what: &str,
) -> Result<Tensor> {
    if batch == 0 || seq == 0 {
        bail!("{what}: batch and sequence length must be at least 1");
    }
    if ids.len() != batch * seq {
        bail!("{what}: expected batch {batch} × length {seq} = {} ids, got {}", batch * seq, ids.len());
    }
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        bail!("{what}: id {bad} is outside the vocabulary of {vocab}");
    }
    Tensor::from_slice(ids, (batch, seq), device)
}

/// The rows of `table [vocab, embed]` picked by `ids [B, T]`, as `[B, T, embed]`.
pub(crate) fn embed(table: &Tensor, (vocab, e): (usize, usize), ids: &Tensor) -> Result<Tensor> {
    let (batch, seq) = ids.dims2()?;
    table.reshape((vocab, e))?.index_select(&ids.flatten_all()?, 0)?.reshape((batch, seq, e))
}

/// Tensors detached and concatenated into one flat vector.
pub(crate) fn flat(ts: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for t in ts {
        out.extend(t.detach().flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Checks scheduled-sampling decisions for `n` decoder inputs.
fn check_sampling(flips: &[u8], uniforms: &[f32], n: usize) -> Result<()> {
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
    Ok(())
}

/// Where the decoder's parameters live in its model's [`ParamStore`].
pub struct Decoder {
    pub cfg: DecoderConfig,
    tgt_emb: usize,
    layers: Vec<usize>,
    head_w: usize,
    head_b: usize,
}

/// A batch for the decoder: inputs and targets `[batch, len]`, and optional scheduled-sampling flips
/// and uniforms `[batch, len]`.
#[derive(Clone, Copy)]
pub struct DecoderBatch<'a> {
    pub dec_in: &'a [u32],
    pub targets: &'a [u32],
    pub batch: usize,
    pub len: usize,
    pub sampling: Option<(&'a [u8], &'a [f32])>,
}

impl Decoder {
    /// Appends the decoder's specs (`tgt_embedding.weight`, `decoder.*_l{l}`, `head.weight`, `head.bias`)
    /// to `specs`, in variables numbered from `first_var`; returns the decoder and the next free variable.
    pub fn register(cfg: DecoderConfig, specs: &mut Vec<ParamSpec>, first_var: usize) -> (Self, usize) {
        let DecoderConfig { vocab, embed, hidden, layers, cell } = cfg;
        let tgt_emb = first_var;
        specs.push(ParamSpec {
            name: "tgt_embedding.weight".into(),
            shape: vec![vocab, embed],
            var: tgt_emb,
            offset: 0,
        });
        let mut var = tgt_emb + 1;
        let mut decoder = Vec::new();
        for l in 0..layers {
            recurrent_specs(specs, "decoder", (l, 0), cell, (if l == 0 { embed } else { hidden }, hidden), var);
            decoder.push(var);
            var += 1;
        }
        let (head_w, head_b) = (var, var + 1);
        specs.push(ParamSpec { name: "head.weight".into(), shape: vec![vocab, hidden], var: head_w, offset: 0 });
        specs.push(ParamSpec { name: "head.bias".into(), shape: vec![vocab], var: head_b, offset: 0 });
        (Decoder { cfg, tgt_emb, layers: decoder, head_w, head_b }, var + 2)
    }

    fn var(store: &ParamStore, i: usize) -> &Tensor {
        store.vars[i].as_tensor()
    }

    /// Logits `[B·T, V]` of the decoder over inputs `[B, T]` from `s0`, and its final states.
    pub fn logits(&self, store: &ParamStore, dec_in: &Tensor, s0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let c = self.cfg;
        let (batch, seq) = dec_in.dims2()?;
        let y = embed(Self::var(store, self.tgt_emb), (c.vocab, c.embed), dec_in)?;
        let params: Vec<Vec<&Tensor>> = self.layers.iter().map(|&v| vec![Self::var(store, v)]).collect();
        let StackOut { top, finals } = run_stack(c.cell, c.hidden, &y, &params, s0)?;
        let hs = top.contiguous()?.reshape((batch * seq, c.hidden))?;
        let head = Self::var(store, self.head_w).reshape((c.vocab, c.hidden))?;
        let logits = hs.matmul(&head.t()?)?.broadcast_add(Self::var(store, self.head_b))?;
        Ok((logits, finals))
    }

    /// The decoder inputs fed under scheduled sampling: position 0 and every position whose flip is 1
    /// (or whose input is PAD) keep the given input; the others take a sample from the softmax the
    /// model predicts at the previous position, given the mixed prefix (inverse CDF at `uniforms`).
    fn mix_inputs(
        &self,
        store: &ParamStore,
        s0: &[Tensor],
        b: &DecoderBatch,
        flips: &[u8],
        u: &[f32],
    ) -> Result<Vec<u32>> {
        let (batch, seq) = (b.batch, b.len);
        let mut inputs = b.dec_in.to_vec();
        let mut state: Vec<Tensor> = s0.iter().map(|t| t.detach()).collect();
        for t in 0..seq - 1 {
            let tokens: Vec<u32> = (0..batch).map(|r| inputs[r * seq + t]).collect();
            let (logits, next) = self.logits(store, &Tensor::from_vec(tokens, (batch, 1), &store.device)?, &state)?;
            state = next;
            let logits = logits.to_vec2::<f32>()?;
            for (r, row) in logits.iter().enumerate() {
                let at = r * seq + t + 1;
                if b.dec_in[at] != PAD && flips[at] == 0 {
                    inputs[at] = sample_inverse_cdf(row, u[at] as f64);
                }
            }
        }
        Ok(inputs)
    }

    /// Mean cross-entropy over the non-PAD targets, and their count.
    fn loss(&self, device: &Device, logits: &Tensor, targets: &[u32]) -> Result<(Tensor, usize)> {
        let keep: Vec<u32> = (0..targets.len() as u32).filter(|&i| targets[i as usize] != PAD).collect();
        if keep.is_empty() {
            bail!("targets: every position is PAD; a batch needs at least one target token");
        }
        let n = keep.len();
        let y: Vec<u32> = keep.iter().map(|&i| targets[i as usize]).collect();
        let rows = Tensor::from_vec(keep, n, device)?;
        let y = Tensor::from_vec(y, n, device)?;
        Ok((crate::loss::cross_entropy(&logits.index_select(&rows, 0)?, &y)?, n))
    }

    /// Checks a batch's inputs and targets (before the caller spends time encoding).
    pub fn check(&self, device: &Device, b: &DecoderBatch) -> Result<()> {
        id_tensor(device, b.dec_in, (b.batch, b.len), self.cfg.vocab, "decoder inputs")?;
        id_tensor(device, b.targets, (b.batch, b.len), self.cfg.vocab, "targets")?;
        Ok(())
    }

    /// Everything from the initial states `s0` to the loss: `(loss, tokens, mixed inputs)`. The batch
    /// must have passed [`Self::check`].
    pub fn batch_loss(&self, store: &ParamStore, s0: &[Tensor], b: &DecoderBatch) -> Result<(Tensor, usize, Vec<u32>)> {
        let inputs = match b.sampling {
            Some((flips, uniforms)) => {
                check_sampling(flips, uniforms, b.batch * b.len)?;
                if flips.iter().all(|&f| f == 1) {
                    b.dec_in.to_vec()
                } else {
                    self.mix_inputs(store, s0, b, flips, uniforms)?
                }
            }
            None => b.dec_in.to_vec(),
        };
        let dec = Tensor::from_slice(&inputs, (b.batch, b.len), &store.device)?;
        let (logits, _) = self.logits(store, &dec, s0)?;
        let (loss, tokens) = self.loss(&store.device, &logits, b.targets)?;
        Ok((loss, tokens, inputs))
    }

    /// One decoder step of `N` hypotheses: feeds `tokens [N]` from `state [L, N, S]` and returns the
    /// new state and the log-probabilities `[N, V]` of the next token.
    pub fn decode_step(&self, store: &ParamStore, state: &[f32], tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
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
        let ids = id_tensor(&store.device, tokens, (n, 1), c.vocab, "decoder tokens")?;
        let s0 = (0..c.layers)
            .map(|l| Tensor::from_slice(&state[l * n * s..(l + 1) * n * s], (n, s), &store.device))
            .collect::<Result<Vec<_>>>()?;
        let (logits, finals) = self.logits(store, &ids, &s0)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        Ok((flat(&finals)?, log_probs.flatten_all()?.to_vec1::<f32>()?))
    }
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
