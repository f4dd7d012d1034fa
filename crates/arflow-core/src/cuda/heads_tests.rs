//! The likelihood heads on CUDA against the CPU, on a GPU: the head op's per-row NLL and ∂L/∂raw, and the
//! fused linear head's NLL and ∂L/∂h, ∂L/∂params, under L = Σ c ⊙ NLL (random non-zero c, so the upstream
//! gradient's scaling is checked too), for the Gaussian (D = 1, 3) and the MDN (K = 1, 3, 5 and 40 — more
//! components than a warp's lanes — with D = 1 and D = 2), over 1, 7 and 3000 rows; the forward pass that
//! keeps no gradient; and that f64 is refused. Each test returns early, with a line on stderr saying
//! why, where no CUDA device opens.
//!
//! Tolerance: ≤ 1e-4 of the largest magnitude of the CPU's values (both sides f32 storage and f64
//! arithmetic; the fused op's GEMMs sum in different orders on the two devices).

use super::test_support::{flat, gpu};
use crate::heads::{head_nll, linear_head_nll, Head};
use crate::test_values::{assert_close_to_scale, fill};
use candle_core::{DType, Device, Result, Tensor, Var};

/// Heads the tests run: every parameterisation and both kernel shapes (one lane per component, several).
const HEADS: [Head; 9] = [
    Head::Gaussian { dim: 1 },
    Head::Gaussian { dim: 3 },
    Head::Mdn { dim: 1, components: 1 },
    Head::Mdn { dim: 1, components: 5 },
    Head::Mdn { dim: 2, components: 1 },
    Head::Mdn { dim: 2, components: 3 },
    Head::Mdn { dim: 2, components: 5 },
    Head::Mdn { dim: 1, components: 40 },
    Head::Mdn { dim: 2, components: 40 },
];

const ROWS: [usize; 3] = [1, 7, 3000];

/// `len` values in [−scale, scale), none zero.
fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    fill(len, seed).into_iter().map(|v| (if v == 0.0 { 0.25 } else { v }) * scale).collect()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert!(want.iter().any(|&v| v != 0.0), "{what}: the CPU reference is all zeros");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: CUDA gave a value that is not finite");
    assert_close_to_scale(what, got, want, 1e-4, 1e-6);
}

/// `[NLL, ∂L/∂raw]` of the head op on `dev`, L = Σ c ⊙ NLL.
fn head_pass(dev: &Device, head: Head, rows: usize, seed: u64) -> Result<[Vec<f32>; 2]> {
    let raw = Var::from_vec(values(rows * head.output_size(), seed, 1.5), (rows, head.output_size()), dev)?;
    let y = Tensor::from_vec(values(rows * head.dim(), seed + 1, 1.5), (rows, head.dim()), dev)?;
    let c = Tensor::from_vec(values(rows, seed + 2, 1.0), rows, dev)?;
    let nll = head_nll(head, raw.as_tensor(), &y)?;
    let g = (&nll * &c)?.sum_all()?.backward()?;
    Ok([flat(&nll)?, flat(g.get(raw.as_tensor()).expect("a gradient"))?])
}

#[test]
fn head_nll_and_gradient_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("head_nll_and_gradient_match_the_cpu") else { return Ok(()) };
    for head in HEADS {
        for rows in ROWS {
            let cpu = head_pass(&Device::Cpu, head, rows, 11)?;
            let cuda = head_pass(&gpu, head, rows, 11)?;
            for (k, name) in ["nll", "draw"].iter().enumerate() {
                close(&format!("{head:?} rows {rows} {name}"), &cuda[k], &cpu[k]);
            }
        }
    }
    Ok(())
}

/// `[NLL, ∂L/∂h, ∂L/∂params]` of the fused linear head on `dev`, L = Σ c ⊙ NLL.
fn linear_pass(dev: &Device, head: Head, rows: usize, hidden: usize, seed: u64) -> Result<[Vec<f32>; 3]> {
    let out = head.output_size();
    let h = Var::from_vec(values(rows * hidden, seed, 1.0), (rows, hidden), dev)?;
    // PyTorch's initialisation, U(−1/√H, 1/√H): raw outputs of order 1.
    let p = Var::from_vec(values(out * hidden + out, seed + 1, 1.0 / (hidden as f32).sqrt()), out * hidden + out, dev)?;
    let y = Tensor::from_vec(values(rows * head.dim(), seed + 2, 1.5), (rows, head.dim()), dev)?;
    let c = Tensor::from_vec(values(rows, seed + 3, 1.0), rows, dev)?;
    let nll = linear_head_nll(head, h.as_tensor(), p.as_tensor(), &y)?;
    let g = (&nll * &c)?.sum_all()?.backward()?;
    let grad = |v: &Var| flat(g.get(v.as_tensor()).expect("a gradient"));
    Ok([flat(&nll)?, grad(&h)?, grad(&p)?])
}

#[test]
fn linear_head_nll_and_gradients_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("linear_head_nll_and_gradients_match_the_cpu") else { return Ok(()) };
    for head in HEADS {
        for rows in ROWS {
            for hidden in [1, 37] {
                let cpu = linear_pass(&Device::Cpu, head, rows, hidden, 5)?;
                let cuda = linear_pass(&gpu, head, rows, hidden, 5)?;
                for (k, name) in ["nll", "dh", "dparams"].iter().enumerate() {
                    close(&format!("{head:?} rows {rows} H {hidden} {name}"), &cuda[k], &cpu[k]);
                }
            }
        }
    }
    Ok(())
}

/// The forward passes that keep nothing (no input takes part in a gradient) give the same NLL.
#[test]
fn heads_without_gradients_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu("heads_without_gradients_match_the_cpu") else { return Ok(()) };
    let (rows, hidden) = (300, 16);
    for head in HEADS {
        let out = head.output_size();
        let nll = |dev: &Device| -> Result<[Vec<f32>; 2]> {
            let raw = Tensor::from_vec(values(rows * out, 3, 1.5), (rows, out), dev)?;
            let y = Tensor::from_vec(values(rows * head.dim(), 4, 1.5), (rows, head.dim()), dev)?;
            let h = Tensor::from_vec(values(rows * hidden, 5, 1.0), (rows, hidden), dev)?;
            let p = Tensor::from_vec(values(out * hidden + out, 6, 0.25), out * hidden + out, dev)?;
            Ok([flat(&head_nll(head, &raw, &y)?)?, flat(&linear_head_nll(head, &h, &p, &y)?)?])
        };
        let (cpu, cuda) = (nll(&Device::Cpu)?, nll(&gpu)?);
        close(&format!("{head:?} nll, no gradient"), &cuda[0], &cpu[0]);
        close(&format!("{head:?} linear nll, no gradient"), &cuda[1], &cpu[1]);
    }
    Ok(())
}

#[test]
fn heads_refuse_f64_on_cuda() -> Result<()> {
    let Some(gpu) = gpu("heads_refuse_f64_on_cuda") else { return Ok(()) };
    for head in [Head::Gaussian { dim: 2 }, Head::Mdn { dim: 2, components: 3 }] {
        let out = head.output_size();
        let raw = Tensor::zeros((4, out), DType::F64, &gpu)?;
        let y = Tensor::zeros((4, 2), DType::F64, &gpu)?;
        let e = head_nll(head, &raw, &y).unwrap_err().to_string();
        assert!(e.contains("f32 only"), "{head:?}: {e}");
        let h = Tensor::zeros((4, 5), DType::F64, &gpu)?;
        let p = Tensor::zeros(out * 5 + out, DType::F64, &gpu)?;
        let e = linear_head_nll(head, &h, &p, &y).unwrap_err().to_string();
        assert!(e.contains("f32 only"), "{head:?}: {e}");
    }
    Ok(())
}
