//! Pixel-RNN kernels: every parameter's gradient against f64 central differences (both cells, both
//! heads, with and without classes), masked taps exactly 0, causality (a pixel never changes the logits
//! at or before it), the sampler against the whole-image forward pass, and the training step's
//! refusal of a diverging update.

use super::head::PixelOutput;
use super::input_conv::TAPS;
use super::model::{PixelConfig, PixelModel};
use super::sample::draw_value;
use super::*;
use crate::device::Dev;
use crate::optim::AdamWConfig;
use crate::rnn::CellKind;
use candle_core::{DType, Device, Tensor, Var};

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

fn config(cell: CellKind, output: PixelOutput, classes: Option<usize>) -> PixelConfig {
    PixelConfig { cell, hidden: 3, layers: 2, rows: 4, cols: 5, output, classes }
}

fn model(cfg: PixelConfig, scale: f64) -> PixelModel {
    let mut m = PixelModel::new(cfg, Dev::Cpu).unwrap();
    for (i, s) in m.params().specs().to_vec().iter().enumerate() {
        let v: Vec<f32> = values(s.len(), 100 + i as u64, scale).iter().map(|&v| v as f32).collect();
        m.params_mut().set_param(&s.name, &v).unwrap();
    }
    m
}

/// Pixel values and their model inputs for `batch` images.
fn images(cfg: &PixelConfig, batch: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let levels = cfg.output.levels() as f64;
    let v: Vec<u8> =
        values(batch * cfg.pixels(), seed, 1.0).iter().map(|&u| ((u + 1.0) / 2.0 * levels) as u8).collect();
    let x = v.iter().map(|&p| cfg.output.input_value(p)).collect();
    (v, x)
}

fn gradients_match_finite_differences(cfg: PixelConfig) {
    let m = model(cfg, 0.5);
    let batch = 2;
    let (t, x) = images(&cfg, batch, 7);
    let labels: Option<Vec<usize>> = cfg.classes.map(|k| (0..batch).map(|b| (b * 2 + 1) % k).collect());
    let dev = Device::Cpu;
    let xt =
        Tensor::from_vec(x.iter().map(|&v| v as f64).collect::<Vec<_>>(), (batch, cfg.rows, cfg.cols), &dev).unwrap();
    let tt = Tensor::from_vec(t.iter().map(|&v| v as u32).collect::<Vec<_>>(), batch * cfg.pixels(), &dev).unwrap();
    let p: Vec<Vec<f64>> =
        m.params().vars.iter().map(|v| v.as_tensor().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()).collect();
    let loss = |p: &[Vec<f64>]| -> f64 {
        let ts: Vec<Tensor> = p.iter().map(|v| Tensor::from_slice(v, v.len(), &dev).unwrap()).collect();
        let nll = m.nll_rows(&ts, &xt, &tt, labels.as_deref()).unwrap();
        nll.sum_all().unwrap().to_scalar::<f64>().unwrap() / batch as f64
    };
    let vars: Vec<Var> = p.iter().map(|v| Var::from_slice(v, v.len(), &dev).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let l = m.nll_rows(&ts, &xt, &tt, labels.as_deref()).unwrap().sum_all().unwrap().affine(0.5, 0.0).unwrap();
    assert!((l.to_scalar::<f64>().unwrap() - loss(&p)).abs() < 1e-9);
    let grads = l.backward().unwrap();
    let eps = 1e-5;
    for spec in m.params().specs() {
        let g = grads.get(vars[spec.var].as_tensor()).expect("every variable has a gradient");
        let g = g.to_vec1::<f64>().unwrap()[spec.offset..spec.offset + spec.len()].to_vec();
        let scale = g.iter().fold(1.0f64, |a, v| a.max(v.abs()));
        for (k, &gk) in g.iter().enumerate() {
            let mut q = p.clone();
            q[spec.var][spec.offset + k] += eps;
            let up = loss(&q);
            q[spec.var][spec.offset + k] -= 2.0 * eps;
            let fd = (up - loss(&q)) / (2.0 * eps);
            assert!(
                (fd - gk).abs() <= 1e-6 * scale,
                "{:?} {}[{k}]: backward {gk}, differences {fd}",
                cfg.cell,
                spec.name
            );
        }
        // Masked taps: exactly zero.
        if spec.name == "input_conv.weight" {
            let kept: Vec<usize> = mask_a_taps().map(|(ky, kx)| ky * INPUT_KERNEL + kx).collect();
            for (k, &gk) in g.iter().enumerate() {
                if !kept.contains(&(k % 49)) {
                    assert_eq!(gk.to_bits(), 0, "{}[{k}] is masked", spec.name);
                }
            }
        }
        if spec.name.ends_with("weight_is") {
            assert!(g.iter().skip(2).step_by(3).all(|v| v.to_bits() == 0), "{}: tap j+1 is masked", spec.name);
        }
    }
}

#[test]
fn pixel_mask_a_keeps_24_taps() {
    assert_eq!(mask_a_taps().count(), TAPS);
    assert!(mask_a_taps().all(|(ky, kx)| ky < 3 || (ky == 3 && kx < 3)));
}

#[test]
fn pixel_lstm_gradients_match_finite_differences() {
    gradients_match_finite_differences(config(CellKind::Lstm, PixelOutput::Categorical, Some(3)));
    gradients_match_finite_differences(config(CellKind::Lstm, PixelOutput::Bernoulli, Some(2)));
    gradients_match_finite_differences(config(CellKind::Lstm, PixelOutput::Bernoulli, None));
}

#[test]
fn pixel_gru_gradients_match_finite_differences() {
    gradients_match_finite_differences(config(CellKind::Gru, PixelOutput::Categorical, Some(3)));
    gradients_match_finite_differences(config(CellKind::Gru, PixelOutput::Bernoulli, Some(2)));
    gradients_match_finite_differences(config(CellKind::Gru, PixelOutput::Categorical, None));
}

/// Changing pixel (i, j) leaves the logits of every position at or before it in raster order
/// bit for bit as they were, and changes some position after it.
#[test]
fn pixel_logits_never_depend_on_the_pixel_or_later_ones() {
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let cfg =
            PixelConfig { cell, hidden: 4, layers: 2, rows: 5, cols: 6, output: PixelOutput::Bernoulli, classes: None };
        let m = model(cfg, 0.8);
        let (_, x) = images(&cfg, 2, 3);
        let base = m.forward(&x, None, 2).unwrap();
        let d = cfg.pixels();
        for p in 0..d {
            let mut x2 = x.clone();
            x2[d + p] = 1.0 - x2[d + p];
            let out = m.forward(&x2, None, 2).unwrap();
            assert_eq!(out[..d], base[..d], "{cell:?}: another image changed");
            for q in 0..=p {
                assert_eq!(out[d + q].to_bits(), base[d + q].to_bits(), "{cell:?}: pixel {p} changed logit {q}");
            }
            if p + 1 < d {
                assert!((p + 1..d).any(|q| out[d + q] != base[d + q]), "{cell:?}: pixel {p} reaches nothing");
            }
        }
    }
}

/// Margin of `u` from the nearest decision boundary of the draw at these logits.
fn margin(output: PixelOutput, logits: &[f32], u: f64) -> f64 {
    if output == PixelOutput::Bernoulli {
        return (u - 1.0 / (1.0 + (-(logits[0] as f64)).exp())).abs();
    }
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let total: f64 = e.iter().sum();
    let mut acc = 0.0;
    let mut best = f64::INFINITY;
    for v in e {
        acc += v;
        best = best.min((u - acc / total).abs());
    }
    best
}

/// Every sampled pixel is the draw from the whole-image forward logits at that pixel with its uniform
/// (those logits see only the pixels drawn before it), given rows are copied, and the carried-state
/// sampler needs no row recomputation to get there. Pixels whose uniform lies within 1e-4 of a
/// decision boundary could differ by float rounding between the two paths and are not judged.
#[test]
fn pixel_sampler_draws_what_the_forward_logits_say() {
    for cell in [CellKind::Lstm, CellKind::Gru] {
        for output in [PixelOutput::Categorical, PixelOutput::Bernoulli] {
            let cfg = PixelConfig { cell, hidden: 5, layers: 2, rows: 6, cols: 7, output, classes: Some(3) };
            let m = model(cfg, 0.7);
            let n = 5;
            let u: Vec<f32> = values(n * cfg.pixels(), 11, 1.0).iter().map(|&v| ((v + 1.0) / 2.0) as f32).collect();
            let labels = [0u32, 2, 1, 1, 0];
            let (top, _) = images(&PixelConfig { rows: 2, ..cfg }, n, 5);
            let img = m.sample(n, &u, Some(&labels), 2, Some(&top)).unwrap();
            let x: Vec<f32> = img.iter().map(|&v| output.input_value(v)).collect();
            let logits = m.forward(&x, Some(&labels), n).unwrap();
            let (o, d, c) = (output.width(), cfg.pixels(), cfg.cols);
            let mut judged = 0;
            for s in 0..n {
                assert_eq!(img[s * d..s * d + 2 * c], top[s * 2 * c..(s + 1) * 2 * c], "given rows are copied");
                for p in 2 * c..d {
                    let (l, uu) = (&logits[(s * d + p) * o..(s * d + p + 1) * o], u[s * d + p] as f64);
                    if margin(output, l, uu) < 1e-4 {
                        continue;
                    }
                    judged += 1;
                    assert_eq!(img[s * d + p], draw_value(output, l, uu), "{cell:?} {output:?}: image {s} pixel {p}");
                }
            }
            assert!(judged > n * (d - 2 * c) * 9 / 10, "too few pixels judged: {judged}");
        }
    }
}

#[test]
fn pixel_train_step_lowers_the_loss_and_refuses_to_diverge() {
    let cfg = config(CellKind::Gru, PixelOutput::Categorical, Some(2));
    let mut m = model(cfg, 0.1);
    let (t, x) = images(&cfg, 3, 9);
    let labels = [0u32, 1, 1];
    let opt = AdamWConfig { lr: 1e-2, ..AdamWConfig::default() };
    let first = m.train_step(&x, &t, Some(&labels), 3, &opt).unwrap().loss;
    let mut last = first;
    for _ in 0..20 {
        last = m.train_step(&x, &t, Some(&labels), 3, &opt).unwrap().loss;
    }
    assert!(last < first - 1.0, "loss {first} → {last}");
    // A bias so large the loss overflows: an error, and nothing changes.
    let mut b = m.params().get_param("out2.bias").unwrap();
    b[0] = 3e38;
    m.params_mut().set_param("out2.bias", &b).unwrap();
    let before: Vec<Vec<f32>> = m.params().specs().iter().map(|s| m.params().get_param(&s.name).unwrap()).collect();
    let step = m.params().optim_step();
    let e = m.train_step(&x, &t, Some(&labels), 3, &opt).unwrap_err().to_string();
    assert!(e.contains("diverged"), "{e}");
    let after: Vec<Vec<f32>> = m.params().specs().iter().map(|s| m.params().get_param(&s.name).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(step, m.params().optim_step());
}

#[test]
fn pixel_bad_inputs_are_errors() {
    let cfg = config(CellKind::Lstm, PixelOutput::Bernoulli, Some(2));
    let m = model(cfg, 0.5);
    let (t, x) = images(&cfg, 2, 1);
    let l = [0u32, 1];
    let err = |r: candle_core::Result<Vec<f64>>| r.unwrap_err().to_string();
    assert!(err(m.nll(&x[1..], &t, Some(&l), 2)).contains("images hold"));
    assert!(err(m.nll(&x, &t[1..], Some(&l), 2)).contains("targets hold"));
    assert!(err(m.nll(&x, &t, None, 2)).contains("labels are required"));
    assert!(err(m.nll(&x, &t, Some(&[0, 2]), 2)).contains("out of range"));
    let mut t2 = t.clone();
    t2[3] = 2;
    assert!(err(m.nll(&x, &t2, Some(&l), 2)).contains("out of range"));
    let mut x2 = x.clone();
    x2[5] = f32::NAN;
    assert!(err(m.nll(&x2, &t, Some(&l), 2)).contains("not finite"));
    let bad = PixelConfig { cell: CellKind::Rnn, ..cfg };
    assert!(PixelModel::new(bad, Dev::Cpu).err().unwrap().to_string().contains("config"));
}
