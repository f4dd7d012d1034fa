//! Where a char-LM training step spends its time: the fused recurrent kernel's forward and backward
//! alone, then the whole step (embedding, head, loss, autograd, AdamW) through candle.
//! `cargo run --release --example profile_step -p arflow-core [hidden] [batch] [seq] [gru|lstm|rnn]`

use arflow_core::rnn::{rnn_backward, rnn_forward, CellKind, RnnDims, RnnWeights};
use arflow_core::{AdamWConfig, CharLm, CharLmConfig, Dev};
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
    let args: Vec<usize> = args.iter().map(|a| a.parse().expect("numbers")).collect();
    let hidden = *args.first().unwrap_or(&256);
    let batch = *args.get(1).unwrap_or(&32);
    let seq = *args.get(2).unwrap_or(&64);
    let (embed, vocab, reps) = (64, 80, 20);
    let d = RnnDims { cell, batch, seq, input: embed, hidden };
    let fill = |n: usize, s: f32| (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * s).collect::<Vec<f32>>();
    let (x, h0, p) = (fill(batch * seq * embed, 1.0), fill(batch * d.state_len(), 0.1), fill(d.param_len(), 0.06));
    let w = RnnWeights::unpack(&d, &p);
    let mut out = vec![0f32; batch * seq * d.state_len()];
    let mut saved = Vec::new();
    let t = Instant::now();
    for _ in 0..reps {
        rnn_forward(&d, &x, &h0, &w, &mut out, Some(&mut saved));
    }
    let fwd = t.elapsed().as_secs_f64() / reps as f64;
    let d_out = fill(out.len(), 0.01);
    // Backward uses the saved activations up: each timed backward follows an untimed forward.
    let mut bwd = 0.0;
    for _ in 0..reps {
        rnn_forward(&d, &x, &h0, &w, &mut out, Some(&mut saved));
        let t = Instant::now();
        std::hint::black_box(rnn_backward(&d, &x, &h0, &w, &out, &mut saved, &d_out));
        bwd += t.elapsed().as_secs_f64();
    }
    let bwd = bwd / reps as f64;

    let cfg = CharLmConfig { vocab, embed, hidden, layers: 1, cell, learned_h0: false, ahead: 1 };
    let mut lm = CharLm::new(cfg, Dev::Cpu)?;
    for s in lm.params().specs().to_vec() {
        lm.params_mut().set_param(&s.name, &fill(s.len(), 0.06))?;
    }
    let ids: Vec<u32> = (0..batch * seq).map(|i| (i * 31 % vocab) as u32).collect();
    let tg: Vec<u32> = (0..batch * seq).map(|i| (i * 17 % vocab) as u32).collect();
    let opt = AdamWConfig::default();
    lm.train_step(&ids, &tg, batch, seq, &opt)?;
    let t = Instant::now();
    for _ in 0..reps {
        lm.train_step(&ids, &tg, batch, seq, &opt)?;
    }
    let step = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(lm.nll(&ids, &tg, batch, seq, None)?);
    }
    let nll = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(lm.loss_and_grads(&ids, &tg, batch, seq, None)?);
    }
    let grads = t.elapsed().as_secs_f64() / reps as f64;
    println!("forward + loss (no grad)      {:7.2} ms", nll * 1e3);
    println!("forward + loss + backward     {:7.2} ms", grads * 1e3);
    let tokens = (batch * seq) as f64;
    println!("threads {}", arflow_core::threads());
    let name = cell.name();
    println!("{name} forward  {:7.2} ms", fwd * 1e3);
    println!("{name} backward {:7.2} ms", bwd * 1e3);
    println!(
        "train step   {:7.2} ms  ({:.0} tokens/s; other than the {name}: {:.2} ms)",
        step * 1e3,
        tokens / step,
        (step - fwd - bwd) * 1e3
    );
    Ok(())
}
