//! The recurrent density model of continuous time series (Gaussian or mixture-density likelihood) and
//! the raw likelihood-head call.

use super::lm::{cell_of, Carry, LossGradsResult, NllResult};
use super::*;
use arflow_core::heads::{head_nll_f64, Head};
use arflow_core::lm::NllAhead;
use arflow_core::series::{Outputs, SeriesConfig, SeriesModel};
use arflow_core::LossGrads;

#[napi(object)]
pub struct SeriesShape {
    /// D, variables per time step.
    pub dim: u32,
    pub hidden: u32,
    pub layers: u32,
    /// 'gru' (default), 'lstm' or 'rnn'.
    pub cell: Option<String>,
    /// 'gaussian' or 'mdn'.
    pub likelihood: String,
    /// K, for 'mdn' only.
    pub components: Option<u32>,
    /// Heads predicting the next n steps jointly (default 1).
    pub predict_ahead: Option<u32>,
    /// The steps of a window the training loss scores: 'every' (default) or 'last'.
    pub outputs: Option<String>,
}

/// The head `likelihood` names over `dim` variables; unknown names and K = 0 are config errors.
fn head_of(likelihood: &str, dim: u32, components: Option<u32>) -> Result<Head> {
    let dim = usize_of(dim, "dim")?;
    Head::parse(likelihood, dim, components.map(|k| k as usize)).map_err(core_err)
}

#[napi(object)]
pub struct SeriesStepResult {
    pub state: F32Out,
    /// Raw head outputs `[N, outSize]`: the distribution of the next value.
    pub raw: F32Out,
}

type Shared = Arc<Mutex<SeriesModel>>;

/// The series model of arflow-core. Long calls return promises and run on the libuv pool.
#[napi]
pub struct NativeSeriesModel {
    inner: Shared,
}

param_accessors!(NativeSeriesModel);

/// A batch copied out of JS memory so the work can run on another thread.
struct Batch {
    model: Shared,
    inputs: Vec<f32>,
    targets: Vec<f32>,
    batch: usize,
    seq: usize,
    state: Option<Vec<f32>>,
}

fn loss_grads_result(out: LossGrads) -> LossGradsResult {
    let grads = out.grads.into_iter().map(|(name, g)| NamedTensor { name, data: F32Out(g) }).collect();
    LossGradsResult { loss: out.loss, grads, dh0: F32Out(out.dh0) }
}

#[napi]
impl NativeSeriesModel {
    #[napi(constructor)]
    pub fn new(shape: SeriesShape, device: String) -> Result<Self> {
        let cfg = SeriesConfig {
            dim: usize_of(shape.dim, "dim")?,
            hidden: usize_of(shape.hidden, "hidden")?,
            layers: usize_of(shape.layers, "layers")?,
            cell: cell_of(shape.cell.as_deref())?,
            head: head_of(&shape.likelihood, shape.dim, shape.components)?,
            ahead: usize_of(shape.predict_ahead.unwrap_or(1), "predictAhead")?,
            outputs: Outputs::parse(shape.outputs.as_deref().unwrap_or("every")).map_err(core_err)?,
        };
        let dev = device_of(&device)?;
        let model = guarded(|| SeriesModel::new(cfg, dev).map_err(core_err))?;
        Ok(NativeSeriesModel { inner: Arc::new(Mutex::new(model)) })
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

    fn batch(
        &self,
        inputs: Float32Array,
        targets: Float32Array,
        batch: u32,
        seq: u32,
        state: Option<Float32Array>,
    ) -> Batch {
        Batch {
            model: self.inner.clone(),
            inputs: inputs.to_vec(),
            targets: targets.to_vec(),
            batch: batch as usize,
            seq: seq as usize,
            state: state.map(|s| s.to_vec()),
        }
    }

    /// One whole training step (forward, mean NLL, BPTT, clip, AdamW) off the JS thread.
    #[napi(ts_return_type = "Promise<StepStats>")]
    pub fn train_step(
        &self,
        inputs: Float32Array,
        targets: Float32Array,
        batch: u32,
        seq: u32,
        opt: OptimConfig,
    ) -> AsyncTask<Job<arflow_core::StepStats, StepStats>> {
        let b = self.batch(inputs, targets, batch, seq, None);
        let opt: AdamWConfig = (&opt).into();
        job(
            move || lock(&b.model)?.train_step(&b.inputs, &b.targets, b.batch, b.seq, &opt).map_err(core_err),
            |s| StepStats { loss: s.loss, grad_norm: s.grad_norm },
        )
    }

    #[napi(ts_return_type = "Promise<LossGradsResult>")]
    pub fn loss_and_grads(
        &self,
        inputs: Float32Array,
        targets: Float32Array,
        batch: u32,
        seq: u32,
        state: Option<Float32Array>,
    ) -> AsyncTask<Job<LossGrads, LossGradsResult>> {
        let b = self.batch(inputs, targets, batch, seq, state);
        job(
            move || {
                let m = lock(&b.model)?;
                m.loss_and_grads(&b.inputs, &b.targets, b.batch, b.seq, b.state.as_deref()).map_err(core_err)
            },
            loss_grads_result,
        )
    }

    #[napi(ts_return_type = "Promise<NllResult>")]
    pub fn nll(
        &self,
        inputs: Float32Array,
        targets: Float32Array,
        batch: u32,
        seq: u32,
        state: Option<Float32Array>,
    ) -> AsyncTask<Job<NllAhead, NllResult>> {
        let b = self.batch(inputs, targets, batch, seq, state);
        job(
            move || {
                let m = lock(&b.model)?;
                m.nll_ahead(&b.inputs, &b.targets, b.batch, b.seq, b.state.as_deref()).map_err(core_err)
            },
            NllResult::from,
        )
    }

    /// One sampling step of N streams, synchronous: microseconds of work, called once per time step.
    #[napi]
    pub fn step(&self, state: Option<Float32Array>, x: Float32Array) -> Result<SeriesStepResult> {
        let m = lock(&self.inner)?;
        let (s, raw) = guarded(|| m.step(state.as_deref(), &x).map_err(core_err))?;
        Ok(SeriesStepResult { state: F32Out(s), raw: F32Out(raw) })
    }
}

#[napi(object)]
pub struct HeadNllResult {
    /// NLL of every row, nats.
    pub nll: F64Out,
    /// ∂(Σ rows NLL)/∂raw, `[rows, outSize]`.
    pub grad: F64Out,
}

/// The likelihood head's candle op (forward and backward) in f64 on raw arrays, for the tests against
/// the TypeScript reference: `raw [rows, outSize]`, `y [rows, dim]`.
#[napi]
pub fn series_head_nll(
    likelihood: String,
    dim: u32,
    components: Option<u32>,
    raw: Float64Array,
    y: Float64Array,
) -> Result<HeadNllResult> {
    let head = head_of(&likelihood, dim, components)?;
    guarded(|| {
        let (nll, grad) = head_nll_f64(head, &raw, &y).map_err(core_err)?;
        Ok(HeadNllResult { nll: F64Out(nll), grad: F64Out(grad) })
    })
}
