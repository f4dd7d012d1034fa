//! The fused affine coupling on raw arrays, for kernel tests and benchmarks.

use super::*;

#[napi(object)]
pub struct CouplingResult {
    /// `y` (forward) or `x` (inverse), `[N, D]`.
    pub out: F32Out,
    /// Per-sample log|det J| of the map applied, `[N]`.
    pub logdet: F32Out,
}

#[napi(object)]
pub struct CouplingGrads {
    pub dx: F32Out,
    pub ds_raw: F32Out,
    pub dt: F32Out,
    pub dscale: F32Out,
}

/// Checks one affine coupling call: x-like arrays `[N, D]`, `mask`/`scale` `[D]`, mask entries 0 or 1.
fn coupling_dims(
    n: u32,
    d: u32,
    rows: &[(&str, usize)],
    cols: &[(&str, usize)],
    mask: &[f32],
) -> Result<(usize, usize)> {
    let (n, d) = (n as usize, d as usize);
    for &(what, len) in rows {
        if len != n * d {
            return Err(tag(format!("affine coupling: {what} holds {len} values, expected [N, D] = [{n}, {d}]")));
        }
    }
    for &(what, len) in cols {
        if len != d {
            return Err(tag(format!("affine coupling: {what} holds {len} values, expected [D] = [{d}]")));
        }
    }
    if mask.iter().any(|&b| b != 0.0 && b != 1.0) {
        return Err(tag("affine coupling: mask entries must be 0 or 1".into()));
    }
    Ok((n, d))
}

/// Real NVP affine coupling on raw arrays (kernel tests and benchmarks):
/// `y = b⊙x + (1−b)⊙(x⊙exp(s) + t)` with `s = scale⊙tanh(sRaw)`, and the per-sample log-det.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn coupling_forward(
    n: u32,
    d: u32,
    x: Float32Array,
    mask: Float32Array,
    s_raw: Float32Array,
    t: Float32Array,
    scale: Float32Array,
    inverse: bool,
) -> Result<CouplingResult> {
    let (n, d) = coupling_dims(
        n,
        d,
        &[("x", x.len()), ("sRaw", s_raw.len()), ("t", t.len())],
        &[("mask", mask.len()), ("scale", scale.len())],
        &mask,
    )?;
    guarded(|| {
        let (mut out, mut logdet) = (vec![0f32; n * d], vec![0f32; n]);
        if inverse {
            coupling_inverse(n, d, &x, &mask, &s_raw, &t, &scale, &mut out, &mut logdet);
        } else {
            coupling_forward_kernel(n, d, &x, &mask, &s_raw, &t, &scale, &mut out, &mut logdet);
        }
        Ok(CouplingResult { out: F32Out(out), logdet: F32Out(logdet) })
    })
}

/// Gradients of the forward coupling given `dy [N, D]` and `dlogdet [N]`.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn coupling_backward(
    n: u32,
    d: u32,
    x: Float32Array,
    mask: Float32Array,
    s_raw: Float32Array,
    scale: Float32Array,
    dy: Float32Array,
    dlogdet: Float32Array,
) -> Result<CouplingGrads> {
    let (n, d) = coupling_dims(
        n,
        d,
        &[("x", x.len()), ("sRaw", s_raw.len()), ("dy", dy.len())],
        &[("mask", mask.len()), ("scale", scale.len())],
        &mask,
    )?;
    if dlogdet.len() != n {
        return Err(tag(format!("affine coupling: dlogdet holds {} values, expected [N] = [{n}]", dlogdet.len())));
    }
    guarded(|| {
        let (mut dx, mut ds_raw, mut dt, mut dscale) =
            (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d], vec![0f32; d]);
        coupling_backward_kernel(
            n,
            d,
            &x,
            &mask,
            &s_raw,
            &scale,
            &dy,
            &dlogdet,
            &mut dx,
            &mut ds_raw,
            &mut dt,
            &mut dscale,
        );
        Ok(CouplingGrads { dx: F32Out(dx), ds_raw: F32Out(ds_raw), dt: F32Out(dt), dscale: F32Out(dscale) })
    })
}
