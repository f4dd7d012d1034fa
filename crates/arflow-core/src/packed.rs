//! A weight matrix packed once for many small products `C (+)= A · B` with the same `B`.
//!
//! The GRU's time loops multiply a thread's slice of the batch (16–32 rows) by the same recurrent
//! weight at every step, T = 64…1024 times per sequence. A general GEMM repacks that weight on every
//! call; here it is packed once, and each product runs straight off the packed copy.
//!
//! Blocking (BLIS-style, without the cache blocks a small `m` does not need):
//! - `B` `[k × n]` is cut into column panels of `NR` columns; each panel is stored `k × NR`
//!   contiguous, row by row (zero-padded past `n`), so the microkernel reads it with
//!   sequential vector loads.
//! - `A` is read in place (no packing: at 16–32 rows it is small and stays in cache); `m` is split
//!   into balanced row blocks of at most `MR` rows, so with MR = 8, 17 rows run as 6 + 6 + 5
//!   rather than 8 + 8 + 1 (a 1-row tile has too few accumulators to hide FMA latency).
//! - Loop order: panel (outer) × row block × k (innermost, in the microkernel). One panel is
//!   `k·NR·4` bytes (k = 1536: 96 KB at NR = 16, 192 KB at NR = 32, in L2) and is reused by every
//!   row block while hot; the whole `A` is re-read once per panel, from L1/L2. No k-blocking: the
//!   `MR×NR` accumulators live in registers across the whole k loop, `C` is touched once per
//!   tile, and a step needs far less L2 bandwidth (one panel row + MR floats per MR·NV FMAs)
//!   than the core has, so the kernels already run near FMA peak (~110 GFLOP/s on Zen 4).
//! - Microkernels: AVX-512F `8×32` (16 zmm accumulators), AVX2+FMA `6×16` (12 ymm accumulators),
//!   and a portable scalar `4×8` fallback. One or two rows (the mat-vec of a batch-1 sampling
//!   step) would leave a tile 2–4 accumulator chains, too few to hide the FMA latency: they run
//!   `1×4` / `2×2` panels per tile instead (8 chains), each lane still one FMA chain over k from
//!   zero then one add into C, exactly as in the big tiles — so a row's result never depends on
//!   how many rows run with it (the sampling path relies on that to match training bit for bit).
//!   The kernel is picked at pack time from the CPU's features (the crate is built for baseline
//!   x86-64, so the SIMD kernels are `#[target_feature]` functions behind runtime detection).
//!   A `12×32` AVX-512 tile measured no faster, and slower when A's rows are a power of two
//!   apart (one time step of `[B, T, H]`): 12 rows read at once then share one L1 set, which has
//!   8 ways.

use std::fmt;

/// Which microkernel a [`PackedB`] is packed for (the panel width depends on it). [`PackedB::new`]
/// picks the best this CPU runs; [`PackedB::with_kernel`] lets benchmarks and tests choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable loops, `4 × 8` tiles over 16-column panels: any target.
    Scalar,
    /// AVX2 + FMA, `6 × 16` tiles.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F, `8 × 32` tiles.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// Rows per AVX2 tile: 6 rows × 2 ymm = 12 accumulators, + 2 B vectors + 1 broadcast ≤ 16 ymm.
#[cfg(target_arch = "x86_64")]
const AVX2_MR: usize = 6;
/// ymm vectors per AVX2 tile row (NR = 8·NV = 16 columns).
#[cfg(target_arch = "x86_64")]
const AVX2_NV: usize = 2;
/// Rows per AVX-512 tile: 8 rows × 2 zmm = 16 accumulators of 32 registers.
#[cfg(target_arch = "x86_64")]
const AVX512_MR: usize = 8;
/// zmm vectors per AVX-512 tile row (NR = 16·NV = 32 columns).
#[cfg(target_arch = "x86_64")]
const AVX512_NV: usize = 2;
/// Rows per scalar tile.
const SCALAR_MR: usize = 4;
/// Panel width for the scalar kernel when it is the production path (no AVX2 on this CPU).
const SCALAR_NR: usize = 16;
/// Panels start on a 64-byte boundary, so no vector load of a panel row splits a cache line.
const ALIGN_FLOATS: usize = 16;

impl Kernel {
    /// The best kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    /// Every kernel this CPU runs, the portable one first.
    pub fn all_available() -> Vec<Kernel> {
        let all = [Kernel::Scalar].into_iter();
        #[cfg(target_arch = "x86_64")]
        let all = all.chain([Kernel::Avx2, Kernel::Avx512]);
        all.filter(|k| k.available()).collect()
    }

    /// Columns per packed panel.
    fn panel_width(self) -> usize {
        match self {
            Kernel::Scalar => SCALAR_NR,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 8 * AVX2_NV,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => 16 * AVX512_NV,
        }
    }
}

/// A weight matrix B `[k × n]` (as a strided view: element (i, j) at `data[i*rs + j*cs]`) packed
/// once into column panels for repeated products `C[m × n] (+)= A[m × k] · B`.
///
/// Pack it when the weight changes (once per forward or backward call), then call
/// [`PackedB::matmul`] every time step: packing costs one pass over B, which a general GEMM pays
/// on every product.
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    /// Columns per panel (a multiple of the kernel's vector width).
    nr: usize,
    kernel: Kernel,
    /// Over-allocated so the panels can start on a 64-byte boundary at `off`.
    buf: Vec<f32>,
    off: usize,
}

impl fmt::Debug for PackedB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("nr", &self.nr)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl PackedB {
    /// Packs `B[k × n]`, element (i, j) at `data[i*rs + j*cs]`, for the best kernel of this CPU.
    /// A row-major `B` has `rs = n, cs = 1`; the transpose of a row-major `[n × k]` weight (the
    /// GRU's `W_hhᵀ`) has `rs = 1, cs = k`.
    pub fn new(k: usize, n: usize, data: &[f32], rs: usize, cs: usize) -> Self {
        Self::with_kernel(Kernel::detect(), k, n, data, rs, cs)
    }

    /// [`PackedB::new`] for a chosen kernel, so that benchmarks and tests can compare kernels.
    /// Panics if this CPU cannot run it.
    pub fn with_kernel(kernel: Kernel, k: usize, n: usize, data: &[f32], rs: usize, cs: usize) -> Self {
        assert!(kernel.available(), "packed: {kernel:?} kernel not supported by this CPU");
        if k > 0 && n > 0 {
            assert!(
                data.len() > (k - 1) * rs + (n - 1) * cs,
                "packed: B data too small for [{k} × {n}] at strides ({rs}, {cs})"
            );
        }
        let nr = kernel.panel_width();
        let panels = n.div_ceil(nr);
        let len = panels * k * nr;
        let mut buf = vec![0f32; len + ALIGN_FLOATS];
        let off = buf.as_ptr().align_offset(4 * ALIGN_FLOATS).min(ALIGN_FLOATS);
        let dst = &mut buf[off..off + len];
        for p in 0..panels {
            let j0 = p * nr;
            let cols = nr.min(n - j0);
            let panel = &mut dst[p * k * nr..(p + 1) * k * nr];
            // Row-major B copies row segments. A transposed B (the GRU's W_hhᵀ) is copied in
            // blocks of 16 rows: one source cache line per column, written into 16 panel rows
            // (16·nr floats, in L1), instead of one line per element from `cols` columns whose
            // cache sets collide at power-of-two `cs`. Padding stays zero.
            if cs == 1 {
                for (i, dst) in panel.chunks_exact_mut(nr).enumerate() {
                    dst[..cols].copy_from_slice(&data[i * rs + j0..i * rs + j0 + cols]);
                }
            } else if rs == 1 {
                const RB: usize = 16;
                for i0 in (0..k).step_by(RB) {
                    let rows = RB.min(k - i0);
                    let block = &mut panel[i0 * nr..(i0 + rows) * nr];
                    for jj in 0..cols {
                        let src = &data[(j0 + jj) * cs + i0..(j0 + jj) * cs + i0 + rows];
                        for (dst, &x) in block.chunks_exact_mut(nr).zip(src) {
                            dst[jj] = x;
                        }
                    }
                }
            } else {
                for (i, dst) in panel.chunks_exact_mut(nr).enumerate() {
                    for (jj, dst) in dst[..cols].iter_mut().enumerate() {
                        *dst = data[i * rs + (j0 + jj) * cs];
                    }
                }
            }
        }
        PackedB { k, n, nr, kernel, buf, off }
    }

    /// Rows of B (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (and of the product).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The kernel B is packed for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The packed panels: panel p holds columns `p·nr ..`, `k × nr` row-major.
    fn panels(&self) -> &[f32] {
        let len = self.n.div_ceil(self.nr) * self.k * self.nr;
        &self.buf[self.off..self.off + len]
    }

    /// `c` (row-major, leading dimension `ldc`) (+)= `a · B`, where `a` is `[m × k]` with row
    /// stride `lda` (column stride 1); `accumulate` adds to what `c` holds instead of overwriting.
    /// Single-threaded: callers already run one task per thread.
    pub fn matmul(&self, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        self.matmul_with(self.kernel, m, a, lda, c, ldc, accumulate)
    }

    /// [`PackedB::matmul`] through a chosen kernel: the scalar kernel reads panels of any width,
    /// so tests can run it on data packed for a SIMD kernel.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_with(
        &self,
        kernel: Kernel,
        m: usize,
        a: &[f32],
        lda: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(ldc >= n, "packed: ldc {ldc} < n {n}");
        assert!(c.len() >= (m - 1) * ldc + n, "packed: output too small");
        if k == 0 {
            if !accumulate {
                for i in 0..m {
                    c[i * ldc..i * ldc + n].fill(0.0);
                }
            }
            return;
        }
        assert!(a.len() >= (m - 1) * lda + k, "packed: lhs too small");
        assert!(
            kernel == Kernel::Scalar || kernel == self.kernel,
            "packed: B was packed for {:?}, not {kernel:?}",
            self.kernel
        );
        match kernel {
            Kernel::Scalar => scalar::run(self, m, a, lda, c, ldc, accumulate),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `with_kernel` checked that the CPU has AVX2 and FMA; the asserts above keep
            // every row of `a` (k floats from `i·lda`) and of `c` (n floats from `i·ldc`) inside
            // the slices, and the panels hold `k × nr` floats each.
            Kernel::Avx2 => unsafe { x86::run_avx2(self, m, a, lda, c, ldc, accumulate) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, with AVX-512F checked by `with_kernel`.
            Kernel::Avx512 => unsafe { x86::run_avx512(self, m, a, lda, c, ldc, accumulate) },
        }
    }
}

/// Splits `m` rows into the fewest blocks of at most `mr` rows, as equal as possible: a block of
/// `r` rows keeps `r·NV` independent accumulator chains, so 6 + 6 + 5 beats 8 + 8 + 1.
pub(crate) fn row_blocks(m: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = m.div_ceil(mr);
    let (base, extra) = (m / blocks, m % blocks);
    (0..blocks).map(move |b| {
        let start = b * base + b.min(extra);
        (start, base + usize::from(b < extra))
    })
}

/// Calls `$f::<ROWS, $nv>($args)` for a row count known only at run time (1 ..= 8).
macro_rules! by_rows {
    ($rows:expr, $f:ident, $nv:expr, ($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1, $nv>($($arg),*),
            2 => $f::<2, $nv>($($arg),*),
            3 => $f::<3, $nv>($($arg),*),
            4 => $f::<4, $nv>($($arg),*),
            5 => $f::<5, $nv>($($arg),*),
            6 => $f::<6, $nv>($($arg),*),
            7 => $f::<7, $nv>($($arg),*),
            8 => $f::<8, $nv>($($arg),*),
            r => unreachable!("row block of {r}"),
        }
    };
}

/// The portable kernel: plain loops that LLVM vectorises for whatever the build targets.
mod scalar {
    use super::{row_blocks, PackedB, SCALAR_MR};

    pub(super) fn run(pb: &PackedB, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        match pb.nr {
            16 => run_nr::<16>(pb, m, a, lda, c, ldc, accumulate),
            32 => run_nr::<32>(pb, m, a, lda, c, ldc, accumulate),
            nr => unreachable!("panel width {nr}"),
        }
    }

    fn run_nr<const NR: usize>(
        pb: &PackedB,
        m: usize,
        a: &[f32],
        lda: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        let (k, n) = (pb.k, pb.n);
        for (p, panel) in pb.panels().chunks_exact(k * NR).enumerate() {
            let j0 = p * NR;
            let cols = NR.min(n - j0);
            for (i0, rows) in row_blocks(m, SCALAR_MR) {
                let a = &a[i0 * lda..];
                let c = &mut c[i0 * ldc + j0..];
                by_rows!(rows, tile, NR, (k, a, lda, panel, c, ldc, cols, accumulate));
            }
        }
    }

    /// One `MR × NR` tile, computed 8 columns at a time so that the `MR × 8` accumulators fit
    /// in 16 SSE registers (the baseline x86-64 build) and vectorise.
    #[allow(clippy::too_many_arguments)]
    fn tile<const MR: usize, const NR: usize>(
        k: usize,
        a: &[f32],
        lda: usize,
        panel: &[f32],
        c: &mut [f32],
        ldc: usize,
        cols: usize,
        accumulate: bool,
    ) {
        const W: usize = 8;
        let rows: [&[f32]; MR] = std::array::from_fn(|i| &a[i * lda..i * lda + k]);
        for j0 in (0..cols).step_by(W) {
            let mut acc = [[0f32; W]; MR];
            for (p, b) in panel.chunks_exact(NR).take(k).enumerate() {
                let b: &[f32; W] = b[j0..j0 + W].try_into().expect("panel row");
                for (acc, row) in acc.iter_mut().zip(&rows) {
                    let x = row[p];
                    for (s, &b) in acc.iter_mut().zip(b) {
                        *s += x * b;
                    }
                }
            }
            let w = W.min(cols - j0);
            for (i, acc) in acc.iter().enumerate() {
                let row = &mut c[i * ldc + j0..i * ldc + j0 + w];
                if accumulate {
                    row.iter_mut().zip(acc).for_each(|(c, s)| *c += s);
                } else {
                    row.copy_from_slice(&acc[..w]);
                }
            }
        }
    }
}

/// The SIMD kernels. Each tile keeps `MR × NV` vector accumulators in registers for the whole k
/// loop: per step it loads NV vectors of the panel row, broadcasts one `A` element per row and
/// issues `MR·NV` FMAs, then adds into (or overwrites) `C` once at the end.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{row_blocks, PackedB, AVX2_MR, AVX2_NV, AVX512_MR, AVX512_NV};
    use std::arch::x86_64::*;

    /// AVX2+FMA product over all panels and row blocks.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `a` must hold rows `i·lda .. i·lda + k` and `c` rows
    /// `i·ldc .. i·ldc + n` for i < m, with `pb` packed for `Kernel::Avx2` and k > 0.
    pub(super) unsafe fn run_avx2(
        pb: &PackedB,
        m: usize,
        a: &[f32],
        lda: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        const NR: usize = 8 * AVX2_NV;
        let (k, n) = (pb.k, pb.n);
        let (ap, cp) = (a.as_ptr(), c.as_mut_ptr());
        if m <= 2 {
            // SAFETY: the caller's contract, passed on.
            unsafe { narrow_avx2(pb, m, ap, lda, cp, ldc, accumulate) };
            return;
        }
        for (p, panel) in pb.panels().chunks_exact(k * NR).enumerate() {
            let j0 = p * NR;
            let cols = NR.min(n - j0);
            for (i0, rows) in row_blocks(m, AVX2_MR) {
                // SAFETY: rows i0 .. i0 + rows < m of `a` and `c` are in bounds (caller), and
                // columns j0 .. j0 + cols ≤ n of `c`; the panel holds k × NR floats.
                unsafe {
                    let (a, c) = (ap.add(i0 * lda), cp.add(i0 * ldc + j0));
                    let b = panel.as_ptr();
                    by_rows!(rows, tile_avx2, AVX2_NV, (k, a, lda, b, 0, c, ldc, cols, accumulate));
                }
            }
        }
    }

    /// One or two rows (a mat-vec: the batch-1 sampling step): several panels per tile, so the
    /// tile still keeps 8 independent accumulators (`MR · NT = 8`) to hide the FMA latency. Each
    /// lane computes exactly what [`tile_avx2`] computes for it (one FMA chain over p from zero,
    /// then one add into C), so a row's result does not depend on how many rows run with it.
    ///
    /// # Safety
    /// As [`run_avx2`], with m ≤ 2.
    unsafe fn narrow_avx2(
        pb: &PackedB,
        m: usize,
        a: *const f32,
        lda: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const NR: usize = 8 * AVX2_NV;
        let (k, n) = (pb.k, pb.n);
        let panels = n.div_ceil(NR);
        let group = if m == 1 { 4 } else { 2 };
        let base = pb.panels().as_ptr();
        for p0 in (0..panels).step_by(group) {
            let np = group.min(panels - p0);
            let j0 = p0 * NR;
            let cols = (np * NR).min(n - j0);
            // SAFETY: panels p0 .. p0 + np exist (k × NR floats each, `k·NR` apart); columns
            // j0 .. j0 + cols ≤ n of rows < m ≤ 2 of `c` are in bounds (caller).
            unsafe {
                let (b, c) = (base.add(p0 * k * NR), c.add(j0));
                let s = k * NR;
                match (m, np) {
                    (1, 1) => tile_avx2::<1, 2>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (1, 2) => tile_avx2::<1, 4>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (1, 3) => tile_avx2::<1, 6>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (1, _) => tile_avx2::<1, 8>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (_, 1) => tile_avx2::<2, 2>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (_, _) => tile_avx2::<2, 4>(k, a, lda, b, s, c, ldc, cols, accumulate),
                }
            }
        }
    }

    /// One `MR × 8·NT` tile of C: `NT` ymm vectors per row, [`AVX2_NV`] from each panel, the
    /// panels `ps` floats apart (`ps` is unused when the tile reads one panel).
    ///
    /// # Safety
    /// AVX2+FMA; `a` readable at `i·lda + p` for i < MR, p < k; panel q (< NT / NV) readable from
    /// `b + q·ps` for `k·8·NV` floats, `c` writable at `i·ldc + j` for i < MR, j < cols ≤ 8·NT.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx2<const MR: usize, const NT: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ps: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
    ) {
        const NV: usize = AVX2_NV;
        let mut acc = [[_mm256_setzero_ps(); NT]; MR];
        let mut bp = b;
        for p in 0..k {
            let mut bv = [_mm256_setzero_ps(); NT];
            for (v, bv) in bv.iter_mut().enumerate() {
                // SAFETY: row p of panel v / NV holds 8·NV floats. (Unaligned load, though panels
                // start on 64-byte boundaries and rows are 32·NV bytes apart, so it never splits
                // a cache line.)
                *bv = unsafe { _mm256_loadu_ps(bp.add((v / NV) * ps + 8 * (v % NV))) };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: element (i, p) of A, in bounds by the caller's contract.
                let x = unsafe { _mm256_broadcast_ss(&*a.add(i * lda + p)) };
                for (s, &bv) in acc.iter_mut().zip(&bv) {
                    *s = _mm256_fmadd_ps(x, bv, *s);
                }
            }
            // SAFETY: stays within (or one past) the panel's k rows.
            bp = unsafe { bp.add(8 * NV) };
        }
        if cols == 8 * NT {
            for (i, acc) in acc.iter().enumerate() {
                for (v, &s) in acc.iter().enumerate() {
                    // SAFETY: full-width tile: columns 8v .. 8v + 8 < cols of row i.
                    unsafe {
                        let dst = c.add(i * ldc + 8 * v);
                        let s = if accumulate { _mm256_add_ps(s, _mm256_loadu_ps(dst)) } else { s };
                        _mm256_storeu_ps(dst, s);
                    }
                }
            }
        } else {
            // The right edge: spill the tile and copy the `cols` real columns.
            let mut tmp = [[[0f32; 8]; NT]; MR];
            for (t, acc) in tmp.iter_mut().zip(&acc) {
                for (t, &s) in t.iter_mut().zip(acc) {
                    // SAFETY: `t` is 8 floats.
                    unsafe { _mm256_storeu_ps(t.as_mut_ptr(), s) };
                }
            }
            for (i, t) in tmp.iter().enumerate() {
                for j in 0..cols {
                    // SAFETY: j < cols, in bounds by the caller's contract.
                    unsafe {
                        let dst = c.add(i * ldc + j);
                        let s = t[j / 8][j % 8];
                        *dst = if accumulate { *dst + s } else { s };
                    }
                }
            }
        }
    }

    /// AVX-512F product over all panels and row blocks.
    ///
    /// # Safety
    /// As [`run_avx2`], with AVX-512F and `pb` packed for `Kernel::Avx512`.
    pub(super) unsafe fn run_avx512(
        pb: &PackedB,
        m: usize,
        a: &[f32],
        lda: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        const NR: usize = 16 * AVX512_NV;
        let (k, n) = (pb.k, pb.n);
        let (ap, cp) = (a.as_ptr(), c.as_mut_ptr());
        if m <= 2 {
            // SAFETY: the caller's contract, passed on.
            unsafe { narrow_avx512(pb, m, ap, lda, cp, ldc, accumulate) };
            return;
        }
        for (p, panel) in pb.panels().chunks_exact(k * NR).enumerate() {
            let j0 = p * NR;
            let cols = NR.min(n - j0);
            for (i0, rows) in row_blocks(m, AVX512_MR) {
                // SAFETY: as in `run_avx2`.
                unsafe {
                    let (a, c) = (ap.add(i0 * lda), cp.add(i0 * ldc + j0));
                    let b = panel.as_ptr();
                    by_rows!(rows, tile_avx512, AVX512_NV, (k, a, lda, b, 0, c, ldc, cols, accumulate));
                }
            }
        }
    }

    /// [`narrow_avx2`] for AVX-512: one row reads four panels at once (8 zmm accumulators), two
    /// rows two panels; every lane is computed exactly as [`tile_avx512`] computes it.
    ///
    /// # Safety
    /// As [`run_avx512`], with m ≤ 2.
    unsafe fn narrow_avx512(
        pb: &PackedB,
        m: usize,
        a: *const f32,
        lda: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const NR: usize = 16 * AVX512_NV;
        let (k, n) = (pb.k, pb.n);
        let panels = n.div_ceil(NR);
        let group = if m == 1 { 4 } else { 2 };
        let base = pb.panels().as_ptr();
        for p0 in (0..panels).step_by(group) {
            let np = group.min(panels - p0);
            let j0 = p0 * NR;
            let cols = (np * NR).min(n - j0);
            // SAFETY: as in `narrow_avx2`.
            unsafe {
                let (b, c) = (base.add(p0 * k * NR), c.add(j0));
                let s = k * NR;
                match (m, np) {
                    (1, 1) => tile_avx512::<1, 2>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (1, 2) => tile_avx512::<1, 4>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (1, 3) => tile_avx512::<1, 6>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (1, _) => tile_avx512::<1, 8>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (_, 1) => tile_avx512::<2, 2>(k, a, lda, b, s, c, ldc, cols, accumulate),
                    (_, _) => tile_avx512::<2, 4>(k, a, lda, b, s, c, ldc, cols, accumulate),
                }
            }
        }
    }

    /// One `MR × 16·NT` tile of C, [`AVX512_NV`] zmm vectors from each panel, the panels `ps`
    /// floats apart; the right edge uses masked loads and stores.
    ///
    /// # Safety
    /// AVX-512F; `a` readable at `i·lda + p` for i < MR, p < k; panel q (< NT / NV) readable from
    /// `b + q·ps` for `k·16·NV` floats, `c` writable at `i·ldc + j` for i < MR, j < cols ≤ 16·NT.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx512<const MR: usize, const NT: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ps: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
    ) {
        const NV: usize = AVX512_NV;
        let mut acc = [[_mm512_setzero_ps(); NT]; MR];
        let mut bp = b;
        for p in 0..k {
            let mut bv = [_mm512_setzero_ps(); NT];
            for (v, bv) in bv.iter_mut().enumerate() {
                // SAFETY: row p of panel v / NV holds 16·NV floats (64-byte aligned in practice).
                *bv = unsafe { _mm512_loadu_ps(bp.add((v / NV) * ps + 16 * (v % NV))) };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: element (i, p) of A, in bounds by the caller's contract.
                let x = _mm512_set1_ps(unsafe { *a.add(i * lda + p) });
                for (s, &bv) in acc.iter_mut().zip(&bv) {
                    *s = _mm512_fmadd_ps(x, bv, *s);
                }
            }
            // SAFETY: stays within (or one past) the panel's k rows.
            bp = unsafe { bp.add(16 * NV) };
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &s) in acc.iter().enumerate() {
                let live = cols.saturating_sub(16 * v).min(16);
                if live == 0 {
                    break;
                }
                // Lanes past `cols` are masked off: never read, never written.
                let mask: __mmask16 = if live == 16 { !0 } else { (1 << live) - 1 };
                // SAFETY: the unmasked lanes are columns < cols of row i.
                unsafe {
                    let dst = c.add(i * ldc + 16 * v);
                    let s = if accumulate { _mm512_add_ps(s, _mm512_maskz_loadu_ps(mask, dst)) } else { s };
                    _mm512_mask_storeu_ps(dst, mask, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_values::{check_product, fill};

    /// Checks one product against an f64 triple loop, for one packing and one kernel.
    #[allow(clippy::too_many_arguments)]
    fn check(pack: Kernel, run: Kernel, m: usize, k: usize, n: usize, transposed: bool, accumulate: bool) {
        let (lda, ldc) = (k + 3, n + 5);
        let a = fill((m - 1) * lda + k, 1 + (m * 31 + k) as u64);
        let bdata = fill(k * n, 2 + (k * 17 + n) as u64);
        let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
        let c0 = fill(m * ldc, 3 + n as u64);
        let mut c = c0.clone();
        let pb = PackedB::with_kernel(pack, k, n, &bdata, rs, cs);
        assert_eq!((pb.k(), pb.n()), (k, n));
        pb.matmul_with(run, m, &a, lda, &mut c, ldc, accumulate);
        let tol = 1e-5 * k as f64;
        check_product(
            (m, n, k),
            &c,
            &c0,
            ldc,
            accumulate,
            |i, p| a[i * lda + p],
            |p, j| bdata[p * rs + j * cs],
            |want| tol * (1.0 + want.abs()),
            &format!("{pack:?}/{run:?} m={m} k={k} n={n} t={transposed} acc={accumulate}"),
        );
    }

    const MS: [usize; 9] = [1, 2, 5, 6, 7, 16, 17, 32, 33];
    const KS: [usize; 5] = [1, 3, 64, 256, 257];
    const NS: [usize; 7] = [1, 15, 16, 17, 48, 768, 770];

    fn sweep(pack: Kernel, run: Kernel) {
        for m in MS {
            for k in KS {
                for n in NS {
                    for transposed in [false, true] {
                        for accumulate in [false, true] {
                            check(pack, run, m, k, n, transposed, accumulate);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packed_default_kernel_matches_naive() {
        let kernel = Kernel::detect();
        sweep(kernel, kernel);
    }

    #[test]
    fn packed_each_simd_kernel_matches_naive() {
        for kernel in Kernel::all_available() {
            if kernel != Kernel::Scalar {
                sweep(kernel, kernel);
            }
        }
    }

    #[test]
    fn packed_scalar_fallback_matches_naive() {
        // The scalar kernel on its own packing and on every SIMD packing (other panel widths).
        for pack in Kernel::all_available() {
            sweep(pack, Kernel::Scalar);
        }
    }

    /// Every row of a product is bit-for-bit what that row alone gives, whatever the rows around it:
    /// the batch-1 sampling step (one-row mat-vec kernels), the batched one (row blocks) and the
    /// training forward (row blocks, rows split across threads) compute the same hidden states.
    #[test]
    fn packed_rows_do_not_depend_on_their_batch() {
        for kernel in Kernel::all_available() {
            for (k, n) in [(64, 768), (256, 768), (256, 83), (17, 100), (3, 1)] {
                let pb = PackedB::with_kernel(kernel, k, n, &fill(k * n, (k + n) as u64), 1, k);
                for m in 1..=13 {
                    let a = fill(m * k, (m * 7 + k) as u64);
                    let c0 = fill(m * n, 5);
                    for accumulate in [false, true] {
                        let mut all = c0.clone();
                        pb.matmul(m, &a, k, &mut all, n, accumulate);
                        for i in 0..m {
                            let mut one = c0[i * n..(i + 1) * n].to_vec();
                            pb.matmul(1, &a[i * k..], k, &mut one, n, accumulate);
                            let same =
                                one.iter().zip(&all[i * n..(i + 1) * n]).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "{kernel:?} k={k} n={n}: row {i} of {m} (acc={accumulate}) differs alone");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packed_row_blocks_are_balanced() {
        for mr in 1..=8 {
            for m in 1..=40 {
                let blocks: Vec<_> = row_blocks(m, mr).collect();
                assert_eq!(blocks.len(), m.div_ceil(mr));
                let mut next = 0;
                for &(start, rows) in &blocks {
                    assert_eq!(start, next);
                    assert!((1..=mr).contains(&rows));
                    next += rows;
                }
                assert_eq!(next, m);
                let sizes = blocks.iter().map(|b| b.1);
                assert!(sizes.clone().max().unwrap() - sizes.min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn packed_empty_and_k_zero() {
        let pb = PackedB::new(0, 3, &[], 3, 1);
        let mut c = vec![7f32; 2 * 4];
        pb.matmul(2, &[], 0, &mut c, 4, true);
        assert!(c.iter().all(|&x| x == 7.0));
        pb.matmul(2, &[], 0, &mut c, 4, false);
        assert_eq!(c, [0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 7.0]);
        let pb = PackedB::new(2, 0, &[], 0, 1);
        pb.matmul(1, &[1.0, 2.0], 2, &mut [], 0, false);
    }

    #[test]
    #[should_panic(expected = "lhs too small")]
    fn packed_rejects_short_lhs() {
        let pb = PackedB::new(4, 2, &[0.0; 8], 2, 1);
        let mut c = [0f32; 4];
        pb.matmul(2, &[0.0; 7], 4, &mut c, 2, false);
    }
}
