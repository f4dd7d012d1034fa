//! The JSON spec of a [`super::FlowNet`] (`src/backend/flownet-types.ts` is the contract): layer types,
//! validation with the shape tracked through squeezes and splits, and the names and shapes of every
//! parameter and buffer in canonical order.

use candle_core::{bail, Result};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    Checkerboard,
    Channel,
    Alternate,
    Halves,
    /// Held in the buffer `mask [C, H, W]`, drawn at random by the initialisation.
    Random,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Weight,
    None,
    Batch,
}

impl Norm {
    /// Parameters per hidden convolution: `weight_v, weight_g, bias`; `weight, bias`; or
    /// `weight, bias, bn.weight, bn.bias`.
    pub fn params_per_conv(self) -> usize {
        match self {
            Norm::Weight => 3,
            Norm::None => 2,
            Norm::Batch => 4,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NetSpec {
    Mlp { hidden: usize, depth: usize },
    Resnet { channels: usize, blocks: usize, norm: Norm },
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MadeKind {
    Maf,
    Iaf,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Forward,
    Reverse,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    Coupling { mask: MaskKind, parity: u8, affine: bool, net: NetSpec },
    Actnorm,
    Batchnorm { momentum: f64, eps: f64 },
    Inv1x1,
    Scale,
    Reverse,
    Squeeze,
    Split,
    Made { kind: MadeKind, hidden: usize, depth: usize, order: Order },
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    Normal,
    Logistic,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowNetSpec {
    pub shape: [usize; 3],
    pub context: usize,
    pub base: Base,
    pub layers: Vec<LayerSpec>,
}

/// `[C, H, W]` of one example.
pub type Chw = [usize; 3];

/// Most parameter and buffer tensors a flow may have: a bound that turns a typo'd or tampered depth
/// into an error instead of a runaway list (the sizes of the tensors are bounded by
/// [`crate::params::MAX_PARAMS`]).
pub const MAX_TENSORS: usize = 1 << 20;

/// A named tensor: a parameter or a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

fn t(k: usize, name: &str, shape: &[usize]) -> TensorInfo {
    TensorInfo { name: format!("layers.{k}.{name}"), shape: shape.to_vec() }
}

/// Input and output widths of linear j of an MLP with `depth` hidden layers.
pub fn mlp_dims(input: usize, hidden: usize, depth: usize, output: usize, j: usize) -> (usize, usize) {
    (if j == 0 { input } else { hidden }, if j == depth { output } else { hidden })
}

impl NetSpec {
    /// Parameters (and batch-norm buffers) of this conditioner, from `input` values (channels for a
    /// resnet) to `output`.
    fn tensors(&self, k: usize, input: usize, output: usize, out: &mut Vec<TensorInfo>, bufs: &mut Vec<TensorInfo>) {
        match *self {
            NetSpec::Mlp { hidden, depth } => {
                for j in 0..=depth {
                    let (i, o) = mlp_dims(input, hidden, depth, output, j);
                    out.push(t(k, &format!("net.{j}.weight"), &[o, i]));
                    out.push(t(k, &format!("net.{j}.bias"), &[o]));
                }
            }
            NetSpec::Resnet { channels: f, blocks, norm } => {
                let conv = |name: &str, cin: usize, out: &mut Vec<TensorInfo>| match norm {
                    Norm::Weight => {
                        out.push(t(k, &format!("net.{name}.weight_v"), &[f, cin, 3, 3]));
                        out.push(t(k, &format!("net.{name}.weight_g"), &[f, 1, 1, 1]));
                        out.push(t(k, &format!("net.{name}.bias"), &[f]));
                    }
                    Norm::None => {
                        out.push(t(k, &format!("net.{name}.weight"), &[f, cin, 3, 3]));
                        out.push(t(k, &format!("net.{name}.bias"), &[f]));
                    }
                    Norm::Batch => {
                        out.push(t(k, &format!("net.{name}.weight"), &[f, cin, 3, 3]));
                        out.push(t(k, &format!("net.{name}.bias"), &[f]));
                        out.push(t(k, &format!("net.{name}.bn.weight"), &[f]));
                        out.push(t(k, &format!("net.{name}.bn.bias"), &[f]));
                    }
                };
                let mut names = vec!["in".to_string()];
                for b in 0..blocks {
                    names.push(format!("blocks.{b}.conv1"));
                    names.push(format!("blocks.{b}.conv2"));
                }
                for (i, name) in names.iter().enumerate() {
                    conv(name, if i == 0 { input } else { f }, out);
                    if norm == Norm::Batch {
                        bufs.push(t(k, &format!("net.{name}.bn.running_mean"), &[f]));
                        bufs.push(t(k, &format!("net.{name}.bn.running_var"), &[f]));
                    }
                }
                out.push(t(k, "net.out.weight", &[output, f, 3, 3]));
                out.push(t(k, "net.out.bias", &[output]));
            }
        }
    }

    /// How many parameter tensors this conditioner has (saturating: a huge depth gives a huge count).
    fn tensor_count(&self) -> usize {
        match *self {
            NetSpec::Mlp { depth, .. } => depth.saturating_add(1).saturating_mul(2),
            NetSpec::Resnet { blocks, norm, .. } => {
                blocks.saturating_mul(2).saturating_add(1).saturating_mul(norm.params_per_conv()).saturating_add(2)
            }
        }
    }

    fn check(&self, k: usize) -> Result<()> {
        let (a, b) = match *self {
            NetSpec::Mlp { hidden, depth } => (("hidden", hidden), ("depth", depth)),
            NetSpec::Resnet { channels, blocks, .. } => {
                if blocks > 64 {
                    bail!("flow config: layer {k}: resnet blocks must be at most 64, got {blocks}");
                }
                (("channels", channels), ("blocks", blocks.max(1)))
            }
        };
        for (name, v) in [a, b] {
            if v == 0 {
                bail!("flow config: layer {k}: {name} must be at least 1");
            }
        }
        if let NetSpec::Mlp { depth, .. } = *self {
            if self.tensor_count() > MAX_TENSORS {
                bail!("flow config: layer {k}: depth {depth} gives more than {MAX_TENSORS} tensors; make it smaller");
            }
        }
        Ok(())
    }
}

/// One layer with the shapes around it, resolved from the spec.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub spec: LayerSpec,
    /// Shape of the layer's input.
    pub input: Chw,
    /// Shape of the layer's output (what continues through the flow).
    pub output: Chw,
}

/// The spec, validated, with every layer's shapes, parameters and buffers.
#[derive(Clone, Debug)]
pub struct Plan {
    pub spec: FlowNetSpec,
    pub layers: Vec<Resolved>,
    pub params: Vec<TensorInfo>,
    pub buffers: Vec<TensorInfo>,
    /// Index of each layer's first parameter and first buffer.
    pub param_start: Vec<usize>,
    pub buffer_start: Vec<usize>,
}

impl Plan {
    pub fn from_json(json: &str) -> Result<Plan> {
        let spec: FlowNetSpec = match serde_json::from_str(json) {
            Ok(s) => s,
            Err(e) => bail!("flow config: unreadable spec: {e}"),
        };
        Plan::new(spec)
    }

    pub fn new(spec: FlowNetSpec) -> Result<Plan> {
        let [c, h, w] = spec.shape;
        if c == 0 || h == 0 || w == 0 {
            bail!("flow config: shape must be [C, H, W] with every size at least 1, got {:?}", spec.shape);
        }
        // Bounding D and K keeps every size derived from them (D + K, 2D, 4C) far from overflow.
        let max = crate::params::MAX_PARAMS;
        if c.checked_mul(h).and_then(|ch| ch.checked_mul(w)).is_none_or(|d| d > max) {
            bail!("flow config: shape {:?} has more than {max} values per example", spec.shape);
        }
        if spec.context > max {
            bail!("flow config: context {} is more than {max} values per example", spec.context);
        }
        if spec.layers.is_empty() {
            bail!("flow config: a flow needs at least one layer");
        }
        let ctx = spec.context;
        let mut shape: Chw = spec.shape;
        let (mut layers, mut params, mut buffers) = (Vec::new(), Vec::new(), Vec::new());
        let (mut param_start, mut buffer_start) = (Vec::new(), Vec::new());
        for (k, l) in spec.layers.iter().enumerate() {
            param_start.push(params.len());
            buffer_start.push(buffers.len());
            let [c, h, w] = shape;
            let d = c * h * w;
            let mut output = shape;
            if params.len() + buffers.len() > MAX_TENSORS {
                bail!("flow config: layer {k}: the flow has more than {MAX_TENSORS} tensors; make it smaller");
            }
            match l {
                LayerSpec::Coupling { mask, parity, affine, net } => {
                    if *parity > 1 {
                        bail!("flow config: layer {k}: parity must be 0 or 1, got {parity}");
                    }
                    net.check(k)?;
                    if *mask == MaskKind::Channel && c % 2 != 0 {
                        bail!("flow config: layer {k}: a channel mask needs an even channel count, got {c} channels");
                    }
                    if *mask == MaskKind::Checkerboard && h * w < 2 {
                        bail!("flow config: layer {k}: a checkerboard mask needs at least 2 pixels, got {h}×{w}");
                    }
                    if matches!(mask, MaskKind::Alternate | MaskKind::Halves | MaskKind::Random) && d < 2 {
                        bail!("flow config: layer {k}: an alternating, halves or random mask needs at least 2 values, got {d}");
                    }
                    if *mask == MaskKind::Random {
                        buffers.push(t(k, "mask", &[c, h, w]));
                    }
                    let per = if *affine { 2 } else { 1 };
                    match net {
                        NetSpec::Mlp { .. } => net.tensors(k, d + ctx, per * d, &mut params, &mut buffers),
                        NetSpec::Resnet { .. } => net.tensors(k, c + ctx, per * c, &mut params, &mut buffers),
                    }
                    if *affine {
                        params.push(t(k, "scale", &[c]));
                    }
                }
                LayerSpec::Actnorm => {
                    params.push(t(k, "bias", &[c]));
                    params.push(t(k, "logs", &[c]));
                    buffers.push(t(k, "initialized", &[1]));
                }
                LayerSpec::Batchnorm { momentum, eps } => {
                    if !(momentum.is_finite() && *momentum > 0.0 && *momentum <= 1.0) {
                        bail!("flow config: layer {k}: batchnorm momentum must be in (0, 1], got {momentum}");
                    }
                    if !(eps.is_finite() && *eps > 0.0) {
                        bail!("flow config: layer {k}: batchnorm eps must be > 0, got {eps}");
                    }
                    params.push(t(k, "log_gamma", &[c]));
                    params.push(t(k, "beta", &[c]));
                    buffers.push(t(k, "running_mean", &[c]));
                    buffers.push(t(k, "running_var", &[c]));
                }
                LayerSpec::Inv1x1 => {
                    params.push(t(k, "lower", &[c, c]));
                    params.push(t(k, "upper", &[c, c]));
                    params.push(t(k, "log_s", &[c]));
                    buffers.push(t(k, "perm", &[c]));
                    buffers.push(t(k, "sign_s", &[c]));
                }
                LayerSpec::Scale => params.push(t(k, "log_scale", &[c, h, w])),
                LayerSpec::Reverse => {}
                LayerSpec::Squeeze => {
                    if h % 2 != 0 || w % 2 != 0 {
                        bail!("flow config: layer {k}: squeeze needs an even height and width, got {c}×{h}×{w}");
                    }
                    output = [4 * c, h / 2, w / 2];
                }
                LayerSpec::Split => {
                    if c < 2 {
                        bail!("flow config: layer {k}: split needs at least 2 channels, got {c}");
                    }
                    output = [c / 2, h, w];
                }
                LayerSpec::Made { hidden, depth, .. } => {
                    if d < 2 {
                        bail!("flow config: layer {k}: a MADE layer needs at least 2 values, got {d}");
                    }
                    NetSpec::Mlp { hidden: *hidden, depth: *depth }.check(k)?;
                    NetSpec::Mlp { hidden: *hidden, depth: *depth }.tensors(
                        k,
                        d + ctx,
                        2 * d,
                        &mut params,
                        &mut buffers,
                    );
                    params.push(t(k, "scale", &[d]));
                }
            }
            layers.push(Resolved { spec: l.clone(), input: shape, output });
            shape = output;
        }
        Ok(Plan { spec, layers, params, buffers, param_start, buffer_start })
    }

    /// D = C·H·W of the input (and of the latent).
    pub fn dim(&self) -> usize {
        self.spec.shape.iter().product()
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    fn err(json: &str) -> String {
        Plan::from_json(json).expect_err("the spec was accepted").to_string()
    }

    #[test]
    fn spec_params_bounds_turn_runaway_sizes_into_errors() {
        // A depth that would list 2·10⁹ tensors, a shape whose C·H·W overflows, a context too large.
        let made = r#"{"shape":[2,1,1],"context":0,"base":"normal","layers":[{"type":"made","kind":"maf","hidden":4,"depth":1000000000,"order":"forward"}]}"#;
        assert!(err(made).contains("depth 1000000000 gives more than"), "{}", err(made));
        let wide =
            r#"{"shape":[4294967296,4294967296,4294967296],"context":0,"base":"normal","layers":[{"type":"reverse"}]}"#;
        assert!(err(wide).contains("values per example"), "{}", err(wide));
        let ctx = r#"{"shape":[2,1,1],"context":4294967296,"base":"normal","layers":[{"type":"reverse"}]}"#;
        assert!(err(ctx).contains("context 4294967296"), "{}", err(ctx));
        // Big but listable sizes pass the plan; the parameter store refuses them (params.rs).
        let big = r#"{"shape":[2,1,1],"context":0,"base":"normal","layers":[{"type":"made","kind":"maf","hidden":1000000000,"depth":2,"order":"forward"}]}"#;
        let plan = Plan::from_json(big).unwrap();
        let e = super::super::FlowNet::from_plan(plan, 0, crate::Dev::Cpu).err().expect("built").to_string();
        assert!(e.contains("too large"), "{e}");
    }
}
