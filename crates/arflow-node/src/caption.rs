//! The image captioner of arflow-core: training and scoring return promises and run on the libuv pool;
//! `encode` and `decodeStep` (one step of many hypotheses, for greedy and beam search) are synchronous.

use super::*;
use crate::lm::cell_of;
use crate::seq2seq::{
    loss_grads, sampling_of, step_stats, DecodeStepResult, LossGradsOut, Seq2SeqLossGrads, Seq2SeqNll, Seq2SeqStepStats,
};
use arflow_core::caption::{CaptionConfig, Captioner};
use arflow_core::seq2seq::decoder::DecoderBatch;

#[napi(object)]
pub struct CaptionShape {
    pub vocab: u32,
    pub embed: u32,
    pub hidden: u32,
    pub layers: u32,
    /// 'gru' (default), 'lstm' or 'rnn'.
    pub cell: Option<String>,
    /// Side of the square grayscale images in pixels.
    pub image: u32,
    /// Output channels of each conv block.
    pub channels: Vec<u32>,
}

/// A batch: `batch` images of `image × image` 8-bit pixels, decoder inputs and targets `[B, T]`, and
/// for scheduled sampling the per-token flips (1 = ground truth) and uniforms, both `[B, T]`.
#[napi(object)]
pub struct CaptionBatch {
    pub images: Uint8Array,
    pub dec_in: Uint32Array,
    pub targets: Uint32Array,
    pub batch: u32,
    pub tgt_len: u32,
    pub flips: Option<Uint8Array>,
    pub uniforms: Option<Float32Array>,
}

/// A batch copied out of JS memory so the work can run on another thread.
struct Owned {
    images: Vec<u8>,
    dec_in: Vec<u32>,
    targets: Vec<u32>,
    batch: usize,
    len: usize,
    sampling: Option<(Vec<u8>, Vec<f32>)>,
}

impl Owned {
    fn of(b: &CaptionBatch) -> Result<Self> {
        Ok(Owned {
            images: b.images.to_vec(),
            dec_in: b.dec_in.to_vec(),
            targets: b.targets.to_vec(),
            batch: b.batch as usize,
            len: b.tgt_len as usize,
            sampling: sampling_of(&b.flips, &b.uniforms)?,
        })
    }

    fn batch(&self) -> DecoderBatch<'_> {
        DecoderBatch {
            dec_in: &self.dec_in,
            targets: &self.targets,
            batch: self.batch,
            len: self.len,
            sampling: self.sampling.as_ref().map(|(f, u)| (f.as_slice(), u.as_slice())),
        }
    }
}

#[napi]
pub struct NativeCaptioner {
    inner: Arc<Mutex<Captioner>>,
}

param_accessors!(NativeCaptioner);

#[napi]
impl NativeCaptioner {
    #[napi(constructor)]
    pub fn new(shape: CaptionShape, device: String) -> Result<Self> {
        let cfg = CaptionConfig {
            vocab: usize_of(shape.vocab, "vocab")?,
            embed: usize_of(shape.embed, "embed")?,
            hidden: usize_of(shape.hidden, "hidden")?,
            layers: usize_of(shape.layers, "layers")?,
            cell: cell_of(shape.cell.as_deref())?,
            image: usize_of(shape.image, "image")?,
            channels: shape.channels.iter().map(|&c| usize_of(c, "channels")).collect::<Result<_>>()?,
        };
        let dev = device_of(&device)?;
        let model = guarded(|| Captioner::new(cfg, dev).map_err(core_err))?;
        Ok(NativeCaptioner { inner: Arc::new(Mutex::new(model)) })
    }

    /// One whole training step (CNN encoder, bridge, decoder with optional scheduled sampling, masked
    /// cross-entropy, backward, clipping, AdamW) off the JS thread.
    #[napi(ts_return_type = "Promise<Seq2SeqStepStats>")]
    pub fn train_step(
        &self,
        b: CaptionBatch,
        opt: OptimConfig,
    ) -> Result<AsyncTask<Job<arflow_core::seq2seq::Seq2SeqStep, Seq2SeqStepStats>>> {
        let (model, a, opt): (_, _, AdamWConfig) = (self.inner.clone(), Owned::of(&b)?, (&opt).into());
        Ok(job(move || lock(&model)?.train_step(&a.images, &a.batch(), &opt).map_err(core_err), step_stats))
    }

    #[napi(ts_return_type = "Promise<Seq2SeqLossGrads>")]
    pub fn loss_and_grads(&self, b: CaptionBatch) -> Result<AsyncTask<Job<LossGradsOut, Seq2SeqLossGrads>>> {
        let (model, a) = (self.inner.clone(), Owned::of(&b)?);
        Ok(job(move || lock(&model)?.loss_and_grads(&a.images, &a.batch()).map_err(core_err), loss_grads))
    }

    /// Summed NLL of the non-PAD targets under teacher forcing, and their count.
    #[napi(ts_return_type = "Promise<Seq2SeqNll>")]
    pub fn nll(&self, b: CaptionBatch) -> Result<AsyncTask<Job<(f64, usize), Seq2SeqNll>>> {
        let (model, a) = (self.inner.clone(), Owned::of(&b)?);
        if a.sampling.is_some() {
            return Err(tag("config: nll scores under teacher forcing; pass no flips or uniforms".into()));
        }
        Ok(job(
            move || lock(&model)?.nll(&a.images, &a.batch()).map_err(core_err),
            |(nll, tokens)| Seq2SeqNll { nll, tokens: tokens as u32 },
        ))
    }

    /// The decoder's initial state `[L, B, S]` for `batch` images.
    #[napi]
    pub fn encode(&self, images: Uint8Array, batch: u32) -> Result<F32Out> {
        let m = lock(&self.inner)?;
        guarded(|| m.encode(&images, batch as usize).map(F32Out).map_err(core_err))
    }

    /// One decoder step of N hypotheses: `state [L, N, S]`, `tokens [N]` → new state, log-probs `[N, V]`.
    #[napi]
    pub fn decode_step(&self, state: Float32Array, tokens: Uint32Array) -> Result<DecodeStepResult> {
        let m = lock(&self.inner)?;
        let (s, lp) = guarded(|| m.decode_step(&state, &tokens).map_err(core_err))?;
        Ok(DecodeStepResult { state: F32Out(s), log_probs: F32Out(lp) })
    }
}
