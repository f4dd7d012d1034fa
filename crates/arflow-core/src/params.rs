//! Named parameters and their AdamW state, shared by every model: candle `Var`s addressed by PyTorch
//! `state_dict` names, checked on the way in, and the one training update (clip + AdamW) all models use.

use crate::optim::{AdamW, AdamWConfig};
use candle_core::{backprop::GradStore, bail, DType, Device, Result, Tensor, Var};

/// Where one named tensor lives: variable `var`, elements `offset .. offset + shape.product()`.
/// A variable may hold several tensors (a GRU layer packs its four into the input of one fused op).
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub var: usize,
    pub offset: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loss and result of one training step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean loss of the batch (nats per character or per example).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Gradients by parameter name, in [`ParamStore::specs`] order.
pub type NamedGrads = Vec<(String, Vec<f32>)>;

pub struct ParamStore {
    pub device: Device,
    pub vars: Vec<Var>,
    specs: Vec<ParamSpec>,
    opt: AdamW,
    /// Names the model in error messages.
    model: &'static str,
}

impl ParamStore {
    /// Zero-filled f32 variables sized to hold every spec.
    pub fn new(specs: Vec<ParamSpec>, device: Device, model: &'static str) -> Result<Self> {
        let count = specs.iter().map(|s| s.var + 1).max().unwrap_or(0);
        let mut sizes = vec![0usize; count];
        for s in &specs {
            sizes[s.var] = sizes[s.var].max(s.offset + s.len());
        }
        let vars = sizes.iter().map(|&n| Var::zeros(n, DType::F32, &device)).collect::<Result<Vec<_>>>()?;
        let opt = AdamW::new(&vars)?;
        Ok(ParamStore { device, vars, specs, opt, model })
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    fn spec(&self, name: &str) -> Result<&ParamSpec> {
        match self.specs.iter().find(|s| s.name == name) {
            Some(s) => Ok(s),
            None => bail!("{} has no parameter named {name:?}", self.model),
        }
    }

    fn read(&self, t: &Tensor, spec: &ParamSpec) -> Result<Vec<f32>> {
        t.narrow(0, spec.offset, spec.len())?.to_vec1::<f32>()
    }

    /// `t` with the slice `spec` replaced by `data`, after checking its size and values.
    fn write(&self, t: &Tensor, spec: &ParamSpec, data: &[f32]) -> Result<Tensor> {
        if data.len() != spec.len() {
            bail!("{}: expected {} values for shape {:?}, got {}", spec.name, spec.len(), spec.shape, data.len());
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!("{}: value {i} is not finite ({})", spec.name, data[i]);
        }
        if spec.offset == 0 && spec.len() == t.elem_count() {
            return Tensor::from_slice(data, t.shape(), &self.device);
        }
        let mut all = t.to_vec1::<f32>()?;
        all[spec.offset..spec.offset + spec.len()].copy_from_slice(data);
        Tensor::from_vec(all, t.shape(), &self.device)
    }

    pub fn get_param(&self, name: &str) -> Result<Vec<f32>> {
        let s = self.spec(name)?;
        self.read(self.vars[s.var].as_tensor(), s)
    }

    pub fn set_param(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let s = self.spec(name)?.clone();
        let t = self.write(self.vars[s.var].as_tensor(), &s, data)?;
        self.vars[s.var].set(&t)
    }

    fn moments(&mut self, which: &str) -> Result<&mut Vec<Tensor>> {
        match which {
            "exp_avg" => Ok(&mut self.opt.exp_avg),
            "exp_avg_sq" => Ok(&mut self.opt.exp_avg_sq),
            _ => bail!("unknown optimizer state {which:?}: expected exp_avg or exp_avg_sq"),
        }
    }

    /// Optimizer moments by parameter name: `which` is `exp_avg` or `exp_avg_sq` (PyTorch's names).
    pub fn get_optim(&self, which: &str, name: &str) -> Result<Vec<f32>> {
        let s = self.spec(name)?;
        let m = match which {
            "exp_avg" => &self.opt.exp_avg,
            "exp_avg_sq" => &self.opt.exp_avg_sq,
            _ => bail!("unknown optimizer state {which:?}: expected exp_avg or exp_avg_sq"),
        };
        self.read(&m[s.var], s)
    }

    pub fn set_optim(&mut self, which: &str, name: &str, data: &[f32]) -> Result<()> {
        let s = self.spec(name)?.clone();
        let current = self.moments(which)?[s.var].clone();
        let t = self.write(&current, &s, data)?;
        self.moments(which)?[s.var] = t;
        Ok(())
    }

    pub fn optim_step(&self) -> u64 {
        self.opt.step
    }

    pub fn set_optim_step(&mut self, step: u64) {
        self.opt.step = step;
    }

    /// The gradient of every named parameter in `grads` (zeros where none reached it).
    pub fn named_grads(&self, grads: &GradStore) -> Result<NamedGrads> {
        self.specs
            .iter()
            .map(|s| {
                let data = match grads.get(self.vars[s.var].as_tensor()) {
                    Some(g) => self.read(g, s)?,
                    None => vec![0.0; s.len()],
                };
                Ok((s.name.clone(), data))
            })
            .collect()
    }

    /// One training update from the mean `loss` of a batch: backward, global-norm clipping, AdamW.
    /// A bad learning rate, or a non-finite loss or gradient, is an error that changes nothing.
    pub fn train_step(&mut self, loss: &Tensor, cfg: &AdamWConfig) -> Result<StepStats> {
        check_lr(cfg)?;
        let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_v.is_finite() {
            bail!("training diverged: the loss is {loss_v}; parameters were left as they were");
        }
        let grads = loss.backward()?;
        let grad_norm = AdamW::grad_norm(&self.vars, &grads)?;
        if !grad_norm.is_finite() {
            bail!("training diverged: the gradient norm is {grad_norm}; parameters were left as they were");
        }
        let scale = if cfg.clip > 0.0 && grad_norm > cfg.clip { cfg.clip / (grad_norm + 1e-6) } else { 1.0 };
        self.opt.update(&self.vars, &grads, cfg, scale)?;
        Ok(StepStats { loss: loss_v, grad_norm })
    }
}

/// Rejects a learning rate that is NaN, infinite or negative (checked before any work is done).
pub fn check_lr(cfg: &AdamWConfig) -> Result<()> {
    if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
        bail!("learning rate must be a finite number ≥ 0, got {}", cfg.lr);
    }
    Ok(())
}
