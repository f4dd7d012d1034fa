//! The GRU, LSTM and tanh-RNN kernels: backward vs f64 central differences, the fused op vs the same cell
//! written step by step with candle's generic ops (PyTorch's equations) under candle's autograd, f32 vs
//! f64 on the threaded path, and the op's shape checks.

use super::*;
use candle_core::{DType, Device, Result, Tensor, Var};

/// Deterministic values in [-scale, scale) from a 64-bit LCG.
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct Case {
    dims: RnnDims,
    x: Vec<f64>,
    s0: Vec<f64>,
    p: Vec<f64>,
    /// Weights of the scalar loss L = Σ c ⊙ out (out includes the LSTM's cell states).
    c: Vec<f64>,
}

fn case(cell: CellKind, batch: usize, seq: usize, input: usize, hidden: usize) -> Case {
    let dims = RnnDims { cell, batch, seq, input, hidden };
    Case {
        dims,
        x: values(batch * seq * input, 1, 1.0),
        s0: values(batch * dims.state_len(), 2, 0.5),
        p: values(dims.param_len(), 3, 0.6),
        c: values(batch * seq * dims.state_len(), 4, 1.0),
    }
}

fn forward(cs: &Case, x: &[f64], s0: &[f64], p: &[f64], save: Option<&mut Vec<f64>>) -> Vec<f64> {
    let mut out = vec![0.0; cs.c.len()];
    rnn_forward(&cs.dims, x, s0, &RnnWeights::unpack(&cs.dims, p), &mut out, save);
    out
}

fn loss(cs: &Case, x: &[f64], s0: &[f64], p: &[f64]) -> f64 {
    forward(cs, x, s0, p, None).iter().zip(&cs.c).map(|(o, c)| o * c).sum()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    crate::test_values::assert_close_to_scale(name, got, want, tol, 1e-3);
}

fn backward_matches_finite_differences(cell: CellKind) {
    let cs = case(cell, 2, 5, 3, 4);
    let mut saved = Vec::new();
    let out = forward(&cs, &cs.x, &cs.s0, &cs.p, Some(&mut saved));
    let g = rnn_backward(&cs.dims, &cs.x, &cs.s0, &RnnWeights::unpack(&cs.dims, &cs.p), &out, &mut saved, &cs.c);
    let eps = 1e-6;
    let numeric = |which: usize| -> Vec<f64> {
        let base = [&cs.x, &cs.s0, &cs.p][which];
        (0..base.len())
            .map(|i| {
                let mut args = [cs.x.clone(), cs.s0.clone(), cs.p.clone()];
                args[which][i] += eps;
                let up = loss(&cs, &args[0], &args[1], &args[2]);
                args[which][i] -= 2.0 * eps;
                let down = loss(&cs, &args[0], &args[1], &args[2]);
                (up - down) / (2.0 * eps)
            })
            .collect()
    };
    assert_close("dx", &g.dx, &numeric(0), 1e-7);
    assert_close("ds0", &g.dh0, &numeric(1), 1e-7);
    assert_close("dparams", &g.dparams, &numeric(2), 1e-7);
    assert!(g.dparams.iter().all(|v| v.is_finite()) && g.dparams.iter().any(|&v| v != 0.0));
}

#[test]
fn gru_backward_matches_finite_differences() {
    backward_matches_finite_differences(CellKind::Gru);
}

#[test]
fn lstm_backward_matches_finite_differences() {
    backward_matches_finite_differences(CellKind::Lstm);
}

#[test]
fn rnn_backward_matches_finite_differences() {
    backward_matches_finite_differences(CellKind::Rnn);
}

/// The layer written step by step with candle's generic ops from PyTorch's equations.
fn unfused_layer(x: &Tensor, s0: &Tensor, p: &Tensor, d: &RnnDims) -> Result<Tensor> {
    let (i, h, g) = (d.input, d.hidden, d.gate_width());
    let w_ih = p.narrow(0, 0, g * i)?.reshape((g, i))?;
    let w_hh = p.narrow(0, g * i, g * h)?.reshape((g, h))?;
    let b_ih = p.narrow(0, g * i + g * h, g)?;
    let b_hh = p.narrow(0, g * i + g * h + g, g)?;
    let sig = candle_nn::ops::sigmoid;
    let mut hp = s0.narrow(1, 0, h)?;
    let mut cp = if d.cell == CellKind::Lstm { Some(s0.narrow(1, h, h)?) } else { None };
    let mut outs = Vec::new();
    for t in 0..d.seq {
        let xt = x.narrow(1, t, 1)?.squeeze(1)?;
        let gi = xt.matmul(&w_ih.t()?)?.broadcast_add(&b_ih)?;
        let gh = hp.matmul(&w_hh.t()?)?.broadcast_add(&b_hh)?;
        let a = (&gi + &gh)?;
        match d.cell {
            CellKind::Lstm => {
                let (ig, fg) = (sig(&a.narrow(1, 0, h)?)?, sig(&a.narrow(1, h, h)?)?);
                let (gg, og) = (a.narrow(1, 2 * h, h)?.tanh()?, sig(&a.narrow(1, 3 * h, h)?)?);
                let c = ((fg * cp.as_ref().unwrap())? + (ig * gg)?)?;
                hp = (og * c.tanh()?)?;
                outs.push(Tensor::cat(&[&hp, &c], 1)?.unsqueeze(1)?);
                cp = Some(c);
            }
            CellKind::Rnn => {
                hp = a.tanh()?;
                outs.push(hp.unsqueeze(1)?);
            }
            CellKind::Gru => {
                let r = sig(&(gi.narrow(1, 0, h)? + gh.narrow(1, 0, h)?)?)?;
                let z = sig(&(gi.narrow(1, h, h)? + gh.narrow(1, h, h)?)?)?;
                // b_hn sits inside the reset product (PyTorch), so the projections stay apart here.
                let n = (gi.narrow(1, 2 * h, h)? + (&r * gh.narrow(1, 2 * h, h)?)?)?.tanh()?;
                hp = (((1.0 - &z)? * n)? + (&z * &hp)?)?;
                outs.push(hp.unsqueeze(1)?);
            }
        }
    }
    Tensor::cat(&outs, 1)
}

/// Small, and large enough that forward and backward split the batch across threads.
fn op_matches_unfused_candle_autograd(cell: CellKind) -> Result<()> {
    for (batch, seq, input, hidden) in [(3, 6, 4, 5), (32, 4, 8, 160)] {
        op_matches_unfused_at(case(cell, batch, seq, input, hidden))?;
    }
    Ok(())
}

fn op_matches_unfused_at(cs: Case) -> Result<()> {
    let d = cs.dims;
    let dev = Device::Cpu;
    let x = Var::from_vec(cs.x.clone(), (d.batch, d.seq, d.input), &dev)?;
    let s0 = Var::from_vec(cs.s0.clone(), (d.batch, d.state_len()), &dev)?;
    let p = Var::from_vec(cs.p.clone(), d.param_len(), &dev)?;
    let c = Tensor::from_vec(cs.c.clone(), (d.batch, d.seq, d.state_len()), &dev)?;
    let fused = rnn_layer(d.cell, &x, &s0, &p)?;
    let reference = unfused_layer(&x, &s0, &p, &d)?;
    let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f64>();
    assert_close("out", &v(&fused)?, &v(&reference)?, 1e-12);
    let gf = (&fused * &c)?.sum_all()?.backward()?;
    let gr = (&reference * &c)?.sum_all()?.backward()?;
    for (name, var) in [("x", &x), ("s0", &s0), ("params", &p)] {
        let a = v(gf.get(var.as_tensor()).expect("fused grad"))?;
        let b = v(gr.get(var.as_tensor()).expect("reference grad"))?;
        assert_close(name, &a, &b, 1e-12);
    }
    Ok(())
}

#[test]
fn gru_op_matches_unfused_candle_autograd() -> Result<()> {
    op_matches_unfused_candle_autograd(CellKind::Gru)
}

#[test]
fn lstm_op_matches_unfused_candle_autograd() -> Result<()> {
    op_matches_unfused_candle_autograd(CellKind::Lstm)
}

#[test]
fn rnn_op_matches_unfused_candle_autograd() -> Result<()> {
    op_matches_unfused_candle_autograd(CellKind::Rnn)
}

#[test]
fn f32_forward_and_backward_track_f64_on_the_threaded_path() {
    // Large enough that the elementwise passes and the GEMMs take their multi-threaded paths.
    for cell in CellKind::ALL {
        let cs = case(cell, 32, 7, 16, 160);
        let d = cs.dims;
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let up = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let (x, s0, p, c) = (f32s(&cs.x), f32s(&cs.s0), f32s(&cs.p), f32s(&cs.c));
        let (mut out32, mut saved32) = (vec![0f32; cs.c.len()], Vec::new());
        rnn_forward(&d, &x, &s0, &RnnWeights::unpack(&d, &p), &mut out32, Some(&mut saved32));
        let mut saved64 = Vec::new();
        let out64 = forward(&cs, &cs.x, &cs.s0, &cs.p, Some(&mut saved64));
        assert_close(&format!("{cell:?} out"), &up(&out32), &out64, 1e-4);
        let g32 = rnn_backward(&d, &x, &s0, &RnnWeights::unpack(&d, &p), &out32, &mut saved32, &c);
        let g64 = rnn_backward(&d, &cs.x, &cs.s0, &RnnWeights::unpack(&d, &cs.p), &out64, &mut saved64, &cs.c);
        assert_close(&format!("{cell:?} dx"), &up(&g32.dx), &g64.dx, 1e-4);
        assert_close(&format!("{cell:?} ds0"), &up(&g32.dh0), &g64.dh0, 1e-4);
        assert_close(&format!("{cell:?} dparams"), &up(&g32.dparams), &g64.dparams, 1e-4);
    }
}

#[test]
fn the_op_checks_the_state_width_and_parameter_count() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
    let lstm = RnnDims { cell: CellKind::Lstm, batch: 2, seq: 3, input: 4, hidden: 5 };
    let p = Tensor::zeros(lstm.param_len(), DType::F32, &dev)?;
    // An LSTM state is (h, c): 2H values a row; 5 is odd.
    let err = rnn_layer(CellKind::Lstm, &x, &Tensor::zeros((2, 5), DType::F32, &dev)?, &p).unwrap_err().to_string();
    assert!(err.contains("not a multiple of 2"), "{err}");
    let out = rnn_layer(CellKind::Lstm, &x, &Tensor::zeros((2, 10), DType::F32, &dev)?, &p)?;
    assert_eq!(out.dims(), &[2, 3, 10]);
    // GRU-sized parameters are not an LSTM's.
    let gru_p = Tensor::zeros(RnnDims::gru(2, 3, 4, 5).param_len(), DType::F32, &dev)?;
    let err =
        rnn_layer(CellKind::Lstm, &x, &Tensor::zeros((2, 10), DType::F32, &dev)?, &gru_p).unwrap_err().to_string();
    assert!(err.contains("params hold"), "{err}");
    Ok(())
}

#[test]
fn gru_rejects_mismatched_shapes() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
    let h0 = Tensor::zeros((3, 5), DType::F32, &dev)?;
    let p = Tensor::zeros(RnnDims::gru(2, 3, 4, 5).param_len(), DType::F32, &dev)?;
    let err = gru_layer(&x, &h0, &p).unwrap_err().to_string();
    assert!(err.contains("h0 has batch 3"), "{err}");
    let h0 = Tensor::zeros((2, 5), DType::F32, &dev)?;
    let short = p.narrow(0, 1, p.elem_count() - 1)?;
    let err = gru_layer(&x, &h0, &short).unwrap_err().to_string();
    assert!(err.contains("params hold"), "{err}");
    let x64 = x.to_dtype(DType::F64)?;
    assert!(gru_layer(&x64, &h0, &p).is_err());
    Ok(())
}

#[test]
fn cell_names_round_trip_and_unknown_names_are_refused() {
    for c in CellKind::ALL {
        assert_eq!(CellKind::parse(c.name()).unwrap(), c);
    }
    assert!(CellKind::parse("transformer").unwrap_err().to_string().contains("expected gru, lstm or rnn"));
}
