//! FlowNet checks in f64: every layer type and whole stacks invert, their log-dets equal log|det| of the
//! finite-difference Jacobian, every layer's parameters (and the input and context) have gradients that
//! match finite differences of the loss, every layer computes the formulas of
//! `src/backend/flownet-types.ts` written out independently here (actnorm's data-dependent
//! initialisation and batch norm's running averages included), MADE is autoregressive, and bad specs and
//! inputs are clear errors.

use super::init::{lu, SplitMix};
use super::spec::{LayerSpec, MaskKind, NetSpec, Norm};
use super::{FlowNet, Mode};
use crate::device::Dev;
use crate::optim::AdamWConfig;
use candle_core::{DType, Device, Tensor, Var};

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

/// MAF output u_i changes with x_j exactly when j is earlier in the order or j = i: never for later
/// inputs, and (over a few base points, so that no dead ReLU hides a path) for every earlier one.
#[test]
fn made_is_autoregressive_in_its_order() {
    for (order, forward) in [("forward", true), ("reverse", false)] {
        let s = format!(r#"{{"type": "made", "kind": "maf", "hidden": 12, "depth": 2, "order": "{order}"}}"#);
        let net = random_net(&spec(VEC, &s), 5);
        let d = 5;
        let mut dependent = vec![false; d * d];
        for seed in 2..6 {
            let x = input(&net, 1, seed);
            let (z0, _) = net.forward_f64(&x, None, Mode::Eval).unwrap();
            let z0 = values(&z0);
            let xv = values(&x);
            for j in 0..d {
                let mut v = xv.clone();
                v[j] += 0.5;
                let (z, _) = net
                    .forward_f64(&Tensor::from_vec(v, (1, d, 1, 1), &Device::Cpu).unwrap(), None, Mode::Eval)
                    .unwrap();
                let z = values(&z);
                for i in 0..d {
                    // Position of i and j in the autoregressive order.
                    let (pi, pj) = if forward { (i, j) } else { (d - 1 - i, d - 1 - j) };
                    let changed = (z[i] - z0[i]).abs() > 1e-12;
                    if pj > pi {
                        assert!(!changed, "order {order}: u_{i} changed when x_{j} (later in the order) did");
                    }
                    if pj == pi {
                        assert!(changed, "order {order}: u_{i} did not change with x_{i}");
                    }
                    dependent[i * d + j] |= pj < pi && changed;
                }
            }
        }
        let count = dependent.iter().filter(|&&v| v).count();
        assert_eq!(count, d * (d - 1) / 2, "order {order}: some output ignores an earlier input (masks too strict)");
    }
}

/// Every value of `t`, flattened.
fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

fn param(net: &FlowNet, name: &str) -> Vec<f64> {
    net.params().get_param(name).unwrap().into_iter().map(f64::from).collect()
}

fn buffer(net: &FlowNet, name: &str) -> Vec<f64> {
    net.get_buffer(name).unwrap().into_iter().map(f64::from).collect()
}

/// Largest |a − b| over two equally long slices.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Asserts `got ≈ want` element-wise within `abs + rel·|want|`.
fn assert_close(what: &str, got: &[f64], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: got {g}, expected {w} (diff {})", (g - w).abs());
    }
}

/// A net of `spec` with `from`'s values for every parameter and buffer (matched by name; a prefix of
/// `from`'s layers has the same names).
fn copy_values(from: &FlowNet, spec: &str) -> FlowNet {
    let mut net = FlowNet::new(spec, 0, Dev::Cpu).unwrap();
    for info in net.plan.params.clone() {
        net.params_mut().set_param(&info.name, &from.params().get_param(&info.name).unwrap()).unwrap();
    }
    for info in net.plan.buffers.clone() {
        net.set_buffer(&info.name, &from.get_buffer(&info.name).unwrap()).unwrap();
    }
    net
}

/// Per-channel mean and biased variance over N, H, W of `x [N, C, H·W]` (flat, row-major).
fn channel_stats(x: &[f64], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let at = |i: usize, ch: usize, p: usize| x[(i * c + ch) * hw + p];
    let mean: Vec<f64> = (0..c)
        .map(|ch| (0..n).flat_map(|i| (0..hw).map(move |p| (i, p))).map(|(i, p)| at(i, ch, p)).sum::<f64>() / m)
        .collect();
    let var = (0..c)
        .map(|ch| {
            (0..n)
                .flat_map(|i| (0..hw).map(move |p| (i, p)))
                .map(|(i, p)| (at(i, ch, p) - mean[ch]).powi(2))
                .sum::<f64>()
                / m
        })
        .collect();
    (mean, var)
}

/// Which elements of a tensor the gradient check perturbs: all of one with at most 24 values;
/// otherwise 10 seeded random ones plus, for inv1x1's `upper` / `lower`, the whole strict upper /
/// lower triangle (the only part the layer uses).
fn elements_to_check(name: &str, dims: &[usize], rng: &mut SplitMix) -> Vec<usize> {
    let len: usize = dims.iter().product();
    if len <= 24 {
        return (0..len).collect();
    }
    let c = dims[0];
    let mut picked: Vec<usize> = (0..len)
        .filter(|&e| (name.ends_with(".upper") && e % c > e / c) || (name.ends_with(".lower") && e % c < e / c))
        .collect();
    let mut drawn = 0;
    while drawn < 10 {
        let e = (rng.next_u64() % len as u64) as usize;
        if !picked.contains(&e) {
            picked.push(e);
            drawn += 1;
        }
    }
    picked.sort_unstable();
    picked
}

/// Checks autograd's gradient of the f64 mean training NLL of a random net of `spec` (batch `batch`)
/// against central differences, w.r.t. every parameter, the input and (if any) the context, at the
/// elements of [`elements_to_check`]. Every tensor must have a clearly non-zero gradient
/// (|∂L/∂θ| > 1e-3 on both sides at some checked element), so that a gradient wrongly zero on both
/// sides cannot pass, except the tensors named in `zero`, whose gradient must be zero everywhere.
/// Returns the number of checked elements.
fn check_gradients(spec: &str, seed: u64, batch: usize, zero: &[&str]) -> usize {
    let net = random_net(spec, seed);
    let np = net.plan.params.len();
    let mut names: Vec<String> = net.plan.params.iter().map(|i| i.name.clone()).collect();
    let mut inputs: Vec<Tensor> = net
        .params()
        .vars
        .iter()
        .zip(&net.plan.params)
        .map(|(v, info)| v.as_tensor().to_dtype(DType::F64).unwrap().reshape(info.shape.as_slice()).unwrap())
        .collect();
    names.push("input".into());
    inputs.push(input(&net, batch, seed + 1));
    if let Some(c) = context(&net, batch) {
        names.push("context".into());
        inputs.push(c);
    }
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let nll = |t: &[Tensor]| net.nll_with(&t[..np], &t[np], t.get(np + 1)).unwrap().to_scalar::<f64>().unwrap();
    let grads = net.nll_with(&t[..np], &t[np], t.get(np + 1)).unwrap().backward().unwrap();
    let mut rng = SplitMix::new(seed + 200);
    let mut checked = 0;
    for z in zero {
        assert!(names.iter().any(|n| n == z), "{spec}: no tensor named {z}");
    }
    for (i, name) in names.iter().enumerate() {
        let base = values(&t[i]);
        let g = grads.get(&t[i]).map(values).unwrap_or_else(|| vec![0.0; base.len()]);
        let mut largest = 0.0f64;
        for e in elements_to_check(name, t[i].dims(), &mut rng) {
            let eps = 1e-6;
            let at = |delta: f64| {
                let mut v = base.clone();
                v[e] += delta;
                let mut q = t.clone();
                q[i] = Tensor::from_vec(v, t[i].shape(), &Device::Cpu).unwrap();
                nll(&q)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let tol = 1e-6 + 1e-5 * fd.abs().max(g[e].abs());
            assert!((fd - g[e]).abs() < tol, "{spec}\n{name}[{e}]: autograd {} vs finite differences {fd}", g[e]);
            largest = largest.max(fd.abs().min(g[e].abs()));
            checked += 1;
        }
        if zero.contains(&name.as_str()) {
            let m = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(m < 1e-10, "{spec}\n{name}: gradient should be zero, but max |g| = {m}");
        } else {
            assert!(largest > 1e-3, "{spec}\n{name}: no checked gradient is clearly non-zero (largest {largest})");
        }
    }
    checked
}

/// Image stack with a context: affine couplings with weight-normalised and plain ResNet conditioners,
/// an additive ResNet coupling, actnorm, inv1x1 (C = 2, then C = 4), squeeze, split, scale.
const GRAD_IMAGE: &str = r#"
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 3, "blocks": 1, "norm": "weight"}},
  {"type": "actnorm"}, {"type": "inv1x1"}, {"type": "squeeze"},
  {"type": "coupling", "mask": "channel", "parity": 1, "affine": true, "net": {"type": "resnet", "channels": 3, "blocks": 1, "norm": "none"}},
  {"type": "split"},
  {"type": "coupling", "mask": "checkerboard", "parity": 1, "affine": false, "net": {"type": "resnet", "channels": 3, "blocks": 1, "norm": "weight"}},
  {"type": "inv1x1"}, {"type": "scale"}"#;

/// Image stack over the logistic base: batchnorm in training mode, a batch-normalised ResNet coupling,
/// reverse, an additive plain ResNet coupling and a random-mask MLP coupling, with a context.
const GRAD_BATCH: &str = r#"
  {"type": "batchnorm", "momentum": 0.1, "eps": 1e-3},
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 3, "blocks": 1, "norm": "batch"}},
  {"type": "reverse"},
  {"type": "coupling", "mask": "channel", "parity": 0, "affine": false, "net": {"type": "resnet", "channels": 3, "blocks": 1, "norm": "none"}},
  {"type": "coupling", "mask": "random", "parity": 1, "affine": true, "net": {"type": "mlp", "hidden": 6, "depth": 1}}"#;

/// Vector stack with a context: conditional MAF and IAF layers in both orders, a conditional halves
/// MLP coupling, an additive random-mask coupling, reverse, scale.
const GRAD_VEC: &str = r#"
  {"type": "made", "kind": "maf", "hidden": 8, "depth": 2, "order": "forward"}, {"type": "reverse"},
  {"type": "made", "kind": "iaf", "hidden": 8, "depth": 1, "order": "reverse"},
  {"type": "coupling", "mask": "halves", "parity": 0, "affine": true, "net": {"type": "mlp", "hidden": 8, "depth": 2}},
  {"type": "coupling", "mask": "random", "parity": 0, "affine": false, "net": {"type": "mlp", "hidden": 6, "depth": 1}},
  {"type": "scale"}"#;

/// Vector stack over the logistic base: IAF and MAF, inv1x1 with C = 5 (strict triangles beyond 24
/// values are always checked in full), batchnorm, actnorm, a halves coupling.
const GRAD_VEC2: &str = r#"
  {"type": "made", "kind": "iaf", "hidden": 10, "depth": 1, "order": "forward"},
  {"type": "inv1x1"}, {"type": "batchnorm", "momentum": 0.2, "eps": 1e-3}, {"type": "actnorm"},
  {"type": "coupling", "mask": "halves", "parity": 1, "affine": true, "net": {"type": "mlp", "hidden": 6, "depth": 1}},
  {"type": "made", "kind": "maf", "hidden": 10, "depth": 2, "order": "reverse"}"#;

/// The gradient of the mean training NLL (batch statistics included) equals central differences, for
/// every parameter of every layer type, the input and the context.
#[test]
fn gradients_match_finite_differences() {
    let mut checked = 0;
    checked += check_gradients(&spec(r#""shape": [2, 4, 4], "context": 2, "base": "normal""#, GRAD_IMAGE), 7, 3, &[]);
    // A convolution followed by training-mode batch norm: its bias shifts a channel by a constant that
    // the batch mean takes away again, so ∂L/∂bias is exactly zero.
    let bn_biases = ["layers.1.net.in.bias", "layers.1.net.blocks.0.conv1.bias", "layers.1.net.blocks.0.conv2.bias"];
    checked +=
        check_gradients(&spec(r#""shape": [2, 4, 4], "context": 1, "base": "logistic""#, GRAD_BATCH), 8, 3, &bn_biases);
    checked += check_gradients(&spec(r#""shape": [4, 1, 1], "context": 3, "base": "normal""#, GRAD_VEC), 9, 4, &[]);
    checked += check_gradients(&spec(r#""shape": [5, 1, 1], "context": 0, "base": "logistic""#, GRAD_VEC2), 10, 4, &[]);
    // The original mixed stack: actnorm's bias (layer 1) feeds training-mode batchnorm (layer 2) directly,
    // which subtracts the per-channel batch mean, so its gradient is exactly zero too. (Its `logs`
    // reaches the loss only through batchnorm's eps, but is still clearly non-zero: about 1.7e-3.)
    checked += check_gradients(
        &spec(r#""shape": [2, 4, 4], "context": 3, "base": "normal""#, STACK),
        11,
        3,
        &[
            "layers.1.bias",
            "layers.6.net.in.bias",
            "layers.6.net.blocks.0.conv1.bias",
            "layers.6.net.blocks.0.conv2.bias",
        ],
    );
    assert!(checked > 400, "only {checked} elements checked");
}

/// Image stack of wide ResNet conditioners (32 channels, two blocks: the kernels' fixed-width path;
/// 12 and 9 channels) over images wider than one row tile.
const WIDE_IMAGE: &str = r#"
  {"type": "coupling", "mask": "checkerboard", "parity": 0, "affine": true, "net": {"type": "resnet", "channels": 32, "blocks": 2, "norm": "weight"}},
  {"type": "actnorm"}, {"type": "squeeze"},
  {"type": "coupling", "mask": "channel", "parity": 1, "affine": true, "net": {"type": "resnet", "channels": 12, "blocks": 1, "norm": "none"}},
  {"type": "split"}, {"type": "inv1x1"},
  {"type": "coupling", "mask": "checkerboard", "parity": 1, "affine": false, "net": {"type": "resnet", "channels": 9, "blocks": 1, "norm": "weight"}}"#;

/// f32 training passes (where the CPU has AVX-512 or AVX2, each ResNet conditioner is one fused op over
/// the direct convolution kernels: run on each kernel this CPU has) against the f64 graph that
/// [`gradients_match_finite_differences`] checks: the loss and every parameter's gradient, to f32
/// rounding of the largest entry of each.
#[test]
fn f32_training_passes_match_the_f64_graph() {
    use crate::flow::conv_direct::{self, ConvKernel};
    let kernels: Vec<Option<ConvKernel>> = match ConvKernel::all_available() {
        k if k.is_empty() => vec![None],
        k => k.into_iter().map(Some).collect(),
    };
    for (head, layers, batch) in [
        (r#""shape": [2, 4, 4], "context": 2, "base": "normal""#, GRAD_IMAGE, 3),
        (r#""shape": [1, 12, 12], "context": 0, "base": "normal""#, WIDE_IMAGE, 5),
    ] {
        let spec = spec(head, layers);
        let net = random_net(&spec, 21);
        let np = net.plan.params.len();
        let x = input(&net, batch, 22);
        let ctx = context(&net, batch);
        let p: Vec<Tensor> = net
            .params()
            .vars
            .iter()
            .zip(&net.plan.params)
            .map(|(v, info)| v.as_tensor().to_dtype(DType::F64).unwrap().reshape(info.shape.as_slice()).unwrap())
            .collect();
        let vars: Vec<Var> = p.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let p: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let nll = net.nll_with(&p, &x, ctx.as_ref()).unwrap();
        let grads = nll.backward().unwrap();
        let f = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        let ctx32 = ctx.as_ref().map(&f);
        let want = nll.to_scalar::<f64>().unwrap();
        for &kernel in &kernels {
            let run = || net.loss_and_grads(&f(&x), ctx32.as_deref(), batch).unwrap();
            let (loss, got) = match kernel {
                Some(k) => {
                    let (out, calls) = conv_direct::with_kernel(k, run);
                    assert!(calls > 0, "{k:?}: the fused conditioners ran no direct kernel on this thread");
                    out
                }
                None => run(),
            };
            assert!(
                (loss - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{spec} ({kernel:?})
loss {loss} vs f64 {want}"
            );
            assert_eq!(got.len(), np);
            for ((name, g), t) in got.iter().zip(&p) {
                let want = f(&grads.get(t).cloned().unwrap_or_else(|| t.zeros_like().unwrap()));
                crate::test_values::assert_close_to_scale(&format!("{name} ({kernel:?})"), g, &want, 2e-4, 1e-3);
            }
        }
    }
}

/// The gradient check perturbs every element of small tensors and always the whole strict triangle of
/// inv1x1's LU factors (for C = 2 the only used element of `upper` is index 1).
#[test]
fn elements_to_check_cover_the_strict_triangles_and_small_tensors() {
    let mut rng = SplitMix::new(1);
    assert_eq!(elements_to_check("layers.2.upper", &[2, 2], &mut rng), vec![0, 1, 2, 3]);
    let big = elements_to_check("layers.1.upper", &[6, 6], &mut rng);
    for r in 0..6 {
        for c in r + 1..6 {
            assert!(big.contains(&(r * 6 + c)), "strict upper ({r}, {c}) not checked");
        }
    }
    assert_eq!(big.len(), 15 + 10);
    let low = elements_to_check("layers.1.lower", &[6, 6], &mut rng);
    assert!((1..6).all(|r| (0..r).all(|c| low.contains(&(r * 6 + c)))));
    let other = elements_to_check("layers.0.net.in.weight_v", &[3, 4, 3, 3], &mut rng);
    assert_eq!(other.len(), 10);
    assert!(other.iter().all(|&e| e < 108));
}

/// A gradient step lowers the NLL: `before` is measured after the data-dependent initialisation, so
/// actnorm's initialisation alone cannot pass. The last step's running averages follow the momentum
/// formula on the batchnorm layer's actual input.
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
    let nll = |net: &FlowNet| net.log_prob(&x, None, 16).unwrap().iter().map(|v| -*v as f64).sum::<f64>() / 16.0;
    assert!(net.data_init(&x, None, 16).unwrap());
    assert_eq!(net.get_buffer("layers.0.initialized").unwrap(), vec![1.0]);
    // The initialisation pass moves no running average (only training steps do).
    assert_eq!(net.get_buffer("layers.1.running_mean").unwrap(), vec![0.0, 0.0]);
    assert_eq!(net.get_buffer("layers.1.running_var").unwrap(), vec![1.0, 1.0]);
    assert_eq!(net.get_buffer("layers.2.net.in.bn.running_var").unwrap(), vec![1.0; 4]);
    let before = nll(&net);
    let cfg = AdamWConfig { lr: 3e-3, weight_decay: 0.0, ..AdamWConfig::default() };
    let mut last = f64::NAN;
    let xd = Tensor::from_vec(x.iter().map(|&v| v as f64).collect::<Vec<_>>(), (16, 2, 4, 4), &Device::Cpu).unwrap();
    for step in 0..60 {
        let expected = (step == 59).then(|| {
            // running = (1 − 0.5)·running + 0.5·batch, on actnorm's output with the current parameters.
            let h = values(
                &copy_values(&net, &spec(IMG, r#"{"type": "actnorm"}"#)).forward_f64(&xd, None, Mode::Eval).unwrap().0,
            );
            let (m, v) = channel_stats(&h, 16, 2, 16);
            let (om, ov) = (buffer(&net, "layers.1.running_mean"), buffer(&net, "layers.1.running_var"));
            let em: Vec<f64> = (0..2).map(|c| 0.5 * om[c] + 0.5 * m[c]).collect();
            let ev: Vec<f64> = (0..2).map(|c| 0.5 * ov[c] + 0.5 * v[c] * 256.0 / 255.0).collect();
            (em, ev)
        });
        last = net.train_step(&x, None, 16, &cfg).unwrap().loss;
        if let Some((em, ev)) = expected {
            assert_close("running_mean", &buffer(&net, "layers.1.running_mean"), &em, 1e-5, 1e-5);
            assert_close("running_var", &buffer(&net, "layers.1.running_var"), &ev, 1e-5, 1e-5);
        }
    }
    let after = nll(&net);
    assert!(after < before - 5.0, "NLL {before} → {after} (last train loss {last})");
}

/// Glow's data-dependent initialisation: bias = −mean_c, logs = −ln(std_c + 1e-6) of the layer's own
/// input (biased std over N, H, W), so its output has per-channel mean 0 and std std_c/(std_c + 1e-6).
#[test]
fn actnorm_data_init_normalises_its_own_input_exactly() {
    let head = r#""shape": [3, 2, 2], "context": 0, "base": "normal""#;
    let mut net = random_net(&spec(head, r#"{"type": "inv1x1"}, {"type": "actnorm"}"#), 21);
    net.set_buffer("layers.1.initialized", &[0.0]).unwrap();
    let prefix = copy_values(&net, &spec(head, r#"{"type": "inv1x1"}"#));
    let (n, c, hw) = (5, 3, 4);
    let mut rng = SplitMix::new(8);
    // Per-channel offsets and spreads, so the statistics are far from 0 and 1.
    let xv: Vec<f32> = (0..n * c * hw)
        .map(|i| (rng.normal() * (1.0 + (i / hw % c) as f64) + 2.0 * (i / hw % c) as f64 - 1.0) as f32)
        .collect();
    let x = Tensor::from_vec(xv.iter().map(|&v| v as f64).collect::<Vec<_>>(), (n, c, 2, 2), &Device::Cpu).unwrap();
    let (h, ld0) = prefix.forward_f64(&x, None, Mode::Eval).unwrap();
    let (h, ld0) = (values(&h), values(&ld0));
    let (mean, var) = channel_stats(&h, n, c, hw);
    let std: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
    let want_bias: Vec<f64> = mean.iter().map(|m| -m).collect();
    let want_logs: Vec<f64> = std.iter().map(|s| -(s + 1e-6).ln()).collect();
    assert!(
        std.iter().all(|s| (s - 1.0).abs() > 0.05) && mean.iter().any(|m| m.abs() > 0.5),
        "trivial stats {mean:?} {std:?}"
    );

    // An f64 initialisation pass: y = (h − mean)·exp(logs) exactly, log-det + H·W·Σ logs.
    let stored = (param(&net, "layers.1.bias"), param(&net, "layers.1.logs"));
    let (z, ld) = net.forward_f64(&x, None, Mode::Init).unwrap();
    let (z, ld) = (values(&z), values(&ld));
    let want_z: Vec<f64> =
        (0..n * c * hw).map(|i| (h[i] + want_bias[i / hw % c]) * want_logs[i / hw % c].exp()).collect();
    assert_close("init output", &z, &want_z, 1e-10, 1e-10);
    let (zm, zv) = channel_stats(&z, n, c, hw);
    assert_close("init output mean", &zm, &[0.0; 3], 1e-10, 0.0);
    let want_std: Vec<f64> = std.iter().map(|s| s / (s + 1e-6)).collect();
    assert_close("init output std", &zv.iter().map(|v| v.sqrt()).collect::<Vec<_>>(), &want_std, 1e-10, 0.0);
    let want_ld: Vec<f64> = ld0.iter().map(|l| l + hw as f64 * want_logs.iter().sum::<f64>()).collect();
    assert_close("init log-det", &ld, &want_ld, 1e-10, 1e-10);
    // That pass stores nothing; an evaluation pass never initialises: it uses the stored values.
    assert_eq!(net.get_buffer("layers.1.initialized").unwrap(), vec![0.0]);
    assert_eq!((param(&net, "layers.1.bias"), param(&net, "layers.1.logs")), stored);
    let (ze, _) = net.forward_f64(&x, None, Mode::Eval).unwrap();
    let want_e: Vec<f64> =
        (0..n * c * hw).map(|i| (h[i] + stored.0[i / hw % c]) * stored.1[i / hw % c].exp()).collect();
    assert_close("eval output", &values(&ze), &want_e, 1e-10, 1e-10);

    // data_init (f32) stores the same values, to f32 precision, and sets the flag.
    assert!(net.data_init(&xv, None, n).unwrap());
    assert_eq!(net.get_buffer("layers.1.initialized").unwrap(), vec![1.0]);
    assert_close("bias", &param(&net, "layers.1.bias"), &want_bias, 1e-5, 1e-5);
    assert_close("logs", &param(&net, "layers.1.logs"), &want_logs, 1e-5, 1e-5);
    // Once initialised, neither data_init nor an Init pass touches the layer again.
    let (b1, l1) = (param(&net, "layers.1.bias"), param(&net, "layers.1.logs"));
    let other: Vec<f32> = xv.iter().map(|v| 3.0 * v + 1.0).collect();
    assert!(!net.data_init(&other, None, n).unwrap());
    assert_eq!((param(&net, "layers.1.bias"), param(&net, "layers.1.logs")), (b1, l1));
    let (zi, _) = net.forward_f64(&x, None, Mode::Init).unwrap();
    let (ze, _) = net.forward_f64(&x, None, Mode::Eval).unwrap();
    assert_eq!(values(&zi), values(&ze));
}

/// Batchnorm: training passes normalise with the batch's mean and biased variance, evaluation with the
/// running averages; a training step sets running = (1 − m)·running + m·batch with the variance
/// unbiased by M/(M − 1), M = N·H·W.
#[test]
fn batchnorm_follows_the_contract_in_training_and_evaluation() {
    let head = r#""shape": [2, 3, 2], "context": 0, "base": "normal""#;
    let (momentum, eps) = (0.3, 1e-3);
    let mut net =
        random_net(&spec(head, r#"{"type": "scale"}, {"type": "batchnorm", "momentum": 0.3, "eps": 1e-3}"#), 31);
    let prefix = copy_values(&net, &spec(head, r#"{"type": "scale"}"#));
    let (n, c, hw) = (4, 2, 6);
    let mm = (n * hw) as f64;
    let mut rng = SplitMix::new(12);
    let xv: Vec<f32> = (0..n * c * hw).map(|i| (1.5 * rng.normal() + 2.0 * (i / hw % c) as f64 - 0.7) as f32).collect();
    let x = Tensor::from_vec(xv.iter().map(|&v| v as f64).collect::<Vec<_>>(), (n, c, 3, 2), &Device::Cpu).unwrap();
    let (h, ld0) = prefix.forward_f64(&x, None, Mode::Eval).unwrap();
    let (h, ld0) = (values(&h), values(&ld0));
    let (mean, var) = channel_stats(&h, n, c, hw);
    let (lg, beta) = (param(&net, "layers.1.log_gamma"), param(&net, "layers.1.beta"));
    let (rm, rv) = (buffer(&net, "layers.1.running_mean"), buffer(&net, "layers.1.running_var"));
    assert!(rv.iter().all(|v| (v - 1.0).abs() > 1e-3), "running_var {rv:?} should not be the initial 1");
    let apply = |m: &[f64], v: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let y = (0..n * c * hw)
            .map(|i| {
                let ch = i / hw % c;
                (h[i] - m[ch]) / (v[ch] + eps).sqrt() * lg[ch].exp() + beta[ch]
            })
            .collect();
        let l: f64 = (0..c).map(|ch| lg[ch] - 0.5 * (v[ch] + eps).ln()).sum::<f64>() * hw as f64;
        (y, ld0.iter().map(|a| a + l).collect())
    };
    let (want_y, want_ld) = apply(&mean, &var);
    let (z, ld) = net.forward_f64(&x, None, Mode::Train).unwrap();
    assert_close("train output", &values(&z), &want_y, 1e-10, 1e-10);
    assert_close("train log-det", &values(&ld), &want_ld, 1e-10, 1e-10);
    let (want_y, want_ld) = apply(&rm, &rv);
    let (z, ld) = net.forward_f64(&x, None, Mode::Eval).unwrap();
    assert_close("eval output", &values(&z), &want_y, 1e-10, 1e-10);
    assert_close("eval log-det", &values(&ld), &want_ld, 1e-10, 1e-10);

    let cfg = AdamWConfig { lr: 1e-3, weight_decay: 0.0, ..AdamWConfig::default() };
    net.train_step(&xv, None, n, &cfg).unwrap();
    let em: Vec<f64> = (0..c).map(|ch| (1.0 - momentum) * rm[ch] + momentum * mean[ch]).collect();
    let ev: Vec<f64> = (0..c).map(|ch| (1.0 - momentum) * rv[ch] + momentum * var[ch] * mm / (mm - 1.0)).collect();
    let (tol_abs, tol_rel) = (1e-5, 1e-5);
    assert_close("running_mean", &buffer(&net, "layers.1.running_mean"), &em, tol_abs, tol_rel);
    assert_close("running_var", &buffer(&net, "layers.1.running_var"), &ev, tol_abs, tol_rel);
    // The tolerance tells the unbiased update from the biased one by a wide margin.
    assert!((0..c).all(|ch| momentum * var[ch] / (mm - 1.0) > 100.0 * (tol_abs + tol_rel * ev[ch])));
}

/// The contract's coupling mask b over `[C, H, W]`, flat (1 = passes through); for `random`, the
/// buffer `m` XOR the parity.
fn contract_mask(kind: MaskKind, parity: u8, [c, h, w]: [usize; 3], m: Option<&[f64]>) -> Vec<f64> {
    let (p, d) = (parity as usize, c * h * w);
    (0..d)
        .map(|i| {
            let (ch, y, x) = (i / (h * w), i / w % h, i % w);
            let on = match kind {
                MaskKind::Checkerboard => (y + x + p) % 2 == 0,
                MaskKind::Channel => (ch < c / 2) != (p == 1),
                MaskKind::Alternate => (i + p) % 2 == 0,
                MaskKind::Halves => ((i as f64) < d as f64 / 2.0) != (p == 1),
                MaskKind::Random => (m.expect("random mask buffer")[i] == 1.0) != (p == 1),
            };
            f64::from(u8::from(on))
        })
        .collect()
}

/// 3×3 cross-correlation (PyTorch's conv2d), stride 1, zero padding 1: `x [N, Cin, H, W]`,
/// `weight [F, Cin, 3, 3]`, `bias [F]` → `[N, F, H, W]`.
fn conv3x3_ref(x: &[f64], [n, cin, h, w]: [usize; 4], weight: &[f64], bias: &[f64]) -> Vec<f64> {
    let f = bias.len();
    assert_eq!((x.len(), weight.len()), (n * cin * h * w, f * cin * 9));
    let mut out = vec![0.0; n * f * h * w];
    for i in 0..n {
        for o in 0..f {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = bias[o];
                    for ci in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (sy, sx) = ((y + ky) as isize - 1, (xx + kx) as isize - 1);
                                if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                    acc += weight[((o * cin + ci) * 3 + ky) * 3 + kx]
                                        * x[((i * cin + ci) * h + sy as usize) * w + sx as usize];
                                }
                            }
                        }
                    }
                    out[((i * f + o) * h + y) * w + xx] = acc;
                }
            }
        }
    }
    out
}

fn relu(v: &[f64]) -> Vec<f64> {
    v.iter().map(|a| a.max(0.0)).collect()
}

/// `weight · a + bias` of a PyTorch-layout linear (`weight [out, in]`).
fn linear_ref(weight: &[f64], bias: &[f64], a: &[f64]) -> Vec<f64> {
    let i = a.len();
    assert_eq!(weight.len(), bias.len() * i);
    (0..bias.len()).map(|o| bias[o] + (0..i).map(|q| weight[o * i + q] * a[q]).sum::<f64>()).collect()
}

/// Batch-norm statistics a reference pass used: (conv name, batch mean, biased batch variance).
type BnStats = Vec<(String, Vec<f64>, Vec<f64>)>;

/// The contract's coupling (layer 0 of `net`) on `x [N, D]` with the context `ctx [N, K]`, written out
/// from `flownet-types.ts`: `(y, logdet, batch-norm statistics)`; `train` picks the batch's statistics
/// over the running averages for a batch-normalised ResNet.
fn coupling_ref(net: &FlowNet, x: &[f64], n: usize, ctx: &[f64], train: bool) -> (Vec<f64>, Vec<f64>, BnStats) {
    let LayerSpec::Coupling { mask, parity, affine, net: cond } = net.plan.layers[0].spec.clone() else {
        panic!("layer 0 is not a coupling")
    };
    let [c, h, w] = net.plan.spec.shape;
    let (d, hw, k) = (c * h * w, h * w, net.plan.spec.context);
    let m = (mask == MaskKind::Random).then(|| buffer(net, "layers.0.mask"));
    let b = contract_mask(mask, parity, [c, h, w], m.as_deref());
    let per = if affine { 2 } else { 1 };
    let xm: Vec<f64> = (0..n * d).map(|i| x[i] * b[i % d]).collect();
    let mut stats = Vec::new();
    // The conditioner's output, per example `per` blocks of D values: s_raw then t (or t alone).
    let out: Vec<f64> = match cond {
        NetSpec::Mlp { depth, .. } => (0..n)
            .flat_map(|i| {
                let mut a: Vec<f64> = xm[i * d..(i + 1) * d].iter().chain(&ctx[i * k..(i + 1) * k]).copied().collect();
                for j in 0..=depth {
                    let wt = param(net, &format!("layers.0.net.{j}.weight"));
                    a = linear_ref(&wt, &param(net, &format!("layers.0.net.{j}.bias")), &a);
                    if j < depth {
                        a = relu(&a);
                    }
                }
                assert_eq!(a.len(), per * d);
                a
            })
            .collect(),
        NetSpec::Resnet { channels: f, blocks, norm } => {
            let cin = c + k;
            let mut a = vec![0.0; n * cin * hw];
            for i in 0..n {
                for ch in 0..cin {
                    for p in 0..hw {
                        a[(i * cin + ch) * hw + p] = if ch < c { xm[i * d + ch * hw + p] } else { ctx[i * k + ch - c] };
                    }
                }
            }
            let conv = |name: &str, input: &[f64], cin: usize, stats: &mut BnStats| -> Vec<f64> {
                let pre = format!("layers.0.net.{name}");
                let bias = param(net, &format!("{pre}.bias"));
                let weight = if norm == Norm::Weight {
                    let (v, g) = (param(net, &format!("{pre}.weight_v")), param(net, &format!("{pre}.weight_g")));
                    let len = cin * 9;
                    let norms: Vec<f64> =
                        (0..f).map(|o| v[o * len..(o + 1) * len].iter().map(|a| a * a).sum::<f64>().sqrt()).collect();
                    (0..v.len()).map(|e| g[e / len] * v[e] / norms[e / len]).collect()
                } else {
                    param(net, &format!("{pre}.weight"))
                };
                let out = conv3x3_ref(input, [n, cin, h, w], &weight, &bias);
                if norm != Norm::Batch {
                    return out;
                }
                let (mean, var) = if train {
                    let (mean, var) = channel_stats(&out, n, f, hw);
                    stats.push((name.to_string(), mean.clone(), var.clone()));
                    (mean, var)
                } else {
                    (buffer(net, &format!("{pre}.bn.running_mean")), buffer(net, &format!("{pre}.bn.running_var")))
                };
                let (gamma, beta) = (param(net, &format!("{pre}.bn.weight")), param(net, &format!("{pre}.bn.bias")));
                (0..out.len())
                    .map(|e| {
                        let o = e / hw % f;
                        (out[e] - mean[o]) / (var[o] + 1e-5).sqrt() * gamma[o] + beta[o]
                    })
                    .collect()
            };
            let mut hcur = conv("in", &a, cin, &mut stats);
            for bl in 0..blocks {
                let r = conv(&format!("blocks.{bl}.conv1"), &relu(&hcur), f, &mut stats);
                let r = conv(&format!("blocks.{bl}.conv2"), &relu(&r), f, &mut stats);
                hcur.iter_mut().zip(r).for_each(|(a, b)| *a += b);
            }
            let (ow, ob) = (param(net, "layers.0.net.out.weight"), param(net, "layers.0.net.out.bias"));
            // [N, per·C, H, W]: channels 0..C are s_raw, C..2C are t.
            conv3x3_ref(&relu(&hcur), [n, f, h, w], &ow, &ob)
        }
    };
    let scale = if affine { param(net, "layers.0.scale") } else { Vec::new() };
    let (mut y, mut ld) = (vec![0.0; n * d], vec![0.0; n]);
    for i in 0..n {
        for e in 0..d {
            let (xv, be) = (x[i * d + e], b[e]);
            if affine {
                let s = scale[e / hw] * out[i * 2 * d + e].tanh();
                let t = out[i * 2 * d + d + e];
                y[i * d + e] = be * xv + (1.0 - be) * (xv * s.exp() + t);
                ld[i] += (1.0 - be) * s;
            } else {
                y[i * d + e] = be * xv + (1.0 - be) * (xv + out[i * d + e]);
            }
        }
    }
    (y, ld, stats)
}

/// Every coupling (masks, affine and additive, MLP and ResNet conditioners with each norm, with a
/// context) equals the contract's formulas written out in f64; batch-normalised conditioners use the
/// batch's statistics in training and the running averages in evaluation, and a training step moves
/// each running average by momentum 0.1 with the unbiased variance.
#[test]
fn couplings_match_the_contract_formulas() {
    let img = r#""shape": [2, 2, 3], "context": 2, "base": "normal""#;
    let vec5 = r#""shape": [5, 1, 1], "context": 1, "base": "normal""#;
    let coupling = |mask: &str, parity: u8, affine: bool, net: &str| {
        format!(r#"{{"type": "coupling", "mask": "{mask}", "parity": {parity}, "affine": {affine}, "net": {net}}}"#)
    };
    let resnet = |f: usize, blocks: usize, norm: &str| {
        format!(r#"{{"type": "resnet", "channels": {f}, "blocks": {blocks}, "norm": "{norm}"}}"#)
    };
    let mlp = |hidden: usize, depth: usize| format!(r#"{{"type": "mlp", "hidden": {hidden}, "depth": {depth}}}"#);
    let cases = [
        (img, coupling("checkerboard", 0, true, &resnet(3, 1, "weight"))),
        (img, coupling("checkerboard", 1, false, &resnet(3, 2, "none"))),
        (img, coupling("channel", 1, true, &resnet(3, 1, "batch"))),
        (img, coupling("channel", 0, true, &mlp(6, 2))),
        (img, coupling("alternate", 1, true, &mlp(6, 1))),
        (img, coupling("halves", 0, true, &mlp(5, 1))),
        (img, coupling("random", 1, true, &resnet(2, 1, "batch"))),
        (img, coupling("random", 0, false, &mlp(5, 1))),
        (vec5, coupling("halves", 1, true, &mlp(6, 1))),
        (vec5, coupling("alternate", 0, false, &mlp(6, 2))),
    ];
    for (head, layer) in cases {
        let s = spec(head, &layer);
        let mut net = random_net(&s, 41);
        let n = 3;
        // f32 values, so that the f32 training step below sees exactly this batch.
        let x = input(&net, n, 5).to_dtype(DType::F32).unwrap().to_dtype(DType::F64).unwrap();
        let ctx = context(&net, n);
        let (xv, cv) = (values(&x), ctx.as_ref().map(values).unwrap_or_default());
        let (want_y, want_ld, stats) = coupling_ref(&net, &xv, n, &cv, true);
        assert!(max_diff(&want_y, &xv) > 0.05, "{s}: the reference leaves x unchanged (trivial case)");
        let (z, ld) = net.forward_f64(&x, ctx.as_ref(), Mode::Train).unwrap();
        assert_close(&format!("{s}: train output"), &values(&z), &want_y, 1e-10, 1e-10);
        assert_close(&format!("{s}: train log-det"), &values(&ld), &want_ld, 1e-10, 1e-10);
        if stats.is_empty() {
            continue;
        }
        let (want_y, want_ld, _) = coupling_ref(&net, &xv, n, &cv, false);
        let (z, ld) = net.forward_f64(&x, ctx.as_ref(), Mode::Eval).unwrap();
        assert_close(&format!("{s}: eval output"), &values(&z), &want_y, 1e-10, 1e-10);
        assert_close(&format!("{s}: eval log-det"), &values(&ld), &want_ld, 1e-10, 1e-10);
        let mm = (n * 2 * 3) as f64;
        let old: Vec<(Vec<f64>, Vec<f64>)> = stats
            .iter()
            .map(|(name, _, _)| {
                let pre = format!("layers.0.net.{name}.bn");
                (buffer(&net, &format!("{pre}.running_mean")), buffer(&net, &format!("{pre}.running_var")))
            })
            .collect();
        let (x32, c32): (Vec<f32>, Vec<f32>) =
            (xv.iter().map(|&v| v as f32).collect(), cv.iter().map(|&v| v as f32).collect());
        let cfg = AdamWConfig { lr: 1e-3, weight_decay: 0.0, ..AdamWConfig::default() };
        net.train_step(&x32, Some(&c32), n, &cfg).unwrap();
        for ((name, mean, var), (om, ov)) in stats.iter().zip(&old) {
            let pre = format!("layers.0.net.{name}.bn");
            let em: Vec<f64> = om.iter().zip(mean).map(|(o, b)| 0.9 * o + 0.1 * b).collect();
            let ev: Vec<f64> = ov.iter().zip(var).map(|(o, b)| 0.9 * o + 0.1 * b * mm / (mm - 1.0)).collect();
            assert_close(
                &format!("{s}: {pre}.running_mean"),
                &buffer(&net, &format!("{pre}.running_mean")),
                &em,
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("{s}: {pre}.running_var"),
                &buffer(&net, &format!("{pre}.running_var")),
                &ev,
                1e-5,
                1e-5,
            );
        }
    }
}

/// inv1x1 layer `k`'s matrix by the contract, row-major `[C, C]`:
/// W = P · (I + strict_lower(lower)) · (strict_upper(upper) + diag(sign_s ⊙ exp(log_s))), P[i][perm[i]] = 1.
fn contract_inv1x1(net: &FlowNet, k: usize) -> Vec<f64> {
    let (lo, up, ls) = (
        param(net, &format!("layers.{k}.lower")),
        param(net, &format!("layers.{k}.upper")),
        param(net, &format!("layers.{k}.log_s")),
    );
    let (perm, sign) = (buffer(net, &format!("layers.{k}.perm")), buffer(net, &format!("layers.{k}.sign_s")));
    let c = ls.len();
    let l = |r: usize, q: usize| if q < r { lo[r * c + q] } else { f64::from(u8::from(q == r)) };
    let u = |r: usize, q: usize| {
        if q > r {
            up[r * c + q]
        } else if q == r {
            sign[r] * ls[r].exp()
        } else {
            0.0
        }
    };
    let lu_: Vec<f64> = (0..c * c).map(|e| (0..c).map(|a| l(e / c, a) * u(a, e % c)).sum()).collect();
    // (P·M)[r] = Σ_j P[r][j]·M[j] = M[perm[r]].
    (0..c * c).map(|e| lu_[perm[e / c] as usize * c + e % c]).collect()
}

/// actnorm, scale, inv1x1, reverse, squeeze and split compute exactly the contract's formulas (values,
/// orders and log-dets), and both bases have the contract's log-density.
#[test]
fn single_layers_and_bases_match_the_contract_formulas() {
    let head = r#""shape": [3, 2, 4], "context": 0, "base": "normal""#;
    let (n, c, h, w) = (2, 3, 2, 4);
    let (hw, d) = (h * w, c * h * w);
    let run = |layer: &str| {
        let net = random_net(&spec(head, layer), 51);
        let x = input(&net, n, 6);
        let (z, ld) = net.forward_f64(&x, None, Mode::Eval).unwrap();
        (net, values(&x), values(&z), values(&ld))
    };
    let check = |what: &str, got: (&[f64], &[f64]), want: (&[f64], &[f64])| {
        assert_close(&format!("{what} output"), got.0, want.0, 1e-12, 1e-12);
        assert_close(&format!("{what} log-det"), got.1, want.1, 1e-12, 1e-12);
    };

    // actnorm: y = (x + bias[c])·exp(logs[c]), logdet = H·W·Σ logs.
    let (net, x, z, ld) = run(r#"{"type": "actnorm"}"#);
    let (bias, logs) = (param(&net, "layers.0.bias"), param(&net, "layers.0.logs"));
    let want: Vec<f64> = (0..n * d).map(|i| (x[i] + bias[i / hw % c]) * logs[i / hw % c].exp()).collect();
    check("actnorm", (&z, &ld), (&want, &[hw as f64 * logs.iter().sum::<f64>(); 2]));

    // scale: y = x ⊙ exp(log_scale) over [C, H, W], logdet = Σ log_scale.
    let (net, x, z, ld) = run(r#"{"type": "scale"}"#);
    let ls = param(&net, "layers.0.log_scale");
    let want: Vec<f64> = (0..n * d).map(|i| x[i] * ls[i % d].exp()).collect();
    check("scale", (&z, &ld), (&want, &[ls.iter().sum::<f64>(); 2]));

    // inv1x1: y[n, :, h, w] = W · x[n, :, h, w], logdet = H·W·Σ log_s.
    let (net, x, z, ld) = run(r#"{"type": "inv1x1"}"#);
    assert_ne!(buffer(&net, "layers.0.perm"), vec![0.0, 1.0, 2.0], "the test needs a non-identity permutation");
    let wm = contract_inv1x1(&net, 0);
    let want: Vec<f64> = (0..n * d)
        .map(|i| {
            let (e, r, p) = (i / d, i / hw % c, i % hw);
            (0..c).map(|q| wm[r * c + q] * x[e * d + q * hw + p]).sum()
        })
        .collect();
    let sum_ls = param(&net, "layers.0.log_s").iter().sum::<f64>();
    check("inv1x1", (&z, &ld), (&want, &[hw as f64 * sum_ls; 2]));

    // reverse: channel order reversed.
    let (_, x, z, ld) = run(r#"{"type": "reverse"}"#);
    let want: Vec<f64> = (0..n * d).map(|i| x[i / d * d + (c - 1 - i / hw % c) * hw + i % hw]).collect();
    check("reverse", (&z, &ld), (&want, &[0.0; 2]));

    // squeeze: [3, 2, 4] → [12, 1, 2], y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j].
    let (_, x, z, ld) = run(r#"{"type": "squeeze"}"#);
    let mut want = vec![f64::NAN; n * d];
    for e in 0..n {
        for ch in 0..c {
            for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                for ww in 0..w / 2 {
                    want[e * d + (4 * ch + 2 * i + j) * (w / 2) + ww] = x[e * d + ch * hw + i * w + 2 * ww + j];
                }
            }
        }
    }
    check("squeeze", (&z, &ld), (&want, &[0.0; 2]));

    // split with C = 3: the last 2 channels leave first in the latent, the first 1 continues (and ends it).
    let (_, x, z, ld) = run(r#"{"type": "split"}"#);
    let want: Vec<f64> = (0..n)
        .flat_map(|e| x[e * d + hw..(e + 1) * d].iter().chain(&x[e * d..e * d + hw]).copied().collect::<Vec<_>>())
        .collect();
    check("split", (&z, &ld), (&want, &[0.0; 2]));

    // Bases, on z [N, D] with values out to ±4.
    let zv: Vec<f64> = (0..n * d).map(|i| (i as f64 * 0.37).sin() * 4.0).collect();
    let zt = Tensor::from_vec(zv.clone(), (n, d), &Device::Cpu).unwrap();
    let softplus = |a: f64| a.exp().ln_1p();
    let normal = random_net(&spec(head, r#"{"type": "reverse"}"#), 1);
    let want: Vec<f64> = (0..n)
        .map(|e| {
            -0.5 * zv[e * d..(e + 1) * d].iter().map(|a| a * a).sum::<f64>()
                - d as f64 / 2.0 * (2.0 * std::f64::consts::PI).ln()
        })
        .collect();
    assert_close("normal log p", &values(&normal.base_log_prob(&zt).unwrap()), &want, 1e-12, 1e-12);
    let logistic = random_net(&spec(&head.replace("normal", "logistic"), r#"{"type": "reverse"}"#), 1);
    let want: Vec<f64> =
        (0..n).map(|e| -zv[e * d..(e + 1) * d].iter().map(|&a| softplus(a) + softplus(-a)).sum::<f64>()).collect();
    assert_close("logistic log p", &values(&logistic.base_log_prob(&zt).unwrap()), &want, 1e-12, 1e-12);
    // log p(x) = log p(z) + Σ logdets, through the public f32 entry point (scale has a non-zero log-det).
    let net = random_net(&spec(&head.replace("normal", "logistic"), r#"{"type": "scale"}"#), 2);
    let x32: Vec<f32> = (0..d).map(|i| (i as f32 * 0.21).cos() * 2.0).collect();
    let ls = param(&net, "layers.0.log_scale");
    let zz: Vec<f64> = (0..d).map(|i| x32[i] as f64 * ls[i].exp()).collect();
    let want = -zz.iter().map(|&a| softplus(a) + softplus(-a)).sum::<f64>() + ls.iter().sum::<f64>();
    let got = net.log_prob(&x32, None, 1).unwrap()[0] as f64;
    assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "log p(x) {got}, expected {want}");
}

/// The contract's MADE masks `[out, in]` (flat) for each of the depth + 1 linears: input degrees
/// m_in[d] = d + 1 (forward) or D − d (reverse), hidden degrees (j mod (D − 1)) + 1; hidden masks
/// m_out ≥ m_in, output masks m_in[o mod D] > m_hidden; context inputs connect to every first-layer unit.
fn contract_made_masks(d: usize, k: usize, hidden: usize, depth: usize, forward: bool) -> Vec<Vec<f64>> {
    let m_in: Vec<usize> = (0..d).map(|i| if forward { i + 1 } else { d - i }).collect();
    let m_h: Vec<usize> = (0..hidden).map(|j| j % (d - 1) + 1).collect();
    let b = |v: bool| f64::from(u8::from(v));
    (0..=depth)
        .map(|j| {
            if j == 0 {
                (0..hidden)
                    .flat_map(|o| (0..d + k).map(move |i| (o, i)))
                    .map(|(o, i)| b(i >= d || m_h[o] >= m_in[i]))
                    .collect()
            } else if j < depth {
                (0..hidden).flat_map(|o| (0..hidden).map(move |i| (o, i))).map(|(o, i)| b(m_h[o] >= m_h[i])).collect()
            } else {
                (0..2 * d)
                    .flat_map(|o| (0..hidden).map(move |i| (o, i)))
                    .map(|(o, i)| b(m_in[o % d] > m_h[i]))
                    .collect()
            }
        })
        .collect()
}

/// μ and α = scale ⊙ tanh(α_raw) of layer 0 (a MADE layer) of `net` on `v [N, D]`, by the contract.
fn made_ref(net: &FlowNet, v: &[f64], ctx: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let LayerSpec::Made { hidden, depth, order, .. } = net.plan.layers[0].spec.clone() else { panic!("not MADE") };
    let (d, k) = (net.dim(), net.plan.spec.context);
    let masks = contract_made_masks(d, k, hidden, depth, order == super::spec::Order::Forward);
    let scale = param(net, "layers.0.scale");
    let (mut mu, mut alpha) = (Vec::new(), Vec::new());
    for e in 0..n {
        let mut a: Vec<f64> = v[e * d..(e + 1) * d].iter().chain(&ctx[e * k..(e + 1) * k]).copied().collect();
        for (j, mask) in masks.iter().enumerate() {
            let wt: Vec<f64> =
                param(net, &format!("layers.0.net.{j}.weight")).iter().zip(mask).map(|(w, m)| w * m).collect();
            a = linear_ref(&wt, &param(net, &format!("layers.0.net.{j}.bias")), &a);
            if j < depth {
                a = relu(&a);
            }
        }
        mu.extend_from_slice(&a[..d]);
        alpha.extend((0..d).map(|i| scale[i] * a[d + i].tanh()));
    }
    (mu, alpha)
}

/// MADE's masks follow the contract's degrees; MAF's forward is u = (x − μ(x)) ⊙ exp(−α(x)) with logdet
/// −Σα(x), IAF's inverse x = u ⊙ exp(α(u)) + μ(u) with forward logdet −Σα(u), and the sequential
/// directions (MAF inverse, IAF forward) reach those fixed points exactly, with a context.
#[test]
fn made_matches_the_contract_masks_and_formulas() {
    use super::spec::Order;
    for (d, k, hidden, depth, order) in [
        (5, 2, 7, 2, Order::Forward),
        (4, 0, 6, 1, Order::Reverse),
        (3, 1, 4, 3, Order::Forward),
        (6, 3, 9, 2, Order::Reverse),
    ] {
        let got = super::made_masks(d, k, hidden, depth, order, &Device::Cpu).unwrap();
        let want = contract_made_masks(d, k, hidden, depth, order == Order::Forward);
        assert_eq!(got.len(), want.len());
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(values(g), *w, "D {d}, K {k}, hidden {hidden}, depth {depth}, {order:?}: mask {j}");
        }
    }
    let head = r#""shape": [5, 1, 1], "context": 2, "base": "normal""#;
    for kind in ["maf", "iaf"] {
        for order in ["forward", "reverse"] {
            let s = spec(
                head,
                &format!(r#"{{"type": "made", "kind": "{kind}", "hidden": 7, "depth": 2, "order": "{order}"}}"#),
            );
            let net = random_net(&s, 61);
            let n = 3;
            let a = input(&net, n, 7);
            let ctx = context(&net, n);
            let (av, cv) = (values(&a), values(ctx.as_ref().unwrap()));
            let (mu, alpha) = made_ref(&net, &av, &cv, n);
            let sum_alpha: Vec<f64> = (0..n).map(|e| alpha[e * 5..(e + 1) * 5].iter().sum()).collect();
            assert!(alpha.iter().any(|v| v.abs() > 0.02) && mu.iter().any(|v| v.abs() > 0.05), "{s}: trivial μ, α");
            let a2 = a.reshape((n, 5)).unwrap();
            if kind == "maf" {
                // a is x: one-pass forward, and the sequential inverse maps u back to x.
                let u: Vec<f64> = (0..n * 5).map(|i| (av[i] - mu[i]) * (-alpha[i]).exp()).collect();
                let (z, ld) = net.forward_f64(&a, ctx.as_ref(), Mode::Eval).unwrap();
                assert_close(&format!("{s}: forward"), &values(&z), &u, 1e-12, 1e-12);
                assert_close(
                    &format!("{s}: forward log-det"),
                    &values(&ld),
                    &sum_alpha.iter().map(|v| -v).collect::<Vec<_>>(),
                    1e-12,
                    1e-12,
                );
                let ut = Tensor::from_vec(u, (n, 5), &Device::Cpu).unwrap();
                let (back, ldi) = net.inverse_f64(&ut, ctx.as_ref()).unwrap();
                assert_close(&format!("{s}: inverse"), &values(&back), &av, 1e-10, 1e-10);
                assert_close(&format!("{s}: inverse log-det"), &values(&ldi), &sum_alpha, 1e-10, 1e-10);
            } else {
                // a is u: one-pass inverse, and the sequential forward maps x back to u.
                let x: Vec<f64> = (0..n * 5).map(|i| av[i] * alpha[i].exp() + mu[i]).collect();
                let (back, ldi) = net.inverse_f64(&a2, ctx.as_ref()).unwrap();
                assert_close(&format!("{s}: inverse"), &values(&back), &x, 1e-12, 1e-12);
                assert_close(&format!("{s}: inverse log-det"), &values(&ldi), &sum_alpha, 1e-12, 1e-12);
                let xt = Tensor::from_vec(x, (n, 5, 1, 1), &Device::Cpu).unwrap();
                let (z, ld) = net.forward_f64(&xt, ctx.as_ref(), Mode::Eval).unwrap();
                assert_close(&format!("{s}: forward"), &values(&z), &av, 1e-10, 1e-10);
                assert_close(
                    &format!("{s}: forward log-det"),
                    &values(&ld),
                    &sum_alpha.iter().map(|v| -v).collect::<Vec<_>>(),
                    1e-10,
                    1e-10,
                );
            }
        }
    }
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

/// `lu` gives A = P·L·U (P[i][perm[i]] = 1, L unit lower triangular with |entries| ≤ 1 from partial
/// pivoting, U upper triangular), and inv1x1 starts as an orthogonal W (so log-det 0).
#[test]
fn inv1x1_starts_orthogonal_and_lu_reconstructs() {
    let mut rng = SplitMix::new(3);
    for c in [1, 2, 3, 6] {
        let a: Vec<f64> = (0..c * c).map(|_| rng.normal()).collect();
        let (perm, l, u) = lu(&a, c);
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..c).collect::<Vec<_>>(), "perm is a permutation");
        for r in 0..c {
            assert_eq!(l[r * c + r], 1.0);
            for q in 0..c {
                if q > r {
                    assert_eq!(l[r * c + q], 0.0);
                } else {
                    assert!(l[r * c + q].abs() <= 1.0 + 1e-15, "pivoting keeps |L| ≤ 1");
                }
                if q < r {
                    // Eliminated entries: zero up to rounding (init reads only the upper triangle).
                    assert!(u[r * c + q].abs() < 1e-12, "U[{r}][{q}] = {}", u[r * c + q]);
                }
            }
        }
        // (P·L·U)[r] = (L·U)[perm[r]].
        let upper = |j: usize, q: usize| if q >= j { u[j * c + q] } else { 0.0 };
        let rec: Vec<f64> =
            (0..c * c).map(|e| (0..c).map(|j| l[perm[e / c] * c + j] * upper(j, e % c)).sum()).collect();
        assert!(max_diff(&rec, &a) < 1e-12, "C = {c}: P·L·U differs from A by {}", max_diff(&rec, &a));
    }
    let net = FlowNet::new(
        &spec(r#""shape": [6, 2, 2], "context": 0, "base": "normal""#, r#"{"type": "inv1x1"}"#),
        4,
        Dev::Cpu,
    )
    .unwrap();
    let (lo, up) = (param(&net, "layers.0.lower"), param(&net, "layers.0.upper"));
    assert!(
        (0..36).all(|e| (e % 6 < e / 6 || lo[e] == 0.0) && (e % 6 > e / 6 || up[e] == 0.0)),
        "only strict triangles set"
    );
    let wm = contract_inv1x1(&net, 0);
    // WᵀW = I, to the f32 precision of the stored factors.
    let wtw: Vec<f64> = (0..36).map(|e| (0..6).map(|r| wm[r * 6 + e / 6] * wm[r * 6 + e % 6]).sum()).collect();
    let eye: Vec<f64> = (0..36).map(|e| f64::from(u8::from(e % 7 == 0))).collect();
    assert!(max_diff(&wtw, &eye) < 1e-6, "WᵀW differs from I by {}", max_diff(&wtw, &eye));
    assert!(wm.iter().filter(|v| v.abs() > 0.05).count() > 12, "W should be a dense rotation, not a permutation");
    let x = input(&net, 2, 1);
    let (_, ld) = net.forward_f64(&x, None, Mode::Eval).unwrap();
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
    // y = b⊙x + (1−b)⊙(x + t) with x = 0, t = 0.5 (the zero-initialised last weights leave the bias) and
    // b = 1 − m: exactly 0.5·m.
    for (j, (&zj, &mj)) in z.iter().zip(&m).enumerate() {
        assert_eq!(zj, 0.5 * mj, "value {j}: buffer {mj}");
    }
    for bad in [vec![1.0; 32], vec![0.0; 32], (0..32).map(|i| if i == 0 { 0.5 } else { (i % 2) as f32 }).collect()] {
        assert!(net.set_buffer("layers.0.mask", &bad).is_err());
    }
    assert_eq!(net.get_buffer("layers.0.mask").unwrap(), m, "a rejected mask changes nothing");
}

/// The vector Real NVP preset (`realNvpVectorSpec`): K affine couplings on alternating coordinates of
/// parities 0, 1, 0, …, MLP conditioners, normal base.
fn vector_real_nvp(dim: usize, couplings: usize, hidden: usize, depth: usize) -> String {
    let layers: Vec<String> = (0..couplings)
        .map(|k| {
            format!(
                r#"{{"type": "coupling", "mask": "alternate", "parity": {}, "affine": true, "net": {{"type": "mlp", "hidden": {hidden}, "depth": {depth}}}}}"#,
                k % 2
            )
        })
        .collect();
    spec(&format!(r#""shape": [{dim}, 1, 1], "context": 0, "base": "normal""#), &layers.join(", "))
}

/// Strongly correlated 2-D Gaussian data: x1 ~ N(0, 1), x2 = 0.95·x1 + 0.2·ε.
fn correlated_pairs(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix::new(seed);
    (0..n)
        .flat_map(|_| {
            let a = rng.normal();
            [a as f32, (0.95 * a + 0.2 * rng.normal()) as f32]
        })
        .collect()
}

#[test]
fn vector_real_nvp_learns_a_correlated_gaussian() {
    let mut net = FlowNet::new(&vector_real_nvp(2, 4, 16, 2), 42, Dev::Cpu).unwrap();
    let n = 512;
    let data = correlated_pairs(n, 1234);
    // What the identity map (the initial flow) scores: the standard normal's NLL.
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let std_normal: f64 = data.chunks(2).map(|p| 0.5 * p.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()).sum::<f64>()
        / n as f64
        + ln_2pi;
    let opt = AdamWConfig { lr: 1e-2, weight_decay: 0.0, clip: 5.0, ..Default::default() };
    let first = net.train_step(&data, None, n, &opt).unwrap().loss;
    assert!((first - std_normal).abs() < 1e-4, "the preset starts as the identity: {first} vs {std_normal}");
    let mut last = first;
    for _ in 0..300 {
        last = net.train_step(&data, None, n, &opt).unwrap().loss;
    }
    assert_eq!(net.params().optim_step(), 301);
    // The true NLL: log-det of the covariance [[1, .95], [.95, .9425]] is ln(0.04).
    let true_nll = 0.5 * 0.04f64.ln() + ln_2pi + 1.0;
    assert!(last < std_normal - 0.5, "loss {last} vs standard normal {std_normal}");
    assert!(last < true_nll + 0.3, "loss {last} vs the true NLL {true_nll}");
}

/// A loss that overflows is rejected as divergence and changes no parameter, moment or step.
#[test]
fn vector_real_nvp_divergence_changes_nothing() {
    let mut net = random_net(&vector_real_nvp(2, 3, 8, 2), 8);
    let specs = net.params().specs().to_vec();
    let state = |net: &FlowNet| -> Vec<Vec<f32>> {
        specs
            .iter()
            .flat_map(|s| {
                [
                    net.params().get_param(&s.name).unwrap(),
                    net.params().get_optim("exp_avg", &s.name).unwrap(),
                    net.params().get_optim("exp_avg_sq", &s.name).unwrap(),
                ]
            })
            .collect()
    };
    let before = state(&net);
    let e = net.train_step(&[1e30, -1e30], None, 1, &AdamWConfig::default()).unwrap_err().to_string();
    assert!(e.contains("diverged"), "{e}");
    assert_eq!(state(&net), before);
    assert_eq!(net.params().optim_step(), 0);
}
