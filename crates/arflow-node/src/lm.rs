//! The character language model (GRU, LSTM or tanh-RNN stack) and the raw recurrent-layer kernel call.

use super::*;
use arflow_core::lm::sampling::{sample_logits, v8_exp, SampleScratch, Sampling, Sfc32};
use arflow_core::lm::{NllAhead, SampleSession};
use arflow_core::rnn::{rnn_backward, rnn_forward, CellKind, RnnDims, RnnWeights};
use arflow_core::{CharLm, CharLmConfig};

#[napi(object)]
pub struct CharLmShape {
    pub vocab_size: u32,
    pub embed: u32,
    pub hidden: u32,
    pub layers: u32,
    /// 'gru' (default), 'lstm' or 'rnn'.
    pub cell: Option<String>,
    /// A learned initial state (the parameter `h0`) in place of zeros.
    pub learned_h0: Option<bool>,
    /// Heads predicting the next n characters jointly (default 1).
    pub predict_ahead: Option<u32>,
}

/// The cell a JS shape names (absent: the GRU); an unknown name is a config error.
pub(crate) fn cell_of(name: Option<&str>) -> Result<CellKind> {
    match name {
        None => Ok(CellKind::Gru),
        Some(n) => CellKind::parse(n).map_err(|e| tag(format!("config: {e}"))),
    }
}

#[napi(object)]
pub struct Carry {
    pub batch: u32,
    pub state: F32Out,
}

#[napi(object)]
pub struct NllResult {
    /// Summed NLL of the next characters or steps (head 1).
    pub nll: f64,
    /// Summed NLL of heads 2..n over their scored positions, when their target blocks were given.
    pub ahead_nll: Vec<f64>,
    /// The positions each of heads 2..n scored (the length of `ahead_nll`).
    pub ahead_rows: Vec<u32>,
    pub state: F32Out,
}

impl From<NllAhead> for NllResult {
    fn from(out: NllAhead) -> Self {
        let NllAhead { mut nll, rows, state } = out;
        let ahead_nll = nll.split_off(1);
        let ahead_rows = rows[1..].iter().map(|&r| r as u32).collect();
        NllResult { nll: nll[0], ahead_nll, ahead_rows, state: F32Out(state) }
    }
}

#[napi(object)]
pub struct StepResult {
    pub state: F32Out,
    pub logits: F32Out,
}

#[napi(object)]
pub struct LossGradsResult {
    pub loss: f64,
    pub grads: Vec<NamedTensor>,
    pub dh0: F32Out,
}

type Shared = Arc<Mutex<CharLm>>;

/// The character language model of arflow-core. Long calls return promises and run on the libuv pool.
#[napi]
pub struct NativeCharLm {
    inner: Shared,
}

param_accessors!(NativeCharLm);

#[napi]
impl NativeCharLm {
    #[napi(constructor)]
    pub fn new(shape: CharLmShape, device: String) -> Result<Self> {
        let cfg = CharLmConfig {
            vocab: usize_of(shape.vocab_size, "vocabSize")?,
            embed: usize_of(shape.embed, "embed")?,
            hidden: usize_of(shape.hidden, "hidden")?,
            layers: usize_of(shape.layers, "layers")?,
            cell: cell_of(shape.cell.as_deref())?,
            learned_h0: shape.learned_h0.unwrap_or(false),
            ahead: usize_of(shape.predict_ahead.unwrap_or(1), "predictAhead")?,
        };
        let dev = device_of(&device)?;
        let model = guarded(|| CharLm::new(cfg, dev).map_err(core_err))?;
        Ok(NativeCharLm { inner: Arc::new(Mutex::new(model)) })
    }

    #[napi]
    pub fn get_carry(&self) -> Result<Option<Carry>> {
        let m = lock(&self.inner)?;
        Ok(m.carry().map(|(b, s)| Carry { batch: b as u32, state: F32Out(s) }))
    }

    #[napi]
    pub fn set_carry(&self, carry: Option<Carry>) -> Result<()> {
        let mut m = lock(&self.inner)?;
        let c = carry.map(|c| (c.batch as usize, c.state.0));
        guarded(|| m.set_carry(c).map_err(core_err))
    }

    /// One whole training step (forward, loss, BPTT, clip, AdamW) off the JS thread.
    #[napi]
    pub fn train_step(
        &self,
        ids: Uint32Array,
        targets: Uint32Array,
        batch: u32,
        seq: u32,
        opt: OptimConfig,
    ) -> AsyncTask<TrainStepTask> {
        AsyncTask::new(TrainStepTask {
            model: self.inner.clone(),
            ids: ids.to_vec(),
            targets: targets.to_vec(),
            batch: batch as usize,
            seq: seq as usize,
            opt: (&opt).into(),
        })
    }

    #[napi]
    pub fn loss_and_grads(
        &self,
        ids: Uint32Array,
        targets: Uint32Array,
        batch: u32,
        seq: u32,
        state: Option<Float32Array>,
    ) -> AsyncTask<LossGradsTask> {
        AsyncTask::new(LossGradsTask(self.batch_args(ids, targets, batch, seq, state)))
    }

    #[napi]
    pub fn nll(
        &self,
        ids: Uint32Array,
        targets: Uint32Array,
        batch: u32,
        seq: u32,
        state: Option<Float32Array>,
    ) -> AsyncTask<NllTask> {
        AsyncTask::new(NllTask(self.batch_args(ids, targets, batch, seq, state)))
    }

    fn batch_args(
        &self,
        ids: Uint32Array,
        targets: Uint32Array,
        batch: u32,
        seq: u32,
        state: Option<Float32Array>,
    ) -> BatchArgs {
        BatchArgs {
            model: self.inner.clone(),
            ids: ids.to_vec(),
            targets: targets.to_vec(),
            batch: batch as usize,
            seq: seq as usize,
            state: state.map(|s| s.to_vec()),
        }
    }

    /// One sampling step, synchronous: it is microseconds of work, and sampling loops call it per token.
    #[napi]
    pub fn step(&self, state: Option<Float32Array>, tokens: Uint32Array) -> Result<StepResult> {
        let m = lock(&self.inner)?;
        let (s, logits) = guarded(|| m.step(state.as_deref(), &tokens).map_err(core_err))?;
        Ok(StepResult { state: F32Out(s), logits: F32Out(logits) })
    }

    /// A sampling loop over `streams` streams run in Rust (see `CharLm::sample_session`): reads
    /// `prime [N, P]` from `state [L, N, S]` (null: zeros or the learned h0); `rng [N, 4]` holds each
    /// stream's sfc32 state (`Rng.state()`); temperature, topK (0 or ≥ V: off) and topP as
    /// `validateSampling` returns them. Draws replicate `sampleLogits` bit for bit.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn sampler(
        &self,
        state: Option<Float32Array>,
        prime: Uint32Array,
        streams: u32,
        rng: Uint32Array,
        temperature: f64,
        top_k: u32,
        top_p: f64,
    ) -> Result<NativeLmSampler> {
        let n = usize_of(streams, "streams")?;
        if rng.len() != 4 * n {
            return Err(tag(format!("sampling: rng holds {} values, 4 per stream ({n} streams) needed", rng.len())));
        }
        let rngs = rng.chunks_exact(4).map(|s| Sfc32::from_state([s[0], s[1], s[2], s[3]])).collect();
        let sampling = Sampling::new(temperature, top_k as usize, top_p).map_err(core_err)?;
        let m = lock(&self.inner)?;
        let session = guarded(|| m.sample_session(state.as_deref(), &prime, n, rngs, sampling).map_err(core_err))?;
        Ok(NativeLmSampler { model: self.inner.clone(), session })
    }
}

/// Most characters one `take` returns (all streams together): 2²⁶ ids, 256 MiB.
const MAX_TAKE: usize = 1 << 26;

/// A sampling loop in progress on a [`NativeCharLm`] (`sampler()`): each call steps and draws in Rust,
/// with the weights the model holds at that moment.
#[napi]
pub struct NativeLmSampler {
    model: Shared,
    session: SampleSession,
}

#[napi]
impl NativeLmSampler {
    /// The next character of a one-stream sampler (no typed array: the per-token call of `stream()`).
    #[napi(js_name = "next")]
    pub fn next_id(&mut self) -> Result<u32> {
        if self.session.streams() != 1 {
            return Err(tag(format!(
                "sampling: next() is for one stream; this sampler has {}",
                self.session.streams()
            )));
        }
        let m = lock(&self.model)?;
        let out = guarded(|| m.sample_next(&mut self.session, 1).map_err(core_err))?;
        Ok(out[0])
    }

    /// The next `n` characters of every stream, `[N, n]` row-major.
    #[napi]
    pub fn take(&mut self, n: u32) -> Result<U32Out> {
        let total = (n as usize).saturating_mul(self.session.streams());
        if total > MAX_TAKE {
            return Err(tag(format!(
                "sampling: {n} characters × {} streams is more than {MAX_TAKE} at once",
                self.session.streams()
            )));
        }
        let m = lock(&self.model)?;
        guarded(|| m.sample_next(&mut self.session, n as usize).map(U32Out).map_err(core_err))
    }
}

#[napi(object)]
pub struct SampleRowResult {
    pub index: u32,
    /// The generator's state after the draw, `[a, b, c, d]`.
    pub rng: U32Out,
}

/// One draw of the Rust sampler from one row of logits with the sfc32 state `rng [4]`: the kernel
/// test of its equality with `sampleLogits` in TS.
#[napi]
pub fn sample_logits_row(
    logits: Float32Array,
    temperature: f64,
    top_k: u32,
    top_p: f64,
    rng: Uint32Array,
) -> Result<SampleRowResult> {
    if logits.is_empty() || rng.len() != 4 {
        return Err(tag(format!(
            "sampling: need ≥ 1 logit and a 4-word rng state, got {} and {}",
            logits.len(),
            rng.len()
        )));
    }
    let sampling = Sampling::new(temperature, top_k as usize, top_p).map_err(core_err)?;
    let mut r = Sfc32::from_state([rng[0], rng[1], rng[2], rng[3]]);
    let index = sample_logits(&logits, &sampling, &mut r, &mut SampleScratch::default()) as u32;
    Ok(SampleRowResult { index, rng: U32Out(r.state().to_vec()) })
}

/// `Math.exp` as the Rust sampler computes it (V8's fdlibm port) for every value: the kernel test
/// that it matches the running V8 bit for bit.
#[napi]
pub fn v8_exp_of(xs: Float64Array) -> F64Out {
    F64Out(xs.iter().map(|&x| v8_exp(x)).collect())
}

pub struct TrainStepTask {
    model: Shared,
    ids: Vec<u32>,
    targets: Vec<u32>,
    batch: usize,
    seq: usize,
    opt: AdamWConfig,
}

impl Task for TrainStepTask {
    type Output = arflow_core::StepStats;
    type JsValue = StepStats;

    fn compute(&mut self) -> Result<Self::Output> {
        let mut m = lock(&self.model)?;
        guarded(|| m.train_step(&self.ids, &self.targets, self.batch, self.seq, &self.opt).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, s: Self::Output) -> Result<Self::JsValue> {
        Ok(StepStats { loss: s.loss, grad_norm: s.grad_norm })
    }
}

/// A batch to score, copied out of JS memory so the work can run on another thread.
pub struct BatchArgs {
    model: Shared,
    ids: Vec<u32>,
    targets: Vec<u32>,
    batch: usize,
    seq: usize,
    state: Option<Vec<f32>>,
}

pub struct LossGradsTask(BatchArgs);

impl Task for LossGradsTask {
    type Output = arflow_core::LossGrads;
    type JsValue = LossGradsResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.0;
        let m = lock(&a.model)?;
        guarded(|| m.loss_and_grads(&a.ids, &a.targets, a.batch, a.seq, a.state.as_deref()).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        let grads = out.grads.into_iter().map(|(name, g)| NamedTensor { name, data: F32Out(g) }).collect();
        Ok(LossGradsResult { loss: out.loss, grads, dh0: F32Out(out.dh0) })
    }
}

pub struct NllTask(BatchArgs);

impl Task for NllTask {
    type Output = NllAhead;
    type JsValue = NllResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.0;
        let m = lock(&a.model)?;
        guarded(|| m.nll_ahead(&a.ids, &a.targets, a.batch, a.seq, a.state.as_deref()).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out.into())
    }
}

#[napi(object)]
pub struct RnnDimsJs {
    /// 'gru' (default), 'lstm' or 'rnn'.
    pub cell: Option<String>,
    pub batch: u32,
    pub seq: u32,
    pub input: u32,
    pub hidden: u32,
}

#[napi(object)]
pub struct RnnLayerResult {
    /// `[B, T, S]`: S = H, or 2H for the LSTM (h then c per position).
    pub out: F32Out,
    pub dx: F32Out,
    /// dL/d(initial state) `[B, S]`.
    pub dh0: F32Out,
    /// Packed like the parameters: `[w_ih, w_hh, b_ih, b_hh]`.
    pub dparams: F32Out,
}

/// One recurrent layer forward and backward through time on raw arrays, for kernel tests and
/// benchmarks: `h0` the initial state `[B, S]`, `params` packed `[w_ih, w_hh, b_ih, b_hh]`, `d_out`
/// the gradient reaching the output `[B, T, S]`.
#[napi]
pub fn rnn_layer_grads(
    dims: RnnDimsJs,
    x: Float32Array,
    h0: Float32Array,
    params: Float32Array,
    d_out: Float32Array,
) -> Result<RnnLayerResult> {
    let d = RnnDims {
        cell: cell_of(dims.cell.as_deref())?,
        batch: usize_of(dims.batch, "batch")?,
        seq: usize_of(dims.seq, "seq")?,
        input: usize_of(dims.input, "input")?,
        hidden: usize_of(dims.hidden, "hidden")?,
    };
    let sizes = [
        ("x", x.len(), d.batch * d.seq * d.input),
        ("h0", h0.len(), d.batch * d.state_len()),
        ("params", params.len(), d.param_len()),
        ("dOut", d_out.len(), d.batch * d.seq * d.state_len()),
    ];
    for (what, got, want) in sizes {
        if got != want {
            let name = d.cell.name();
            return Err(tag(format!("{name}: {what} holds {got} values, expected {want} for {dims:?}", dims = d)));
        }
    }
    guarded(|| {
        let w = RnnWeights::unpack(&d, &params);
        let mut out = vec![0f32; d.batch * d.seq * d.state_len()];
        let mut saved = Vec::new();
        rnn_forward(&d, &x, &h0, &w, &mut out, Some(&mut saved));
        let g = rnn_backward(&d, &x, &h0, &w, &out, &mut saved, &d_out);
        Ok(RnnLayerResult { out: F32Out(out), dx: F32Out(g.dx), dh0: F32Out(g.dh0), dparams: F32Out(g.dparams) })
    })
}
