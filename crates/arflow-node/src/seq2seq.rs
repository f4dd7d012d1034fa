//! The encoder–decoder of arflow-core: training and scoring return promises and run on the libuv pool;
//! `encode` and `decodeStep` (one step of many hypotheses, for greedy and beam search) are synchronous.

use super::*;
use crate::lm::cell_of;
use arflow_core::seq2seq::{Seq2Seq, Seq2SeqConfig};

#[napi(object)]
pub struct Seq2SeqShape {
    pub src_vocab: u32,
    pub tgt_vocab: u32,
    pub embed: u32,
    pub hidden: u32,
    pub layers: u32,
    /// 'gru' (default), 'lstm' or 'rnn'.
    pub cell: Option<String>,
    pub bidirectional: Option<bool>,
}

/// A batch: sources `[B, Ts]`, decoder inputs and targets `[B, Tt]`, and for scheduled sampling the
/// per-token flips (1 = ground truth) and uniforms of the inverse-CDF samples, both `[B, Tt]`.
#[napi(object)]
pub struct Seq2SeqBatch {
    pub src: Uint32Array,
    pub dec_in: Uint32Array,
    pub targets: Uint32Array,
    pub batch: u32,
    pub src_len: u32,
    pub tgt_len: u32,
    pub flips: Option<Uint8Array>,
    pub uniforms: Option<Float32Array>,
}

#[napi(object)]
pub struct Seq2SeqStepStats {
    pub loss: f64,
    pub grad_norm: f64,
    pub tokens: u32,
    /// The decoder inputs actually fed `[B, Tt]`.
    pub inputs: U32Out,
}

#[napi(object)]
pub struct Seq2SeqLossGrads {
    pub loss: f64,
    pub grads: Vec<NamedTensor>,
    pub inputs: U32Out,
}

#[napi(object)]
pub struct Seq2SeqNll {
    pub nll: f64,
    pub tokens: u32,
}

#[napi(object)]
pub struct DecodeStepResult {
    pub state: F32Out,
    pub log_probs: F32Out,
}

/// A batch copied out of JS memory so the work can run on another thread.
struct Owned {
    src: Vec<u32>,
    dec_in: Vec<u32>,
    targets: Vec<u32>,
    batch: usize,
    src_len: usize,
    tgt_len: usize,
    sampling: Option<(Vec<u8>, Vec<f32>)>,
}

impl Owned {
    fn of(b: &Seq2SeqBatch) -> Result<Self> {
        let sampling = sampling_of(&b.flips, &b.uniforms)?;
        Ok(Owned {
            src: b.src.to_vec(),
            dec_in: b.dec_in.to_vec(),
            targets: b.targets.to_vec(),
            batch: b.batch as usize,
            src_len: b.src_len as usize,
            tgt_len: b.tgt_len as usize,
            sampling,
        })
    }

    fn sampling(&self) -> Option<(&[u8], &[f32])> {
        self.sampling.as_ref().map(|(f, u)| (f.as_slice(), u.as_slice()))
    }
}

/// Scheduled-sampling flips and uniforms copied out of JS memory: both or neither.
pub(crate) fn sampling_of(
    flips: &Option<Uint8Array>,
    uniforms: &Option<Float32Array>,
) -> Result<Option<(Vec<u8>, Vec<f32>)>> {
    match (flips, uniforms) {
        (Some(f), Some(u)) => Ok(Some((f.to_vec(), u.to_vec()))),
        (None, None) => Ok(None),
        _ => Err(tag("config: scheduled sampling needs both flips and uniforms".into())),
    }
}

/// A training step's report as JS sees it.
pub(crate) fn step_stats(s: arflow_core::seq2seq::Seq2SeqStep) -> Seq2SeqStepStats {
    Seq2SeqStepStats {
        loss: s.stats.loss,
        grad_norm: s.stats.grad_norm,
        tokens: s.tokens as u32,
        inputs: U32Out(s.inputs),
    }
}

/// Loss, named gradients and fed inputs as JS sees them.
pub(crate) fn loss_grads((loss, grads, inputs): LossGradsOut) -> Seq2SeqLossGrads {
    Seq2SeqLossGrads {
        loss,
        grads: grads.into_iter().map(|(name, g)| NamedTensor { name, data: F32Out(g) }).collect(),
        inputs: U32Out(inputs),
    }
}

type SharedSeq = Arc<Mutex<Seq2Seq>>;

/// Loss, gradients by name and the decoder inputs fed.
pub(crate) type LossGradsOut = (f64, arflow_core::params::NamedGrads, Vec<u32>);

#[napi]
pub struct NativeSeq2Seq {
    inner: SharedSeq,
}

param_accessors!(NativeSeq2Seq);

#[napi]
impl NativeSeq2Seq {
    #[napi(constructor)]
    pub fn new(shape: Seq2SeqShape, device: String) -> Result<Self> {
        let cfg = Seq2SeqConfig {
            src_vocab: usize_of(shape.src_vocab, "srcVocab")?,
            tgt_vocab: usize_of(shape.tgt_vocab, "tgtVocab")?,
            embed: usize_of(shape.embed, "embed")?,
            hidden: usize_of(shape.hidden, "hidden")?,
            layers: usize_of(shape.layers, "layers")?,
            cell: cell_of(shape.cell.as_deref())?,
            bidirectional: shape.bidirectional.unwrap_or(false),
        };
        let dev = device_of(&device)?;
        let model = guarded(|| Seq2Seq::new(cfg, dev).map_err(core_err))?;
        Ok(NativeSeq2Seq { inner: Arc::new(Mutex::new(model)) })
    }

    /// One whole training step (encoder, bridge, decoder with optional scheduled sampling, masked
    /// cross-entropy, BPTT, clipping, AdamW) off the JS thread.
    #[napi(ts_return_type = "Promise<Seq2SeqStepStats>")]
    pub fn train_step(
        &self,
        b: Seq2SeqBatch,
        opt: OptimConfig,
    ) -> Result<AsyncTask<Job<arflow_core::seq2seq::Seq2SeqStep, Seq2SeqStepStats>>> {
        let (model, a, opt): (_, _, AdamWConfig) = (self.inner.clone(), Owned::of(&b)?, (&opt).into());
        Ok(job(
            move || {
                let mut m = lock(&model)?;
                m.train_step(&a.src, &a.dec_in, &a.targets, a.batch, a.src_len, a.tgt_len, a.sampling(), &opt)
                    .map_err(core_err)
            },
            step_stats,
        ))
    }

    #[napi(ts_return_type = "Promise<Seq2SeqLossGrads>")]
    pub fn loss_and_grads(&self, b: Seq2SeqBatch) -> Result<AsyncTask<Job<LossGradsOut, Seq2SeqLossGrads>>> {
        let (model, a) = (self.inner.clone(), Owned::of(&b)?);
        Ok(job(
            move || {
                let m = lock(&model)?;
                m.loss_and_grads(&a.src, &a.dec_in, &a.targets, a.batch, a.src_len, a.tgt_len, a.sampling())
                    .map_err(core_err)
            },
            loss_grads,
        ))
    }

    /// Summed NLL of the non-PAD targets under teacher forcing, and their count.
    #[napi(ts_return_type = "Promise<Seq2SeqNll>")]
    pub fn nll(&self, b: Seq2SeqBatch) -> Result<AsyncTask<Job<(f64, usize), Seq2SeqNll>>> {
        let (model, a) = (self.inner.clone(), Owned::of(&b)?);
        if a.sampling.is_some() {
            return Err(tag("config: nll scores under teacher forcing; pass no flips or uniforms".into()));
        }
        Ok(job(
            move || {
                let m = lock(&model)?;
                m.nll(&a.src, &a.dec_in, &a.targets, a.batch, a.src_len, a.tgt_len).map_err(core_err)
            },
            |(nll, tokens)| Seq2SeqNll { nll, tokens: tokens as u32 },
        ))
    }

    /// The decoder's initial state `[L, B, S]` for sources `[B, Ts]`.
    #[napi]
    pub fn encode(&self, src: Uint32Array, batch: u32, src_len: u32) -> Result<F32Out> {
        let m = lock(&self.inner)?;
        guarded(|| m.encode(&src, batch as usize, src_len as usize).map(F32Out).map_err(core_err))
    }

    /// One decoder step of N hypotheses: `state [L, N, S]`, `tokens [N]` → new state, log-probs `[N, V]`.
    #[napi]
    pub fn decode_step(&self, state: Float32Array, tokens: Uint32Array) -> Result<DecodeStepResult> {
        let m = lock(&self.inner)?;
        let (s, lp) = guarded(|| m.decode_step(&state, &tokens).map_err(core_err))?;
        Ok(DecodeStepResult { state: F32Out(s), log_probs: F32Out(lp) })
    }
}
