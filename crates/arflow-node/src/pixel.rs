//! The Pixel-RNN image model (Row LSTM / Row GRU): `src/backend/pixel-backend.ts` is its contract.

use super::*;
use crate::flownet::FlowLossGradsResult;
use arflow_core::pixel::{PixelConfig, PixelModel, PixelOutput};
use arflow_core::rnn::CellKind;

#[napi(object)]
pub struct PixelShape {
    /// 'lstm' or 'gru'.
    pub cell: String,
    pub hidden: u32,
    pub layers: u32,
    pub rows: u32,
    pub cols: u32,
    /// 'categorical' or 'bernoulli'.
    pub output: String,
    /// K classes, absent for an unconditional model.
    pub classes: Option<u32>,
}

type Shared = Arc<Mutex<PixelModel>>;

/// The Pixel-RNN of arflow-core. Training, gradients, NLL, logits and sampling return promises and run
/// on the libuv pool. `labels` is `[batch]` exactly when the model has classes, else null.
#[napi]
pub struct NativePixelModel {
    inner: Shared,
}

param_accessors!(NativePixelModel);

/// The core's error with its code; a value out of range (a target, label or given pixel) is a data
/// error, as in the TypeScript reference.
fn pixel_err(e: arflow_core::Error) -> Error {
    let e = core_err(e);
    match e.reason.strip_prefix("E_SHAPE: ") {
        Some(m) if m.contains("out of range") => Error::new(Status::GenericFailure, format!("E_DATA: {m}")),
        _ => e,
    }
}

/// Class ids as the core takes them; a negative one is a data error.
fn labels_of(labels: Option<Int32Array>) -> Result<Option<Vec<u32>>> {
    let Some(l) = labels else { return Ok(None) };
    if let Some(b) = l.iter().position(|&v| v < 0) {
        return Err(Error::new(Status::GenericFailure, format!("E_DATA: label {b} is {}, out of range", l[b])));
    }
    Ok(Some(l.iter().map(|&v| v as u32).collect()))
}

/// A batch copied out of JS memory so the work can run on another thread.
struct Batch {
    model: Shared,
    x: Vec<f32>,
    targets: Vec<u8>,
    labels: Option<Vec<u32>>,
    batch: usize,
}

#[napi]
impl NativePixelModel {
    #[napi(constructor)]
    pub fn new(shape: PixelShape, device: String) -> Result<Self> {
        let cell = CellKind::parse(&shape.cell).map_err(|e| tag(format!("config: {e}")))?;
        let cfg = PixelConfig {
            cell,
            hidden: usize_of(shape.hidden, "hidden")?,
            layers: usize_of(shape.layers, "layers")?,
            rows: usize_of(shape.rows, "rows")?,
            cols: usize_of(shape.cols, "cols")?,
            output: PixelOutput::parse(&shape.output).map_err(core_err)?,
            classes: shape.classes.map(|k| usize_of(k, "classes")).transpose()?,
        };
        let dev = device_of(&device)?;
        let model = guarded(|| PixelModel::new(cfg, dev).map_err(core_err))?;
        Ok(NativePixelModel { inner: Arc::new(Mutex::new(model)) })
    }

    fn batch(&self, x: Float32Array, targets: Uint8Array, labels: Option<Int32Array>, batch: u32) -> Result<Batch> {
        Ok(Batch {
            model: self.inner.clone(),
            x: x.to_vec(),
            targets: targets.to_vec(),
            labels: labels_of(labels)?,
            batch: batch as usize,
        })
    }

    /// One whole training step (forward, mean NLL per image, backward, clip, AdamW) off the JS thread.
    #[napi(ts_return_type = "Promise<StepStats>")]
    pub fn train_step(
        &self,
        x: Float32Array,
        targets: Uint8Array,
        labels: Option<Int32Array>,
        batch: u32,
        opt: OptimConfig,
    ) -> Result<AsyncTask<Job<arflow_core::StepStats, StepStats>>> {
        let b = self.batch(x, targets, labels, batch)?;
        let opt: AdamWConfig = (&opt).into();
        Ok(job(
            move || lock(&b.model)?.train_step(&b.x, &b.targets, b.labels.as_deref(), b.batch, &opt).map_err(pixel_err),
            |s| StepStats { loss: s.loss, grad_norm: s.grad_norm },
        ))
    }

    #[napi(ts_return_type = "Promise<FlowLossGradsResult>")]
    pub fn loss_and_grads(
        &self,
        x: Float32Array,
        targets: Uint8Array,
        labels: Option<Int32Array>,
        batch: u32,
    ) -> Result<AsyncTask<Job<(f64, arflow_core::params::NamedGrads), FlowLossGradsResult>>> {
        let b = self.batch(x, targets, labels, batch)?;
        Ok(job(
            move || lock(&b.model)?.loss_and_grads(&b.x, &b.targets, b.labels.as_deref(), b.batch).map_err(pixel_err),
            |(loss, grads)| FlowLossGradsResult {
                loss,
                grads: grads.into_iter().map(|(name, g)| NamedTensor { name, data: F32Out(g) }).collect(),
            },
        ))
    }

    /// Each image's summed NLL in nats, `[batch]`.
    #[napi(ts_return_type = "Promise<Float64Array>")]
    pub fn nll(
        &self,
        x: Float32Array,
        targets: Uint8Array,
        labels: Option<Int32Array>,
        batch: u32,
    ) -> Result<AsyncTask<Job<Vec<f64>, F64Out>>> {
        let b = self.batch(x, targets, labels, batch)?;
        Ok(job(move || lock(&b.model)?.nll(&b.x, &b.targets, b.labels.as_deref(), b.batch).map_err(pixel_err), F64Out))
    }

    /// Logits `[batch, R, C, O]` of every pixel.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn forward(
        &self,
        x: Float32Array,
        labels: Option<Int32Array>,
        batch: u32,
    ) -> Result<AsyncTask<Job<Vec<f32>, F32Out>>> {
        let (model, x, labels) = (self.inner.clone(), x.to_vec(), labels_of(labels)?);
        Ok(job(move || lock(&model)?.forward(&x, labels.as_deref(), batch as usize).map_err(pixel_err), F32Out))
    }

    /// `n` images `[n, R, C]` drawn in raster order from `uniforms [n, R, C]`; the first `topRows` rows of
    /// each are given in `top [n, topRows, C]`.
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn sample(
        &self,
        n: u32,
        uniforms: Float32Array,
        labels: Option<Int32Array>,
        top_rows: u32,
        top: Option<Uint8Array>,
    ) -> Result<AsyncTask<Job<Vec<u8>, U8Out>>> {
        let (model, u, labels, top) =
            (self.inner.clone(), uniforms.to_vec(), labels_of(labels)?, top.map(|t| t.to_vec()));
        Ok(job(
            move || {
                let m = lock(&model)?;
                m.sample(n as usize, &u, labels.as_deref(), top_rows as usize, top.as_deref()).map_err(pixel_err)
            },
            U8Out,
        ))
    }
}
