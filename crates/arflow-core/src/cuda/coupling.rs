//! The affine coupling on CUDA (the CUDA side of [`crate::flow::op`]; the math is
//! [`crate::flow::kernel`]'s), f32, in the op's packed layout: `st = [s_raw | t]` `[N, 2D]`,
//! `params = [mask; scale]` `[2, D]`, output `[y | logdet]` `[N, D + 1]`.
//!
//! Forward and inverse are one kernel (`coupling_map`): a block per row, the log-det a fixed-order tree
//! over the block. Backward is two: `coupling_bwd` writes dx and dst elementwise, a block per 32 columns
//! and one chunk of rows, and sums each chunk's share of dscale per column into `[C, D]` partials;
//! `coupling_dscale` sums those over the chunks in order. Both reductions are deterministic: their shape
//! depends on N and D only. Nothing is kept between the passes: backward recomputes tanh and exp.

use super::{elementwise, f32_only, int, launch, tensor, view, with_views, Kernel, COUPLING};
use candle_core::cuda::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, CudaStorage, Layout, Result, Tensor};

/// The largest block of `coupling_map`: `COUPLING_MAX_THREADS` in coupling.cu.
const MAX_THREADS: usize = 256;
/// Block shape of `coupling_bwd`: `COUPLING_COLS` × `COUPLING_ROWS` in coupling.cu.
const COLS: usize = 32;
const ROWS: usize = 8;
/// Rows per chunk of `coupling_bwd`: this many, more only where N would need more chunks than a grid's
/// y dimension allows.
const MIN_CHUNK: usize = 64;
const MAX_GRID_Y: usize = 65535;

/// Errors unless every mask entry is exactly 0 or 1, as the CPU op does: the D mask values are copied to
/// the host (a small copy, which waits for the stream).
fn check_mask(dev: &CudaDevice, p: &CudaView<f32>, d: usize) -> Result<()> {
    let mask = dev.memcpy_dtov(&p.slice(..d))?;
    if let Some(b) = mask.iter().find(|&&b| b != 0.0 && b != 1.0) {
        bail!("affine coupling: mask entries must be 0 or 1, found {b:?}");
    }
    Ok(())
}

/// The forward map (or with `inverse` the inverse) of `n` rows of `d`: `[y | logdet]` `[N, D + 1]`
/// (`[x | −logdet]` for the inverse).
pub(crate) fn map(
    x: (&CudaStorage, &Layout),
    st: (&CudaStorage, &Layout),
    params: (&CudaStorage, &Layout),
    (n, d): (usize, usize),
    inverse: bool,
) -> Result<CudaStorage> {
    f32_only(x.0, "affine coupling")?;
    if n == 0 || d == 0 {
        bail!("affine coupling: the CUDA kernels need at least one row and one column, got {n} × {d}");
    }
    let (xv, sv, pv) = (view(x.0, x.1, "x")?, view(st.0, st.1, "st")?, view(params.0, params.1, "params")?);
    if xv.len() != n * d || sv.len() != n * 2 * d || pv.len() != 2 * d {
        bail!("affine coupling: operands of {}, {} and {} values for N = {n}, D = {d}", xv.len(), sv.len(), pv.len());
    }
    let dev = &x.0.device;
    check_mask(dev, &pv, d)?;
    let mut out = dev.alloc_zeros::<f32>(n * (d + 1))?;
    let f = Kernel::new(dev, &COUPLING, "coupling_map")?;
    let (n_i, d_i, inverse_i) = (int(n, "N")?, int(d, "D")?, i32::from(inverse));
    let mut args = f.args();
    args.arg(&xv).arg(&sv).arg(&pv).arg(&mut out).arg(&n_i).arg(&d_i).arg(&inverse_i);
    // A block per row, of a power of two of threads (so the log-det's tree halves evenly) fitting D.
    let threads = d.next_power_of_two().clamp(32, MAX_THREADS) as u32;
    launch(args, LaunchConfig { grid_dim: (n_i as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 })?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Gradients `(dx [N, D], dst [N, 2D], dparams [2, D])` of the forward map from the upstream gradient
/// `grad = [dy | dlogdet]` `[N, D + 1]`, the operands on one CUDA device (read in place where contiguous).
pub(crate) fn backward(
    n: usize,
    d: usize,
    x: &Tensor,
    st: &Tensor,
    params: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    if n == 0 || d == 0 {
        bail!("affine coupling: the CUDA kernels need at least one row and one column, got {n} × {d}");
    }
    // Chunks of rows, a multiple of the block's rows, few enough for the grid's y dimension.
    let chunk = n.div_ceil(MAX_GRID_Y).max(MIN_CHUNK).next_multiple_of(ROWS);
    let chunks = n.div_ceil(chunk);
    let (dx, dst, dparams) = with_views(&[x, st, params, grad], |dev, v| {
        let lens = [n * d, n * 2 * d, 2 * d, n * (d + 1)];
        if v.iter().zip(lens).any(|(v, len)| v.len() != len) {
            bail!("affine coupling: backward operands do not fit N = {n}, D = {d}");
        }
        let mut dx = dev.alloc_zeros::<f32>(n * d)?;
        let mut dst = dev.alloc_zeros::<f32>(n * 2 * d)?;
        let mut partial = dev.alloc_zeros::<f32>(chunks * d)?;
        let mut dparams = dev.alloc_zeros::<f32>(2 * d)?;
        let (n_i, d_i, chunk_i, chunks_i) = (int(n, "N")?, int(d, "D")?, int(chunk, "chunk")?, int(chunks, "chunks")?);

        let bwd = Kernel::new(dev, &COUPLING, "coupling_bwd")?;
        let mut args = bwd.args();
        args.arg(&v[0]).arg(&v[1]).arg(&v[2]).arg(&v[3]).arg(&mut dx).arg(&mut dst).arg(&mut partial);
        args.arg(&n_i).arg(&d_i).arg(&chunk_i);
        let grid = (int(d.div_ceil(COLS), "column blocks")? as u32, chunks as u32, 1);
        launch(args, LaunchConfig { grid_dim: grid, block_dim: (COLS as u32, ROWS as u32, 1), shared_mem_bytes: 0 })?;

        let sum = Kernel::new(dev, &COUPLING, "coupling_dscale")?;
        let mut args = sum.args();
        args.arg(&partial).arg(&mut dparams).arg(&d_i).arg(&chunks_i);
        launch(args, elementwise(d)?)?;
        Ok((dx, dst, dparams))
    })?;
    Ok((tensor(x, dx, (n, d))?, tensor(x, dst, (n, 2 * d))?, tensor(x, dparams, (2, d))?))
}
