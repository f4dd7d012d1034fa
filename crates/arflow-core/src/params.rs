//! Named parameters and their AdamW state, shared by every model: candle `Var`s addressed by PyTorch
//! `state_dict` names, checked on the way in, and the one training update (clip + AdamW) all models use.

use crate::optim::{AdamW, AdamWConfig};
use candle_core::{backprop::GradStore, bail, DType, Device, Result, Tensor, Var};
use std::alloc::{GlobalAlloc, Layout, System};

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
    /// Zero-filled f32 variables sized to hold every spec. A model too big to build (more than
    /// [`MAX_PARAMS`] values, or more memory than the allocator will give for them, their AdamW
    /// moments and a staging copy) is an error before anything is allocated, never an abort.
    pub fn new(specs: Vec<ParamSpec>, device: Device, model: &'static str) -> Result<Self> {
        let sizes = var_sizes(&specs, model)?;
        check_allocatable(&sizes, model)?;
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
        self.named_var_grads(&AdamW::grads_of(&self.vars, grads))
    }

    /// The gradient of every named parameter from `grads[i]`, the gradient of variable i.
    pub fn named_var_grads(&self, grads: &[Option<Tensor>]) -> Result<NamedGrads> {
        self.specs
            .iter()
            .map(|s| {
                let data = match &grads[s.var] {
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
        check_loss(loss_v)?;
        let grads = loss.backward()?;
        self.apply_grads(loss_v, &AdamW::grads_of(&self.vars, &grads), cfg)
    }

    /// The update of [`ParamStore::train_step`] from gradients a model computed itself: `grads[i]` is
    /// the gradient of variable i of the mean `loss`. The same checks: an error changes nothing.
    pub fn apply_grads(&mut self, loss: f64, grads: &[Option<Tensor>], cfg: &AdamWConfig) -> Result<StepStats> {
        check_lr(cfg)?;
        check_loss(loss)?;
        if grads.len() != self.vars.len() {
            bail!("{}: {} gradients for {} variables", self.model, grads.len(), self.vars.len());
        }
        let grad_norm = AdamW::grad_norm(grads)?;
        if !grad_norm.is_finite() {
            bail!("training diverged: the gradient norm is {grad_norm}; parameters were left as they were");
        }
        let scale = if cfg.clip > 0.0 && grad_norm > cfg.clip { cfg.clip / (grad_norm + 1e-6) } else { 1.0 };
        self.opt.update(&self.vars, grads, cfg, scale)?;
        Ok(StepStats { loss, grad_norm })
    }
}

fn check_loss(loss: f64) -> Result<()> {
    if !loss.is_finite() {
        bail!("training diverged: the loss is {loss}; parameters were left as they were");
    }
    Ok(())
}

/// Most layers (couplings, conv blocks, prediction heads) a config may ask for. Far above any model
/// that trains; it refuses a typo'd, wrapped (−1 read as 2³² − 1 by N-API) or tampered count before the
/// per-layer parameter list is built, which for 2³¹ layers would take minutes before [`MAX_PARAMS`]
/// could refuse it.
pub const MAX_LAYERS: usize = 4096;

/// Errors unless every count in `counts` (a layer count or the like) is at most [`MAX_LAYERS`].
pub fn check_layer_counts(model: &str, counts: &[(&str, usize)]) -> Result<()> {
    for &(name, v) in counts {
        if v > MAX_LAYERS {
            bail!("{model} config: {name} is {v}, more than the {MAX_LAYERS} a model may have");
        }
    }
    Ok(())
}

/// Most values (parameters) a model may hold: 2³¹, 8 GiB of f32 before the optimizer's two moments.
/// Far above any model of this crate; its job is to turn a typo'd or tampered size into an error.
pub const MAX_PARAMS: usize = 1 << 31;

/// Elements of each variable (the largest `offset + len` of its specs), with overflow and the
/// [`MAX_PARAMS`] bound checked.
fn var_sizes(specs: &[ParamSpec], model: &str) -> Result<Vec<usize>> {
    let count = specs.iter().map(|s| s.var.saturating_add(1)).max().unwrap_or(0);
    if count > specs.len() {
        bail!("{model}: parameter variable {} out of range for {} specs", count - 1, specs.len());
    }
    let mut sizes = vec![0usize; count];
    let mut total: usize = 0;
    for s in specs {
        let len = s.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let end = len.and_then(|n| n.checked_add(s.offset));
        let Some(end) = end.filter(|&e| e <= MAX_PARAMS) else {
            bail!(
                "{model} config: parameter {} of shape {:?} is too large (more than {MAX_PARAMS} values); make the model smaller",
                s.name,
                s.shape
            );
        };
        sizes[s.var] = sizes[s.var].max(end);
        total = total.saturating_add(len.unwrap_or(usize::MAX));
    }
    let held: usize = sizes.iter().fold(0usize, |a, &b| a.saturating_add(b));
    if held > MAX_PARAMS {
        bail!(
            "{model} config: {} parameters is more than the {MAX_PARAMS} a model may hold; make the model smaller",
            held.max(total)
        );
    }
    Ok(sizes)
}

/// Asks the system allocator, fallibly, for the memory the variables of `sizes` need with their two
/// AdamW moments and one staging copy (4 × 4 bytes a value), and gives it straight back: candle
/// allocates infallibly, so a refusal has to be found out here, as an error, rather than as an abort
/// there. The probe goes to the system allocator rather than the global one because a host's
/// allocator may reserve address space without committing it (mimalloc in the Node addon), which
/// would grant any size; glibc's `malloc` of a block this big is an `mmap` the kernel refuses when
/// it exceeds memory and swap (Linux's default, heuristic overcommit).
fn check_allocatable(sizes: &[usize], model: &str) -> Result<()> {
    let values: usize = sizes.iter().fold(0usize, |a, &b| a.saturating_add(b));
    let bytes = values.saturating_mul(16);
    let refused = || {
        candle_core::Error::msg(format!(
            "{model} config: its {values} parameters need {:.1} GiB with their optimizer state, which cannot be allocated here; make the model smaller",
            bytes as f64 / (1u64 << 30) as f64
        ))
    };
    if bytes == 0 {
        return Ok(());
    }
    let layout = Layout::from_size_align(bytes, 64).map_err(|_| refused())?;
    // SAFETY: `layout` has a non-zero size; the block is freed at once with the same layout and
    // never read or written.
    unsafe {
        let p = System.alloc(layout);
        if p.is_null() {
            return Err(refused());
        }
        System.dealloc(p, layout);
    }
    Ok(())
}

/// Rejects a learning rate that is NaN, infinite or negative (checked before any work is done).
pub fn check_lr(cfg: &AdamWConfig) -> Result<()> {
    if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
        bail!("learning rate must be a finite number ≥ 0, got {}", cfg.lr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: Vec<usize>, var: usize) -> ParamSpec {
        ParamSpec { name: name.into(), shape, var, offset: 0 }
    }

    fn err(specs: Vec<ParamSpec>) -> String {
        match ParamStore::new(specs, Device::Cpu, "test model") {
            Ok(_) => panic!("a store was built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn params_store_of_a_small_model_is_built() {
        let store = ParamStore::new(vec![spec("w", vec![3, 2], 0), spec("b", vec![3], 1)], Device::Cpu, "m").unwrap();
        assert_eq!(store.get_param("w").unwrap(), vec![0.0; 6]);
    }

    #[test]
    fn params_over_the_bound_are_a_config_error_not_an_abort() {
        // hidden 10⁹: 10¹⁸ values, 4·10¹⁸ bytes — what aborted the process before.
        let e = err(vec![spec("net.1.weight", vec![1_000_000_000, 1_000_000_000], 0)]);
        assert!(e.contains("config") && e.contains("net.1.weight") && e.contains("too large"), "{e}");
        // Many tensors each under the bound whose sum is over it.
        let e = err((0..3).map(|i| spec(&format!("p{i}"), vec![1 << 30], i)).collect());
        assert!(e.contains("config") && e.contains("3221225472 parameters"), "{e}");
    }

    #[test]
    fn layer_counts_over_the_bound_are_refused_before_any_parameter_list_is_built() {
        use crate::lm::CharLmConfig;
        use crate::rnn::CellKind;
        let cfg = |layers: usize, ahead: usize| CharLmConfig {
            vocab: 6,
            embed: 3,
            hidden: 4,
            layers,
            cell: CellKind::Gru,
            learned_h0: false,
            ahead,
        };
        // 2³¹ layers, and −1 as N-API reads it into a u32: refused at once, naming the field.
        for (layers, ahead, field) in [(1 << 31, 1, "layers"), (u32::MAX as usize, 1, "layers"), (2, 1 << 31, "ahead")]
        {
            let e = cfg(layers, ahead).validate().unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(&format!("{MAX_LAYERS}")), "{e}");
        }
        assert!(cfg(MAX_LAYERS, 1).validate().is_ok());
        assert!(check_layer_counts("m", &[("blocks", MAX_LAYERS + 1)]).is_err());
    }

    #[test]
    fn params_shape_products_that_overflow_are_an_error() {
        let e = err(vec![spec("w", vec![usize::MAX / 2, 4], 0)]);
        assert!(e.contains("too large"), "{e}");
        let e = err(vec![ParamSpec { name: "w".into(), shape: vec![4], var: 0, offset: usize::MAX - 1 }]);
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn params_allocation_refused_by_the_allocator_is_an_error() {
        // 2⁵⁹ values: 8 EiB, which no allocator grants (the bound would stop it first in `new`).
        let r = check_allocatable(&[usize::MAX / 32], "test model");
        assert!(r.unwrap_err().to_string().contains("cannot be allocated"));
    }
}
