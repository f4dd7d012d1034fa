//! Exports arflow's recurrent stacks, run on a device, for a PyTorch parity check
//! (scripts/gpu/torch_rnn_parity.py loads them into `torch.nn.GRU` / `nn.LSTM` / `nn.RNN`).
//!
//! ```text
//! rnn_cuda_export [--device cuda|cuda:N|cpu] [--out PREFIX]
//! ```
//! For each case (GRU, LSTM and tanh RNN; one layer, two layers, and two bidirectional layers for the GRU
//! and the LSTM; an odd small size and a larger one) it draws random weights (PyTorch's initialisation,
//! U(−1/√H, 1/√H)), an input, an initial state and loss weights c from a fixed seed, runs
//! `arflow_core::rnn::run_stack` on the device (one fused op per layer and direction), and takes the
//! gradients of L = Σ c ⊙ out through candle's autograd (our backward through time). It writes
//! `PREFIX.bin` (every tensor, raw little-endian f32, one after another) and `PREFIX.json` (the cases,
//! and each tensor's name, shape and byte offset), default PREFIX `rnn_export`.
//!
//! Names are PyTorch's, prefixed by the case: `gru_l2/weight_ih_l1_reverse` (`[G·H, I]`, gates in
//! PyTorch's order: GRU (r, z, n), LSTM (i, f, g, o)), the inputs `x` `[B, T, I]`, `h0` (and for the
//! LSTM `c0`) `[L·D, B, H]`, `loss_weights` `[B, T, D·H]`, and arflow's results `arflow.out`
//! `[B, T, D·H]`, `arflow.h_n` (`arflow.c_n`) `[L·D, B, H]`, `arflow.grad.<input or parameter name>`.

use arflow_core::rnn::{run_stack, CellKind, RnnDims};
use arflow_core::{Dev, Result};
use candle_core::{Device, Tensor, Var};
use serde_json::json;

/// One exported case: a stack of `layers` layers of `cell`, one direction or two.
struct Case {
    cell: CellKind,
    layers: usize,
    bidirectional: bool,
    batch: usize,
    seq: usize,
    input: usize,
    hidden: usize,
}

impl Case {
    fn name(&self) -> String {
        let b = if self.bidirectional { "_bi" } else { "" };
        format!("{}_l{}{b}_h{}", self.cell.name(), self.layers, self.hidden)
    }

    fn dirs(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for cell in CellKind::ALL {
        for (batch, seq, input, hidden) in [(3, 7, 5, 9), (16, 48, 64, 128)] {
            for (layers, bidirectional) in [(1, false), (2, false), (2, true)] {
                if bidirectional && cell == CellKind::Rnn {
                    continue;
                }
                v.push(Case { cell, layers, bidirectional, batch, seq, input, hidden });
            }
        }
    }
    v
}

/// Deterministic values in [−scale, scale) (xorshift64*), the same on every device and build.
struct Rng(u64);

impl Rng {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * scale
            })
            .collect()
    }
}

/// The bundle being written: raw f32 bytes and the index of its tensors.
#[derive(Default)]
struct Bundle {
    bytes: Vec<u8>,
    index: Vec<serde_json::Value>,
}

impl Bundle {
    fn add(&mut self, name: String, shape: &[usize], data: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}: shape {shape:?}");
        self.index.push(json!({ "name": name, "dtype": "f32", "shape": shape, "offset": self.bytes.len() }));
        for v in data {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn add_tensor(&mut self, name: String, t: &Tensor) -> Result<()> {
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        self.add(name, t.dims(), &data);
        Ok(())
    }
}

/// PyTorch's names of layer `l`, direction `d`'s four parameters, in arflow's packed order.
fn param_names(l: usize, d: usize) -> [String; 4] {
    let sfx = if d == 1 { "_reverse" } else { "" };
    ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|w| format!("{w}_l{l}{sfx}"))
}

/// `[B, S]` states of every layer and direction → `[L·D, B, H]` of one half (0: h, 1: c for the LSTM).
fn stack_states(states: &[Tensor], hidden: usize, half: usize) -> Result<Tensor> {
    let parts = states.iter().map(|s| s.narrow(1, half * hidden, hidden)?.unsqueeze(0)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

fn export_case(c: &Case, dev: &Device, seed: u64, out: &mut Bundle) -> Result<serde_json::Value> {
    let name = c.name();
    let (dirs, h) = (c.dirs(), c.hidden);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let k = 1.0 / (h as f32).sqrt();
    let g = c.cell.gates() * h;
    // Parameters: one packed var per layer and direction, each part also written under PyTorch's name.
    let mut params = Vec::new();
    for l in 0..c.layers {
        let input = if l == 0 { c.input } else { dirs * h };
        let d = RnnDims { cell: c.cell, batch: c.batch, seq: c.seq, input, hidden: h };
        for dir in 0..dirs {
            let packed = rng.values(d.param_len(), k);
            let names = param_names(l, dir);
            let shapes = [vec![g, input], vec![g, h], vec![g], vec![g]];
            let mut at = 0;
            for (n, s) in names.iter().zip(&shapes) {
                let len = s.iter().product::<usize>();
                out.add(format!("{name}/{n}"), s, &packed[at..at + len]);
                at += len;
            }
            params.push((l, dir, input, Var::from_vec(packed, d.param_len(), dev)?));
        }
    }
    let x = Var::from_vec(rng.values(c.batch * c.seq * c.input, 1.0), (c.batch, c.seq, c.input), dev)?;
    let s = c.cell.state_width() * h;
    let s0 = (0..c.layers * dirs)
        .map(|_| Var::from_vec(rng.values(c.batch * s, 0.5), (c.batch, s), dev))
        .collect::<Result<Vec<_>>>()?;
    let weights = Tensor::from_vec(rng.values(c.batch * c.seq * dirs * h, 1.0), (c.batch, c.seq, dirs * h), dev)?;

    let by_layer: Vec<Vec<&Tensor>> =
        (0..c.layers).map(|l| params.iter().filter(|p| p.0 == l).map(|p| p.3.as_tensor()).collect()).collect();
    let s0_t: Vec<Tensor> = s0.iter().map(|v| v.as_tensor().clone()).collect();
    let run = run_stack(c.cell, h, x.as_tensor(), &by_layer, &s0_t)?;
    let grads = (&run.top * &weights)?.sum_all()?.backward()?;
    let grad =
        |t: &Tensor| grads.get(t).cloned().ok_or_else(|| candle_core::Error::Msg(format!("{name}: no gradient")));

    let lstm = c.cell == CellKind::Lstm;
    out.add_tensor(format!("{name}/x"), x.as_tensor())?;
    out.add_tensor(format!("{name}/h0"), &stack_states(&s0_t, h, 0)?)?;
    if lstm {
        out.add_tensor(format!("{name}/c0"), &stack_states(&s0_t, h, 1)?)?;
    }
    out.add_tensor(format!("{name}/loss_weights"), &weights)?;
    out.add_tensor(format!("{name}/arflow.out"), &run.top)?;
    out.add_tensor(format!("{name}/arflow.h_n"), &stack_states(&run.finals, h, 0)?)?;
    if lstm {
        out.add_tensor(format!("{name}/arflow.c_n"), &stack_states(&run.finals, h, 1)?)?;
    }
    out.add_tensor(format!("{name}/arflow.grad.x"), &grad(x.as_tensor())?)?;
    let ds0 = s0.iter().map(|v| grad(v.as_tensor())).collect::<Result<Vec<_>>>()?;
    out.add_tensor(format!("{name}/arflow.grad.h0"), &stack_states(&ds0, h, 0)?)?;
    if lstm {
        out.add_tensor(format!("{name}/arflow.grad.c0"), &stack_states(&ds0, h, 1)?)?;
    }
    for (l, dir, input, p) in &params {
        let dp = grad(p.as_tensor())?;
        let shapes = [(g, *input), (g, h)];
        let names = param_names(*l, *dir);
        let mut at = 0;
        for (i, n) in names.iter().enumerate() {
            let part = match shapes.get(i) {
                Some(&(rows, cols)) => dp.narrow(0, at, rows * cols)?.reshape((rows, cols))?,
                None => dp.narrow(0, at, g)?,
            };
            at += part.elem_count();
            out.add_tensor(format!("{name}/arflow.grad.{n}"), &part)?;
        }
    }
    Ok(json!({
        "name": name, "cell": c.cell.name(), "layers": c.layers, "bidirectional": c.bidirectional,
        "batch": c.batch, "seq": c.seq, "input": c.input, "hidden": h,
    }))
}

fn main() -> Result<()> {
    let (mut device, mut prefix) = ("cuda".to_string(), "rnn_export".to_string());
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => device = value(),
            "--out" => prefix = value(),
            _ => panic!("unknown flag {flag}; see the doc comment of examples/rnn_cuda_export.rs"),
        }
    }
    let dev = Dev::parse(&device)?.device()?;
    let mut bundle = Bundle::default();
    let mut meta = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        meta.push(export_case(c, &dev, 1000 + i as u64, &mut bundle)?);
        eprintln!("rnn_cuda_export: {} on {device}", c.name());
    }
    dev.synchronize()?;
    let index = json!({
        "format": "raw little-endian f32, tensors at byte offsets of PREFIX.bin",
        "device": device,
        "loss": "L = sum(loss_weights * out); arflow.grad.* are dL/d(that input or parameter)",
        "cases": meta,
        "tensors": bundle.index,
    });
    std::fs::write(format!("{prefix}.bin"), &bundle.bytes)?;
    std::fs::write(format!("{prefix}.json"), serde_json::to_string_pretty(&index).expect("json") + "\n")?;
    eprintln!(
        "rnn_cuda_export: {} cases, {} tensors, {} bytes in {prefix}.bin",
        meta.len(),
        bundle.index.len(),
        bundle.bytes.len()
    );
    Ok(())
}
