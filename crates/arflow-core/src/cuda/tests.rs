//! CUDA against the CPU, on a GPU: each recurrent layer's (GRU, LSTM, tanh RNN) forward and every
//! gradient, the fused cross-entropy's loss and gradient, the affine coupling's forward, inverse and
//! gradients, the 3×3 convolution's forward and gradients (over one im2col chunk and many), the AdamW
//! update and the global gradient norm, the whole char LM's loss and gradients, a short char-LM
//! training run on the device whose loss falls, a small image flow's (Real NVP-like: couplings with
//! ResNet conditioners, actnorm, squeeze, split) loss, gradients, encoding and decoding, and a short
//! flow training run on the device whose loss falls. Each test returns early, with a line on
//! stderr saying why, where no CUDA device opens (CI, the build machine): they are compiled everywhere
//! the `cuda` feature is, run on the GPU machine by scripts/gpu-check.sh.
//!
//! Tolerance: f32 on both sides, summed in different orders (cuBLAS against the CPU's packed GEMMs), so
//! errors are measured against the largest magnitude of the compared values (≤ 1e-4 of it).

use super::test_support::{assert_close, flat, gpu, scaled};
use crate::cuda::conv::{backward_chunked, forward_chunked, Dims};
use crate::flow::conv::{conv3x3_nhwc, conv3x3_nhwc_relu};
use crate::flow::{affine_coupling, affine_coupling_inverse};
use crate::loss::{cross_entropy, IGNORE};
use crate::optim::AdamW;
use crate::rnn::{gru_layer, rnn_layer, CellKind, RnnDims};
use crate::{AdamWConfig, CharLm, CharLmConfig, Dev, FlowNet};
use candle_core::{DType, Device, Result, Tensor, Var};

/// Output and gradients (x, initial state, params) of one layer of `d.cell` on `dev` under L = Σ c ⊙ out
/// (for the LSTM, c weighs both the h and the c half of each output row).
fn layer_pass(dev: &Device, d: &RnnDims, seeds: u64) -> Result<[Vec<f32>; 4]> {
    let s = d.state_len();
    let x = Var::from_vec(scaled(d.batch * d.seq * d.input, seeds, 1.0), (d.batch, d.seq, d.input), dev)?;
    let s0 = Var::from_vec(scaled(d.batch * s, seeds + 1, 0.5), (d.batch, s), dev)?;
    // PyTorch's initialisation, U(−1/√H, 1/√H): a recurrence that is not chaotic, so f32 rounding
    // differences between the devices stay at rounding size over the sequence.
    let k = 1.0 / (d.hidden as f32).sqrt();
    let p = Var::from_vec(scaled(d.param_len(), seeds + 2, k), d.param_len(), dev)?;
    let c = Tensor::from_vec(scaled(d.batch * d.seq * s, seeds + 3, 1.0), (d.batch, d.seq, s), dev)?;
    let out = rnn_layer(d.cell, &x, &s0, &p)?;
    let g = (&out * &c)?.sum_all()?.backward()?;
    let grad = |v: &Var| flat(g.get(v.as_tensor()).expect("a gradient"));
    Ok([flat(&out)?, grad(&x)?, grad(&s0)?, grad(&p)?])
}

/// Sizes: odd ones (every index path), one step, one batch row, and sizes like a char LM's.
const LAYER_SIZES: [(usize, usize, usize, usize); 5] =
    [(3, 7, 5, 9), (1, 1, 3, 4), (1, 12, 6, 33), (16, 33, 64, 128), (8, 64, 96, 256)];

/// Every output and gradient of a layer of `cell` at [`LAYER_SIZES`], CUDA against the CPU.
fn layer_matches_the_cpu(gpu: &Device, cell: CellKind) -> Result<()> {
    for (batch, seq, input, hidden) in LAYER_SIZES {
        let d = RnnDims { cell, batch, seq, input, hidden };
        let cpu = layer_pass(&Device::Cpu, &d, 7)?;
        let cuda = layer_pass(gpu, &d, 7)?;
        for (k, name) in ["out", "dx", "ds0", "dparams"].iter().enumerate() {
            assert!(cpu[k].iter().any(|&v| v != 0.0), "{name}: the CPU reference is all zeros");
            let what = format!("{} B{batch} T{seq} I{input} H{hidden} {name}", cell.name());
            let worst = assert_close(&what, &cuda[k], &cpu[k], 1e-4);
            eprintln!("{what}: worst error {worst:.2e} of scale");
        }
    }
    Ok(())
}

#[test]
fn gru_layer_forward_and_gradients_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("gru_layer_forward_and_gradients_match_the_cpu") else { return Ok(()) };
    layer_matches_the_cpu(&gpu, CellKind::Gru)
}

#[test]
fn lstm_layer_forward_and_gradients_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("lstm_layer_forward_and_gradients_match_the_cpu") else { return Ok(()) };
    layer_matches_the_cpu(&gpu, CellKind::Lstm)
}

#[test]
fn rnn_tanh_layer_forward_and_gradients_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("rnn_tanh_layer_forward_and_gradients_match_the_cpu") else { return Ok(()) };
    layer_matches_the_cpu(&gpu, CellKind::Rnn)
}

/// The forward pass that keeps nothing (no input takes part in a gradient) gives the same states, for
/// every cell.
#[test]
fn rnn_layers_without_gradients_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("rnn_layers_without_gradients_match_the_cpu") else { return Ok(()) };
    for cell in CellKind::ALL {
        let d = RnnDims { cell, batch: 5, seq: 17, input: 11, hidden: 40 };
        let run = |dev: &Device| -> Result<Vec<f32>> {
            let x = Tensor::from_vec(scaled(d.batch * d.seq * d.input, 3, 1.0), (d.batch, d.seq, d.input), dev)?;
            let s0 = Tensor::from_vec(scaled(d.batch * d.state_len(), 4, 0.5), (d.batch, d.state_len()), dev)?;
            let p = Tensor::from_vec(scaled(d.param_len(), 5, 1.0 / (d.hidden as f32).sqrt()), d.param_len(), dev)?;
            flat(&rnn_layer(cell, &x, &s0, &p)?)
        };
        assert_close(&format!("{} out (no gradients)", cell.name()), &run(&gpu)?, &run(&Device::Cpu)?, 1e-4);
    }
    Ok(())
}

/// f64 has no CUDA kernels: every cell, the coupling and the convolution say so instead of computing
/// anything.
#[test]
fn cuda_refuses_f64() -> Result<()> {
    let Some(gpu) = gpu("cuda_refuses_f64") else { return Ok(()) };
    for cell in CellKind::ALL {
        let d = RnnDims { cell, batch: 2, seq: 3, input: 4, hidden: 5 };
        let x = Tensor::zeros((2, 3, 4), DType::F64, &gpu)?;
        let s0 = Tensor::zeros((2, d.state_len()), DType::F64, &gpu)?;
        let p = Tensor::zeros(d.param_len(), DType::F64, &gpu)?;
        let err = rnn_layer(cell, &x, &s0, &p).unwrap_err().to_string();
        assert!(err.contains("f32 only") && err.contains(cell.name()), "{err}");
    }
    let d = RnnDims::gru(2, 3, 4, 5);
    let x = Tensor::zeros((2, 3, 4), DType::F64, &gpu)?;
    let h0 = Tensor::zeros((2, 5), DType::F64, &gpu)?;
    let p = Tensor::zeros(d.param_len(), DType::F64, &gpu)?;
    let err = gru_layer(&x, &h0, &p).unwrap_err().to_string();
    assert!(err.contains("f32 only"), "{err}");
    let x = Tensor::zeros((3, 4), DType::F64, &gpu)?;
    let err = affine_coupling(&x, &Tensor::zeros((3, 8), DType::F64, &gpu)?, &Tensor::zeros((2, 4), DType::F64, &gpu)?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32 only"), "{err}");
    let x = Tensor::zeros((1, 3, 4, 2), DType::F64, &gpu)?;
    let (weight, bias) = (Tensor::zeros((5, 2, 3, 3), DType::F64, &gpu)?, Tensor::zeros(5, DType::F64, &gpu)?);
    let err = conv3x3_nhwc(&x, &weight, &bias).unwrap_err().to_string();
    assert!(err.contains("f32 only") && err.contains("conv3x3"), "{err}");
    Ok(())
}

/// Loss and dL/d(logits) of `3 · cross_entropy` on `dev`.
fn ce_pass(dev: &Device, rows: usize, classes: usize, targets: &[u32]) -> Result<(f32, Vec<f32>)> {
    let x = Var::from_vec(scaled(rows * classes, 21, 4.0), (rows, classes), dev)?;
    let loss = cross_entropy(&x, &Tensor::from_slice(targets, rows, dev)?)?;
    let g = (&loss * 3.0)?.backward()?;
    Ok((loss.to_scalar::<f32>()?, flat(g.get(x.as_tensor()).expect("a gradient"))?))
}

#[test]
fn cross_entropy_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("cross_entropy_matches_the_cpu") else { return Ok(()) };
    // Fewer classes than a block's threads (a char LM's vocabulary), more, and more than two blocks' worth.
    for (rows, classes) in [(37, 83), (5, 300), (300, 1000), (1, 2)] {
        let targets: Vec<u32> =
            (0..rows).map(|i| if i % 7 == 3 { IGNORE } else { ((i * 31 + 5) % classes) as u32 }).collect();
        let (lc, gc) = ce_pass(&Device::Cpu, rows, classes, &targets)?;
        let (lg, gg) = ce_pass(&gpu, rows, classes, &targets)?;
        assert!((lc - lg).abs() <= 1e-5 * lc.abs().max(1.0), "{rows}×{classes}: loss cuda {lg}, cpu {lc}");
        assert_close(&format!("{rows}×{classes} dlogits"), &gg, &gc, 1e-4);
        for (r, &t) in targets.iter().enumerate() {
            if t == IGNORE {
                assert!(gg[r * classes..(r + 1) * classes].iter().all(|&v| v == 0.0), "ignored row {r} has a gradient");
            }
        }
    }
    // Nothing scored: zero loss and zero gradient; a target past the classes is an error, as on the CPU.
    let (l, g) = ce_pass(&gpu, 4, 6, &[IGNORE; 4])?;
    assert!(l == 0.0 && g.iter().all(|&v| v == 0.0));
    let x = Tensor::zeros((2, 3), DType::F32, &gpu)?;
    let err = cross_entropy(&x, &Tensor::from_slice(&[0u32, 3], 2, &gpu)?).unwrap_err().to_string();
    assert!(err.contains("target 3"), "{err}");
    Ok(())
}

/// `(y, logdet, x from the inverse of the same map, dx, dst, dparams)` of the affine coupling on `dev`
/// under L = Σ c ⊙ y + Σ e ⊙ logdet, the mask alternating from `first` and the scale random.
fn coupling_pass(dev: &Device, n: usize, d: usize, first: usize) -> Result<[Vec<f32>; 6]> {
    let mask: Vec<f32> = (0..d).map(|j| ((j + first) % 2) as f32).collect();
    let params = [mask, scaled(d, 45, 1.5)].concat();
    let x = Var::from_vec(scaled(n * d, 41, 2.0), (n, d), dev)?;
    let st = Var::from_vec(scaled(n * 2 * d, 42, 1.5), (n, 2 * d), dev)?;
    let params = Var::from_vec(params, (2, d), dev)?;
    let c = Tensor::from_vec(scaled(n * d, 43, 1.0), (n, d), dev)?;
    let e = Tensor::from_vec(scaled(n, 44, 1.0), n, dev)?;
    let (y, logdet) = affine_coupling(&x, &st, &params)?;
    let (x_inv, _) = affine_coupling_inverse(&x, &st, &params)?;
    let g = ((&y * &c)?.sum_all()? + (&logdet * &e)?.sum_all()?)?.backward()?;
    let grad = |v: &Var| flat(g.get(v.as_tensor()).expect("a gradient"));
    Ok([flat(&y)?, flat(&logdet)?, flat(&x_inv)?, grad(&x)?, grad(&st)?, grad(&params)?])
}

/// Forward, inverse and every gradient of the affine coupling, CUDA against the CPU: one column, fewer
/// columns than a warp, a block's worth and more (several column blocks), a Glow layer's row, and many
/// rows (many chunks of backward's dscale reduction). Then the reductions are deterministic (two runs
/// agree bit for bit), and a mask that is not 0/1 is refused as on the CPU.
#[test]
fn affine_coupling_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("affine_coupling_matches_the_cpu") else { return Ok(()) };
    let names = ["y", "logdet", "inverse x", "dx", "dst", "dparams"];
    for (n, d, first) in [(7, 1, 0), (3, 5, 1), (80, 64, 0), (33, 300, 1), (16, 3072, 0), (5000, 6, 1)] {
        let cpu = coupling_pass(&Device::Cpu, n, d, first)?;
        let cuda = coupling_pass(&gpu, n, d, first)?;
        for (k, name) in names.iter().enumerate() {
            let what = format!("coupling N{n} D{d} {name}");
            let worst = assert_close(&what, &cuda[k], &cpu[k], 1e-4);
            eprintln!("{what}: worst error {worst:.2e} of scale");
        }
    }
    let (a, b) = (coupling_pass(&gpu, 5000, 6, 1)?, coupling_pass(&gpu, 5000, 6, 1)?);
    for (k, name) in names.iter().enumerate() {
        assert!(a[k].iter().zip(&b[k]).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: two runs differ");
    }
    let bad = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 1.0, 1.0, 1.0], (2, 3), &gpu)?;
    let x = Tensor::zeros((2, 3), DType::F32, &gpu)?;
    let err = affine_coupling(&x, &Tensor::zeros((2, 6), DType::F32, &gpu)?, &bad).unwrap_err().to_string();
    assert!(err.contains("mask entries must be 0 or 1"), "{err}");
    Ok(())
}

/// The inputs of a 3×3 convolution of `dims`: x, the weight `[Cout, Cin, 3, 3]` (scaled as PyTorch's
/// initialisation), the bias, and the weights c of L = Σ c ⊙ y (dL/dy = c). Random, no exact zeros.
fn conv_inputs(d: &Dims) -> [Vec<f32>; 4] {
    let Dims { n, h, w, cin, cout, .. } = *d;
    let k = 1.0 / ((9 * cin) as f32).sqrt();
    [
        scaled(n * h * w * cin, 71, 1.0),
        scaled(cout * cin * 9, 72, k),
        scaled(cout, 73, 0.5),
        scaled(n * h * w * cout, 74, 1.0),
    ]
}

/// `(y, dx, dweight, dbias)` of the convolution (`relu_in`: of relu(x)) on `dev` under L = Σ c ⊙ y, by
/// the public op and candle's autograd.
fn conv_pass(dev: &Device, d: &Dims, inputs: &[Vec<f32>; 4]) -> Result<[Vec<f32>; 4]> {
    let Dims { n, h, w, cin, cout, relu_in } = *d;
    let x = Var::from_vec(inputs[0].clone(), (n, h, w, cin), dev)?;
    let weight = Var::from_vec(inputs[1].clone(), (cout, cin, 3, 3), dev)?;
    let bias = Var::from_vec(inputs[2].clone(), cout, dev)?;
    let c = Tensor::from_vec(inputs[3].clone(), (n, h, w, cout), dev)?;
    let conv = if relu_in { conv3x3_nhwc_relu } else { conv3x3_nhwc };
    let y = conv(&x, &weight, &bias)?;
    let g = (&y * &c)?.sum_all()?.backward()?;
    let grad = |v: &Var| flat(g.get(v.as_tensor()).expect("a gradient"));
    Ok([flat(&y)?, grad(&x)?, grad(&weight)?, grad(&bias)?])
}

/// The op's weight matrix `[9·Cin + 1, Cout]` from a weight `[Cout, Cin, 3, 3]` and a bias `[Cout]` (as
/// flow::conv builds it; also the layout of its gradient from dweight and dbias).
fn conv_wmat(weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (cout, cin, _, _) = weight.dims4()?;
    let wmat = weight.permute((2, 3, 1, 0))?.reshape((9 * cin, cout))?;
    Tensor::cat(&[&wmat, &bias.reshape((1, cout))?], 0)?.contiguous()
}

/// Forward, dx, dweight and dbias (that is dwmat) of the 3×3 convolution, CUDA against the CPU, with and
/// without the fused input ReLU: odd sizes (image borders on every side, rows of a chunk straddling
/// images), one input channel, one and two output channels, 1×1 images, and a Glow conditioner's
/// 28×28 batch of 64 with 40 channels in, out or both (each of those takes two im2col chunks of the
/// default size in backward, with 40 in also in forward). Then two runs of the largest agree bit for bit.
#[test]
fn conv3x3_matches_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("conv3x3_matches_the_cpu") else { return Ok(()) };
    let names = ["y", "dx", "dweight", "dbias"];
    let sizes = [
        (2, 5, 7, 3, 4),
        (3, 4, 6, 1, 2),
        (1, 1, 1, 2, 3),
        (2, 3, 5, 5, 1),
        (4, 9, 11, 17, 33),
        (64, 28, 28, 1, 40),
        (64, 28, 28, 40, 2),
        (64, 28, 28, 40, 40),
    ];
    for (n, h, w, cin, cout) in sizes {
        for relu_in in [false, true] {
            let d = Dims { n, h, w, cin, cout, relu_in };
            let inputs = conv_inputs(&d);
            let cpu = conv_pass(&Device::Cpu, &d, &inputs)?;
            let cuda = conv_pass(&gpu, &d, &inputs)?;
            for (k, name) in names.iter().enumerate() {
                assert!(cpu[k].iter().any(|&v| v != 0.0), "{name}: the CPU reference is all zeros");
                let what = format!("conv3x3 {n}×{h}×{w}×{cin}→{cout} relu {relu_in} {name}");
                let worst = assert_close(&what, &cuda[k], &cpu[k], 1e-4);
                eprintln!("{what}: worst error {worst:.2e} of scale");
            }
        }
    }
    let d = Dims { n: 64, h: 28, w: 28, cin: 40, cout: 40, relu_in: true };
    assert!(d.n * d.h * d.w * (9 * d.cin + 1) > crate::cuda::conv::CHUNK_VALUES, "one chunk only");
    let inputs = conv_inputs(&d);
    let (a, b) = (conv_pass(&gpu, &d, &inputs)?, conv_pass(&gpu, &d, &inputs)?);
    for (k, name) in names.iter().enumerate() {
        assert!(a[k].iter().zip(&b[k]).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: two runs differ");
    }
    Ok(())
}

/// The CUDA op's passes over many small im2col chunks (the last one short, chunks straddling images, one
/// row per chunk) against the CPU's y, dx and dwmat: the chunks' rows land in place and the weight
/// gradient accumulates over them.
#[test]
fn conv3x3_chunks_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("conv3x3_chunks_match_the_cpu") else { return Ok(()) };
    for (n, h, w, cin, cout) in [(3, 5, 7, 3, 4), (2, 6, 5, 2, 9)] {
        for relu_in in [false, true] {
            let d = Dims { n, h, w, cin, cout, relu_in };
            let inputs = conv_inputs(&d);
            let [y_cpu, dx_cpu, dweight, dbias] = conv_pass(&Device::Cpu, &d, &inputs)?;
            let dw_cpu = flat(&conv_wmat(
                &Tensor::from_vec(dweight, (cout, cin, 3, 3), &Device::Cpu)?,
                &Tensor::from_vec(dbias, cout, &Device::Cpu)?,
            )?)?;
            let x = Tensor::from_vec(inputs[0].clone(), (n, h, w, cin), &gpu)?;
            let wmat = conv_wmat(
                &Tensor::from_vec(inputs[1].clone(), (cout, cin, 3, 3), &gpu)?,
                &Tensor::from_vec(inputs[2].clone(), cout, &gpu)?,
            )?;
            let g = Tensor::from_vec(inputs[3].clone(), (n, h, w, cout), &gpu)?;
            let width = (9 * cin + 1).max(9 * cout);
            // 8 rows a chunk (dividing neither an image's pixels nor the stack's: chunks straddle images
            // and the last is short), then one row a chunk.
            for rows in [8, 1] {
                assert!(rows == 1 || ((h * w) % rows != 0 && (n * h * w) % rows != 0));
                let what = format!("conv3x3 {n}×{h}×{w}×{cin}→{cout} relu {relu_in}, {rows} rows a chunk");
                let y = flat(&forward_chunked(&d, &x, &wmat, rows * (9 * cin + 1))?)?;
                let (dx, dw) = backward_chunked(&d, &x, &wmat, &g, rows * width)?;
                assert_close(&format!("{what} y"), &y, &y_cpu, 1e-4);
                assert_close(&format!("{what} dx"), &flat(&dx)?, &dx_cpu, 1e-4);
                assert_close(&format!("{what} dwmat"), &flat(&dw)?, &dw_cpu, 1e-4);
            }
        }
    }
    Ok(())
}

/// What [`adamw_run`] ends with: every step's global gradient norm, then each var's parameters and
/// both moments.
type AdamWRun = (Vec<f64>, Vec<[Vec<f32>; 3]>);

/// `steps` AdamW updates (with clipping) of vars of `sizes` on `dev`, the last var never getting a
/// gradient.
fn adamw_run(dev: &Device, sizes: &[usize], cfg: &AdamWConfig, steps: usize) -> Result<AdamWRun> {
    let vars = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Var::from_vec(scaled(n, 51 + i as u64, 1.0), n, dev))
        .collect::<Result<Vec<_>>>()?;
    let mut opt = AdamW::new(&vars)?;
    let mut norms = Vec::new();
    for step in 0..steps {
        // loss = Σ c ⊙ p² over every var but the last, a different c each step.
        let mut loss = Tensor::zeros((), DType::F32, dev)?;
        for (i, v) in vars[..vars.len() - 1].iter().enumerate() {
            let c = Tensor::from_vec(scaled(v.elem_count(), 61 + (step * 7 + i) as u64, 3.0), v.elem_count(), dev)?;
            loss = (loss + (v.as_tensor().sqr()? * c)?.sum_all()?)?;
        }
        let grads = AdamW::grads_of(&vars, &loss.backward()?);
        assert!(grads.last().is_some_and(|g| g.is_none()), "the last var must get no gradient");
        let norm = AdamW::grad_norm(&grads)?;
        let scale = if cfg.clip > 0.0 && norm > cfg.clip { cfg.clip / (norm + 1e-6) } else { 1.0 };
        opt.update(&vars, &grads, cfg, scale)?;
        norms.push(norm);
    }
    let state = (0..vars.len())
        .map(|i| Ok([flat(vars[i].as_tensor())?, flat(&opt.exp_avg[i])?, flat(&opt.exp_avg_sq[i])?]))
        .collect::<Result<Vec<_>>>()?;
    Ok((norms, state))
}

/// The fused CUDA AdamW (f32) against the CPU's fused host update (f64 arithmetic): the gradient norms
/// and, after several clipped steps with weight decay, every parameter and moment. Sizes: small, one
/// past the norm's largest grid (each thread strides), and a var without a gradient (left as it is).
#[test]
fn adamw_update_and_grad_norm_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("adamw_update_and_grad_norm_match_the_cpu") else { return Ok(()) };
    let sizes = [37, 1024 * 256 + 1001, 5, 9];
    let cfg = AdamWConfig { lr: 0.01, weight_decay: 0.1, clip: 5.0, ..AdamWConfig::default() };
    let (cpu_norms, cpu) = adamw_run(&Device::Cpu, &sizes, &cfg, 6)?;
    let (cuda_norms, cuda) = adamw_run(&gpu, &sizes, &cfg, 6)?;
    assert!(cpu_norms.iter().any(|&n| n > cfg.clip), "no step was clipped: {cpu_norms:?}");
    for (step, (g, w)) in cuda_norms.iter().zip(&cpu_norms).enumerate() {
        assert!((g - w).abs() <= 1e-4 * w, "step {step}: grad norm cuda {g}, cpu {w}");
    }
    for (i, (g, w)) in cuda.iter().zip(&cpu).enumerate() {
        for (k, name) in ["param", "exp_avg", "exp_avg_sq"].iter().enumerate() {
            let what = format!("adamw var {i} (len {}) {name}", sizes[i]);
            let worst = assert_close(&what, &g[k], &w[k], 1e-4);
            eprintln!("{what}: worst error {worst:.2e} of scale");
        }
    }
    Ok(())
}

const TEXT: &str = "call me ishmael. some years ago, never mind how long precisely, having little or no money in \
                    my purse, and nothing particular to interest me on shore, i thought i would sail about a little \
                    and see the watery part of the world. ";

/// The text as ids over its own sorted alphabet, and the alphabet's size.
fn corpus() -> (Vec<u32>, usize) {
    let mut alphabet: Vec<char> = TEXT.chars().collect();
    alphabet.sort_unstable();
    alphabet.dedup();
    let ids = TEXT.chars().map(|c| alphabet.iter().position(|&a| a == c).expect("in the alphabet") as u32).collect();
    (ids, alphabet.len())
}

/// A char LM on `dev` with deterministic parameters (the same on every device).
fn model(cfg: CharLmConfig, dev: Dev) -> Result<CharLm> {
    let mut m = CharLm::new(cfg, dev)?;
    for (i, s) in m.params().specs().to_vec().into_iter().enumerate() {
        let scale = if s.name == "embedding.weight" { 1.0 } else { 0.3 };
        m.params_mut().set_param(&s.name, &scaled(s.len(), 31 + i as u64, scale))?;
    }
    Ok(m)
}

/// `batch` streams of `seq` ids from `offset` in the text, and the next character of each as targets.
fn batch_at(ids: &[u32], offset: usize, batch: usize, seq: usize) -> (Vec<u32>, Vec<u32>) {
    let n = ids.len();
    let at = |b: usize, t: usize| ids[(offset + b * (n / batch) + t) % n];
    let x = (0..batch).flat_map(|b| (0..seq).map(move |t| (b, t))).map(|(b, t)| at(b, t)).collect();
    let y = (0..batch).flat_map(|b| (0..seq).map(move |t| (b, t))).map(|(b, t)| at(b, t + 1)).collect();
    (x, y)
}

/// The whole model's loss and gradients through the CUDA ops (embedding, recurrent stack, heads,
/// cross-entropy under candle's autograd) against the CPU's hand-written pass, for every cell, with a
/// learned h0, two layers and a head predicting two ahead (so some targets are unscored), from zeros and
/// from a given state.
#[test]
fn char_lm_loss_and_gradients_match_the_cpu() -> Result<()> {
    let Some(_) = gpu("char_lm_loss_and_gradients_match_the_cpu") else { return Ok(()) };
    let (ids, vocab) = corpus();
    let runs = [
        (CellKind::Gru, 1, false, 1),
        (CellKind::Gru, 2, true, 2),
        (CellKind::Lstm, 2, true, 1),
        (CellKind::Rnn, 1, false, 2),
    ];
    for (cell, layers, learned_h0, ahead) in runs {
        let cfg = CharLmConfig { vocab, embed: 16, hidden: 48, layers, cell, learned_h0, ahead };
        let (cpu, cuda) = (model(cfg, Dev::Cpu)?, model(cfg, Dev::Cuda(0))?);
        let (batch, seq) = (4, 25);
        let (x, y) = batch_at(&ids, 3, batch, seq);
        let mut targets = y.clone();
        for k in 2..=ahead {
            let (_, yk) = batch_at(&ids, 3 + k - 1, batch, seq);
            targets.extend(yk.iter().enumerate().map(|(i, &t)| if i % seq > seq - k { IGNORE } else { t }));
        }
        let state = scaled(layers * batch * cfg.state_len(), 9, 0.5);
        for given in [None, Some(&state[..])] {
            let what = format!("{} L{layers} h0={learned_h0} ahead {ahead} state={}", cell.name(), given.is_some());
            let want = cpu.loss_and_grads(&x, &targets, batch, seq, given)?;
            let got = cuda.loss_and_grads(&x, &targets, batch, seq, given)?;
            assert!(
                (got.loss - want.loss).abs() <= 1e-5 * want.loss.abs(),
                "{what}: loss {} vs {}",
                got.loss,
                want.loss
            );
            for ((name, g), (wname, w)) in got.grads.iter().zip(&want.grads) {
                assert_eq!(name, wname);
                assert_close(&format!("{what} {name}"), g, w, 1e-4);
            }
            assert_close(&format!("{what} dh0"), &got.dh0, &want.dh0, 1e-4);
        }
    }
    Ok(())
}

/// Sixty AdamW steps of truncated BPTT on the device: the first step's loss is the CPU's, the loss then
/// falls far below where it started (on the CPU this run ends under 1% of it), and the carried state
/// stays on the model.
#[test]
fn char_lm_trains_on_cuda() -> Result<()> {
    let Some(_) = gpu("char_lm_trains_on_cuda") else { return Ok(()) };
    let (ids, vocab) = corpus();
    let cfg =
        CharLmConfig { vocab, embed: 16, hidden: 64, layers: 2, cell: CellKind::Gru, learned_h0: false, ahead: 1 };
    let mut m = model(cfg, Dev::Cuda(0))?;
    let opt = AdamWConfig { lr: 1e-2, ..AdamWConfig::default() };
    let (batch, seq) = (8, 32);
    let mut losses = Vec::new();
    for step in 0..60 {
        let (x, y) = batch_at(&ids, step * seq, batch, seq);
        losses.push(m.train_step(&x, &y, batch, seq, &opt)?.loss);
    }
    let first = losses[0];
    let last = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!("char LM on CUDA: loss {first:.4} → {last:.4} over {} steps ({losses:.3?})", losses.len());
    let (x, y) = batch_at(&ids, 0, batch, seq);
    let cpu_first = model(cfg, Dev::Cpu)?.train_step(&x, &y, batch, seq, &opt)?.loss;
    assert!((first - cpu_first).abs() <= 1e-5 * cpu_first, "first loss: cuda {first}, cpu {cpu_first}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < 0.25 * first, "the loss did not fall: {first} → {last}");
    assert_eq!(m.carry().map(|(b, s)| (b, s.len())), Some((batch, cfg.layers * batch * cfg.hidden)));
    Ok(())
}

/// A small multi-scale Real NVP over 1×8×8 images (the bench preset's layer kinds at a test's size):
/// checkerboard and channel affine couplings with weight-normalised ResNet conditioners, actnorm after
/// each coupling, squeeze, split.
const FLOW_SPEC: &str = r#"{"shape": [1, 8, 8], "context": 0, "base": "normal", "layers": [
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 16, "blocks": 1, "norm": "weight"}},
  {"type": "actnorm"},
  {"type": "coupling", "mask": "checkerboard", "parity": 1, "affine": true, "net": {"type": "resnet", "channels": 16, "blocks": 1, "norm": "weight"}},
  {"type": "actnorm"}, {"type": "squeeze"},
  {"type": "coupling", "mask": "channel", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 16, "blocks": 1, "norm": "weight"}},
  {"type": "actnorm"},
  {"type": "coupling", "mask": "channel", "parity": 1, "affine": true, "net": {"type": "resnet", "channels": 16, "blocks": 1, "norm": "weight"}},
  {"type": "actnorm"}, {"type": "split"},
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 16, "blocks": 2, "norm": "weight"}},
  {"type": "actnorm"},
  {"type": "coupling", "mask": "checkerboard", "parity": 1, "affine": true, "net": {"type": "resnet", "channels": 16, "blocks": 1, "norm": "weight"}}
]}"#;

/// The flow of [`FLOW_SPEC`] on `dev` with every parameter random (the same on every device; weight-norm
/// gains near 1.5, the rest small, output convolutions not zero, so no layer is the identity) and every
/// actnorm marked initialised.
fn random_flow(dev: Dev) -> Result<FlowNet> {
    let mut net = FlowNet::new(FLOW_SPEC, 5, dev)?;
    for (i, s) in net.params().specs().to_vec().into_iter().enumerate() {
        let amp = if s.name.contains(".out.") { 0.05 } else { 0.3 };
        let v = scaled(s.len(), 81 + i as u64, amp);
        let v = if s.name.ends_with("weight_g") { v.into_iter().map(|g| g + 1.5).collect() } else { v };
        net.params_mut().set_param(&s.name, &v)?;
    }
    for b in net.buffer_info().to_vec() {
        if b.name.ends_with(".initialized") {
            net.set_buffer(&b.name, &[1.0])?;
        }
    }
    Ok(net)
}

/// A fixed batch of `batch` 8×8 images in the flow's (logit) space: per image a random tilted plane
/// plus a little noise, so neighbouring pixels are strongly correlated and a flow can learn them.
fn flow_batch(batch: usize) -> Vec<f32> {
    let (tilt, noise) = (scaled(3 * batch, 91, 1.0), scaled(batch * 64, 92, 0.1));
    (0..batch * 64)
        .map(|i| {
            let (b, y, x) = (i / 64, (i / 8) % 8, i % 8);
            let (gx, gy) = ((x as f32 - 3.5) / 3.5, (y as f32 - 3.5) / 3.5);
            2.0 * (tilt[3 * b] * gx + tilt[3 * b + 1] * gy) + tilt[3 * b + 2] + noise[i]
        })
        .collect()
}

/// One training pass of the flow (mean NLL and the gradient of every parameter) through the CUDA ops
/// (the 3×3 convolution per conv of each ResNet conditioner, the affine coupling, candle's ops) against
/// the CPU (where the CPU has AVX-512, each conditioner is one fused op over the direct convolution
/// kernels: a different code path), ≤ 1e-4 of the largest value of each gradient. Then the encoding
/// (z and log-det, evaluation statistics) matches and the CUDA decoding inverts it.
#[test]
fn flow_loss_and_gradients_match_the_cpu() -> Result<()> {
    let Some(_) = gpu("flow_loss_and_gradients_match_the_cpu") else { return Ok(()) };
    let (cpu, cuda) = (random_flow(Dev::Cpu)?, random_flow(Dev::Cuda(0))?);
    let batch = 8;
    let x = flow_batch(batch);
    let path = if crate::flow::conv_direct::available() { "fused ResNet op (AVX-512 or AVX2)" } else { "per-conv ops" };
    let (want_loss, want) = cpu.loss_and_grads(&x, None, batch)?;
    let (got_loss, got) = cuda.loss_and_grads(&x, None, batch)?;
    eprintln!("flow loss: cuda {got_loss:.6}, cpu {want_loss:.6} (the CPU ran the {path})");
    assert!(
        (got_loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
        "flow loss: cuda {got_loss}, cpu {want_loss}"
    );
    assert_eq!(got.len(), want.len());
    let mut worst = (0f64, String::new());
    for ((name, g), (wname, w)) in got.iter().zip(&want) {
        assert_eq!(name, wname);
        assert!(w.iter().any(|&v| v != 0.0), "{name}: the CPU gradient is all zeros");
        let e = assert_close(&format!("flow grad {name}"), g, w, 1e-4);
        if e >= worst.0 {
            worst = (e, name.clone());
        }
    }
    eprintln!("flow gradients ({} tensors): worst error {:.2e} of scale ({})", got.len(), worst.0, worst.1);
    let (z_cpu, ld_cpu) = cpu.encode(&x, None, batch)?;
    let (z, ld) = cuda.encode(&x, None, batch)?;
    let worst_z = assert_close("flow encode z", &z, &z_cpu, 1e-4);
    let worst_ld = assert_close("flow encode logdet", &ld, &ld_cpu, 1e-4);
    let (x_back, _) = cuda.decode(&z, None, batch)?;
    let worst_inv = assert_close("flow decode(encode(x))", &x_back, &x, 1e-4);
    eprintln!(
        "flow encode z: worst error {worst_z:.2e} of scale, logdet {worst_ld:.2e}; decode on CUDA: {worst_inv:.2e}"
    );
    Ok(())
}

/// Thirty AdamW steps of the flow on a fixed batch on the device, from the seeded initialisation
/// (zero output convolutions, actnorm's data-dependent initialisation in the first step): the first
/// step's loss is the CPU's, and the loss falls by at least half as much as the same run's on the CPU.
#[test]
fn flow_trains_on_cuda() -> Result<()> {
    let Some(_) = gpu("flow_trains_on_cuda") else { return Ok(()) };
    let batch = 16;
    let x = flow_batch(batch);
    let cfg = AdamWConfig { lr: 3e-3, ..AdamWConfig::default() };
    let run = |dev: Dev| -> Result<Vec<f64>> {
        let mut net = FlowNet::new(FLOW_SPEC, 3, dev)?;
        (0..30).map(|_| Ok(net.train_step(&x, None, batch, &cfg)?.loss)).collect()
    };
    let (cuda, cpu) = (run(Dev::Cuda(0))?, run(Dev::Cpu)?);
    let tail = |l: &[f64]| l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    let (first, last, cpu_last) = (cuda[0], tail(&cuda), tail(&cpu));
    eprintln!(
        "flow on CUDA: loss {first:.4} → {last:.4} over {} steps (CPU: {:.4} → {cpu_last:.4}; cuda {cuda:.3?})",
        cuda.len(),
        cpu[0]
    );
    assert!(cuda.iter().all(|l| l.is_finite()), "a non-finite loss: {cuda:?}");
    assert!((first - cpu[0]).abs() <= 1e-4 * cpu[0].abs().max(1.0), "first loss: cuda {first}, cpu {}", cpu[0]);
    assert!(cpu[0] - cpu_last > 1.0, "the CPU run itself did not learn: {cpu:?}");
    assert!(first - last >= 0.5 * (cpu[0] - cpu_last), "the loss did not fall: {first} → {last} (CPU {cpu_last})");
    Ok(())
}
