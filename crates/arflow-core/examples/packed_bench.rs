//! GFLOP/s of [`PackedB::matmul`] (B packed once) against `gemm::matmul_serial` (which repacks B on
//! every call), single-threaded, for the GRU's per-time-step shapes: forward `h · W_hhᵀ`
//! (k = H, n = 3H, B a transposed view) and backward `dgh · W_hh` (k = 3H, n = H, B row-major).
//! `cargo run --release --example packed_bench -p arflow-core [reps]`

use arflow_core::gemm::{matmul_serial, View};
use arflow_core::packed::{Kernel, PackedB};
use std::time::Instant;

fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| (((i + seed) * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05).collect()
}

fn gflops(m: usize, n: usize, k: usize, reps: usize, secs: f64) -> f64 {
    2.0 * (m * n * k * reps) as f64 / secs / 1e9
}

/// Best of three timed rounds of `reps` calls (after a warm-up call), in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let reps: usize = std::env::args().nth(1).map(|a| a.parse().expect("reps")).unwrap_or(2000);
    let kernels = Kernel::all_available();
    println!("default kernel {:?}; {reps} reps, best of 3; GFLOP/s", Kernel::detect());
    print!("{:>34} {:>10}", "shape", "gemm");
    for kernel in &kernels {
        print!(" {:>10}", format!("{kernel:?}"));
    }
    println!(" {:>9} {:>9}", "speedup", "pack µs");
    // (k, n, transposed): the weight is W [3H × H] row-major either way.
    let shapes = [(256, 768, true), (768, 256, false), (512, 1536, true), (1536, 512, false)];
    for (k, n, transposed) in shapes {
        let w = fill(k * n, 1);
        let (b, rs, cs) = if transposed { (View::transposed(&w, k), 1, k) } else { (View::rows(&w, n), n, 1) };
        // A rows k apart (contiguous), or T·k apart as in the GRU (one time step of [B, T, k]).
        for (m, lda) in [(16, k), (32, k), (16, 64 * k), (32, 64 * k)] {
            let a = fill((m - 1) * lda + k, 2);
            let mut c = vec![0f32; m * n];
            let base = time(reps, || matmul_serial(m, n, k, &mut c, n, true, View::rows(&a, lda), b));
            let base = gflops(m, n, k, reps, base);
            let name = format!("m={m} k={k} n={n} {} lda={}k", if transposed { "Bᵀ" } else { "B" }, lda / k);
            print!("{name:>34} {base:>10.1}");
            let mut best = 0f64;
            for &kernel in &kernels {
                let pb = PackedB::with_kernel(kernel, k, n, &w, rs, cs);
                // The scalar fallback is an order of magnitude slower: fewer reps.
                let r = if kernel == Kernel::Scalar { reps / 20 } else { reps };
                let s = time(r, || pb.matmul(m, &a, lda, &mut c, n, true));
                let g = gflops(m, n, k, r, s);
                if kernel == Kernel::detect() {
                    best = g;
                }
                print!(" {g:>10.1}");
            }
            let pack = time(20, || {
                std::hint::black_box(PackedB::new(k, n, &w, rs, cs));
            }) / 20.0
                * 1e6;
            println!(" {:>8.2}x {pack:>9.0}", best / base);
        }
    }
}
