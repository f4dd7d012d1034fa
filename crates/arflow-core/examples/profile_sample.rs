//! Where a char-LM sampling step spends its time, per batch size: the packed single step (products,
//! cells, head) and the draws, against the tensor-graph step.
//! `cargo run --release --example profile_sample -p arflow-core [hidden] [gru|lstm|rnn]`

use arflow_core::lm::sampling::{sample_logits, SampleScratch, Sampling, Sfc32};
use arflow_core::rnn::CellKind;
use arflow_core::{CharLm, CharLmConfig, Dev};
use std::time::Instant;

fn main() -> arflow_core::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cell = match args.last().map(|a| CellKind::parse(a)) {
        Some(Ok(c)) => {
            args.pop();
            c
        }
        _ => CellKind::Gru,
    };
    let hidden: usize = args.first().map(|a| a.parse().expect("a number")).unwrap_or(256);
    let (embed, vocab) = (64, 83);
    let cfg = CharLmConfig { vocab, embed, hidden, layers: 1, cell, learned_h0: false, ahead: 1 };
    let mut lm = CharLm::new(cfg, Dev::Cpu)?;
    let fill = |n: usize, s: f32| (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * s).collect::<Vec<f32>>();
    for s in lm.params().specs().to_vec() {
        lm.params_mut().set_param(&s.name, &fill(s.len(), 0.06))?;
    }
    let g = cell.gates() * hidden;
    // One draw alone (softmax at temperature 1, the sum, the search), V = 83.
    let row: Vec<f32> = fill(vocab, 3.0);
    let mut rng = Sfc32::new(1);
    let mut scratch = SampleScratch::default();
    let o = Sampling::new(1.0, 0, 1.0)?;
    let t = Instant::now();
    let mut acc = 0;
    for _ in 0..100_000 {
        acc += sample_logits(&row, &o, &mut rng, &mut scratch);
    }
    println!("one draw: {:.3} µs ({acc})", t.elapsed().as_secs_f64() * 10.0);
    println!("{} H {hidden}, E {embed}, V {vocab}, {} threads", cell.name(), arflow_core::threads());
    for n in [1usize, 4, 16, 64, 256] {
        let tokens: Vec<u32> = (0..n as u32).map(|i| i % vocab as u32).collect();
        let reps = (4000 / n).max(20);
        let (mut state, _) = lm.step(None, &tokens)?;
        let t = Instant::now();
        for _ in 0..reps {
            state = lm.step(Some(&state), &tokens)?.0;
        }
        let step = t.elapsed().as_secs_f64() / reps as f64;
        let greps = (200 / n).max(3);
        let t = Instant::now();
        for _ in 0..greps {
            state = lm.step_graph(Some(&state), &tokens)?.0;
        }
        let graph = t.elapsed().as_secs_f64() / greps as f64;
        let rngs: Vec<Sfc32> = (0..n as u32).map(Sfc32::new).collect();
        let mut s = lm.sample_session(None, &tokens, n, rngs, Sampling::new(1.0, 0, 1.0)?)?;
        lm.sample_next(&mut s, 10)?;
        let t = Instant::now();
        lm.sample_next(&mut s, reps)?;
        let sample = t.elapsed().as_secs_f64() / reps as f64;
        let flops = 2.0 * n as f64 * (hidden * g + hidden * vocab) as f64;
        println!(
            "B {n:3}: step {:8.1} µs ({:5.1} GFLOP/s)  step+draw {:8.1} µs  ({:6.2} µs/char)  graph step {:8.1} µs",
            step * 1e6,
            flops / step / 1e9,
            sample * 1e6,
            sample * 1e6 / n as f64,
            graph * 1e6,
        );
    }
    Ok(())
}
