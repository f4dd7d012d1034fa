//! The vector Real NVP flow.

use super::*;

#[napi(object)]
pub struct FlowShape {
    pub dim: u32,
    pub couplings: u32,
    pub hidden: u32,
    pub depth: u32,
}

#[napi(object)]
pub struct FlowLossGradsResult {
    pub loss: f64,
    pub grads: Vec<NamedTensor>,
}

#[napi(object)]
pub struct EncodeResult {
    pub z: F32Out,
    pub logdet: F32Out,
}

#[napi(object)]
pub struct DecodeResult {
    pub x: F32Out,
    pub logdet: F32Out,
}

type SharedFlow = Arc<Mutex<arflow_core::RealNvp>>;

/// The vector Real NVP flow of arflow-core (`src/backend/flow-types.ts`). Training, gradients and
/// log-densities return promises and run on the libuv pool; encode and decode are synchronous.
#[napi]
pub struct NativeRealNvp {
    inner: SharedFlow,
}

param_accessors!(NativeRealNvp);

#[napi]
impl NativeRealNvp {
    #[napi(constructor)]
    pub fn new(shape: FlowShape, device: String) -> Result<Self> {
        let cfg = arflow_core::RealNvpConfig {
            dim: shape.dim as usize,
            couplings: usize_of(shape.couplings, "couplings")?,
            hidden: usize_of(shape.hidden, "hidden")?,
            depth: usize_of(shape.depth, "depth")?,
        };
        let dev = device_of(&device)?;
        let model = guarded(|| arflow_core::RealNvp::new(cfg, dev).map_err(core_err))?;
        Ok(NativeRealNvp { inner: Arc::new(Mutex::new(model)) })
    }

    /// One AdamW step on the mean NLL of `x [batch, D]`, off the JS thread.
    #[napi]
    pub fn train_step(&self, x: Float32Array, batch: u32, opt: OptimConfig) -> AsyncTask<FlowTrainStepTask> {
        AsyncTask::new(FlowTrainStepTask { args: self.args(x, batch), opt: (&opt).into() })
    }

    #[napi]
    pub fn loss_and_grads(&self, x: Float32Array, batch: u32) -> AsyncTask<FlowLossGradsTask> {
        AsyncTask::new(FlowLossGradsTask(self.args(x, batch)))
    }

    #[napi]
    pub fn log_prob(&self, x: Float32Array, batch: u32) -> AsyncTask<FlowLogProbTask> {
        AsyncTask::new(FlowLogProbTask(self.args(x, batch)))
    }

    #[napi]
    pub fn encode(&self, x: Float32Array, batch: u32) -> Result<EncodeResult> {
        let m = lock(&self.inner)?;
        let (z, logdet) = guarded(|| m.encode(&x, batch as usize).map_err(core_err))?;
        Ok(EncodeResult { z: F32Out(z), logdet: F32Out(logdet) })
    }

    #[napi]
    pub fn decode(&self, z: Float32Array, batch: u32) -> Result<DecodeResult> {
        let m = lock(&self.inner)?;
        let (x, logdet) = guarded(|| m.decode(&z, batch as usize).map_err(core_err))?;
        Ok(DecodeResult { x: F32Out(x), logdet: F32Out(logdet) })
    }

    fn args(&self, x: Float32Array, batch: u32) -> FlowArgs {
        FlowArgs { model: self.inner.clone(), x: x.to_vec(), batch: batch as usize }
    }
}

/// A flow batch, copied out of JS memory so the work can run on another thread.
pub struct FlowArgs {
    model: SharedFlow,
    x: Vec<f32>,
    batch: usize,
}

pub struct FlowTrainStepTask {
    args: FlowArgs,
    opt: AdamWConfig,
}

impl Task for FlowTrainStepTask {
    type Output = arflow_core::StepStats;
    type JsValue = StepStats;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.args;
        let mut m = lock(&a.model)?;
        guarded(|| m.train_step(&a.x, a.batch, &self.opt).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, s: Self::Output) -> Result<Self::JsValue> {
        Ok(StepStats { loss: s.loss, grad_norm: s.grad_norm })
    }
}

pub struct FlowLossGradsTask(FlowArgs);

impl Task for FlowLossGradsTask {
    type Output = (f64, arflow_core::params::NamedGrads);
    type JsValue = FlowLossGradsResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.0;
        let m = lock(&a.model)?;
        guarded(|| m.loss_and_grads(&a.x, a.batch).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, (loss, grads): Self::Output) -> Result<Self::JsValue> {
        let grads = grads.into_iter().map(|(name, g)| NamedTensor { name, data: F32Out(g) }).collect();
        Ok(FlowLossGradsResult { loss, grads })
    }
}

pub struct FlowLogProbTask(FlowArgs);

impl Task for FlowLogProbTask {
    type Output = Vec<f32>;
    type JsValue = F32Out;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.0;
        let m = lock(&a.model)?;
        guarded(|| m.log_prob(&a.x, a.batch).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, lp: Self::Output) -> Result<Self::JsValue> {
        Ok(F32Out(lp))
    }
}
