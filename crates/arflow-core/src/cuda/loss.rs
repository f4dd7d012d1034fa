//! The fused softmax cross-entropy on CUDA (the CUDA side of [`crate::loss`]), f32: `ce_rows` computes
//! each row's softmax and −log p[target], `ce_mean` their mean over the scored rows; backward is one
//! elementwise kernel, `(p − onehot(target)) · grad / scored`, reading the upstream gradient on the
//! device. The probabilities stay on the device between the two passes (the op keeps them).

use super::{elementwise, int, launch, tensor, view, view_u32, Kernel, LOSS};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::{bail, CudaStorage, DType, Layout, Result, Storage, Tensor};

/// Threads per block of `ce_rows` and `ce_mean`: `CE_THREADS` in loss.cu.
const CE_THREADS: u32 = 256;

/// The targets, copied to the host so they can be checked against the classes exactly as on the CPU
/// (one small copy, which waits for the stream).
pub(crate) fn targets_to_host(s: &CudaStorage, l: &Layout) -> Result<Vec<u32>> {
    match (s.dtype(), l.is_contiguous()) {
        (DType::U32, true) => s.device.memcpy_dtov(&view_u32(s, l, "targets")?),
        _ => bail!("cross-entropy: targets must be a contiguous u32 tensor"),
    }
}

/// The forward pass over `logits [rows, classes]` and `targets [rows]`, of which `scored` are not
/// IGNORE: the mean loss (a one-value storage) and the softmax `[rows, classes]` for backward (rows
/// not scored are left unset there: backward never reads them).
pub(crate) fn forward(
    logits: (&CudaStorage, &Layout),
    targets: (&CudaStorage, &Layout),
    (rows, classes): (usize, usize),
    scored: usize,
) -> Result<(CudaStorage, CudaSlice<f32>)> {
    if logits.0.dtype() != DType::F32 {
        bail!("cross-entropy: the CUDA kernels are f32 only, the logits are {:?}", logits.0.dtype());
    }
    if rows == 0 || classes == 0 {
        bail!("cross-entropy: the CUDA kernels need at least one row and one class, got {rows} × {classes}");
    }
    let dev = &logits.0.device;
    let x = view(logits.0, logits.1, "logits")?;
    let t = view_u32(targets.0, targets.1, "targets")?;
    let mut probs = dev.alloc_zeros::<f32>(rows * classes)?;
    let mut row_loss = dev.alloc_zeros::<f32>(rows)?;
    let mut loss = dev.alloc_zeros::<f32>(1)?;
    let (rows_i, classes_i, scored_i) = (int(rows, "rows")?, int(classes, "classes")?, int(scored, "scored rows")?);
    let row_fn = Kernel::new(dev, &LOSS, "ce_rows")?;
    let mut args = row_fn.args();
    args.arg(&x).arg(&t).arg(&mut probs).arg(&mut row_loss).arg(&classes_i);
    launch(args, LaunchConfig { grid_dim: (rows_i as u32, 1, 1), block_dim: (CE_THREADS, 1, 1), shared_mem_bytes: 0 })?;
    let mean_fn = Kernel::new(dev, &LOSS, "ce_mean")?;
    let mut args = mean_fn.args();
    args.arg(&row_loss).arg(&mut loss).arg(&rows_i).arg(&scored_i);
    launch(args, LaunchConfig { grid_dim: (1, 1, 1), block_dim: (CE_THREADS, 1, 1), shared_mem_bytes: 0 })?;
    Ok((CudaStorage::wrap_cuda_slice(loss, dev.clone()), probs))
}

/// dL/d(logits) `[rows, classes]` from the forward pass's softmax, the targets and the upstream
/// gradient `grad` (a scalar, read on the device).
pub(crate) fn backward(
    probs: &CudaSlice<f32>,
    scored: usize,
    logits: &Tensor,
    targets: &Tensor,
    grad: &Tensor,
) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if probs.len() != rows * classes {
        bail!("cross-entropy: backward over {rows} × {classes} logits, forward kept {} values", probs.len());
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let targets = targets.contiguous()?;
    let (gs, gl) = grad.storage_and_layout();
    let (ts, tl) = targets.storage_and_layout();
    let (Storage::Cuda(gs), Storage::Cuda(ts)) = (&*gs, &*ts) else {
        bail!("cross-entropy: backward of the CUDA op with tensors off the device")
    };
    let dev = &gs.device;
    let g = view(gs, gl, "the upstream gradient")?;
    let t = view_u32(ts, tl, "targets")?;
    let mut d = dev.alloc_zeros::<f32>(rows * classes)?;
    let (rows_i, classes_i, scored_i) = (int(rows, "rows")?, int(classes, "classes")?, int(scored, "scored rows")?);
    let grad_fn = Kernel::new(dev, &LOSS, "ce_grad")?;
    let mut args = grad_fn.args();
    args.arg(probs).arg(&t).arg(&g).arg(&mut d).arg(&rows_i).arg(&classes_i).arg(&scored_i);
    launch(args, elementwise(rows * classes)?)?;
    tensor(logits, d, (rows, classes))
}
