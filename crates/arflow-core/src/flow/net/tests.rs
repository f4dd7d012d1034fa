//! FlowNet checks in f64: every layer type and whole stacks invert, their log-dets equal log|det| of the
//! finite-difference Jacobian, gradients match finite differences of the loss, MADE is autoregressive,
//! and bad specs and inputs are clear errors.

use super::init::{lu, SplitMix};
use super::{FlowNet, Mode};
use crate::device::Dev;
use crate::optim::AdamWConfig;
use candle_core::{DType, Device, Tensor};

/// A net of `spec` whose every parameter and buffer is random but valid (non-zero output layers,
/// non-trivial running statistics, a shuffled permutation with mixed signs), so no layer is the identity.
fn random_net(spec: &str, seed: u64) -> FlowNet {
    let mut net = FlowNet::new(spec, seed, Dev::Cpu).unwrap();
    let mut rng = SplitMix::new(seed + 100);
    for info in net.plan.params.clone() {
        let n: usize = info.shape.iter().product();
        let amp = if info.name.ends_with("weight_g") { 1.0 } else { 0.3 };
        let v: Vec<f32> =
            (0..n).map(|_| (amp * rng.range(-1.0, 1.0)) as f32 + if amp == 1.0 { 1.5 } else { 0.0 }).collect();
        net.params_mut().set_param(&info.name, &v).unwrap();
    }
    for info in net.plan.buffers.clone() {
        let n: usize = info.shape.iter().product();
        let v: Vec<f32> = if info.name.ends_with("perm") {
            let mut p: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                p.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            p.into_iter().map(|x| x as f32).collect()
        } else if info.name.ends_with("sign_s") {
            (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect()
        } else if info.name.ends_with("running_var") {
            (0..n).map(|_| rng.range(0.5, 2.0) as f32).collect()
        } else if info.name.ends_with(".mask") {
            net.get_buffer(&info.name).unwrap()
        } else if info.name.ends_with("running_mean") {
            (0..n).map(|_| rng.range(-0.5, 0.5) as f32).collect()
        } else {
            vec![1.0; n]
        };
        net.set_buffer(&info.name, &v).unwrap();
    }
    net
}

fn input(net: &FlowNet, batch: usize, seed: u64) -> Tensor {
    let [c, h, w] = net.plan.spec.shape;
    let mut rng = SplitMix::new(seed);
    let v: Vec<f64> = (0..batch * c * h * w).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, (batch, c, h, w), &Device::Cpu).unwrap()
}

fn context(net: &FlowNet, batch: usize) -> Option<Tensor> {
    let k = net.plan.spec.context;
    (k > 0).then(|| {
        let v: Vec<f64> = (0..batch * k).map(|i| ((i * 7) % 5) as f64 / 4.0 - 0.5).collect();
        Tensor::from_vec(v, (batch, k), &Device::Cpu).unwrap()
    })
}

/// log|det| of a dense `n × n` row-major matrix.
fn log_abs_det(a: &[f64], n: usize) -> f64 {
    let (_, _, u) = lu(a, n);
    (0..n).map(|i| u[i * n + i].abs().ln()).sum()
}

/// Checks, for one example: inverse(forward(x)) = x, the forward log-det against the central-difference
/// Jacobian, and that the inverse's log-det is its negative.
fn check_layer_math(spec: &str) {
    let net = random_net(spec, 3);
    let x = input(&net, 1, 11);
    let ctx = context(&net, 1);
    let d = net.dim();
    let (z, ld) = net.forward_f64(&x, ctx.as_ref(), Mode::Eval).unwrap();
    let (back, ld_inv) = net.inverse_f64(&z, ctx.as_ref()).unwrap();
    let err = (back - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(err < 1e-9, "{spec}: inverse(forward(x)) differs from x by {err}");
    let ld = ld.to_vec1::<f64>().unwrap()[0];
    let ld_inv = ld_inv.to_vec1::<f64>().unwrap()[0];
    assert!((ld + ld_inv).abs() < 1e-9, "{spec}: inverse log-det {ld_inv} is not −{ld}");

    // Central differences, all 2D perturbed inputs in one batch (eval mode: examples are independent).
    let eps = 1e-5;
    let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let mut batch = Vec::with_capacity(2 * d * d);
    for i in 0..d {
        for sign in [1.0, -1.0] {
            let mut v = xv.clone();
            v[i] += sign * eps;
            batch.extend(v);
        }
    }
    let [c, h, w] = net.plan.spec.shape;
    let xb = Tensor::from_vec(batch, (2 * d, c, h, w), &Device::Cpu).unwrap();
    let cb = ctx.as_ref().map(|t| t.broadcast_as((2 * d, t.dim(1).unwrap())).unwrap().contiguous().unwrap());
    let (zb, _) = net.forward_f64(&xb, cb.as_ref(), Mode::Eval).unwrap();
    let zb = zb.to_vec2::<f64>().unwrap();
    let mut jac = vec![0.0; d * d];
    for i in 0..d {
        for o in 0..d {
            jac[o * d + i] = (zb[2 * i][o] - zb[2 * i + 1][o]) / (2.0 * eps);
        }
    }
    let want = log_abs_det(&jac, d);
    assert!((ld - want).abs() < 1e-5 * (1.0 + want.abs()), "{spec}: log-det {ld} but the Jacobian gives {want}");
}

const IMG: &str = r#""shape": [2, 4, 4], "context": 0, "base": "normal""#;
const VEC: &str = r#""shape": [5, 1, 1], "context": 0, "base": "normal""#;

fn spec(head: &str, layers: &str) -> String {
    format!("{{{head}, \"layers\": [{layers}]}}")
}

#[test]
fn every_layer_inverts_and_has_the_jacobians_log_det() {
    let resnet = r#"{"type": "resnet", "channels": 4, "blocks": 1, "norm": "weight"}"#;
    let plain = r#"{"type": "resnet", "channels": 3, "blocks": 2, "norm": "none"}"#;
    let batch = r#"{"type": "resnet", "channels": 3, "blocks": 1, "norm": "batch"}"#;
    let mlp = r#"{"type": "mlp", "hidden": 8, "depth": 2}"#;
    for layers in [
        format!(r#"{{"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {resnet}}}"#),
        format!(r#"{{"type": "coupling", "mask": "checkerboard", "parity": 1, "affine": true, "net": {plain}}}"#),
        format!(r#"{{"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {batch}}}"#),
        format!(r#"{{"type": "coupling", "mask": "channel", "parity": 1, "affine": true, "net": {resnet}}}"#),
        format!(r#"{{"type": "coupling", "mask": "channel", "parity": 0, "affine": false, "net": {resnet}}}"#),
        format!(r#"{{"type": "coupling", "mask": "alternate", "parity": 1, "affine": true, "net": {mlp}}}"#),
        format!(r#"{{"type": "coupling", "mask": "alternate", "parity": 0, "affine": false, "net": {mlp}}}"#),
        format!(r#"{{"type": "coupling", "mask": "halves", "parity": 1, "affine": true, "net": {mlp}}}"#),
        format!(r#"{{"type": "coupling", "mask": "random", "parity": 1, "affine": true, "net": {batch}}}"#),
        format!(r#"{{"type": "coupling", "mask": "random", "parity": 0, "affine": false, "net": {mlp}}}"#),
        r#"{"type": "actnorm"}"#.to_string(),
        r#"{"type": "batchnorm", "momentum": 0.1, "eps": 1e-4}"#.to_string(),
        r#"{"type": "inv1x1"}"#.to_string(),
        r#"{"type": "scale"}"#.to_string(),
        r#"{"type": "reverse"}"#.to_string(),
        r#"{"type": "squeeze"}"#.to_string(),
        r#"{"type": "split"}"#.to_string(),
        r#"{"type": "made", "kind": "maf", "hidden": 12, "depth": 2, "order": "forward"}"#.to_string(),
        r#"{"type": "made", "kind": "iaf", "hidden": 12, "depth": 1, "order": "reverse"}"#.to_string(),
    ] {
        check_layer_math(&spec(IMG, &layers));
    }
    for layers in [
        r#"{"type": "made", "kind": "maf", "hidden": 10, "depth": 2, "order": "reverse"}"#,
        r#"{"type": "made", "kind": "iaf", "hidden": 10, "depth": 2, "order": "forward"}"#,
        r#"{"type": "inv1x1"}"#,
    ] {
        check_layer_math(&spec(VEC, layers));
    }
}

const STACK: &str = r#"
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 4, "blocks": 1, "norm": "weight"}},
  {"type": "actnorm"}, {"type": "batchnorm", "momentum": 0.1, "eps": 1e-4}, {"type": "inv1x1"},
  {"type": "squeeze"},
  {"type": "coupling", "mask": "channel", "parity": 1, "affine": true, "net": {"type": "resnet", "channels": 4, "blocks": 1, "norm": "weight"}},
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 3, "blocks": 1, "norm": "batch"}},
  {"type": "split"},
  {"type": "coupling", "mask": "checkerboard", "parity": 1, "affine": false, "net": {"type": "mlp", "hidden": 8, "depth": 1}},
  {"type": "scale"}"#;

#[test]
fn whole_stacks_invert_and_have_the_jacobians_log_det_with_context() {
    check_layer_math(&spec(r#""shape": [2, 4, 4], "context": 3, "base": "normal""#, STACK));
    let vec_stack = r#"
      {"type": "made", "kind": "maf", "hidden": 16, "depth": 2, "order": "forward"}, {"type": "reverse"},
      {"type": "made", "kind": "iaf", "hidden": 16, "depth": 2, "order": "forward"}, {"type": "reverse"},
      {"type": "coupling", "mask": "alternate", "parity": 1, "affine": true, "net": {"type": "mlp", "hidden": 8, "depth": 2}}"#;
    check_layer_math(&spec(r#""shape": [4, 1, 1], "context": 2, "base": "logistic""#, vec_stack));
}

#[test]
fn made_is_autoregressive_in_its_order() {
    for (order, forward) in [("forward", true), ("reverse", false)] {
        let s = format!(r#"{{"type": "made", "kind": "maf", "hidden": 12, "depth": 2, "order": "{order}"}}"#);
        let net = random_net(&spec(VEC, &s), 5);
        let x = input(&net, 1, 2);
        let d = 5;
        let (z0, _) = net.forward_f64(&x, None, Mode::Eval).unwrap();
        let z0 = z0.to_vec2::<f64>().unwrap()[0].clone();
        let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut dependent = 0;
        for j in 0..d {
            let mut v = xv.clone();
            v[j] += 0.5;
            let (z, _) =
                net.forward_f64(&Tensor::from_vec(v, (1, d, 1, 1), &Device::Cpu).unwrap(), None, Mode::Eval).unwrap();
            let z = z.to_vec2::<f64>().unwrap()[0].clone();
            for i in 0..d {
                // Position of i and j in the autoregressive order.
                let (pi, pj) = if forward { (i, j) } else { (d - 1 - i, d - 1 - j) };
                let changed = (z[i] - z0[i]).abs() > 1e-12;
                if pj > pi {
                    assert!(!changed, "order {order}: u_{i} changed when x_{j} (later in the order) did");
                }
                if pj < pi && changed {
                    dependent += 1;
                }
            }
        }
        assert!(dependent > 0, "order {order}: no output depends on an earlier input (masks too strict)");
    }
}

/// The gradient of the mean training NLL equals central differences, for a sample of parameters of
/// every kind (batch statistics included).
#[test]
fn gradients_match_finite_differences() {
    let net = random_net(&spec(r#""shape": [2, 4, 4], "context": 3, "base": "normal""#, STACK), 7);
    let x = input(&net, 3, 4);
    let ctx = context(&net, 3);
    let vars: Vec<candle_core::Var> = net
        .params()
        .vars
        .iter()
        .zip(&net.plan.params)
        .map(|(v, info)| {
            let t = v.as_tensor().to_dtype(DType::F64).unwrap().reshape(info.shape.as_slice()).unwrap();
            candle_core::Var::from_tensor(&t).unwrap()
        })
        .collect();
    let p: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = net.nll_with(&p, &x, ctx.as_ref()).unwrap();
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (i, info) in net.plan.params.iter().enumerate() {
        let g = grads.get(&p[i]).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = p[i].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for e in [0, base.len() / 2, base.len() - 1] {
            let eps = 1e-6;
            let at = |delta: f64| {
                let mut v = base.clone();
                v[e] += delta;
                let mut q = p.clone();
                q[i] = Tensor::from_vec(v, p[i].shape(), &Device::Cpu).unwrap();
                net.nll_with(&q, &x, ctx.as_ref()).unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let tol = 1e-6 + 1e-5 * fd.abs().max(g[e].abs());
            assert!((fd - g[e]).abs() < tol, "{}[{e}]: autograd {} vs finite differences {fd}", info.name, g[e]);
            checked += 1;
        }
    }
    assert!(checked > 60);
}

#[test]
fn training_lowers_the_nll_and_moves_running_stats_and_initialises_actnorm() {
    let s = spec(
        IMG,
        r#"{"type": "actnorm"}, {"type": "batchnorm", "momentum": 0.5, "eps": 1e-4},
           {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 4, "blocks": 1, "norm": "batch"}},
           {"type": "inv1x1"}"#,
    );
    let mut net = FlowNet::new(&s, 1, Dev::Cpu).unwrap();
    let mut rng = SplitMix::new(9);
    let x: Vec<f32> = (0..16 * 32).map(|i| (3.0 + 2.0 * rng.normal() + (i % 4) as f64) as f32).collect();
    assert_eq!(net.get_buffer("layers.0.initialized").unwrap(), vec![0.0]);
    let before = net.log_prob(&x, None, 16).unwrap().iter().map(|v| -*v as f64).sum::<f64>() / 16.0;
    let cfg = AdamWConfig { lr: 3e-3, weight_decay: 0.0, ..AdamWConfig::default() };
    let mut last = f64::NAN;
    for _ in 0..60 {
        last = net.train_step(&x, None, 16, &cfg).unwrap().loss;
    }
    assert_eq!(net.get_buffer("layers.0.initialized").unwrap(), vec![1.0]);
    // After initialisation, actnorm's output has per-channel mean ≈ 0 on the data it saw.
    let rm = net.get_buffer("layers.1.running_mean").unwrap();
    assert!(rm.iter().all(|v| v.abs() < 0.5), "running mean {rm:?}");
    assert!(net.get_buffer("layers.1.running_var").unwrap() != vec![1.0, 1.0]);
    // The conditioner's batch norms track their convolutions' outputs too.
    let cm = net.get_buffer("layers.2.net.blocks.0.conv1.bn.running_mean").unwrap();
    assert!(cm.iter().any(|v| v.abs() > 1e-3), "conditioner running mean {cm:?}");
    let after = net.log_prob(&x, None, 16).unwrap().iter().map(|v| -*v as f64).sum::<f64>() / 16.0;
    assert!(after < before - 1.0, "NLL {before} → {after} (last train loss {last})");
}

#[test]
fn bad_specs_and_inputs_are_clear_errors() {
    let cases = [
        (spec(r#""shape": [1, 5, 4], "context": 0, "base": "normal""#, r#"{"type": "squeeze"}"#), "even height"),
        (
            spec(
                r#""shape": [3, 4, 4], "context": 0, "base": "normal""#,
                r#"{"type": "coupling", "mask": "channel", "parity": 0, "affine": true, "net": {"type": "mlp", "hidden": 4, "depth": 1}}"#,
            ),
            "even channel count",
        ),
        (spec(r#""shape": [1, 4, 4], "context": 0, "base": "normal""#, r#"{"type": "split"}"#), "at least 2 channels"),
        (
            spec(
                r#""shape": [1, 1, 1], "context": 0, "base": "normal""#,
                r#"{"type": "made", "kind": "maf", "hidden": 4, "depth": 1, "order": "forward"}"#,
            ),
            "at least 2 values",
        ),
        (spec(IMG, r#"{"type": "wobble"}"#), "unreadable spec"),
        (spec(IMG, ""), "at least one layer"),
        (
            spec(
                r#""shape": [2, 4, 4], "context": 0, "base": "normal""#,
                r#"{"type": "squeeze"}, {"type": "squeeze"}, {"type": "squeeze"}"#,
            ),
            "layer 2: squeeze",
        ),
    ];
    for (s, want) in cases {
        let err = FlowNet::new(&s, 0, Dev::Cpu).err().unwrap_or_else(|| panic!("{s} was accepted")).to_string();
        assert!(err.contains(want), "{s}: error {err:?} does not mention {want:?}");
    }
    let net = FlowNet::new(&spec(IMG, r#"{"type": "actnorm"}"#), 0, Dev::Cpu).unwrap();
    let err = net.log_prob(&[0.0; 31], None, 1).unwrap_err().to_string();
    assert!(err.contains("32 values"), "{err}");
    let mut x = vec![0.0f32; 32];
    x[3] = f32::NAN;
    assert!(net.log_prob(&x, None, 1).unwrap_err().to_string().contains("not finite"));
    assert!(net.log_prob(&[0.0; 32], Some(&[1.0]), 1).unwrap_err().to_string().contains("no context"));
    let cond = FlowNet::new(
        &spec(r#""shape": [2, 4, 4], "context": 2, "base": "normal""#, r#"{"type": "actnorm"}"#),
        0,
        Dev::Cpu,
    )
    .unwrap();
    assert!(cond.log_prob(&[0.0; 32], None, 1).unwrap_err().to_string().contains("needs a context"));
    let mut net = net;
    assert!(net.set_buffer("layers.0.initialized", &[2.0]).is_err());
}

#[test]
fn inv1x1_starts_orthogonal_and_lu_reconstructs() {
    let net = FlowNet::new(
        &spec(r#""shape": [6, 2, 2], "context": 0, "base": "normal""#, r#"{"type": "inv1x1"}"#),
        4,
        Dev::Cpu,
    )
    .unwrap();
    let x = input(&net, 2, 1);
    let (z, ld) = net.forward_f64(&x, None, Mode::Eval).unwrap();
    // An orthogonal map keeps norms and has log-det 0.
    let nx = x.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    let nz = z.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    assert!((nx - nz).abs() < 1e-4 * nx, "{nx} vs {nz}");
    assert!(ld.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-5);
}

#[test]
fn random_masks_are_seeded_half_masks_and_checked() {
    let s = spec(
        IMG,
        r#"{"type": "coupling", "mask": "random", "parity": 0, "affine": true, "net": {"type": "mlp", "hidden": 4, "depth": 1}},
           {"type": "coupling", "mask": "random", "parity": 1, "affine": true, "net": {"type": "mlp", "hidden": 4, "depth": 1}}"#,
    );
    let a = FlowNet::new(&s, 5, Dev::Cpu).unwrap();
    let b = FlowNet::new(&s, 5, Dev::Cpu).unwrap();
    let c = FlowNet::new(&s, 6, Dev::Cpu).unwrap();
    let m0 = a.get_buffer("layers.0.mask").unwrap();
    assert_eq!(m0.iter().filter(|&&v| v == 1.0).count(), 16, "half of 32 values pass through");
    assert_eq!(m0, b.get_buffer("layers.0.mask").unwrap(), "same seed, same mask");
    assert_ne!(m0, c.get_buffer("layers.0.mask").unwrap(), "another seed, another mask");
    assert_ne!(m0, a.get_buffer("layers.1.mask").unwrap(), "each layer draws its own");
    // Parity 1 flips the buffer: with a net whose output is non-zero, exactly the flipped places move.
    let mut net = FlowNet::new(&spec(IMG, r#"{"type": "coupling", "mask": "random", "parity": 1, "affine": false, "net": {"type": "mlp", "hidden": 4, "depth": 1}}"#), 2, Dev::Cpu).unwrap();
    net.params_mut().set_param("layers.0.net.1.bias", &[0.5; 32]).unwrap();
    let m = net.get_buffer("layers.0.mask").unwrap();
    let (z, _) = net.encode(&[0.0; 32], None, 1).unwrap();
    for (j, (&zj, &mj)) in z.iter().zip(&m).enumerate() {
        let moved = zj != 0.0;
        assert_eq!(moved, mj == 1.0, "value {j}: buffer {mj}, moved {moved}");
    }
    for bad in [vec![1.0; 32], vec![0.0; 32], (0..32).map(|i| if i == 0 { 0.5 } else { (i % 2) as f32 }).collect()] {
        assert!(net.set_buffer("layers.0.mask", &bad).is_err());
    }
    assert_eq!(net.get_buffer("layers.0.mask").unwrap(), m, "a rejected mask changes nothing");
}
