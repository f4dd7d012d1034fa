//! Character language model: embedding → recurrent stack (GRU, LSTM or tanh RNN) → linear head →
//! softmax cross-entropy.
//!
//! Parameters carry PyTorch `state_dict` names (`embedding.weight`, `gru.weight_ih_l0` — `lstm.…` or
//! `rnn.…` after the cell —, `head.weight`, `head.bias`). Each layer's four tensors live packed in one
//! variable, the input of the fused layer op; [`ParamSpec`] maps every public name onto its slice of
//! that storage. States are `[L, B, S]` with S = H, or 2H for the LSTM (each row h then c).
//!
//! **Joint prediction of the next n characters** (`ahead` = n ≥ 2): besides `head` (k = 1, the next
//! character), heads `ahead.{k}.weight [V, H]`, `ahead.{k}.bias [V]` for k = 2..n read the same top
//! hidden state h_t and give p(x_{t+k} | x_{≤t}); the joint is factorised,
//! −log p(x_{t+1..t+n} | x_{≤t}) = Σ_k CE_k, and the training loss is Σ_k (mean over the scored
//! positions of CE_k). Targets then come as n blocks `[n, B, T]`, block k−1 holding x_{t+k}; a target
//! of [`IGNORE`] (past the end of the text) in blocks k ≥ 2 is not scored. With n = 1 the model, its
//! parameters and its computation are exactly those of a plain LM.
//!
//! **Stepping and sampling** ([`CharLm::step`], [`CharLm::sample_session`]) run on CPU through
//! [`fast`]: the weights packed once, each step a few packed products and fused cells, no tensor
//! graph; the draws replicate the TypeScript sampler bit for bit ([`sampling`]).

mod fast;
pub mod sampling;
mod train;

use self::fast::{FastLm, StepScratch};
use self::sampling::{sample_logits, SampleScratch, Sampling, Sfc32};
use crate::alloc::BufferPool;
use crate::device::Dev;
use crate::loss::{cross_entropy, IGNORE};
use crate::optim::AdamWConfig;
use crate::params::{check_layer_counts, ParamSpec, ParamStore, StepStats};
use crate::rnn::{run_stack, CellKind, RnnDims, StackOut};
use candle_core::{bail, DType, Result, Tensor, Var};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Streams below this many draw on the calling thread (a draw is ~1 µs at V ≈ 80).
const PAR_MIN_DRAWS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharLmConfig {
    pub vocab: usize,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub cell: CellKind,
    /// A learned initial state: the parameter `h0 [L, S]`, used for every stream wherever no state is
    /// given (and receiving gradients there), in place of zeros.
    pub learned_h0: bool,
    /// Heads predicting the next `ahead` characters jointly (1: the next character only).
    pub ahead: usize,
}

impl CharLmConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab", self.vocab),
            ("embed", self.embed),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("ahead", self.ahead),
        ] {
            if v == 0 {
                bail!("char LM config: {name} must be at least 1");
            }
        }
        if self.vocab < 2 {
            bail!("char LM config: vocab must hold at least 2 symbols, got {}", self.vocab);
        }
        check_layer_counts("char LM", &[("layers", self.layers), ("ahead", self.ahead)])
    }

    fn layer_dims(&self, layer: usize, batch: usize, seq: usize) -> RnnDims {
        let input = if layer == 0 { self.embed } else { self.hidden };
        RnnDims { cell: self.cell, batch, seq, input, hidden: self.hidden }
    }

    /// State values per layer and batch row: H, or 2H for the LSTM's (h, c).
    pub fn state_len(&self) -> usize {
        self.cell.state_width() * self.hidden
    }

    /// The variable holding head k's weight (its bias is the next one).
    fn head_var(&self, k: usize) -> usize {
        if k == 1 {
            1 + self.layers
        } else {
            3 + self.layers + usize::from(self.learned_h0) + 2 * (k - 2)
        }
    }
}

/// Summed negative log-likelihood per head (nats; head k at index k − 1, over its scored positions), the
/// number of positions each head scored, and the final state `[L, B, S]`. The series model returns the
/// same.
pub struct NllAhead {
    pub nll: Vec<f64>,
    pub rows: Vec<usize>,
    pub state: Vec<f32>,
}

/// Gradients of the mean loss of one batch, by parameter name, and w.r.t. the initial state.
pub struct LossGrads {
    pub loss: f64,
    pub grads: Vec<(String, Vec<f32>)>,
    pub dh0: Vec<f32>,
}

/// How [`CharLm::loss_and_grads_by`] computes: the written-out CPU pass ([`train`]), or candle's
/// autograd over the tensor graph (the path of other devices, and the CPU pass's test oracle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradPath {
    WrittenOut,
    Graph,
}

pub struct CharLm {
    pub cfg: CharLmConfig,
    /// Private: every write to a parameter goes through `&mut self` ([`CharLm::params_mut`],
    /// [`CharLm::train_step`]), which drops `fast`.
    store: ParamStore,
    /// Final state of the last training batch, `[L, B, S]`, detached: truncated BPTT carries it.
    carry: Option<(usize, Vec<f32>)>,
    /// The weights packed for single steps, built on the first step after any change to them.
    fast: OnceLock<FastLm>,
    /// The training pass's large buffers, kept from one step to the next.
    buffers: BufferPool,
}

impl CharLm {
    /// A model with all parameters zero; callers load an initialisation with [`ParamStore::set_param`].
    pub fn new(cfg: CharLmConfig, dev: Dev) -> Result<Self> {
        cfg.validate()?;
        let device = dev.device()?;
        let CharLmConfig { vocab, embed, hidden, layers, cell, learned_h0, ahead } = cfg;
        let mut specs =
            vec![ParamSpec { name: "embedding.weight".into(), shape: vec![vocab, embed], var: 0, offset: 0 }];
        for l in 0..layers {
            let d = cfg.layer_dims(l, 1, 1);
            let var = 1 + l;
            let (g, c) = (d.gate_width(), cell.name());
            let parts = [
                (format!("{c}.weight_ih_l{l}"), vec![g, d.input]),
                (format!("{c}.weight_hh_l{l}"), vec![g, hidden]),
                (format!("{c}.bias_ih_l{l}"), vec![g]),
                (format!("{c}.bias_hh_l{l}"), vec![g]),
            ];
            let mut offset = 0;
            for (name, shape) in parts {
                let n: usize = shape.iter().product();
                specs.push(ParamSpec { name, shape, var, offset });
                offset += n;
            }
        }
        specs.push(ParamSpec { name: "head.weight".into(), shape: vec![vocab, hidden], var: 1 + layers, offset: 0 });
        specs.push(ParamSpec { name: "head.bias".into(), shape: vec![vocab], var: 2 + layers, offset: 0 });
        if learned_h0 {
            specs.push(ParamSpec {
                name: "h0".into(),
                shape: vec![layers, cfg.state_len()],
                var: 3 + layers,
                offset: 0,
            });
        }
        for k in 2..=ahead {
            let var = cfg.head_var(k);
            specs.push(ParamSpec { name: format!("ahead.{k}.weight"), shape: vec![vocab, hidden], var, offset: 0 });
            specs.push(ParamSpec { name: format!("ahead.{k}.bias"), shape: vec![vocab], var: var + 1, offset: 0 });
        }
        Ok(CharLm {
            cfg,
            store: ParamStore::new(specs, device, "char LM")?,
            carry: None,
            fast: OnceLock::new(),
            buffers: BufferPool::default(),
        })
    }

    /// Parameters by name and their optimizer state, to read (writes go through
    /// [`CharLm::params_mut`], which keeps the packed sampling weights in step with them).
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// Parameters and optimizer state to change. Drops the packed copy of the weights the step path
    /// uses: the next step packs them again from what the parameters then hold.
    pub fn params_mut(&mut self) -> &mut ParamStore {
        self.fast.take();
        &mut self.store
    }

    /// The packed weights of the step path, packed now if a change dropped them (CPU only).
    fn fast(&self) -> Result<&FastLm> {
        if let Some(f) = self.fast.get() {
            return Ok(f);
        }
        let f = FastLm::new(&self.cfg, &self.store)?;
        Ok(self.fast.get_or_init(|| f))
    }

    /// Whether steps run through the packed single-step path (CPU) or the tensor graph (CUDA).
    fn stepping_fast(&self) -> bool {
        self.store.device.is_cpu()
    }

    /// The carried training state `(batch, [L, B, S])`, if a training step has run since the last reset.
    pub fn carry(&self) -> Option<(usize, Vec<f32>)> {
        self.carry.clone()
    }

    pub fn set_carry(&mut self, carry: Option<(usize, Vec<f32>)>) -> Result<()> {
        if let Some((b, ref h)) = carry {
            self.check_state(h, b)?;
        }
        self.carry = carry;
        Ok(())
    }

    fn check_state(&self, state: &[f32], batch: usize) -> Result<()> {
        let s = self.cfg.state_len();
        let want = self.cfg.layers * batch * s;
        if state.len() != want {
            bail!(
                "hidden state holds {} values; [layers {}, batch {batch}, state {s}] needs {want}",
                state.len(),
                self.cfg.layers,
            );
        }
        Ok(())
    }

    /// Target blocks `[B·T]` each: one (the next character) or, for a model with `ahead` = n, n (then
    /// required with `all`); blocks after the first may hold [`IGNORE`].
    fn target_blocks<'t>(
        &self,
        t: &'t [u32],
        batch: usize,
        seq: usize,
        all: bool,
        what: &str,
    ) -> Result<Vec<&'t [u32]>> {
        let (n, rows) = (self.cfg.ahead, batch * seq);
        let blocks = if t.len() == rows && !(all && n > 1) { 1 } else { n };
        if t.len() != blocks * rows {
            bail!(
                "{what}: expected {}batch {batch} × seq {seq} = {} ids{}, got {}",
                if n > 1 { format!("{n} blocks (one per predicted step) of ") } else { String::new() },
                n * rows,
                if n > 1 && !all { format!(" (or {rows} for the next character only)") } else { String::new() },
                t.len()
            );
        }
        self.check_ids(&t[..rows], batch, seq, what)?;
        for k in 1..blocks {
            let b = &t[k * rows..(k + 1) * rows];
            if let Some(&bad) = b.iter().find(|&&i| i != IGNORE && i as usize >= self.cfg.vocab) {
                bail!("{what}: id {bad} ({} ahead) is outside the vocabulary of {}", k + 1, self.cfg.vocab);
            }
        }
        Ok(t.chunks_exact(rows).take(blocks).collect())
    }

    /// [`CharLm::target_blocks`] as tensors `[B·T]`.
    fn targets(&self, t: &[u32], batch: usize, seq: usize, all: bool, what: &str) -> Result<Vec<Tensor>> {
        let rows = batch * seq;
        self.target_blocks(t, batch, seq, all, what)?
            .into_iter()
            .map(|b| Tensor::from_slice(b, rows, &self.store.device))
            .collect()
    }

    fn ids(&self, ids: &[u32], batch: usize, seq: usize, what: &str) -> Result<Tensor> {
        self.check_ids(ids, batch, seq, what)?;
        Tensor::from_slice(ids, (batch, seq), &self.store.device)
    }

    /// Errors unless `ids` holds `batch × seq` ids, each inside the vocabulary.
    fn check_ids(&self, ids: &[u32], batch: usize, seq: usize, what: &str) -> Result<()> {
        if batch == 0 || seq == 0 {
            bail!("{what}: batch and sequence length must be at least 1");
        }
        if ids.len() != batch * seq {
            bail!("{what}: expected batch {batch} × seq {seq} = {} ids, got {}", batch * seq, ids.len());
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab) {
            bail!("{what}: id {bad} is outside the vocabulary of {}", self.cfg.vocab);
        }
        Ok(())
    }

    /// Per-layer initial states `[B, S]` from a flat `[L, B, S]`; when `None`, the learned h0 repeated
    /// for every stream (tracked, so it receives gradients) or zeros.
    fn states(&self, state: Option<&[f32]>, batch: usize) -> Result<Vec<Tensor>> {
        let (h, layers) = (self.cfg.state_len(), self.cfg.layers);
        (0..layers)
            .map(|l| match state {
                Some(s) => Tensor::from_slice(&s[l * batch * h..(l + 1) * batch * h], (batch, h), &self.store.device),
                None if self.cfg.learned_h0 => {
                    let h0 = self.store.vars[3 + layers].as_tensor().reshape((layers, h))?;
                    h0.narrow(0, l, 1)?.broadcast_as((batch, h))?.contiguous()
                }
                None => Tensor::zeros((batch, h), DType::F32, &self.store.device),
            })
            .collect()
    }

    /// The top layer's h `[B·T, H]` and the final state of every layer.
    fn hidden(&self, ids: &Tensor, h0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let (batch, seq) = ids.dims2()?;
        let CharLmConfig { vocab, embed, hidden, cell, .. } = self.cfg;
        let table = self.store.vars[0].as_tensor().reshape((vocab, embed))?;
        let x = table.index_select(&ids.flatten_all()?, 0)?.reshape((batch, seq, embed))?;
        let params: Vec<Vec<&Tensor>> =
            (0..self.cfg.layers).map(|l| vec![self.store.vars[1 + l].as_tensor()]).collect();
        let StackOut { top: x, finals: last } = run_stack(cell, hidden, &x, &params, h0)?;
        Ok((x.contiguous()?.reshape((batch * seq, hidden))?, last))
    }

    /// Logits `[B·T, V]` of head k (1: the next character) from the top h `[B·T, H]`.
    fn logits(&self, hs: &Tensor, k: usize) -> Result<Tensor> {
        let n = self.cfg.head_var(k);
        let head = self.store.vars[n].as_tensor().reshape((self.cfg.vocab, self.cfg.hidden))?;
        hs.matmul(&head.t()?)?.broadcast_add(self.store.vars[n + 1].as_tensor())
    }

    /// Logits `[B·T, V]` of the next character and the final state of every layer.
    fn forward(&self, ids: &Tensor, h0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let (hs, last) = self.hidden(ids, h0)?;
        Ok((self.logits(&hs, 1)?, last))
    }

    /// The training loss, Σ_k mean CE of head k against target block k − 1 (the plain cross-entropy
    /// when there is one block), and the final states.
    fn loss(&self, ids: &Tensor, y: &[Tensor], h0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let (hs, last) = self.hidden(ids, h0)?;
        let mut loss = cross_entropy(&self.logits(&hs, 1)?, &y[0])?;
        for (k, yk) in y.iter().enumerate().skip(1) {
            loss = (loss + cross_entropy(&self.logits(&hs, k + 1)?, yk)?)?;
        }
        Ok((loss, last))
    }

    fn flat_state(&self, last: &[Tensor]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for t in last {
            out.extend(t.detach().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// One training step on `B` streams of `T` characters: forward, mean cross-entropy, backward
    /// through time, clipping, AdamW. The hidden state continues from the previous step (truncated
    /// BPTT) when the batch size matches; [`CharLm::reset_carry`] starts from zeros. On CPU the pass is
    /// the hand-written one of [`train`], elsewhere candle's autograd over the same ops.
    /// A non-finite loss or gradient is an error and leaves every parameter untouched.
    pub fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        cfg: &AdamWConfig,
    ) -> Result<StepStats> {
        crate::params::check_lr(cfg)?;
        // The update below changes the weights: the packed copy is stale from here on.
        self.fast.take();
        self.check_ids(ids, batch, seq, "train step inputs")?;
        let carry = match &self.carry {
            Some((b, h)) if *b == batch => Some(h.clone()),
            _ => None,
        };
        let (stats, finals) = if self.store.device.is_cpu() {
            let y = self.target_blocks(targets, batch, seq, true, "train step targets")?;
            let mut pass = train::pass(self, ids, &y, batch, seq, carry.as_deref())?;
            let grads = pass.grad_tensors(self)?;
            (self.store.apply_grads(pass.loss, &grads, cfg)?, pass.finals)
        } else {
            let x = self.ids(ids, batch, seq, "train step inputs")?;
            let y = self.targets(targets, batch, seq, true, "train step targets")?;
            let h0 = self.states(carry.as_deref(), batch)?;
            let (loss, last) = self.loss(&x, &y, &h0)?;
            (self.store.train_step(&loss, cfg)?, self.flat_state(&last)?)
        };
        self.carry = Some((batch, finals));
        Ok(stats)
    }

    pub fn reset_carry(&mut self) {
        self.carry = None;
    }

    /// Mean loss and its gradient for every parameter and for the initial state `[L, B, S]`;
    /// changes nothing. The oracle tests compare this against the pure-TypeScript backend. On CPU the
    /// hand-written pass of [`train`], elsewhere candle's autograd ([`GradPath::Graph`]).
    pub fn loss_and_grads(
        &self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<LossGrads> {
        let path = if self.store.device.is_cpu() { GradPath::WrittenOut } else { GradPath::Graph };
        self.loss_and_grads_by(path, ids, targets, batch, seq, state)
    }

    /// [`CharLm::loss_and_grads`] computed the way `path` says: the tests hold the two together on CPU.
    pub fn loss_and_grads_by(
        &self,
        path: GradPath,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<LossGrads> {
        self.check_ids(ids, batch, seq, "inputs")?;
        let blocks = self.target_blocks(targets, batch, seq, true, "targets")?;
        if let Some(s) = state {
            self.check_state(s, batch)?;
        }
        if path == GradPath::WrittenOut {
            let mut pass = train::pass(self, ids, &blocks, batch, seq, state)?;
            let grads = self.store.named_var_grads(&pass.grad_tensors(self)?)?;
            return Ok(LossGrads { loss: pass.loss, grads, dh0: pass.ds0 });
        }
        let dev = &self.store.device;
        let x = Tensor::from_slice(ids, (batch, seq), dev)?;
        let y = blocks.iter().map(|b| Tensor::from_slice(b, batch * seq, dev)).collect::<Result<Vec<_>>>()?;
        // dL/d(initial state) is read off a zero probe variable added to it: candle keeps gradients of
        // variables only, and the learned h0 must stay in the graph to receive its own gradient.
        let s = self.cfg.state_len();
        let probes = (0..self.cfg.layers)
            .map(|_| Var::zeros((batch, s), DType::F32, &self.store.device))
            .collect::<Result<Vec<_>>>()?;
        let h0t = self
            .states(state, batch)?
            .iter()
            .zip(&probes)
            .map(|(h, p)| h + p.as_tensor())
            .collect::<Result<Vec<_>>>()?;
        let (loss, _) = self.loss(&x, &y, &h0t)?;
        let g = loss.backward()?;
        let grads = self.store.named_grads(&g)?;
        let mut dh0 = Vec::with_capacity(self.cfg.layers * batch * s);
        for p in &probes {
            match g.get(p.as_tensor()) {
                Some(gt) => dh0.extend(gt.flatten_all()?.to_vec1::<f32>()?),
                None => dh0.extend(vec![0f32; batch * s]),
            }
        }
        Ok(LossGrads { loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads, dh0 })
    }

    /// Summed negative log-likelihood (nats) of the next characters `targets [B, T]` given `ids`, from
    /// `state` (zeros when `None`), and the final state `[L, B, S]`. No gradient is kept.
    pub fn nll(
        &self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<(f64, Vec<f32>)> {
        if targets.len() != batch * seq {
            bail!("targets: expected batch {batch} × seq {seq} = {} ids, got {}", batch * seq, targets.len());
        }
        let NllAhead { nll, state, .. } = self.nll_ahead(ids, targets, batch, seq, state)?;
        Ok((nll[0], state))
    }

    /// [`CharLm::nll`] of every head given its target block (one block, or `ahead` blocks): the summed
    /// NLL of head k over the positions its block scores.
    pub fn nll_ahead(
        &self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<NllAhead> {
        let x = self.ids(ids, batch, seq, "inputs")?;
        let y = self.targets(targets, batch, seq, false, "targets")?;
        if let Some(s) = state {
            self.check_state(s, batch)?;
        }
        let (hs, last) = self.hidden(&x, &self.states(state, batch)?)?;
        let mut nll = Vec::with_capacity(y.len());
        let mut rows = Vec::with_capacity(y.len());
        for (k, yk) in y.iter().enumerate() {
            let scored = yk.to_vec1::<u32>()?.iter().filter(|&&c| c != IGNORE).count();
            let mean = cross_entropy(&self.logits(&hs, k + 1)?, yk)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            nll.push(mean * scored as f64);
            rows.push(scored);
        }
        Ok(NllAhead { nll, rows, state: self.flat_state(&last)? })
    }

    /// One step of `N` independent streams: feeds `tokens [N]` from `state [L, N, S]` (zeros, or the
    /// learned h0, when `None`) and returns the new state and the logits `[N, V]` for the next
    /// character. On CPU through the packed single-step path (see [`fast`]): the states are bit for bit
    /// those of [`CharLm::step_graph`], the logits equal to f32 rounding.
    pub fn step(&self, state: Option<&[f32]>, tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        if !self.stepping_fast() {
            return self.step_graph(state, tokens);
        }
        let n = tokens.len();
        self.check_ids(tokens, n, 1, "step tokens")?;
        if let Some(s) = state {
            self.check_state(s, n)?;
        }
        let fast = self.fast()?;
        let init;
        let state = match state {
            Some(s) => s,
            None => {
                init = fast.initial(n);
                &init
            }
        };
        let mut next = vec![0f32; state.len()];
        let mut logits = vec![0f32; n * self.cfg.vocab];
        fast.step(state, tokens, &mut next, Some(&mut logits), &mut StepScratch::default());
        Ok((next, logits))
    }

    /// [`CharLm::step`] through candle's tensor ops (the forward of training at T = 1): the reference
    /// the packed path is tested against, and the path on CUDA.
    pub fn step_graph(&self, state: Option<&[f32]>, tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = tokens.len();
        let x = self.ids(tokens, n, 1, "step tokens")?;
        if let Some(s) = state {
            self.check_state(s, n)?;
        }
        let (logits, last) = self.forward(&x, &self.states(state, n)?)?;
        Ok((self.flat_state(&last)?, logits.flatten_all()?.to_vec1::<f32>()?))
    }

    /// The state `[L, N, S]` every stream starts from: the learned h0 repeated, or zeros.
    fn initial_state(&self, n: usize) -> Result<Vec<f32>> {
        let h0 = match self.cfg.learned_h0 {
            true => Some(self.store.vars[3 + self.cfg.layers].as_tensor().flatten_all()?.to_vec1::<f32>()?),
            false => None,
        };
        Ok(fast::initial_state(&self.cfg, h0.as_deref(), n))
    }

    /// Starts a sampling loop over `streams` independent streams: reads each stream's prime
    /// (`prime [N, P]`, P ≥ 1: the first draw is conditioned on all of it) from `state [L, N, S]`
    /// (`None`: zeros or the learned h0). Each stream draws with its own
    /// generator; the draws are those of `sampleLogits` in `src/sample/sampling.ts` with the TS `Rng`
    /// in the same state, bit for bit ([`sampling`]), so a stream gives the text the JS loop gives
    /// from the same logits. Continue it with [`CharLm::sample_next`].
    pub fn sample_session(
        &self,
        state: Option<&[f32]>,
        prime: &[u32],
        streams: usize,
        rngs: Vec<Sfc32>,
        sampling: Sampling,
    ) -> Result<SampleSession> {
        if streams == 0 {
            bail!("sampling: streams must be at least 1");
        }
        if prime.is_empty() || !prime.len().is_multiple_of(streams) {
            bail!("sampling: the prime must hold P ≥ 1 ids per stream ([{streams}, P]), got {} ids", prime.len());
        }
        if rngs.len() != streams {
            bail!("sampling: {} generators for {streams} streams", rngs.len());
        }
        let p = prime.len() / streams;
        self.check_ids(prime, streams, p, "sampling prime")?;
        let state = match state {
            Some(s) => {
                self.check_state(s, streams)?;
                s.to_vec()
            }
            None => self.initial_state(streams)?,
        };
        let mut session = SampleSession {
            streams,
            state,
            next: Vec::new(),
            logits: vec![0f32; streams * self.cfg.vocab],
            pending: false,
            rngs,
            sampling,
            scratch: StepScratch::default(),
            draw: SampleScratch::default(),
            tokens: vec![0u32; streams],
        };
        for t in 0..p {
            for (r, tok) in session.tokens.iter_mut().enumerate() {
                *tok = prime[r * p + t];
            }
            self.advance(&mut session, t + 1 == p)?;
        }
        Ok(session)
    }

    /// The next `n` characters of every stream of `session`, `[N, n]` row-major. Each call steps with
    /// the weights the model holds at that moment.
    pub fn sample_next(&self, session: &mut SampleSession, n: usize) -> Result<Vec<u32>> {
        let (ns, v) = (session.streams, self.cfg.vocab);
        if session.logits.len() != ns * v {
            bail!("sampling: this session belongs to a model of another vocabulary size");
        }
        let mut out = vec![0u32; ns * n];
        let threads = rayon::current_num_threads();
        for i in 0..n {
            if session.pending {
                self.advance(session, true)?;
            }
            let SampleSession { logits, rngs, tokens, sampling, draw, .. } = session;
            // Each stream draws from its own row with its own generator: split across threads when
            // there are enough of them, with the same draws.
            if threads > 1 && ns >= PAR_MIN_DRAWS {
                let per = ns.div_ceil(threads);
                tokens.par_chunks_mut(per).zip(rngs.par_chunks_mut(per)).zip(logits.par_chunks(per * v)).for_each_init(
                    SampleScratch::default,
                    |draw, ((tokens, rngs), logits)| {
                        for ((t, rng), row) in tokens.iter_mut().zip(rngs).zip(logits.chunks_exact(v)) {
                            *t = sample_logits(row, sampling, rng, draw) as u32;
                        }
                    },
                );
            } else {
                for ((t, rng), row) in tokens.iter_mut().zip(rngs.iter_mut()).zip(logits.chunks_exact(v)) {
                    *t = sample_logits(row, sampling, rng, draw) as u32;
                }
            }
            for (r, &t) in tokens.iter().enumerate() {
                out[r * n + i] = t;
            }
            session.pending = true;
        }
        Ok(out)
    }

    /// Feeds `session.tokens` to every stream: the new state, and the logits when asked for.
    fn advance(&self, session: &mut SampleSession, logits: bool) -> Result<()> {
        if !self.stepping_fast() {
            let (state, l) = self.step_graph(Some(&session.state), &session.tokens)?;
            session.state = state;
            if logits {
                session.logits = l;
            }
            return Ok(());
        }
        let fast = self.fast()?;
        session.next.resize(session.state.len(), 0.0);
        let logits = logits.then_some(&mut session.logits[..]);
        fast.step(&session.state, &session.tokens, &mut session.next, logits, &mut session.scratch);
        std::mem::swap(&mut session.state, &mut session.next);
        Ok(())
    }
}

/// A sampling loop in progress ([`CharLm::sample_session`]): each stream's state and the logits of
/// its next character, the characters drawn but not yet fed, and each stream's generator.
pub struct SampleSession {
    streams: usize,
    /// `[L, N, S]`.
    state: Vec<f32>,
    next: Vec<f32>,
    /// `[N, V]`: the distribution of each stream's next draw.
    logits: Vec<f32>,
    /// Whether `tokens` holds the last draw of every stream, to feed (one step) before the next draw.
    pending: bool,
    rngs: Vec<Sfc32>,
    sampling: Sampling,
    scratch: StepScratch,
    draw: SampleScratch,
    /// The ids being fed, `[N]`: the prime's, then the last draws.
    tokens: Vec<u32>,
}

impl SampleSession {
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Each stream's state `[L, N, S]` after the characters fed so far (a draw not yet fed excluded).
    pub fn state(&self) -> &[f32] {
        &self.state
    }

    /// Each stream's generator, as it stands.
    pub fn rngs(&self) -> &[Sfc32] {
        &self.rngs
    }
}

#[cfg(test)]
mod tests;
