use super::gru::{gru_backward, gru_forward};
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
    h0: Vec<f64>,
    p: Vec<f64>,
    /// Weights of the scalar loss L = Σ c ⊙ out.
    c: Vec<f64>,
}

fn case(batch: usize, seq: usize, input: usize, hidden: usize) -> Case {
    let dims = RnnDims::gru(batch, seq, input, hidden);
    Case {
        dims,
        x: values(batch * seq * input, 1, 1.0),
        h0: values(batch * hidden, 2, 0.5),
        p: values(dims.param_len(), 3, 0.6),
        c: values(batch * seq * hidden, 4, 1.0),
    }
}

fn loss(cs: &Case, x: &[f64], h0: &[f64], p: &[f64]) -> f64 {
    let mut out = vec![0.0; cs.c.len()];
    gru_forward(&cs.dims, x, h0, &RnnWeights::unpack(&cs.dims, p), &mut out, None);
    out.iter().zip(&cs.c).map(|(o, c)| o * c).sum()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{name}[{i}]: got {g}, want {w} (scale {scale})");
    }
}

#[test]
fn gru_backward_matches_finite_differences() {
    let cs = case(2, 5, 3, 4);
    let w = RnnWeights::unpack(&cs.dims, &cs.p);
    let mut out = vec![0.0; cs.c.len()];
    let mut saved = Vec::new();
    gru_forward(&cs.dims, &cs.x, &cs.h0, &w, &mut out, Some(&mut saved));
    let g = gru_backward(&cs.dims, &cs.x, &cs.h0, &w, &out, &saved, &cs.c);
    let eps = 1e-6;
    let numeric = |which: usize| -> Vec<f64> {
        let base = [&cs.x, &cs.h0, &cs.p][which];
        (0..base.len())
            .map(|i| {
                let mut args = [cs.x.clone(), cs.h0.clone(), cs.p.clone()];
                args[which][i] += eps;
                let up = loss(&cs, &args[0], &args[1], &args[2]);
                args[which][i] -= 2.0 * eps;
                let down = loss(&cs, &args[0], &args[1], &args[2]);
                (up - down) / (2.0 * eps)
            })
            .collect()
    };
    assert_close("dx", &g.dx, &numeric(0), 1e-7);
    assert_close("dh0", &g.dh0, &numeric(1), 1e-7);
    assert_close("dparams", &g.dparams, &numeric(2), 1e-7);
}

/// The same layer written step by step with candle's generic ops, differentiated by candle's autograd.
fn unfused_layer(x: &Tensor, h0: &Tensor, p: &Tensor, dims: &RnnDims) -> Result<Tensor> {
    let (i, h) = (dims.input, dims.hidden);
    let g = 3 * h;
    let w_ih = p.narrow(0, 0, g * i)?.reshape((g, i))?;
    let w_hh = p.narrow(0, g * i, g * h)?.reshape((g, h))?;
    let b_ih = p.narrow(0, g * i + g * h, g)?;
    let b_hh = p.narrow(0, g * i + g * h + g, g)?;
    let mut hprev = h0.clone();
    let mut outs = Vec::new();
    for t in 0..dims.seq {
        let xt = x.narrow(1, t, 1)?.squeeze(1)?;
        let gi = xt.matmul(&w_ih.t()?)?.broadcast_add(&b_ih)?;
        let gh = hprev.matmul(&w_hh.t()?)?.broadcast_add(&b_hh)?;
        let r = candle_nn::ops::sigmoid(&(gi.narrow(1, 0, h)? + gh.narrow(1, 0, h)?)?)?;
        let z = candle_nn::ops::sigmoid(&(gi.narrow(1, h, h)? + gh.narrow(1, h, h)?)?)?;
        let n = (gi.narrow(1, 2 * h, h)? + (&r * gh.narrow(1, 2 * h, h)?)?)?.tanh()?;
        hprev = (((1.0 - &z)? * n)? + (&z * &hprev)?)?;
        outs.push(hprev.unsqueeze(1)?);
    }
    Tensor::cat(&outs, 1)
}

#[test]
fn gru_op_matches_unfused_candle_autograd() -> Result<()> {
    let cs = case(3, 6, 4, 5);
    let d = cs.dims;
    let dev = Device::Cpu;
    let x = Var::from_vec(cs.x.clone(), (d.batch, d.seq, d.input), &dev)?;
    let h0 = Var::from_vec(cs.h0.clone(), (d.batch, d.hidden), &dev)?;
    let p = Var::from_vec(cs.p.clone(), d.param_len(), &dev)?;
    let c = Tensor::from_vec(cs.c.clone(), (d.batch, d.seq, d.hidden), &dev)?;
    let fused = gru_layer(&x, &h0, &p)?;
    let reference = unfused_layer(&x, &h0, &p, &d)?;
    let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f64>();
    assert_close("out", &v(&fused)?, &v(&reference)?, 1e-12);
    let gf = (&fused * &c)?.sum_all()?.backward()?;
    let gr = (&reference * &c)?.sum_all()?.backward()?;
    for (name, var) in [("x", &x), ("h0", &h0), ("params", &p)] {
        let a = v(gf.get(var.as_tensor()).expect("fused grad"))?;
        let b = v(gr.get(var.as_tensor()).expect("reference grad"))?;
        assert_close(name, &a, &b, 1e-12);
    }
    Ok(())
}

#[test]
fn gru_f32_forward_tracks_f64() -> Result<()> {
    // Large enough that the elementwise pass and the GEMMs take their multi-threaded paths.
    let cs = case(32, 7, 16, 160);
    let d = cs.dims;
    let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (x, h0, p) = (f32s(&cs.x), f32s(&cs.h0), f32s(&cs.p));
    let mut out32 = vec![0f32; cs.c.len()];
    gru_forward(&d, &x, &h0, &RnnWeights::unpack(&d, &p), &mut out32, None);
    let mut out64 = vec![0f64; cs.c.len()];
    gru_forward(&d, &cs.x, &cs.h0, &RnnWeights::unpack(&d, &cs.p), &mut out64, None);
    let got: Vec<f64> = out32.iter().map(|&a| a as f64).collect();
    assert_close("out", &got, &out64, 1e-4);
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
