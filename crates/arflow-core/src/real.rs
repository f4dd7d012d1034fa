//! The scalar types the kernels run in: f32 for training, f64 for gradient checks.

use crate::gemm::{matmul_serial, View};
use crate::packed::PackedB;
use num_traits::Float;

pub trait Real: Float + Send + Sync + std::fmt::Debug + std::iter::Sum + 'static {
    /// A weight matrix prepared once for many products with few rows (the GRU's recurrent GEMMs).
    type Packed: Send + Sync;

    fn of(x: f64) -> Self;
    /// tanh, fast where it matters: f32 uses a branch-free rational approximation that vectorises
    /// (a few ulp from libm's); f64, used for gradient checks, uses libm.
    fn tanh_(self) -> Self;
    /// Prepares `B [k × n]` (element (i, j) at `data[i·rs + j·cs]`) for [`Real::packed_matmul`].
    fn pack(k: usize, n: usize, data: &[Self], rs: usize, cs: usize) -> Self::Packed;
    /// `c[m × n] (+)= a[m × k] · B` on the calling thread; `a`'s rows are `lda` apart.
    #[allow(clippy::too_many_arguments)]
    fn packed_matmul(b: &Self::Packed, m: usize, a: &[Self], lda: usize, c: &mut [Self], ldc: usize, accumulate: bool);
}

/// f64 runs only in gradient checks: a row-major copy multiplied through the general GEMM.
pub struct PlainB {
    k: usize,
    n: usize,
    data: Vec<f64>,
}

impl Real for f32 {
    type Packed = PackedB;

    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn tanh_(self) -> Self {
        fast_tanh(self)
    }
    fn pack(k: usize, n: usize, data: &[f32], rs: usize, cs: usize) -> PackedB {
        PackedB::new(k, n, data, rs, cs)
    }
    fn packed_matmul(b: &PackedB, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        b.matmul(m, a, lda, c, ldc, accumulate)
    }
}

impl Real for f64 {
    type Packed = PlainB;

    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn tanh_(self) -> Self {
        self.tanh()
    }
    fn pack(k: usize, n: usize, data: &[f64], rs: usize, cs: usize) -> PlainB {
        let data = (0..k * n).map(|e| data[(e / n) * rs + (e % n) * cs]).collect();
        PlainB { k, n, data }
    }
    fn packed_matmul(b: &PlainB, m: usize, a: &[f64], lda: usize, c: &mut [f64], ldc: usize, accumulate: bool) {
        let a = View { data: a, rs: lda, cs: 1 };
        matmul_serial(m, b.n, b.k, c, ldc, accumulate, a, View::rows(&b.data, b.n))
    }
}

/// tanh(x) ≈ x·P(x²)/Q(x²) on x clamped to ±7.998 (where f32 tanh is ±1), the 13/6 rational
/// approximation Eigen uses for float (`generic_fast_tanh_float`); max error a few ulp.
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.998_811_7;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 - 8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    p *= x;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347e-4;
    q = q * x2 + 2.268_434_7e-3;
    q = q * x2 + 4.893_525e-3;
    p / q
}

/// σ(x) = ½ + ½·tanh(x/2): one approximation serves both gates.
#[inline(always)]
pub fn sigmoid<T: Real>(x: T) -> T {
    let half = T::of(0.5);
    half + half * (half * x).tanh_()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_matches_libm() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let err = (fast_tanh(x) as f64 - (x as f64).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "max abs error {worst}");
        assert_eq!(fast_tanh(50.0), fast_tanh(8.0));
        assert!((fast_tanh(-50.0) + 1.0).abs() < 1e-6);
    }
}
