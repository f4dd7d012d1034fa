//! Recurrent density model of a continuous time series with an exact likelihood (Graves 2013, §4, a
//! mixture density output over real values): the previous observation x_{t−1} (D values) is fed
//! straight into a stack of recurrent layers (GRU, LSTM or tanh RNN; I = D), a linear head maps the top
//! hidden state to raw outputs, and a likelihood head ([`crate::heads`]: diagonal Gaussian or a
//! K-component mixture) gives −log p(x_t | x_{<t}) in nats.
//!
//! Parameters carry PyTorch `state_dict` names: `{cell}.weight_ih_l0`, `{cell}.weight_hh_l0`,
//! `{cell}.bias_ih_l0`, `{cell}.bias_hh_l0` per layer, `head.weight [outSize, H]`, `head.bias [outSize]`.
//! Each layer's four tensors live packed in one variable, the input of the fused layer op. Values are
//! `[B, T, D]` row-major; states are `[L, B, S]` with S = H, or 2H for the LSTM (each row h then c).
//!
//! **Joint prediction of the next n values** (`ahead` = n ≥ 2): besides `head` (k = 1), linear heads
//! `ahead.{k}.weight [outSize, H]`, `ahead.{k}.bias [outSize]` for k = 2..n read the same top hidden state
//! h_t and parameterise the same likelihood for the target k − 1 rows further on; the joint is factorised,
//! −log p(y_{t..t+n−1} | x_{≤t}) = Σ_k NLL_k, and the training loss is Σ_k (mean over the rows head k
//! scores of NLL_k). Targets then come as n blocks `[n, B, T, D]`, block k−1 holding y_{t+k−1}; a row of
//! a block k ≥ 2 that is all NaN (past the end of the series) is absent: not scored, no gradient.
//!
//! **Outputs** ([`Outputs::Last`]): the training loss scores only the final step of each window
//! (sequence-to-one) instead of every step. With n = 1 and [`Outputs::Every`] the model, its parameters
//! and its computation are exactly those of the plain next-step model.

use crate::device::Dev;
use crate::heads::{linear_head_nll, linear_raw, Head};
use crate::lm::{LossGrads, NllAhead};
use crate::optim::AdamWConfig;
use crate::params::{check_layer_counts, ParamSpec, ParamStore, StepStats};
use crate::rnn::{run_stack, CellKind, RnnDims, StackOut};
use candle_core::{bail, DType, Result, Tensor, Var};

/// The steps of a window the training loss scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outputs {
    /// Every step (sequence-to-sequence).
    #[default]
    Every,
    /// The final step of each window only (sequence-to-one).
    Last,
}

impl Outputs {
    /// `"every"` or `"last"`: the names configs and checkpoints use.
    pub fn parse(name: &str) -> Result<Outputs> {
        match name {
            "every" => Ok(Outputs::Every),
            "last" => Ok(Outputs::Last),
            _ => bail!("config: unknown outputs {name:?}: expected every or last"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesConfig {
    /// D, the variables of one time step.
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub cell: CellKind,
    /// The likelihood; its `dim` must equal `dim`.
    pub head: Head,
    /// Heads predicting the next `ahead` steps jointly (1: the next step only).
    pub ahead: usize,
    /// The steps of a window the training loss scores.
    pub outputs: Outputs,
}

impl SeriesConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("dim", self.dim), ("hidden", self.hidden), ("layers", self.layers), ("ahead", self.ahead)] {
            if v == 0 {
                bail!("series model config: {name} must be at least 1");
            }
        }
        check_layer_counts("series model", &[("layers", self.layers), ("ahead", self.ahead)])?;
        self.head.validate()?;
        if self.head.dim() != self.dim {
            bail!("series model config: the head is over {} variables, the series has {}", self.head.dim(), self.dim);
        }
        Ok(())
    }

    fn layer_dims(&self, layer: usize) -> RnnDims {
        let input = if layer == 0 { self.dim } else { self.hidden };
        RnnDims { cell: self.cell, batch: 1, seq: 1, input, hidden: self.hidden }
    }

    /// State values per layer and batch row: H, or 2H for the LSTM's (h, c).
    pub fn state_len(&self) -> usize {
        self.cell.state_width() * self.hidden
    }
}

pub struct SeriesModel {
    pub cfg: SeriesConfig,
    store: ParamStore,
    /// Final state of the last training batch, `[L, B, S]`, detached: truncated BPTT carries it.
    carry: Option<(usize, Vec<f32>)>,
}

impl SeriesModel {
    /// A model with all parameters zero; callers load an initialisation with [`ParamStore::set_param`].
    pub fn new(cfg: SeriesConfig, dev: Dev) -> Result<Self> {
        cfg.validate()?;
        let (hidden, out, c) = (cfg.hidden, cfg.head.output_size(), cfg.cell.name());
        let mut specs = Vec::new();
        for l in 0..cfg.layers {
            let d = cfg.layer_dims(l);
            let g = d.gate_width();
            let parts = [
                (format!("{c}.weight_ih_l{l}"), vec![g, d.input]),
                (format!("{c}.weight_hh_l{l}"), vec![g, hidden]),
                (format!("{c}.bias_ih_l{l}"), vec![g]),
                (format!("{c}.bias_hh_l{l}"), vec![g]),
            ];
            let mut offset = 0;
            for (name, shape) in parts {
                let n: usize = shape.iter().product();
                specs.push(ParamSpec { name, shape, var: l, offset });
                offset += n;
            }
        }
        // The linear head packs [weight, bias] in one variable, the input of the fused head op.
        for k in 1..=cfg.ahead {
            let (var, p) = (cfg.layers + k - 1, if k == 1 { "head".into() } else { format!("ahead.{k}") });
            specs.push(ParamSpec { name: format!("{p}.weight"), shape: vec![out, hidden], var, offset: 0 });
            specs.push(ParamSpec { name: format!("{p}.bias"), shape: vec![out], var, offset: out * hidden });
        }
        Ok(SeriesModel { cfg, store: ParamStore::new(specs, dev.device()?, "series model")?, carry: None })
    }

    /// Parameters by name and their optimizer state.
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// The carried training state `(batch, [L, B, S])`, if a training step has run since the last reset.
    pub fn carry(&self) -> Option<(usize, Vec<f32>)> {
        self.carry.clone()
    }

    pub fn set_carry(&mut self, carry: Option<(usize, Vec<f32>)>) -> Result<()> {
        if let Some((b, ref s)) = carry {
            self.check_state(s, b)?;
        }
        self.carry = carry;
        Ok(())
    }

    pub fn reset_carry(&mut self) {
        self.carry = None;
    }

    fn check_state(&self, state: &[f32], batch: usize) -> Result<()> {
        let s = self.cfg.state_len();
        let want = self.cfg.layers * batch * s;
        if batch == 0 || state.len() != want {
            bail!(
                "recurrent state holds {} values; [layers {}, batch {batch}, state {s}] needs {want}",
                state.len(),
                self.cfg.layers,
            );
        }
        if let Some(i) = state.iter().position(|v| !v.is_finite()) {
            bail!("recurrent state value {i} is not finite ({})", state[i]);
        }
        Ok(())
    }

    /// `[B, T, D]` values as a tensor, after checking their count and that every one is finite.
    fn values(&self, v: &[f32], batch: usize, seq: usize, what: &str) -> Result<Tensor> {
        let dim = self.cfg.dim;
        if batch == 0 || seq == 0 {
            bail!("{what}: batch and sequence length must be at least 1");
        }
        if v.len() != batch * seq * dim {
            bail!(
                "{what}: expected batch {batch} × seq {seq} × dim {dim} = {} values, got {}",
                batch * seq * dim,
                v.len()
            );
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!("{what}: value {i} is not finite ({})", v[i]);
        }
        Tensor::from_slice(v, (batch, seq, dim), &self.store.device)
    }

    /// Per-layer initial states `[B, S]` from a flat `[L, B, S]` (zeros when `None`).
    fn states(&self, state: Option<&[f32]>, batch: usize) -> Result<Vec<Tensor>> {
        if let Some(s) = state {
            self.check_state(s, batch)?;
        }
        let s = self.cfg.state_len();
        (0..self.cfg.layers)
            .map(|l| match state {
                Some(st) => Tensor::from_slice(&st[l * batch * s..(l + 1) * batch * s], (batch, s), &self.store.device),
                None => Tensor::zeros((batch, s), DType::F32, &self.store.device),
            })
            .collect()
    }

    /// The top layer's h `[B·T, H]` and the final state of every layer.
    fn forward(&self, x: &Tensor, s0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let (batch, seq, _) = x.dims3()?;
        let SeriesConfig { hidden, cell, layers, .. } = self.cfg;
        let params: Vec<Vec<&Tensor>> = (0..layers).map(|l| vec![self.store.vars[l].as_tensor()]).collect();
        let StackOut { top, finals } = run_stack(cell, hidden, x, &params, s0)?;
        Ok((top.contiguous()?.reshape((batch * seq, hidden))?, finals))
    }

    /// Head k's packed `[weight, bias]` (k = 1: `head`, the next step).
    fn head_params(&self, k: usize) -> &Tensor {
        self.store.vars[self.cfg.layers + k - 1].as_tensor()
    }

    /// Target blocks `[B·T, D]` each: one (the next step) or, for a model with `ahead` = n, n (then
    /// required with `all`); blocks after the first may hold absent rows, all NaN. Each keeps the rows it
    /// scores: its present rows, and with `last` only those of each window's final step.
    fn targets(&self, t: &[f32], batch: usize, seq: usize, all: bool, last: bool, what: &str) -> Result<Vec<Block>> {
        let (n, rows, dim) = (self.cfg.ahead, batch * seq, self.cfg.dim);
        let size = rows * dim;
        let blocks = if t.len() == size && !(all && n > 1) { 1 } else { n };
        if n > 1 && t.len() != blocks * size && batch > 0 && seq > 0 {
            bail!(
                "{what}: expected {n} blocks (one per predicted step) of batch {batch} × seq {seq} × dim {dim} = {} values{}, got {}",
                n * size,
                if all { String::new() } else { format!(" (or {size} for the next step only)") },
                t.len()
            );
        }
        let first = if blocks == 1 { t } else { &t[..size] };
        let first = self.values(first, batch, seq, what)?.reshape((rows, dim))?;
        let scored = |r: usize| !last || r % seq == seq - 1;
        let mut out = vec![Block::select(first, (0..rows as u32).filter(|&r| scored(r as usize)).collect(), rows)?];
        for k in 1..blocks {
            let b = &t[k * size..(k + 1) * size];
            let mut keep = Vec::with_capacity(rows);
            for (r, row) in b.chunks_exact(dim).enumerate() {
                if row.iter().all(|v| v.is_nan()) {
                    continue;
                }
                if let Some(d) = row.iter().position(|v| !v.is_finite()) {
                    bail!(
                        "{what}: row {r} of block {} ({} ahead) is not finite at {d} ({}): a row holds finite values, or NaN in every column when absent",
                        k + 1,
                        k + 1,
                        row[d]
                    );
                }
                if scored(r) {
                    keep.push(r as u32);
                }
            }
            out.push(Block::select(Tensor::from_slice(b, (rows, dim), &self.store.device)?, keep, rows)?);
        }
        Ok(out)
    }

    fn flat_state(&self, last: &[Tensor]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for t in last {
            out.extend(t.detach().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Per-row NLL of every head over the rows its block scores (`None` for a block that scores none),
    /// and the final state of every layer.
    fn row_nll(&self, x: &Tensor, y: &[Block], s0: &[Tensor]) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (hs, last) = self.forward(x, s0)?;
        let mut nll = Vec::with_capacity(y.len());
        for (k, b) in y.iter().enumerate() {
            nll.push(match (&b.rows, b.count) {
                (_, 0) => None,
                (None, _) => Some(linear_head_nll(self.cfg.head, &hs, self.head_params(k + 1), &b.y)?),
                (Some(idx), _) => {
                    let h = hs.index_select(idx, 0)?;
                    Some(linear_head_nll(self.cfg.head, &h, self.head_params(k + 1), &b.y)?)
                }
            });
        }
        Ok((nll, last))
    }

    /// The training loss: Σ_k of head k's mean NLL over the rows it scores (the plain mean NLL when there
    /// is one block), and the final states.
    fn loss(&self, x: &Tensor, y: &[Block], s0: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let (nll, last) = self.row_nll(x, y, s0)?;
        let mut means = nll.iter().flatten().map(|n| n.mean_all());
        let Some(first) = means.next() else { bail!("series model: no target row is scored") };
        let loss = means.try_fold(first?, |l, m| l + m?)?;
        Ok((loss, last))
    }

    /// One training step on `B` streams of `T` steps: `inputs [B, T, D]` holds x_{t−1} and `targets`
    /// x_t (for `ahead` = n, all n target blocks). Forward, mean NLL per time step (nats; Σ_k of the heads'
    /// means over the rows they score), backward through time, clipping, AdamW. The state
    /// continues from the previous step (truncated BPTT) when the batch size matches;
    /// [`SeriesModel::reset_carry`] starts from zeros. A non-finite loss or gradient is an error and
    /// leaves every parameter, and the carry, untouched.
    pub fn train_step(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
        batch: usize,
        seq: usize,
        cfg: &AdamWConfig,
    ) -> Result<StepStats> {
        crate::params::check_lr(cfg)?;
        let x = self.values(inputs, batch, seq, "train step inputs")?;
        let y = self.targets(targets, batch, seq, true, self.last_only(), "train step targets")?;
        let carry = match &self.carry {
            Some((b, s)) if *b == batch => Some(s.clone()),
            _ => None,
        };
        let s0 = self.states(carry.as_deref(), batch)?;
        let (loss, last) = self.loss(&x, &y, &s0)?;
        let stats = self.store.train_step(&loss, cfg)?;
        self.carry = Some((batch, self.flat_state(&last)?));
        Ok(stats)
    }

    /// The training loss of [`SeriesModel::train_step`] (`targets` all `ahead` blocks) and its gradient
    /// for every parameter and for the initial state `[L, B, S]`; changes nothing. The oracle tests
    /// compare this against the TypeScript reference.
    pub fn loss_and_grads(
        &self,
        inputs: &[f32],
        targets: &[f32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<LossGrads> {
        let x = self.values(inputs, batch, seq, "inputs")?;
        let y = self.targets(targets, batch, seq, true, self.last_only(), "targets")?;
        let s0 = self.states(state, batch)?.iter().map(Var::from_tensor).collect::<Result<Vec<_>>>()?;
        let s0t: Vec<Tensor> = s0.iter().map(|v| v.as_tensor().clone()).collect();
        let (loss, _) = self.loss(&x, &y, &s0t)?;
        let g = loss.backward()?;
        let grads = self.store.named_grads(&g)?;
        let mut dh0 = Vec::new();
        for (v, t) in s0.iter().zip(&s0t) {
            match g.get(v.as_tensor()) {
                Some(gt) => dh0.extend(gt.flatten_all()?.to_vec1::<f32>()?),
                None => dh0.extend(vec![0f32; t.elem_count()]),
            }
        }
        Ok(LossGrads { loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads, dh0 })
    }

    /// Summed NLL (nats, over all B·T steps) of the next steps `targets [B, T, D]` given `inputs`, from
    /// `state` (zeros when `None`), and the final state `[L, B, S]`. No gradient is kept.
    pub fn nll(
        &self,
        inputs: &[f32],
        targets: &[f32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<(f64, Vec<f32>)> {
        let size = batch * seq * self.cfg.dim;
        if targets.len() != size {
            bail!(
                "targets: expected batch {batch} × seq {seq} × dim {} = {size} values, got {}",
                self.cfg.dim,
                targets.len()
            );
        }
        let NllAhead { nll, state, .. } = self.nll_ahead(inputs, targets, batch, seq, state)?;
        Ok((nll[0], state))
    }

    /// [`SeriesModel::nll`] of every head given its target block (one block, or `ahead` blocks): the
    /// summed NLL of head k over every present row of its block, and how many rows that is. Every step
    /// is scored whatever [`Outputs`]: the density of each step is the same model's.
    pub fn nll_ahead(
        &self,
        inputs: &[f32],
        targets: &[f32],
        batch: usize,
        seq: usize,
        state: Option<&[f32]>,
    ) -> Result<NllAhead> {
        let x = self.values(inputs, batch, seq, "inputs")?;
        let y = self.targets(targets, batch, seq, false, false, "targets")?;
        let (nll, last) = self.row_nll(&x, &y, &self.states(state, batch)?)?;
        let mut sums = Vec::with_capacity(nll.len());
        for n in &nll {
            sums.push(match n {
                Some(n) => n.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?,
                None => 0.0,
            });
        }
        Ok(NllAhead { nll: sums, rows: y.iter().map(|b| b.count).collect(), state: self.flat_state(&last)? })
    }

    fn last_only(&self) -> bool {
        self.cfg.outputs == Outputs::Last
    }

    /// One step of `N` independent streams: feeds `x [N, D]` from `state [L, N, S]` (zeros when `None`)
    /// and returns the new state and the raw head outputs `[N, outSize]`, the distribution of the next
    /// value (sampled in TypeScript).
    pub fn step(&self, state: Option<&[f32]>, x: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let dim = self.cfg.dim;
        if x.is_empty() || !x.len().is_multiple_of(dim) {
            bail!("step: {} values are not whole rows of dim {dim} (pass [N, {dim}], N ≥ 1)", x.len());
        }
        let n = x.len() / dim;
        let xt = self.values(x, n, 1, "step values")?;
        let (hs, last) = self.forward(&xt, &self.states(state, n)?)?;
        let raw = linear_raw(self.cfg.head, &hs.detach(), self.head_params(1))?;
        Ok((self.flat_state(&last)?, raw.flatten_all()?.to_vec1::<f32>()?))
    }
}

/// One target block: its rows `[rows, D]` that are scored, and which rows of `[B·T]` they are (`None`:
/// all of them, in order).
struct Block {
    y: Tensor,
    rows: Option<Tensor>,
    count: usize,
}

impl Block {
    /// The rows `keep` of `all [total, D]`.
    fn select(all: Tensor, keep: Vec<u32>, total: usize) -> Result<Block> {
        let count = keep.len();
        if count == total || count == 0 {
            // No row scored: `y` is never read.
            return Ok(Block { y: all, rows: None, count });
        }
        let idx = Tensor::from_vec(keep, count, all.device())?;
        Ok(Block { y: all.index_select(&idx, 0)?, rows: Some(idx), count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::mdn::Scratch;

    fn lcg(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
            })
            .collect()
    }

    fn model(cell: CellKind, head: Head, hidden: usize, layers: usize) -> SeriesModel {
        let cfg = SeriesConfig { dim: head.dim(), hidden, layers, cell, head, ahead: 1, outputs: Outputs::Every };
        let mut m = SeriesModel::new(cfg, Dev::Cpu).unwrap();
        for (i, s) in m.params().specs().to_vec().iter().enumerate() {
            m.params_mut().set_param(&s.name, &lcg(s.len(), 10 + i as u64, 0.5)).unwrap();
        }
        m
    }

    const MDN2: Head = Head::Mdn { dim: 2, components: 3 };

    #[test]
    fn series_params_carry_pytorch_names_and_shapes() {
        let m = model(CellKind::Lstm, MDN2, 5, 2);
        let names: Vec<(String, Vec<usize>)> =
            m.params().specs().iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
        assert_eq!(names[0], ("lstm.weight_ih_l0".into(), vec![20, 2]));
        assert_eq!(names[4], ("lstm.weight_ih_l1".into(), vec![20, 5]));
        assert_eq!(names[8], ("head.weight".into(), vec![18, 5]));
        assert_eq!(names[9], ("head.bias".into(), vec![18]));
    }

    /// The model's NLL equals the head applied by hand to the raw outputs of `step`, fed one step at a
    /// time with the state carried: forward, nll and step agree.
    #[test]
    fn series_nll_equals_stepwise_head_on_step_outputs() {
        for cell in CellKind::ALL {
            for head in [Head::Gaussian { dim: 2 }, MDN2] {
                let m = model(cell, head, 6, 2);
                let (batch, seq) = (2, 5);
                let x = lcg(batch * seq * 2, 1, 1.0);
                let y = lcg(batch * seq * 2, 2, 1.0);
                let (total, state) = m.nll(&x, &y, batch, seq, None).unwrap();
                let mut sum = 0.0;
                let mut sc = Scratch::default();
                let mut s: Option<Vec<f32>> = None;
                let size = head.output_size();
                for t in 0..seq {
                    let xt: Vec<f32> =
                        (0..batch).flat_map(|b| x[(b * seq + t) * 2..(b * seq + t + 1) * 2].to_vec()).collect();
                    let (next, raw) = m.step(s.as_deref(), &xt).unwrap();
                    for b in 0..batch {
                        let r: Vec<f64> = raw[b * size..(b + 1) * size].iter().map(|&v| v as f64).collect();
                        let yt: Vec<f64> =
                            y[(b * seq + t) * 2..(b * seq + t + 1) * 2].iter().map(|&v| v as f64).collect();
                        sum += head.row_nll(&r, &yt, None, &mut sc);
                    }
                    s = Some(next);
                }
                assert!((total - sum).abs() <= 1e-5 * sum.abs(), "{cell:?} {head:?}: nll {total} vs stepwise {sum}");
                let s = s.unwrap();
                let err = state.iter().zip(&s).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err < 1e-5, "{cell:?}: final states differ by {err}");
            }
        }
    }

    /// The gradients of `loss_and_grads` against central differences of `nll` (f32 model, so loose).
    #[test]
    fn series_loss_and_grads_match_finite_differences() {
        for (cell, head) in [(CellKind::Gru, MDN2), (CellKind::Lstm, Head::Gaussian { dim: 2 })] {
            let mut m = model(cell, head, 4, 2);
            let (batch, seq) = (2, 3);
            let x = lcg(batch * seq * 2, 3, 1.0);
            let y = lcg(batch * seq * 2, 4, 1.0);
            let s0 = lcg(2 * batch * m.cfg.state_len(), 5, 0.5);
            let lg = m.loss_and_grads(&x, &y, batch, seq, Some(&s0)).unwrap();
            let rows = (batch * seq) as f64;
            let mean = |m: &SeriesModel, s0: &[f32]| m.nll(&x, &y, batch, seq, Some(s0)).unwrap().0 / rows;
            let eps = 1e-2f32;
            for (name, grad) in &lg.grads {
                let p = m.params().get_param(name).unwrap();
                for i in (0..p.len()).step_by(7) {
                    let mut q = p.clone();
                    q[i] = p[i] + eps;
                    m.params_mut().set_param(name, &q).unwrap();
                    let up = mean(&m, &s0);
                    q[i] = p[i] - eps;
                    m.params_mut().set_param(name, &q).unwrap();
                    let down = mean(&m, &s0);
                    m.params_mut().set_param(name, &p).unwrap();
                    let fd = (up - down) / (2.0 * eps as f64);
                    assert!(
                        (grad[i] as f64 - fd).abs() < 2e-3 + 2e-2 * fd.abs(),
                        "{cell:?} {name}[{i}]: {} vs fd {fd}",
                        grad[i]
                    );
                }
            }
            for i in (0..s0.len()).step_by(3) {
                let mut s = s0.clone();
                s[i] += eps;
                let up = mean(&m, &s);
                s[i] -= 2.0 * eps;
                let down = mean(&m, &s);
                let fd = (up - down) / (2.0 * eps as f64);
                assert!(
                    (lg.dh0[i] as f64 - fd).abs() < 2e-3 + 2e-2 * fd.abs(),
                    "{cell:?} dh0[{i}]: {} vs fd {fd}",
                    lg.dh0[i]
                );
            }
        }
    }

    /// A noisy sine: a few hundred steps of training bring the mean NLL well below its start, and the
    /// carry holds the last batch's final state.
    #[test]
    fn series_training_lowers_the_nll_of_a_noisy_sine() {
        let mut m = model(CellKind::Gru, Head::Mdn { dim: 1, components: 2 }, 16, 1);
        for s in m.params().specs().to_vec() {
            let v = lcg(s.len(), 7, 0.25);
            m.params_mut().set_param(&s.name, &v).unwrap();
        }
        let (batch, seq) = (4, 20);
        let noise = lcg(batch * (seq + 1) * 40, 9, 0.05);
        let series: Vec<f32> = (0..batch * (seq + 1) * 40).map(|t| (t as f32 * 0.3).sin() + noise[t]).collect();
        let window = |k: usize| -> (Vec<f32>, Vec<f32>) {
            let stride = series.len() / batch;
            let mut x = Vec::new();
            let mut y = Vec::new();
            for b in 0..batch {
                let at = b * stride + (k % 30) * seq;
                x.extend_from_slice(&series[at..at + seq]);
                y.extend_from_slice(&series[at + 1..at + seq + 1]);
            }
            (x, y)
        };
        let cfg = AdamWConfig { lr: 1e-2, ..Default::default() };
        let (x0, y0) = window(0);
        let before = m.nll(&x0, &y0, batch, seq, None).unwrap().0 / (batch * seq) as f64;
        // The NLL after training, averaged over six evaluations in the last 60 steps: one evaluation at a
        // fixed step swings by up to ±0.5 nats with float rounding along the trajectory (a reordered sum
        // in a weight gradient moved it from −0.24 to +0.20); the average moved by 0.01.
        let mut after = 0.0;
        for k in 0..300 {
            if k % 30 == 0 {
                m.reset_carry();
            }
            let (x, y) = window(k);
            m.train_step(&x, &y, batch, seq, &cfg).unwrap();
            if k >= 240 && k % 10 == 9 {
                after += m.nll(&x0, &y0, batch, seq, None).unwrap().0 / (batch * seq) as f64 / 6.0;
            }
        }
        assert!(after < before - 1.0 && after < 0.0, "NLL {before} → {after}");
        let (b, s) = m.carry().unwrap();
        assert_eq!((b, s.len()), (batch, batch * 16));
    }

    /// n = 3 heads with absent rows in blocks 2 and 3, every step or the last only: the loss is Σ_k of
    /// head k's mean over the rows it scores (from `nll_ahead`'s per-head sums), head 1 alone is the
    /// plain model's, and every gradient matches central differences of the loss.
    #[test]
    fn series_ahead_loss_sums_head_means_and_matches_finite_differences() {
        let (batch, seq, n) = (2, 3, 3);
        let head = Head::Mdn { dim: 2, components: 2 };
        let x = lcg(batch * seq * 2, 3, 1.0);
        let mut y = lcg(n * batch * seq * 2, 4, 1.0);
        // Absent: row 5 of block 2 (its last step), rows 2 and 5 of block 3 (both last steps).
        for r in [6 + 5, 12 + 2, 12 + 5] {
            y[r * 2..r * 2 + 2].fill(f32::NAN);
        }
        for outputs in [Outputs::Every, Outputs::Last] {
            let plain = model(CellKind::Gru, head, 4, 1);
            let mut with = SeriesModel::new(SeriesConfig { ahead: n, outputs, ..plain.cfg }, Dev::Cpu).unwrap();
            for (i, s) in with.params().specs().to_vec().iter().enumerate() {
                with.params_mut().set_param(&s.name, &lcg(s.len(), 10 + i as u64, 0.5)).unwrap();
            }
            let lg = with.loss_and_grads(&x, &y, batch, seq, None).unwrap();
            let NllAhead { nll, rows, .. } = with.nll_ahead(&x, &y, batch, seq, None).unwrap();
            assert_eq!(rows, vec![6, 5, 4]);
            if outputs == Outputs::Every {
                let want: f64 = nll.iter().zip(&rows).map(|(s, &r)| s / r as f64).sum();
                assert!((lg.loss - want).abs() < 1e-5 * want.abs(), "loss {} vs Σ head means {want}", lg.loss);
            } else {
                // Block 1 scores rows 2 and 5, block 2 row 2, block 3 none.
                let (_, g3) = lg.grads.iter().find(|(name, _)| name == "ahead.3.bias").unwrap();
                assert!(g3.iter().all(|&g| g == 0.0));
            }
            let (one, _) = plain.nll(&x, &y[..12], batch, seq, None).unwrap();
            assert!((one - nll[0]).abs() < 1e-6 * one.abs(), "head 1 {} vs plain {one}", nll[0]);
            let eps = 1e-2f32;
            let loss = |m: &SeriesModel| m.loss_and_grads(&x, &y, batch, seq, None).unwrap().loss;
            for (name, grad) in &lg.grads {
                let p = with.params().get_param(name).unwrap();
                for i in (0..p.len()).step_by(5) {
                    let mut q = p.clone();
                    q[i] = p[i] + eps;
                    with.params_mut().set_param(name, &q).unwrap();
                    let up = loss(&with);
                    q[i] = p[i] - eps;
                    with.params_mut().set_param(name, &q).unwrap();
                    let down = loss(&with);
                    with.params_mut().set_param(name, &p).unwrap();
                    let fd = (up - down) / (2.0 * eps as f64);
                    assert!(
                        (grad[i] as f64 - fd).abs() < 2e-3 + 2e-2 * fd.abs(),
                        "{outputs:?} {name}[{i}]: {} vs fd {fd}",
                        grad[i]
                    );
                }
            }
            // A row half NaN, and a missing block, are refused.
            let mut bad = y.clone();
            bad[6 * 2] = 0.5;
            bad[6 * 2 + 1] = f32::NAN;
            assert!(with.loss_and_grads(&x, &bad, batch, seq, None).err().unwrap().to_string().contains("not finite"));
            let e = with.loss_and_grads(&x, &y[..24], batch, seq, None).err().unwrap().to_string();
            assert!(e.contains("3 blocks"), "{e}");
        }
    }

    #[test]
    fn series_refuses_bad_configs_and_inputs_without_changing_anything() {
        let bad = SeriesConfig {
            dim: 2,
            hidden: 4,
            layers: 1,
            cell: CellKind::Gru,
            head: Head::Mdn { dim: 2, components: 0 },
            ahead: 1,
            outputs: Outputs::Every,
        };
        assert!(SeriesModel::new(bad, Dev::Cpu)
            .err()
            .unwrap()
            .to_string()
            .contains("components (K) must be at least 1"));
        let mismatch = SeriesConfig { head: Head::Gaussian { dim: 3 }, ..bad };
        assert!(SeriesModel::new(mismatch, Dev::Cpu).is_err());

        let mut m = model(CellKind::Gru, MDN2, 4, 1);
        let before = m.params().get_param("head.bias").unwrap();
        let mut x = lcg(2 * 3 * 2, 1, 1.0);
        let y = lcg(2 * 3 * 2, 2, 1.0);
        x[5] = f32::NAN;
        let cfg = AdamWConfig::default();
        let e = m.train_step(&x, &y, 2, 3, &cfg).unwrap_err().to_string();
        assert!(e.contains("not finite"), "{e}");
        assert!(m.train_step(&y, &y[..10], 2, 3, &cfg).unwrap_err().to_string().contains("expected batch 2"));
        assert!(m.step(None, &[0.5, 0.5, 0.5]).unwrap_err().to_string().contains("whole rows"));
        assert!(m.nll(&y, &y, 2, 3, Some(&[0.0; 3])).unwrap_err().to_string().contains("recurrent state"));
        // A loss that overflows (σ → 0 from a huge negative bias of s) is refused and changes nothing.
        let mut b = before.clone();
        for v in &mut b[3..15] {
            *v = -80.0;
        }
        m.params_mut().set_param("head.bias", &b).unwrap();
        let e = m.train_step(&y, &y, 2, 3, &cfg).unwrap_err().to_string();
        assert!(e.contains("diverged"), "{e}");
        assert_eq!(m.params().get_param("head.bias").unwrap(), b);
        assert!(m.carry().is_none());
    }
}
