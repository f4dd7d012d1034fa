//! Row-major f32 GEMMs on candle's CUDA stream. candle's own cuBLAS handle is private, so each device
//! gets one handle of ours, made on first use on the same stream (so our GEMMs are ordered with candle's
//! ops and our kernels) and kept for the life of the process.
//!
//! cuBLAS is column-major; a row-major matrix read column-major is its transpose, so the row-major
//! `C = op(A)·op(B)` is the column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`: swap the operands and m with n.
//! cuBLAS's default math mode is used (true f32, no TF32), so results agree with the CPU to f32 rounding.

use candle_core::cuda::cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use candle_core::cuda::cudarc::driver::{CudaView, CudaViewMut};
use candle_core::cuda::{CudaDevice, DeviceId, WrapErr};
use candle_core::{bail, Result};
use std::sync::{Arc, Mutex};

/// The cuBLAS handle of `dev` (made on its stream the first time).
pub(crate) fn handle(dev: &CudaDevice) -> Result<Arc<CudaBlas>> {
    static HANDLES: Mutex<Vec<(DeviceId, Arc<CudaBlas>)>> = Mutex::new(Vec::new());
    let mut hs = HANDLES.lock().expect("cublas handles poisoned");
    if let Some((_, h)) = hs.iter().find(|(id, _)| *id == dev.id()) {
        return Ok(h.clone());
    }
    let h = Arc::new(CudaBlas::new(dev.cuda_stream()).w()?);
    hs.push((dev.id(), h.clone()));
    Ok(h)
}

/// A row-major operand: its first element at `data`, rows `ld` apart, read transposed when `t`.
/// Not transposed it is `[rows, cols]` of the product; transposed it is stored `[cols, rows]`.
pub(crate) struct Mat<'a> {
    pub data: CudaView<'a, f32>,
    pub ld: usize,
    pub t: bool,
}

impl<'a> Mat<'a> {
    pub fn n(data: CudaView<'a, f32>, ld: usize) -> Self {
        Mat { data, ld, t: false }
    }

    pub fn t(data: CudaView<'a, f32>, ld: usize) -> Self {
        Mat { data, ld, t: true }
    }
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

fn int(v: usize) -> Result<i32> {
    match i32::try_from(v) {
        Ok(i) => Ok(i),
        Err(_) => bail!("cublas: a size or stride of {v} does not fit cuBLAS's int"),
    }
}

/// `C [m, n] (rows ldc apart) = op(A) [m, k] · op(B) [k, n] + beta · C`, all row-major. Nothing to do
/// when m or n is 0; with k = 0, C becomes beta · C.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    blas: &CudaBlas,
    (m, n, k): (usize, usize, usize),
    a: Mat,
    b: Mat,
    c: &mut CudaViewMut<f32>,
    ldc: usize,
    beta: f32,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Every stored row must fit its leading dimension, and the buffers must hold what is read/written.
    let (a_rows, a_cols) = if a.t { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if b.t { (n, k) } else { (k, n) };
    for (what, rows, cols, ld, len) in [
        ("A", a_rows, a_cols, a.ld, a.data.len()),
        ("B", b_rows, b_cols, b.ld, b.data.len()),
        ("C", m, n, ldc, c.len()),
    ] {
        if ld < cols.max(1) || (rows > 0 && (rows - 1) * ld + cols > len) {
            bail!("cublas: {what} [{rows}, {cols}] with rows {ld} apart does not fit its {len} values");
        }
    }
    let cfg = GemmConfig {
        transa: op(b.t),
        transb: op(a.t),
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha: 1.0f32,
        lda: int(b.ld)?,
        ldb: int(a.ld)?,
        beta,
        ldc: int(ldc)?,
    };
    // SAFETY: the shapes, strides and buffer lengths were checked just above; all three live on the
    // handle's stream.
    unsafe { blas.gemm(cfg, &b.data, &a.data, c) }.w()?;
    Ok(())
}
