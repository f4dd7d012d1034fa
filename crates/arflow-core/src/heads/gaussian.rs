//! Diagonal Gaussian head. Per row the raw outputs are `[μ (D), s (D)]` with σ = exp(s):
//!
//! NLL = Σ_d [½ log 2π + s_d + ½ z_d²],  z_d = (y_d − μ_d) / σ_d,
//! ∂NLL/∂μ_d = −z_d / σ_d,  ∂NLL/∂s_d = 1 − z_d².
//!
//! s is not clamped and σ has no floor (see `src/backend/js/mixture.ts`, which this mirrors).

use super::HALF_LOG_2PI;

/// Raw outputs per row: 2D.
pub fn output_size(dim: usize) -> usize {
    2 * dim
}

/// NLL (nats) of `y [D]` under the row `raw [2D]`; writes ∂NLL/∂raw into `grad` when given.
pub fn row_nll(dim: usize, raw: &[f64], y: &[f64], mut grad: Option<&mut [f64]>) -> f64 {
    let mut nll = 0.0;
    for d in 0..dim {
        let s = raw[dim + d];
        let inv = (-s).exp();
        let z = (y[d] - raw[d]) * inv;
        nll += HALF_LOG_2PI + s + 0.5 * z * z;
        if let Some(g) = grad.as_deref_mut() {
            g[d] = -z * inv;
            g[dim + d] = 1.0 - z * z;
        }
    }
    nll
}
