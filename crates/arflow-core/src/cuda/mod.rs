//! CUDA versions of the fused ops (behind the `cuda` feature): the kernels in `*.cu` beside this file,
//! compiled to PTX by build.rs and loaded into candle's CUDA context on first use, launched on candle's
//! stream; cuBLAS GEMMs through a handle of our own on the same stream ([`blas`]).
//!
//! - [`rnn`]: the recurrent layer's forward over a sequence and its backward through time (the CUDA side
//!   of [`crate::rnn::op`]), by cell: [`gru`], [`lstm`], [`tanh`], and what their passes share.
//! - [`loss`]: the fused softmax cross-entropy (the CUDA side of [`crate::loss`]).
//! - [`coupling`]: the affine coupling's forward, inverse and backward (the CUDA side of
//!   [`crate::flow::op`]).
//! - [`conv`]: the 3×3 convolution's forward and backward, im2col + cuBLAS (the CUDA side of
//!   [`crate::flow::conv`]).
//! - [`adamw`]: the fused AdamW update and the global gradient norm (the CUDA side of [`crate::optim`]).
//! - [`heads`]: the Gaussian and mixture-density likelihood heads, alone and fused with a linear layer
//!   (the CUDA side of [`crate::heads`]).
//! - [`pixel`], [`pixel_row`]: Pixel-RNN's masked input convolution and output head, and its Row LSTM /
//!   Row GRU layer with the backward through the rows (the CUDA side of [`crate::pixel`]).
//!
//! CPU-only by design, each with a CUDA fallback through candle ops: the image flows' fused ResNet
//! conditioner ([`crate::flow::net::resnet`], per-convolution ops on CUDA) and the char LM's
//! written-out training pass (candle's graph on CUDA).
//!
//! Everything here is f32. Everything is enqueued on the one stream candle uses, so no explicit
//! synchronisation is needed between our kernels, our GEMMs and candle's own ops.

pub(crate) mod adamw;
pub(crate) mod blas;
pub(crate) mod conv;
pub(crate) mod coupling;
pub(crate) mod gru;
pub(crate) mod heads;
#[cfg(test)]
mod heads_tests;
pub(crate) mod loss;
pub(crate) mod lstm;
pub(crate) mod pixel;
pub(crate) mod pixel_row;
#[cfg(test)]
mod pixel_tests;
pub(crate) mod rnn;
pub(crate) mod tanh;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use candle_core::cuda::cudarc::driver::{CudaFunction, CudaSlice, CudaStream, CudaView, LaunchArgs, LaunchConfig};
use candle_core::cuda::{CudaDevice, WrapErr};
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use std::sync::{Arc, Mutex};

/// The PTX of each kernel file, with the module name candle caches it under.
pub(crate) struct Module {
    name: &'static str,
    ptx: &'static str,
}

/// A [`Module`] named `arflow_<file>` holding the PTX build.rs compiled from `src/cuda/<file>.cu`.
macro_rules! module {
    ($file:literal) => {
        Module { name: concat!("arflow_", $file), ptx: include_str!(concat!(env!("OUT_DIR"), "/", $file, ".ptx")) }
    };
}

pub(crate) const RNN: Module = module!("rnn");
pub(crate) const GRU: Module = module!("gru");
pub(crate) const LSTM: Module = module!("lstm");
pub(crate) const TANH: Module = module!("tanh");
pub(crate) const LOSS: Module = module!("loss");
pub(crate) const COUPLING: Module = module!("coupling");
pub(crate) const ADAMW: Module = module!("adamw");
pub(crate) const CONV: Module = module!("conv");
pub(crate) const PIXEL: Module = module!("pixel");
pub(crate) const PIXEL_ROW: Module = module!("pixel_row");
pub(crate) const HEADS: Module = module!("heads");

/// A kernel and the stream it runs on (candle's, the device's only one).
pub(crate) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// Kernel `name` of `module` on `dev` (the module is loaded once per device, then cached by candle).
    pub(crate) fn new(dev: &CudaDevice, module: &Module, name: &str) -> Result<Self> {
        let func = dev.get_or_load_custom_func(name, module.name, module.ptx)?.into_cuda_function();
        Ok(Kernel { func, stream: dev.cuda_stream() })
    }

    /// A launch of the kernel, for the caller to fill with arguments in the kernel's order.
    pub(crate) fn args(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// Threads per block of the elementwise kernels.
const THREADS: u32 = 256;

/// One thread per element of `n`, in blocks of [`THREADS`].
pub(crate) fn elementwise(n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(THREADS as usize);
    if blocks > i32::MAX as usize {
        bail!("cuda: {n} elements are too many for one launch");
    }
    Ok(LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// `v` as a kernel's `int` argument, checked.
pub(crate) fn int(v: usize, what: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(i) => Ok(i),
        Err(_) => bail!("cuda: {what} = {v} does not fit a kernel's int"),
    }
}

/// Errors unless `s` holds f32: the CUDA kernels have no f64 versions.
pub(crate) fn f32_only(s: &CudaStorage, op: &str) -> Result<()> {
    use candle_core::backend::BackendStorage;
    match s.dtype() {
        candle_core::DType::F32 => Ok(()),
        dtype => bail!("{op}: the CUDA kernels are f32 only, got {dtype:?}; use f32 or device cpu"),
    }
}

/// The f32 values of a CUDA storage under a contiguous layout.
pub(crate) fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("cuda: {what} must be contiguous") };
    Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
}

/// The u32 values of a CUDA storage under a contiguous layout.
pub(crate) fn view_u32<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, u32>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("cuda: {what} must be contiguous") };
    Ok(s.as_cuda_slice::<u32>()?.slice(a..b))
}

/// Runs `f` on the f32 values of the CUDA tensors `ts`, borrowed in place (each made contiguous first
/// where it is not, which copies only that one), and on their device: the CUDA twin of
/// [`crate::host::with_slices`], for the backward passes.
pub(crate) fn with_views<R>(ts: &[&Tensor], f: impl FnOnce(&CudaDevice, &[CudaView<f32>]) -> Result<R>) -> Result<R> {
    let owned = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut dev = None;
    let mut views = Vec::with_capacity(guards.len());
    for (st, l) in &guards {
        match &**st {
            Storage::Cuda(s) => {
                dev.get_or_insert_with(|| s.device.clone());
                views.push(view(s, l, "a tensor read in place")?);
            }
            _ => bail!("cuda: a tensor of the backward pass is not on the CUDA device"),
        }
    }
    let Some(dev) = dev else { bail!("cuda: with_views needs at least one tensor") };
    f(&dev, &views)
}

/// A tensor of `shape` on `anchor`'s CUDA device holding `slice` (which must live on that device):
/// candle makes tensors from storage only inside a custom op, so this is one whose forward hands the
/// slice over. The result takes part in no gradient.
pub(crate) fn tensor(anchor: &Tensor, slice: CudaSlice<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    if slice.len() != shape.elem_count() {
        bail!("cuda: a buffer of {} values cannot be a tensor of shape {shape:?}", slice.len());
    }
    anchor.apply_op1_no_bwd(&Wrap { slice: Mutex::new(Some(slice)), shape })
}

struct Wrap {
    slice: Mutex<Option<CudaSlice<f32>>>,
    shape: Shape,
}

impl CustomOp1 for Wrap {
    fn name(&self) -> &'static str {
        "arflow-cuda-wrap"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("arflow-cuda-wrap: the anchor tensor must be on a CUDA device")
    }

    fn cuda_fwd(&self, s: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        let Some(slice) = self.slice.lock().expect("cuda wrap poisoned").take() else {
            bail!("arflow-cuda-wrap: applied twice")
        };
        Ok((CudaStorage::wrap_cuda_slice(slice, s.device.clone()), self.shape.clone()))
    }
}

/// Launches `args` (a [`Kernel::args`] filled by the caller) under `cfg`; a zero-sized
/// grid launches nothing.
pub(crate) fn launch(mut args: LaunchArgs, cfg: LaunchConfig) -> Result<()> {
    if cfg.grid_dim.0 == 0 {
        return Ok(());
    }
    // SAFETY: every kernel of this module checks its index against the sizes it is given, and each
    // caller passes buffers of the sizes the kernel's comment states.
    unsafe { args.launch(cfg) }.w()?;
    Ok(())
}
