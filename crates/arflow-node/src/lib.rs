//! arflow-node: the thin N-API layer over arflow-core. It validates and converts arguments, runs long
//! work off the JS thread (libuv pool `AsyncTask`s), turns panics into errors and tags every error with
//! a stable code the TypeScript side maps onto its typed error classes. It holds no math.

use arflow_core::flow::{
    coupling_backward as coupling_backward_kernel, coupling_forward as coupling_forward_kernel, coupling_inverse,
};
use arflow_core::gru::{gru_backward, gru_forward, GruDims, GruWeights};
use arflow_core::{AdamWConfig, CharLm, CharLmConfig, Dev};
use napi::bindgen_prelude::*;

/// Rust allocations of the addon go through mimalloc: training frees and re-allocates the same
/// multi-megabyte tensors every step, and glibc returns them to the kernel (its per-thread heaps are
/// unmapped whenever they empty), so each step paid page faults and page clearing for memory it had
/// just released. mimalloc keeps and reuses it: a Fashion-MNIST Real NVP step ~10–25% faster
/// (A/B, alternating builds), the GRU unchanged.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use napi_derive::napi;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

/// Errors reach JS as `"<CODE>: message"`; `src/backend/native.ts` maps the code to an error class.
fn tag(msg: String) -> Error {
    let code = if msg.contains("diverged") {
        "E_DIVERGED"
    } else if msg.contains("learning rate") || msg.contains("config") || msg.contains("device") || msg.contains("CUDA")
    {
        "E_CONFIG"
    } else if msg.contains("not finite") {
        "E_DATA"
    } else {
        "E_SHAPE"
    };
    Error::new(Status::GenericFailure, format!("{code}: {msg}"))
}

fn core_err(e: arflow_core::Error) -> Error {
    // candle appends a backtrace when RUST_BACKTRACE is set: users get the message alone.
    let msg = e.to_string();
    let msg = msg.split("\n   0:").next().unwrap_or_default().trim_end();
    tag(msg.to_string())
}

/// Runs `f`, turning a panic (a broken invariant in the core) into a JS error instead of an abort.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::new(Status::GenericFailure, format!("E_INTERNAL: arflow-core panicked: {what}")))
        }
    }
}

/// The device named `name`: an unknown name is a config error (E_CONFIG); a known one this build or
/// machine cannot open (CUDA missing, no such GPU) is a backend error (E_BACKEND), so that callers can
/// tell it from a bad model spec or checkpoint.
fn device_of(name: &str) -> Result<Dev> {
    let dev = Dev::parse(name).map_err(core_err)?;
    if let Err(e) = guarded(|| dev.device().map_err(core_err)) {
        let msg = e.reason.split_once(": ").map_or(e.reason.as_str(), |(_, m)| m).to_string();
        return Err(Error::new(Status::GenericFailure, format!("E_BACKEND: device {name}: {msg}")));
    }
    Ok(dev)
}

fn usize_of(v: u32, what: &str) -> Result<usize> {
    if v == 0 {
        return Err(tag(format!("config: {what} must be at least 1")));
    }
    Ok(v as usize)
}

#[napi(object)]
pub struct CharLmShape {
    pub vocab_size: u32,
    pub embed: u32,
    pub hidden: u32,
    pub layers: u32,
}

#[napi(object)]
pub struct OptimConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub clip: f64,
}

impl From<&OptimConfig> for AdamWConfig {
    fn from(o: &OptimConfig) -> Self {
        AdamWConfig { lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay, clip: o.clip }
    }
}

#[napi(object)]
pub struct StepStats {
    pub loss: f64,
    pub grad_norm: f64,
}

#[napi(object)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<u32>,
}

#[napi(object)]
pub struct Carry {
    pub batch: u32,
    pub state: Float32Array,
}

#[napi(object)]
pub struct NllResult {
    pub nll: f64,
    pub state: Float32Array,
}

#[napi(object)]
pub struct StepResult {
    pub state: Float32Array,
    pub logits: Float32Array,
}

#[napi(object)]
pub struct NamedTensor {
    pub name: String,
    pub data: Float32Array,
}

#[napi(object)]
pub struct LossGradsResult {
    pub loss: f64,
    pub grads: Vec<NamedTensor>,
    pub dh0: Float32Array,
}

type Shared = Arc<Mutex<CharLm>>;

fn lock<M>(m: &Arc<Mutex<M>>) -> Result<MutexGuard<'_, M>> {
    m.lock().map_err(|_| Error::new(Status::GenericFailure, "E_INTERNAL: model lock poisoned by an earlier panic"))
}

/// The accessors every model class exposes for its named parameters and AdamW state, over the model's
/// [`ParamStore`]: `$class` must hold its model as `inner: Arc<Mutex<_>>` with `params()`/`params_mut()`.
macro_rules! param_accessors {
    ($class:ident) => {
        #[napi]
        impl $class {
            #[napi]
            pub fn param_info(&self) -> Result<Vec<ParamInfo>> {
                let m = lock(&self.inner)?;
                Ok(m.params()
                    .specs()
                    .iter()
                    .map(|s| ParamInfo { name: s.name.clone(), shape: s.shape.iter().map(|&d| d as u32).collect() })
                    .collect())
            }

            #[napi]
            pub fn get_param(&self, name: String) -> Result<Float32Array> {
                let m = lock(&self.inner)?;
                guarded(|| m.params().get_param(&name).map(Float32Array::new).map_err(core_err))
            }

            #[napi]
            pub fn set_param(&self, name: String, data: Float32Array) -> Result<()> {
                let mut m = lock(&self.inner)?;
                guarded(|| m.params_mut().set_param(&name, &data).map_err(core_err))
            }

            #[napi]
            pub fn get_optim_state(&self, which: String, name: String) -> Result<Float32Array> {
                let m = lock(&self.inner)?;
                guarded(|| m.params().get_optim(&which, &name).map(Float32Array::new).map_err(core_err))
            }

            #[napi]
            pub fn set_optim_state(&self, which: String, name: String, data: Float32Array) -> Result<()> {
                let mut m = lock(&self.inner)?;
                guarded(|| m.params_mut().set_optim(&which, &name, &data).map_err(core_err))
            }

            #[napi]
            pub fn get_optim_step(&self) -> Result<f64> {
                Ok(lock(&self.inner)?.params().optim_step() as f64)
            }

            #[napi]
            pub fn set_optim_step(&self, step: f64) -> Result<()> {
                if !(step.is_finite() && step >= 0.0 && step.fract() == 0.0) {
                    return Err(tag(format!("config: optimizer step must be a whole number ≥ 0, got {step}")));
                }
                lock(&self.inner)?.params_mut().set_optim_step(step as u64);
                Ok(())
            }
        }
    };
}

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
        };
        let dev = device_of(&device)?;
        let model = guarded(|| CharLm::new(cfg, dev).map_err(core_err))?;
        Ok(NativeCharLm { inner: Arc::new(Mutex::new(model)) })
    }

    #[napi]
    pub fn get_carry(&self) -> Result<Option<Carry>> {
        let m = lock(&self.inner)?;
        Ok(m.carry().map(|(b, s)| Carry { batch: b as u32, state: Float32Array::new(s) }))
    }

    #[napi]
    pub fn set_carry(&self, carry: Option<Carry>) -> Result<()> {
        let mut m = lock(&self.inner)?;
        let c = carry.map(|c| (c.batch as usize, c.state.to_vec()));
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
        Ok(StepResult { state: Float32Array::new(s), logits: Float32Array::new(logits) })
    }
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
        let grads = out.grads.into_iter().map(|(name, g)| NamedTensor { name, data: Float32Array::new(g) }).collect();
        Ok(LossGradsResult { loss: out.loss, grads, dh0: Float32Array::new(out.dh0) })
    }
}

pub struct NllTask(BatchArgs);

impl Task for NllTask {
    type Output = (f64, Vec<f32>);
    type JsValue = NllResult;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.0;
        let m = lock(&a.model)?;
        guarded(|| m.nll(&a.ids, &a.targets, a.batch, a.seq, a.state.as_deref()).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, (nll, state): Self::Output) -> Result<Self::JsValue> {
        Ok(NllResult { nll, state: Float32Array::new(state) })
    }
}

#[napi(object)]
pub struct GruDimsJs {
    pub batch: u32,
    pub seq: u32,
    pub input: u32,
    pub hidden: u32,
}

#[napi(object)]
pub struct GruLayerResult {
    pub out: Float32Array,
    pub dx: Float32Array,
    pub dh0: Float32Array,
    /// Packed like the parameters: `[w_ih, w_hh, b_ih, b_hh]`.
    pub dparams: Float32Array,
}

/// One GRU layer forward and backward through time on raw arrays, for kernel tests and benchmarks:
/// `params` packed `[w_ih, w_hh, b_ih, b_hh]`, `d_out` the gradient reaching the output `[B, T, H]`.
#[napi]
pub fn gru_layer_grads(
    dims: GruDimsJs,
    x: Float32Array,
    h0: Float32Array,
    params: Float32Array,
    d_out: Float32Array,
) -> Result<GruLayerResult> {
    let d = GruDims {
        batch: usize_of(dims.batch, "batch")?,
        seq: usize_of(dims.seq, "seq")?,
        input: usize_of(dims.input, "input")?,
        hidden: usize_of(dims.hidden, "hidden")?,
    };
    let sizes = [
        ("x", x.len(), d.batch * d.seq * d.input),
        ("h0", h0.len(), d.batch * d.hidden),
        ("params", params.len(), d.param_len()),
        ("dOut", d_out.len(), d.batch * d.seq * d.hidden),
    ];
    for (what, got, want) in sizes {
        if got != want {
            return Err(tag(format!("gru: {what} holds {got} values, expected {want} for {dims:?}", dims = d)));
        }
    }
    guarded(|| {
        let w = GruWeights::unpack(&d, &params);
        let mut out = vec![0f32; d.batch * d.seq * d.hidden];
        let mut saved = Vec::new();
        gru_forward(&d, &x, &h0, &w, &mut out, Some(&mut saved));
        let g = gru_backward(&d, &x, &h0, &w, &out, &saved, &d_out);
        Ok(GruLayerResult {
            out: Float32Array::new(out),
            dx: Float32Array::new(g.dx),
            dh0: Float32Array::new(g.dh0),
            dparams: Float32Array::new(g.dparams),
        })
    })
}

/// Build facts the TS loader reports: version and whether CUDA was compiled in.
#[napi(object)]
pub struct BuildInfo {
    pub version: String,
    pub cuda: bool,
    pub threads: u32,
}

#[napi]
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        cuda: arflow_core::device::cuda_built(),
        threads: rayon_threads(),
    }
}

fn rayon_threads() -> u32 {
    arflow_core::threads() as u32
}

/// Measures this machine's fp32 GEMM rate (GFLOP/s) with the same GEMM the kernels use: the yardstick
/// the benchmark compares the GRU's achieved rate against.
#[napi]
pub fn bench_gemm(m: u32, n: u32, k: u32, reps: u32) -> Result<f64> {
    let (m, n, k) = (usize_of(m, "m")?, usize_of(n, "n")?, usize_of(k, "k")?);
    Ok(arflow_core::gemm::bench_gflops(m, n, k, reps.max(1) as usize))
}

/// Samples per second of the fused affine coupling, forward + backward on `[N, D]` (alternating mask,
/// the benchmark's inputs), run `reps` times inside Rust on buffers allocated once: the kernel's own
/// rate, beside `couplingForward`/`couplingBackward`, whose fresh output arrays dominate their cost.
#[napi]
pub fn bench_coupling(n: u32, d: u32, reps: u32) -> Result<f64> {
    let (n, d) = (usize_of(n, "n")?, usize_of(d, "d")?);
    Ok(arflow_core::flow::kernel::bench_samples_per_sec(n, d, reps.max(1) as usize))
}

#[napi(object)]
pub struct CouplingResult {
    /// `y` (forward) or `x` (inverse), `[N, D]`.
    pub out: Float32Array,
    /// Per-sample log|det J| of the map applied, `[N]`.
    pub logdet: Float32Array,
}

#[napi(object)]
pub struct CouplingGrads {
    pub dx: Float32Array,
    pub ds_raw: Float32Array,
    pub dt: Float32Array,
    pub dscale: Float32Array,
}

/// Checks one affine coupling call: x-like arrays `[N, D]`, `mask`/`scale` `[D]`, mask entries 0 or 1.
fn coupling_dims(
    n: u32,
    d: u32,
    rows: &[(&str, usize)],
    cols: &[(&str, usize)],
    mask: &[f32],
) -> Result<(usize, usize)> {
    let (n, d) = (n as usize, d as usize);
    for &(what, len) in rows {
        if len != n * d {
            return Err(tag(format!("affine coupling: {what} holds {len} values, expected [N, D] = [{n}, {d}]")));
        }
    }
    for &(what, len) in cols {
        if len != d {
            return Err(tag(format!("affine coupling: {what} holds {len} values, expected [D] = [{d}]")));
        }
    }
    if mask.iter().any(|&b| b != 0.0 && b != 1.0) {
        return Err(tag("affine coupling: mask entries must be 0 or 1".into()));
    }
    Ok((n, d))
}

/// Real NVP affine coupling on raw arrays (kernel tests and benchmarks):
/// `y = b⊙x + (1−b)⊙(x⊙exp(s) + t)` with `s = scale⊙tanh(sRaw)`, and the per-sample log-det.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn coupling_forward(
    n: u32,
    d: u32,
    x: Float32Array,
    mask: Float32Array,
    s_raw: Float32Array,
    t: Float32Array,
    scale: Float32Array,
    inverse: bool,
) -> Result<CouplingResult> {
    let (n, d) = coupling_dims(
        n,
        d,
        &[("x", x.len()), ("sRaw", s_raw.len()), ("t", t.len())],
        &[("mask", mask.len()), ("scale", scale.len())],
        &mask,
    )?;
    guarded(|| {
        let (mut out, mut logdet) = (vec![0f32; n * d], vec![0f32; n]);
        if inverse {
            coupling_inverse(n, d, &x, &mask, &s_raw, &t, &scale, &mut out, &mut logdet);
        } else {
            coupling_forward_kernel(n, d, &x, &mask, &s_raw, &t, &scale, &mut out, &mut logdet);
        }
        Ok(CouplingResult { out: Float32Array::new(out), logdet: Float32Array::new(logdet) })
    })
}

/// Gradients of the forward coupling given `dy [N, D]` and `dlogdet [N]`.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn coupling_backward(
    n: u32,
    d: u32,
    x: Float32Array,
    mask: Float32Array,
    s_raw: Float32Array,
    scale: Float32Array,
    dy: Float32Array,
    dlogdet: Float32Array,
) -> Result<CouplingGrads> {
    let (n, d) = coupling_dims(
        n,
        d,
        &[("x", x.len()), ("sRaw", s_raw.len()), ("dy", dy.len())],
        &[("mask", mask.len()), ("scale", scale.len())],
        &mask,
    )?;
    if dlogdet.len() != n {
        return Err(tag(format!("affine coupling: dlogdet holds {} values, expected [N] = [{n}]", dlogdet.len())));
    }
    guarded(|| {
        let (mut dx, mut ds_raw, mut dt, mut dscale) =
            (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d], vec![0f32; d]);
        coupling_backward_kernel(
            n,
            d,
            &x,
            &mask,
            &s_raw,
            &scale,
            &dy,
            &dlogdet,
            &mut dx,
            &mut ds_raw,
            &mut dt,
            &mut dscale,
        );
        Ok(CouplingGrads {
            dx: Float32Array::new(dx),
            ds_raw: Float32Array::new(ds_raw),
            dt: Float32Array::new(dt),
            dscale: Float32Array::new(dscale),
        })
    })
}

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
    pub z: Float32Array,
    pub logdet: Float32Array,
}

#[napi(object)]
pub struct DecodeResult {
    pub x: Float32Array,
    pub logdet: Float32Array,
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
        Ok(EncodeResult { z: Float32Array::new(z), logdet: Float32Array::new(logdet) })
    }

    #[napi]
    pub fn decode(&self, z: Float32Array, batch: u32) -> Result<DecodeResult> {
        let m = lock(&self.inner)?;
        let (x, logdet) = guarded(|| m.decode(&z, batch as usize).map_err(core_err))?;
        Ok(DecodeResult { x: Float32Array::new(x), logdet: Float32Array::new(logdet) })
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
        let grads = grads.into_iter().map(|(name, g)| NamedTensor { name, data: Float32Array::new(g) }).collect();
        Ok(FlowLossGradsResult { loss, grads })
    }
}

pub struct FlowLogProbTask(FlowArgs);

impl Task for FlowLogProbTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> Result<Self::Output> {
        let a = &self.0;
        let m = lock(&a.model)?;
        guarded(|| m.log_prob(&a.x, a.batch).map_err(core_err))
    }

    fn resolve(&mut self, _env: Env, lp: Self::Output) -> Result<Self::JsValue> {
        Ok(Float32Array::new(lp))
    }
}

/// Work for the libuv pool: a closure over data copied out of JS memory, and the conversion of its
/// result into a JS value on the main thread.
pub struct Job<O: Send + 'static, J> {
    run: Option<Box<dyn FnOnce() -> Result<O> + Send>>,
    convert: fn(O) -> J,
}

impl<O: Send + 'static, J: ToNapiValue + TypeName> Task for Job<O, J> {
    type Output = O;
    type JsValue = J;

    fn compute(&mut self) -> Result<O> {
        match self.run.take() {
            Some(run) => guarded(run),
            None => Err(Error::new(Status::GenericFailure, "E_INTERNAL: a job ran twice")),
        }
    }

    fn resolve(&mut self, _env: Env, out: O) -> Result<J> {
        Ok((self.convert)(out))
    }
}

fn job<O: Send + 'static, J: ToNapiValue + TypeName>(
    run: impl FnOnce() -> Result<O> + Send + 'static,
    convert: fn(O) -> J,
) -> AsyncTask<Job<O, J>> {
    AsyncTask::new(Job { run: Some(Box::new(run)), convert })
}

type SharedNet = Arc<Mutex<arflow_core::FlowNet>>;

/// The general flow network of arflow-core (`src/backend/flownet-types.ts`), built from a JSON spec:
/// image Real NVP, Glow, NICE, MAF and IAF. Training, gradients and log-densities return promises and
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
    pub fn get_buffer(&self, name: String) -> Result<Float32Array> {
        let m = lock(&self.inner)?;
        guarded(|| m.get_buffer(&name).map(Float32Array::new).map_err(core_err))
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
                grads: grads.into_iter().map(|(name, g)| NamedTensor { name, data: Float32Array::new(g) }).collect(),
            },
        )
    }

    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn log_prob(
        &self,
        x: Float32Array,
        ctx: Option<Float32Array>,
        batch: u32,
    ) -> AsyncTask<Job<Vec<f32>, Float32Array>> {
        let (model, x, ctx) = (self.inner.clone(), x.to_vec(), ctx_vec(ctx));
        job(move || lock(&model)?.log_prob(&x, ctx.as_deref(), batch as usize).map_err(core_err), Float32Array::new)
    }

    #[napi]
    pub fn encode(&self, x: Float32Array, ctx: Option<Float32Array>, batch: u32) -> Result<EncodeResult> {
        let m = lock(&self.inner)?;
        let (z, logdet) = guarded(|| m.encode(&x, ctx.as_deref(), batch as usize).map_err(core_err))?;
        Ok(EncodeResult { z: Float32Array::new(z), logdet: Float32Array::new(logdet) })
    }

    #[napi]
    pub fn decode(&self, z: Float32Array, ctx: Option<Float32Array>, batch: u32) -> Result<DecodeResult> {
        let m = lock(&self.inner)?;
        let (x, logdet) = guarded(|| m.decode(&z, ctx.as_deref(), batch as usize).map_err(core_err))?;
        Ok(DecodeResult { x: Float32Array::new(x), logdet: Float32Array::new(logdet) })
    }
}
