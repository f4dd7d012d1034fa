use super::*;
use candle_core::{DType, Device, Result, Tensor, Var};

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

/// 1, 0, 1, 0, … (or 0, 1, … when `first` is 0).
fn alternating(d: usize, first: usize) -> Vec<f64> {
    (0..d).map(|j| ((j + first + 1) % 2) as f64).collect()
}

struct Case {
    n: usize,
    d: usize,
    x: Vec<f64>,
    mask: Vec<f64>,
    s_raw: Vec<f64>,
    t: Vec<f64>,
    scale: Vec<f64>,
    /// Weights of the scalar loss L = Σ c ⊙ y + Σ e ⊙ logdet.
    c: Vec<f64>,
    e: Vec<f64>,
}

fn case(n: usize, d: usize, mask: Vec<f64>) -> Case {
    assert_eq!(mask.len(), d);
    Case {
        n,
        d,
        x: values(n * d, 1, 2.0),
        mask,
        s_raw: values(n * d, 2, 2.0),
        t: values(n * d, 3, 1.0),
        scale: values(d, 4, 1.5),
        c: values(n * d, 5, 1.0),
        e: values(n, 6, 1.0),
    }
}

impl Case {
    fn forward(&self, x: &[f64], s_raw: &[f64], t: &[f64], scale: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (mut y, mut logdet) = (vec![0.0; self.n * self.d], vec![0.0; self.n]);
        coupling_forward(self.n, self.d, x, &self.mask, s_raw, t, scale, &mut y, &mut logdet);
        (y, logdet)
    }

    fn loss(&self, x: &[f64], s_raw: &[f64], t: &[f64], scale: &[f64]) -> f64 {
        let (y, logdet) = self.forward(x, s_raw, t, scale);
        let a: f64 = y.iter().zip(&self.c).map(|(y, c)| y * c).sum();
        a + logdet.iter().zip(&self.e).map(|(l, e)| l * e).sum::<f64>()
    }

    /// `st = [s_raw | t]` `[N, 2D]` and `params = [mask; scale]` `[2, D]`, the op's packing.
    fn packed(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        let st =
            (0..self.n).flat_map(|r| [&self.s_raw[r * d..(r + 1) * d], &self.t[r * d..(r + 1) * d]].concat()).collect();
        (st, [self.mask.as_slice(), &self.scale].concat())
    }
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    crate::test_values::assert_close_to_scale(name, got, want, tol, 1e-3);
}

#[test]
fn coupling_backward_matches_finite_differences() {
    let cs = case(3, 5, alternating(5, 1));
    let (n, d) = (cs.n, cs.d);
    let (mut dx, mut ds_raw, mut dt, mut dscale) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d], vec![9.0; d]);
    coupling_backward(
        n,
        d,
        &cs.x,
        &cs.mask,
        &cs.s_raw,
        &cs.scale,
        &cs.c,
        &cs.e,
        &mut dx,
        &mut ds_raw,
        &mut dt,
        &mut dscale,
    );
    let eps = 1e-6;
    let numeric = |which: usize| -> Vec<f64> {
        let base = [&cs.x, &cs.s_raw, &cs.t, &cs.scale][which];
        (0..base.len())
            .map(|i| {
                let mut args = [cs.x.clone(), cs.s_raw.clone(), cs.t.clone(), cs.scale.clone()];
                args[which][i] += eps;
                let up = cs.loss(&args[0], &args[1], &args[2], &args[3]);
                args[which][i] -= 2.0 * eps;
                let down = cs.loss(&args[0], &args[1], &args[2], &args[3]);
                (up - down) / (2.0 * eps)
            })
            .collect()
    };
    assert_close("dx", &dx, &numeric(0), 1e-7);
    assert_close("ds_raw", &ds_raw, &numeric(1), 1e-7);
    assert_close("dt", &dt, &numeric(2), 1e-7);
    assert_close("dscale", &dscale, &numeric(3), 1e-7);
    // Pass-through columns: dx = dy, and exactly nothing for the conditioner or the scale.
    for (r, j) in (0..n).flat_map(|r| (0..d).map(move |j| (r, j))).filter(|&(_, j)| cs.mask[j] == 1.0) {
        assert_eq!(dx[r * d + j], cs.c[r * d + j]);
        assert_eq!((ds_raw[r * d + j], dt[r * d + j], dscale[j]), (0.0, 0.0, 0.0));
    }
}

/// The coupling written with candle's generic ops, differentiated by candle's autograd.
fn unfused(x: &Tensor, st: &Tensor, params: &Tensor, d: usize) -> Result<(Tensor, Tensor)> {
    let (s_raw, t) = (st.narrow(1, 0, d)?, st.narrow(1, d, d)?);
    let (b, scale) = (params.narrow(0, 0, 1)?, params.narrow(0, 1, 1)?);
    let m = (1.0 - &b)?;
    let s = scale.broadcast_mul(&s_raw.tanh()?)?;
    let y = (x.broadcast_mul(&b)? + ((x * s.exp()?)? + t)?.broadcast_mul(&m)?)?;
    let logdet = s.broadcast_mul(&m)?.sum(1)?;
    Ok((y, logdet))
}

#[test]
fn coupling_op_matches_unfused_candle_autograd() -> Result<()> {
    // The second case is large enough for the kernels' multi-threaded path.
    for cs in [case(3, 5, alternating(5, 1)), case(80, 64, alternating(64, 0))] {
        let (n, d) = (cs.n, cs.d);
        let dev = Device::Cpu;
        let (st, params) = cs.packed();
        let x = Var::from_vec(cs.x.clone(), (n, d), &dev)?;
        let st = Var::from_vec(st, (n, 2 * d), &dev)?;
        let params = Var::from_vec(params, (2, d), &dev)?;
        let c = Tensor::from_vec(cs.c.clone(), (n, d), &dev)?;
        let e = Tensor::from_vec(cs.e.clone(), n, &dev)?;
        let (y, logdet) = affine_coupling(&x, &st, &params)?;
        let (y_ref, logdet_ref) = unfused(&x, &st, &params, d)?;
        assert_eq!((y.dims(), logdet.dims()), (&[n, d][..], &[n][..]));
        let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f64>();
        assert_close("y", &v(&y)?, &v(&y_ref)?, 1e-12);
        assert_close("logdet", &v(&logdet)?, &v(&logdet_ref)?, 1e-12);
        let loss = |y: &Tensor, l: &Tensor| (y * &c)?.sum_all()? + (l * &e)?.sum_all()?;
        let gf = loss(&y, &logdet)?.backward()?;
        let gr = loss(&y_ref, &logdet_ref)?.backward()?;
        let grad = |g: &candle_core::backprop::GradStore, var: &Var| g.get(var.as_tensor()).expect("grad").clone();
        assert_close("dx", &v(&grad(&gf, &x))?, &v(&grad(&gr, &x))?, 1e-12);
        assert_close("dst", &v(&grad(&gf, &st))?, &v(&grad(&gr, &st))?, 1e-12);
        // The scale row matches; the mask, a constant of the layer, gets zeros.
        let (dp, dp_ref) = (grad(&gf, &params), grad(&gr, &params));
        assert_close("dscale", &v(&dp.narrow(0, 1, 1)?)?, &v(&dp_ref.narrow(0, 1, 1)?)?, 1e-12);
        assert!(v(&dp.narrow(0, 0, 1)?)?.iter().all(|&g| g == 0.0), "the mask's gradient must be zero");
    }
    Ok(())
}

#[test]
fn coupling_inverse_inverts_forward() -> Result<()> {
    // f64 through the slice kernels, at a small and a multi-threaded size.
    for cs in [case(3, 5, alternating(5, 1)), case(64, 96, alternating(96, 0))] {
        let (n, d) = (cs.n, cs.d);
        let (y, logdet) = cs.forward(&cs.x, &cs.s_raw, &cs.t, &cs.scale);
        let (mut x, mut inv_logdet) = (vec![0.0; n * d], vec![0.0; n]);
        coupling_inverse(n, d, &y, &cs.mask, &cs.s_raw, &cs.t, &cs.scale, &mut x, &mut inv_logdet);
        assert_close("x", &x, &cs.x, 1e-12);
        let minus: Vec<f64> = logdet.iter().map(|l| -l).collect();
        assert_close("inverse logdet", &inv_logdet, &minus, 1e-12);
        assert!(logdet.iter().any(|l| l.abs() > 0.1), "a trivial log-det proves nothing");
    }
    // f32 through the slice kernels, multi-threaded.
    let cs = case(64, 96, alternating(96, 1));
    let (n, d) = (cs.n, cs.d);
    let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (x0, mask, s_raw, t, scale) = (f32s(&cs.x), f32s(&cs.mask), f32s(&cs.s_raw), f32s(&cs.t), f32s(&cs.scale));
    let (mut y, mut logdet) = (vec![0f32; n * d], vec![0f32; n]);
    coupling_forward(n, d, &x0, &mask, &s_raw, &t, &scale, &mut y, &mut logdet);
    let (mut x, mut inv_logdet) = (vec![0f32; n * d], vec![0f32; n]);
    coupling_inverse(n, d, &y, &mask, &s_raw, &t, &scale, &mut x, &mut inv_logdet);
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    assert_close("x (f32)", &f64s(&x), &f64s(&x0), 1e-5);
    assert_close(
        "inverse logdet (f32)",
        &f64s(&inv_logdet),
        &f64s(&logdet).iter().map(|l| -l).collect::<Vec<_>>(),
        1e-5,
    );
    // Both dtypes through the candle ops, both ways round.
    let cs = case(5, 7, alternating(7, 0));
    let (st, params) = cs.packed();
    let dev = Device::Cpu;
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let t = |v: &[f64], shape: (usize, usize)| Tensor::from_vec(v.to_vec(), shape, &dev)?.to_dtype(dtype);
        let x0 = t(&cs.x, (cs.n, cs.d))?;
        let (st, params) = (t(&st, (cs.n, 2 * cs.d))?, t(&params, (2, cs.d))?);
        let v = |t: &Tensor| t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>();
        let (y, logdet) = affine_coupling(&x0, &st, &params)?;
        let (x, inv_logdet) = affine_coupling_inverse(&y, &st, &params)?;
        assert_close("x (op)", &v(&x)?, &v(&x0)?, tol);
        assert_close("inverse logdet (op)", &v(&inv_logdet)?, &v(&logdet.neg()?)?, tol);
        let (y2, _) = affine_coupling(&affine_coupling_inverse(&x0, &st, &params)?.0, &st, &params)?;
        assert_close("forward of inverse (op)", &v(&y2)?, &v(&x0)?, tol);
    }
    Ok(())
}

/// log |det A| of a row-major `k × k` matrix by LU with partial pivoting.
fn log_abs_det(mut a: Vec<f64>, k: usize) -> f64 {
    let mut acc = 0.0;
    for col in 0..k {
        let p = (col..k).max_by(|&i, &j| a[i * k + col].abs().total_cmp(&a[j * k + col].abs())).expect("rows left");
        assert!(a[p * k + col] != 0.0, "singular matrix");
        for q in 0..k {
            a.swap(p * k + q, col * k + q);
        }
        let pivot = a[col * k + col];
        acc += pivot.abs().ln();
        for r in col + 1..k {
            let f = a[r * k + col] / pivot;
            for q in col..k {
                a[r * k + q] -= f * a[col * k + q];
            }
        }
    }
    acc
}

#[test]
fn log_abs_det_helper_is_right() {
    // Needs a row swap (zero leading pivot): det [[0, 2, 1], [3, 1, 0], [1, 0, 4]] = −2·12 + 1·(−1) = −25.
    let a = vec![0.0, 2.0, 1.0, 3.0, 1.0, 0.0, 1.0, 0.0, 4.0];
    assert!((log_abs_det(a, 3) - 25f64.ln()).abs() < 1e-14);
}

/// ∂y/∂x of one row by central differences, row-major `[D, D]` (J[i][j] = ∂y_i/∂x_j).
fn jacobian(d: usize, x: &[f64], map: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let eps = 1e-6;
    let mut jac = vec![0.0; d * d];
    for j in 0..d {
        let mut xp = x.to_vec();
        xp[j] += eps;
        let up = map(&xp);
        xp[j] -= 2.0 * eps;
        let down = map(&xp);
        for i in 0..d {
            jac[i * d + j] = (up[i] - down[i]) / (2.0 * eps);
        }
    }
    jac
}

#[test]
fn logdet_matches_log_abs_det_of_jacobian() {
    let mask = vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
    let cs = case(4, 6, mask.clone());
    let d = cs.d;
    let (_, logdet) = cs.forward(&cs.x, &cs.s_raw, &cs.t, &cs.scale);
    for (r, &got) in logdet.iter().enumerate() {
        let row = r * d..(r + 1) * d;
        // The map x_r ↦ y_r with this row's s_raw and t held fixed.
        let map = |xr: &[f64]| {
            let (mut y, mut l) = (vec![0.0; d], vec![0.0]);
            coupling_forward(1, d, xr, &mask, &cs.s_raw[row.clone()], &cs.t[row.clone()], &cs.scale, &mut y, &mut l);
            y
        };
        let want = log_abs_det(jacobian(d, &cs.x[row.clone()], map), d);
        assert!((got - want).abs() < 1e-8, "row {r}: logdet {got} vs log|det J| {want}");
    }
}

#[test]
fn logdet_matches_log_abs_det_of_jacobian_through_a_conditioner() {
    // A real flow layer: s_raw and t are affine in b ⊙ x, so J gains off-diagonal entries (triangular
    // up to a permutation) and the log-det must still be the coupling's.
    let mask = vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
    let cs = case(3, 6, mask.clone());
    let d = cs.d;
    let (w_s, w_t) = (values(d * d, 7, 1.0), values(d * d, 8, 1.0));
    let conditioner = |xr: &[f64], w: &[f64], bias: &[f64]| -> Vec<f64> {
        (0..d).map(|j| bias[j] + (0..d).map(|i| mask[i] * xr[i] * w[i * d + j]).sum::<f64>()).collect()
    };
    for r in 0..cs.n {
        let row = r * d..(r + 1) * d;
        let (bias_s, bias_t) = (&cs.s_raw[row.clone()], &cs.t[row.clone()]);
        let map = |xr: &[f64]| {
            let (s_raw, t) = (conditioner(xr, &w_s, bias_s), conditioner(xr, &w_t, bias_t));
            let (mut y, mut l) = (vec![0.0; d], vec![0.0]);
            coupling_forward(1, d, xr, &mask, &s_raw, &t, &cs.scale, &mut y, &mut l);
            (y, l[0])
        };
        let xr = &cs.x[row];
        let jac = jacobian(d, xr, |x| map(x).0);
        assert!(jac.iter().enumerate().any(|(k, &v)| k / d != k % d && v.abs() > 1e-3), "J is diagonal");
        let (want, got) = (log_abs_det(jac, d), map(xr).1);
        assert!((got - want).abs() < 1e-8, "row {r}: logdet {got} vs log|det J| {want}");
    }
}

#[test]
fn coupling_f32_tracks_f64() {
    // Multi-threaded size; f32 uses the fast tanh, so forward and backward both must stay close.
    let cs = case(48, 128, alternating(128, 1));
    let (n, d) = (cs.n, cs.d);
    let (st, params) = cs.packed();
    let grad: Vec<f64> = (0..n).flat_map(|r| [&cs.c[r * d..(r + 1) * d], &cs.e[r..r + 1]].concat()).collect();
    let run64 = {
        let mut out = vec![0.0; n * (d + 1)];
        coupling_forward_packed(n, d, &cs.x, &st, &params, &mut out);
        let (mut dx, mut dst, mut dp) = (vec![0.0; n * d], vec![0.0; 2 * n * d], vec![0.0; 2 * d]);
        coupling_backward_packed(n, d, &cs.x, &st, &params, &grad, &mut dx, &mut dst, &mut dp);
        [out, dx, dst, dp]
    };
    let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (x, st, params, grad) = (f32s(&cs.x), f32s(&st), f32s(&params), f32s(&grad));
    let mut out = vec![0f32; n * (d + 1)];
    coupling_forward_packed(n, d, &x, &st, &params, &mut out);
    let (mut dx, mut dst, mut dp) = (vec![0f32; n * d], vec![0f32; 2 * n * d], vec![0f32; 2 * d]);
    coupling_backward_packed(n, d, &x, &st, &params, &grad, &mut dx, &mut dst, &mut dp);
    for ((name, got), want) in ["out", "dx", "dst", "dparams"].iter().zip([out, dx, dst, dp]).zip(&run64) {
        let got: Vec<f64> = got.iter().map(|&a| a as f64).collect();
        assert_close(name, &got, want, 1e-5);
    }
}

#[test]
fn coupling_handles_empty_shapes() -> Result<()> {
    let dev = Device::Cpu;
    for (n, d) in [(0, 4), (3, 0), (0, 0)] {
        let x = Var::zeros((n, d), DType::F64, &dev)?;
        let st = Var::zeros((n, 2 * d), DType::F64, &dev)?;
        let params = Var::zeros((2, d), DType::F64, &dev)?;
        let (y, logdet) = affine_coupling(&x, &st, &params)?;
        assert_eq!((y.dims(), logdet.dims()), (&[n, d][..], &[n][..]));
        assert!(logdet.to_vec1::<f64>()?.iter().all(|&l| l == 0.0));
        let g = (y.sum_all()? + logdet.sum_all()?)?.backward()?;
        assert_eq!(g.get(st.as_tensor()).expect("grad").dims(), &[n, 2 * d]);
        let (x2, _) = affine_coupling_inverse(&y, &st, &params)?;
        assert_eq!(x2.dims(), &[n, d]);
    }
    Ok(())
}

#[test]
fn coupling_rejects_bad_shapes_with_clear_messages() -> Result<()> {
    let dev = Device::Cpu;
    let z = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &dev);
    let f = DType::F32;
    let err = |r: Result<(Tensor, Tensor)>| r.map(|_| ()).unwrap_err().to_string();
    let e = err(affine_coupling(&z(&[3, 5], f)?, &z(&[3, 9], f)?, &z(&[2, 5], f)?));
    assert!(e.contains("st = [s_raw | t] must be [N, 2D] = [3, 10], got shape [3, 9]"), "{e}");
    let e = err(affine_coupling(&z(&[3, 5], f)?, &z(&[3, 10], f)?, &z(&[3, 5], f)?));
    assert!(e.contains("params = [mask; scale] must be [2, D] = [2, 5], got shape [3, 5]"), "{e}");
    let e = err(affine_coupling(&z(&[15], f)?, &z(&[3, 10], f)?, &z(&[2, 5], f)?));
    assert!(e.contains("x must be [N, D], got shape [15]"), "{e}");
    let e = err(affine_coupling_inverse(&z(&[3, 5, 1], f)?, &z(&[3, 10], f)?, &z(&[2, 5], f)?));
    assert!(e.contains("y must be [N, D]"), "{e}");
    let e = err(affine_coupling(&z(&[3, 5], f)?, &z(&[3, 10], DType::F64)?, &z(&[2, 5], f)?));
    assert!(e.contains("must all be f32 or all f64"), "{e}");
    let e = err(affine_coupling(&z(&[3, 5], DType::U32)?, &z(&[3, 10], DType::U32)?, &z(&[2, 5], DType::U32)?));
    assert!(e.contains("must all be f32 or all f64"), "{e}");
    let params = Tensor::from_vec(vec![1f32, 0.5, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], (2, 5), &dev)?;
    let e = err(affine_coupling(&z(&[3, 5], f)?, &z(&[3, 10], f)?, &params));
    assert!(e.contains("mask entries must be 0 or 1, found 0.5"), "{e}");
    let e = err(affine_coupling_inverse(&z(&[3, 5], f)?, &z(&[3, 10], f)?, &params));
    assert!(e.contains("mask entries must be 0 or 1"), "{e}");
    Ok(())
}

#[test]
#[should_panic(expected = "affine coupling: s_raw must be [N, D] = [3, 5], got 14 values")]
fn coupling_kernel_rejects_bad_lengths() {
    let (mut y, mut logdet) = (vec![0.0; 15], vec![0.0; 3]);
    let mask = alternating(5, 1);
    coupling_forward(3, 5, &[0.0; 15], &mask, &[0.0; 14], &[0.0; 15], &[1.0; 5], &mut y, &mut logdet);
}

#[test]
#[should_panic(expected = "affine coupling: mask entries must be 0 or 1")]
fn coupling_kernel_rejects_a_non_binary_mask() {
    let (mut y, mut logdet) = (vec![0.0; 15], vec![0.0; 3]);
    let mask = [1.0, 0.0, 2.0, 0.0, 1.0];
    coupling_forward(3, 5, &[0.0; 15], &mask, &[0.0; 15], &[0.0; 15], &[1.0; 5], &mut y, &mut logdet);
}

#[test]
fn coupling_slice_and_packed_apis_agree() {
    // Multi-threaded size: the two layouts run the same row kernels and the same dscale reduction.
    let cs = case(64, 96, alternating(96, 0));
    let (n, d) = (cs.n, cs.d);
    let (st, params) = cs.packed();
    let grad: Vec<f64> = (0..n).flat_map(|r| [&cs.c[r * d..(r + 1) * d], &cs.e[r..r + 1]].concat()).collect();
    let unpack = |out: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let rows = out.chunks_exact(d + 1);
        (rows.clone().flat_map(|r| r[..d].to_vec()).collect(), rows.map(|r| r[d]).collect())
    };
    let mut out = vec![0.0; n * (d + 1)];
    coupling_forward_packed(n, d, &cs.x, &st, &params, &mut out);
    assert_eq!(unpack(&out), cs.forward(&cs.x, &cs.s_raw, &cs.t, &cs.scale));
    let (y, mut inv) = (unpack(&out).0, vec![0.0; n * (d + 1)]);
    coupling_inverse_packed(n, d, &y, &st, &params, &mut inv);
    let (mut x, mut inv_logdet) = (vec![0.0; n * d], vec![0.0; n]);
    coupling_inverse(n, d, &y, &cs.mask, &cs.s_raw, &cs.t, &cs.scale, &mut x, &mut inv_logdet);
    assert_eq!(unpack(&inv), (x, inv_logdet));

    let (mut dx, mut dst, mut dp) = (vec![0.0; n * d], vec![0.0; 2 * n * d], vec![0.0; 2 * d]);
    coupling_backward_packed(n, d, &cs.x, &st, &params, &grad, &mut dx, &mut dst, &mut dp);
    let (mut dx2, mut ds_raw, mut dt, mut dscale) =
        (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d], vec![0.0; d]);
    coupling_backward(
        n,
        d,
        &cs.x,
        &cs.mask,
        &cs.s_raw,
        &cs.scale,
        &cs.c,
        &cs.e,
        &mut dx2,
        &mut ds_raw,
        &mut dt,
        &mut dscale,
    );
    let dst2: Vec<f64> = (0..n).flat_map(|r| [&ds_raw[r * d..(r + 1) * d], &dt[r * d..(r + 1) * d]].concat()).collect();
    assert_eq!((&dx, &dst, &dp), (&dx2, &dst2, &[vec![0.0; d], dscale].concat()));
    // And the reduction over parts is a sum over every row: check dscale against a serial sum.
    let mut serial = vec![0.0; d];
    for r in 0..n {
        for (j, acc) in serial.iter_mut().enumerate() {
            let th = cs.s_raw[r * d + j].tanh();
            let e = (cs.scale[j] * th).exp();
            let ds = (1.0 - cs.mask[j]) * (cs.c[r * d + j] * cs.x[r * d + j] * e + cs.e[r]);
            *acc += ds * th;
        }
    }
    assert_close("dscale (serial)", &dp[d..], &serial, 1e-12);
}
