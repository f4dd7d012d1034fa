//! The likelihood heads: values written out from the TypeScript reference (`src/backend/js/mixture.ts`
//! run on the same inputs), f64 central differences of the op's backward, the NLL against the textbook
//! densities (explicit 2 × 2 covariance inverse and determinant), f32 against f64, extreme inputs and
//! the shape and config checks.

use super::*;
use candle_core::{Device, Var};

/// `scale · sin(0.7 i + 0.3 seed)`: inputs the TypeScript reference was run on to produce `REFERENCE`.
fn gen(n: usize, seed: u32, scale: f64) -> Vec<f64> {
    (0..n).map(|i| scale * (0.7 * i as f64 + 0.3 * seed as f64).sin()).collect()
}

fn case(head: Head, rows: usize) -> (Vec<f64>, Vec<f64>) {
    (gen(rows * head.output_size(), 1, 1.3), gen(rows * head.dim(), 2, 1.5))
}

/// NLL summed over rows and its gradient through the candle op (backward included).
fn op_nll_grad(head: Head, raw: &[f64], y: &[f64]) -> (f64, Vec<f64>) {
    let rows = y.len() / head.dim();
    let dev = Device::Cpu;
    let r = Var::from_vec(raw.to_vec(), (rows, head.output_size()), &dev).unwrap();
    let t = Tensor::from_vec(y.to_vec(), (rows, head.dim()), &dev).unwrap();
    let nll = head_nll(head, r.as_tensor(), &t).unwrap().sum_all().unwrap();
    let g = nll.backward().unwrap().get(r.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    (nll.to_scalar::<f64>().unwrap(), g)
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    crate::test_values::assert_close_to_scale(name, got, want, tol, 1e-3);
}

/// (head, rows, summed NLL, gradient) from `gaussianNll` / `mixtureNll` of mixture.ts on [`case`]'s inputs.
#[allow(clippy::type_complexity)]
const REFERENCE: [(Head, usize, f64, &[f64]); 4] = [
    (
        Head::Gaussian { dim: 2 },
        2,
        24.59750058750519,
        &[
            -0.03512592113232534,
            -0.06069079515901958,
            0.9837441648312004,
            0.9786717374401777,
            -16.635225192104706,
            -14.284589758205577,
            -20.790336404590757,
            -19.519600041245862,
        ],
    ),
    (
        Head::Mdn { dim: 2, components: 3 },
        2,
        9.546446113348255,
        &[
            -0.7786063329199321,
            0.32960703950774745,
            0.44899929341218453,
            -0.8895336404621479,
            -0.5239470874752944,
            -0.04511872215258465,
            -0.07538410025851608,
            -8.280969161838964e-07,
            -2.617003412057268e-06,
            0.987946285486736,
            0.23128923904964765,
            -0.034349830969553234,
            -0.16500053782488613,
            -1.4710739178423886e-06,
            -4.873064030850733e-06,
            0.23067078911112354,
            -0.21527013301340595,
            -4.362040243778225e-06,
            -0.712233764789985,
            0.2725350298159018,
            0.43969873497408274,
            -1.1003267304386257,
            -0.536525031973795,
            -0.10273073886780294,
            -0.16671832666500497,
            -0.002268791671441802,
            -0.005238345345764534,
            0.3284678595110885,
            0.5606706113936799,
            -0.12493728230311772,
            -0.21975722529436617,
            -0.005119731338836082,
            -0.005157856678264486,
            -0.06942906972208686,
            -0.4102615698148903,
            -0.007731016191084556,
        ],
    ),
    (
        Head::Mdn { dim: 1, components: 2 },
        3,
        13.0713498055235,
        &[
            0.16781419146554363,
            -0.16781419146554366,
            0.06423351541958444,
            0.12808873505713617,
            0.13343888770851148,
            0.8341685354405588,
            -0.004372660765597003,
            0.004372660765596947,
            -0.10027933493787418,
            -0.04179691341248281,
            0.2801589915760209,
            0.48268108367332196,
            0.6962783643135758,
            -0.6962783643135756,
            -6.287983099037274e-05,
            -6.698308820143352,
            -0.00013389404386527886,
            -16.677933370065194,
        ],
    ),
    (
        Head::Mdn { dim: 3, components: 2 },
        2,
        13.213656685759055,
        &[
            -0.6471910788520693,
            0.6471910788520696,
            1.1418657977115372,
            -0.2464951775866922,
            -0.1402098526996502,
            -0.002903406092210171,
            -0.011218419024470261,
            -0.054538528198946314,
            0.47191457710815876,
            0.8370275260472148,
            0.7931885901636049,
            0.018383253442365823,
            -0.007318897882712819,
            -0.11387288013607344,
            0.613632830659598,
            -0.613632830659598,
            -6.873183411329775e-06,
            -1.707336020620827e-06,
            8.422001351327933e-05,
            4.536016661614055,
            4.059015096034505,
            0.8489735043867146,
            -8.284491823076484e-06,
            3.8033237134818436e-06,
            -0.000135282851217949,
            -1.158424556991222,
            -5.762790719295868,
            -0.7597476142684212,
        ],
    ),
];

#[test]
fn heads_match_the_typescript_reference_values() {
    for (head, rows, nll, grad) in REFERENCE {
        let (raw, y) = case(head, rows);
        let (got, g) = op_nll_grad(head, &raw, &y);
        assert!((got - nll).abs() <= 1e-12 * nll.abs(), "{head:?}: NLL {got} vs reference {nll}");
        assert_close(&format!("{head:?} grad"), &g, grad, 1e-12);
    }
}

#[test]
fn heads_backward_matches_f64_finite_differences() {
    let heads = [
        Head::Gaussian { dim: 1 },
        Head::Gaussian { dim: 3 },
        Head::Mdn { dim: 1, components: 1 },
        Head::Mdn { dim: 1, components: 4 },
        Head::Mdn { dim: 2, components: 3 },
        Head::Mdn { dim: 3, components: 2 },
    ];
    for head in heads {
        let (raw, y) = case(head, 3);
        // A weighted sum of the rows, so that each row's gradient is scaled by its own upstream value.
        let w = [0.7, -1.3, 2.1];
        let dev = Device::Cpu;
        let r = Var::from_vec(raw.clone(), (3, head.output_size()), &dev).unwrap();
        let t = Tensor::from_vec(y.clone(), (3, head.dim()), &dev).unwrap();
        let c = Tensor::from_vec(w.to_vec(), 3, &dev).unwrap();
        let loss = head_nll(head, r.as_tensor(), &t).unwrap().mul(&c).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap().get(r.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let f = |raw: &[f64]| -> f64 {
            let (nll, _) = head.rows_nll(raw, &y, false);
            nll.iter().zip(w).map(|(n, w)| n * w).sum()
        };
        let eps = 1e-6;
        let mut p = raw.clone();
        let fd: Vec<f64> = (0..raw.len())
            .map(|i| {
                p[i] = raw[i] + eps;
                let up = f(&p);
                p[i] = raw[i] - eps;
                let down = f(&p);
                p[i] = raw[i];
                (up - down) / (2.0 * eps)
            })
            .collect();
        assert_close(&format!("{head:?}"), &g, &fd, 1e-7);
    }
}

/// −log Σ_k π_k N(y | μ_k, Σ_k) from the textbook formulas: softmax weights, for D = 2 the covariance
/// [[σ₁², ρσ₁σ₂], [ρσ₁σ₂, σ₂²]] with its explicit inverse and determinant, else a product of normals.
fn textbook_nll(head: Head, raw: &[f64], y: &[f64]) -> f64 {
    let (dim, kk) = match head {
        Head::Gaussian { dim } => (dim, 0),
        Head::Mdn { dim, components } => (dim, components),
    };
    let normal = |y: f64, mu: f64, sigma: f64| {
        (-0.5 * ((y - mu) / sigma).powi(2)).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
    };
    if kk == 0 {
        return -(0..dim).map(|d| normal(y[d], raw[d], raw[dim + d].exp()).ln()).sum::<f64>();
    }
    let e: Vec<f64> = raw[..kk].iter().map(|v| v.exp()).collect();
    let total: f64 = e.iter().sum();
    let mut p = 0.0;
    for k in 0..kk {
        let mu = &raw[kk + k * dim..kk + (k + 1) * dim];
        let sigma: Vec<f64> =
            raw[kk + kk * dim + k * dim..kk + kk * dim + (k + 1) * dim].iter().map(|s| s.exp()).collect();
        let density = if dim == 2 {
            let rho = RHO_SCALE * raw[kk + 2 * kk * dim + k].tanh();
            let (a, b, d) = (sigma[0] * sigma[0], rho * sigma[0] * sigma[1], sigma[1] * sigma[1]);
            let det = a * d - b * b;
            let (x1, x2) = (y[0] - mu[0], y[1] - mu[1]);
            let quad = (d * x1 * x1 - 2.0 * b * x1 * x2 + a * x2 * x2) / det;
            (-0.5 * quad).exp() / (2.0 * std::f64::consts::PI * det.sqrt())
        } else {
            (0..dim).map(|i| normal(y[i], mu[i], sigma[i])).product()
        };
        p += e[k] / total * density;
    }
    -p.ln()
}

#[test]
fn heads_nll_matches_the_textbook_densities() {
    for head in [
        Head::Gaussian { dim: 2 },
        Head::Mdn { dim: 1, components: 3 },
        Head::Mdn { dim: 2, components: 4 },
        Head::Mdn { dim: 3, components: 2 },
    ] {
        let (raw, y) = case(head, 4);
        let size = head.output_size();
        let (nll, _) = head.rows_nll(&raw, &y, false);
        for (r, got) in nll.iter().enumerate() {
            let want = textbook_nll(head, &raw[r * size..(r + 1) * size], &y[r * head.dim()..(r + 1) * head.dim()]);
            assert!((got - want).abs() <= 1e-10 * want.abs().max(1.0), "{head:?} row {r}: {got} vs textbook {want}");
        }
    }
}

#[test]
fn heads_f32_op_tracks_f64() {
    for head in [Head::Gaussian { dim: 2 }, Head::Mdn { dim: 2, components: 5 }, Head::Mdn { dim: 1, components: 3 }] {
        let (raw, y) = case(head, 200);
        let (nll64, g64) = op_nll_grad(head, &raw, &y);
        let dev = Device::Cpu;
        let rows = 200;
        let r =
            Var::from_vec(raw.iter().map(|&v| v as f32).collect::<Vec<_>>(), (rows, head.output_size()), &dev).unwrap();
        let t = Tensor::from_vec(y.iter().map(|&v| v as f32).collect::<Vec<_>>(), (rows, head.dim()), &dev).unwrap();
        let nll = head_nll(head, r.as_tensor(), &t).unwrap();
        assert_eq!(nll.dtype(), DType::F32);
        let sum = nll.to_dtype(DType::F64).unwrap().sum_all().unwrap();
        let g = sum.backward().unwrap().get(r.as_tensor()).unwrap().clone();
        assert_eq!(g.dtype(), DType::F32);
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        let got = sum.to_scalar::<f64>().unwrap();
        assert!((got - nll64).abs() <= 1e-5 * nll64.abs(), "{head:?}: f32 {got} vs f64 {nll64}");
        assert_close(&format!("{head:?} f32 grad"), &g, &g64, 1e-5);
    }
}

#[test]
fn heads_extreme_inputs_stay_finite_and_match_the_reference() {
    // Logits 1000 apart, a component with σ = e⁻⁸ right at the target, |ρ raw| = 30 (tanh = ±1 in f64).
    let head = Head::Mdn { dim: 2, components: 3 };
    let raw =
        [1000.0, 0.0, -1000.0, 0.5, -0.5, 3.0, 4.0, -20.0, -20.0, -8.0, -8.0, 2.0, 1.0, 0.3, 0.1, 30.0, -30.0, 0.0];
    let y = [0.5001, -0.4999];
    let (nll, g) = op_nll_grad(head, &raw, &y);
    // mixtureNll of mixture.ts on the same row.
    let want = -20.678874297460688;
    assert!((nll - want).abs() <= 1e-12 * want.abs(), "{nll} vs {want}");
    let mut want_g = [0.0; 18];
    want_g[3] = -444.30574817713335;
    want_g[4] = -444.30574817713335;
    want_g[9] = 0.9555694251822916;
    want_g[10] = 0.9555694251822916;
    want_g[15] = -1.7512996033474753e-20;
    assert_close("extreme grad", &g, &want_g, 1e-12);
    assert!(g.iter().all(|v| v.is_finite()));
}

#[test]
fn heads_refuse_bad_configs_and_shapes() {
    let e = Head::parse("mdn", 2, Some(0)).unwrap_err().to_string();
    assert!(e.contains("components (K) must be at least 1"), "{e}");
    assert!(Head::parse("mdn", 2, None).is_err());
    assert!(Head::parse("gaussian", 2, Some(3)).is_err());
    assert!(Head::parse("laplace", 2, None).unwrap_err().to_string().contains("unknown likelihood"));
    assert_eq!(Head::parse("mdn", 2, Some(3)).unwrap().output_size(), 18);
    assert_eq!(Head::parse("mdn", 3, Some(2)).unwrap().output_size(), 14);
    assert_eq!(Head::parse("gaussian", 3, None).unwrap().output_size(), 6);

    let dev = Device::Cpu;
    let head = Head::Mdn { dim: 2, components: 3 };
    let raw = Tensor::zeros((4, 17), DType::F32, &dev).unwrap();
    let y = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
    assert!(head_nll(head, &raw, &y).unwrap_err().to_string().contains("expected 18"));
    let raw = Tensor::zeros((4, 18), DType::F32, &dev).unwrap();
    let y3 = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    assert!(head_nll(head, &raw, &y3).unwrap_err().to_string().contains("targets have shape"));
    let y64 = Tensor::zeros((4, 2), DType::F64, &dev).unwrap();
    assert!(head_nll(head, &raw, &y64).unwrap_err().to_string().contains("both be f32 or both f64"));
    assert_eq!(head_nll(head, &raw, &y).unwrap().dims(), [4]);
}

/// The fused linear + likelihood op against the same computation composed from candle's matmul,
/// broadcast add and [`head_nll`], under candle's autograd: values and gradients in f64, and the f32 op
/// against the f64 one.
#[test]
fn heads_linear_op_matches_candle_composition() {
    let dev = Device::Cpu;
    for head in [Head::Gaussian { dim: 2 }, Head::Mdn { dim: 2, components: 3 }, Head::Mdn { dim: 1, components: 4 }] {
        let (rows, hidden, out) = (7, 5, head.output_size());
        let hv = gen(rows * hidden, 3, 0.9);
        let pv = gen(out * hidden + out, 4, 0.7);
        let yv = gen(rows * head.dim(), 5, 1.2);
        let c = Tensor::from_vec(gen(rows, 6, 1.0), rows, &dev).unwrap();
        let h = Var::from_vec(hv.clone(), (rows, hidden), &dev).unwrap();
        let p = Var::from_vec(pv.clone(), out * hidden + out, &dev).unwrap();
        let y = Tensor::from_vec(yv.clone(), (rows, head.dim()), &dev).unwrap();
        let grads = |loss: &Tensor| {
            let g = loss.backward().unwrap();
            let v = |t: &Tensor| g.get(t).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            (v(h.as_tensor()), v(p.as_tensor()))
        };
        let fused = linear_head_nll(head, h.as_tensor(), p.as_tensor(), &y).unwrap();
        let w = p.as_tensor().narrow(0, 0, out * hidden).unwrap().reshape((out, hidden)).unwrap();
        let b = p.as_tensor().narrow(0, out * hidden, out).unwrap();
        let raw = h.as_tensor().matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let composed = head_nll(head, &raw, &y).unwrap();
        let (a, bb) = (fused.to_vec1::<f64>().unwrap(), composed.to_vec1::<f64>().unwrap());
        assert_close(&format!("{head:?} nll"), &a, &bb, 1e-13);
        let (dh1, dp1) = grads(&fused.mul(&c).unwrap().sum_all().unwrap());
        let (dh2, dp2) = grads(&composed.mul(&c).unwrap().sum_all().unwrap());
        assert_close(&format!("{head:?} dh"), &dh1, &dh2, 1e-12);
        assert_close(&format!("{head:?} dparams"), &dp1, &dp2, 1e-12);
        let raw_only = linear_raw(
            head,
            &Tensor::from_vec(hv.iter().map(|&v| v as f32).collect::<Vec<_>>(), (rows, hidden), &dev).unwrap(),
            &Tensor::from_vec(pv.iter().map(|&v| v as f32).collect::<Vec<_>>(), out * hidden + out, &dev).unwrap(),
        )
        .unwrap();
        let raw64 = raw.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let raw32: Vec<f64> =
            raw_only.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        assert_close(&format!("{head:?} raw"), &raw32, &raw64, 1e-6);

        let h32 = Var::from_vec(hv.iter().map(|&v| v as f32).collect::<Vec<_>>(), (rows, hidden), &dev).unwrap();
        let p32 = Var::from_vec(pv.iter().map(|&v| v as f32).collect::<Vec<_>>(), out * hidden + out, &dev).unwrap();
        let y32 = Tensor::from_vec(yv.iter().map(|&v| v as f32).collect::<Vec<_>>(), (rows, head.dim()), &dev).unwrap();
        let l32 = linear_head_nll(head, h32.as_tensor(), p32.as_tensor(), &y32).unwrap().sum_all().unwrap();
        let g32 = l32.backward().unwrap();
        let dp32: Vec<f64> =
            g32.get(p32.as_tensor()).unwrap().to_vec1::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        let (_, dp64) = grads(&fused.sum_all().unwrap());
        assert_close(&format!("{head:?} f32 dparams"), &dp32, &dp64, 1e-5);
    }
}

#[test]
fn heads_linear_op_checks_its_sizes() {
    let dev = Device::Cpu;
    let head = Head::Mdn { dim: 2, components: 3 };
    let h = Tensor::zeros((4, 5), DType::F32, &dev).unwrap();
    let y = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
    let p = Tensor::zeros(18 * 5, DType::F32, &dev).unwrap();
    assert!(linear_head_nll(head, &h, &p, &y).unwrap_err().to_string().contains("needs 108"));
    let p = Tensor::zeros(18 * 5 + 18, DType::F32, &dev).unwrap();
    assert_eq!(linear_head_nll(head, &h, &p, &y).unwrap().dims(), [4]);
}
