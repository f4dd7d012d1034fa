//! Seeded initial values of a [`super::FlowNet`]'s parameters and buffers.
//!
//! - Linear and MADE weights and biases: U(±1/√fan_in); the last linear of every conditioner: zero, so
//!   every coupling and autoregressive layer starts as the identity (up to its scale).
//! - Convolutions: `weight_v` (or `weight`) U(±1/√(Cin·9)), `weight_g` = ‖v‖ per output channel (so the
//!   effective weight is v), biases zero; `out` zero.
//! - Coupling and MADE `scale`, conditioner batch-norm weights: ones (their biases zero; running
//!   means 0 and variances 1). actnorm, batchnorm, `scale` layers: the identity.
//! - inv1x1: the LU factors of a random orthogonal matrix (Gram–Schmidt of a Gaussian one, LU with
//!   partial pivoting).

use super::spec::{LayerSpec, MaskKind, NetSpec, Norm, Plan};

/// SplitMix64 with a Box–Muller normal: small, seedable, identical on every platform.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `C × C` random orthogonal matrix, row-major.
fn random_orthogonal(c: usize, rng: &mut SplitMix) -> Vec<f64> {
    let mut q = vec![0.0; c * c];
    for i in 0..c {
        loop {
            let mut v: Vec<f64> = (0..c).map(|_| rng.normal()).collect();
            for j in 0..i {
                let dot: f64 = (0..c).map(|k| v[k] * q[j * c + k]).sum();
                for k in 0..c {
                    v[k] -= dot * q[j * c + k];
                }
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-6 {
                for k in 0..c {
                    q[i * c + k] = v[k] / norm;
                }
                break;
            }
        }
    }
    q
}

/// LU with partial pivoting of `a` (`C × C`): `(perm, L, U)` with `a = P·L·U`, `P[i][perm[i]] = 1`,
/// L unit lower triangular, U upper triangular.
pub fn lu(a: &[f64], c: usize) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let mut u = a.to_vec();
    let mut l = vec![0.0; c * c];
    // rows[i] = the row of `a` now at position i: (Pp·a)[i] = a[rows[i]], so Pp·a = L·U.
    let mut rows: Vec<usize> = (0..c).collect();
    for col in 0..c {
        let piv = (col..c).max_by(|&x, &y| u[x * c + col].abs().total_cmp(&u[y * c + col].abs())).unwrap_or(col);
        if piv != col {
            for k in 0..c {
                u.swap(col * c + k, piv * c + k);
                l.swap(col * c + k, piv * c + k);
            }
            rows.swap(col, piv);
        }
        for r in col + 1..c {
            let f = u[r * c + col] / u[col * c + col];
            l[r * c + col] = f;
            for k in col..c {
                u[r * c + k] -= f * u[col * c + k];
            }
        }
    }
    for i in 0..c {
        l[i * c + i] = 1.0;
    }
    // a = Ppᵀ·L·U, and Ppᵀ[i][j] = 1 where rows[j] = i: perm[rows[j]] = j.
    let mut perm = vec![0; c];
    for (j, &r) in rows.iter().enumerate() {
        perm[r] = j;
    }
    (perm, l, u)
}

/// Initial values of every parameter and buffer, in the plan's order.
pub fn initial_values(plan: &Plan, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = SplitMix::new(seed);
    let mut params: Vec<Vec<f32>> = Vec::with_capacity(plan.params.len());
    let mut buffers: Vec<Vec<f32>> = Vec::with_capacity(plan.buffers.len());
    for (k, layer) in plan.layers.iter().enumerate() {
        let c = layer.input[0];
        let infos =
            &plan.params[plan.param_start[k]..plan.param_start.get(k + 1).copied().unwrap_or(plan.params.len())];
        match &layer.spec {
            LayerSpec::Inv1x1 => {
                let q = random_orthogonal(c, &mut rng);
                let (perm, l, u) = lu(&q, c);
                let strict = |m: &[f64], lower: bool| -> Vec<f32> {
                    (0..c * c)
                        .map(|i| {
                            let (r, cc) = (i / c, i % c);
                            if (lower && cc < r) || (!lower && cc > r) {
                                m[i] as f32
                            } else {
                                0.0
                            }
                        })
                        .collect()
                };
                params.push(strict(&l, true));
                params.push(strict(&u, false));
                params.push((0..c).map(|i| u[i * c + i].abs().ln() as f32).collect());
                buffers.push(perm.iter().map(|&p| p as f32).collect());
                buffers.push((0..c).map(|i| if u[i * c + i] < 0.0 { -1.0 } else { 1.0 }).collect());
                continue;
            }
            LayerSpec::Actnorm => buffers.push(vec![0.0]),
            LayerSpec::Batchnorm { .. } => {
                buffers.push(vec![0.0; c]);
                buffers.push(vec![1.0; c]);
            }
            LayerSpec::Coupling { mask, net, .. } => {
                if *mask == MaskKind::Random {
                    // ⌊D/2⌋ ones at random places (a seeded Fisher–Yates shuffle).
                    let d: usize = layer.input.iter().product();
                    let mut order: Vec<usize> = (0..d).collect();
                    for i in (1..d).rev() {
                        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                    }
                    let mut m = vec![0.0f32; d];
                    for &j in &order[..d / 2] {
                        m[j] = 1.0;
                    }
                    buffers.push(m);
                }
                if let NetSpec::Resnet { channels, blocks, norm: Norm::Batch } = net {
                    for _ in 0..1 + 2 * blocks {
                        buffers.push(vec![0.0; *channels]);
                        buffers.push(vec![1.0; *channels]);
                    }
                }
            }
            _ => {}
        }
        let last_linear = match &layer.spec {
            LayerSpec::Coupling { net: NetSpec::Mlp { depth, .. }, .. } | LayerSpec::Made { depth, .. } => {
                Some(format!("net.{depth}."))
            }
            _ => None,
        };
        let mut g_pending: Option<Vec<f32>> = None;
        for info in infos {
            let n: usize = info.shape.iter().product();
            let short = info.name.split_once('.').and_then(|(_, r)| r.split_once('.')).map(|(_, r)| r).unwrap_or("");
            let fan_in: usize = info.shape.iter().skip(1).product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let v: Vec<f32> = if short == "scale" || short.ends_with(".bn.weight") {
                vec![1.0; n]
            } else if short.ends_with(".bn.bias")
                || short.starts_with("net.out.")
                || last_linear.as_deref().is_some_and(|p| short.starts_with(p))
            {
                vec![0.0; n]
            } else if short.ends_with("weight_v") || (short.starts_with("net.") && short.ends_with(".weight")) {
                let v: Vec<f32> = (0..n).map(|_| rng.range(-bound, bound) as f32).collect();
                if short.ends_with("weight_v") {
                    let per = n / info.shape[0];
                    g_pending = Some(
                        v.chunks(per)
                            .map(|r| r.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt() as f32)
                            .collect(),
                    );
                }
                v
            } else if short.ends_with("weight_g") {
                g_pending.take().unwrap_or_else(|| vec![1.0; n])
            } else if short.starts_with("net.")
                && short.ends_with(".bias")
                && !short.contains("conv")
                && !short.contains("in.")
            {
                // Linear biases (MLP and MADE); convolution biases start at zero.
                let fan = plan.params[params.len() - 1].shape[1] as f64;
                (0..n).map(|_| rng.range(-1.0 / fan.sqrt(), 1.0 / fan.sqrt()) as f32).collect()
            } else {
                vec![0.0; n]
            };
            params.push(v);
        }
    }
    (params, buffers)
}
