//! Times arflow's CUDA GRU layer (one candle op: cuBLAS GEMMs plus the fused gate kernels) forward, and
//! forward + backward through candle's autograd, at the sizes scripts/gpu/torch_gru.py times
//! `torch.nn.GRU` (cuDNN): batch-first, input = hidden, f32. Writes one JSON object (stdout, or `--out`).
//!
//! ```text
//! gru_cuda_bench [--hidden 512,1024] [--batch 64,256] [--seq 128] [--warmup 3] [--iters 10]
//!                [--event-tracking on|off|both] [--out FILE]
//! ```
//! Each figure is the median of `--iters` timed runs, each run ended by a device synchronisation.
//! The floor: the layer's GEMM FLOPs over the rate of one large cuBLAS GEMM measured in the same run.
//!
//! Event tracking: candle's CUDA device runs on a stream of its own, which puts cudarc in multi-stream mode,
//! where every kernel and GEMM argument waits on and records CUDA events. "on" is what a model gets
//! today; "off" (`CudaDevice::disable_event_tracking`, sound here: one stream) shows what that costs.

use arflow_core::rnn::gru_layer;
use candle_core::{Device, Result, Tensor, Var};
use std::time::Instant;

struct Args {
    hidden: Vec<usize>,
    batch: Vec<usize>,
    seq: usize,
    warmup: usize,
    iters: usize,
    tracking: Vec<bool>,
    out: Option<String>,
}

fn list(v: &str) -> Vec<usize> {
    v.split(',').map(|s| s.trim().parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))).collect()
}

fn args() -> Args {
    let mut a = Args {
        hidden: vec![512, 1024],
        batch: vec![64, 256],
        seq: 128,
        warmup: 3,
        iters: 10,
        tracking: vec![true, false],
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--hidden" => a.hidden = list(&value()),
            "--batch" => a.batch = list(&value()),
            "--seq" => a.seq = list(&value())[0],
            "--warmup" => a.warmup = list(&value())[0],
            "--iters" => a.iters = list(&value())[0].max(1),
            "--event-tracking" => {
                a.tracking = match value().as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    v => panic!("--event-tracking takes on, off or both, not {v}"),
                }
            }
            "--out" => a.out = Some(value()),
            _ => panic!("unknown flag {flag}; see the doc comment of examples/gru_cuda_bench.rs"),
        }
    }
    a
}

/// Median seconds of `iters` runs of `f` (after `warmup`), each followed by a device sync.
fn time(dev: &Device, warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    dev.synchronize()?;
    let mut ts = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    Ok(ts[ts.len() / 2])
}

/// FLOP/s of one cuBLAS SGEMM `[m, k] · [k, n]` through candle (the rate the GRU's GEMMs could reach).
fn gemm_rate(dev: &Device, (m, n, k): (usize, usize, usize)) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (m, k), dev)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), dev)?;
    let s = time(dev, 2, 5, || a.matmul(&b).map(|_| ()))?;
    Ok(2.0 * (m * n * k) as f64 / s)
}

fn main() -> Result<()> {
    let a = args();
    let mut results = Vec::new();
    for &tracking in &a.tracking {
        // A device of its own per mode: the setting applies to the buffers made after it.
        let dev = Device::new_cuda(0)?;
        if !tracking {
            // SAFETY: everything below runs on the device's one stream.
            unsafe { dev.as_cuda_device()?.disable_event_tracking() };
        }
        bench_sizes(&a, &dev, tracking, &mut results)?;
    }
    let report = serde_json::json!({
        "impl": "arflow-cuda-gru",
        "what": "one GRU layer, batch-first, input = hidden, f32 (no TF32): forward, and forward + backward of sum(out)",
        "warmup": a.warmup, "iters": a.iters, "statistic": "median",
        "results": results,
    });
    let text = serde_json::to_string_pretty(&report).expect("json");
    match &a.out {
        Some(path) => std::fs::write(path, text + "\n")?,
        None => println!("{text}"),
    }
    Ok(())
}

/// Times every size of `a` on `dev`, appending one JSON object per size to `results`.
fn bench_sizes(a: &Args, dev: &Device, tracking: bool, results: &mut Vec<serde_json::Value>) -> Result<()> {
    for &h in &a.hidden {
        for &b in &a.batch {
            let (t, i) = (a.seq, h);
            let p_len = 3 * h * i + 3 * h * h + 6 * h;
            let scale = 1.0 / (h as f32).sqrt();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, i), dev)?)?;
            let h0 = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (b, h), dev)? * 0.1)?)?;
            let p = Var::from_tensor(&Tensor::rand(-scale, scale, p_len, dev)?)?;
            let (xt, h0t, pt) = (x.as_tensor().detach(), h0.as_tensor().detach(), p.as_tensor().detach());
            let fwd = time(dev, a.warmup, a.iters, || gru_layer(&xt, &h0t, &pt).map(|_| ()))?;
            let fwd_bwd = time(dev, a.warmup, a.iters, || {
                let out = gru_layer(x.as_tensor(), h0.as_tensor(), p.as_tensor())?;
                out.sum_all()?.backward().map(|_| ())
            })?;
            // GEMM FLOPs: forward x·W_ihᵀ and T steps of h·W_hhᵀ; backward dh (T steps), dW_ih, dW_hh, dx.
            let (bt, g) = ((b * t) as f64, (3 * h) as f64);
            let fwd_flops = 2.0 * bt * g * (i + h) as f64;
            let bwd_flops = 2.0 * bt * g * (h as f64 + i as f64 + h as f64 + i as f64);
            let rate = gemm_rate(dev, (b * t, 3 * h, i))?;
            let tokens = (b * t) as f64;
            results.push(serde_json::json!({
                "hidden": h, "batch": b, "seq": t, "input": i, "event_tracking": tracking,
                "fwd_ms": fwd * 1e3,
                "fwd_bwd_ms": fwd_bwd * 1e3,
                "tokens_per_s_fwd": tokens / fwd,
                "tokens_per_s_fwd_bwd": tokens / fwd_bwd,
                "gemm_tflops_measured": rate / 1e12,
                "fwd_bwd_gemm_floor_ms": (fwd_flops + bwd_flops) / rate * 1e3,
                "fwd_bwd_achieved_tflops": (fwd_flops + bwd_flops) / fwd_bwd / 1e12,
            }));
            eprintln!(
                "arflow cuda gru H{h} B{b} T{t} tracking {tracking}: fwd {:.2} ms, fwd+bwd {:.2} ms",
                fwd * 1e3,
                fwd_bwd * 1e3
            );
        }
    }
    Ok(())
}
