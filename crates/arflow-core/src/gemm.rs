//! Row-major matrix products on raw slices, through the `gemm` crate that candle itself uses.
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
        View {
            data,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub fn transposed(data: &'a [T], ld: usize) -> Self {
        View {
            data,
            rs: 1,
            cs: ld,
        }
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
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`, with `c` row-major at leading dimension `ldc`;
/// `accumulate` adds to what `c` holds instead of overwriting it.
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
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= extent(m, n, ldc, 1), "gemm: output too small");
    assert!(
        a.data.len() >= extent(m, k, a.rs, a.cs),
        "gemm: lhs too small"
    );
    assert!(
        b.data.len() >= extent(k, n, b.rs, b.cs),
        "gemm: rhs too small"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::zero());
            }
        }
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
            parallelism(m, n, k),
        )
    }
}
