//! The Pixel-RNN ops on CUDA against the CPU, on a GPU: the masked input convolution (y_0, dparams), one
//! Row LSTM and one Row GRU layer (output, dy, dparams; with and without class labels), the output head
//! with its NLL (categorical and Bernoulli: NLL, dy, dparams), the refusal of f64, the whole model's loss
//! and gradients and its (host-side) sampling from a model on the device, and a short training run on the
//! device whose loss falls. Sizes: small odd images (5×7, one row, one column), 28×28, batch 1 and several.
//! Each test returns early, with a line on stderr saying why, where no CUDA device opens; they run on the
//! GPU machine by scripts/gpu-check.sh (its `cuda::` filter).
//!
//! Tolerance: f32 on both sides, summed in different orders (cuBLAS against the CPU's packed GEMMs), so
//! errors are measured against the largest magnitude of the compared values (≤ 1e-4 of it).

use super::test_support::{assert_close, flat, gpu, scaled};
use crate::pixel::head::{head_nll_op, HeadDims, PixelOutput};
use crate::pixel::input_conv::{input_conv, ConvDims};
use crate::pixel::row::{row_layer, RowDims};
use crate::pixel::{PixelConfig, PixelModel};
use crate::rnn::CellKind;
use crate::test_values::fill;
use crate::{AdamWConfig, Dev};
use candle_core::{DType, Device, Result, Tensor, Var};

/// Compares each named vector of the CUDA run with the CPU's (every CPU reference must be non-zero).
fn compare(what: &str, names: &[&str], cuda: &[Vec<f32>], cpu: &[Vec<f32>]) {
    for ((name, got), want) in names.iter().zip(cuda).zip(cpu) {
        assert!(want.iter().any(|&v| v != 0.0), "{what} {name}: the CPU reference is all zeros");
        let worst = assert_close(&format!("{what} {name}"), got, want, 1e-4);
        eprintln!("{what} {name}: worst error {worst:.2e} of scale");
    }
}

/// Image sizes (batch, rows, cols, hidden): odd, one row, one column, 28×28 at batch 1 and several.
const SIZES: [(usize, usize, usize, usize); 6] =
    [(1, 5, 7, 4), (3, 5, 7, 6), (2, 1, 9, 5), (2, 6, 1, 3), (1, 28, 28, 16), (4, 28, 28, 8)];

/// y_0 and dL/d(params) of the input convolution on `dev` under L = Σ c ⊙ y_0.
fn conv_pass(dev: &Device, d: &ConvDims) -> Result<[Vec<f32>; 2]> {
    let x = Tensor::from_vec(scaled(d.images * d.rows * d.cols, 3, 1.0), (d.images, d.rows, d.cols), dev)?;
    let p = Var::from_vec(scaled(d.param_len(), 4, 0.3), d.param_len(), dev)?;
    let c = Tensor::from_vec(
        scaled(d.images * d.rows * d.cols * d.hidden, 5, 1.0),
        (d.images, d.rows, d.cols, d.hidden),
        dev,
    )?;
    let y = input_conv(&x, &p, d.hidden)?;
    let g = (&y * &c)?.sum_all()?.backward()?;
    Ok([flat(&y)?, flat(g.get(p.as_tensor()).expect("a gradient"))?])
}

#[test]
fn pixel_input_conv_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("pixel_input_conv_matches_the_cpu") else { return Ok(()) };
    for (images, rows, cols, hidden) in SIZES {
        let d = ConvDims { images, rows, cols, hidden };
        let (cpu, cuda) = (conv_pass(&Device::Cpu, &d)?, conv_pass(&gpu, &d)?);
        compare(&format!("input conv {images}×{rows}×{cols} H{hidden}"), &["y0", "dparams"], &cuda, &cpu);
        // The masked taps' gradients are exactly 0 on the device too.
        let kept: Vec<usize> = crate::pixel::mask_a_taps().map(|(ky, kx)| ky * 7 + kx).collect();
        for (k, &g) in cuda[1][..hidden * 49].iter().enumerate() {
            if !kept.contains(&(k % 49)) {
                assert_eq!(g.to_bits(), 0, "input conv weight gradient [{k}] is masked");
            }
        }
    }
    Ok(())
}

/// Output, dL/dy and dL/d(params) of one row layer on `dev` under L = Σ c ⊙ out.
fn row_pass(dev: &Device, d: &RowDims, labels: Option<&[usize]>) -> Result<[Vec<f32>; 3]> {
    let shape = (d.batch, d.rows, d.cols, d.hidden);
    let y = Var::from_vec(scaled(d.map_len(), 11, 1.0), shape, dev)?;
    // PyTorch's initialisation scale for a 1×3 convolution over H channels, U(−1/√(3H), 1/√(3H)): a
    // recurrence over the rows that is not chaotic, so f32 rounding differences stay at rounding size.
    let k = 1.0 / ((3 * d.hidden) as f32).sqrt();
    let p = Var::from_vec(scaled(d.param_len(), 12, k), d.param_len(), dev)?;
    let c = Tensor::from_vec(scaled(d.map_len(), 13, 1.0), shape, dev)?;
    let out = row_layer(d.cell, &y, &p, d.classes, labels)?;
    let g = (&out * &c)?.sum_all()?.backward()?;
    let grad = |v: &Var| flat(g.get(v.as_tensor()).expect("a gradient"));
    Ok([flat(&out)?, grad(&y)?, grad(&p)?])
}

fn row_layer_matches_the_cpu(gpu: &Device, cell: CellKind) -> Result<()> {
    for (n, (batch, rows, cols, hidden)) in SIZES.into_iter().enumerate() {
        // Every other size with class labels (3 classes, so some class has no image at batch < 3).
        let classes = if n % 2 == 1 { 3 } else { 0 };
        let labels: Vec<usize> = (0..batch).map(|b| (2 * b + 1) % 3).collect();
        let labels = (classes > 0).then_some(&labels[..]);
        let d = RowDims { cell, batch, rows, cols, hidden, classes };
        let (cpu, cuda) = (row_pass(&Device::Cpu, &d, labels)?, row_pass(gpu, &d, labels)?);
        let what = format!("row {} {batch}×{rows}×{cols} H{hidden} K{classes}", cell.name());
        compare(&what, &["out", "dy", "dparams"], &cuda, &cpu);
        // Mask B: the input-to-state kernel's column j + 1 has gradient exactly 0.
        let w_is = d.gate_width() * hidden * 3;
        assert!(cuda[2][..w_is].iter().skip(2).step_by(3).all(|v| v.to_bits() == 0), "{what}: tap j+1 is masked");
    }
    Ok(())
}

#[test]
fn pixel_row_lstm_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("pixel_row_lstm_matches_the_cpu") else { return Ok(()) };
    row_layer_matches_the_cpu(&gpu, CellKind::Lstm)
}

#[test]
fn pixel_row_gru_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("pixel_row_gru_matches_the_cpu") else { return Ok(()) };
    row_layer_matches_the_cpu(&gpu, CellKind::Gru)
}

/// A row layer whose inputs take part in no gradient (nothing kept) gives the same output.
#[test]
fn pixel_row_without_gradients_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("pixel_row_without_gradients_matches_the_cpu") else { return Ok(()) };
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let d = RowDims { cell, batch: 3, rows: 9, cols: 11, hidden: 7, classes: 2 };
        let labels = [1, 0, 1];
        let run = |dev: &Device| -> Result<Vec<f32>> {
            let y = Tensor::from_vec(scaled(d.map_len(), 21, 1.0), (d.batch, d.rows, d.cols, d.hidden), dev)?;
            let p = Tensor::from_vec(scaled(d.param_len(), 22, 0.2), d.param_len(), dev)?;
            flat(&row_layer(cell, &y, &p, d.classes, Some(&labels))?)
        };
        compare(&format!("row {} without gradients", cell.name()), &["out"], &[run(&gpu)?], &[run(&Device::Cpu)?]);
    }
    Ok(())
}

/// NLL, dL/dy and dL/d(params) of the head on `dev` under L = Σ c ⊙ nll.
fn head_pass(dev: &Device, d: &HeadDims) -> Result<[Vec<f32>; 3]> {
    let (n, h) = (d.rows, d.hidden);
    let y = Var::from_vec(scaled(n * h, 31, 1.5), (n, h), dev)?;
    let p = Var::from_vec(scaled(d.param_len(), 32, 0.5), d.param_len(), dev)?;
    let levels = d.output.levels() as u32;
    let t: Vec<u32> = fill(n, 33).iter().map(|&u| (((u + 1.0) / 2.0 * levels as f32) as u32).min(levels - 1)).collect();
    let t = Tensor::from_vec(t, n, dev)?;
    let c = Tensor::from_vec(scaled(n, 34, 1.0), n, dev)?;
    let nll = head_nll_op(d.output, &y, &p, &t)?;
    let g = (&nll * &c)?.sum_all()?.backward()?;
    let grad = |v: &Var| flat(g.get(v.as_tensor()).expect("a gradient"));
    Ok([flat(&nll)?, grad(&y)?, grad(&p)?])
}

#[test]
fn pixel_head_nll_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("pixel_head_nll_matches_the_cpu") else { return Ok(()) };
    for output in [PixelOutput::Categorical, PixelOutput::Bernoulli] {
        for (rows, hidden) in [(1, 3), (35, 6), (784, 16), (4 * 784, 8)] {
            let d = HeadDims { rows, hidden, output };
            let (cpu, cuda) = (head_pass(&Device::Cpu, &d)?, head_pass(&gpu, &d)?);
            compare(&format!("head {} N{rows} H{hidden}", output.name()), &["nll", "dy", "dparams"], &cuda, &cpu);
        }
    }
    Ok(())
}

/// f64 has no CUDA kernels: each of the three ops says so instead of computing anything.
#[test]
fn pixel_cuda_refuses_f64() -> Result<()> {
    let Some(gpu) = gpu("pixel_cuda_refuses_f64") else { return Ok(()) };
    let d = ConvDims { images: 2, rows: 3, cols: 4, hidden: 5 };
    let x = Tensor::zeros((2, 3, 4), DType::F64, &gpu)?;
    let err = input_conv(&x, &Tensor::zeros(d.param_len(), DType::F64, &gpu)?, 5).unwrap_err().to_string();
    assert!(err.contains("f32 only") && err.contains("pixel input conv"), "{err}");
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let d = RowDims { cell, batch: 2, rows: 3, cols: 4, hidden: 5, classes: 0 };
        let y = Tensor::zeros((2, 3, 4, 5), DType::F64, &gpu)?;
        let p = Tensor::zeros(d.param_len(), DType::F64, &gpu)?;
        let err = row_layer(cell, &y, &p, 0, None).unwrap_err().to_string();
        assert!(err.contains("f32 only") && err.contains("pixel row"), "{err}");
    }
    let d = HeadDims { rows: 6, hidden: 5, output: PixelOutput::Categorical };
    let y = Tensor::zeros((6, 5), DType::F64, &gpu)?;
    let p = Tensor::zeros(d.param_len(), DType::F64, &gpu)?;
    let t = Tensor::zeros(6, DType::U32, &gpu)?;
    let err = head_nll_op(d.output, &y, &p, &t).unwrap_err().to_string();
    assert!(err.contains("f32 only") && err.contains("pixel head"), "{err}");
    Ok(())
}

/// A model on `dev` with deterministic parameters (the same on every device), PyTorch-like scales.
fn model(cfg: PixelConfig, dev: Dev) -> Result<PixelModel> {
    let mut m = PixelModel::new(cfg, dev)?;
    let k = 1.0 / ((3 * cfg.hidden) as f32).sqrt();
    for (i, s) in m.params().specs().to_vec().into_iter().enumerate() {
        let scale = if s.name.starts_with("input_conv") { 0.3 } else { k };
        m.params_mut().set_param(&s.name, &scaled(s.len(), 41 + i as u64, scale))?;
    }
    Ok(m)
}

/// Pixel values (targets) and their model inputs for `batch` images of `cfg`: smooth random blobs, so a
/// model can learn something from the pixels before each one.
fn images(cfg: &PixelConfig, batch: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let (r, c, levels) = (cfg.rows, cfg.cols, cfg.output.levels());
    let centre = scaled(3 * batch, seed, 1.0);
    let t: Vec<u8> = (0..batch * r * c)
        .map(|p| {
            let (b, i, j) = (p / (r * c), (p / c) % r, p % c);
            let (dy, dx) =
                (i as f32 / r as f32 - 0.5 - 0.3 * centre[3 * b], j as f32 / c as f32 - 0.5 - 0.3 * centre[3 * b + 1]);
            let v = (-(dy * dy + dx * dx) * (8.0 + 4.0 * centre[3 * b + 2])).exp();
            ((v * levels as f32) as usize).min(levels - 1) as u8
        })
        .collect();
    let x = t.iter().map(|&v| cfg.output.input_value(v)).collect();
    (t, x)
}

/// The whole model (input conv, two row layers, head and NLL, the mean under candle's autograd) on the
/// device against the CPU, for both cells and heads, with and without classes: the loss and every
/// parameter's gradient; then sampling from the device model (a host loop over the parameters copied off
/// the device) draws what the CPU model draws.
#[test]
fn pixel_model_loss_gradients_and_samples_match_the_cpu() -> Result<()> {
    let Some(_) = gpu("pixel_model_loss_gradients_and_samples_match_the_cpu") else { return Ok(()) };
    let runs = [
        (CellKind::Lstm, PixelOutput::Categorical, Some(3)),
        (CellKind::Gru, PixelOutput::Bernoulli, None),
        (CellKind::Gru, PixelOutput::Categorical, Some(2)),
        (CellKind::Lstm, PixelOutput::Bernoulli, None),
    ];
    for (cell, output, classes) in runs {
        let cfg = PixelConfig { cell, hidden: 12, layers: 2, rows: 9, cols: 11, output, classes };
        let (cpu, cuda) = (model(cfg, Dev::Cpu)?, model(cfg, Dev::Cuda(0))?);
        let batch = 3;
        let (t, x) = images(&cfg, batch, 51);
        let labels: Option<Vec<u32>> = classes.map(|k| (0..batch as u32).map(|b| b % k as u32).collect());
        let what = format!("model {} {} K{classes:?}", cell.name(), output.name());
        let (want_loss, want) = cpu.loss_and_grads(&x, &t, labels.as_deref(), batch)?;
        let (got_loss, got) = cuda.loss_and_grads(&x, &t, labels.as_deref(), batch)?;
        eprintln!("{what}: loss cuda {got_loss:.6}, cpu {want_loss:.6}");
        assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "{what}: loss {got_loss} vs {want_loss}");
        assert_eq!(got.len(), want.len());
        for ((name, g), (wname, w)) in got.iter().zip(&want) {
            assert_eq!(name, wname);
            compare(&what, &[name.as_str()], std::slice::from_ref(g), std::slice::from_ref(w));
        }
        let n = 2;
        let u = scaled(n * cfg.pixels(), 52, 0.5).into_iter().map(|v| v + 0.5).collect::<Vec<_>>();
        let l: Option<Vec<u32>> = classes.map(|k| (0..n as u32).map(|b| (b + 1) % k as u32).collect());
        let (a, b) = (cuda.sample(n, &u, l.as_deref(), 0, None)?, cpu.sample(n, &u, l.as_deref(), 0, None)?);
        assert_eq!(a, b, "{what}: samples from the device model differ");
    }
    Ok(())
}

/// Forty AdamW steps of a Row LSTM on a fixed batch of 16×16 images on the device: the first step's loss is
/// the CPU's, every loss is finite, and the loss falls by at least half as much as the same run's on the
/// CPU (which itself must fall).
#[test]
fn pixel_model_trains_on_cuda() -> Result<()> {
    let Some(_) = gpu("pixel_model_trains_on_cuda") else { return Ok(()) };
    let cfg = PixelConfig {
        cell: CellKind::Lstm,
        hidden: 16,
        layers: 2,
        rows: 16,
        cols: 16,
        output: PixelOutput::Categorical,
        classes: Some(2),
    };
    let batch = 8;
    let (t, x) = images(&cfg, batch, 61);
    let labels: Vec<u32> = (0..batch as u32).map(|b| b % 2).collect();
    let opt = AdamWConfig { lr: 1e-2, ..AdamWConfig::default() };
    let run = |dev: Dev| -> Result<Vec<f64>> {
        let mut m = model(cfg, dev)?;
        (0..40).map(|_| Ok(m.train_step(&x, &t, Some(&labels), batch, &opt)?.loss)).collect()
    };
    let (cuda, cpu) = (run(Dev::Cuda(0))?, run(Dev::Cpu)?);
    let tail = |l: &[f64]| l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    let (first, last, cpu_last) = (cuda[0], tail(&cuda), tail(&cpu));
    eprintln!(
        "pixel LSTM on CUDA: loss {first:.3} → {last:.3} nats/image over {} steps (CPU: {:.3} → {cpu_last:.3}; cuda {cuda:.2?})",
        cuda.len(),
        cpu[0]
    );
    assert!(cuda.iter().all(|l| l.is_finite()), "a non-finite loss: {cuda:?}");
    assert!((first - cpu[0]).abs() <= 1e-5 * cpu[0].abs(), "first loss: cuda {first}, cpu {}", cpu[0]);
    assert!(cpu[0] - cpu_last > 0.1 * cpu[0], "the CPU run itself did not learn: {cpu:?}");
    assert!(first - last >= 0.5 * (cpu[0] - cpu_last), "the loss did not fall: {first} → {last} (CPU {cpu_last})");
    Ok(())
}
