//! The vector Real NVP flow (Dinh et al., 2016) of `src/backend/flow-types.ts`: K affine couplings with
//! alternating masks `m_i[d] = (d + i) % 2 == 0`, each conditioned by an MLP on `m_i ⊙ x`
//! (`Linear(D → H) → ReLU → [Linear(H → H) → ReLU] × (depth − 1) → Linear(H → 2D) = [s_raw | t]`),
//! over a standard normal base. Built from candle ops and the fused [`affine_coupling`] op, so candle's
//! autograd yields every gradient.
//!
//! Parameters carry PyTorch names `couplings.{i}.net.{j}.weight` `[out, in]`, `couplings.{i}.net.{j}.bias`
//! `[out]` and `couplings.{i}.scale` `[D]`; each lives in its own flat variable.

use super::op::{affine_coupling, affine_coupling_inverse};
use crate::device::Dev;
use crate::optim::AdamWConfig;
use crate::params::{check_layer_counts, NamedGrads, ParamSpec, ParamStore, StepStats};
use candle_core::{bail, DType, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealNvpConfig {
    /// Data dimension D (≥ 2).
    pub dim: usize,
    /// Number of couplings K (≥ 1).
    pub couplings: usize,
    /// Conditioner width H (≥ 1).
    pub hidden: usize,
    /// Hidden layers of the conditioner (≥ 1).
    pub depth: usize,
}

impl RealNvpConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("couplings", self.couplings), ("hidden", self.hidden), ("depth", self.depth)] {
            if v == 0 {
                bail!("real NVP config: {name} must be at least 1");
            }
        }
        if self.dim < 2 {
            bail!("real NVP config: dim must be at least 2, got {}", self.dim);
        }
        check_layer_counts("real NVP", &[("couplings", self.couplings), ("depth", self.depth)])
    }

    /// Variables per coupling: weight and bias of each of the depth + 1 linears, then the scale.
    fn per_coupling(&self) -> usize {
        2 * (self.depth + 1) + 1
    }
}

/// `ln(2π)`.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

pub struct RealNvp {
    pub cfg: RealNvpConfig,
    store: ParamStore,
}

impl RealNvp {
    /// A flow with all parameters zero (the identity map); callers load an initialisation with
    /// [`ParamStore::set_param`].
    pub fn new(cfg: RealNvpConfig, dev: Dev) -> Result<Self> {
        cfg.validate()?;
        let device = dev.device()?;
        let RealNvpConfig { dim, couplings, hidden, depth } = cfg;
        let mut specs = Vec::new();
        for i in 0..couplings {
            for j in 0..=depth {
                let input = if j == 0 { dim } else { hidden };
                let output = if j == depth { 2 * dim } else { hidden };
                let var = specs.len();
                specs.push(ParamSpec {
                    name: format!("couplings.{i}.net.{j}.weight"),
                    shape: vec![output, input],
                    var,
                    offset: 0,
                });
                specs.push(ParamSpec {
                    name: format!("couplings.{i}.net.{j}.bias"),
                    shape: vec![output],
                    var: var + 1,
                    offset: 0,
                });
            }
            let var = specs.len();
            specs.push(ParamSpec { name: format!("couplings.{i}.scale"), shape: vec![dim], var, offset: 0 });
        }
        Ok(RealNvp { cfg, store: ParamStore::new(specs, device, "real NVP")? })
    }

    /// Parameters by name and their optimizer state.
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// `[batch, D]` tensor of `data`, with its size and values checked.
    fn batch(&self, data: &[f32], batch: usize, what: &str) -> Result<Tensor> {
        let d = self.cfg.dim;
        if batch == 0 {
            bail!("{what}: batch must be at least 1");
        }
        if data.len() != batch * d {
            bail!("{what}: expected batch {batch} × dim {d} = {} values, got {}", batch * d, data.len());
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!("{what}: value {i} is not finite ({})", data[i]);
        }
        Tensor::from_slice(data, (batch, d), &self.store.device)
    }

    /// The parameter tensors (by variable) in `dtype`: the variables themselves for f32, so gradients
    /// reach them.
    fn param_tensors(&self, dtype: DType) -> Result<Vec<Tensor>> {
        self.store.vars.iter().map(|v| v.as_tensor().to_dtype(dtype)).collect()
    }

    /// Mask of coupling `i` as `[1, D]` in `dtype`.
    fn mask(&self, i: usize, dtype: DType) -> Result<Tensor> {
        let d = self.cfg.dim;
        let m: Vec<f64> = (0..d).map(|k| if (k + i).is_multiple_of(2) { 1.0 } else { 0.0 }).collect();
        Tensor::from_vec(m, (1, d), &self.store.device)?.to_dtype(dtype)
    }

    /// Coupling `i`'s `st = [s_raw | t]` `[N, 2D]` and `params = [mask; scale]` `[2, D]` for input `x`.
    fn coupling_operands(&self, p: &[Tensor], i: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let RealNvpConfig { dim, hidden, depth, .. } = self.cfg;
        let base = i * self.cfg.per_coupling();
        let mask = self.mask(i, x.dtype())?;
        let mut h = x.broadcast_mul(&mask)?;
        for j in 0..=depth {
            let input = if j == 0 { dim } else { hidden };
            let output = if j == depth { 2 * dim } else { hidden };
            let w = p[base + 2 * j].reshape((output, input))?;
            h = h.matmul(&w.t()?)?.broadcast_add(&p[base + 2 * j + 1])?;
            if j < depth {
                h = h.relu()?;
            }
        }
        let scale = p[base + 2 * (depth + 1)].reshape((1, dim))?;
        let params = Tensor::cat(&[&mask, &scale], 0)?;
        Ok((h, params))
    }

    /// `z = f(x)` and the summed log-det `[N]`, differentiable.
    fn forward(&self, p: &[Tensor], x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let mut z = x.clone();
        let mut logdet = Tensor::zeros(n, x.dtype(), &self.store.device)?;
        for i in 0..self.cfg.couplings {
            let (st, params) = self.coupling_operands(p, i, &z)?;
            let (y, ld) = affine_coupling(&z, &st, &params)?;
            z = y;
            logdet = (logdet + ld)?;
        }
        Ok((z, logdet))
    }

    /// `x = f⁻¹(z)` and the summed log-det of the inverse `[N]`.
    fn inverse(&self, p: &[Tensor], z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = z.dim(0)?;
        let mut x = z.clone();
        let mut logdet = Tensor::zeros(n, z.dtype(), &self.store.device)?;
        for i in (0..self.cfg.couplings).rev() {
            // The pass-through coordinates are unchanged by the coupling, so the conditioner sees the
            // same masked input as in the forward direction.
            let (st, params) = self.coupling_operands(p, i, &x)?;
            let (prev, ld) = affine_coupling_inverse(&x, &st, &params)?;
            x = prev;
            logdet = (logdet + ld)?;
        }
        Ok((x, logdet))
    }

    /// Per-sample `log p(x)` `[N]`.
    fn log_prob_t(&self, p: &[Tensor], x: &Tensor) -> Result<Tensor> {
        let (z, logdet) = self.forward(p, x)?;
        let base = (z.sqr()?.sum(1)? * -0.5)?;
        let c = -0.5 * self.cfg.dim as f64 * LN_2PI;
        (base + logdet)?.affine(1.0, c)
    }

    /// Mean negative log-likelihood (nats) of the batch.
    fn nll(&self, x: &Tensor) -> Result<Tensor> {
        self.log_prob_t(&self.param_tensors(DType::F32)?, x)?.mean_all()?.neg()
    }

    /// One AdamW step on the mean NLL of `x [batch, D]`, with global-norm clipping. A non-finite loss or
    /// gradient is an error and leaves every parameter and the optimizer untouched.
    pub fn train_step(&mut self, x: &[f32], batch: usize, cfg: &AdamWConfig) -> Result<StepStats> {
        crate::params::check_lr(cfg)?;
        let x = self.batch(x, batch, "train step inputs")?;
        let loss = self.nll(&x)?;
        self.store.train_step(&loss, cfg)
    }

    /// Mean NLL and its gradient for every parameter, in [`ParamStore::specs`] order; changes nothing.
    pub fn loss_and_grads(&self, x: &[f32], batch: usize) -> Result<(f64, NamedGrads)> {
        let x = self.batch(x, batch, "inputs")?;
        let loss = self.nll(&x)?;
        let grads = self.store.named_grads(&loss.backward()?)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }

    /// Per-sample `log p(x)` in nats, `[batch]`.
    pub fn log_prob(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let x = self.batch(x, batch, "log prob inputs")?;
        self.log_prob_t(&self.param_tensors(DType::F32)?, &x)?.detach().to_vec1::<f32>()
    }

    /// `z = f(x)` `[batch, D]` and the per-sample log|det ∂f/∂x| `[batch]`.
    pub fn encode(&self, x: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let x = self.batch(x, batch, "encode inputs")?;
        let (z, ld) = self.forward(&self.param_tensors(DType::F32)?, &x)?;
        Ok((z.detach().flatten_all()?.to_vec1::<f32>()?, ld.detach().to_vec1::<f32>()?))
    }

    /// `x = f⁻¹(z)` `[batch, D]` and the per-sample log|det ∂f⁻¹/∂z| `[batch]`.
    pub fn decode(&self, z: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let z = self.batch(z, batch, "decode inputs")?;
        let (x, ld) = self.inverse(&self.param_tensors(DType::F32)?, &z)?;
        Ok((x.flatten_all()?.to_vec1::<f32>()?, ld.to_vec1::<f32>()?))
    }

    /// [`RealNvp::encode`] computed in f64 from the same (f32) parameters, for precise checks.
    pub fn encode_f64(&self, x: &[f64], batch: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        let d = self.cfg.dim;
        if batch == 0 || x.len() != batch * d {
            bail!("encode inputs: expected batch {batch} × dim {d} = {} values, got {}", batch * d, x.len());
        }
        let x = Tensor::from_slice(x, (batch, d), &self.store.device)?;
        let (z, ld) = self.forward(&self.param_tensors(DType::F64)?, &x)?;
        Ok((z.detach().flatten_all()?.to_vec1::<f64>()?, ld.detach().to_vec1::<f64>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform numbers in [-1, 1) (a 64-bit LCG).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
        /// Standard normal by Box–Muller.
        fn normal(&mut self) -> f64 {
            let u1 = (self.next() + 1.0) / 2.0 + 1e-12;
            let u2 = (self.next() + 1.0) / 2.0;
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn model(cfg: RealNvpConfig, seed: u64, amp: f64) -> RealNvp {
        let mut m = RealNvp::new(cfg, Dev::Cpu).unwrap();
        let mut rng = Lcg(seed);
        for s in m.params().specs().to_vec() {
            let data: Vec<f32> = (0..s.len()).map(|_| (rng.next() * amp) as f32).collect();
            m.params_mut().set_param(&s.name, &data).unwrap();
        }
        m
    }

    fn cfg(dim: usize) -> RealNvpConfig {
        RealNvpConfig { dim, couplings: 3, hidden: 8, depth: 2 }
    }

    /// log|det| of a small square matrix by Gaussian elimination with partial pivoting.
    fn log_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
        let mut acc = 0.0;
        for c in 0..n {
            let p = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs())).unwrap();
            if p != c {
                for k in 0..n {
                    a.swap(c * n + k, p * n + k);
                }
            }
            let piv = a[c * n + c];
            acc += piv.abs().ln();
            for r in c + 1..n {
                let f = a[r * n + c] / piv;
                for k in c..n {
                    a[r * n + k] -= f * a[c * n + k];
                }
            }
        }
        acc
    }

    #[test]
    fn realnvp_names_and_shapes_follow_the_contract() {
        let m = RealNvp::new(RealNvpConfig { dim: 3, couplings: 2, hidden: 5, depth: 2 }, Dev::Cpu).unwrap();
        let got: Vec<(String, Vec<usize>)> =
            m.params().specs().iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
        let mut want = Vec::new();
        for i in 0..2 {
            want.push((format!("couplings.{i}.net.0.weight"), vec![5, 3]));
            want.push((format!("couplings.{i}.net.0.bias"), vec![5]));
            want.push((format!("couplings.{i}.net.1.weight"), vec![5, 5]));
            want.push((format!("couplings.{i}.net.1.bias"), vec![5]));
            want.push((format!("couplings.{i}.net.2.weight"), vec![6, 5]));
            want.push((format!("couplings.{i}.net.2.bias"), vec![6]));
            want.push((format!("couplings.{i}.scale"), vec![3]));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn realnvp_decode_inverts_encode() {
        for dim in [2, 3, 5] {
            let m = model(cfg(dim), 7 + dim as u64, 0.5);
            let mut rng = Lcg(99);
            let n = 16;
            let x: Vec<f32> = (0..n * dim).map(|_| (rng.next() * 2.0) as f32).collect();
            let (z, ld) = m.encode(&x, n).unwrap();
            let (x2, ld2) = m.decode(&z, n).unwrap();
            for (a, b) in x.iter().zip(&x2) {
                assert!((a - b).abs() <= 1e-4, "dim {dim}: x {a} vs decode(encode(x)) {b}");
            }
            // decode's log-det at z = f(x) is minus encode's at x.
            for (a, b) in ld.iter().zip(&ld2) {
                assert!((a + b).abs() <= 1e-4, "dim {dim}: logdet {a} vs decode logdet {b}");
            }
            // The map is not the identity (the test would pass trivially otherwise).
            assert!(x.iter().zip(&z).any(|(a, b)| (a - b).abs() > 1e-2));
            assert!(ld.iter().any(|v| v.abs() > 1e-3));
        }
    }

    /// Total log-det of `encode` equals log|det| of the Jacobian by central differences (f64 path, and
    /// the f32 path within f32 precision).
    #[test]
    fn realnvp_logdet_matches_finite_difference_jacobian() {
        for dim in [2, 4] {
            let m = model(cfg(dim), 3 + dim as u64, 0.6);
            let mut rng = Lcg(11 * dim as u64);
            for _ in 0..4 {
                let x: Vec<f64> = (0..dim).map(|_| rng.next() * 1.5).collect();
                let h = 1e-5;
                let mut jac = vec![0.0; dim * dim];
                for c in 0..dim {
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[c] += h;
                    xm[c] -= h;
                    let (zp, _) = m.encode_f64(&xp, 1).unwrap();
                    let (zm, _) = m.encode_f64(&xm, 1).unwrap();
                    for r in 0..dim {
                        jac[r * dim + c] = (zp[r] - zm[r]) / (2.0 * h);
                    }
                }
                let fd = log_abs_det(jac, dim);
                let (_, ld) = m.encode_f64(&x, 1).unwrap();
                assert!((ld[0] - fd).abs() < 1e-6, "dim {dim}: logdet {} vs finite differences {fd}", ld[0]);
                assert!(fd.abs() > 1e-3, "dim {dim}: the map should not be volume-preserving here");
                let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let (_, ld32) = m.encode(&x32, 1).unwrap();
                assert!((ld32[0] as f64 - fd).abs() < 1e-4, "dim {dim}: f32 logdet {} vs {fd}", ld32[0]);
            }
        }
    }

    #[test]
    fn realnvp_log_prob_is_base_density_plus_logdet() {
        let m = model(cfg(3), 5, 0.5);
        let x = [0.3f32, -1.2, 0.7, 1.5, 0.0, -0.4];
        let (z, ld) = m.encode(&x, 2).unwrap();
        let lp = m.log_prob(&x, 2).unwrap();
        for r in 0..2 {
            let sq: f64 = z[r * 3..r * 3 + 3].iter().map(|&v| (v as f64).powi(2)).sum();
            let want = -0.5 * sq - 1.5 * LN_2PI + ld[r] as f64;
            assert!((lp[r] as f64 - want).abs() < 1e-5, "row {r}: {} vs {want}", lp[r]);
        }
        let (loss, grads) = m.loss_and_grads(&x, 2).unwrap();
        assert!((loss + (lp[0] as f64 + lp[1] as f64) / 2.0).abs() < 1e-5);
        assert_eq!(grads.len(), m.params().specs().len());
        assert!(grads.iter().all(|(_, g)| g.iter().all(|v| v.is_finite())));
    }

    /// Gradients from candle's autograd agree with central differences of the loss.
    #[test]
    fn realnvp_grads_match_finite_differences() {
        let mut m = model(RealNvpConfig { dim: 3, couplings: 2, hidden: 4, depth: 1 }, 21, 0.5);
        let x = [0.3f32, -1.2, 0.7, 1.5, 0.1, -0.4];
        let (_, grads) = m.loss_and_grads(&x, 2).unwrap();
        for (name, g) in grads {
            let p = m.params().get_param(&name).unwrap();
            for k in [0, p.len() - 1] {
                let h = 1e-2f32;
                let mut q = p.clone();
                q[k] = p[k] + h;
                m.params_mut().set_param(&name, &q).unwrap();
                let (lp, _) = m.loss_and_grads(&x, 2).unwrap();
                q[k] = p[k] - h;
                m.params_mut().set_param(&name, &q).unwrap();
                let (lm, _) = m.loss_and_grads(&x, 2).unwrap();
                m.params_mut().set_param(&name, &p).unwrap();
                let fd = (lp - lm) / (2.0 * h as f64);
                assert!((fd - g[k] as f64).abs() < 2e-3 + 1e-2 * fd.abs(), "{name}[{k}]: grad {} vs fd {fd}", g[k]);
            }
        }
    }

    #[test]
    fn realnvp_training_learns_a_correlated_gaussian() {
        let c = RealNvpConfig { dim: 2, couplings: 4, hidden: 16, depth: 2 };
        let mut m = model(c, 42, 0.1);
        let mut rng = Lcg(1234);
        let n = 512;
        // x1 ~ N(0, 1), x2 = 0.95·x1 + 0.2·ε: strongly correlated, nearly singular.
        let data: Vec<f32> = (0..n)
            .flat_map(|_| {
                let a = rng.normal();
                let b = 0.95 * a + 0.2 * rng.normal();
                [a as f32, b as f32]
            })
            .collect();
        // NLL of the best diagonal... simpler: of the standard normal, which is what the identity map gives.
        let std_normal: f64 =
            data.chunks(2).map(|p| 0.5 * p.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()).sum::<f64>() / n as f64
                + LN_2PI;
        let opt = AdamWConfig { lr: 1e-2, weight_decay: 0.0, clip: 5.0, ..Default::default() };
        let first = m.train_step(&data, n, &opt).unwrap().loss;
        let mut last = first;
        for _ in 0..300 {
            last = m.train_step(&data, n, &opt).unwrap().loss;
        }
        assert_eq!(m.params().optim_step(), 301);
        // The true NLL: log-det of the covariance [[1, .95], [.95, .9425]] is ln(0.04).
        let true_nll = 0.5 * (0.04f64).ln() + LN_2PI + 1.0;
        assert!(
            last < std_normal - 0.5,
            "loss {last} vs standard normal {std_normal} (first {first}, true {true_nll})"
        );
        assert!(last < true_nll + 0.3, "loss {last} vs the true NLL {true_nll}");
    }

    #[test]
    fn realnvp_rejects_bad_shapes_and_values() {
        assert!(RealNvp::new(RealNvpConfig { dim: 1, couplings: 1, hidden: 1, depth: 1 }, Dev::Cpu).is_err());
        assert!(RealNvp::new(RealNvpConfig { dim: 2, couplings: 0, hidden: 1, depth: 1 }, Dev::Cpu).is_err());
        assert!(RealNvp::new(RealNvpConfig { dim: 2, couplings: 1, hidden: 0, depth: 1 }, Dev::Cpu).is_err());
        assert!(RealNvp::new(RealNvpConfig { dim: 2, couplings: 1, hidden: 1, depth: 0 }, Dev::Cpu).is_err());
        let mut m = model(cfg(2), 1, 0.3);
        let opt = AdamWConfig::default();
        assert!(m.encode(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(m.decode(&[1.0, 2.0, 3.0], 1).is_err());
        assert!(m.log_prob(&[], 0).is_err());
        assert!(m.loss_and_grads(&[1.0; 5], 2).is_err());
        assert!(m.train_step(&[1.0; 3], 1, &opt).is_err());
        let e = m.encode(&[f32::NAN, 0.0], 1).unwrap_err().to_string();
        assert!(e.contains("not finite"), "{e}");
        assert!(m.params_mut().set_param("couplings.0.scale", &[1.0]).is_err());
        assert!(m.params_mut().set_param("couplings.0.scale", &[1.0, f32::INFINITY]).is_err());
        assert!(m.params_mut().set_param("nope", &[1.0, 1.0]).is_err());
        assert!(m.params().get_optim("exp_avg_cubed", "couplings.0.scale").is_err());
        assert!(m.params_mut().set_optim("exp_avg", "couplings.0.scale", &[1.0]).is_err());
        m.params_mut().set_optim("exp_avg_sq", "couplings.0.scale", &[0.5, 0.25]).unwrap();
        assert_eq!(m.params().get_optim("exp_avg_sq", "couplings.0.scale").unwrap(), vec![0.5, 0.25]);
        let bad_lr = AdamWConfig { lr: f64::NAN, ..Default::default() };
        assert!(m.train_step(&[1.0, 2.0], 1, &bad_lr).is_err());
    }

    /// A loss that overflows is rejected as divergence and changes nothing.
    #[test]
    fn realnvp_divergence_changes_nothing() {
        let mut m = model(cfg(2), 8, 0.3);
        let before: Vec<Vec<f32>> = m.params().specs().iter().map(|s| m.params().get_param(&s.name).unwrap()).collect();
        let x = [1e30f32, -1e30];
        let e = m.train_step(&x, 1, &AdamWConfig::default()).unwrap_err().to_string();
        assert!(e.contains("diverged"), "{e}");
        let after: Vec<Vec<f32>> = m.params().specs().iter().map(|s| m.params().get_param(&s.name).unwrap()).collect();
        assert_eq!(before, after);
        assert_eq!(m.params().optim_step(), 0);
    }
}
