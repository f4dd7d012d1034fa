//! Row-major matrix products on raw slices: f32 on AVX-512 CPUs through [`crate::sgemm`], everything
//! else through the `gemm` crate that candle itself uses.
//! Calling it directly lets the GRU kernels read strided views (one time step of a batch-first
//! sequence, a transposed weight) without copies or per-op tensor overhead.

use crate::real::Real;
use gemm::Parallelism;

/// A read-only matrix view: element (i, j) lives at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major matrix with leading dimension `ld`.
    pub fn rows(data: &'a [T], ld: usize) -> Self {
        View { data, rs: ld, cs: 1 }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub fn transposed(data: &'a [T], ld: usize) -> Self {
        View { data, rs: 1, cs: ld }
    }
}

fn extent(m: usize, n: usize, rs: usize, cs: usize) -> usize {
    if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * rs + (n - 1) * cs + 1
    }
}

/// Threads for one product: small products run single-threaded, where fork/join costs more than it saves.
fn parallelism(m: usize, n: usize, k: usize, threaded: bool) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threaded && threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`, with `c` row-major at leading dimension `ldc`;
/// `accumulate` adds to what `c` holds instead of overwriting it. Uses every kernel thread.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: View<T>,
    b: View<T>,
) {
    matmul_with(m, n, k, c, ldc, accumulate, a, b, true)
}

/// [`matmul`] on the calling thread only: for code that already runs one task per thread.
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: View<T>,
    b: View<T>,
) {
    matmul_with(m, n, k, c, ldc, accumulate, a, b, false)
}

#[allow(clippy::too_many_arguments)]
fn matmul_with<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: View<T>,
    b: View<T>,
    threaded: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= extent(m, n, ldc, 1), "gemm: output too small");
    assert!(a.data.len() >= extent(m, k, a.rs, a.cs), "gemm: lhs too small");
    assert!(b.data.len() >= extent(k, n, b.rs, b.cs), "gemm: rhs too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::zero());
            }
        }
        return;
    }
    let par = parallelism(m, n, k, threaded);
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && crate::sgemm::available() {
        let threads = match par {
            Parallelism::Rayon(t) => t,
            _ => 1,
        };
        // SAFETY: T is f32 (same type, so the pointer casts are identities); the asserts above keep
        // every index inside the slices; `c` is borrowed mutably so it cannot alias `a` or `b`;
        // `available()` checked AVX-512F.
        unsafe {
            crate::sgemm::sgemm(
                m,
                n,
                k,
                c.as_mut_ptr().cast(),
                ldc,
                accumulate,
                a.data.as_ptr().cast(),
                a.rs,
                a.cs,
                b.data.as_ptr().cast(),
                b.rs,
                b.cs,
                threads,
            )
        };
        return;
    }
    // SAFETY: the asserts above keep every index the strides can reach inside the slices, and `c`
    // is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// GFLOP/s of `reps` products `[m×k]·[k×n]` in f32 (after one warm-up product).
pub fn bench_gflops(m: usize, n: usize, k: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    matmul(m, n, k, &mut c, n, false, View::rows(&a, k), View::rows(&b, n));
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        matmul(m, n, k, &mut c, n, false, View::rows(&a, k), View::rows(&b, n));
    }
    let sec = t0.elapsed().as_secs_f64();
    2.0 * (m * n * k * reps) as f64 / sec / 1e9
}
