//! Training throughput of the bench's Fashion-MNIST Real NVP (bench/specs/realnvp-fmnist.json, the
//! JSON of `realNvpImageSpec({ shape: [1, 28, 28] })`: 2 scales, ResNet width 32, 1 block, actnorm) on a
//! device, on synthetic data, as `bench/torch/workloads.py realnvp --synthetic` times the same network in
//! PyTorch. Writes one JSON object (stdout, or `--out`).
//!
//! ```text
//! flow_cuda_bench [--device cuda|cuda:N|cpu] [--spec FILE] [--batch 64] [--images 2048] [--warmup 5]
//!                 [--seconds 10] [--min-steps 10] [--lr 1e-3] [--clip 1] [--out FILE]
//! ```
//! Data: `--images` images of uniformly random bytes (no dataset on the GPU machine); each step takes the
//! next `--batch` of them, dequantises them with fresh uniform noise, (p + u)/256, and applies the logit
//! transform of src/flows/preprocess.ts (α = 0.05) on the host, as `Flow.fit` does, then runs one
//! `FlowNet::train_step` (forward, backward, global-norm clipping, AdamW; the loss is read back, so each
//! step ends synchronised). After `--warmup` steps (the first runs actnorm's data-dependent
//! initialisation), steps are timed until `--seconds` have passed and at least `--min-steps` ran:
//! images/s over that wall time (the figure `timed` in workloads.py gives), and the median step.

use arflow_core::{AdamWConfig, Dev, FlowNet, Result};
use std::time::Instant;

/// The bench's Real NVP (regenerate with the command in bench/specs/README.md).
const SPEC: &str = include_str!("../../../bench/specs/realnvp-fmnist.json");
/// Real NVP's α of the logit transform (src/flows/preprocess.ts `LOGIT_ALPHA`).
const LOGIT_ALPHA: f32 = 0.05;

struct Args {
    device: String,
    spec: Option<String>,
    batch: usize,
    images: usize,
    warmup: usize,
    seconds: f64,
    min_steps: usize,
    lr: f64,
    clip: f64,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        device: "cuda".into(),
        spec: None,
        batch: 64,
        images: 2048,
        warmup: 5,
        seconds: 10.0,
        min_steps: 10,
        lr: 1e-3,
        clip: 1.0,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let mut num = || value().parse::<f64>().unwrap_or_else(|e| panic!("{flag}: {e}"));
        match flag.as_str() {
            "--device" => a.device = value(),
            "--spec" => a.spec = Some(value()),
            "--batch" => a.batch = num() as usize,
            "--images" => a.images = num() as usize,
            "--warmup" => a.warmup = num() as usize,
            "--seconds" => a.seconds = num(),
            "--min-steps" => a.min_steps = (num() as usize).max(1),
            "--lr" => a.lr = num(),
            "--clip" => a.clip = num(),
            "--out" => a.out = Some(value()),
            _ => panic!("unknown flag {flag}; see the doc comment of examples/flow_cuda_bench.rs"),
        }
    }
    assert!(a.batch >= 1 && a.images >= a.batch, "--images must be at least --batch (≥ 1)");
    a
}

/// Uniform u32s (xorshift64*), seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// Uniform in [0, 1) with 24 bits.
    fn uniform(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 24) as f32
    }
}

fn main() -> Result<()> {
    let a = args();
    let spec = match &a.spec {
        Some(path) => std::fs::read_to_string(path)?,
        None => SPEC.to_string(),
    };
    let dev = Dev::parse(&a.device)?;
    let t_build = Instant::now();
    let mut net = FlowNet::new(&spec, 0, dev)?;
    let params: usize = net.params().specs().iter().map(|s| s.len()).sum();
    let d = net.dim();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let pixels: Vec<u8> = (0..a.images * d).map(|_| rng.next() as u8).collect();
    let cfg = AdamWConfig { lr: a.lr, weight_decay: 0.0, clip: a.clip, ..AdamWConfig::default() };
    let mut y = vec![0f32; a.batch * d];
    let mut at = 0;
    let mut step = |net: &mut FlowNet| -> Result<f64> {
        if at + a.batch > a.images {
            at = 0;
        }
        for (v, &p) in y.iter_mut().zip(&pixels[at * d..(at + a.batch) * d]) {
            let x = ((p as f32 + rng.uniform()) / 256.0).min(1.0 - f32::EPSILON / 2.0);
            let s = LOGIT_ALPHA + (1.0 - 2.0 * LOGIT_ALPHA) * x;
            *v = s.ln() - (-s).ln_1p();
        }
        at += a.batch;
        Ok(net.train_step(&y, None, a.batch, &cfg)?.loss)
    };
    let mut losses = Vec::new();
    for _ in 0..a.warmup {
        losses.push(step(&mut net)?);
    }
    let warm_s = t_build.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let t0 = Instant::now();
    loop {
        let ts = Instant::now();
        losses.push(step(&mut net)?);
        times.push(ts.elapsed().as_secs_f64());
        if t0.elapsed().as_secs_f64() >= a.seconds && times.len() >= a.min_steps {
            break;
        }
    }
    let sec = t0.elapsed().as_secs_f64();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let steps = times.len();
    let report = serde_json::json!({
        "impl": "arflow FlowNet",
        "what": "Real NVP (bench/specs/realnvp-fmnist.json) training steps on synthetic 1×28×28 images: host dequantisation + logit, forward, backward, clipping, AdamW",
        "device": a.device,
        "batch": a.batch, "images": a.images, "lr": a.lr, "clip": a.clip,
        "params": params,
        "warmup": a.warmup, "setup_and_warmup_s": warm_s,
        "steps": steps, "sec": sec,
        "images_per_s": (steps * a.batch) as f64 / sec,
        "step_ms_median": sorted[steps / 2] * 1e3,
        "step_ms_min": sorted[0] * 1e3,
        "loss_first": losses.first(), "loss_last": losses.last(),
        "losses_finite": losses.iter().all(|l| l.is_finite()),
    });
    eprintln!(
        "arflow realnvp on {}: {:.1} images/s ({steps} steps of {} in {sec:.2} s, median step {:.2} ms), loss {:.2} → {:.2}",
        a.device,
        (steps * a.batch) as f64 / sec,
        a.batch,
        sorted[steps / 2] * 1e3,
        losses[0],
        losses[losses.len() - 1]
    );
    let text = serde_json::to_string_pretty(&report).expect("json");
    match &a.out {
        Some(path) => std::fs::write(path, text + "\n")?,
        None => println!("{text}"),
    }
    Ok(())
}
