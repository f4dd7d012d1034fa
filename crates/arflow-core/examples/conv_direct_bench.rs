//! Times the direct 3×3 convolution kernels (`flow::conv_direct`) at every shape of the bench's
//! Fashion-MNIST Real NVP (batch 64), on each instruction set this CPU runs (AVX-512, AVX2): forward,
//! dL/dx, dW and the padding copy, with the GFLOP/s of each and the total per training step.
//!
//! `cargo run --release -p arflow-core --example conv_direct_bench`
use arflow_core::flow::conv_direct::{forward_with, pad, weight_grad_with, ConvKernel, Weights};
use std::time::Instant;

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64 * 1e3
}

fn main() {
    let kernels = ConvKernel::all_available();
    if kernels.is_empty() {
        println!("this CPU has neither AVX-512F nor AVX2+FMA: the direct kernels do not run here");
        return;
    }
    for kernel in kernels {
        println!("{kernel:?}:");
        bench(kernel);
    }
}

fn bench(kernel: ConvKernel) {
    let n = 64;
    // (H, W, Cin, Cout, convolutions of that shape per step).
    let shapes = [
        (28, 28, 1, 32, 3),
        (28, 28, 32, 32, 6),
        (28, 28, 32, 2, 3),
        (14, 14, 4, 32, 3),
        (14, 14, 32, 32, 14),
        (14, 14, 32, 8, 3),
        (14, 14, 2, 32, 4),
        (14, 14, 32, 4, 4),
    ];
    let val = |i: usize, k: usize| ((i * k) % 23) as f32 / 11.0 - 1.0;
    let mut total = 0.0;
    for &(h, w, cin, cout, count) in &shapes {
        let x: Vec<f32> = (0..n * h * w * cin).map(|i| val(i, 7)).collect();
        let wm: Vec<f32> = (0..9 * cin * cout).map(|i| val(i, 5)).collect();
        let g: Vec<f32> = (0..n * h * w * cout).map(|i| val(i, 3)).collect();
        let (wts, turned) = (Weights::new(&wm, None, cin, cout), Weights::turned(&wm, cin, cout));
        let (mut xp, mut gp) = (Vec::new(), Vec::new());
        pad(&x, [n, h, w, cin], false, &mut xp);
        pad(&g, [n, h, w, cout], false, &mut gp);
        let flops = 2.0 * (n * h * w * 9 * cin * cout) as f64;
        let (mut y, mut dx) = (Vec::with_capacity(n * h * w * cout), Vec::with_capacity(n * h * w * cin));
        let reps = 10;
        let f =
            time(reps, || forward_with(kernel, &xp, [n, h, w], &wts, &mut y.spare_capacity_mut()[..n * h * w * cout]));
        let d = time(reps, || {
            forward_with(kernel, &gp, [n, h, w], &turned, &mut dx.spare_capacity_mut()[..n * h * w * cin])
        });
        let dw = time(reps, || {
            std::hint::black_box(weight_grad_with(kernel, &xp, &g, [n, h, w, cin, cout]));
        });
        let p = time(reps, || pad(&x, [n, h, w, cin], true, &mut xp));
        let step = (f + d + dw + 2.0 * p) * count as f64;
        total += step;
        let rate = |ms: f64| flops / ms / 1e6;
        println!(
            "{h}×{w} {cin:>2}→{cout:>2} ×{count:>2}: forward {f:.2} ms ({:.0} GFLOP/s), dx {d:.2} ms ({:.0}), dW {dw:.2} ms ({:.0}), pad {p:.2} ms | {step:.1} ms a step",
            rate(f),
            rate(d),
            rate(dw)
        );
    }
    println!("convolutions per training step: {total:.1} ms");
}
