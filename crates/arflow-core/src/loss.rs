//! Softmax cross-entropy as one fused op: the forward pass computes the mean loss and keeps the
//! probabilities; backward is `(softmax − onehot(target)) · grad / N` in one pass. It replaces candle's
//! composed `log_softmax` + `nll` (a dozen ops and their backward over `[N, V]`).
//!
//! A target of [`IGNORE`] marks a row that is not scored (a prediction past the end of the text): it adds
//! nothing to the loss and receives no gradient, and N counts the scored rows only.
//!
//! On a CUDA device (the `cuda` feature) the same op runs the kernels of `crate::cuda::loss`, f32.

use crate::real::Real;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

enum Probs {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// On the CUDA device, f32 (`crate::cuda::loss`), with the number of scored rows.
    #[cfg(feature = "cuda")]
    Cuda {
        probs: candle_core::cuda::cudarc::driver::CudaSlice<f32>,
        scored: usize,
    },
}

/// The target of a row that is not scored.
pub const IGNORE: u32 = u32::MAX;

struct SoftmaxCrossEntropy {
    rows: usize,
    classes: usize,
    probs: Mutex<Option<Probs>>,
}

/// The targets, `None` for an [`IGNORE`]d row.
fn targets_of(s: &CpuStorage, l: &Layout, rows: usize, classes: usize) -> Result<Vec<Option<usize>>> {
    let t = match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(t), Some((a, b))) => &t[a..b],
        _ => bail!("cross-entropy: targets must be a contiguous u32 tensor"),
    };
    if t.len() != rows {
        bail!("cross-entropy: {} targets for {rows} rows of logits", t.len());
    }
    t.iter()
        .map(|&c| {
            if c == IGNORE {
                Ok(None)
            } else if (c as usize) < classes {
                Ok(Some(c as usize))
            } else {
                bail!("cross-entropy: target {c} ≥ {classes} classes")
            }
        })
        .collect()
}

/// Mean over the scored rows of `−log softmax(logits)[target]` (0 when none is); fills `probs` with
/// the softmax of the scored rows.
fn forward<T: Real>(logits: &[T], targets: &[Option<usize>], classes: usize, probs: &mut [T]) -> T {
    let mut total = 0f64;
    for ((row, p), target) in logits.chunks_exact(classes).zip(probs.chunks_exact_mut(classes)).zip(targets) {
        let Some(target) = *target else { continue };
        p.copy_from_slice(row);
        total += softmax_nll_in_place(p, target);
    }
    T::of(total / scored(targets).max(1) as f64)
}

/// One row: the logits become their softmax, in place; returns `−log softmax(logits)[target]`.
pub(crate) fn softmax_nll_in_place<T: Real>(row: &mut [T], target: usize) -> f64 {
    let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    let at_target = row[target];
    let mut sum = T::zero();
    for p in row.iter_mut() {
        *p = (*p - max).exp();
        sum = sum + *p;
    }
    let inv = T::one() / sum;
    for p in row.iter_mut() {
        *p = *p * inv;
    }
    // −log softmax = log Σ exp(v − max) − (v_target − max)
    (sum.ln() - (at_target - max)).to_f64().unwrap_or(f64::NAN)
}

/// One row: its softmax becomes `(p − onehot(target)) · scale`, in place; zero for an unscored row.
pub(crate) fn ce_grad_in_place<T: Real>(row: &mut [T], target: Option<usize>, scale: T) {
    match target {
        Some(c) => {
            for p in row.iter_mut() {
                *p = *p * scale;
            }
            row[c] = row[c] - scale;
        }
        None => row.fill(T::zero()),
    }
}

fn scored(targets: &[Option<usize>]) -> usize {
    targets.iter().filter(|t| t.is_some()).count()
}

impl CustomOp2 for SoftmaxCrossEntropy {
    fn name(&self) -> &'static str {
        "arflow-softmax-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let targets = targets_of(s2, l2, self.rows, self.classes)?;
        let Some((a, b)) = l1.contiguous_offsets() else { bail!("cross-entropy: logits must be contiguous") };
        let n = self.rows * self.classes;
        let (out, probs) = match s1 {
            CpuStorage::F32(x) => {
                let mut p = vec![0f32; n];
                let loss = forward(&x[a..b], &targets, self.classes, &mut p);
                (CpuStorage::F32(vec![loss]), Probs::F32(p))
            }
            CpuStorage::F64(x) => {
                let mut p = vec![0f64; n];
                let loss = forward(&x[a..b], &targets, self.classes, &mut p);
                (CpuStorage::F64(vec![loss]), Probs::F64(p))
            }
            _ => bail!("cross-entropy: logits must be f32 or f64"),
        };
        *self.probs.lock().expect("cross-entropy state poisoned") = Some(probs);
        Ok((out, Shape::from(())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        // The targets are checked on the host, with the CPU's messages.
        let host = crate::cuda::loss::targets_to_host(s2, l2)?;
        let layout = Layout::contiguous(host.len());
        let targets = targets_of(&CpuStorage::U32(host), &layout, self.rows, self.classes)?;
        let scored = scored(&targets);
        let (out, probs) = crate::cuda::loss::forward((s1, l1), (s2, l2), (self.rows, self.classes), scored)?;
        *self.probs.lock().expect("cross-entropy state poisoned") = Some(Probs::Cuda { probs, scored });
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if let Some(Probs::Cuda { probs, scored }) = self.probs.lock().expect("cross-entropy state poisoned").as_ref() {
            return Ok((Some(crate::cuda::loss::backward(probs, *scored, logits, targets, grad)?), None));
        }
        let t = targets.to_vec1::<u32>()?;
        let n = t.iter().filter(|&&c| c != IGNORE).count();
        let scale = grad.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / n.max(1) as f64;
        let probs = self.probs.lock().expect("cross-entropy state poisoned");
        let d = match probs.as_ref() {
            Some(Probs::F32(p)) => {
                Tensor::from_vec(grad_of(p, &t, self.classes, scale), logits.shape(), logits.device())?
            }
            Some(Probs::F64(p)) => {
                Tensor::from_vec(grad_of(p, &t, self.classes, scale), logits.shape(), logits.device())?
            }
            #[cfg(feature = "cuda")]
            Some(Probs::Cuda { .. }) => unreachable!("handled above"),
            None => bail!("cross-entropy: backward without a forward pass"),
        };
        Ok((Some(d), None))
    }
}

/// `(p − onehot(target)) · scale`, row by row; zero for an [`IGNORE`]d row.
fn grad_of<T: Real>(probs: &[T], targets: &[u32], classes: usize, scale: f64) -> Vec<T> {
    let mut d = probs.to_vec();
    for (row, &c) in d.chunks_exact_mut(classes).zip(targets) {
        ce_grad_in_place(row, (c != IGNORE).then_some(c as usize), T::of(scale));
    }
    d
}

/// Mean softmax cross-entropy of `logits [N, V]` against `targets [N]` (u32) over the rows whose target
/// is not [`IGNORE`], differentiable in `logits`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if targets.dims() != [rows] {
        bail!("cross-entropy: targets have shape {:?}, expected [{rows}]", targets.dims());
    }
    let op = SoftmaxCrossEntropy { rows, classes, probs: Mutex::new(None) };
    logits.contiguous()?.apply_op2(&targets.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_cross_entropy_matches_candle_composition() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (7, 5);
        let vals: Vec<f64> = (0..n * v).map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.4).collect();
        let x = Var::from_vec(vals, (n, v), &dev)?;
        let t = Tensor::from_vec((0..n as u32).map(|i| (i * 3) % v as u32).collect::<Vec<_>>(), n, &dev)?;
        let fused = cross_entropy(&x, &t)?;
        let composed = candle_nn::loss::cross_entropy(&x, &t)?;
        let (a, b) = (fused.to_scalar::<f64>()?, composed.to_scalar::<f64>()?);
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        let ga = fused.backward()?.get(x.as_tensor()).expect("grad").flatten_all()?.to_vec1::<f64>()?;
        let gb = composed.backward()?.get(x.as_tensor()).expect("grad").flatten_all()?.to_vec1::<f64>()?;
        for (i, (p, q)) in ga.iter().zip(&gb).enumerate() {
            assert!((p - q).abs() < 1e-12, "grad {i}: {p} vs {q}");
        }
        // A scaled upstream gradient scales the result.
        let gs = (fused * 3.0)?.backward()?.get(x.as_tensor()).expect("grad").flatten_all()?.to_vec1::<f64>()?;
        assert!((gs[0] - 3.0 * ga[0]).abs() < 1e-12);
        Ok(())
    }

    /// Ignored rows change neither the loss nor any other row's gradient: the result equals the loss of
    /// the scored rows alone, and the ignored rows' gradient is exactly zero.
    #[test]
    fn ignored_rows_are_not_scored() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (6, 4);
        let vals: Vec<f64> = (0..n * v).map(|i| ((i * 29 % 17) as f64 - 8.0) * 0.3).collect();
        let targets = [2u32, IGNORE, 0, 3, IGNORE, 1];
        let x = Var::from_vec(vals.clone(), (n, v), &dev)?;
        let loss = cross_entropy(&x, &Tensor::from_slice(&targets, n, &dev)?)?;
        let g = loss.backward()?.get(x.as_tensor()).expect("grad").to_vec2::<f64>()?;
        let keep = [0usize, 2, 3, 5];
        let sub: Vec<f64> = keep.iter().flat_map(|&r| vals[r * v..(r + 1) * v].to_vec()).collect();
        let xs = Var::from_vec(sub, (keep.len(), v), &dev)?;
        let ts: Vec<u32> = keep.iter().map(|&r| targets[r]).collect();
        let want = cross_entropy(&xs, &Tensor::from_slice(&ts, keep.len(), &dev)?)?;
        let gw = want.backward()?.get(xs.as_tensor()).expect("grad").to_vec2::<f64>()?;
        assert!((loss.to_scalar::<f64>()? - want.to_scalar::<f64>()?).abs() < 1e-12);
        for (i, &r) in keep.iter().enumerate() {
            for c in 0..v {
                assert!((g[r][c] - gw[i][c]).abs() < 1e-12, "row {r} col {c}");
            }
        }
        assert!(g[1].iter().chain(&g[4]).all(|&d| d == 0.0));
        // Nothing scored: zero loss, zero gradient.
        let all = cross_entropy(&x, &Tensor::from_slice(&[IGNORE; 6], n, &dev)?)?;
        assert_eq!(all.to_scalar::<f64>()?, 0.0);
        Ok(())
    }

    #[test]
    fn cross_entropy_rejects_out_of_range_targets() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?;
        let t = Tensor::from_vec(vec![0u32, 3], 2, &dev)?;
        let err = cross_entropy(&x, &t).unwrap_err().to_string();
        assert!(err.contains("target 3"), "{err}");
        Ok(())
    }
}
