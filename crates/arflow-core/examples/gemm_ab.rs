//! A/B of the f32 GEMMs on one thread, alternating within one process: arflow's AVX-512 `sgemm`
//! against the `gemm` crate (what candle uses), at the shapes of the hot paths, with this core's
//! FMA peak for scale. `cargo run --release -p arflow-core --example gemm_ab`

use std::time::Instant;

/// The hot-path shapes `(m, n, k)`: GRU input projection and weight gradients (H 256, B·T 2048),
/// im2col convolutions of the image flows, the LM head, a square product.
const SHAPES: [(usize, usize, usize); 6] =
    [(2048, 768, 256), (1024, 1024, 1024), (4096, 64, 576), (768, 64, 2048), (2048, 80, 256), (576, 64, 4096)];

fn main() {
    if !arflow_core::sgemm::available() {
        println!("this CPU has no AVX-512F: arflow uses the gemm crate for every product");
        return;
    }
    println!("FMA peak, 1 thread: {:.1} GFLOP/s", fma_peak());
    for &(m, n, k) in &SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
        for round in 0..20 {
            // SAFETY: a, b, c are m×k, k×n and m×n row-major; AVX-512F checked above.
            let t = time(|| unsafe {
                arflow_core::sgemm::sgemm(m, n, k, c.as_mut_ptr(), n, false, a.as_ptr(), k, 1, b.as_ptr(), n, 1, 1)
            });
            // SAFETY: as above, with the gemm crate's (column stride, row stride) convention.
            let u = time(|| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            });
            if round > 0 {
                ours = ours.min(t);
                theirs = theirs.min(u);
            }
        }
        let gf = |t: f64| 2.0 * (m * n * k) as f64 / t / 1e9;
        println!("{m}×{n}×{k}: sgemm {:.1}, gemm crate {:.1} GFLOP/s (1 thread, best of 19)", gf(ours), gf(theirs));
    }
}

/// Seconds per run of `f`, over 3 runs.
fn time(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..3 {
        f();
    }
    t.elapsed().as_secs_f64() / 3.0
}

/// GFLOP/s of 24 independent FMA chains on one core.
fn fma_peak() -> f64 {
    let iters = 20_000_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        // SAFETY: only called after AVX-512F was detected.
        std::hint::black_box(unsafe { fma_chains(iters) });
        best = best.min(t.elapsed().as_secs_f64());
    }
    (iters * 24 * 32) as f64 / best / 1e9
}

#[target_feature(enable = "avx512f")]
fn fma_chains(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 24];
    let (x, y) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(x, y, *a);
        }
    }
    _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, &a| _mm512_add_ps(s, a)))
}
