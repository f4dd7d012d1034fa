//! The general flow network of `src/backend/flownet-types.ts`: a stack of invertible layers (affine and
//! additive couplings with MLP or ResNet conditioners, actnorm, batch norm, LU 1×1 convolutions, NICE
//! scaling, squeeze, factor-out, MADE layers for MAF and IAF) read from a JSON spec, over a normal or
//! logistic base. The image Real NVP, Glow, NICE, MAF and IAF are presets of it.
//!
//! Built from candle ops, the fused [`affine_coupling`] op and the im2col convolution of
//! [`super::conv`], so candle's autograd yields every gradient. Everything runs in f32 for training and
//! in f64 too, which the tests use for finite-difference Jacobians. In f32 on AVX-512 or AVX2 CPUs a
//! ResNet conditioner without batch norm runs as one op ([`resnet::ResnetOp`]), checked against the f64
//! graph.

pub mod init;
pub mod resnet;
pub mod spec;

use super::conv::{conv3x3_nhwc, conv3x3_nhwc_relu};
use super::conv_direct;
use super::op::{affine_coupling, affine_coupling_inverse};
use crate::device::Dev;
use crate::optim::AdamWConfig;
use crate::params::{NamedGrads, ParamSpec, ParamStore, StepStats};
use candle_core::{bail, DType, Device, Result, Tensor};
use resnet::ResnetOp;
use spec::{Base, LayerSpec, MadeKind, MaskKind, NetSpec, Norm, Order, Plan, TensorInfo};

/// `ln(2π)`.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch norm uses the batch's statistics and records running-average updates.
    Train,
    /// Batch norm uses its running averages; nothing is recorded.
    Eval,
    /// Like Train, and every uninitialised actnorm takes its data-dependent initialisation.
    Init,
}

/// One pass over the layers: the parameter and buffer tensors (in the pass's dtype), the context, and
/// what the pass records.
struct Pass<'a> {
    p: &'a [Tensor],
    b: &'a [Tensor],
    ctx: Option<&'a Tensor>,
    mode: Mode,
    /// New buffer values (index, f32 data) to apply if the step succeeds.
    buffer_updates: Vec<(usize, Vec<f32>)>,
    /// New parameter values (index, f32 data) from data-dependent initialisation.
    param_updates: Vec<(usize, Vec<f32>)>,
}

pub struct FlowNet {
    pub plan: Plan,
    store: ParamStore,
    buffers: Vec<Tensor>,
    /// MADE masks per layer (f32, one per linear), built once.
    made_masks: Vec<Option<Vec<Tensor>>>,
}

/// Checks that `data` holds `want` finite values.
fn check_values(what: &str, data: &[f32], want: usize, shape: &str) -> Result<()> {
    if data.len() != want {
        bail!("{what}: expected {shape} = {want} values, got {}", data.len());
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!("{what}: value {i} is not finite ({})", data[i]);
    }
    Ok(())
}

impl FlowNet {
    /// A flow of `spec_json` with its seeded initial values (see [`init`]).
    pub fn new(spec_json: &str, seed: u64, dev: Dev) -> Result<Self> {
        let plan = Plan::from_json(spec_json)?;
        Self::from_plan(plan, seed, dev)
    }

    pub fn from_plan(plan: Plan, seed: u64, dev: Dev) -> Result<Self> {
        crate::alloc::tune_allocator();
        let device = dev.device()?;
        let specs = plan
            .params
            .iter()
            .enumerate()
            .map(|(i, t)| ParamSpec { name: t.name.clone(), shape: t.shape.clone(), var: i, offset: 0 })
            .collect();
        let mut store = ParamStore::new(specs, device.clone(), "flow")?;
        let (pv, bv) = init::initial_values(&plan, seed);
        for (info, v) in plan.params.iter().zip(&pv) {
            store.set_param(&info.name, v)?;
        }
        let buffers = bv.iter().map(|v| Tensor::from_slice(v, v.len(), &device)).collect::<Result<Vec<_>>>()?;
        let made_masks = plan
            .layers
            .iter()
            .map(|l| match l.spec {
                LayerSpec::Made { hidden, depth, order, .. } => {
                    let d: usize = l.input.iter().product();
                    Some(made_masks(d, plan.spec.context, hidden, depth, order, &device))
                }
                _ => None,
            })
            .map(|m| m.transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(FlowNet { plan, store, buffers, made_masks })
    }

    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    pub fn buffer_info(&self) -> &[TensorInfo] {
        &self.plan.buffers
    }

    fn buffer_index(&self, name: &str) -> Result<usize> {
        match self.plan.buffers.iter().position(|b| b.name == name) {
            Some(i) => Ok(i),
            None => bail!("flow has no buffer named {name:?}"),
        }
    }

    pub fn get_buffer(&self, name: &str) -> Result<Vec<f32>> {
        self.buffers[self.buffer_index(name)?].to_vec1::<f32>()
    }

    /// Sets a buffer after checking its size and that its values make sense (a permutation for `perm`,
    /// ±1 for `sign_s`, 0 or 1 for `initialized`, positive running variances).
    pub fn set_buffer(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let i = self.buffer_index(name)?;
        let len: usize = self.plan.buffers[i].shape.iter().product();
        check_values(name, data, len, &format!("{:?}", self.plan.buffers[i].shape))?;
        let ok = if name.ends_with(".perm") {
            let mut seen = vec![false; len];
            data.iter().all(|&v| {
                let j = v as usize;
                let fine = v >= 0.0 && v.fract() == 0.0 && j < len && !seen[j];
                if fine {
                    seen[j] = true;
                }
                fine
            })
        } else if name.ends_with(".sign_s") {
            data.iter().all(|&v| v == 1.0 || v == -1.0)
        } else if name.ends_with(".initialized") {
            data.iter().all(|&v| v == 0.0 || v == 1.0)
        } else if name.ends_with(".running_var") {
            data.iter().all(|&v| v > 0.0)
        } else if name.ends_with(".mask") {
            data.iter().all(|&v| v == 0.0 || v == 1.0) && data.contains(&0.0) && data.contains(&1.0)
        } else {
            true
        };
        if !ok {
            bail!("{name}: invalid values {data:?}");
        }
        self.buffers[i] = Tensor::from_slice(data, len, &self.store.device)?;
        Ok(())
    }

    /// D = C·H·W of one example.
    pub fn dim(&self) -> usize {
        self.plan.dim()
    }

    /// `[N, C, H, W]` of `data` and `[N, K]` of the context, checked, on the device.
    fn inputs(&self, data: &[f32], ctx: Option<&[f32]>, batch: usize, what: &str) -> Result<(Tensor, Option<Tensor>)> {
        let [c, h, w] = self.plan.spec.shape;
        if batch == 0 {
            bail!("{what}: batch must be at least 1");
        }
        check_values(what, data, batch * c * h * w, &format!("batch {batch} × {c}×{h}×{w}"))?;
        let x = Tensor::from_slice(data, (batch, c, h, w), &self.store.device)?;
        let k = self.plan.spec.context;
        let ctx = match (k, ctx) {
            (0, None) => None,
            (0, Some([])) => None,
            (0, Some(_)) => bail!("{what}: this flow takes no context, but a context was given"),
            (_, None) => bail!("{what}: this flow is conditional and needs a context of {k} values per example"),
            (_, Some(v)) => {
                check_values("context", v, batch * k, &format!("batch {batch} × {k}"))?;
                Some(Tensor::from_slice(v, (batch, k), &self.store.device)?)
            }
        };
        Ok((x, ctx))
    }

    fn tensors(&self, dtype: DType) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        // Variables are flat; the reshaped views keep their gradients flowing to the variables.
        let p = self
            .store
            .vars
            .iter()
            .zip(&self.plan.params)
            .map(|(v, info)| v.as_tensor().to_dtype(dtype)?.reshape(info.shape.as_slice()))
            .collect::<Result<Vec<_>>>()?;
        let b = self.buffers.iter().map(|t| t.to_dtype(dtype)).collect::<Result<Vec<_>>>()?;
        Ok((p, b))
    }

    // ---- whole-flow passes -------------------------------------------------------------------------

    /// `z = f(x)` `[N, D]` and the summed log-det `[N]`.
    fn forward_pass(&self, pass: &mut Pass, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let mut h = x.clone();
        let mut parts = Vec::new();
        let mut logdet = Tensor::zeros(n, x.dtype(), x.device())?;
        for k in 0..self.plan.layers.len() {
            if let LayerSpec::Split = self.plan.layers[k].spec {
                let c = h.dim(1)?;
                parts.push(h.narrow(1, c / 2, c - c / 2)?.flatten_from(1)?);
                h = h.narrow(1, 0, c / 2)?;
                continue;
            }
            let (y, ld) = self.layer_forward(k, pass, &h)?;
            h = y;
            if let Some(ld) = ld {
                logdet = (logdet + ld)?;
            }
        }
        parts.push(h.flatten_from(1)?);
        Ok((Tensor::cat(&parts, 1)?, logdet))
    }

    /// `x = f⁻¹(z)` `[N, C, H, W]` and the log-det of the inverse `[N]` (eval statistics).
    fn inverse_pass(&self, pass: &mut Pass, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = z.dim(0)?;
        // Where each factored-out part and the final output sit in z.
        let mut offset = 0;
        let mut offsets = vec![0; self.plan.layers.len()];
        for (k, l) in self.plan.layers.iter().enumerate() {
            if let LayerSpec::Split = l.spec {
                offsets[k] = offset;
                let [c, h, w] = l.input;
                offset += (c - c / 2) * h * w;
            }
        }
        let [c, hh, w] = self.plan.layers.last().map(|l| l.output).unwrap_or(self.plan.spec.shape);
        let mut h = z.narrow(1, offset, c * hh * w)?.reshape((n, c, hh, w))?;
        let mut logdet = Tensor::zeros(n, z.dtype(), z.device())?;
        for k in (0..self.plan.layers.len()).rev() {
            if let LayerSpec::Split = self.plan.layers[k].spec {
                let [c, hh, w] = self.plan.layers[k].input;
                let part = z.narrow(1, offsets[k], (c - c / 2) * hh * w)?.reshape((n, c - c / 2, hh, w))?;
                h = Tensor::cat(&[&h, &part], 1)?;
                continue;
            }
            let (x, ld) = self.layer_inverse(k, pass, &h)?;
            h = x;
            if let Some(ld) = ld {
                logdet = (logdet + ld)?;
            }
        }
        Ok((h, logdet))
    }

    /// Per-example base log-density of `z [N, D]`.
    fn base_log_prob(&self, z: &Tensor) -> Result<Tensor> {
        match self.plan.spec.base {
            Base::Normal => (z.sqr()?.sum(1)? * -0.5)?.affine(1.0, -0.5 * z.dim(1)? as f64 * LN_2PI),
            Base::Logistic => {
                // softplus(z) + softplus(−z) = |z| + 2·ln(1 + exp(−|z|)).
                let a = z.abs()?;
                let l = ((a.neg()?.exp()? + 1.0)?.log()? * 2.0)?;
                (a + l)?.sum(1)?.neg()
            }
        }
    }

    fn log_prob_t(&self, pass: &mut Pass, x: &Tensor) -> Result<Tensor> {
        let (z, logdet) = self.forward_pass(pass, x)?;
        self.base_log_prob(&z)? + logdet
    }

    // ---- public entry points (f32 slices) ----------------------------------------------------------

    /// Runs every uninitialised actnorm's data-dependent initialisation on this batch, if any.
    pub fn data_init(&mut self, x: &[f32], ctx: Option<&[f32]>, batch: usize) -> Result<bool> {
        let pending = self.plan.buffers.iter().zip(&self.buffers).any(|(info, t)| {
            info.name.ends_with(".initialized") && t.to_vec1::<f32>().map(|v| v[0] == 0.0).unwrap_or(false)
        });
        if !pending {
            return Ok(false);
        }
        let (x, ctx) = self.inputs(x, ctx, batch, "initialisation batch")?;
        let (p, b) = self.tensors(DType::F32)?;
        let mut pass = Pass::new(&p, &b, ctx.as_ref(), Mode::Init);
        self.forward_pass(&mut pass, &x)?;
        let (pu, bu) = (pass.param_updates, pass.buffer_updates);
        for (i, v) in pu {
            let name = self.plan.params[i].name.clone();
            self.store.set_param(&name, &v)?;
        }
        // Only the actnorm flags: batch norm's running averages move with training steps alone.
        for (i, v) in bu {
            if self.plan.buffers[i].name.ends_with(".initialized") {
                self.buffers[i] = Tensor::from_slice(&v, v.len(), &self.store.device)?;
            }
        }
        Ok(true)
    }

    /// One AdamW step on the mean NLL (nats per example) of `x`, after the data-dependent
    /// initialisation if it is pending. Batch norm uses the batch's statistics; its running averages
    /// move only when the step succeeds. A non-finite loss or gradient is an error and changes nothing.
    pub fn train_step(&mut self, x: &[f32], ctx: Option<&[f32]>, batch: usize, cfg: &AdamWConfig) -> Result<StepStats> {
        crate::params::check_lr(cfg)?;
        self.data_init(x, ctx, batch)?;
        let (xt, ct) = self.inputs(x, ctx, batch, "train step inputs")?;
        let (p, b) = self.tensors(DType::F32)?;
        let mut pass = Pass::new(&p, &b, ct.as_ref(), Mode::Train);
        let loss = self.log_prob_t(&mut pass, &xt)?.mean_all()?.neg()?;
        let updates = std::mem::take(&mut pass.buffer_updates);
        drop(pass);
        let stats = self.store.train_step(&loss, cfg)?;
        for (i, v) in updates {
            self.buffers[i] = Tensor::from_slice(&v, v.len(), &self.store.device)?;
        }
        Ok(stats)
    }

    /// Mean training-mode NLL and its gradient for every parameter; changes nothing.
    pub fn loss_and_grads(&self, x: &[f32], ctx: Option<&[f32]>, batch: usize) -> Result<(f64, NamedGrads)> {
        let (xt, ct) = self.inputs(x, ctx, batch, "inputs")?;
        let (p, b) = self.tensors(DType::F32)?;
        let mut pass = Pass::new(&p, &b, ct.as_ref(), Mode::Train);
        let loss = self.log_prob_t(&mut pass, &xt)?.mean_all()?.neg()?;
        let grads = self.store.named_grads(&loss.backward()?)?;
        Ok((loss.to_scalar::<f32>()? as f64, grads))
    }

    /// Per-example `log p(x)` (nats), evaluation statistics.
    pub fn log_prob(&self, x: &[f32], ctx: Option<&[f32]>, batch: usize) -> Result<Vec<f32>> {
        let (xt, ct) = self.inputs(x, ctx, batch, "inputs")?;
        let (p, b) = self.tensors(DType::F32)?;
        let mut pass = Pass::new(&p, &b, ct.as_ref(), Mode::Eval);
        self.log_prob_t(&mut pass, &xt)?.to_vec1()
    }

    /// `z = f(x)` `[N, D]` and the per-example log-det, evaluation statistics.
    pub fn encode(&self, x: &[f32], ctx: Option<&[f32]>, batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (xt, ct) = self.inputs(x, ctx, batch, "inputs")?;
        let (p, b) = self.tensors(DType::F32)?;
        let mut pass = Pass::new(&p, &b, ct.as_ref(), Mode::Eval);
        let (z, ld) = self.forward_pass(&mut pass, &xt)?;
        Ok((z.flatten_all()?.to_vec1()?, ld.to_vec1()?))
    }

    /// `x = f⁻¹(z)` and the per-example log-det of the inverse.
    pub fn decode(&self, z: &[f32], ctx: Option<&[f32]>, batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (zt, ct) = self.inputs(z, ctx, batch, "latents")?;
        let zt = zt.flatten_from(1)?;
        let (p, b) = self.tensors(DType::F32)?;
        let mut pass = Pass::new(&p, &b, ct.as_ref(), Mode::Eval);
        let (x, ld) = self.inverse_pass(&mut pass, &zt)?;
        Ok((x.flatten_all()?.to_vec1()?, ld.to_vec1()?))
    }

    /// f64 passes for tests: `(z, logdet)` of `x [N, C, H, W]` in `mode` (Train or Eval).
    pub fn forward_f64(&self, x: &Tensor, ctx: Option<&Tensor>, mode: Mode) -> Result<(Tensor, Tensor)> {
        let (p, b) = self.tensors(DType::F64)?;
        let mut pass = Pass::new(&p, &b, ctx, mode);
        self.forward_pass(&mut pass, x)
    }

    /// f64 inverse for tests: `(x [N, C, H, W], logdet)` of `z [N, D]`.
    pub fn inverse_f64(&self, z: &Tensor, ctx: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (p, b) = self.tensors(DType::F64)?;
        let mut pass = Pass::new(&p, &b, ctx, Mode::Eval);
        self.inverse_pass(&mut pass, z)
    }

    /// f64 mean NLL in `mode` as a function of the parameters `p` (for gradient checks).
    pub fn nll_with(&self, p: &[Tensor], x: &Tensor, ctx: Option<&Tensor>) -> Result<Tensor> {
        let b = self.buffers.iter().map(|t| t.to_dtype(x.dtype())).collect::<Result<Vec<_>>>()?;
        let mut pass = Pass::new(p, &b, ctx, Mode::Train);
        self.log_prob_t(&mut pass, x)?.mean_all()?.neg()
    }

    // ---- layers ------------------------------------------------------------------------------------

    fn layer_forward(&self, k: usize, pass: &mut Pass, x: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let l = &self.plan.layers[k];
        let ps = self.plan.param_start[k];
        let bs = self.plan.buffer_start[k];
        let [c, h, w] = l.input;
        let hw = (h * w) as f64;
        let n = x.dim(0)?;
        let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
        match &l.spec {
            LayerSpec::Coupling { mask, parity, affine, net } => {
                let b = self.coupling_mask(k, *mask, *parity, pass, x)?;
                let xm = x.broadcast_mul(&b.reshape((1, c, h, w))?)?;
                let (nt, nets) = (*affine, net);
                let out = self.conditioner(k, nets, &xm, pass, if nt { 2 } else { 1 })?;
                let xf = x.flatten_from(1)?;
                if nt {
                    let scale = pass.p[ps + self.net_param_count(k)].reshape((c, 1))?.broadcast_as((c, h * w))?;
                    let params = Tensor::cat(&[&b, &scale.reshape((1, c * h * w))?], 0)?;
                    let (y, ld) = affine_coupling(&xf, &out, &params)?;
                    Ok((y.reshape((n, c, h, w))?, Some(ld)))
                } else {
                    let y = (xf + out.broadcast_mul(&b.affine(-1.0, 1.0)?)?)?;
                    Ok((y.reshape((n, c, h, w))?, None))
                }
            }
            LayerSpec::Actnorm => {
                let (mut bias, mut logs) = (pass.p[ps].clone(), pass.p[ps + 1].clone());
                if pass.mode == Mode::Init && pass.b[bs].to_dtype(DType::F64)?.to_vec1::<f64>()?[0] == 0.0 {
                    let xd = x.detach();
                    let mean = xd.mean_keepdim((0, 2, 3))?;
                    let var = xd.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
                    bias = mean.flatten_all()?.neg()?;
                    logs = (var.sqrt()? + 1e-6)?.log()?.neg()?.flatten_all()?;
                    pass.param_updates.push((ps, bias.to_dtype(DType::F32)?.to_vec1()?));
                    pass.param_updates.push((ps + 1, logs.to_dtype(DType::F32)?.to_vec1()?));
                    pass.buffer_updates.push((bs, vec![1.0]));
                }
                let y = x.broadcast_add(&per_channel(&bias)?)?.broadcast_mul(&per_channel(&logs.exp()?)?)?;
                let ld = (logs.sum_all()? * hw)?.broadcast_as(n)?;
                Ok((y, Some(ld)))
            }
            LayerSpec::Batchnorm { momentum, eps } => {
                let (lg, beta) = (&pass.p[ps], &pass.p[ps + 1]);
                let (mean, var) = norm_stats(pass, x, (0, 2, 3), bs, *momentum)?;
                let inv_std = (var.clone() + *eps)?.sqrt()?.recip()?;
                let gain = (inv_std * lg.exp()?)?;
                let y = x.broadcast_sub(&per_channel(&mean)?)?.broadcast_mul(&per_channel(&gain)?)?;
                let y = y.broadcast_add(&per_channel(beta)?)?;
                let ld = ((lg - ((var + *eps)?.log()? * 0.5)?)?.sum_all()? * hw)?.broadcast_as(n)?;
                Ok((y, Some(ld)))
            }
            LayerSpec::Inv1x1 => {
                let wm = self.inv1x1_weight(k, pass)?;
                let y = wm.broadcast_matmul(&x.reshape((n, c, h * w))?)?.reshape((n, c, h, w))?;
                let ld = (pass.p[ps + 2].sum_all()? * hw)?.broadcast_as(n)?;
                Ok((y, Some(ld)))
            }
            LayerSpec::Scale => {
                let s = &pass.p[ps];
                let y = x.broadcast_mul(&s.exp()?.unsqueeze(0)?)?;
                Ok((y, Some(s.sum_all()?.broadcast_as(n)?)))
            }
            LayerSpec::Reverse => Ok((reverse_channels(x)?, None)),
            LayerSpec::Squeeze => {
                let y = x.reshape((n, c, h / 2, 2, w / 2, 2))?.permute([0, 1, 3, 5, 2, 4])?.reshape((
                    n,
                    4 * c,
                    h / 2,
                    w / 2,
                ))?;
                Ok((y, None))
            }
            LayerSpec::Split => bail!("internal: split is handled by the pass"),
            LayerSpec::Made { .. } => {
                let (u, ld) = self.made_apply(k, pass, &x.flatten_from(1)?, false)?;
                Ok((u.reshape((n, c, h, w))?, Some(ld)))
            }
        }
    }

    fn layer_inverse(&self, k: usize, pass: &mut Pass, y: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let l = &self.plan.layers[k];
        let ps = self.plan.param_start[k];
        let bs = self.plan.buffer_start[k];
        let [c, h, w] = l.input;
        let hw = (h * w) as f64;
        let n = y.dim(0)?;
        let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
        match &l.spec {
            LayerSpec::Coupling { mask, parity, affine, net } => {
                let b = self.coupling_mask(k, *mask, *parity, pass, y)?;
                // The pass-through part is unchanged, so the conditioner sees what it saw going forward.
                let ym = y.broadcast_mul(&b.reshape((1, c, h, w))?)?;
                let out = self.conditioner(k, net, &ym, pass, if *affine { 2 } else { 1 })?;
                let yf = y.flatten_from(1)?;
                if *affine {
                    let scale = pass.p[ps + self.net_param_count(k)].reshape((c, 1))?.broadcast_as((c, h * w))?;
                    let params = Tensor::cat(&[&b, &scale.reshape((1, c * h * w))?], 0)?;
                    let (x, ld) = affine_coupling_inverse(&yf, &out, &params)?;
                    Ok((x.reshape((n, c, h, w))?, Some(ld)))
                } else {
                    let x = (yf - out.broadcast_mul(&b.affine(-1.0, 1.0)?)?)?;
                    Ok((x.reshape((n, c, h, w))?, None))
                }
            }
            LayerSpec::Actnorm => {
                let (bias, logs) = (&pass.p[ps], &pass.p[ps + 1]);
                let x = y.broadcast_mul(&per_channel(&logs.neg()?.exp()?)?)?.broadcast_sub(&per_channel(bias)?)?;
                Ok((x, Some((logs.sum_all()? * -hw)?.broadcast_as(n)?)))
            }
            LayerSpec::Batchnorm { eps, .. } => {
                let (lg, beta) = (&pass.p[ps], &pass.p[ps + 1]);
                let (mean, var) = (&pass.b[bs], &pass.b[bs + 1]);
                let std = (var + *eps)?.sqrt()?;
                let gain = (std * lg.neg()?.exp()?)?;
                let x = y.broadcast_sub(&per_channel(beta)?)?.broadcast_mul(&per_channel(&gain)?)?;
                let x = x.broadcast_add(&per_channel(mean)?)?;
                let ld = ((lg - ((var + *eps)?.log()? * 0.5)?)?.sum_all()? * -hw)?.broadcast_as(n)?;
                Ok((x, Some(ld)))
            }
            LayerSpec::Inv1x1 => {
                let wm = self.inv1x1_weight(k, pass)?;
                let inv = invert(&wm)?;
                let x = inv.broadcast_matmul(&y.reshape((n, c, h * w))?)?.reshape((n, c, h, w))?;
                Ok((x, Some((pass.p[ps + 2].sum_all()? * -hw)?.broadcast_as(n)?)))
            }
            LayerSpec::Scale => {
                let s = &pass.p[ps];
                let x = y.broadcast_mul(&s.neg()?.exp()?.unsqueeze(0)?)?;
                Ok((x, Some(s.sum_all()?.neg()?.broadcast_as(n)?)))
            }
            LayerSpec::Reverse => Ok((reverse_channels(y)?, None)),
            LayerSpec::Squeeze => {
                let (c4, h2, w2) = (c * 4, h / 2, w / 2);
                debug_assert_eq!(y.dims(), [n, c4, h2, w2]);
                let x = y.reshape((n, c, 2, 2, h2, w2))?.permute([0, 1, 4, 2, 5, 3])?.reshape((n, c, h, w))?;
                Ok((x, None))
            }
            LayerSpec::Split => bail!("internal: split is handled by the pass"),
            LayerSpec::Made { .. } => {
                let (x, ld) = self.made_apply(k, pass, &y.flatten_from(1)?, true)?;
                Ok((x.reshape((n, c, h, w))?, Some(ld)))
            }
        }
    }

    /// MADE layer `k` on `a [N, D]`, forward or inverse, and its log-det. One pass when μ and α come
    /// from the side already known (MAF forward, IAF inverse); otherwise output i depends on outputs
    /// before it, and D passes from zeros reach the fixed point, exact after the last.
    fn made_apply(&self, k: usize, pass: &Pass, a: &Tensor, inverse: bool) -> Result<(Tensor, Tensor)> {
        let LayerSpec::Made { kind, .. } = self.plan.layers[k].spec else { bail!("internal: not a MADE layer") };
        let step = |v: &Tensor| {
            if inverse {
                self.made_untransform(k, pass, a, v)
            } else {
                self.made_transform(k, pass, a, v)
            }
        };
        if (kind == MadeKind::Maf) != inverse {
            return step(a);
        }
        let mut v = a.zeros_like()?;
        let mut ld = a.zeros_like()?;
        for _ in 0..a.dim(1)? {
            (v, ld) = step(&v)?;
        }
        Ok((v, ld))
    }

    /// `(x − μ(v)) ⊙ exp(−α(v))` and its log-det `−Σα(v)`, with μ, α from the MADE net on `v`.
    fn made_transform(&self, k: usize, pass: &Pass, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (mu, alpha) = self.made_net(k, pass, v)?;
        let u = (x - mu)?.mul(&alpha.neg()?.exp()?)?;
        Ok((u, alpha.sum(1)?.neg()?))
    }

    /// `u ⊙ exp(α(v)) + μ(v)` and its log-det `Σα(v)`.
    fn made_untransform(&self, k: usize, pass: &Pass, u: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (mu, alpha) = self.made_net(k, pass, v)?;
        let x = (u.mul(&alpha.exp()?)? + mu)?;
        Ok((x, alpha.sum(1)?))
    }

    /// μ and α = scale ⊙ tanh(α_raw) `[N, D]` of the masked MLP on `v [N, D]` (and the context).
    fn made_net(&self, k: usize, pass: &Pass, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let LayerSpec::Made { depth, .. } = self.plan.layers[k].spec else { bail!("internal: not a MADE layer") };
        let ps = self.plan.param_start[k];
        let masks = self.made_masks[k].as_ref().expect("MADE layer has masks");
        let d = v.dim(1)?;
        let mut h = match pass.ctx {
            Some(c) => Tensor::cat(&[v, &c.to_dtype(v.dtype())?], 1)?,
            None => v.clone(),
        };
        for (j, mask) in masks.iter().enumerate() {
            let wt = pass.p[ps + 2 * j].mul(&mask.to_dtype(v.dtype())?)?;
            h = h.matmul(&wt.t()?)?.broadcast_add(&pass.p[ps + 2 * j + 1])?;
            if j < depth {
                h = h.relu()?;
            }
        }
        let scale = pass.p[ps + 2 * (depth + 1)].unsqueeze(0)?;
        let mu = h.narrow(1, 0, d)?;
        let alpha = h.narrow(1, d, d)?.tanh()?.broadcast_mul(&scale)?;
        Ok((mu, alpha))
    }

    /// Coupling `k`'s mask `[1, D]` in the dtype of `like`: computed, or for random masks its buffer
    /// (XOR the parity).
    fn coupling_mask(&self, k: usize, kind: MaskKind, parity: u8, pass: &Pass, like: &Tensor) -> Result<Tensor> {
        let l = &self.plan.layers[k];
        if kind != MaskKind::Random {
            return mask_tensor(kind, parity, l.input, like.dtype(), like.device());
        }
        let m = pass.b[self.plan.buffer_start[k]].to_dtype(like.dtype())?.flatten_all()?.unsqueeze(0)?;
        if parity == 1 {
            m.affine(-1.0, 1.0)
        } else {
            Ok(m)
        }
    }

    /// The number of conditioner parameters of coupling `k` (its `scale` comes right after them).
    fn net_param_count(&self, k: usize) -> usize {
        let end = self.plan.param_start.get(k + 1).copied().unwrap_or(self.plan.params.len());
        end - self.plan.param_start[k] - 1
    }

    /// The conditioner of coupling `k` on the masked input `xm [N, C, H, W]`: `[N, per·D]`, laid out as
    /// `per` consecutive `[C, H, W]` blocks (s_raw then t, or t alone).
    fn conditioner(&self, k: usize, net: &NetSpec, xm: &Tensor, pass: &mut Pass, per: usize) -> Result<Tensor> {
        let ps = self.plan.param_start[k];
        // Batch-norm buffers follow a random mask's buffer.
        let random = matches!(self.plan.layers[k].spec, LayerSpec::Coupling { mask: MaskKind::Random, .. });
        let bs = self.plan.buffer_start[k] + usize::from(random);
        let (n, c, h, w) = xm.dims4()?;
        let p = pass.p;
        match *net {
            NetSpec::Mlp { depth, .. } => {
                let mut a = xm.flatten_from(1)?;
                if let Some(ctx) = pass.ctx {
                    a = Tensor::cat(&[&a, &ctx.to_dtype(a.dtype())?], 1)?;
                }
                for j in 0..=depth {
                    a = a.matmul(&p[ps + 2 * j].t()?)?.broadcast_add(&p[ps + 2 * j + 1])?;
                    if j < depth {
                        a = a.relu()?;
                    }
                }
                Ok(a)
            }
            NetSpec::Resnet { blocks, norm, .. } => {
                let mut a = xm.permute((0, 2, 3, 1))?;
                if let Some(ctx) = pass.ctx {
                    let kk = ctx.dim(1)?;
                    let cb = ctx.to_dtype(a.dtype())?.reshape((n, 1, 1, kk))?.broadcast_as((n, h, w, kk))?;
                    a = Tensor::cat(&[&a, &cb], 3)?;
                }
                let per_conv = norm.params_per_conv();
                let last = 1 + 2 * blocks;
                // The weight (after weight normalisation) and bias of conv i of the net; the output
                // conv has a plain weight and bias whatever the norm.
                let weight_and_bias = |i: usize| -> Result<(Tensor, &Tensor)> {
                    let at = ps + i * per_conv;
                    if i == last {
                        return Ok((p[at].clone(), &p[at + 1]));
                    }
                    let weight = match norm {
                        Norm::Weight => {
                            let (v, g) = (&p[at], &p[at + 1]);
                            let norm = v.sqr()?.sum_keepdim((1, 2, 3))?.sqrt()?;
                            v.broadcast_mul(&g.broadcast_div(&norm)?)?
                        }
                        Norm::None | Norm::Batch => p[at].clone(),
                    };
                    Ok((weight, if norm == Norm::Weight { &p[at + 2] } else { &p[at + 1] }))
                };
                if norm != Norm::Batch && a.dtype() == DType::F32 && a.device().is_cpu() && conv_direct::available() {
                    // The whole net as one op: no hidden activation enters the autograd graph.
                    let mut flat = Vec::with_capacity(last + 1);
                    for i in 0..=last {
                        let (weight, bias) = weight_and_bias(i)?;
                        let (cout, cin) = (weight.dim(0)?, weight.dim(1)?);
                        let wmat = weight.permute((2, 3, 1, 0))?.reshape((9 * cin, cout))?;
                        flat.push(Tensor::cat(&[&wmat, &bias.reshape((1, cout))?], 0)?.flatten_all()?);
                    }
                    let (cin, width) = (a.dim(3)?, p[ps].dim(0)?);
                    let op = ResnetOp::new([n, h, w], cin, width, blocks, per * c, pass.mode == Mode::Train);
                    return a.contiguous()?.apply_op2(&Tensor::cat(&flat, 0)?, op);
                }
                // Conv i of the net on `a`, or on relu(a) with the ReLU fused into the conv op.
                let conv = |pass: &mut Pass, a: &Tensor, i: usize, relu: bool| -> Result<Tensor> {
                    let at = ps + i * per_conv;
                    let (weight, bias) = weight_and_bias(i)?;
                    let out = if relu { conv3x3_nhwc_relu(a, &weight, bias)? } else { conv3x3_nhwc(a, &weight, bias)? };
                    if norm != Norm::Batch {
                        return Ok(out);
                    }
                    // BatchNorm2d over N, H, W of the channels-last output.
                    let (mean, var) = norm_stats(pass, &out, (0, 1, 2), bs + 2 * i, 0.1)?;
                    let gain = (var + 1e-5)?.sqrt()?.recip()?.mul(&p[at + 2])?;
                    out.broadcast_sub(&mean)?.broadcast_mul(&gain)?.broadcast_add(&p[at + 3])
                };
                let mut hcur = conv(pass, &a, 0, false)?;
                for b in 0..blocks {
                    let r = conv(pass, &hcur, 1 + 2 * b, true)?;
                    let r = conv(pass, &r, 2 + 2 * b, true)?;
                    hcur = (hcur + r)?;
                }
                let (weight, bias) = weight_and_bias(last)?;
                let out = conv3x3_nhwc_relu(&hcur, &weight, bias)?; // [N, H, W, per·C]
                                                                    // → [N, per·C, H, W] flattened: s_raw channels then t channels, each [C, H, W].
                out.permute((0, 3, 1, 2))?.reshape((n, per * c * h * w))
            }
        }
    }

    /// W = P · (I + strict_lower(lower)) · (strict_upper(upper) + diag(sign_s ⊙ exp(log_s))), `[C, C]`.
    fn inv1x1_weight(&self, k: usize, pass: &Pass) -> Result<Tensor> {
        let ps = self.plan.param_start[k];
        let bs = self.plan.buffer_start[k];
        let c = self.plan.layers[k].input[0];
        let (dt, dev) = (pass.p[ps].dtype(), pass.p[ps].device());
        let tri = |lower: bool| -> Result<Tensor> {
            let v: Vec<f64> = (0..c * c)
                .map(|i| if (lower && i % c < i / c) || (!lower && i % c > i / c) { 1.0 } else { 0.0 })
                .collect();
            Tensor::from_vec(v, (c, c), dev)?.to_dtype(dt)
        };
        let eye = Tensor::eye(c, dt, dev)?;
        let lower = (pass.p[ps].mul(&tri(true)?)? + &eye)?;
        let diag = (pass.b[bs + 1].mul(&pass.p[ps + 2].exp()?)?).unsqueeze(0)?.broadcast_mul(&eye)?;
        let upper = (pass.p[ps + 1].mul(&tri(false)?)? + diag)?;
        let perm = pass.b[bs].to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let mut pm = vec![0.0f64; c * c];
        for (i, &j) in perm.iter().enumerate() {
            pm[i * c + j as usize] = 1.0;
        }
        let pm = Tensor::from_vec(pm, (c, c), dev)?.to_dtype(dt)?;
        pm.matmul(&lower)?.matmul(&upper)
    }
}

impl<'a> Pass<'a> {
    fn new(p: &'a [Tensor], b: &'a [Tensor], ctx: Option<&'a Tensor>, mode: Mode) -> Self {
        Pass { p, b, ctx, mode, buffer_updates: Vec::new(), param_updates: Vec::new() }
    }
}

/// Per-channel mean and variance `[C]` of `x` over `dims`: the batch's (biased variance) in training
/// passes, which also record the running-average updates of buffers `bs` (mean) and `bs + 1`
/// (variance, unbiased, as PyTorch); the running averages in evaluation passes.
fn norm_stats<D: candle_core::shape::Dims + Copy>(
    pass: &mut Pass,
    x: &Tensor,
    dims: D,
    bs: usize,
    momentum: f64,
) -> Result<(Tensor, Tensor)> {
    if pass.mode == Mode::Eval {
        return Ok((pass.b[bs].clone(), pass.b[bs + 1].clone()));
    }
    let mean = x.mean_keepdim(dims)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(dims)?;
    let (mean, var) = (mean.flatten_all()?, var.flatten_all()?);
    let m = (x.elem_count() / mean.elem_count().max(1)) as f64;
    let unbiased = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
    let host = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
    let (old_m, old_v, bm, bv) = (host(&pass.b[bs])?, host(&pass.b[bs + 1])?, host(&mean)?, host(&var)?);
    let mo = momentum;
    let nm = old_m.iter().zip(&bm).map(|(o, b)| ((1.0 - mo) * o + mo * b) as f32).collect();
    let nv = old_v.iter().zip(&bv).map(|(o, b)| ((1.0 - mo) * o + mo * b * unbiased) as f32).collect();
    pass.buffer_updates.push((bs, nm));
    pass.buffer_updates.push((bs + 1, nv));
    Ok((mean, var))
}

/// The coupling mask over `[C, H, W]` as `[1, D]` (1 = passes through).
pub fn mask_values(kind: MaskKind, parity: u8, [c, h, w]: [usize; 3]) -> Vec<f64> {
    let p = parity as usize;
    let mut m = Vec::with_capacity(c * h * w);
    for ci in 0..c {
        for y in 0..h {
            for x in 0..w {
                let on = match kind {
                    MaskKind::Checkerboard => (y + x + p).is_multiple_of(2),
                    MaskKind::Channel => (ci < c / 2) != (p == 1),
                    // A random mask lives in a buffer (see `coupling_mask`); its pattern before initialisation
                    // is the alternating one.
                    MaskKind::Alternate | MaskKind::Random => ((ci * h + y) * w + x + p).is_multiple_of(2),
                    MaskKind::Halves => (2 * ((ci * h + y) * w + x) < c * h * w) != (p == 1),
                };
                m.push(if on { 1.0 } else { 0.0 });
            }
        }
    }
    m
}

fn mask_tensor(kind: MaskKind, parity: u8, chw: [usize; 3], dt: DType, dev: &Device) -> Result<Tensor> {
    let m = mask_values(kind, parity, chw);
    let d = m.len();
    Tensor::from_vec(m, (1, d), dev)?.to_dtype(dt)
}

fn reverse_channels(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let idx: Vec<u32> = (0..c as u32).rev().collect();
    x.index_select(&Tensor::from_vec(idx, c, x.device())?, 1)
}

/// The inverse of a small square matrix, in f64 on the host (Gauss–Jordan with partial pivoting).
fn invert(m: &Tensor) -> Result<Tensor> {
    let c = m.dim(0)?;
    let a = m.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mut a = a;
    let mut inv: Vec<f64> = (0..c * c).map(|i| if i % c == i / c { 1.0 } else { 0.0 }).collect();
    for col in 0..c {
        let piv = (col..c).max_by(|&x, &y| a[x * c + col].abs().total_cmp(&a[y * c + col].abs())).unwrap_or(col);
        if a[piv * c + col].abs() < 1e-300 {
            bail!("inv1x1: the weight matrix is singular");
        }
        for k in 0..c {
            a.swap(col * c + k, piv * c + k);
            inv.swap(col * c + k, piv * c + k);
        }
        let d = a[col * c + col];
        for k in 0..c {
            a[col * c + k] /= d;
            inv[col * c + k] /= d;
        }
        for r in 0..c {
            if r != col {
                let f = a[r * c + col];
                if f != 0.0 {
                    for k in 0..c {
                        a[r * c + k] -= f * a[col * c + k];
                        inv[r * c + k] -= f * inv[col * c + k];
                    }
                }
            }
        }
    }
    Tensor::from_vec(inv, (c, c), m.device())?.to_dtype(m.dtype())
}

/// MADE masks `[out, in]` (f32) for each of the depth + 1 linears: inputs have degrees by `order`,
/// hidden unit j has degree (j mod (D − 1)) + 1, context inputs connect to every first-layer unit.
fn made_masks(d: usize, k: usize, hidden: usize, depth: usize, order: Order, dev: &Device) -> Result<Vec<Tensor>> {
    let m_in: Vec<usize> = (0..d).map(|i| if order == Order::Forward { i + 1 } else { d - i }).collect();
    let m_h: Vec<usize> = (0..hidden).map(|j| j % (d - 1) + 1).collect();
    let mut out = Vec::with_capacity(depth + 1);
    for j in 0..=depth {
        let mask: Vec<f32> = if j == 0 {
            (0..hidden)
                .flat_map(|o| (0..d + k).map(move |i| (o, i)))
                .map(|(o, i)| if i >= d || m_h[o] >= m_in[i] { 1.0 } else { 0.0 })
                .collect()
        } else if j < depth {
            (0..hidden)
                .flat_map(|o| (0..hidden).map(move |i| (o, i)))
                .map(|(o, i)| (m_h[o] >= m_h[i]) as u8 as f32)
                .collect()
        } else {
            (0..2 * d)
                .flat_map(|o| (0..hidden).map(move |i| (o, i)))
                .map(|(o, i)| (m_in[o % d] > m_h[i]) as u8 as f32)
                .collect()
        };
        let (rows, cols) = match j {
            0 => (hidden, d + k),
            j if j < depth => (hidden, hidden),
            _ => (2 * d, hidden),
        };
        out.push(Tensor::from_vec(mask, (rows, cols), dev)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
