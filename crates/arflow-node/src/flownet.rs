//! The general flow network built from a JSON spec (vector and image Real NVP, Glow, NICE, MAF, IAF).

use super::*;

/// The mean NLL of a batch and its gradient for every parameter (flows and the Pixel-RNN).
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

type SharedNet = Arc<Mutex<arflow_core::FlowNet>>;

/// The general flow network of arflow-core (`src/backend/flownet-types.ts`), built from a JSON spec:
/// vector and image Real NVP, Glow, NICE, MAF and IAF. Training, gradients and log-densities return promises and
/// run on the libuv pool; encode and decode are synchronous. `ctx` is the `[batch, K]` context of a
/// conditional flow, or null.
#[napi]
pub struct NativeFlowNet {
    inner: SharedNet,
}

param_accessors!(NativeFlowNet);

fn ctx_vec(ctx: Option<Float32Array>) -> Option<Vec<f32>> {
    ctx.map(|c| c.to_vec())
}

#[napi]
impl NativeFlowNet {
    /// A flow of `spec` (JSON) with its seeded initialisation.
    #[napi(constructor)]
    pub fn new(spec: String, seed: f64, device: String) -> Result<Self> {
        if !(seed.is_finite() && seed >= 0.0 && seed.fract() == 0.0) {
            return Err(tag(format!("config: seed must be a whole number ≥ 0, got {seed}")));
        }
        let dev = device_of(&device)?;
        let model = guarded(|| arflow_core::FlowNet::new(&spec, seed as u64, dev).map_err(core_err))?;
        Ok(NativeFlowNet { inner: Arc::new(Mutex::new(model)) })
    }

    #[napi]
    pub fn buffer_info(&self) -> Result<Vec<ParamInfo>> {
        let m = lock(&self.inner)?;
        Ok(m.buffer_info()
            .iter()
            .map(|b| ParamInfo { name: b.name.clone(), shape: b.shape.iter().map(|&d| d as u32).collect() })
            .collect())
    }

    #[napi]
    pub fn get_buffer(&self, name: String) -> Result<F32Out> {
        let m = lock(&self.inner)?;
        guarded(|| m.get_buffer(&name).map(F32Out).map_err(core_err))
    }

    #[napi]
    pub fn set_buffer(&self, name: String, data: Float32Array) -> Result<()> {
        let mut m = lock(&self.inner)?;
        guarded(|| m.set_buffer(&name, &data).map_err(core_err))
    }

    /// Data-dependent initialisation of every pending actnorm on this batch; true if any ran.
    #[napi]
    pub fn data_init(&self, x: Float32Array, ctx: Option<Float32Array>, batch: u32) -> Result<bool> {
        let mut m = lock(&self.inner)?;
        guarded(|| m.data_init(&x, ctx.as_deref(), batch as usize).map_err(core_err))
    }

    #[napi(ts_return_type = "Promise<StepStats>")]
    pub fn train_step(
        &self,
        x: Float32Array,
        ctx: Option<Float32Array>,
        batch: u32,
        opt: OptimConfig,
    ) -> AsyncTask<Job<arflow_core::StepStats, StepStats>> {
        let (model, x, ctx, opt): (_, _, _, AdamWConfig) =
            (self.inner.clone(), x.to_vec(), ctx_vec(ctx), (&opt).into());
        job(
            move || lock(&model)?.train_step(&x, ctx.as_deref(), batch as usize, &opt).map_err(core_err),
            |s| StepStats { loss: s.loss, grad_norm: s.grad_norm },
        )
    }

    #[napi(ts_return_type = "Promise<FlowLossGradsResult>")]
    pub fn loss_and_grads(
        &self,
        x: Float32Array,
        ctx: Option<Float32Array>,
        batch: u32,
    ) -> AsyncTask<Job<(f64, arflow_core::params::NamedGrads), FlowLossGradsResult>> {
        let (model, x, ctx) = (self.inner.clone(), x.to_vec(), ctx_vec(ctx));
        job(
            move || lock(&model)?.loss_and_grads(&x, ctx.as_deref(), batch as usize).map_err(core_err),
            |(loss, grads)| FlowLossGradsResult {
                loss,
                grads: grads.into_iter().map(|(name, g)| NamedTensor { name, data: F32Out(g) }).collect(),
            },
        )
    }

    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn log_prob(&self, x: Float32Array, ctx: Option<Float32Array>, batch: u32) -> AsyncTask<Job<Vec<f32>, F32Out>> {
        let (model, x, ctx) = (self.inner.clone(), x.to_vec(), ctx_vec(ctx));
        job(move || lock(&model)?.log_prob(&x, ctx.as_deref(), batch as usize).map_err(core_err), F32Out)
    }

    #[napi]
    pub fn encode(&self, x: Float32Array, ctx: Option<Float32Array>, batch: u32) -> Result<EncodeResult> {
        let m = lock(&self.inner)?;
        let (z, logdet) = guarded(|| m.encode(&x, ctx.as_deref(), batch as usize).map_err(core_err))?;
        Ok(EncodeResult { z: F32Out(z), logdet: F32Out(logdet) })
    }

    #[napi]
    pub fn decode(&self, z: Float32Array, ctx: Option<Float32Array>, batch: u32) -> Result<DecodeResult> {
        let m = lock(&self.inner)?;
        let (x, logdet) = guarded(|| m.decode(&z, ctx.as_deref(), batch as usize).map_err(core_err))?;
        Ok(DecodeResult { x: F32Out(x), logdet: F32Out(logdet) })
    }
}
