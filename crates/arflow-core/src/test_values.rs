//! Deterministic test inputs shared by the unit tests of the kernels.

/// `len` values in [-1, 1) from an xorshift stream seeded by `seed`.
pub fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Checks `c [m × ldc]` after `c (+)= A·B` against an f64 triple loop over `a(i, p)` and `b(p, j)`:
/// entry (i, j < n) within `tol(want)` of the product (plus `c0`'s entry with `accumulate`), and the
/// padding columns j ≥ n untouched. `what` names the case in a failure.
#[allow(clippy::too_many_arguments)]
pub fn check_product(
    (m, n, k): (usize, usize, usize),
    c: &[f32],
    c0: &[f32],
    ldc: usize,
    accumulate: bool,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
    tol: impl Fn(f64) -> f64,
    what: &str,
) {
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j] as f64;
            if j >= n {
                assert_eq!(c[i * ldc + j], c0[i * ldc + j], "{what}: wrote past n at ({i}, {j})");
                continue;
            }
            let mut want = if accumulate { c0[i * ldc + j] as f64 } else { 0.0 };
            for p in 0..k {
                want += a(i, p) as f64 * b(p, j) as f64;
            }
            assert!((got - want).abs() <= tol(want), "{what}: at ({i}, {j}): {got} vs {want}");
        }
    }
}

/// `|got − want| ≤ tol · scale` for every entry, with scale the largest `|want|` (at least `floor`):
/// errors measured against the largest value, as rounding in sums of many terms is.
pub fn assert_close_to_scale<T: Copy + Into<f64>>(name: &str, got: &[T], want: &[T], tol: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.into().abs())).max(floor);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w): (f64, f64) = (g.into(), w.into());
        assert!((g - w).abs() <= tol * scale, "{name}[{i}]: got {g}, want {w} (scale {scale})");
    }
}
