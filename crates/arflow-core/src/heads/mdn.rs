//! Mixture density head (Graves 2013, "Generating Sequences With Recurrent Neural Networks", eqs.
//! 18–26), K components. Per row the raw outputs are `[π logits (K), μ (K·D), s (K·D), ρ raw (K, D = 2
//! only)]`, component-major (`μ[k·D + d]`):
//!
//! π = softmax(logits) (eq. 19), σ = exp(s) (eq. 21), ρ = RHO_SCALE · tanh(raw) (eq. 22),
//! NLL = −log Σ_k π_k N(y | μ_k, Σ_k) (eq. 26) by log-sum-exp over log π_k + log N_k.
//!
//! For D = 2 each component is the bivariate normal of eqs. 24–25 with correlation ρ_k, its quadratic
//! form evaluated as (z₁ − ρz₂)²/(1 − ρ²) + z₂² and 1 − ρ² as (1 − ρ)(1 + ρ), which stay accurate as
//! ρ → ±1; for any other D the components are diagonal. Gradients go through the responsibilities
//! γ_k = π_k N_k / Σ_j π_j N_j, computed from the same shifted terms. This mirrors
//! `src/backend/js/mixture.ts` line for line (its module comment gives the numerical reasoning).

use super::{HALF_LOG_2PI, RHO_SCALE};

/// Raw outputs per row: K (π) + K·D (μ) + K·D (s) + K (ρ, D = 2 only).
pub fn output_size(dim: usize, components: usize) -> usize {
    components * (1 + 2 * dim + usize::from(dim == 2))
}

/// Per-row working memory: log π_k + log N_k for every k; z and 1/σ of every (k, d); ρ_k and 1 − ρ_k²
/// (computed once in the forward pass, reused by the gradient).
#[derive(Default)]
pub struct Scratch {
    ell: Vec<f64>,
    z: Vec<f64>,
    inv: Vec<f64>,
    rho: Vec<f64>,
    omr: Vec<f64>,
}

/// NLL (nats) of `y [D]` under the row `raw`; writes ∂NLL/∂raw into `grad` when given.
pub fn row_nll(dim: usize, k_count: usize, raw: &[f64], y: &[f64], grad: Option<&mut [f64]>, sc: &mut Scratch) -> f64 {
    let kk = k_count;
    let bivariate = dim == 2;
    let (mu, ls) = (kk, kk + kk * dim);
    let rh = ls + kk * dim;
    sc.ell.resize(kk, 0.0);
    sc.z.resize(kk * dim, 0.0);
    sc.inv.resize(kk * dim, 0.0);
    sc.rho.resize(kk, 0.0);
    sc.omr.resize(kk, 0.0);
    let Scratch { ell, z, inv, rho: rhos, omr: omrs } = sc;

    // log π by log-softmax, shifted by the largest logit.
    let amax = raw[..kk].iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let asum: f64 = raw[..kk].iter().map(|&v| (v - amax).exp()).sum();
    let log_z = amax + asum.ln();

    for k in 0..kk {
        let mut log_n = 0.0;
        for d in 0..dim {
            let s = raw[ls + k * dim + d];
            inv[k * dim + d] = (-s).exp();
            let zz = (y[d] - raw[mu + k * dim + d]) * inv[k * dim + d];
            z[k * dim + d] = zz;
            log_n -= HALF_LOG_2PI + s;
            if !bivariate {
                log_n -= 0.5 * zz * zz;
            }
        }
        if bivariate {
            let rho = RHO_SCALE * raw[rh + k].tanh();
            let omr = (1.0 - rho) * (1.0 + rho);
            (rhos[k], omrs[k]) = (rho, omr);
            let (z1, z2) = (z[k * 2], z[k * 2 + 1]);
            let u = z1 - rho * z2;
            log_n -= 0.5 * omr.ln() + 0.5 * (u * u / omr + z2 * z2);
        }
        ell[k] = raw[k] - log_z + log_n;
    }

    let lmax = ell.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let lsum: f64 = ell.iter().map(|&v| (v - lmax).exp()).sum();
    let lse = lmax + lsum.ln();

    if let Some(g) = grad {
        for k in 0..kk {
            let gamma = (ell[k] - lse).exp();
            // ∂(−log Σ π N)/∂logit_k = π_k − γ_k (softmax through the log-sum-exp).
            g[k] = (raw[k] - log_z).exp() - gamma;
            if bivariate {
                let (rr, rho, omr) = (raw[rh + k], rhos[k], omrs[k]);
                let (z1, z2) = (z[k * 2], z[k * 2 + 1]);
                let u = z1 - rho * z2;
                let v = z2 - rho * z1;
                let w = u * u / omr + z2 * z2;
                // ∂log N/∂μ₁ = (z₁ − ρz₂)/((1 − ρ²)σ₁), ∂log N/∂s₁ = −1 + z₁(z₁ − ρz₂)/(1 − ρ²); variable 2
                // the same with z₁ and z₂ swapped.
                g[mu + k * 2] = -gamma * u * inv[k * 2] / omr;
                g[mu + k * 2 + 1] = -gamma * v * inv[k * 2 + 1] / omr;
                g[ls + k * 2] = gamma * (1.0 - z1 * u / omr);
                g[ls + k * 2 + 1] = gamma * (1.0 - z2 * v / omr);
                // ∂log N/∂ρ = (ρ + z₁z₂ − ρQ)/(1 − ρ²), Q the quadratic form; dρ/draw = RHO_SCALE·sech²(raw).
                let sech = 1.0 / rr.cosh();
                g[rh + k] = -gamma * (rho + z1 * z2 - rho * w) / omr * RHO_SCALE * sech * sech;
            } else {
                for d in 0..dim {
                    let zz = z[k * dim + d];
                    g[mu + k * dim + d] = -gamma * zz * inv[k * dim + d];
                    g[ls + k * dim + d] = gamma * (1.0 - zz * zz);
                }
            }
        }
    }
    -lse
}
