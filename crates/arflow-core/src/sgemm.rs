//! f32 GEMM with AVX-512 microkernels, for the products on the hot paths (all-steps input
//! projections, weight gradients, heads, im2col convolutions) on CPUs that have AVX-512F.
//!
//! Why not the `gemm` crate (which candle uses, and which [`crate::gemm`] called for everything
//! before): gemm 0.17/0.18 compile their AVX-512 kernels only under their `nightly` feature
//! (`#![feature(stdarch_x86_avx512)]`), so on stable Rust they run AVX2 kernels on AVX-512 CPUs,
//! at about half of what the machine does (measured on a 2-core Xeon: ~100 GFLOP/s against
//! MKL's ~210–260). AVX-512 intrinsics are stable since Rust 1.89, so the kernels here are
//! `#[target_feature(enable = "avx512f")]` functions chosen at run time; the binary stays
//! baseline x86-64 and other CPUs keep the `gemm` crate.
//!
//! Blocking (BLIS, Van Zee & van de Geijn 2015), C row-major so the vectors run along n:
//! - `B` is packed per `KC × NC` block into micro-panels of `NR` = 32 columns (`KC × NR`
//!   contiguous, zero-padded past n): one micro-panel (32 KB) stays in L1 while every row block
//!   of the `A` block streams past it.
//! - `A` is packed per `MC × KC` block (~150 KB, in L2) into micro-panels of `MR` = 12 rows
//!   (`KC × MR` contiguous, zero-padded past m). When n is small (< 256: im2col convolutions with
//!   64 channels, heads, weight gradients of small inputs) each packed panel would meet only a
//!   few B panels and packing would cost as much as the arithmetic, so a row-major or transposed
//!   A is then read in place at its own strides, and only the last partial micro-panel is packed.
//! - The microkernel keeps a `12 × 32` tile of C in 24 zmm registers across the `KC` loop:
//!   per k, two vector loads of B and 12 broadcasts of A feed 24 FMAs, so the FMA ports, not the
//!   load ports, set the pace.
//! - Two or more threads split C into disjoint row (or column) ranges, each packing its own operands.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

const MR: usize = 12;
const NR: usize = 32;
const KC: usize = 256;
const MC: usize = 12 * MR;
const NC: usize = 64 * NR;
/// Below this n, A is read in place (packing it would cost more than it saves, see above).
const DIRECT_BELOW_N: usize = 256;

/// Whether this CPU runs the kernels here (checked once). `ARFLOW_GEMM=crate` in the environment
/// turns them off (the `gemm` crate then runs every product): for A/B benchmarks.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f") && std::env::var("ARFLOW_GEMM").as_deref() != Ok("crate")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A strided f32 matrix: element (i, j) at `ptr[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

// SAFETY: read-only views; the caller of `sgemm` keeps the data alive and unaliased by writes.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: threads write disjoint tiles of C.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

thread_local! {
    /// Packing buffers, reused across calls: (A block, B block).
    static BUFS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `c[m×n] (+)= a[m×k] · b[k×n]` in f32; `a`'s element (i, p) at `a[i·a_rs + p·a_cs]`, `b`'s
/// (p, j) at `b[p·b_rs + j·b_cs]`, `c` row-major with leading dimension `ldc`. `threads` > 1 splits
/// the work over rayon's pool.
///
/// # Safety
/// [`available`] must be true; every index the strides reach for i < m, p < k, j < n must be in
/// bounds of `a`, `b` and `c`, and `c` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    threads: usize,
) {
    let (a, b, c) = (Mat { ptr: a, rs: a_rs, cs: a_cs }, Mat { ptr: b, rs: b_rs, cs: b_cs }, Out(c));
    // Split the longer side of C into `parts` ranges aligned to the tile size.
    let parts = threads.max(1).min(if m >= n { m.div_ceil(MR) } else { n.div_ceil(NR) });
    if parts <= 1 {
        // SAFETY: the caller's contract.
        unsafe { serial(m, n, k, c.0, ldc, accumulate, a, b) };
        return;
    }
    let (len, tile) = if m >= n { (m, MR) } else { (n, NR) };
    let tiles = len.div_ceil(tile);
    let bounds: Vec<(usize, usize)> =
        (0..parts).map(|t| ((tiles * t / parts * tile).min(len), (tiles * (t + 1) / parts * tile).min(len))).collect();
    use rayon::prelude::*;
    bounds.into_par_iter().for_each(|(lo, hi)| {
        let (c, a, b) = (c, a, b);
        // SAFETY: each range of rows (or columns) of C is written by one task only; the offsets
        // stay inside the caller's bounds.
        unsafe {
            if m >= n {
                let a = Mat { ptr: a.ptr.add(lo * a.rs), ..a };
                serial(hi - lo, n, k, c.0.add(lo * ldc), ldc, accumulate, a, b);
            } else {
                let b = Mat { ptr: b.ptr.add(lo * b.cs), ..b };
                serial(m, hi - lo, k, c.0.add(lo), ldc, accumulate, a, b);
            }
        }
    });
}

/// The blocked product on the calling thread.
#[allow(clippy::too_many_arguments)]
unsafe fn serial(m: usize, n: usize, k: usize, c: *mut f32, ldc: usize, accumulate: bool, a: Mat, b: Mat) {
    BUFS.with(|bufs| {
        let (pa, pb) = &mut *bufs.borrow_mut();
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                // SAFETY: indices within the caller's bounds (jc + j < n, pc + p < k).
                unsafe { pack_b(pb, b, pc, kc, jc, nc) };
                let add = accumulate || pc > 0;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    // Whole micro-panels of a row-major or transposed A are read where they lie
                    // (MR runs of k, or k runs of MR, at A's own strides); the rest is packed.
                    let direct = if (a.cs == 1 || a.rs == 1) && n < DIRECT_BELOW_N { mc / MR } else { 0 };
                    // SAFETY: rows ic + direct·MR.. < m, columns pc.. < k.
                    unsafe { pack_a(pa, a, ic + direct * MR, mc - direct * MR, pc, kc) };
                    for jr in (0..nc).step_by(NR) {
                        let cols = NR.min(nc - jr);
                        let bp = pb[jr * kc..].as_ptr();
                        for (r, ir) in (0..mc).step_by(MR).enumerate() {
                            let rows = MR.min(mc - ir);
                            let (ap, si, sp) = if r < direct {
                                // SAFETY: rows ic + ir.. ic + ir + MR ≤ m, column pc < k.
                                (unsafe { a.ptr.add((ic + ir) * a.rs + pc * a.cs) }, a.rs, a.cs)
                            } else {
                                (pa[(r - direct) * MR * kc..].as_ptr(), 1, MR)
                            };
                            // SAFETY: the tile (ic + ir.., jc + jr..) of C is `rows × cols` in bounds;
                            // `ap` at strides (si, sp) and `bp` hold what the kernel reads; AVX-512F
                            // per the contract.
                            unsafe {
                                let cp = c.add((ic + ir) * ldc + jc + jr);
                                if r < direct {
                                    kernel::<false>(kc, ap, si, sp, bp, cp, ldc, rows, cols, add)
                                } else {
                                    kernel::<true>(kc, ap, si, sp, bp, cp, ldc, rows, cols, add)
                                }
                            };
                        }
                    }
                }
            }
        }
    });
}

/// Packs rows `ic..ic+mc`, columns `pc..pc+kc` of A into micro-panels of MR rows: panel r holds
/// `kc × MR` floats, element (i, p) at `r·MR·kc + p·MR + i`, zeros past m.
unsafe fn pack_a(buf: &mut Vec<f32>, a: Mat, ic: usize, mc: usize, pc: usize, kc: usize) {
    let panels = mc.div_ceil(MR);
    buf.resize(panels * MR * kc, 0.0);
    for r in 0..panels {
        let dst = &mut buf[r * MR * kc..(r + 1) * MR * kc];
        let rows = MR.min(mc - r * MR);
        for p in 0..kc {
            let run = &mut dst[p * MR..(p + 1) * MR];
            // SAFETY: rows ic + r·MR + i < m for i < rows, column pc + p < k.
            let src = unsafe { a.ptr.add((ic + r * MR) * a.rs + (pc + p) * a.cs) };
            if a.rs == 1 {
                run[..rows].copy_from_slice(unsafe { std::slice::from_raw_parts(src, rows) });
            } else {
                for (i, v) in run[..rows].iter_mut().enumerate() {
                    *v = unsafe { *src.add(i * a.rs) };
                }
            }
            run[rows..].fill(0.0);
        }
    }
}

/// Packs rows `pc..pc+kc`, columns `jc..jc+nc` of B into micro-panels of NR columns: panel q holds
/// `kc × NR` floats, element (p, j) at `p·NR + j`, zeros past n.
unsafe fn pack_b(buf: &mut Vec<f32>, b: Mat, pc: usize, kc: usize, jc: usize, nc: usize) {
    let panels = nc.div_ceil(NR);
    buf.resize(panels * NR * kc, 0.0);
    for q in 0..panels {
        let dst = &mut buf[q * NR * kc..(q + 1) * NR * kc];
        let cols = NR.min(nc - q * NR);
        for p in 0..kc {
            // SAFETY: row pc + p < k, columns jc + q·NR + j < n for j < cols.
            let src = unsafe { b.ptr.add((pc + p) * b.rs + (jc + q * NR) * b.cs) };
            let row = &mut dst[p * NR..(p + 1) * NR];
            if b.cs == 1 {
                // SAFETY: `cols` contiguous floats of row pc + p.
                row[..cols].copy_from_slice(unsafe { std::slice::from_raw_parts(src, cols) });
            } else {
                for (j, v) in row[..cols].iter_mut().enumerate() {
                    *v = unsafe { *src.add(j * b.cs) };
                }
            }
            row[cols..].fill(0.0);
        }
    }
}

/// One `MR × NR` tile: `C (+)= Ap · Bp` over `kc`, storing only `rows × cols` of it.
///
/// # Safety
/// AVX-512F; element (i, p) of the A micro-panel readable at `ap + i·si + p·sp` for i < MR, p < kc;
/// `bp` holds `kc·NR` floats; `c` writable at `i·ldc + j` for i < rows,
/// j < cols.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const PACKED: bool>(
    kc: usize,
    ap: *const f32,
    si: usize,
    sp: usize,
    bp: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    add: bool,
) {
    // A packed panel has constant offsets (si = 1, sp = MR). In place, the rows are reached from
    // four base pointers three rows apart, at +0, +si, +2si (x86 base + index·scale addressing):
    // stepping one pointer per row made a chain of 12 dependent adds per k.
    let (si, sp) = if PACKED { (1, MR) } else { (si, sp) };
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut base = [ap, ap.wrapping_add(3 * si), ap.wrapping_add(6 * si), ap.wrapping_add(9 * si)];
    let mut bp = bp;
    for _ in 0..kc {
        // SAFETY: row p of the B panel (NR floats) and column p of the A panel (MR floats).
        let (b0, b1) = unsafe { (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16))) };
        for (i, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(unsafe { *base[i / 3].add((i % 3) * si) });
            acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
        }
        // After the last step these point past the panels and are not read (hence wrapping_add).
        for b in base.iter_mut() {
            *b = b.wrapping_add(sp);
        }
        bp = bp.wrapping_add(NR);
    }
    let masks: [__mmask16; 2] = [lanes(cols), lanes(cols.saturating_sub(16))];
    for (i, acc) in acc.iter().enumerate().take(rows) {
        for v in 0..2 {
            if masks[v] == 0 {
                break;
            }
            // SAFETY: the unmasked lanes are columns < cols of row i < rows.
            unsafe {
                let dst = c.add(i * ldc + 16 * v);
                let s = if add { _mm512_add_ps(acc[v], _mm512_maskz_loadu_ps(masks[v], dst)) } else { acc[v] };
                _mm512_mask_storeu_ps(dst, masks[v], s);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const PACKED: bool>(
    _: usize,
    _: *const f32,
    _: usize,
    _: usize,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("sgemm runs only where `available()`")
}

/// The mask of the first `live` (≤ 16 counted) lanes.
fn lanes(live: usize) -> u16 {
    if live >= 16 {
        !0
    } else {
        (1u16 << live) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_values::{check_product, fill};

    /// Every product against an f64 triple loop: edges of every block size, both operand layouts,
    /// overwrite and accumulate, one and two threads; the padding of C left untouched.
    #[test]
    fn matches_f64_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (12, 32, 256),
            (13, 33, 257),
            (MC + 5, NC + 17, KC * 2 + 3),
            (200, 80, 64),
            (3, 300, 40),
        ];
        for &(m, n, k) in &shapes {
            for ta in [false, true] {
                for tb in [false, true] {
                    for accumulate in [false, true] {
                        for threads in [1, 2] {
                            let a = fill(m * k, (m * 7 + k) as u64);
                            let b = fill(k * n, (k * 5 + n) as u64);
                            let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
                            let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
                            let ldc = n + 3;
                            let c0 = fill(m * ldc, 9);
                            let mut c = c0.clone();
                            // SAFETY: the strides stay inside a (m·k), b (k·n) and c (m·ldc).
                            unsafe {
                                sgemm(
                                    m,
                                    n,
                                    k,
                                    c.as_mut_ptr(),
                                    ldc,
                                    accumulate,
                                    a.as_ptr(),
                                    a_rs,
                                    a_cs,
                                    b.as_ptr(),
                                    b_rs,
                                    b_cs,
                                    threads,
                                )
                            };
                            let tol = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
                            check_product(
                                (m, n, k),
                                &c,
                                &c0,
                                ldc,
                                accumulate,
                                |i, p| a[i * a_rs + p * a_cs],
                                |p, j| b[p * b_rs + j * b_cs],
                                |_| tol,
                                &format!("{m}×{n}×{k} ta={ta} tb={tb} acc={accumulate} t={threads}"),
                            );
                        }
                    }
                }
            }
        }
    }
}
