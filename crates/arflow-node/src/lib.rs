//! arflow-node: the thin N-API layer over arflow-core. It validates and converts arguments, runs long
//! work off the JS thread (libuv pool `AsyncTask`s), turns panics into errors and tags every error with
//! a stable code the TypeScript side maps onto its typed error classes. It holds no math.

use arflow_core::flow::{
    coupling_backward as coupling_backward_kernel, coupling_forward as coupling_forward_kernel, coupling_inverse,
};
use arflow_core::{AdamWConfig, Dev};
use napi::bindgen_prelude::*;

/// Rust allocations of the addon go through mimalloc: training frees and re-allocates the same
/// multi-megabyte tensors every step, and glibc returns them to the kernel (its per-thread heaps are
/// unmapped whenever they empty), so each step paid page faults and page clearing for memory it had
/// just released. mimalloc keeps and reuses it: a Fashion-MNIST Real NVP step ~10–25% faster
/// (A/B, alternating builds), the GRU unchanged.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's option setter (linked by `libmimalloc-sys`).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc hands freed memory back to the kernel 10 ms after it empties (its purge delay), so a
/// training step longer than that freed its multi-megabyte buffers at the end and took them back
/// as fresh pages, zeroed by the kernel, at the next: half the page faults of a Fashion-MNIST
/// Real NVP run and ~12% of its CPU time (`perf stat`, 10 steps). The addon keeps what it freed for
/// reuse (no purging): a training process stays at its peak, which the next step needs anyway.
/// `MIMALLOC_PURGE_DELAY` in the environment still decides when set.
#[napi_derive::module_init]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain option store in the allocator linked into this library.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

use napi_derive::napi;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

/// Errors reach JS as `"<CODE>: message"`; `src/backend/native.ts` maps the code to an error class.
fn tag(msg: String) -> Error {
    // candle's error for a custom op run on a device it has no kernel for.
    if msg.contains("no cuda implementation") {
        let msg = format!("{msg}: arflow's fused kernels have no CUDA version yet; use device cpu");
        return Error::new(Status::GenericFailure, format!("E_BACKEND: {msg}"));
    }
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

/// Results cross to JS in memory V8 owns: each is copied into a fresh `ArrayBuffer` from
/// `napi_create_arraybuffer`. napi-rs's own `F32Out(vec)` hands V8 an *external* buffer that
/// Rust frees in a finalizer, and Node runs those finalizers only when the event loop turns, so a
/// synchronous loop (`step`, `logits`, `sample` per token) held every result ever returned: 5,000
/// sync calls kept ~440 MB alive. V8 counts its own buffers towards its heap limits and frees them
/// in the GC that its allocation pressure triggers, mid-loop. The copy costs microseconds against
/// work that takes milliseconds.
macro_rules! v8_owned {
    ($name:ident, $elem:ty, $slice:ident, $ts:literal) => {
        #[doc = concat!("A `", $ts, "` returned to (or read from) JS, held in V8-owned memory.")]
        pub struct $name(pub Vec<$elem>);

        impl TypeName for $name {
            fn type_name() -> &'static str {
                $ts
            }
            fn value_type() -> ValueType {
                ValueType::Object
            }
        }

        impl ToNapiValue for $name {
            unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
                Ok($slice::copy_from(&Env::from_raw(env), &val.0)?.raw())
            }
        }

        impl FromNapiValue for $name {
            unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
                // SAFETY: forwarded from napi-rs's caller, same contract.
                Ok($name(unsafe { $slice::from_napi_value(env, value) }?.to_vec()))
            }
        }

        impl ValidateNapiValue for $name {
            unsafe fn validate(env: sys::napi_env, value: sys::napi_value) -> Result<sys::napi_value> {
                // SAFETY: forwarded from napi-rs's caller, same contract.
                unsafe { <$slice as ValidateNapiValue>::validate(env, value) }
            }
        }
    };
}
v8_owned!(F32Out, f32, Float32ArraySlice, "Float32Array");
v8_owned!(F64Out, f64, Float64ArraySlice, "Float64Array");
v8_owned!(U32Out, u32, Uint32ArraySlice, "Uint32Array");
v8_owned!(U8Out, u8, Uint8ArraySlice, "Uint8Array");

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
pub struct NamedTensor {
    pub name: String,
    pub data: F32Out,
}

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
            pub fn get_param(&self, name: String) -> Result<F32Out> {
                let m = lock(&self.inner)?;
                guarded(|| m.params().get_param(&name).map(F32Out).map_err(core_err))
            }

            #[napi]
            pub fn set_param(&self, name: String, data: Float32Array) -> Result<()> {
                let mut m = lock(&self.inner)?;
                guarded(|| m.params_mut().set_param(&name, &data).map_err(core_err))
            }

            #[napi]
            pub fn get_optim_state(&self, which: String, name: String) -> Result<F32Out> {
                let m = lock(&self.inner)?;
                guarded(|| m.params().get_optim(&which, &name).map(F32Out).map_err(core_err))
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
/// Runs `run` on the addon's one compute thread and waits for it. Node hands async work to whichever
/// of its libuv pool threads is free, and mimalloc keeps freed memory with the thread that freed it:
/// a training loop whose steps landed on four pool threads grew four working sets (a Real NVP run:
/// 652 MiB peak instead of 539, and every new thread's first steps paid page faults: 16 steps 18%
/// slower). Jobs now take turns on one thread, in the order they arrive; each still spreads its math
/// over rayon's threads, and a model's own lock serialised its jobs already.
fn on_compute_thread<O: Send + 'static>(run: Box<dyn FnOnce() -> Result<O> + Send>) -> Result<O> {
    type Work = Box<dyn FnOnce() + Send>;
    static QUEUE: std::sync::OnceLock<std::result::Result<Mutex<std::sync::mpsc::Sender<Work>>, String>> =
        std::sync::OnceLock::new();
    let internal = |msg: String| Error::new(Status::GenericFailure, format!("E_INTERNAL: {msg}"));
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("arflow-compute".into())
            .spawn(move || rx.into_iter().for_each(|work| work()))
            .map(|_| Mutex::new(tx))
            .map_err(|e| format!("could not start the compute thread: {e}"))
    });
    let queue = queue.as_ref().map_err(|e| internal(e.clone()))?;
    let (done, result) = std::sync::mpsc::sync_channel(1);
    // `guarded` turns a panic into an error, so the compute thread outlives any job.
    let work: Work = Box::new(move || {
        let _ = done.send(guarded(run));
    });
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(work)
        .map_err(|_| internal("the compute thread has stopped".into()))?;
    result.recv().map_err(|_| internal("the compute thread dropped a job".into()))?
}

/// Work for the libuv pool: a closure over data copied out of JS memory, run on the compute thread
/// ([`on_compute_thread`]), and the conversion of its result into a JS value on the main thread.
pub struct Job<O: Send + 'static, J> {
    run: Option<Box<dyn FnOnce() -> Result<O> + Send>>,
    convert: fn(O) -> J,
}

impl<O: Send + 'static, J: ToNapiValue + TypeName> Task for Job<O, J> {
    type Output = O;
    type JsValue = J;

    fn compute(&mut self) -> Result<O> {
        match self.run.take() {
            Some(run) => on_compute_thread(run),
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
    let (m_, n_, k_) = (m as u128, n as u128, k as u128);
    bench_bounds("benchGemm", &[("m×k", m_ * k_), ("k×n", k_ * n_), ("m×n", m_ * n_)], m_ * n_ * k_, reps)?;
    Ok(arflow_core::gemm::bench_gflops(m, n, k, reps.max(1) as usize))
}

/// Benchmarks allocate their operands and run `reps` times: sizes past what a benchmark needs are
/// refused (E_SHAPE) rather than left to allocate gigabytes or run for hours.
fn bench_bounds(what: &str, arrays: &[(&str, u128)], work: u128, reps: u32) -> Result<()> {
    const MAX_ELEMS: u128 = 1 << 26; // 256 MiB of f32 per operand
    const MAX_WORK: u128 = 1 << 40; // multiply-adds over all reps: minutes at most
    const MAX_REPS: u32 = 100_000;
    for &(name, len) in arrays {
        if len > MAX_ELEMS {
            return Err(tag(format!("{what}: {name} = {len} values, at most {MAX_ELEMS}")));
        }
    }
    if reps > MAX_REPS || work * reps.max(1) as u128 > MAX_WORK {
        return Err(tag(format!(
            "{what}: {work} × {reps} reps is more than a benchmark needs (at most {MAX_REPS} reps, 2^40 in all)"
        )));
    }
    Ok(())
}

/// Samples per second of the fused affine coupling, forward + backward on `[N, D]` (alternating mask,
/// the benchmark's inputs), run `reps` times inside Rust on buffers allocated once: the kernel's own
/// rate, beside `couplingForward`/`couplingBackward`, whose fresh output arrays dominate their cost.
#[napi]
pub fn bench_coupling(n: u32, d: u32, reps: u32) -> Result<f64> {
    let (n, d) = (usize_of(n, "n")?, usize_of(d, "d")?);
    bench_bounds("benchCoupling", &[("n×d", n as u128 * d as u128)], n as u128 * d as u128, reps)?;
    Ok(arflow_core::flow::kernel::bench_samples_per_sec(n, d, reps.max(1) as usize))
}

pub mod caption;
pub mod coupling;
pub mod flownet;
pub mod lm;
pub mod pixel;
pub mod seq2seq;
pub mod series;
